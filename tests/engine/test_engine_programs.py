"""The loop's program seam: a two-model program runs in every parallel mode like one device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_engine_parallel import HERE, _env, _load


def test_two_model_program_on_four_devices_equals_one_device(tmp_path, data_dir):
    out = str(tmp_path)
    modes = ("none", "jit", "pmap", "pmap-broken")
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "program_worker.py"), out, data_dir, *modes],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices 4" in done.stdout
    single = _load(os.path.join(out, "none.npz"))
    assert any("teacher" in k for k in single) and any("student" in k for k in single)
    for mode in ("jit", "pmap"):
        other = _load(os.path.join(out, f"{mode}.npz"))
        assert other.keys() == single.keys()
        for key in single:
            # Measured (2 epochs, 22 steps, the last batch of each epoch padded 3 rows short):
            # at most 2.1e-7 absolute on any element of either model or optimizer state, float
            # summation order only. 1e-6 + 1e-5 relative is ~5x that.
            np.testing.assert_allclose(other[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)
        with (
            open(os.path.join(out, f"{mode}.jsonl")) as f,
            open(os.path.join(out, "none.jsonl")) as g,
        ):
            for mine, ref in zip(map(json.loads, f), map(json.loads, g), strict=True):
                assert mine["val"] == ref["val"]  # counts and accuracies: exact
                # Epoch sums of batch means: measured 8e-8 relative apart.
                for key in ("ce_sum", "mse_sum"):
                    assert mine["train"][key] == pytest.approx(ref["train"][key], rel=1e-6)
    # The same comparison catches a program that averages per device instead of over the
    # global batch (devices hold 8, 8, 8 and 5 real rows in each epoch's last batch).
    broken = _load(os.path.join(out, "pmap-broken.npz"))
    worst = max(np.max(np.abs(broken[k] - single[k])) for k in single)
    assert worst > 1e-4, worst
