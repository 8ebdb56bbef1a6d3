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

from absl import app, flags, logging

import architectures
import losses
from engine import config as config_lib

_C = config_lib.Config()

# Help texts; the defaults come from engine.config.Config, the choices from the registries.
_HELP = {
    "mode": f"what to do: {'|'.join(config_lib.MODES)} (eval tests the best checkpoint; eval "
    "and predict take the training settings from the workdir's config.json; doctor diagnoses "
    "trained workdirs from their files, --workdir=W1,W2 compares several)",
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
    "loss": f"loss: {'|'.join(losses.names())}",
    "label_smoothing": "label smoothing for cross_entropy and kl_divergence",
    "delta": "huber's delta and smooth_l1's beta",
    "focal_gamma": "focal loss gamma",
    "focal_alpha": "focal loss alpha (negative: none)",
    "optimizer": f"optimizer: {'|'.join(config_lib.OPTIMIZERS)}",
    "lr": "peak learning rate",
    "momentum": "momentum of --optimizer=momentum",
    "weight_decay": "weight decay (masked: not on biases or normalisation parameters)",
    "schedule": f"learning-rate schedule: {'|'.join(config_lib.SCHEDULES)}",
    "warmup_epochs": "warm-up length for warmup_cosine",
    "clip_grad_norm": "clip gradients to this global norm (0: off)",
    "lr_scaling": f"{'|'.join(config_lib.LR_SCALING)} (linear: lr x global_batch / 256)",
    "grad_accum_steps": "accumulate gradients over this many batches per update",
    "batch_size": "global batch size (split over all devices and processes)",
    "eval_batch_size": "batch size for validation and test (0: --batch_size)",
    "epochs": "number of epochs of the planned run",
    "parallel": f"device parallelism: {'|'.join(config_lib.PARALLEL_MODES)}",
    "coordinator_address": "HOST:PORT of process 0 for multi-process runs (Cloud TPU: automatic)",
    "num_processes": "number of processes in a multi-process run (0: automatic/one)",
    "process_id": "this process's index in a multi-process run (-1: automatic)",
    "max_to_keep": "how many latest checkpoints to keep",
    "stop_after_epoch": "stop after this epoch (resumable by rerunning); 0: train to --epochs",
    "summary": "print the model summary and exit",
    "progress": "show a progress line for the whole run (with ETA)",
    "profile": "START:STOP: write a jax.profiler trace of those train steps to WORKDIR/profile "
    "(TensorBoard or Perfetto) and print where their time goes (compile, host, device)",
    "doctor": "diagnose the run after every epoch and at the end (doctor.json); costs one "
    "evaluation pass over a training subset per epoch",
}


def _define_flags() -> None:
    for field in dataclasses.fields(config_lib.Config):
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
        if not FLAGS[field.name].present:
            continue
        value = FLAGS[field.name].value
        if field.name == "hidden_sizes":
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
        return dataclasses.replace(base, **explicit)
    mode = explicit.get("mode", _C.mode)
    if mode in ("eval", "predict"):
        workdir = explicit.get("workdir") or config_lib.Config(**explicit).resolved_workdir()
        path = os.path.join(workdir, "config.json")
        if not os.path.exists(path):
            raise config_lib.ConfigError(
                f"--mode={mode} needs a trained workdir; {workdir} has no config.json "
                "(give --workdir=DIR of a trained run)"
            )
        return config_lib.for_workdir(
            config_lib.load_json(path), {**explicit, "workdir": workdir}, source=path
        )
    return config_lib.Config(**explicit)


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
        from engine.train import import_plugins

        import_plugins(config.plugins)
        config = config_lib.validate(config)
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

            fit(config)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _help_requested(argv) -> bool:
    return any(a in ("-h", "--help", "--helpshort", "-help", "-?") for a in argv[1:])


if __name__ == "__main__":
    if _help_requested(sys.argv):
        # absl's own --help exits with status 1; asking for help is not an error.
        FLAGS(sys.argv[:1])
        print(__doc__)
        print(FLAGS.main_module_help())
        sys.exit(0)
    app.run(lambda argv: sys.exit(main(argv)))
