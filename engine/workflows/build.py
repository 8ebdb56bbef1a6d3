"""Builds a run's pieces from its configuration, checking every data-dependent fact before work.

`load_splits` loads the dataset once and splits it; `facts` says what the automatic values need
of it; `build` checks the combination (architecture against input kind and size, batch size
against devices and the training split, loss against task) and returns the `Run` a program is
made from: the model, task, loaders and normalisation constants. Nothing here writes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import losses
from engine import data
from engine.config import Config, ConfigError, recipes
from engine.data.classes import Relabeled, filter_classes
from engine.data.source import REGRESSION, ArraySource, Subset
from engine.programs import ProgramSpec, Run, tasks
from engine.runtime.parallel import Plan
from engine.workflows import model_setup

# Record-backed splits up to this many bytes of decoded inputs are decoded once into memory
# (CIFAR-10's 50,000 x 32 x 32 x 3 bytes = 147 MiB qualifies; ImageNet streams).
IN_MEMORY_LIMIT = 1 << 30


def _in_memory(source) -> bool:
    # Row views (`Subset`, `--classes`' `Relabeled`) read their `source` by index: arrays under
    # them are in memory too (streaming them spawned two grain workers an epoch, ~10 s a
    # 3-epoch LeNet run on 81 rows).
    while isinstance(source, (Subset, Relabeled)):
        source = source.source
    return isinstance(source, ArraySource)


def _maybe_materialize(dataset, streaming: str):
    """Decodes small record-backed splits into arrays once, so epochs do not decode again."""
    if streaming != "auto":
        return dataset
    info = dataset.info
    row_bytes = int(np.prod(info.input_shape))  # uint8 images: one byte a value
    changes = {}
    for name in ("train", "val", "test"):
        source = getattr(dataset, name)
        if source is None or _in_memory(source) or len(source) * row_bytes > IN_MEMORY_LIMIT:
            continue
        parts = [
            source.get(np.arange(i, min(i + 4096, len(source))))
            for i in range(0, len(source), 4096)
        ]
        inputs = np.concatenate([p[0] for p in parts])
        changes[name] = ArraySource(inputs, np.concatenate([p[1] for p in parts]))
    return dataclasses.replace(dataset, **changes) if changes else dataset


def load_splits(config: Config, *, materialize: bool = True):
    """`config`'s dataset loaded and split as the run splits it (and `--classes` filtered).

    Args:
      config: a validated configuration.
      materialize: read a prepared dataset into memory when `--streaming` says so (a caller
        that only counts rows passes False).

    Raises:
      ConfigError: one line for the data package's errors (a missing file, a bad split).
    """
    options = data.Options(
        data_dir=config.data_dir or data.default_data_dir(),
        target=config.target,
        image_size=config.image_size or None,
        skip_bad_files=config.skip_bad_files,
    )
    try:
        dataset = data.load(config.dataset, options)
        if materialize:
            dataset = _maybe_materialize(dataset, config.streaming)
        splits = data.split(
            dataset,
            test_fraction=config.test_fraction,
            val_fraction=config.val_fraction,
            seed=config.seed,
            method=config.split,
            cv_folds=config.cv_folds,
            fold=config.fold,
        )
        if config.classes:
            splits = filter_classes(splits, config.classes)
    except ValueError as e:  # the data package's errors are one-line user errors
        raise ConfigError(str(e)) from None
    return splits


def _trained_rows(config: Config, splits) -> int:
    """Rows of the training split as trained on (oversampled when `--balance` says so)."""
    if config.balance == "oversample" and splits.info.task != REGRESSION:
        return len(data.oversample(splits.train, seed=config.seed))
    return len(splits.train)


def facts(config: Config, splits) -> recipes.DataFacts:
    """What the automatic values need to know of the loaded `splits`."""
    info = splits.info
    return recipes.DataFacts(
        table=not info.is_image,
        train_rows=_trained_rows(config, splits),
        val_rows=len(splits.val),
        task=info.task,
    )


def _check_batches(config: Config, devices: int, processes: int, num_train: int) -> int:
    """Refuses batch sizes the devices, processes or training split cannot take; the eval batch."""
    if config.batch_size % devices:
        raise ConfigError(
            f"--batch_size={config.batch_size} does not divide by the {devices} devices; "
            f"use a multiple of {devices}"
        )
    if config.batch_size % processes:
        raise ConfigError(
            f"--batch_size={config.batch_size} does not divide by the {processes} processes"
        )
    eval_batch = config.eval_batch_size or config.batch_size
    if eval_batch % devices:
        raise ConfigError(f"--eval_batch_size={eval_batch} does not divide by {devices} devices")
    if config.batch_size > num_train:
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the training split "
            f"({num_train} examples); use a smaller --batch_size"
        )
    return eval_batch


def _training_rows(config: Config, info, train, notes: list[str]):
    """The training rows as trained on (oversampled, or the overfit check's few), class weights.

    Appends the class counts and whatever changed the rows to `notes`.
    """
    class_weights = None
    train_source = train
    if info.task != REGRESSION:
        counts = data.class_counts(train, info.num_classes)
        names = info.class_names or tuple(str(i) for i in range(info.num_classes))
        shown = ", ".join(f"{n}: {int(c)}" for n, c in zip(names, counts))
        notes.append(f"training classes ({info.num_classes}): {shown}")
        warning = data.imbalance_warning(counts, names)
        if warning:
            notes.append(f"warning: {warning}")
        if config.class_weights == "balanced":
            class_weights = data.balanced_class_weights(train, info.num_classes)
        if config.balance == "oversample":
            train_source = data.oversample(train, seed=config.seed)
            notes.append(f"oversampled training split: {len(train_source)} examples")
    if config.overfit_batches:  # the same few batches every epoch (the loader keeps order)
        rows = np.random.default_rng(config.seed).permutation(len(train_source))
        train_source = Subset(
            train_source, np.sort(rows[: config.overfit_batches * config.batch_size])
        )
        notes.append(f"overfit check: training on the same {len(train_source)} examples")
    return train_source, class_weights


def _loader(config: Config, plan: Plan, source, batch_size: int, shuffle: bool, class_batches):
    """A loader of `source`: in memory or streaming (`--streaming`), this process's share."""
    streaming = config.streaming == "stream" or (
        config.streaming == "auto" and not _in_memory(source)
    )
    return data.make_loader(
        source,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=config.seed,
        streaming=streaming,
        num_processes=plan.num_processes,
        process_index=plan.process_index,
        num_workers=config.num_workers,
        class_batches=class_batches,
    )


def _data_note(config: Config, splits) -> str:
    """The start-up line naming the data, its task and input shape, and the split sizes."""
    fold = {-1: ", refit: validation on the training rows", 0: ""}.get(
        config.fold, f", fold {config.fold} of {config.cv_folds}"
    )
    info = splits.info
    return (
        f"data: {info.name} ({info.task}, input {info.input_shape}) split "
        f"train {len(splits.train)} / val {len(splits.val)} / test {len(splits.test)}{fold}"
    )


def _norm(config: Config, splits) -> dict:
    """The normalisation constants, from the training split only (targets too, for regression)."""
    shift, scale = data.normalization(splits.train, config.normalize)
    norm = {"input_shift": shift, "input_scale": scale}
    if splits.info.task == REGRESSION:
        t_shift, t_scale = data.target_normalization(splits.train)
        norm.update(target_shift=t_shift, target_scale=t_scale)
    return norm


def loss_task(config: Config, info, class_weights=None, *, loss_fn=None, loss_kind=None):
    """The task of `config`'s loss on the dataset `info` describes (`engine.programs.tasks`).

    Args:
      config: the configuration (`loss` and the settings its hyperparameters come from).
      info: the dataset's description.
      class_weights: per-class loss weights (C,), or None.
      loss_fn, loss_kind: a user's loss function and the kind of targets it takes, instead of
        the registered `config.loss`.
    """
    if loss_fn is None:
        loss = losses.spec(config.loss)
    else:
        kind = loss_kind or ("values" if info.task == REGRESSION else "labels")
        try:
            losses.check_loss(loss_fn, kind, what=f"--loss={config.loss}")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        loss = losses.LossSpec(loss_fn, kind)
    values = {}
    for keyword, source in loss.hyperparameters.items():
        name, convert = source if isinstance(source, tuple) else (source, None)
        value = getattr(config, name)
        values[keyword] = convert(value) if convert else value
    return tasks.make(
        config.loss,
        loss,
        info,
        hyperparameters=values,
        label_smoothing=config.label_smoothing,
        class_weights=class_weights,
        balanced=config.class_weights != "none" or config.balance != "none",
    )


def build(
    config: Config,
    plan: Plan,
    splits,
    spec: ProgramSpec,
    *,
    model=None,
    loss_fn=None,
    loss_kind: str | None = None,
    trained=None,
) -> Run:
    """Builds the model, task and loaders of loaded `splits`; raises ConfigError before training.

    Args:
      config: the resolved configuration.
      plan: the parallel plan (device and process counts).
      splits: `load_splits(config)`.
      spec: the program's registry entry (its task, training batches, own nets).
      model: a user's flax module to train instead of `config.arch`.
      loss_fn, loss_kind: a user's loss and the kind of targets it takes (`losses.KINDS`),
        instead of `config.loss`.
      trained: `Run.trained`, restoring another trained run.
    """
    info = splits.info
    notes = [_data_note(config, splits)]
    arch = model_setup.spec_of(config, model, spec)
    image_size = model_setup.image_size(config, info, arch)

    devices, processes = plan.num_devices, plan.num_processes
    eval_batch = _check_batches(config, devices, processes, len(splits.train))

    train_source, class_weights = _training_rows(config, info, splits.train, notes)
    if spec.task is not None:
        task = spec.task(config, info, class_weights, plan.axis_name)
    else:
        task = loss_task(config, info, class_weights, loss_fn=loss_fn, loss_kind=loss_kind)
    train_batch, class_batches = config.batch_size, None
    if spec.train_batches is not None:
        divisor = math.lcm(devices, processes)
        class_batches, note = spec.train_batches(config, info, train_source, divisor)
        train_batch = class_batches.rows
        notes.append(note)

    norm = _norm(config, splits)
    if model is None and spec.zoo:
        model = model_setup.make_model(config, arch, task.num_outputs, plan.axis_name)
    step_config, input_shape = model_setup.step_config(config, info, arch, model, image_size)
    warning = model_setup.augment_warning(config.augment, input_shape)
    if warning:
        notes.append(f"warning: {warning}")

    def loader(source, batch_size, shuffle, class_batches=None):
        return _loader(config, plan, source, batch_size, shuffle, class_batches)

    train_loader = loader(train_source, train_batch, not config.overfit_batches, class_batches)
    notes.append(
        f"{len(train_loader)} steps per epoch at global batch {train_batch} "
        f"on {devices} device(s) in {processes} process(es), parallel={plan.mode}"
    )
    if config.mode == "train":  # evaluation reads a trained run: its training values are history
        updates = len(train_loader) / config.grad_accum_steps if spec.zoo else None
        notes.extend(recipes.notes(config, updates, table=not info.is_image, zoo=spec.zoo))
    return Run(
        splits=splits,
        task=task,
        model=model,
        step_config=step_config,
        norm=norm,
        input_shape=input_shape,
        train_loader=train_loader,
        val_loader=loader(splits.val, eval_batch, False),
        test_loader=loader(splits.test, eval_batch, False),
        notes=tuple(notes),
        trained=trained,
        takes_vectors=not arch.needs_image,
    )
