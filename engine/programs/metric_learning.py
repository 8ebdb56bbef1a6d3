"""Metric learning: an L2-normalised embedding trained with the triplet loss, mined in the batch.

`--loss=triplet_margin` on a labelled dataset trains the architecture's head as an embedding of
`--embedding_dim` values, normalised to unit length. Batches hold P classes x K examples
(`engine.data.loader.ClassBatches`), and the triplets (anchor, positive of its class, negative
of another) are formed from the whole global batch inside the jitted step (`--mining`):

* `batch_hard`: per anchor its farthest positive and nearest negative (Hermans, Beyer and
  Leibe 2017, "In Defense of the Triplet Loss"); the loss is the mean over anchors.
* `semi_hard`: per (anchor, positive) pair the nearest negative farther than the positive
  (FaceNet, Schroff et al. 2015), or the farthest negative when none is (as TensorFlow
  Addons' `triplet_semihard_loss`); the mean over pairs.
* `all`: every valid triplet; the mean over all of them ("batch all"; Hermans et al. average
  over the active ones only, which divides by zero once every triplet is satisfied).

The share of active (non-zero loss) triplets is reported each epoch, so mining can be seen to
work. Evaluation reports recall@1 and mAP by leave-one-out retrieval inside the evaluated
split (every example queries all others, the protocol of the CUB-200 / SOP benchmarks; Musgrave
et al. 2020), from embeddings gathered on the device into a buffer the size of the split.

Under pmap each device mines for its own anchors against the all-gathered global batch, so the
loss, its gradients and the metrics equal those of one device.

The program is registered as `metric_learning`; a loss of the `triplets` kind selects it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import losses
from engine.config import Config, ConfigError, at_least, setting
from engine.data import DatasetInfo
from engine.data.loader import ClassBatches
from engine.data.source import CLASSIFICATION
from engine.doctor.probe import MIN_TRAIN_SUBSET
from engine.programs import registry, steps, supervised
from engine.programs import state as state_lib
from engine.programs import tasks as tasks_lib
from engine.runtime.program import Program, psum

MINING = ("batch_hard", "semi_hard", "all")
EMBEDDING = "embedding"  # the Task kind
HIGHER_IS_BETTER = {"loss": False, "active_triplets": False, "recall_at_1": True, "map": True}
SUM_NAMES = ("loss_sum", "weight_sum", "count", "active", "triplets")  # `task`'s metric sums
# Hermans et al.'s K; P then fills the batch (at most the number of classes).
DEFAULT_EXAMPLES_PER_CLASS = 4


def batch_shape(
    num_classes: int, batch_size: int, classes_per_batch: int, examples_per_class: int
) -> tuple[int, int]:
    """(P, K): the given values, else K = 4 and P = as many classes as fill `batch_size`."""
    k = examples_per_class or DEFAULT_EXAMPLES_PER_CLASS
    p = classes_per_batch or min(num_classes, max(2, batch_size // k))
    if p > num_classes or p < 2 or k < 2:
        raise ConfigError(
            f"--classes_per_batch={p} and --examples_per_class={k}: triplets need at least 2 "
            f"classes (of {num_classes}) and 2 examples of each per batch"
        )
    return p, k


def normalize(outputs: jax.Array) -> jax.Array:
    """Unit-length float32 embeddings (B, d)."""
    x = outputs.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


def _gather(x, axis_name):
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """Euclidean distances (n, m), with gradient 0 (not NaN) at distance 0."""
    sq = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def mine(emb, labels, mask, *, mining: str, margin: float, axis_name: str | None):
    """Per-anchor triplet losses of this device's rows against the global batch.

    Args:
      emb: (b, d) unit embeddings of this device's rows (b = B under jit).
      labels: (b,) int classes.
      mask: (b,) bool, False on padding rows.
      mining: one of MINING.
      margin: the triplet margin.
      axis_name: the pmap axis (the candidates are all-gathered over it), or None.

    Returns:
      (values (b,), weights (b,), active (b,), triplets (b,)): the loss is
      sum(values) / sum(weights) over the global batch; `active` counts each anchor's triplets
      with a non-zero loss, `triplets` all its triplets considered.
    """
    all_emb, all_labels = _gather(emb, axis_name), _gather(labels, axis_name)
    all_mask = _gather(mask, axis_name)
    b = emb.shape[0]
    offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * b
    own = jnp.arange(b)[:, None] + offset == jnp.arange(all_emb.shape[0])[None, :]
    same = (labels[:, None] == all_labels[None, :]) & all_mask[None, :] & mask[:, None]
    pos, neg = same & ~own, (labels[:, None] != all_labels[None, :]) & all_mask[None, :]
    neg = neg & mask[:, None]
    valid = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
    f32 = jnp.float32
    if mining == "batch_hard":
        d = jax.lax.stop_gradient(_distances(emb, all_emb))
        hardest_pos = jnp.argmax(jnp.where(pos, d, -jnp.inf), axis=1)
        hardest_neg = jnp.argmin(jnp.where(neg, d, jnp.inf), axis=1)
        values = losses.triplet_margin(
            emb,
            all_emb[hardest_pos],
            all_emb[hardest_neg],
            margin=margin,
            reduction="none",
            where=valid,
        )
        values = jnp.where(valid, values, 0.0)
        return values, valid.astype(f32), (values > 0).astype(f32), valid.astype(f32)
    d = _distances(emb, all_emb)
    if mining == "semi_hard":
        d_ap = d[:, :, None]  # (b, B, 1): each positive
        d_an = d[:, None, :]  # (b, 1, B): each negative
        farther = neg[:, None, :] & (d_an > d_ap)
        nearest_farther = jnp.min(jnp.where(farther, d_an, jnp.inf), axis=2)
        farthest = jnp.max(jnp.where(neg[:, None, :], d_an, -jnp.inf), axis=2)
        chosen = jnp.where(jnp.any(farther, axis=2), nearest_farther, farthest)
        pair = pos & valid[:, None]
        hinge = jnp.where(pair, jax.nn.relu(d - chosen + margin), 0.0)
        count = jnp.sum(pair, axis=1).astype(f32)
        return jnp.sum(hinge, axis=1), count, jnp.sum(hinge > 0, axis=1).astype(f32), count
    triplet = pos[:, :, None] & neg[:, None, :]
    hinge = jnp.where(triplet, jax.nn.relu(d[:, :, None] - d[:, None, :] + margin), 0.0)
    count = jnp.sum(triplet, axis=(1, 2)).astype(f32)
    active = jnp.sum(hinge > 0, axis=(1, 2)).astype(f32)
    return jnp.sum(hinge, axis=(1, 2)), count, active, count


def task(
    embedding_dim: int, *, mining: str, margin: float, axis_name: str | None
) -> tasks_lib.Task:
    """The embedding task: the mined triplet loss and its sums (for `steps.make_train_step`)."""

    def loss(outputs, targets, mask, norm):
        del norm
        values, weights, _, _ = mine(
            normalize(outputs), targets, mask, mining=mining, margin=margin, axis_name=axis_name
        )
        return values, weights

    def metrics(outputs, targets, mask, norm):
        del norm
        values, weights, active, triplets = mine(
            normalize(outputs), targets, mask, mining=mining, margin=margin, axis_name=axis_name
        )
        return {
            "loss_sum": jnp.sum(values),
            "weight_sum": jnp.sum(weights),
            "count": jnp.sum(mask.astype(jnp.float32)),
            "active": jnp.sum(active),
            "triplets": jnp.sum(triplets),
        }

    return tasks_lib.Task(EMBEDDING, embedding_dim, loss, metrics, "map")


def retrieval(emb: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> dict:
    """Leave-one-out recall@1 and mAP of unit embeddings (N, d) with classes (N,).

    Each example queries all others by cosine similarity (the Euclidean order of unit
    vectors); recall@1: the nearest has its class; AP: the mean precision at the rank of each
    example of its class; mAP over queries with at least one such example.

    >>> e = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    >>> e /= np.linalg.norm(e, axis=1, keepdims=True)
    >>> retrieval(e, np.array([0, 0, 1, 1]))
    {'recall_at_1': 1.0, 'map': 1.0}
    """
    n = len(labels)
    if n < 2:
        return {"recall_at_1": 0.0, "map": 0.0}  # nothing to retrieve (strict JSON: no NaN)
    hits, aps = [], []
    for start in range(0, n, chunk):
        sim = emb[start : start + chunk] @ emb.T
        rows = np.arange(start, min(start + chunk, n))
        sim[np.arange(len(rows)), rows] = -np.inf  # not itself
        ranked = np.argsort(-sim, axis=1, kind="stable")[:, : n - 1]
        relevant = labels[ranked] == labels[rows][:, None]
        hits.append(relevant[:, 0])
        found = np.cumsum(relevant, axis=1)
        precision = found / np.arange(1, n)[None, :]
        total = relevant.sum(axis=1)
        ap = np.where(total > 0, (precision * relevant).sum(axis=1) / np.maximum(total, 1), 0)
        aps.append(ap[total > 0])
    return {
        "recall_at_1": float(np.mean(np.concatenate(hits))),
        "map": float(np.mean(np.concatenate(aps))),
    }


def summarize(sums: dict) -> dict:
    """Train sums: loss, active-triplet share; evaluation sums add recall@1 and mAP."""
    sums = dict(sums)
    out = {
        "loss": float(sums["loss_sum"]) / max(float(sums["weight_sum"]), 1e-12),
        "active_triplets": float(sums["active"]) / max(float(sums["triplets"]), 1.0),
        "count": int(sums["count"]),
    }
    if "optim" in sums:
        out["optim"] = steps.summarize_optimizer(sums["optim"])
    bad = int(sums.get("nonfinite", 0))
    if bad:
        out["nonfinite_steps"] = bad
    if "gallery" in sums:
        g = sums["gallery"]
        if int(g["overflow"]):
            raise ValueError(
                "the evaluated split is larger than the embedding buffer (sized for the "
                "validation and test splits); evaluate retrieval on val or test"
            )
        keep = g["valid"].astype(bool)
        out.update(retrieval(g["emb"][keep], g["labels"][keep]))
    return out


def _empty_gallery(capacity: int, dim: int) -> dict:
    """Host zeros of the evaluation buffer: `capacity` rows of embeddings, labels, validity."""
    return {
        "emb": np.zeros((capacity, dim), np.float32),
        "labels": np.zeros((capacity,), np.int32),
        "valid": np.zeros((capacity,), np.int32),
        "filled": np.zeros((), np.int32),
        "overflow": np.zeros((), np.int32),
    }


def _append(gallery: dict, rows: dict, capacity: int) -> dict:
    """`gallery` with the global batch's `rows` written after its filled rows (on device).

    A batch past `capacity` is counted in `overflow` (dynamic_update_slice would clamp it onto
    the last rows), which `summarize` refuses.
    """
    at, n = gallery["filled"], rows["labels"].shape[0]
    out = {
        k: jax.lax.dynamic_update_slice(gallery[k], v, (at,) + (0,) * (v.ndim - 1))
        for k, v in rows.items()
    }
    out["filled"] = at + n
    out["overflow"] = gallery["overflow"] + (at + n > capacity).astype(jnp.int32)
    return out


def make(
    model,
    tx,
    cfg: steps.StepConfig,
    task_: tasks_lib.Task,
    axis_name: str | None,
    *,
    capacity: int,
    input_shape: tuple[int, ...],
    norm: dict,
    notes: tuple[str, ...] = (),
    lr_schedule=None,
    grad_accum_steps: int = 1,
) -> Program:
    """The metric-learning program.

    Args:
      model: the architecture with an `embedding_dim` head.
      tx: the optax chain.
      cfg: the steps' static options.
      task_: `task(...)`'s embedding task.
      axis_name: the pmap axis, or None.
      capacity: rows of the evaluation buffer: at least the largest split evaluated, padded
        to whole batches.
      input_shape, norm, notes, lr_schedule, grad_accum_steps: as `supervised.make`.
    """
    sample = np.zeros((1, *input_shape), np.float32)
    dim = task_.num_outputs

    def init(rng, batch):
        del batch
        return state_lib.create(
            model, tx, rng=rng, sample_input=sample, norm=norm, ema=cfg.ema_decay > 0
        )

    def eval_step(state, batch, totals):
        out = steps.outputs(model, cfg, state, batch["inputs"])
        sums = psum(task_.metrics(out, batch["targets"], batch["mask"], state.norm), axis_name)
        rows = {
            "emb": _gather(normalize(out), axis_name),
            "labels": _gather(batch["targets"].astype(jnp.int32), axis_name),
            "valid": _gather(batch["mask"].astype(jnp.int32), axis_name),
        }
        new = jax.tree.map(jnp.add, {k: v for k, v in totals.items() if k != "gallery"}, sums)
        return {**new, "gallery": _append(totals["gallery"], rows, capacity)}

    def eval_zeros(state, batch):
        del state, batch  # every sum is a float32 scalar; the buffer has a fixed size
        zeros = {name: np.zeros((), np.float32) for name in SUM_NAMES}
        return {**zeros, "gallery": _empty_gallery(capacity, dim)}

    def infer(state, inputs):
        emb = normalize(steps.outputs(model, cfg, state, inputs))
        return {"outputs": emb, "prediction": emb, "embedding": emb}

    return Program(
        init=init,
        train_step=steps.make_train_step(
            model,
            tx,
            task_,
            cfg,
            axis_name,
            lr_schedule=lr_schedule,
            grad_accum_steps=grad_accum_steps,
        ),
        eval_step=eval_step,
        eval_zeros=eval_zeros,
        summarize=summarize,
        higher_is_better=HIGHER_IS_BETTER,
        monitor="val_map",
        infer=infer,
        notes=tuple(notes),
    )


def _task(config: Config, info: DatasetInfo, class_weights, axis_name) -> tasks_lib.Task:
    """The embedding task of a run, refusing data and settings it cannot use."""
    del class_weights
    if info.task != CLASSIFICATION:
        raise ConfigError(
            f"--loss={config.loss} learns an embedding from class labels (triplets mined in "
            f"the batch); --dataset={info.name} has none: pick a regression loss"
        )
    if config.class_weights != "none" or config.balance != "none":
        raise ConfigError(
            f"--loss={config.loss} draws class-balanced batches itself; drop --class_weights "
            "and --balance"
        )
    return task(config.embedding_dim, mining=config.mining, margin=config.margin,
                axis_name=axis_name)  # fmt: skip


def _train_batches(config: Config, info: DatasetInfo, train_source, divisor: int):
    """The P x K training batches (their rows divide by `divisor`), and their start-up line."""
    p, k = batch_shape(
        info.num_classes, config.batch_size, config.classes_per_batch, config.examples_per_class
    )
    if (p * k) % divisor:
        raise ConfigError(
            f"batches of {p} classes x {k} examples ({p * k} rows) do not divide by the "
            f"{divisor} devices; choose --classes_per_batch and --examples_per_class"
        )
    note = f"triplet batches: {p} classes x {k} examples, mining {config.mining}"
    return ClassBatches(np.asarray(train_source.targets), p, k), note


def _gallery_capacity(config: Config, run: registry.Run) -> int:
    """Rows of the evaluation buffer, padded to whole global batches.

    The largest split evaluated each epoch or at the end: validation, test, the doctor's subset
    of the training split.
    """
    batch = config.eval_batch_size or config.batch_size
    val, train = len(run.splits.val), len(run.splits.train)
    largest = max(val, len(run.splits.test), min(train, max(val, MIN_TRAIN_SUBSET)))
    return -(-largest // batch) * batch


def factory(config: Config, run: registry.Run, axis_name: str | None) -> Program:
    """The metric-learning program of `run`: its model with an embedding head."""
    made = supervised.parts(config, run)
    capacity = _gallery_capacity(config, run)
    return make(run.model, made.tx, run.step_config, run.task, axis_name, capacity=capacity,
                notes=made.notes, **made.common)  # fmt: skip


def _claims(config: Config) -> bool:
    """A registered loss that compares triplets (an unknown name is validation's to refuse)."""
    try:
        return losses.kind(config.loss) == "triplets"
    except ValueError:
        return False


def _check(config: Config) -> None:
    if losses.spec(config.loss).kind != "triplets":
        raise ConfigError(
            f"--program=metric_learning trains with a loss that compares triplets, e.g. "
            f"--loss=triplet_margin, not --loss={config.loss}"
        )


SETTINGS = {
    "embedding_dim": setting(
        64,
        "size of the L2-normalised embedding the head outputs",
        check=at_least(1),
        model=True,
    ),
    "mining": setting(
        "batch_hard",
        "triplets from the batch: batch_hard (hardest positive and negative per anchor), "
        "semi_hard (FaceNet) or all",
        choices=MINING,
    ),
    "margin": setting(
        0.2,
        "the margin of max(d(a,p) - d(a,n) + margin, 0)",
        check=at_least(0),
    ),
    "classes_per_batch": setting(0, "P classes per batch (0: as many as fill --batch_size)"),
    "examples_per_class": setting(
        0, f"K examples of each class per batch (0: {DEFAULT_EXAMPLES_PER_CLASS})"
    ),
}

SPEC = registry.register(
    registry.ProgramSpec(
        name="metric_learning",
        help="an L2-normalised embedding trained with triplets mined in class-balanced "
        "batches, evaluated by retrieval (selected by a triplet loss, e.g. "
        "--loss=triplet_margin)",
        make=factory,
        settings=SETTINGS,
        claims=_claims,
        check=_check,
        task=_task,
        train_batches=_train_batches,
    )
)
