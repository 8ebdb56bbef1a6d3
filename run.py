"""Command line of the engine: the only place flags are defined. `python run.py --help` lists them.

Examples:
  python run.py                                   # MLP on the embedded digits dataset
  python run.py --arch=resnet --loss=huber        # ResNet-18 trained with a Huber loss
  python run.py --dataset=diabetes --arch=mlp --loss=huber
  python run.py --mode=eval --workdir=runs/digits-mlp-cross_entropy
  python run.py --mode=predict --workdir=runs/digits-mlp-cross_entropy --inputs=npy:x.npy
  python run.py --config=runs/digits-mlp-cross_entropy/config.json --epochs=50
"""

from __future__ import annotations

import dataclasses
import os
import sys

from engine import host_memory

if __name__ == "__main__":  # before JAX loads: glibc reads the setting at process start
    host_memory.restart()

from absl import flags, logging

import architectures
import losses
from engine import config as config_lib
from engine import paths, validation

_C = config_lib.Config()

# Help texts; the defaults come from engine.config.Config, the choices from the registries.
_HELP = {
    "mode": f"what to do: {'|'.join(config_lib.MODES)} (eval tests the best checkpoint; eval "
    "and predict take the training settings from the workdir's config.json; doctor diagnoses "
    "trained workdirs from their files, --workdir=W1,W2 compares several)",
    "program": f"what is trained: {'|'.join(config_lib.PROGRAMS)} (gan: --arch=dcgan, a "
    "generator and a discriminator; flags left at their defaults take the DCGAN recipe: Adam "
    "2e-4, constant rate, images in [-1, 1], 200 epochs)",
    "latent_dim": "--program=gan: size of the generator's noise vector",
    "judge": "--program=gan: WORKDIR[:best|latest] of a classifier trained on the same dataset "
    "(e.g. --arch=lenet on digits) that rates the samples each epoch: class shares, confidence, "
    "an Inception-like score",
    "plugins": "comma-separated Python modules to import first (they may register "
    "architectures and losses: architectures.register, losses.register)",
    "monitor": "the metric that picks the best checkpoint, e.g. val_loss, val_accuracy, val_r2 "
    "(its direction is known); empty: val_accuracy (classification) or val_r2 (regression)",
    "inputs": "--mode=predict: what to predict, folder:PATH (images), csv:PATH (table rows) "
    "or npy:PATH (an array of raw inputs)",
    "output": "--mode=predict: the CSV to write (default WORKDIR/predictions.csv)",
    "workdir": "directory for config, checkpoints, metrics.jsonl and curves.png "
    "(default runs/<dataset>-<arch>-<loss>); rerunning resumes from it",
    "seed": "seed for splits, shuffling, initialisation and dropout",
    "dataset": "embedded: digits|breast_cancer|diabetes|iris|wine; or any TFDS name "
    "(cifar10, mnist:3.0.1); or folder:PATH; or csv:PATH with --target",
    "data_dir": "where datasets are prepared and read (default: $TFDS_DATA_DIR or "
    "~/tensorflow_datasets)",
    "target": "the column to predict for a csv: dataset",
    "classes": "classification: keep only these comma-separated labels, renumbered 0..k-1 in "
    "the order given (e.g. --classes=5,6,7,8,9); empty: all",
    "test_fraction": "fraction held out for testing when the dataset has no test split",
    "val_fraction": "fraction of the remaining rows held out for validation",
    "split": f"how to hold out rows: {'|'.join(config_lib.SPLITS)} (time: the last rows)",
    "normalize": f"input normalisation from training statistics: "
    f"{'|'.join(config_lib.NORMALIZATIONS)}",
    "balance": f"class balancing of the training split: {'|'.join(config_lib.BALANCE)}",
    "class_weights": f"loss weights per class: {'|'.join(config_lib.CLASS_WEIGHTS)}",
    "augment": "training-time augmentation on device: none|flip|crop|standard",
    "image_size": "resize images to this size (0: the architecture's minimum or the data's size)",
    "skip_bad_files": "skip unreadable images in folder: datasets (counted in a warning)",
    "streaming": f"input pipeline: {'|'.join(config_lib.STREAMING)} (stream: grain workers)",
    "num_workers": "grain worker processes for the streaming pipeline",
    "arch": f"architecture: {'|'.join(architectures.names())}",
    "depth": "depth for resnet (18/34/50/101/152) and vgg (11/13/16/19); 0: family default",
    "width": "channel width multiplier for convolutional nets",
    "hidden_sizes": "hidden layer sizes of the mlp",
    "activation": "activation: relu|leaky_relu|gelu|tanh|sigmoid",
    "leaky_slope": "negative slope of leaky_relu",
    "init": "kernel initialiser: lecun|he|xavier|normal",
    "batchnorm": f"BatchNorm: {'|'.join(config_lib.BATCHNORM)} (auto: the family's default)",
    "dropout": "dropout rate, for every architecture (-1: the family's default, "
    "e.g. 0.5 in AlexNet/VGG, 0 in the MLP)",
    "aux_heads": "GoogLeNet's auxiliary classifiers (training only)",
    "aux_weight": "weight of each auxiliary classifier's loss",
    "dtype": f"compute dtype: {'|'.join(config_lib.DTYPES)} (parameters stay float32)",
    "conv": "convolution lowering: auto (matmuls on CPU, XLA's convolution on GPU/TPU) or xla "
    "(XLA's everywhere); parameters and results are the same",
    "loss": f"loss: {'|'.join(losses.names())}",
    "label_smoothing": "label smoothing for cross_entropy and kl_divergence",
    "delta": "huber's delta and smooth_l1's beta",
    "focal_gamma": "focal loss gamma",
    "focal_alpha": "focal loss alpha (negative: none)",
    "optimizer": f"optimizer: {'|'.join(config_lib.OPTIMIZERS)}",
    "lr": "peak learning rate",
    "momentum": "momentum of --optimizer=momentum",
    "weight_decay": "weight decay (masked: not on biases or normalisation parameters)",
    "schedule": f"learning-rate schedule: {'|'.join(config_lib.SCHEDULES)} (plateau: "
    "constant --lr, reduced when val_loss stops improving)",
    "warmup_epochs": "warm-up length for warmup_cosine",
    "clip_grad_norm": "clip gradients to this global norm (0: off)",
    "lr_scaling": f"{'|'.join(config_lib.LR_SCALING)} (linear: lr x global_batch / 256)",
    "grad_accum_steps": "accumulate gradients over this many batches per update",
    "batch_size": "global batch size (split over all devices and processes)",
    "eval_batch_size": "batch size for validation and test (0: --batch_size)",
    "epochs": "number of epochs of the planned run (0: automatic, at least 30 epochs and "
    "--min_updates optimizer updates, at most 1000 epochs)",
    "min_updates": "--epochs=0: the fewest optimizer updates the run makes (small datasets "
    "train for more epochs)",
    "init_from": "WORKDIR[:best|latest]: start from that run's parameters and BatchNorm "
    "statistics (those whose path and shape match; the rest, e.g. a new head, start fresh)",
    "init_params": "regex of the parameter paths --init_from loads, e.g. '^(conv|dense0)' "
    "(empty: all that match by path and shape)",
    "teacher": "WORKDIR[:best|latest] of a trained run of the same dataset to distil from: "
    "the loss becomes alpha*T^2*KL(teacher/T || student/T) + (1-alpha)*--loss",
    "distill_temperature": "T, the temperature of both nets' softmax in distillation",
    "distill_alpha": "weight of the teacher's soft targets in distillation (1-alpha: --loss)",
    "embedding_dim": "--loss=triplet_margin: size of the L2-normalised embedding the head outputs",
    "mining": "--loss=triplet_margin: triplets from the batch: batch_hard (hardest positive and "
    "negative per anchor), semi_hard (FaceNet) or all",
    "margin": "--loss=triplet_margin: the margin of max(d(a,p) - d(a,n) + margin, 0)",
    "classes_per_batch": "--loss=triplet_margin: P classes per batch (0: as many as fill "
    "--batch_size)",
    "examples_per_class": "--loss=triplet_margin: K examples of each class per batch (0: 4)",
    "freeze": "regex of the parameter paths to keep fixed, e.g. '^conv' (optax set_to_zero)",
    "on_nan": "a non-finite loss, gradient or update: stop (keep the last good checkpoint, "
    "exit 3) or skip (optax.apply_if_finite drops the update; skipped steps are counted)",
    "plateau_factor": "--schedule=plateau: multiply the rate by this on each plateau",
    "plateau_patience": "--schedule=plateau: epochs without val_loss improvement before "
    "the rate is reduced",
    "plateau_cooldown": "--schedule=plateau: epochs after a reduction before counting again",
    "plateau_min_lr": "--schedule=plateau: the rate is never reduced below this",
    "select": "the epoch the test uses: best (on --monitor), last, or auto: last for a "
    "classifier whose validation split has fewer than 100 rows (too few to choose an epoch by "
    "accuracy), with no --monitor or --early_stopping given; else best",
    "early_stopping": "stop after this many epochs without improvement of --monitor (by more "
    "than --min_delta), keep the best checkpoint and test it; 0: off",
    "cv_folds": "K-fold cross-validation on the non-test rows (stratified; --split=time: "
    "expanding windows): one resumable run per fold in WORKDIR/fold-k, mean ± std, cv.json; "
    "0: off",
    "fold": "with --cv_folds: train only fold k (1..K), or -1: the refit on all non-test rows; "
    "0: every fold in turn",
    "cv_refit": "after cross-validation, train on all non-test rows for the folds' mean best "
    "epoch count (WORKDIR/refit) and test once",
    "find_lr": "learning-rate range test instead of training: the rate grows from 1e-7 to 10 "
    "over 300 steps (stopping when the loss explodes); writes lr_find.png and suggests --lr",
    "overfit_batches": "sanity check: train on the same N batches every epoch with dropout, "
    "weight decay and augmentation off, and report whether it overfits them (train accuracy "
    ">= 99%, or loss <= 0.01 for regression)",
    "min_delta": "the smallest change of --monitor that counts as an improvement "
    "(--early_stopping)",
    "parallel": f"device parallelism: {'|'.join(config_lib.PARALLEL_MODES)}",
    "coordinator_address": "HOST:PORT of process 0 for multi-process runs (Cloud TPU: automatic)",
    "num_processes": "number of processes in a multi-process run (0: automatic/one)",
    "process_id": "this process's index in a multi-process run (-1: automatic)",
    "max_to_keep": "how many latest checkpoints to keep",
    "checkpoint_every": "also checkpoint inside an epoch every N train steps (0: off); a "
    "resumed run continues the epoch at the next batch",
    "checkpoint_minutes": "also checkpoint inside an epoch every M minutes of training (0: "
    "off), so a kill loses at most that much work",
    "stop_after_epoch": "stop after this epoch (resumable by rerunning); 0: train to --epochs",
    "final_test": "test the best checkpoint on the test split at the end of training (off: "
    "validate only, e.g. for search trials; test later with --mode=eval)",
    "summary": "print the model summary and exit",
    "progress": "show a progress line for the whole run (with ETA)",
    "compile_cache": "JAX's persistent compilation cache, so a second start skips compiles: on "
    "(~/.cache/jaxtrain/xla, or under $XDG_CACHE_HOME), off, or a folder",
    "profile": "START:STOP: write a jax.profiler trace of those train steps to WORKDIR/profile "
    "(TensorBoard or Perfetto) and print where their time goes (compile, host, device)",
    "doctor": "diagnose the run after every epoch and at the end (doctor.json); costs one "
    "evaluation pass over a training subset per epoch",
}


