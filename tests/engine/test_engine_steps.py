"""The pure steps: overfitting one batch, and padded evaluation counting every example once."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

import architectures
from engine import data, optim, parallel, steps, tasks
from engine import state as state_lib
from engine.config import Config
from engine.data.source import DatasetInfo
from engine.loop import evaluate
from engine.programs import summing_eval

INFO = DatasetInfo("digits", "classification", (64,), num_classes=10)


def _digits(n):
    d = load_digits()
    return d.data[:n].astype(np.float32), d.target[:n].astype(np.int32)


def _setup(config, x):
    model = architectures.get("mlp", num_classes=10, hidden_sizes=(64,))
    tx = optim.make(config, 1)
    shift, scale = data.normalization(data.ArraySource(x, np.zeros(len(x), np.int32)), "standard")
    norm = {"input_shift": shift, "input_scale": scale}
    state = state_lib.create(model, tx, rng=jax.random.PRNGKey(0), sample_input=x[:1], norm=norm)
    return model, tx, tasks.make(config, INFO), state


def test_overfits_a_single_batch_without_regularisation():
    # The classic sanity check: a net that cannot drive one batch's loss to ~0 has a bug.
    x, y = _digits(32)
    config = Config(optimizer="adam", lr=1e-2, schedule="constant")
    model, tx, task, state = _setup(config, x)
    step = jax.jit(steps.make_train_step(model, tx, task, steps.StepConfig()), donate_argnums=0)
    batch = {"inputs": x, "targets": y, "mask": np.ones(32, bool)}
    for _ in range(100):
        state, m = step(state, batch)
    assert float(m["loss_sum"] / m["weight_sum"]) < 1e-2
    assert float(m["correct"]) == 32


@pytest.mark.parametrize("batch_size", [16, 7, 64])
def test_padded_evaluation_counts_each_example_once(batch_size):
    x, y = _digits(50)
    config = Config()
    model, _, task, state = _setup(config, x)
    plan = parallel.make_plan("none")
    eval_step, eval_zeros = summing_eval(steps.eval_metrics(model, task, steps.StepConfig()), None)
    loader = data.make_loader(data.ArraySource(x, y), batch_size=batch_size, shuffle=False, seed=0)
    zeros = eval_zeros(state, next(loader.epoch(0)))
    sums = evaluate(plan.wrap_eval(eval_step), state, loader, plan, zeros)
    result = tasks.summarize(sums)
    assert result["count"] == 50
    # Reference: the same model applied to all 50 examples at once, no padding.
    logits = model.apply(
        {"params": state.params}, (x - state.norm["input_shift"]) / state.norm["input_scale"]
    )
    expected = float(np.mean(np.argmax(np.asarray(logits), -1) == y))
    assert result["accuracy"] == pytest.approx(expected, abs=1e-9)
