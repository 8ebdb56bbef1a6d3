"""The run's configuration as one frozen dataclass, its defaults, and the checks before work."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "plateau")
NORMALIZATIONS = ("standard", "minmax", "symmetric", "none")
PARALLEL_MODES = ("jit", "pmap", "none")
DTYPES = ("float32", "bfloat16")
MODES = ("train", "eval", "predict", "doctor")
PROGRAMS = ("supervised", "gan")
SPLITS = ("random", "time")
BALANCE = ("none", "oversample")
CLASS_WEIGHTS = ("none", "balanced")
STREAMING = ("auto", "memory", "stream")
LR_SCALING = ("none", "linear")
BATCHNORM = ("auto", "on", "off")
ON_NAN = ("stop", "skip")
SELECT = ("auto", "best", "last")

# Fields that decide the shapes or the meaning of the parameters: a workdir trained with other
# values cannot be resumed or evaluated with these, so a mismatch is refused, never mixed.
MODEL_FIELDS = (
    "dataset",
    "target",
    "arch",
    "depth",
    "width",
    "hidden_sizes",
    "activation",
    "batchnorm",
    "aux_heads",
    "image_size",
    "loss",
    "normalize",
    "optimizer",
    "grad_accum_steps",
    "classes",
    "freeze",  # frozen parameters have no optimizer state: another state tree
    "on_nan",  # skip wraps the optimizer in optax.apply_if_finite: another state tree
    "teacher",  # the teacher's variables are part of the state
    "embedding_dim",
    "program",
    "latent_dim",
    "judge",  # the judge's variables are part of a GAN's state
)
# Fields whose being on or off (not their value) changes the optimizer state's tree.
TOGGLE_FIELDS = ("clip_grad_norm", "weight_decay")

# What `--mode=eval` and `--mode=predict` may set beside a trained workdir's saved config: where
# data and outputs are, and how evaluation is batched and run; nothing that changes the model.
EVAL_OVERRIDES = (
    "mode",
    "workdir",
    "data_dir",
    "batch_size",
    "eval_batch_size",
    "parallel",
    "coordinator_address",
    "num_processes",
    "process_id",
    "num_workers",
    "streaming",
    "progress",
    "compile_cache",
    "conv",
    "inputs",
    "output",
)


# Fields that are bookkeeping, not flags (see `Config.given`, `Config.auto`).
INTERNAL_FIELDS = ("given", "auto")


class ConfigError(ValueError):
    """A user error in the configuration; its message is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs. `run.py` builds it from flags; tests build it directly."""

    # What to do and where.
    mode: str = "train"
    program: str = "supervised"  # supervised (classification, regression, embeddings) or gan
    workdir: str = ""  # empty: runs/<dataset>-<arch>-<loss>
    seed: int = 0
    plugins: tuple[str, ...] = ()  # modules imported first (they may register archs/losses)
    monitor: str = ""  # e.g. val_loss, val_accuracy; empty: the program's default
    inputs: str = ""  # --mode=predict: folder:PATH, csv:PATH or npy:PATH
    output: str = ""  # --mode=predict: the CSV to write (empty: WORKDIR/predictions.csv)

    # Data.
    dataset: str = "digits"
    data_dir: str = ""  # empty: engine.data.default_data_dir()
    target: str = ""  # the target column of a csv: dataset
    classes: tuple[int, ...] = ()  # keep only these classes, renumbered 0..k-1; empty: all
    test_fraction: float = 0.3
    val_fraction: float = 0.1
    split: str = "random"
    normalize: str = "standard"
    balance: str = "none"
    class_weights: str = "none"
    augment: str = "none"
    image_size: int = 0  # 0: the dataset's own size, resized up to the architecture's minimum
    skip_bad_files: bool = False
    streaming: str = "auto"
    num_workers: int = 2

    # Model.
    arch: str = "mlp"
    depth: int = 0  # 0: the family's default (resnet 18, vgg 16)
    width: float = 1.0
    hidden_sizes: tuple[int, ...] = (256, 128)
    activation: str = "relu"
    leaky_slope: float = 0.01
    init: str = "lecun"
    batchnorm: str = "auto"
    dropout: float = -1.0  # negative: the family's own default (AlexNet/VGG 0.5, MLP 0)
    aux_heads: bool = True
    aux_weight: float = 0.3
    dtype: str = "float32"
    # How convolutions are lowered: auto (matmuls on CPU, XLA's own on GPU/TPU) or xla (XLA's
    # everywhere); parameters do not depend on it, so it is not a model field.
    conv: str = "auto"

    # Loss.
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    delta: float = 1.0  # huber's delta and smooth_l1's beta
    focal_gamma: float = 2.0
    focal_alpha: float = -1.0  # negative: no alpha weighting

    # Optimisation.
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    clip_grad_norm: float = 0.0  # 0: no clipping
    lr_scaling: str = "none"
    grad_accum_steps: int = 1
    batch_size: int = 64
    eval_batch_size: int = 0  # 0: same as batch_size
    epochs: int = 0  # 0: automatic (engine.defaults: at least --min_updates, >= 30 epochs)
    min_updates: int = 300  # --epochs=0: the fewest optimizer updates the run makes
    init_from: str = ""  # WORKDIR[:best|latest]: start from another run's parameters
    init_params: str = ""  # regex of the parameter paths to load (empty: all that fit)
    freeze: str = ""  # regex of the parameter paths kept fixed (optax set_to_zero)
    teacher: str = ""  # WORKDIR[:best|latest] of a trained run to distil from
    distill_temperature: float = 4.0  # T of the softened softmax of teacher and student
    distill_alpha: float = 0.9  # weight of the soft-target term (1 - alpha: the task's loss)
    # Metric learning (--loss=triplet_margin on a labelled dataset).
    embedding_dim: int = 64  # the head's size: an L2-normalised embedding
    mining: str = "batch_hard"  # triplets formed in the batch: batch_hard, semi_hard, all
    margin: float = 0.2  # the triplet margin (FaceNet's, for unit embeddings)
    classes_per_batch: int = 0  # P of the P x K batches; 0: as many as fill --batch_size
    examples_per_class: int = 0  # K; 0: 4
    # GAN (--program=gan --arch=dcgan).
    latent_dim: int = 100  # the generator's noise size (DCGAN's)
    judge: str = ""  # WORKDIR[:best|latest] of a classifier of the dataset that rates samples
    on_nan: str = "stop"  # a non-finite loss or update: stop the run, or skip the update
    plateau_factor: float = 0.1  # --schedule=plateau: lr x factor on each plateau
    plateau_patience: int = 5  # epochs without val_loss improvement before a reduction
    plateau_cooldown: int = 0  # epochs after a reduction before counting again
    plateau_min_lr: float = 0.0  # the rate is never reduced below this

    # Model selection.
    # Which epoch is tested: the best on --monitor, the last, or auto (engine.defaults: the
    # last when the validation split is too small to choose by, else the best).
    select: str = "auto"
    early_stopping: int = 0  # patience in epochs on --monitor; 0: off
    min_delta: float = 0.0  # the smallest change of --monitor that counts as improvement
    cv_folds: int = 0  # K-fold cross-validation on the non-test rows; 0: off
    fold: int = 0  # with cv_folds: train only fold k (1..K), or -1: the refit; 0: every fold
    cv_refit: bool = False  # after CV: train on all non-test rows, test once
    find_lr: bool = False  # the learning-rate range test instead of training
    overfit_batches: int = 0  # sanity check: train on these N batches only, no regularisation

    # Devices and processes.
    parallel: str = "jit"
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1

    # Checkpoints and output.
    max_to_keep: int = 2
    checkpoint_every: int = 0  # also save inside an epoch every N steps; 0: off
    checkpoint_minutes: float = 5.0  # also save inside an epoch every M minutes; 0: off
    stop_after_epoch: int = 0  # stop (resumably) after this epoch; 0: run to --epochs
    summary: bool = False
    final_test: bool = True  # test the best checkpoint at the end (search trials: off)
    progress: bool = True
    doctor: bool = True  # diagnose each epoch (measures the training split in evaluation mode)
    profile: str = ""  # START:STOP: trace those train steps with jax.profiler
    compile_cache: str = "on"  # JAX's persistent compilation cache: on, off or a folder

    # Bookkeeping of the defaults (not flags). `given`: the fields the user set (run.py fills it
    # from the command line; empty: a field that differs from its default counts as given).
    # `auto`: "name=value" for each field engine.defaults filled in (the epoch count, the
    # architecture's recipe), saved so that resume, eval and the start-up lines agree.
    given: tuple[str, ...] = ()
    auto: tuple[str, ...] = ()

    def resolved_workdir(self) -> str:
        """The workdir, defaulting to runs/<dataset>-<arch>-<loss> (path-safe)."""
        if self.workdir:
            return self.workdir
        name = f"{self.dataset}-{self.arch}-{self.loss}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return os.path.join("runs", safe)

    def model_fields(self) -> dict[str, Any]:
        """The model-shaping fields, as saved in the workdir."""
        return {k: _jsonable(getattr(self, k)) for k in MODEL_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The whole configuration as JSON-able values."""
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        """The whole configuration as JSON (saved in the workdir)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> Config:
        """A Config from saved values (lists become tuples); unknown keys are refused.

        Raises:
          ConfigError: one line naming the unknown setting or the badly typed value.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"{source} has unknown setting(s) {', '.join(unknown)}; valid: see --help"
            )
        defaults = cls()
        typed = {}
        for name, value in values.items():
            default = getattr(defaults, name)
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple):
                    raise ConfigError(f"{source}: {name} must be a list, got {value!r}")
                value = tuple(value)
            elif (
                isinstance(default, bool) != isinstance(value, bool)
                or (isinstance(default, int | float) and not isinstance(value, int | float))
                or (isinstance(default, str) and not isinstance(value, str))
            ):
                raise ConfigError(
                    f"{source}: {name} must be a {type(default).__name__}, got {value!r}"
                )
            elif isinstance(default, float):
                value = float(value)
            typed[name] = value
        return cls(**typed)

    def resume_conflicts(self, saved: dict[str, Any]) -> list[str]:
        """`--flag=saved (now value)` for each setting the saved state cannot be resumed with.

        Args:
          saved: the workdir's saved configuration (its `config.json`).
        """
        mine = self.to_dict()
        found = [k for k in MODEL_FIELDS if k in saved and saved[k] != mine[k]]
        found += [k for k in TOGGLE_FIELDS if k in saved and (saved[k] > 0) != (mine[k] > 0)]
        if "schedule" in saved and (saved["schedule"] == "plateau") != (self.schedule == "plateau"):
            found.append("schedule")  # the plateau adds its state to the optimizer's tree
        return [f"--{k}={saved[k]!r} (now {mine[k]!r})" for k in found]


