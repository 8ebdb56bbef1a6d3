"""--find_lr: the range test on digits suggests a rate at which the default MLP trains."""

import itertools
import os

import numpy as np
import pytest
from engine_helpers import fast_config, read_json

from engine.programs.optim import RANGE_END as END
from engine.programs.optim import RANGE_START as START
from engine.programs.optim import RANGE_STEPS as STEPS
from engine.programs.optim import range_schedule
from engine.workflows.fit import fit


def test_range_schedule_is_exponential_from_start_to_end():
    rate = range_schedule()
    # Definition: start * (end / start) ** (i / steps).
    assert rate(0) == START
    np.testing.assert_allclose(rate(STEPS), END, rtol=1e-12)
    np.testing.assert_allclose(rate(STEPS // 2), np.sqrt(START * END), rtol=1e-12)


@pytest.mark.slow  # the sweep plus a 3-epoch run of the default MLP: ~1 min on the loaded CPU
def test_find_lr_suggests_a_rate_the_default_mlp_trains_at(data_dir, tmp_path):
    workdir = str(tmp_path / "lr")
    found = fit(fast_config(data_dir, workdir, hidden_sizes=(256, 128), find_lr=True))
    assert os.path.exists(os.path.join(workdir, "lr_find.png"))
    assert read_json(workdir, "lr_find.json")["suggested_lr"] == found["suggested_lr"]
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # nothing to resume from
    lrs, losses = found["lrs"], found["losses"]
    # The sweep rose geometrically and ended when the loss exploded, before 10.
    assert all(b > a for a, b in itertools.pairwise(lrs)) and len(lrs) < STEPS
    assert found["suggested_lr"] == found["min_loss_lr"] / 10
    # The default MLP trains at the suggestion: 3 epochs reach > 0.9 test accuracy (chance
    # 0.1; the default lr 1e-3 reaches ~0.95 in as many epochs).
    run = fit(
        fast_config(
            data_dir,
            str(tmp_path / "run"),
            hidden_sizes=(256, 128),
            epochs=3,
            lr=found["suggested_lr"],
        )
    )
    assert run["test"]["accuracy"] > 0.9
    assert losses[0] > run["best_val"]["loss"]
