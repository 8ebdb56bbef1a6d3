"""Engine training throughput against a bare hand-written jitted step loop, in one process.

Both loops train the same model with the same optimizer on the same in-memory data at the same
batch size; trials alternate (engine epoch, bare epoch, ...) and the median of each is compared,
so machine noise hits both alike. The engine's loop is the real one
(`engine.runtime.loop.train_epoch`: loader, batch placement, the pure step under
`Plan.wrap_train`, on-device metric sums); the bare loop is what a user would write by hand:
slice NumPy arrays, `jax.device_put`, a jitted step with donated state.

Usage:
  python benchmarks/throughput.py                 # both cases
  python benchmarks/throughput.py --case=lenet    # one case
  python benchmarks/throughput.py --parallel=none # the engine in plain-jit mode
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.runtime import host_memory

if __name__ == "__main__":  # as run.py does, before JAX loads (engine/runtime/host_memory.py)
    host_memory.restart()

import jax
import jax.numpy as jnp
import numpy as np
import optax

import architectures
from benchmarks.engine_loop import engine_epoch_fn

CASES = {
    # name: (arch, options, input shape, examples, batch, target)
    "resnet18": ("resnet", {"depth": 18}, (32, 32, 3), 128 * 4, 128, 0.95),
    "lenet": ("lenet", {}, (8, 8, 1), 1257, 64, 0.80),
}


def _data(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    if shape == (8, 8, 1):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.images[:n, :, :, None].astype(np.float32)
        y = digits.target[:n].astype(np.int32)
        return x, y
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return x, y


def _bare_epoch_fn(arch, options, x, y, batch):
    """A hand-written loop: the same model, optax adam, softmax cross-entropy, jit + donate."""
    spec = architectures.spec(arch)
    model = architectures.get(arch, num_classes=10, **options)
    size = max(x.shape[1], spec.min_image_size)
    mean = x.reshape(-1, x.shape[-1]).mean(0).astype(np.float32)
    std = x.reshape(-1, x.shape[-1]).std(0).astype(np.float32) + 1e-6
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, x.shape[-1])))
    tx = optax.adam(optax.cosine_decay_schedule(1e-3, 100 * (len(x) // batch)))
    params, stats = variables["params"], variables.get("batch_stats", {})
    carry = (params, stats, tx.init(params))
    has_bn = spec.has_batchnorm

    @jax.jit
    def step(carry, xb, yb):
        params, stats, opt_state = carry
        xb = (xb.astype(jnp.float32) - mean) / std
        if xb.shape[1] != size:
            xb = jax.image.resize(xb, (xb.shape[0], size, size, xb.shape[3]), "bilinear")

        def loss_fn(p):
            v = {"params": p, "batch_stats": stats} if has_bn else {"params": p}
            logits, upd = model.apply(v, xb, train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, upd.get("batch_stats", stats)

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    step = jax.jit(step, donate_argnums=0)
    box = {"carry": carry, "epoch": 0}
    steps_per_epoch = len(x) // batch

    def epoch():
        perm = np.random.default_rng(box["epoch"]).permutation(len(x))
        loss = None
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            box["carry"], loss = step(box["carry"], jax.device_put(x[idx]), jax.device_put(y[idx]))
        float(loss)  # one read per epoch, as the engine does
        box["epoch"] += 1
        return steps_per_epoch * batch

    return epoch


def measure(case: str, mode: str = "jit", trials: int = 5) -> dict:
    """Runs `trials` alternating epochs of each loop after a warm-up; returns examples/s."""
    arch, options, shape, n, batch, target = CASES[case]
    x, y = _data(shape, n)
    engine_fn = engine_epoch_fn(arch, options, x, y, batch, mode)

    def engine_epoch():
        return engine_fn()["count"]

    bare_epoch = _bare_epoch_fn(arch, options, x, y, batch)
    engine_epoch(), bare_epoch()  # compile and warm up
    rates = {"engine": [], "bare": []}
    for _ in range(trials):
        for name, fn in (("engine", engine_epoch), ("bare", bare_epoch)):
            start = time.perf_counter()
            count = fn()
            rates[name].append(count / (time.perf_counter() - start))
    engine, bare = statistics.median(rates["engine"]), statistics.median(rates["bare"])
    return {"case": case, "engine": engine, "bare": bare, "ratio": engine / bare, "target": target}


def main() -> None:
    """Prints examples/s of both loops and their ratio for each case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--parallel", choices=["jit", "none", "pmap"], default="jit")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    cases = list(CASES) if args.case == "all" else [args.case]
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}")
    for case in cases:
        r = measure(case, args.parallel, args.trials)
        verdict = "ok" if r["ratio"] >= r["target"] else "BELOW TARGET"
        print(
            f"{case:>9}: engine {r['engine']:8.1f} ex/s  bare jit {r['bare']:8.1f} ex/s  "
            f"ratio {r['ratio']:.3f} (target >= {r['target']:.2f}) {verdict}",
            flush=True,
        )


if __name__ == "__main__":
    main()
