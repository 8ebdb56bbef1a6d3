"""The pure steps: overfitting, padding in evaluation and in training (BatchNorm included)."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

import architectures
from engine import data
from engine.config import Config
from engine.data.source import DatasetInfo
from engine.programs import optim, steps, tasks
from engine.programs import state as state_lib
from engine.runtime import parallel
from engine.runtime.loop import evaluate
from engine.runtime.program import summing_eval
from engine.workflows.build import loss_task

INFO = DatasetInfo("digits", "classification", (64,), num_classes=10)


def _digits(n):
    d = load_digits()
    return d.data[:n].astype(np.float32), d.target[:n].astype(np.int32)


def _setup(config, x, batchnorm=False):
    model = architectures.get("mlp", num_classes=10, hidden_sizes=(64,), batchnorm=batchnorm)
    tx = optim.make(optim.settings(config), 1)
    shift, scale = data.normalization(data.ArraySource(x, np.zeros(len(x), np.int32)), "standard")
    norm = {"input_shift": shift, "input_scale": scale}
    state = state_lib.create(model, tx, rng=jax.random.PRNGKey(0), sample_input=x[:1], norm=norm)
    return model, tx, loss_task(config, INFO), state


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


# Padded vs unpadded training: the same rows summed in another order (float32). Measured here,
# largest absolute deviation in params / batch_stats / opt_state: 7e-9 / 0 / 1.5e-8 after one
# step, 1.2e-7 / 1.2e-7 / 2.5e-6 after two epochs (the momentum trace sums the most). Before
# BatchNorm got the mask (padding rows in its statistics), one step already moved them by
# 6e-3 / 0.25 / 0.13 and two epochs by 0.41 / 0.79 / 2.4.
PAD_RTOL, PAD_ATOL = 1e-5, 1e-5


def _bn_setup():
    x, y = _digits(100)
    # Momentum, not Adam: a bias followed by BatchNorm has a zero gradient (BatchNorm subtracts
    # the mean), which float32 leaves at +-1e-9 noise, and Adam's first steps turn any noise
    # into +-lr: a comparison of two summation orders would then compare noise.
    config = Config(optimizer="momentum", lr=0.05, schedule="constant")
    model, tx, task, state = _setup(config, x, batchnorm=True)
    cfg = steps.StepConfig(has_batchnorm=True)
    return x, y, jax.jit(steps.make_train_step(model, tx, task, cfg)), state


def _assert_states_close(a, b):
    for name in ("params", "batch_stats", "opt_state"):
        for u, v in zip(jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))):
            np.testing.assert_allclose(u, v, rtol=PAD_RTOL, atol=PAD_ATOL, err_msg=name)


def _real_rows(batch):
    return {k: v[batch["mask"]] for k, v in batch.items()}


def test_padded_train_step_equals_the_step_on_its_real_rows_alone():
    x, y, step, state = _bn_setup()
    # The loader's own padded batch: 20 real rows, 12 rows of zeros with mask False.
    loader = data.make_loader(
        data.ArraySource(x[:20], y[:20]), batch_size=32, shuffle=False, seed=0
    )
    (padded,) = list(loader.epoch(0))
    assert padded["mask"].sum() == 20 and len(padded["mask"]) == 32
    state_padded, m_padded = step(state, padded)
    state_alone, m_alone = step(state, _real_rows(padded))
    assert int(state_padded.step) == 1
    _assert_states_close(state_padded, state_alone)
    for key in m_alone:
        np.testing.assert_allclose(m_padded[key], m_alone[key], rtol=PAD_RTOL, err_msg=key)
    # The statistics moved: BatchNorm did see the batch (momentum 0.9 of the initial 0 / 1).
    assert not np.allclose(state_padded.batch_stats["bn0"]["mean"], 0)


def test_epochs_with_a_partial_last_batch_equal_an_unpadded_reference():
    # 100 examples at batch 32: three full batches and one of 4 real rows + 28 padding rows.
    x, y, step, state = _bn_setup()
    loader = data.make_loader(data.ArraySource(x, y), batch_size=32, shuffle=True, seed=0)
    padded_state = reference = state
    for epoch in range(2):
        for batch in loader.epoch(epoch):
            padded_state, _ = step(padded_state, batch)
            reference, _ = step(reference, _real_rows(batch))  # 32, 32, 32, then 4 rows
    assert int(padded_state.step) == 8
    _assert_states_close(padded_state, reference)
