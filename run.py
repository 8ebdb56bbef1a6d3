"""Command line of the engine. `python run.py --help` lists the flags (and docs/flags.md).

The flags are the settings of `engine.config` (each declared once, with its help, choices and
checks); this file parses them and calls a workflow.

Examples:
  python run.py                                   # MLP on the embedded digits dataset
  python run.py --arch=resnet --loss=huber        # ResNet-18 trained with a Huber loss
  python run.py --dataset=diabetes --arch=mlp --loss=huber
  python run.py --mode=eval --workdir=runs/digits-mlp-cross_entropy
  python run.py --mode=predict --workdir=runs/digits-mlp-cross_entropy --inputs=npy:x.npy
  python run.py --mode=export --workdir=runs/digits-mlp-cross_entropy --output=served/
  python run.py --config=runs/digits-mlp-cross_entropy/config.json --epochs=50
"""

from __future__ import annotations

import sys

from engine.runtime import host_memory

if __name__ == "__main__":  # before JAX loads: glibc reads the setting at process start
    host_memory.restart()

from absl import flags, logging

from engine.config import ConfigError
from engine.config import cli as settings_cli
from engine.runtime.callbacks.guards import Diverged
from engine.workflows import diagnose, export, predict, setup
from engine.workflows.fit import fit

settings_cli.define()
FLAGS = flags.FLAGS


def main(argv) -> int:
    """Parses flags, validates, and hands over to engine.fit (or predict, export, doctor)."""
    if len(argv) > 1:
        print(
            f"error: unexpected arguments {argv[1:]}; flags look like --name=value", file=sys.stderr
        )
        return 2
    # orbax and tfds log every step of every save at INFO through absl; users need warnings only.
    logging.set_verbosity(logging.WARNING)
    try:
        config = settings_cli.config_from_flags()
        if config.mode == "doctor":
            workdirs = [w for w in config.resolved_workdir().split(",") if w]
            print("\n".join(diagnose.post_hoc(workdirs)))
        elif config.mode == "predict":
            predict.write_predictions(config)
        elif config.mode == "export":
            export.write_export(config)
        else:
            return fit(config).get("exit_code", 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not the flags: a full disk, a broken mount
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def _help_requested(argv) -> bool:
    return any(a in ("-h", "--help", "--helpshort", "--helpfull", "-help", "-?") for a in argv[1:])


def parse(argv, doc: str) -> list[str] | int:
    """Parses a command line of the settings' flags (and the main module's own, search.py's).

    `--plugins` are imported first (they may register settings, which become flags). Flags are
    parsed here rather than by `absl.app.run`, whose parsing errors exit 1 with a usage dump
    and whose `--helpfull` exits 1: here a parsing error is one line and exit 2, like every
    other usage error, and asking for help exits 0.

    Returns:
      The arguments left after the flags, or an exit status when nothing is left to run
      (0 after printing the help, 2 for a usage error).
    """
    FLAGS.unparse_flags()  # called again in one process (tests): start from the defaults
    try:
        setup.import_plugins(settings_cli.plugins_in(argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings_cli.define()
    if "--helpmd" in argv[1:]:  # docs/flags.md
        print(settings_cli.markdown())
        return 0
    if _help_requested(argv):
        FLAGS(argv[:1])
        print(doc)
        if "--helpfull" in argv:
            print(FLAGS.get_help())
        else:
            own = FLAGS.main_module_help()  # search.py's flags; run.py defines none of its own
            print("\n\n".join(h for h in (own, FLAGS.module_help(settings_cli.__name__)) if h))
        return 0
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}; see --help", file=sys.stderr)
        return 2


def cli(argv) -> int:
    """The whole command line, `argv` as in `sys.argv`: help, flag parsing, the run.

    Returns:
      The exit status: 0, 2 for a usage error, or what the run asked for (3: non-finite
      values, 143/130: stopped by SIGTERM/SIGINT).
    """
    rest = parse(argv, __doc__)
    return rest if isinstance(rest, int) else main(rest)


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
