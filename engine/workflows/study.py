"""Hyperparameter search with optuna: a search space, one normal run per trial, the report.

The study lives in a database shared by every process working on it: by default
`STUDY_DIR/study.db` (SQLite), or a server's (`--storage`, `study_storage.py`), with heartbeats,
so a killed search resumes: a trial whose process died is failed once its heartbeat is stale
and retried with the same parameters in the same `trial-N` workdir, which then resumes from its
checkpoint. The trials' workdirs and the report go to the study folder, local or remote
(`engine.paths`). `search.py` is the command line.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings

import optuna

from engine import paths
from engine.config import CONFIG_FILE, Config, ConfigError, declared, load_json, recipes
from engine.runtime import report
from engine.runtime.callbacks import Callback, monitored
from engine.workflows.fit import fit
from engine.workflows.setup import prepare
from engine.workflows.study_storage import claim_once, open_storage, process_name

# The heartbeat and retry of dead workers' trials are "experimental" in optuna 5; they are
# what lets a killed search resume, so their warnings would only be noise to users.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

BEST_CONFIG, STUDY_NAME = "best_config.json", "search"
SAMPLERS = ("random", "tpe", "grid")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
# Settings a trial may not vary: where it runs and what it does.
FIXED = ("mode", "workdir", "cv_folds", "fold", "cv_refit", "find_lr", "monitor", "plugins")
_ITEM = re.compile(r"^\s*(\w+)\s*=\s*(\w+)\s*\((.*)\)\s*$")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched setting: `name=kind(args)`."""

    name: str
    kind: str
    args: tuple

    def suggest(self, trial: optuna.Trial):
        """The trial's value of this setting."""
        if self.kind == "loguniform":
            return trial.suggest_float(self.name, *self.args, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.name, *self.args)
        if self.kind == "int":
            return trial.suggest_int(self.name, *self.args)
        return trial.suggest_categorical(self.name, list(self.args))


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_space(text: str) -> list[Param]:
    """`'lr=loguniform(1e-4,1e-1); arch=choice(mlp,lenet)'` -> params, checked against Config.

    Raises:
      ConfigError: one line naming the bad item.
    """
    fields = {d.name: d.default for d in declared(Config)}
    params = []
    for item in filter(str.strip, text.split(";")):
        match = _ITEM.match(item)
        if not match:
            raise ConfigError(f"--space item {item.strip()!r} must look like name=kind(a,b)")
        name, kind, raw = match.groups()
        if name not in fields or name in FIXED or isinstance(fields[name], tuple | bool):
            raise ConfigError(f"--space: {name!r} is not a setting a trial can vary")
        if kind not in DISTRIBUTIONS:
            raise ConfigError(f"--space: {name}={kind}(...) must be one of {DISTRIBUTIONS}")
        args = tuple(_value(a.strip()) for a in raw.split(",") if a.strip())
        numeric = all(isinstance(a, int | float) for a in args)
        if kind != "choice" and not (len(args) == 2 and numeric and args[0] < args[1]):
            raise ConfigError(f"--space: {name}={kind}(low,high) needs two numbers, low < high")
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"--space: {name}=loguniform needs low > 0")
        if kind == "choice" and not args:
            raise ConfigError(f"--space: {name}=choice(...) needs at least one value")
        default = fields[name]
        if kind == "choice":
            args = tuple(float(a) if isinstance(default, float) else a for a in args)
        if isinstance(default, str) != any(isinstance(a, str) for a in args):
            raise ConfigError(f"--space: {name} takes {type(default).__name__} values")
        params.append(Param(name, kind, args))
    if not params:
        raise ConfigError("--space is empty; e.g. --space='lr=loguniform(1e-4,1e-1)'")
    return params


def make_sampler(name: str, params: list[Param], seed: int | None):
    """The optuna RandomSampler (default), TPESampler, or GridSampler (choice() params only)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "grid":
        if any(p.kind != "choice" for p in params):
            raise ConfigError("--sampler=grid needs every --space item to be choice(...)")
        return optuna.samplers.GridSampler({p.name: list(p.args) for p in params}, seed=seed)
    raise ConfigError(f"--sampler={name!r} is not valid; choose one of: {', '.join(SAMPLERS)}")


def open_study(storage, *, maximize: bool, sampler, prune: bool) -> optuna.Study:
    """Creates or loads the study in `storage` (`study_storage.open_storage`; every process)."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5) if prune else None
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        load_if_exists=True,
        direction="maximize" if maximize else "minimize",
        sampler=sampler,
        pruner=pruner or optuna.pruners.NopPruner(),
    )


