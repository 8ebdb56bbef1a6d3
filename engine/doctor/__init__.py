"""The training doctor: names what went wrong in a run, with the seeds' causes and remedies.

During training, the `Doctor` callback diagnoses the epoch records after every epoch (printing
each new finding once) and at the end (writing `doctor.json`); `python run.py --mode=doctor
--workdir=W[,W2,...]` diagnoses finished workdirs from their files, and compares several
(degradation: a deeper net of the same family doing worse). Rules live in `rules.py` and
`curves.py`; the measurements they need beside the loop in `probe.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from engine import paths, report
from engine.callbacks import Callback
from engine.doctor import curves, gan, rules
from engine.doctor.compare import degradation
from engine.doctor.rules import Finding

DOCTOR_FILE = "doctor.json"

# In the order findings are reported (a non-finite run explains everything after it).
RULES = (
    rules.non_finite,
    curves.preprocessing,
    rules.initialisation,
    rules.chance,
    rules.gradients,
    rules.dead_relus,
    curves.lr_too_high,
    curves.lr_too_low,
    curves.overfitting,
    curves.underfitting,
    curves.loss_up_accuracy_up,
)


def diagnose(records: Sequence[dict], context: dict) -> list[Finding]:
    """Every rule's finding on a run's epoch records (`metrics.jsonl`) and context.

    A GAN run (context `program` "gan") has rules of its own (`engine.doctor.gan`).
    """
    records = [r for r in records if "epoch" in r]
    if context.get("program") == "gan":
        return [f for f in (rule(records, context) for rule in gan.RULES) if f is not None]
    found = [rule(records, context) for rule in RULES]
    found = [f for f in found if f is not None]
    rules_found = {f.rule for f in found}
    if "non_finite" in rules_found:
        # After a non-finite step every later number is garbage; only the inputs still speak.
        found = [f for f in found if f.rule in ("non_finite", "preprocessing")]
    elif rules_found & {"vanishing_gradients", "dead_relus"}:
        # A loss that does not move because no gradient arrives is not the learning rate's.
        found = [f for f in found if f.rule != "lr_too_low"]
    return found


def context(setup, layers: Sequence[str] = (), stats: dict | None = None) -> dict:
    """The plain values the rules read, from a prepared run (`engine.setup.Setup`)."""
    import numpy as np

    from engine import data, optim

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
        "lr": optim.effective_lr(config),
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


def write(workdir: str, ctx: dict, findings: Sequence[Finding]) -> None:
    """Writes `doctor.json`: the context and every finding (strict JSON)."""
    payload = {"context": ctx, "findings": [f.to_dict() for f in findings]}
    report.write_json(workdir, DOCTOR_FILE, payload)


class Doctor(Callback):
    """Diagnoses after every epoch (new findings printed once) and at the end (`doctor.json`).

    Args:
      workdir: where `metrics.jsonl` (for a resumed run's earlier epochs) and `doctor.json` are.
      context: the rules' plain values (`context(setup, ...)`).
      is_main: whether this process writes files.
    """

    def __init__(self, workdir: str, context: dict, is_main: bool):
        self.workdir, self.context, self.is_main = workdir, context, is_main
        self.records: list[dict] = []
        self.said: set[str] = set()
        self.findings: list[Finding] = []

    def on_fit_start(self, fit):
        if fit.start_epoch:
            saved = report.read_metrics(self.workdir)
            self.records = [r for r in saved if r.get("epoch", 0) <= fit.start_epoch]

    def on_epoch_end(self, epoch, record, state):
        self._diagnose(record)

    def _diagnose(self, record: dict) -> None:
        # The record is logged as strict JSON; diagnose what will be read back post hoc.
        self.records.append(json.loads(report.dumps(record)))
        self.findings = diagnose(self.records, self.context)
        new = [f for f in self.findings if f.rule not in self.said]
        self.said.update(f.rule for f in new)
        self.fit.say(*(f.line() for f in new))

    def on_fit_end(self, fit, state):
        if fit.failed and fit.partial is not None:
            # A run the NaN guard stopped inside an epoch: its steps so far hold the first
            # non-finite step, which no epoch record will (the epoch never ends).
            self._diagnose({**fit.partial, "val": {}})
        if self.is_main and self.records:
            write(self.workdir, self.context, self.findings)
        if self.findings:
            fit.say(f"doctor: {len(self.findings)} finding(s), in {DOCTOR_FILE}")
        else:
            fit.say("doctor: no findings")

    def state_dict(self):
        return {"said": sorted(self.said)}

    def load_state_dict(self, state):
        self.said = set(state.get("said", []))


def read_workdir(workdir: str) -> tuple[dict, list[dict], dict]:
    """A finished workdir's config, epoch records and doctor context (from its files).

    Raises:
      ConfigError: the workdir has no `config.json` or no `metrics.jsonl`.
    """
    from engine.config import ConfigError, load_json

    if not paths.exists(paths.join(workdir, "config.json")):
        raise ConfigError(f"--mode=doctor needs a trained workdir; {workdir} has no config.json")
    records = report.read_metrics(workdir)
    if not records:
        raise ConfigError(f"--mode=doctor: {workdir} has no {report.METRICS_FILE}; train first")
    config = load_json(paths.join(workdir, "config.json"))
    ctx = {}
    path = paths.join(workdir, DOCTOR_FILE)
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
    found = {w: diagnose(records, ctx) for w, (_, records, ctx) in runs.items()}
    for w, finding in degradation({w: (ctx, records) for w, (_, records, ctx) in runs.items()}):
        found[w].append(finding)
    lines = []
    for w, findings in found.items():
        write(w, runs[w][2], findings)
        lines.append(f"{w}: {len(findings) or 'no'} finding(s)")
        lines.extend(f.line() for f in findings)
    return lines


__all__ = ["DOCTOR_FILE", "RULES", "Doctor", "Finding", "context", "diagnose", "post_hoc"]
