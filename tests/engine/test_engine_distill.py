"""Knowledge distillation (`--teacher`): Hinton's loss, the frozen teacher, the jitted step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_helpers import fast_config, read_state, records_without_timings

import engine
from engine.config import ConfigError
from engine.programs import distill


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mixer(temperature, alpha):
    return distill.Distillation(None, None, temperature, alpha)


def test_mix_is_hintons_loss():
    # Expected: Hinton, Vinyals and Dean (2015), alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * L,
    # with p_T, q_T the teacher's and student's softmax at temperature T, computed in NumPy.
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3
    values, weights = rng.uniform(size=5), np.array([1.0, 1.0, 2.0, 0.5, 0.0])
    t, a = 3.0, 0.7
    p, q = _softmax(teacher / t), _softmax(student / t)
    kl = np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    expected = (1 - a) * values + a * t**2 * kl * weights
    mix = jax.jit(_mixer(t, a).mix)
    got = mix(*(jnp.asarray(v, jnp.float32) for v in (values, weights, student, teacher)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_the_task_loss_alone():
    values = jnp.asarray([0.3, 1.2])
    got = _mixer(4.0, 0.0).mix(values, jnp.ones(2), jnp.zeros((2, 3)), jnp.ones((2, 3)))
    np.testing.assert_array_equal(got, values)


def test_one_binary_logit_distils_the_bernoulli_distribution():
    # Expected: KL between Bernoulli(sigmoid(t/T)) and Bernoulli(sigmoid(s/T)), by its formula.
    s, t, temp = np.array([[0.5], [-2.0]]), np.array([[1.5], [0.3]]), 2.0
    p, q = 1 / (1 + np.exp(-t[:, 0] / temp)), 1 / (1 + np.exp(-s[:, 0] / temp))
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    got = _mixer(temp, 1.0).mix(jnp.zeros(2), jnp.ones(2), jnp.asarray(s), jnp.asarray(t))
    np.testing.assert_allclose(got, temp**2 * kl, rtol=1e-5)


@pytest.fixture(scope="module")
def teacher(data_dir, tmp_path_factory):
    """A LeNet trained for 2 epochs on digits: a teacher better than a 1-epoch MLP."""
    workdir = str(tmp_path_factory.mktemp("teacher"))
    engine.fit(fast_config(data_dir, workdir, arch="lenet", epochs=2))
    return workdir


def test_the_teacher_is_frozen_and_alpha_zero_trains_the_plain_student(data_dir, teacher, tmp_path):
    plain, zero, mixed = (str(tmp_path / n) for n in ("plain", "zero", "mixed"))
    engine.fit(fast_config(data_dir, plain))
    engine.fit(fast_config(data_dir, zero, teacher=teacher, distill_alpha=0.0))
    result = engine.fit(fast_config(data_dir, mixed, teacher=teacher))
    # The soft term switched off leaves the same training, bit for bit; switched on, it changes it.
    assert records_without_timings(zero) == records_without_timings(plain)
    assert records_without_timings(mixed) != records_without_timings(plain)
    assert 0 <= result["test"]["accuracy"] <= 1
    # The student's checkpoint carries the teacher's parameters unchanged (the optimizer never
    # saw them): equal to the teacher's best checkpoint.
    student = read_state(f"{mixed}/checkpoints/latest/2/state")
    source = read_state(f"{teacher}/checkpoints/best/2/state")
    frozen = jax.tree.leaves(student["frozen"]["params"])
    assert frozen and len(frozen) == len(jax.tree.leaves(source["params"]))
    for a, b in zip(frozen, jax.tree.leaves(source["params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    # The trained student predicts like any run.
    predictor = engine.load(mixed)
    inputs, labels = predictor.examples("test")
    accuracy = float(np.mean(predictor.predict(inputs) == labels))
    assert accuracy == pytest.approx(result["test"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(teacher="/nonexistent/run"), "--teacher=/nonexistent/run: "),
        (dict(distill_alpha=0.5), "--distill_alpha belongs to the distill program"),
        (dict(teacher="T", distill_alpha=1.5), "--distill_alpha must be in [0, 1]"),
        (dict(teacher="T", distill_temperature=0.0), "--distill_temperature must be > 0"),
        (dict(teacher="T", dataset="breast_cancer"), "trained on --dataset=digits"),
    ],
)
def test_bad_distillation_settings_are_one_line_errors(
    data_dir, teacher, tmp_path, overrides, message
):
    if overrides.get("teacher") == "T":
        overrides = dict(overrides, teacher=teacher)
    config = dataclasses.replace(fast_config(data_dir, str(tmp_path / "s")), **overrides)
    with pytest.raises(ConfigError, match=None) as e:
        engine.fit(config)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()  # refused before anything was written
