r"""Hyperparameter search with optuna over run.py's settings; `python search.py --help`.

Example (the seeds' random search, here 30 trials; run the same command in several processes
or on several machines sharing the study dir to work on one study together):
  python search.py --study_dir=runs/search --trials=30 --epochs=20 \
      --space='lr=loguniform(1e-4,1e-1); weight_decay=loguniform(1e-6,1e-2); \
      dropout=uniform(0,0.5); batch_size=choice(32,64,128); arch=choice(mlp,lenet)'
Every other flag is a run.py flag: the settings every trial shares.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

import run
from engine import config as config_lib
from engine import paths, validation

flags.DEFINE_string("study_dir", "", "the study's directory: study.db, trial-N, the report")
flags.DEFINE_integer(
    "trials", 100, "the study's total: every process stops once this many trials have finished"
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
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not FLAGS.study_dir:
            raise config_lib.ConfigError("--study_dir=DIR is required (the study lives there)")
        if paths.is_remote(FLAGS.study_dir):  # optuna's SQLite storage is a local file
            raise config_lib.ConfigError(
                f"--study_dir={FLAGS.study_dir} is remote; the study's SQLite file needs a local "
                "or shared (NFS) folder"
            )
        base = validation.validate(run._config_from_flags())
        from engine import study

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
        )
    except (config_lib.ConfigError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    if run._help_requested(sys.argv):
        FLAGS(sys.argv[:1])
        print(__doc__)
        print(FLAGS.main_module_help())
        sys.exit(0)
    app.run(lambda argv: sys.exit(main(argv)))