def _define_flags() -> None:
    for field in dataclasses.fields(config_lib.Config):
        if field.name in config_lib.INTERNAL_FIELDS:
            continue
        default, helptext = getattr(_C, field.name), _HELP[field.name]
        if isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, helptext)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, helptext)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, helptext)
        elif isinstance(default, tuple):
            flags.DEFINE_list(field.name, [str(v) for v in default], helptext)
        else:
            flags.DEFINE_string(field.name, default, helptext)


_define_flags()
flags.DEFINE_string(
    "config", "", "a saved config.json to run from; flags given beside it override its values"
)
FLAGS = flags.FLAGS


def _explicit_values() -> dict:
    """The Config values of the flags given on the command line (typed as the fields)."""
    values = {}
    for field in dataclasses.fields(config_lib.Config):
        if field.name in config_lib.INTERNAL_FIELDS or not FLAGS[field.name].present:
            continue
        value = FLAGS[field.name].value
        if field.name in ("hidden_sizes", "classes"):
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise config_lib.ConfigError(
                    f"--{field.name} takes comma-separated integers, got {','.join(value)}"
                ) from None
        elif isinstance(getattr(_C, field.name), tuple):
            value = tuple(value)
        values[field.name] = value
    return values


def _config_from_flags() -> config_lib.Config:
    """The run's Config: defaults or a saved file, with the flags given on top.

    The saved file is `--config`'s, or for eval and predict the trained workdir's.
    """
    explicit = _explicit_values()
    if FLAGS.config:
        saved = config_lib.load_json(FLAGS.config)
        base = config_lib.Config.from_dict(saved, source=FLAGS.config)
        # The file's values count as given: its recipe and epoch count were resolved already.
        given = sorted((set(saved) | set(explicit)) - set(config_lib.INTERNAL_FIELDS))
        return dataclasses.replace(base, **explicit, given=tuple(given))
    mode = explicit.get("mode", _C.mode)
    if mode in ("eval", "predict"):
        workdir = explicit.get("workdir") or config_lib.Config(**explicit).resolved_workdir()
        path = paths.join(workdir, "config.json")
        if not paths.exists(path):
            raise config_lib.ConfigError(
                f"--mode={mode} needs a trained workdir; {workdir} has no config.json "
                "(give --workdir=DIR of a trained run)"
            )
        return config_lib.for_workdir(
            config_lib.load_json(path), {**explicit, "workdir": workdir}, source=path
        )
    # `given` tells engine.defaults which flags were set, even to their default values.
    return config_lib.Config(**explicit, given=tuple(sorted(explicit)))


