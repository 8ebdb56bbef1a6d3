"""The training doctor: names what went wrong in a run, with the seeds' causes and remedies.

During training, the `Doctor` callback diagnoses the epoch records after every epoch (printing
each new finding once) and at the end (writing `doctor.json`); `python run.py --mode=doctor
--workdir=W[,W2,...]` diagnoses finished workdirs from their files, and compares several
(degradation: a deeper net of the same family doing worse). Rules live in `rules.py` and
`curves.py` (a program may bring rules of its own for its numbers: `ProgramSpec.doctor_rules`);
the measurements they need beside the loop in `probe.py`. How a run is wired to the doctor is
`engine.workflows.diagnose`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from engine.doctor import curves, rules
from engine.doctor.compare import degradation
from engine.doctor.rules import Finding
from engine.runtime import report
from engine.runtime.callbacks import Callback

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


def diagnose(
    records: Sequence[dict], context: dict, rules_: Sequence[Callable] = RULES
) -> list[Finding]:
    """Every rule's finding on a run's epoch records (`metrics.jsonl`) and context.

    Args:
      records: the epoch records.
      context: the plain values the rules read.
      rules_: the rules (a program's own, or the doctor's `RULES`).
    """
    records = [r for r in records if "epoch" in r]
    found = [rule(records, context) for rule in rules_]
    found = [f for f in found if f is not None]
    rules_found = {f.rule for f in found}
    if "non_finite" in rules_found:
        # After a non-finite step every later number is garbage; only the inputs still speak.
        found = [f for f in found if f.rule in ("non_finite", "preprocessing")]
    elif rules_found & {"vanishing_gradients", "dead_relus"}:
        # A loss that does not move because no gradient arrives is not the learning rate's.
        found = [f for f in found if f.rule != "lr_too_low"]
    return found


def write(workdir: str, ctx: dict, findings: Sequence[Finding]) -> None:
    """Writes `doctor.json`: the context and every finding (strict JSON)."""
    payload = {"context": ctx, "findings": [f.to_dict() for f in findings]}
    report.write_json(workdir, DOCTOR_FILE, payload)


class Doctor(Callback):
    """Diagnoses after every epoch (new findings printed once) and at the end (`doctor.json`).

    Args:
      workdir: where `metrics.jsonl` (for a resumed run's earlier epochs) and `doctor.json` are.
      context: the rules' plain values.
      is_main: whether this process writes files.
      rules_: the rules to apply (`diagnose`'s).
    """

    def __init__(self, workdir: str, context: dict, is_main: bool, rules_=RULES):
        self.workdir, self.context, self.is_main, self.rules = workdir, context, is_main, rules_
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
        self.findings = diagnose(self.records, self.context, self.rules)
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


__all__ = ["DOCTOR_FILE", "RULES", "Doctor", "Finding", "degradation", "diagnose", "write"]
