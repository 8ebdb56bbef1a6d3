r"""Hyperparameter search with optuna over run.py's settings; `python search.py --help`.

Example (the seeds' random search, here 30 trials; run the same command in several processes
or on several machines sharing the study dir to work on one study together):
  python search.py --study_dir=runs/search --trials=30 --epochs=20 \
      --space='lr=loguniform(1e-4,1e-1); weight_decay=loguniform(1e-6,1e-2); \
      dropout=uniform(0,0.5); batch_size=choice(32,64,128); arch=choice(mlp,lenet)'
Every other flag is a run.py flag: the settings every trial shares. On several machines: the
same command on each, with --storage=postgresql+psycopg://USER@HOST:5432/DB (a database server)
and a --study_dir every machine reaches (e.g. gs://bucket/search); docs/model-selection.md.
"""

from __future__ import annotations

import sys

import optuna
from absl import flags, logging

import run
from engine.config import ConfigError
from engine.config import cli as settings_cli
from engine.workflows import setup, study

flags.DEFINE_string(
    "study_dir", "", "the study's directory: trial-N, the report (and study.db, by default)"
)
# Checked where the storage opens (study_storage.open_storage): a bad URL, a missing driver or
# an unreachable server is one line there.
flags.DEFINE_string(
    "storage",
    "",
    "the study's database, a SQLAlchemy URL for machines to share, e.g. "
    "postgresql+psycopg://USER@HOST:5432/DB (pip install -e '.[postgres]'); "
    "empty: SQLite in --study_dir, which must then be local",
)
flags.DEFINE_integer(
    "trials",
    100,
    "the study's total: processes start trials until this many are finished or running, "
    "then wait for the running ones",
)
flags.DEFINE_string(
    "space",
    "lr=loguniform(1e-4,1e-1); weight_decay=loguniform(1e-6,1e-2); dropout=uniform(0,0.5); "
    "batch_size=choice(32,64,128)",
    "what to search: name=loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,...); "
    "separated by ';'",
)
flags.DEFINE_enum("sampler", "random", ["random", "tpe", "grid"], "how trials are chosen")
flags.DEFINE_integer(
    "sampler_seed", -1, "seed of the sampler (-1: fresh; give each process its own)"
)
flags.DEFINE_bool("prune", False, "stop hopeless trials early (optuna's median pruner)")
FLAGS = flags.FLAGS


def main(argv) -> int:
    """Builds the trials' shared config from run.py's flags and works on the study."""
    if len(argv) > 1:
        print(
            f"error: unexpected arguments {argv[1:]}; flags look like --name=value", file=sys.stderr
        )
        return 2
    logging.set_verbosity(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not FLAGS.study_dir:
            raise ConfigError("--study_dir=DIR is required (the study lives there)")
        # The trials' shared settings, checked once here; each trial resolves its own run.
        _, base = setup.configure(settings_cli.config_from_flags())
        params = study.parse_space(FLAGS.space)
        seed = None if FLAGS.sampler_seed < 0 else FLAGS.sampler_seed
        study.run_search(
            base,
            params,
            study_dir=FLAGS.study_dir,
            trials=FLAGS.trials,
            sampler=FLAGS.sampler,
            seed=seed,
            prune=FLAGS.prune,
            storage=FLAGS.storage,
        )
    except (ConfigError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cli(argv) -> int:
    """The whole command line (as `run.cli`: `--plugins` first, one-line usage errors)."""
    rest = run.parse(argv, __doc__)
    return rest if isinstance(rest, int) else main(rest)


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