class Pruning(Callback):
    """Reports the monitored value to the trial each epoch; stops the run when optuna prunes."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor, self.fit, self.pruned = trial, monitor, None, False

    def on_epoch_end(self, epoch, record, state):
        value = monitored(record, self.monitor)
        self.trial.report(value if math.isfinite(value) else -math.inf, epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.fit.stop(f"trial {self.trial.number} pruned at epoch {epoch} (median rule)")


def trial_dir(study_dir: str, trial: optuna.Trial) -> str:
    """`trial-N`; a retried trial (its process died) reuses the first one's dir to resume."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    first = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return paths.join(study_dir, f"trial-{trial.number if first is None else first}")


def objective_value(results: dict, metric: str) -> float:
    """The validation value a trial is judged by: its best epoch's, or the CV mean."""
    if "mean" in results:  # cross-validation
        return float(results["mean"][metric])
    return float(results["best_val"][metric])


def trial_table(study: optuna.Study) -> list[str]:
    """Finished trials sorted by objective (best first), one line each."""
    done = [t for t in study.trials if t.value is not None]
    done.sort(key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")
    lines = [f"{'trial':>5}  {'state':<8}  {'objective':>9}  params"]
    for t in done:
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
        )
        lines.append(f"{t.number:>5}  {t.state.name:<8}  {t.value:>9.4f}  {shown}")
    return lines


