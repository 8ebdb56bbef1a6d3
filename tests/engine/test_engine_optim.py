"""The optax chain built from flags: masked weight decay, schedules, lr scaling, accumulation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from engine.config import Config
from engine.programs import optim

PARAMS = {
    "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
    "bn": {"scale": jnp.ones(2)},
}


def test_weight_decay_is_masked_to_kernels():
    # With zero gradients, SGD + L2 decay moves each kernel by -lr * wd * w and nothing else.
    tx = optim.make(
        optim.settings(Config(optimizer="sgd", lr=0.1, weight_decay=0.5, schedule="constant")), 10
    )
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * np.ones((3, 2)), rtol=1e-6)
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["bn"]["scale"], 0.0)


def test_adamw_decay_is_decoupled_and_masked():
    tx = optim.make(
        optim.settings(Config(optimizer="adamw", lr=0.1, weight_decay=0.5, schedule="constant")), 10
    )
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    # AdamW (Loshchilov & Hutter): update = -lr * (adam_term + wd * w); adam_term is 0 here.
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.05 * np.ones((3, 2)), rtol=1e-6)
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)


@pytest.mark.parametrize(
    ("schedule", "at", "expected"),
    [
        ("constant", 37, 0.1),
        ("cosine", 0, 0.1),
        ("cosine", 50, 0.05),  # cos(pi/2): half way
        ("cosine", 100, 0.0),
        ("step", 49, 0.1),
        ("step", 50, 0.01),
        ("step", 75, 0.001),
        ("warmup_cosine", 0, 0.0),
        ("warmup_cosine", 10, 0.1),  # warm-up of one epoch = 10 updates
    ],
)
def test_schedules_span_the_planned_run(schedule, at, expected):
    # 10 epochs x 10 steps: the schedule is a function of the planned run, not of a resume point.
    fn = optim.schedule(
        optim.settings(Config(lr=0.1, epochs=10, schedule=schedule, warmup_epochs=1.0)), 10
    )
    assert float(fn(at)) == pytest.approx(expected, abs=1e-7)


def test_linear_lr_scaling():
    # Goyal et al. 2017: lr x global_batch / 256.
    assert (
        optim.effective_lr(optim.settings(Config(lr=0.1, batch_size=512, lr_scaling="linear")))
        == 0.2
    )
    assert optim.effective_lr(optim.settings(Config(lr=0.1, batch_size=512))) == 0.1


def test_accumulating_k_batches_equals_one_large_batch():
    """K MultiSteps updates of B examples = one update of K*B (linear model, mean loss)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8,)), jnp.float32)
    w0 = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}

    def loss(p, xb, yb):
        return jnp.mean((xb @ p["w"] - yb) ** 2)

    base = Config(optimizer="momentum", lr=0.05, schedule="constant")
    big = optim.make(optim.settings(base), 1)
    updates, _ = big.update(jax.grad(loss)(w0, x, y), big.init(w0), w0)
    expected = optax.apply_updates(w0, updates)

    acc = optim.make(optim.settings(dataclasses.replace(base, grad_accum_steps=2)), 2)
    state, p = acc.init(w0), w0
    for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):
        updates, state = acc.update(jax.grad(loss)(p, xb, yb), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(p["w"], expected["w"], rtol=1e-6)


def test_the_schedule_spans_every_update_of_an_accumulating_run():
    # 18 batches an epoch, an update every 4 (optax.MultiSteps carries the count over epoch
    # ends): 2 epochs make 9 updates, so cosine reaches 0 at update 9, not 8.
    settings = optim.settings(Config(epochs=2, grad_accum_steps=4, lr=0.1))
    rate = optim.schedule(settings, 18)
    assert float(rate(8)) > 0 and float(rate(9)) == 0.0
