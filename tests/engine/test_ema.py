"""`--ema_decay`: the moving average of the weights, its evaluation, checkpoints and resumes."""

import dataclasses
import random

import jax
import numpy as np
import optax
import pytest
from engine_helpers import fast_config, read_lines
from sklearn.datasets import load_digits
from test_engine_parallel import TOLERANCES, _train_modes

import architectures
import engine
from benchmarks import kill_resume
from engine.config import Config, ConfigError
from engine.data.source import DatasetInfo
from engine.programs import optim, steps
from engine.programs import state as state_lib
from engine.workflows.build import loss_task

DECAY = 0.8  # far from 1, so that every step's weight in the average is large


def _hand_average(values: list, decay: float):
    """The debiased average of `values` (v_1..v_t) in float64, from its definition.

    Adam's bias correction (Kingma & Ba 2015, Algorithm 1) of an average started at zero:
    (1 - decay) sum_i decay**(t - i) v_i / (1 - decay**t).
    """
    t = len(values)
    weights = [(1 - decay) * decay ** (t - i) / (1 - decay**t) for i in range(1, t + 1)]
    return jax.tree.map(
        lambda *vs: sum(w * np.asarray(v, np.float64) for w, v in zip(weights, vs)), *values
    )


def _optax_average(values: list, decay: float):
    """The same from `optax.ema(decay, debias=True)`, fed each value as its update."""
    tx = optax.ema(decay, debias=True)
    opt_state = tx.init(values[0])
    for v in values:
        out, opt_state = tx.update(v, opt_state)
    return out


@pytest.mark.parametrize("every", [1, 2])
def test_the_average_after_a_few_updates_is_the_hand_computed_one(every):
    """Parameters and BatchNorm statistics after each update, averaged by hand and by optax.

    With `every` micro-steps an update (gradient accumulation), only the updating steps count.
    """
    d = load_digits()
    x, y = d.data[:32].astype(np.float32), d.target[:32].astype(np.int32)
    config = Config(optimizer="momentum", lr=0.05, schedule="constant", grad_accum_steps=every)
    model = architectures.get("mlp", num_classes=10, hidden_sizes=(16,), batchnorm=True)
    tx = optim.make(optim.settings(config), 1)
    norm = {"input_shift": np.zeros(64, np.float32), "input_scale": np.full(64, 16.0, np.float32)}
    state = state_lib.create(model, tx, rng=jax.random.PRNGKey(0), sample_input=x[:1], norm=norm,
                             ema=True)  # fmt: skip
    task = loss_task(config, DatasetInfo("digits", "classification", (64,), num_classes=10))
    cfg = steps.StepConfig(has_batchnorm=True, ema_decay=DECAY)
    step = jax.jit(steps.make_train_step(model, tx, task, cfg, grad_accum_steps=every))
    seen = []  # the trained values after each update
    for i in range(4 * every):
        rows = slice(8 * (i % 4), 8 * (i % 4) + 8)
        state, _ = step(state, {"inputs": x[rows], "targets": y[rows], "mask": np.ones(8, bool)})
        if (i + 1) % every == 0:
            seen.append(jax.device_get({"params": state.params, "batch_stats": state.batch_stats}))
    assert len(seen) == 4 and not np.allclose(
        seen[-1]["batch_stats"]["bn0"]["mean"], seen[-2]["batch_stats"]["bn0"]["mean"]
    )
    got = jax.device_get(state.ema)
    for expected in (_hand_average(seen, DECAY), _optax_average(seen, DECAY)):
        jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6),
                     got, expected)  # fmt: skip


