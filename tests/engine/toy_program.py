"""A two-model program for testing the loop's seams: a classifier and a student that mimics it.

Both models are linear layers on digits' 64 pixels, each with its own optax optimizer (Adam for
the classifier, SGD with momentum for the student), held in one state as named sub-states, and
updated by one pure step. The student regresses the classifier's logits (stop-gradient), so it
depends on the classifier's trajectory: a wrong sum over devices in either shows up in both.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from engine.runtime.program import Program, summing_eval


def _psum(tree, axis_name):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def make(config, run, axis_name, *, sum_counts=True):
    """The program factory `(config, run, axis_name) -> Program` on `run`'s data.

    `sum_counts=False` is a deliberately broken variant for the tests: each device divides by
    its own row count instead of the global batch's (a per-device mean), which is wrong
    whenever devices hold different numbers of real rows (the padded last batch).
    """
    classes = run.splits.info.num_classes
    teacher, student = nn.Dense(classes), nn.Dense(classes)
    optimizers = {"teacher": optax.adam(config.lr), "student": optax.sgd(0.05, momentum=0.9)}
    shift = np.asarray(run.norm["input_shift"], np.float32)
    scale = np.asarray(run.norm["input_scale"], np.float32)

    def features(inputs):
        x = (inputs.astype(jnp.float32) - shift) / scale
        return x.reshape(x.shape[0], -1)

    def init(rng, batch):
        x = features(jnp.asarray(batch["inputs"]))
        keys = dict(zip(("teacher", "student"), jax.random.split(rng)))
        state = {"step": jnp.zeros((), jnp.int32)}
        for name, model in (("teacher", teacher), ("student", student)):
            params = model.init(keys[name], x)["params"]
            state[name] = {"params": params, "opt_state": optimizers[name].init(params)}
        return state

    def losses(params, x, targets, mask):
        weights = mask.astype(jnp.float32)
        total = _psum(jnp.sum(weights), axis_name) if sum_counts else jnp.sum(weights)
        if not sum_counts and axis_name is not None:
            total = jnp.maximum(total, 1.0) * jax.lax.psum(1, axis_name)
        logits = teacher.apply({"params": params["teacher"]}, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        mimic = student.apply({"params": params["student"]}, x)
        mse = jnp.mean((mimic - jax.lax.stop_gradient(logits)) ** 2, axis=-1)
        return jnp.sum(ce * weights) / total, jnp.sum(mse * weights) / total, logits

    def train_step(state, batch):
        x, targets, mask = features(batch["inputs"]), batch["targets"], batch["mask"]
        params = {name: state[name]["params"] for name in ("teacher", "student")}

        def total(p):
            ce, mse, logits = losses(p, x, targets, mask)
            return ce + mse, (ce, mse, logits)

        grads, (ce, mse, logits) = jax.grad(total, has_aux=True)(params)
        grads = _psum(grads, axis_name)
        new = {"step": state["step"] + 1}
        for name in ("teacher", "student"):
            updates, opt_state = optimizers[name].update(
                grads[name], state[name]["opt_state"], state[name]["params"]
            )
            new[name] = {
                "params": optax.apply_updates(state[name]["params"], updates),
                "opt_state": opt_state,
            }
        sums = metrics_of(logits, ce, mse, targets, mask)
        return new, _psum(sums, axis_name)

    def metrics_of(logits, ce, mse, targets, mask):
        # ce and mse are this device's share of the global means: their psum is the mean.
        m = mask.astype(jnp.float32)
        return {
            "ce": ce,
            "mse": mse,
            "correct": jnp.sum((jnp.argmax(logits, -1) == targets) * m),
            "count": jnp.sum(m),
        }

    def eval_metrics(state, batch):
        x, targets, mask = features(batch["inputs"]), batch["targets"], batch["mask"]
        params = {name: state[name]["params"] for name in ("teacher", "student")}
        m = mask.astype(jnp.float32)
        logits = teacher.apply({"params": params["teacher"]}, x)
        mimic = student.apply({"params": params["student"]}, x)
        return {
            "correct": jnp.sum((jnp.argmax(logits, -1) == targets) * m),
            "agree": jnp.sum((jnp.argmax(mimic, -1) == jnp.argmax(logits, -1)) * m),
            "count": jnp.sum(m),
        }

    eval_step, eval_zeros = summing_eval(eval_metrics, axis_name)

    def summarize(sums):
        count = max(float(sums["count"]), 1.0)
        out = {"accuracy": float(sums["correct"]) / count, "count": int(count)}
        if "agree" in sums:
            out["agreement"] = float(sums["agree"]) / count
        else:
            out["ce_sum"] = float(sums["ce"])  # batch means, summed over the epoch
            out["mse_sum"] = float(sums["mse"])
        return out

    return Program(
        init=init,
        train_step=train_step,
        eval_step=eval_step,
        eval_zeros=eval_zeros,
        summarize=summarize,
        higher_is_better={"accuracy": True, "agreement": True},
        monitor="val_accuracy",
        notes=("toy program: a linear classifier and a linear student mimicking it",),
    )
