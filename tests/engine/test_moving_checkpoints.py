"""Checkpoints that move: a run saved on N devices or P processes resumes and evaluates on M.

orbax restores each checkpoint into the resuming run's own layout (`Plan.abstract_state`), so
the device count, the process count, the parallel mode and `--sharding` may all change between
a stop and a resume. Bit-identity is not expected across device counts (the order of the
gradient's sums changes), so each chain is compared with an uninterrupted run within the
parallel tests' tolerances (`test_engine_parallel.TOLERANCES["mlp-bn"]`).
"""

import json
import os

import jax
import numpy as np
import pytest
from engine_helpers import read_state
from test_engine_parallel import TOLERANCES, _run_cli, _two_processes

# An MLP with BatchNorm (its statistics move too), 11 steps an epoch, 3 epochs.
COMMON = [
    "--hidden_sizes=32",
    "--batchnorm=on",
    "--batch_size=32",
    "--epochs=3",
    "--test_fraction=0.8",
    "--optimizer=momentum",
    "--lr=0.05",
    "--noprogress",
]
TOLERANCE = TOLERANCES["mlp-bn"]


def _run(flags, devices, common=COMMON):
    proc = _run_cli([*common, *flags], devices)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _state(workdir, epoch=3):
    state = read_state(os.path.join(workdir, "checkpoints", "latest", str(epoch), "state"))
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(
            # What the parallel tests compare. The momentum trace is left out: it is the last
            # steps' gradients, where the sums' order shows most (measured: 8 of 2048 elements
            # of a kernel's trace off by up to 5.1e-6, beyond atol 1e-6).
            {k: state[k] for k in ("params", "batch_stats")}
        )
    }


def _assert_same_run(moved, whole):
    """`moved`'s per-epoch figures and final state agree with the uninterrupted `whole`."""
    ours, theirs = _metrics(moved), _metrics(whole)
    assert [r["epoch"] for r in ours] == [1, 2, 3] == [r["epoch"] for r in theirs]
    for a, b in zip(ours, theirs):
        for split in ("train", "val"):
            for key in ("loss", "accuracy"):
                np.testing.assert_allclose(a[split][key], b[split][key], **TOLERANCE)
    one, other = _state(moved), _state(whole)
    assert one.keys() == other.keys()
    for key in one:
        np.testing.assert_allclose(one[key], other[key], **TOLERANCE, err_msg=key)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_dir):
    """The uninterrupted run: 3 epochs on 4 devices, fsdp."""
    workdir = str(tmp_path_factory.mktemp("whole") / "run")
    out = _run([f"--data_dir={data_dir}", f"--workdir={workdir}", "--sharding=fsdp"], 4)
    assert "fsdp over 4 devices: 2 of 19 state leaves split" in out  # the kernels
    return workdir


# Each chain: (flags, devices) for epochs 1, 2 and 3.
CHAINS = {
    "fsdp4-pmap2-jit1": [(["--sharding=fsdp"], 4), (["--parallel=pmap"], 2), ([], 1)],
    "pmap4-fsdp2-none1": [
        (["--parallel=pmap"], 4),
        (["--sharding=fsdp"], 2),
        (["--parallel=none"], 1),
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("chain", CHAINS)
def test_a_run_moves_between_device_counts_modes_and_shardings(chain, whole, data_dir, tmp_path):
    workdir = str(tmp_path / "moved")
    for epoch, (flags, devices) in enumerate(CHAINS[chain], start=1):
        stop = [f"--stop_after_epoch={epoch}"] if epoch < 3 else []
        out = _run([f"--data_dir={data_dir}", f"--workdir={workdir}", *flags, *stop], devices)
        if epoch > 1:
            assert f"resumed from {workdir} at epoch {epoch - 1}" in out
    _assert_same_run(workdir, whole)
    # It evaluates on yet another layout: 2 devices, fsdp, the test split as results.json has it.
    evaluate = [f"--data_dir={data_dir}", f"--workdir={workdir}", "--mode=eval", "--noprogress"]
    out = _run([*evaluate, "--sharding=fsdp"], 2, common=[])
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        tested = json.load(f)["test"]
    assert f"loss {tested['loss']:.4f} acc {tested['accuracy']:.4f}" in out


@pytest.mark.slow
def test_two_processes_under_fsdp_resume_as_one_process_on_one_device(whole, data_dir, tmp_path):
    workdir = str(tmp_path / "moved")
    flags = [*COMMON, f"--data_dir={data_dir}", f"--workdir={workdir}", "--sharding=fsdp"]
    first = _two_processes([*flags, "--stop_after_epoch=1"])  # 2 processes x 2 devices
    assert "fsdp over 4 devices" in first[0]
    out = _run([f"--data_dir={data_dir}", f"--workdir={workdir}"], 1)
    assert f"resumed from {workdir} at epoch 1" in out
    _assert_same_run(workdir, whole)