def load_json(path: str) -> dict[str, Any]:
    """The settings saved in a config JSON file.

    Raises:
      ConfigError: the file is missing, unreadable or not a JSON object.
    """
    from etils import epath

    try:
        text = epath.Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        raise ConfigError(f"cannot read config file {path}: {type(e).__name__}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"config file {path} is not valid JSON ({e.msg} at line {e.lineno})"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    return values


def for_workdir(saved: dict[str, Any], overrides: dict[str, Any], *, source: str) -> Config:
    """The saved config of a trained workdir with the settings eval and predict may change.

    Args:
      saved: the workdir's saved settings.
      overrides: settings given now (e.g. explicit flags); only `EVAL_OVERRIDES` are allowed.
      source: where `saved` came from, for messages.

    Raises:
      ConfigError: an override that would change the trained model, naming it.
    """
    refused = sorted(set(overrides) - set(EVAL_OVERRIDES))
    if refused:
        raise ConfigError(
            f"--mode={overrides.get('mode', 'eval')} takes the training settings from {source}; "
            f"{', '.join('--' + k for k in refused)} cannot be changed (allowed: "
            f"{', '.join('--' + k for k in EVAL_OVERRIDES[1:])})"
        )
    base = Config.from_dict(saved, source=source)
    return dataclasses.replace(base, **overrides)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
