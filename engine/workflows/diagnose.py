"""The doctor wired into a run (its probe and callback), and `--mode=doctor` on finished workdirs.

The doctor's rules read plain values (`context`) and the epoch records; a program brings rules
of its own for its numbers (`ProgramSpec.doctor_rules`). A program that trains one zoo model
also gets the probe: its training split measured in evaluation mode each epoch, and, for a
classifier of the built-in programs, the dead units and the share of the top class.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from engine import data, doctor, paths, programs
from engine.config import CONFIG_FILE, ConfigError, load_json
from engine.doctor import probe
from engine.programs import optim
from engine.runtime import report
from engine.runtime.callbacks import Callback
from engine.workflows.setup import Setup


def context(setup: Setup, layers: Sequence[str] = (), stats: dict | None = None) -> dict:
    """The plain values the rules read, from a prepared run."""
    config, info = setup.config, setup.run.splits.info
    ctx = {
        "program": config.program,
        "task": info.task,
        "dataset": config.dataset,
        "arch": config.arch,
        "depth": config.depth,
        "hidden_sizes": list(config.hidden_sizes),
        "activation": config.activation,
        "init": config.init,
        "normalize": config.normalize,
        "loss": config.loss,
        "optimizer": config.optimizer,
        "lr": optim.effective_lr(optim.settings(config)),
        "epochs": config.epochs,
        "layers": list(layers),
        "input_stats": stats or {},
    }
    if info.num_classes:
        counts = np.asarray(data.class_counts(setup.run.splits.val, info.num_classes))
        ctx.update(
            num_classes=info.num_classes,
            class_names=list(info.class_names or [str(i) for i in range(info.num_classes)]),
            majority_share=float(counts.max() / max(counts.sum(), 1)),
        )
    return ctx


def rules_of(program: str) -> Sequence:
    """The doctor's rules for a run of `program` (its own, or the doctor's)."""
    spec = programs.get(program) if program in programs.names() else None
    return (spec.doctor_rules if spec else None) or doctor.RULES


def _probe(setup: Setup, eval_zeros, model=None) -> probe.Probe:
    """The `Probe` of a prepared run; with `model`, the activation probe of its dead units."""
    run, config, plan = setup.run, setup.config, setup.plan
    subset = probe.train_subset(run.splits.train, len(run.splits.val), config.seed)
    loader = data.make_loader(
        subset,
        batch_size=config.eval_batch_size or config.batch_size,
        shuffle=False,
        seed=config.seed,
        num_processes=plan.num_processes,
        process_index=plan.process_index,
    )
    if model is None or plan.num_processes > 1:  # one host's batch is not the global one
        return probe.Probe(loader, eval_zeros)
    val_batch = next(iter(run.val_loader.epoch(0)))
    activations = probe.make_activation_probe(model, run.step_config, run.task.num_outputs)
    return probe.Probe(loader, eval_zeros, val_batch, activations)


def callbacks(setup: Setup, abstract) -> tuple[list[Callback], list[Callback]]:
    """The doctor's callbacks for this run (none with `--doctor=off`).

    Args:
      setup: the prepared run.
      abstract: the state's shapes (for the evaluation totals' zeros).

    Returns:
      `(measures, diagnoses)`: the probe, which adds to each epoch's record (so it runs before
      every callback that reads the record), and the doctor, which reads it.
    """
    config, run, plan = setup.config, setup.run, setup.plan
    if not config.doctor:
        return [], []
    rules = rules_of(config.program)
    if not setup.spec.zoo:  # a program of its own nets: its rules on the logged numbers only
        return [], [doctor.Doctor(setup.workdir, context(setup), plan.is_main, rules)]
    # Dead units and the share of the top class describe a classifier's head, not an
    # embedding's, nor a user program's own model.
    classifier = not setup.custom_program and "accuracy" in setup.program.higher_is_better
    model = run.model if classifier else None
    # Shapes traced when the probe first evaluates (the loop traces the same at its first
    # evaluation; the supervised program keeps the answer), not before the first step.
    zeros = functools.cache(lambda: setup.program.eval_zeros(abstract, run.sample_batch()))
    the_probe = _probe(setup, zeros, model)
    layers = probe.layer_order(model, run.input_shape) if model else ()
    stats = {
        "train": probe.input_stats(the_probe.loader.source, run.norm),
        "val": probe.input_stats(run.splits.val, run.norm),
    }
    ctx = context(setup, layers, stats)
    return [the_probe], [doctor.Doctor(setup.workdir, ctx, plan.is_main, rules)]


def read_workdir(workdir: str) -> tuple[dict, list[dict], dict]:
    """A finished workdir's config, epoch records and doctor context (from its files).

    Raises:
      ConfigError: the workdir has no `config.json` or no `metrics.jsonl`.
    """
    if not paths.exists(paths.join(workdir, CONFIG_FILE)):
        raise ConfigError(f"--mode=doctor needs a trained workdir; {workdir} has no {CONFIG_FILE}")
    records = report.read_metrics(workdir)
    if not records:
        raise ConfigError(f"--mode=doctor: {workdir} has no {report.METRICS_FILE}; train first")
    config = load_json(paths.join(workdir, CONFIG_FILE))
    ctx = {}
    path = paths.join(workdir, doctor.DOCTOR_FILE)
    if paths.exists(path):
        ctx = load_json(path).get("context", {})
    if not ctx:  # a run trained before the doctor: what the config alone says
        keys = ("dataset", "arch", "depth", "hidden_sizes", "activation", "loss", "lr", "epochs")
        keys += ("program",)
        ctx = {k: config.get(k) for k in keys}
    return config, records, ctx


def post_hoc(workdirs: Sequence[str]) -> list[str]:
    """`--mode=doctor`: diagnoses each workdir from its files, then compares them.

    Each workdir's `doctor.json` is rewritten with its findings (degradation findings go to
    the deeper run's). Returns the lines to print.
    """
    runs = {w: read_workdir(w) for w in workdirs}
    found = {
        w: doctor.diagnose(records, ctx, rules_of(str(ctx.get("program"))))
        for w, (_, records, ctx) in runs.items()
    }
    pairs = {w: (ctx, records) for w, (_, records, ctx) in runs.items()}
    for w, finding in doctor.degradation(pairs):
        found[w].append(finding)
    lines = []
    for w, findings in found.items():
        doctor.write(w, runs[w][2], findings)
        lines.append(f"{w}: {len(findings) or 'no'} finding(s)")
        lines.extend(f.line() for f in findings)
    return lines