def test_evaluation_swaps_the_average_in_unless_ema_eval_is_off():
    state = state_lib.TrainState(
        step=0, params={"w": 1.0}, batch_stats={"m": 2.0}, opt_state=(), rng=0, norm={},
        ema={"params": {"w": 3.0}, "batch_stats": {"m": 4.0}},
    )  # fmt: skip
    assert steps.evaluated(state, True).params == {"w": 3.0}
    assert steps.evaluated(state, True).batch_stats == {"m": 4.0}
    assert steps.evaluated(state, False) is state
    assert steps.evaluated(state.replace(ema={}), True).params == {"w": 1.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """Workdirs of 2 epochs: with the average (and 1 then resumed to 2), without it (resumed)."""
    root = tmp_path_factory.mktemp("ema")
    # A constant rate: the run resumed with more epochs trains exactly as the one planned so.
    ema = fast_config(
        data_dir, str(root / "ema"), ema_decay=0.9, select="last", schedule="constant"
    )
    engine.fit(ema)
    engine.fit(dataclasses.replace(ema, workdir=str(root / "resumed"), epochs=1))
    engine.fit(dataclasses.replace(ema, workdir=str(root / "resumed")))
    # Without the average, the state is the one from before it existed: it must still resume.
    plain = dataclasses.replace(ema, workdir=str(root / "plain"), ema_decay=0.0)
    engine.fit(dataclasses.replace(plain, epochs=1))
    engine.fit(plain)
    return {k: str(root / k) for k in ("ema", "resumed", "plain")}


def test_the_average_is_checkpointed_and_a_resumed_run_ends_bit_identical(runs):
    state = kill_resume.final_state(runs["ema"])
    assert any(k.startswith("['ema']['params']") for k in state)
    assert any(k.startswith("['ema']['batch_stats']") for k in state) is False  # the MLP has none
    assert kill_resume.differences(runs["ema"], runs["resumed"]) == []


def test_evaluation_test_and_load_use_the_average_and_ema_eval_off_the_trained_params(runs):
    with_ema = engine.load(runs["ema"])
    raw = engine.load(runs["ema"], ema_eval="off")
    plain = engine.load(runs["plain"])
    # The trained parameters are those of the same run without the average (it never feeds
    # back), so evaluated with --ema_eval=off they give that run's numbers exactly.
    assert raw.evaluate("test") == plain.evaluate("test")
    assert with_ema.evaluate("test") != raw.evaluate("test")
    results = engine.load(runs["ema"]).evaluate("test")
    with open(f"{runs['ema']}/results.json") as f:
        assert f'"loss": {results["loss"]!r}' in f.read()  # the run tested with the average
    # What predict and export read: the restored state holds the average's parameters.
    jax.tree.map(np.testing.assert_array_equal, with_ema.state.params, with_ema.state.ema["params"])
    assert not np.array_equal(
        raw.state.params["head"]["kernel"], with_ema.state.params["head"]["kernel"]
    )


def test_a_workdir_without_the_average_resumes_and_refuses_turning_it_on(runs, data_dir):
    # Off, the state has no averaged leaves: checkpoints are those written before it existed,
    # and the fixture resumed one (its epoch 2 was trained after a restart).
    assert not any("ema" in k for k in kill_resume.final_state(runs["plain"]))
    assert len(read_lines(runs["plain"])) == 2
    config = fast_config(data_dir, runs["plain"], select="last", epochs=3, ema_decay=0.9)
    with pytest.raises(ConfigError, match="ema_decay"):
        engine.fit(config)


def test_ema_decay_must_be_below_one(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        engine.fit(fast_config(data_dir, str(tmp_path), ema_decay=1.0))


EMA_FLAGS = (*kill_resume.FLAGS, "--ema_decay=0.9")


@pytest.mark.slow
def test_ten_random_sigkills_with_the_average_end_bit_identical(data_dir, tmp_path):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    log = kill_resume.killed_run(killed, data_dir, 10, random.Random(1), flags=EMA_FLAGS)
    assert len(log) == 10
    kill_resume.run_to_end(reference, data_dir, flags=EMA_FLAGS)
    assert any(k.startswith("['ema']") for k in kill_resume.final_state(killed))
    assert kill_resume.differences(reference, killed) == []


@pytest.mark.slow
def test_jit_pmap_and_fsdp_on_four_devices_match_one_device_with_the_average(tmp_path, data_dir):
    runs = _train_modes("mlp-bn-ema", ("none", "jit", "pmap", "fsdp"), tmp_path, data_dir)
    single = runs["none"]
    assert any("['ema']['batch_stats']" in k for k in single), list(single)
    for mode in ("jit", "pmap", "fsdp"):
        for key in single:
            np.testing.assert_allclose(runs[mode][key], single[key], **TOLERANCES["mlp-bn"],
                                       err_msg=f"{mode} {key}")  # fmt: skip