def plot_params(study: optuna.Study, params: list[Param], study_dir: str) -> list[str]:
    """One PNG per searched parameter: the objective of each completed trial against it."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    drawn = []
    for p in params:
        pairs = sorted(
            ((t.params[p.name], t.value) for t in done if p.name in t.params),
            key=lambda x: str(x[0]) if p.kind == "choice" else x[0],
        )
        if not pairs:
            continue
        path = paths.join(study_dir, f"objective_vs_{p.name}.png")
        xs = [str(x) if p.kind == "choice" else x for x, _ in pairs]
        report.plot_xy(
            path,
            xs,
            [v for _, v in pairs],
            xlabel=p.name,
            ylabel="objective",
            logx=p.kind == "loguniform",
        )
        drawn.append(path)
    return drawn


def best_config(trained: Config, base: Config) -> dict:
    """The best trial's settings as it trained, for a reusable `--config` file.

    Its resolved settings without a workdir, testing and printing as `base` does.
    """
    values = {k: v for k, v in trained.to_dict().items() if k not in ("workdir", "mode")}
    values.update(final_test=base.final_test, progress=base.progress)
    return values


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
RUNNING = optuna.trial.TrialState.RUNNING
WAIT_S = 2  # how often a process with nothing to start looks at the study again


def work_on(study: optuna.Study, objective, trials: int, say) -> None:
    """Runs trials one at a time until the study has `trials` finished and none running.

    Before each trial it counts the trials running in any process, so that processes sharing
    the study stop at `trials` (optuna's MaxTrialsCallback counts finished trials only: each
    process would start one more while another's last trial runs). A process with nothing left
    to start waits for the running ones instead of leaving: a trial whose process died is
    failed once its heartbeat is stale and retried (`fail_stale_trials`), and a waiting process
    runs the retry; the last to see the study complete writes the report.
    """
    waiting = False
    while True:
        optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        finished, running = sum(s in FINISHED for s in states), states.count(RUNNING)
        sampler = study.sampler
        exhausted = isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)
        if (finished >= trials or exhausted) and not running:
            return
        if finished + running >= trials or exhausted:
            if not waiting:
                say(f"waiting for {running} trial(s) running in other processes")
            waiting = True
            time.sleep(WAIT_S)
            continue
        waiting = False
        study.optimize(objective, n_trials=1, catch=(ConfigError,))


def run_search(
    base: Config,
    params: list[Param],
    *,
    study_dir: str,
    trials: int,
    sampler: str = "random",
    seed: int | None = None,
    prune: bool = False,
    storage: str = "",
    say=print,
) -> dict:
    """Works on the study until it has `trials` finished trials, then reports it.

    Each trial is `engine.fit` of `base` with the sampled settings in
    `study_dir/trial-N`, judged by its best validation value of the monitored metric (or the
    CV mean with `cv_folds`), never by the test split: trials do not test. At the end the
    best trial's checkpoint is tested once. `storage` is the study's database URL (empty:
    SQLite in `study_dir`).

    Returns:
      `{"best_trial", "best_value", "best_params", "finished", "monitor"}`, and from the one
      process that writes the report `"test"` and the files (also in `study_dir/search.json`;
      the best settings in `best_config.json`); from the others `"reported_by"`.
    """
    if prune and base.cv_folds:
        raise ConfigError("--prune reports epochs of one run; it does not combine with --cv_folds")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    database = open_storage(study_dir, storage)
    setup = prepare(dataclasses.replace(base, workdir=paths.join(study_dir, "check")))
    monitor, metric = setup.monitor, setup.monitor.partition("_")[2]
    study = open_study(
        database,
        maximize=setup.higher_is_better,
        sampler=make_sampler(sampler, params, seed),
        prune=prune,
    )

    def objective(trial: optuna.Trial) -> float:
        values = {p.name: p.suggest(trial) for p in params}
        workdir = trial_dir(study_dir, trial)
        config = recipes.for_trial(
            base, **values, workdir=workdir, final_test=False, progress=False
        )
        say(f"trial {trial.number} in {workdir}: {values}")
        pruning = [Pruning(trial, monitor)] if prune else []
        results = fit(config, callbacks=pruning)
        if pruning and pruning[0].pruned:
            raise optuna.TrialPruned()
        if "stopped_at" in results or "stopped_at_fold" in results:
            raise ConfigError(f"trial {trial.number} was paused (--stop_after_epoch); rerun")
        trial.set_user_attr("workdir", workdir)
        return objective_value(results, metric)

    try:
        work_on(study, objective, trials, say)
        report_at = {"study_dir": study_dir, "monitor": monitor, "trials": trials, "say": say}
        return report_once(study, database, base, params, **report_at)
    finally:
        database.engine.dispose()  # its connections: a server counts them against a limit


def report_once(study, database, base: Config, params, *, study_dir, monitor, trials, say) -> dict:
    """The trial table, and the report from the one process that claims it in `database`."""
    say(*trial_table(study), sep="\n")
    summary = {
        "best_trial": study.best_trial.number,
        "best_value": study.best_value,
        "best_params": study.best_params,
        "monitor": monitor,
        "finished": len(study.get_trials(deepcopy=False, states=FINISHED)),
    }
    # Every process working on the study gets here once it is complete; the report (the files
    # and the best trial's one test) is written by the first to claim it in the database, so
    # exactly once per study and total of trials, however many processes or machines share it.
    # The claim is made by a process that saw no trial running, so the report covers them all.
    writer = claim_once(database, STUDY_NAME, f"report_for_{trials}_trials", process_name())
    if writer is not None:
        say(f"the report ({BEST_CONFIG}, search.json) was written by {writer}")
        return {**summary, "reported_by": writer}
    return report_study(study, base, params, study_dir, summary, say)


def report_study(study, base: Config, params: list[Param], study_dir: str, summary: dict, say):
    """Writes the best config and plots, tests the best trial once, writes `search.json`."""
    best = study.best_trial
    workdir = best.user_attrs["workdir"]
    trained = Config.from_dict(load_json(paths.join(workdir, CONFIG_FILE)))
    report.write_json(study_dir, BEST_CONFIG, best_config(trained, base))
    plots = plot_params(study, params, study_dir)
    say(f"best: trial {best.number}, {summary['monitor']} {best.value:.4f}; testing it once:")
    if trained.cv_folds:
        tested = fit(dataclasses.replace(trained, cv_refit=True, final_test=True))
        test = tested["refit"]["test"]
    else:
        test = fit(dataclasses.replace(trained, mode="eval"))["test"]
    summary = {
        **summary,
        "test": test,
        "best_config": paths.join(study_dir, BEST_CONFIG),
        "plots": plots,
        "reported_by": process_name(),
    }
    report.write_json(study_dir, "search.json", summary)
    say(f"report written by {summary['reported_by']}; best configuration: "
        f"{summary['best_config']} (python run.py --config=...)")  # fmt: skip
    return summary