def _init_distributed(config: config_lib.Config) -> None:
    """Starts multi-process JAX before any device is touched (explicit flags or the environment)."""
    import jax

    explicit = config.num_processes > 1 or config.coordinator_address
    cluster_env = any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES"))
    if not (explicit or cluster_env):
        return
    if jax.config.jax_platforms in (None, "", "cpu") and explicit:
        # CPU processes need a collectives backend to talk to each other.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if explicit:
        kwargs = {
            "coordinator_address": config.coordinator_address,
            "num_processes": config.num_processes,
            "process_id": config.process_id if config.process_id >= 0 else None,
        }
    jax.distributed.initialize(**kwargs)


def main(argv) -> int:
    """Parses flags, validates, and hands over to engine.fit (or the predictions writer)."""
    if len(argv) > 1:
        print(
            f"error: unexpected arguments {argv[1:]}; flags look like --name=value", file=sys.stderr
        )
        return 2
    # orbax and tfds log every step of every save at INFO through absl; users need warnings only.
    logging.set_verbosity(logging.WARNING)
    try:
        config = _config_from_flags()
        from engine.setup import import_plugins

        import_plugins(config.plugins)
        config = validation.validate(config)
        _init_distributed(config)
        if config.mode == "doctor":
            from engine.doctor import post_hoc

            workdirs = [w for w in config.resolved_workdir().split(",") if w]
            print("\n".join(post_hoc(workdirs)))
        elif config.mode == "predict":
            from engine.predict import write_predictions

            write_predictions(config)
        else:
            from engine.train import fit

            return fit(config).get("exit_code", 0)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not the flags: a full disk, a broken mount
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        from engine.guards import Diverged

        if not isinstance(e, Diverged):
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def _help_requested(argv) -> bool:
    return any(a in ("-h", "--help", "--helpshort", "--helpfull", "-help", "-?") for a in argv[1:])


def cli(argv) -> int:
    """The whole command line, `argv` as in `sys.argv`: help, flag parsing, the run.

    Flags are parsed here rather than by `absl.app.run`, whose parsing errors exit 1 with a
    usage dump and whose `--helpfull` exits 1: here a parsing error is one line and exit 2,
    like every other usage error, and asking for help exits 0.

    Returns:
      The exit status: 0, 2 for a usage error, or what the run asked for (3: non-finite
      values, 143/130: stopped by SIGTERM/SIGINT).
    """
    FLAGS.unparse_flags()  # called again in one process (tests): start from the defaults
    if _help_requested(argv):
        FLAGS(argv[:1])
        print(__doc__)
        full = "--helpfull" in argv
        print(FLAGS.get_help() if full else FLAGS.main_module_help())
        return 0
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}; see --help", file=sys.stderr)
        return 2
    return main(rest)


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
