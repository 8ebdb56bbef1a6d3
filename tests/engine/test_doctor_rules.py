"""The doctor's rules on hand-made records, and the train step's gradient sums (jitted)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine.doctor import compare, curves, diagnose, rules
from engine.programs import steps
from engine.runtime import loop

CTX = {"task": "classification", "num_classes": 10, "majority_share": 0.1, "epochs": 5}


def _rec(epoch, train_loss, val_loss, te_loss=None, val_acc=0.9, te_acc=0.95, **extra):
    r = {
        "epoch": epoch,
        "train": {"loss": train_loss, "accuracy": te_acc, "count": 100},
        "val": {"loss": val_loss, "accuracy": val_acc, "count": 100},
        "train_eval": {"loss": train_loss if te_loss is None else te_loss, "accuracy": te_acc},
    }
    r.update(extra)
    return r


def test_seeds_overfitting_example_is_named():
    # seeds 004: "训练集损失为0.8, 验证集损失为2.0, 则可以判断为过拟合" (with a widening gap).
    records = [_rec(1, 1.0, 1.5), _rec(2, 0.9, 1.8), _rec(3, 0.8, 2.0)]
    found = curves.overfitting(records, CTX)
    assert found is not None and found.rule == "overfitting"
    assert "2.0000 vs training loss 0.8000" in found.saw
    # The same numbers with a narrowing gap are not (yet) called overfitting.
    narrowing = [_rec(1, 0.5, 2.5), _rec(2, 0.7, 2.2), _rec(3, 0.8, 2.0)]
    assert curves.overfitting(narrowing, CTX) is None


def test_small_gap_of_a_good_model_is_not_overfitting():
    # The default digits job ends near train 0.01 / val 0.04 (as measured): a ratio, no gap.
    records = [_rec(1, 0.02, 0.05), _rec(2, 0.015, 0.045), _rec(3, 0.011, 0.0407)]
    assert curves.overfitting(records, {**CTX, "epochs": 30}) is None


def test_chance_distinguishes_one_class_from_random():
    one = _rec(3, 2.3, 2.3026, val_acc=0.1, te_acc=0.1)
    one["probe"] = {"top_prediction": 4, "top_prediction_share": 1.0}
    spread = _rec(3, 2.3, 2.3026, val_acc=0.1, te_acc=0.1)
    spread["probe"] = {"top_prediction": 4, "top_prediction_share": 0.2}
    records = [_rec(1, 2.3, 2.3), _rec(2, 2.3, 2.3)]
    f_one = rules.chance([*records, one], CTX)
    f_rand = rules.chance([*records, spread], CTX)
    assert "predicts one class (4) for 100%" in f_one.saw
    assert "at random" in f_rand.saw
    # ln 10 = 2.302585 (the chance-level loss of 10 balanced classes).
    assert "ln 10 = 2.3026" in f_rand.saw
    imbalanced = {**CTX, "num_classes": 2, "majority_share": 0.9}
    binary = _rec(3, 0.33, 0.33, val_acc=0.9, te_acc=0.9)
    binary["probe"] = {"top_prediction": 0, "top_prediction_share": 1.0}
    f_imb = rules.chance([*records, binary], imbalanced)
    assert "imbalance" in f_imb.cause and "oversample" in f_imb.remedy
    learned = _rec(3, 0.5, 0.5, val_acc=0.5, te_acc=0.6)
    assert rules.chance([*records, learned], CTX) is None


def test_non_finite_names_the_first_step_and_layer():
    ok = _rec(1, 0.5, 0.5)
    ok["train"]["optim"] = {"max_grad_norm": 1e4, "layers": {"a": 1.0, "b": 2.0}}
    bad = _rec(2, None, None)
    bad["train"]["optim"] = {
        "first_nonfinite_step": 37,
        "first_nonfinite_layers": ["b"],
        "layers": {"a": None, "b": None},
    }
    found = rules.non_finite([ok, bad], CTX)
    assert "from step 37 (epoch 2), first in the gradient of b" in found.saw
    assert "1e+04" in found.saw  # the largest norm the epoch before
    # Only the inputs' rule survives beside it: later numbers are garbage.
    names = [f.rule for f in diagnose([ok, bad], {**CTX, "epochs": 2})]
    assert names == ["non_finite"]


def test_gradients_across_layers():
    def with_layers(norms):
        r = _rec(1, 2.0, 2.0)
        r["train"]["optim"] = {"layers": norms, "grad_norm": 1.0}
        return r

    ctx = {**CTX, "layers": ["in", "mid", "out"]}
    vanish = rules.gradients([with_layers({"in": 1e-5, "mid": 1e-2, "out": 0.5})], ctx)
    explode = rules.gradients([with_layers({"in": 5e3, "mid": 50.0, "out": 1.0})], ctx)
    healthy = rules.gradients([with_layers({"in": 0.8, "mid": 0.5, "out": 0.7})], ctx)
    assert vanish.rule == "vanishing_gradients" and "2e-05x across 3 layers" in vanish.saw
    assert explode.rule == "exploding_gradients" and "5e+03x" in explode.saw
    assert healthy is None


def test_lr_rules_do_not_contradict_each_other():
    jumping = [_rec(1, 0.73, 0.5), _rec(2, 0.40, 0.6), _rec(3, 0.67, 0.8), _rec(4, 0.73, 1.1)]
    names = [f.rule for f in diagnose(jumping, {**CTX, "lr": 1.0})]
    assert "lr_too_high" in names and "lr_too_low" not in names
    flat = [_rec(e, 2.45 - 0.001 * e, 2.45, te_acc=0.12, val_acc=0.12) for e in (1, 2, 3)]
    names = [f.rule for f in diagnose(flat, {**CTX, "lr": 1e-5, "epochs": 3})]
    assert "lr_too_low" in names and "lr_too_high" not in names


def test_degradation_needs_worse_training_too():
    ctx = {"dataset": "digits", "arch": "mlp", "loss": "cross_entropy", "task": "classification"}
    shallow = [_rec(1, 0.1, 0.2, val_acc=0.95, te_acc=0.99)]
    deep = [_rec(1, 2.3, 2.3, val_acc=0.10, te_acc=0.11)]
    overfit = [_rec(1, 0.01, 0.9, val_acc=0.80, te_acc=1.0)]
    runs = {
        "s": ({**ctx, "hidden_sizes": [32]}, shallow),
        "d": ({**ctx, "hidden_sizes": [32] * 8}, deep),
        "o": ({**ctx, "hidden_sizes": [32] * 4}, overfit),
    }
    found = compare.degradation(runs)
    assert [w for w, _ in found] == ["d"]
    assert "depth 8" in found[0][1].saw and "depth 1" in found[0][1].saw


def test_finding_line_is_one_line_and_json_is_strict():
    import json

    from engine.runtime import report

    f = rules.Finding("r", 2, "saw 1.0", "cause", "remedy")
    assert "\n" not in f.line() and f.line().startswith("doctor [r] epoch 2: saw 1.0")
    text = report.dumps({"loss": math.nan, "x": [math.inf]})
    # Non-finite values become null and are listed (engine.runtime.report.strict's convention).
    assert json.loads(text) == {"loss": None, "x": [None], "nonfinite_values": ["loss", "x[0]"]}


def test_train_step_sums_mark_the_first_non_finite_step_jitted():
    """`optimizer_sums` under `loop.accumulating`, jitted: peaks and first steps combine by max."""

    def train_step(state, batch):
        # Gradient of layer "b" becomes inf from step 3 (0-based 2) on; "a" stays finite.
        step = state
        g = {"a": {"w": jnp.ones(2)}, "b": {"w": jnp.where(step >= 2, jnp.inf, 2.0) * jnp.ones(1)}}
        loss = jnp.where(step >= 4, jnp.nan, 1.0)
        return state + 1, {"optim": steps.optimizer_sums(g, loss, step, 0.1 * (step + 1))}

    step = jax.jit(loop.accumulating(train_step))
    state = jnp.zeros((), jnp.int32)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(train_step, state, None)[1])
    totals = zeros
    for _ in range(6):
        state, totals = step(state, None, totals)
    summary = steps.summarize_optimizer(jax.device_get(totals)["optim"])
    assert summary["first_nonfinite_step"] == 3  # 1-based step of the first inf
    assert summary["first_nonfinite_layers"] == ["b"]
    # lr 0.1, 0.2, ..., 0.6 over six steps: mean 0.35 (float32 sums).
    assert summary["lr"] == pytest.approx(0.35, rel=1e-6)
    assert summary["layers"]["a"] == pytest.approx(math.sqrt(2.0), rel=1e-6)  # |(1, 1)|
    assert not np.isfinite(summary["layers"]["b"])
    # Before any non-finite step the markers stay zero: nothing is reported.
    state, totals = jnp.zeros((), jnp.int32), zeros
    for _ in range(2):
        state, totals = step(state, None, totals)
    clean = steps.summarize_optimizer(jax.device_get(totals)["optim"])
    assert clean["first_nonfinite_step"] is None and clean["first_nonfinite_layers"] == []
    # max_grad_sq is the largest step's squared global norm: 2 + 4 = 6 at every step here.
    assert clean["max_grad_norm"] == pytest.approx(math.sqrt(6.0), rel=1e-6)


def test_a_wobble_of_a_converged_loss_is_not_a_high_learning_rate():
    # Measured: `python run.py --arch=resnet --loss=huber` (digits) went 0.0338 in epoch 1 to
    # 0.0002 by epoch 7, then 0.0003 in epoch 8 (1.7x, but 1% of where it started).
    losses = [0.0338, 0.0069, 0.0020, 0.0008, 0.0007, 0.0005, 0.0002, 0.0003, 0.0001]
    records = [_rec(i + 1, x, x) for i, x in enumerate(losses)]
    assert curves.lr_too_high(records, CTX) is None
    # The same 1.7x rise while the loss is still large is one.
    early = [0.0338, 0.0069, 0.0020, 0.0034]
    found = curves.lr_too_high([_rec(i + 1, x, x) for i, x in enumerate(early)], CTX)
    assert found is not None and "1.70x" in found.saw
