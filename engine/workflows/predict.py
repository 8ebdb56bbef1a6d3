"""Using a trained workdir: `engine.load(workdir)` and `python run.py --mode=predict`.

    predictor = engine.load("runs/digits-mlp-cross_entropy")
    predictor.predict(images)        # class ids (or values in the target's units)
    predictor.outputs(images)        # logits / raw outputs
    predictor.evaluate("test")       # the split's metrics, as results.json has them
    predictor.export("served/")      # a StableHLO (or ONNX) artifact for serving (export.py)

The workdir's `config.json` says how the model was built and trained, and the checkpoint holds
the normalisation constants, so no flag needs repeating and every preprocessing step of the
training (normalisation, resizing) is applied inside.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any

import jax
import numpy as np
from etils import epath

from engine import data, paths
from engine.config import Config, ConfigError, checks
from engine.data import folder
from engine.data.source import DatasetInfo
from engine.runtime import loop
from engine.workflows import export as export_lib
from engine.workflows.setup import Trained, restore

PREDICTIONS_FILE = "predictions.csv"


@dataclasses.dataclass
class Predictor(Trained):
    """A trained model with its preprocessing, on one device (`engine.load(workdir)`).

    Attributes:
      setup: the rebuilt run (config, data, program).
      state: the restored state.
      epoch: the epoch of the restored checkpoint.
      which: "best" or "latest".
    """

    def __post_init__(self):
        infer = self.setup.program.infer
        if infer is None:
            raise ConfigError("this run's program has no inference; it cannot predict")
        self._infer = jax.jit(infer)
        self._batch = self.setup.config.eval_batch_size or self.setup.config.batch_size

    @property
    def info(self) -> DatasetInfo:
        """The dataset's description (input shape, class names)."""
        return self.setup.run.splits.info

    def infer(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Everything the program infers for raw `inputs` (N, *input_shape), as NumPy arrays.

        Batches are padded to one fixed size, so any N compiles once.
        """
        inputs = np.asarray(inputs)
        shape = tuple(self.info.input_shape)
        inputs = as_examples(inputs, shape, flat=self.setup.run.takes_vectors)
        if inputs.shape[1:] != shape:
            rows = f" or (N, {int(np.prod(shape))})" if self.setup.run.takes_vectors else ""
            raise ValueError(
                f"inputs have shape {inputs.shape}; this model takes raw examples of "
                f"{self.info.name} shaped (N, {', '.join(map(str, shape))}){rows}"
            )
        parts = []
        for start in range(0, len(inputs), self._batch):
            chunk = inputs[start : start + self._batch].astype(np.float32)
            padded = np.zeros((self._batch, *shape), np.float32)
            padded[: len(chunk)] = chunk
            out = jax.device_get(self._infer(self.state, padded))
            parts.append({k: v[: len(chunk)] for k, v in out.items()})
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """What the model predicts for raw `inputs`.

        Returns:
          Class ids (N,) for classification, values (N, d) in the target's units for
          regression, unit embeddings (N, dimensions) for a program that learns embeddings.
        """
        return self.infer(inputs)["prediction"]

    def outputs(self, inputs: np.ndarray) -> np.ndarray:
        """The model's raw outputs (logits for classification), (N, outputs)."""
        return self.infer(inputs)["outputs"]

    def export(self, output: str, format: str = "stablehlo") -> str:
        """Writes the inference, preprocessing inside, to the new or empty folder `output`.

        `format`: "stablehlo" or "onnx"; see `engine.workflows.export.export`.

        Returns:
          The artifact's path (`export.json` beside it describes it).
        """
        return export_lib.export(self, output, format)

    def examples(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """The raw inputs and targets of `split` (train, val or test), in split order."""
        source = getattr(self.setup.run.splits, _split_name(split))
        parts = [
            source.get(np.arange(i, min(i + 4096, len(source))))
            for i in range(0, len(source), 4096)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def evaluate(self, split: str = "test") -> dict:
        """The metrics of `split` (train, val or test) with this checkpoint."""
        run, program, plan = self.setup.run, self.setup.program, self.setup.plan
        loader = {"train": None, "val": run.val_loader, "test": run.test_loader}[_split_name(split)]
        if loader is None:  # the training split in evaluation order and mode
            loader = data.make_loader(run.splits.train, batch_size=self._batch, shuffle=False)
        zeros = program.eval_zeros(self.state, run.sample_batch())
        eval_step = plan.wrap_eval(program.eval_step)
        return program.summarize(loop.evaluate(eval_step, self.state, loader, plan, zeros))


def _split_name(split: str) -> str:
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, val, test")
    return split


def load(workdir: str, which: str = "best", **kwargs: Any) -> Predictor:
    """Restores a trained workdir for prediction and evaluation (`setup.restore`'s arguments).

    Raises:
      ConfigError: no trained run in `workdir`, or it needs a user object not given.
    """
    trained = restore(workdir, which, **kwargs)
    return Predictor(trained.setup, trained.state, trained.epoch, trained.which)


def as_examples(array: np.ndarray, shape: tuple[int, ...], *, flat: bool) -> np.ndarray:
    """`array` as a batch of examples of `shape`, where it can be read as one.

    A lone example gains the batch axis; with `flat` (the model flattens its inputs), rows of an
    example's values are reshaped. Any other array is returned as it is, for the caller to refuse.
    """
    if array.shape == shape:
        return array[None]
    if flat and array.ndim == 2 and array.shape[1] == int(np.prod(shape)):
        return array.reshape(len(array), *shape)
    return array


def read_inputs(
    spec: str, info: DatasetInfo, *, flat: bool = False
) -> tuple[list[str], np.ndarray]:
    """Reads `--inputs` into (names, raw inputs (N, *input_shape)).

    `folder:PATH`: every JPEG/PNG below PATH in sorted path order, decoded and fitted as the
    folder datasets do, named by path relative to PATH. `csv:PATH`: one row per example; with
    a header naming the dataset's features (`column=value` one-hot features are encoded from
    a raw `column`), else the features in order; named by row index. `npy:PATH`: an array of
    raw inputs, named by row index. With `flat` (the model flattens its inputs), csv rows and
    npy rows may hold an image's values in one row.

    Raises:
      ConfigError: one line naming a missing path, a bad shape or an unknown column.
    """
    kind, _, path = spec.partition(":")
    if not paths.exists(path):
        raise ConfigError(f"--inputs={spec}: {path} does not exist")
    shape = tuple(info.input_shape)
    if kind == "npy":
        try:
            array = np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False)
        except ValueError as e:
            raise ConfigError(f"--inputs={spec}: not a NumPy .npy array ({e})") from None
        array = as_examples(array, shape, flat=flat)
        if array.shape[1:] != shape:
            raise ConfigError(
                f"--inputs={spec} has shape {array.shape}; {info.name} examples are {shape}"
            )
        return [str(i) for i in range(len(array))], array
    if kind == "folder":
        return _read_folder(spec, path, info)
    return _read_csv(spec, path, info, flat)


def _read_folder(spec: str, root: str, info: DatasetInfo):
    if not info.is_image:
        raise ConfigError(f"--inputs={spec}: {info.name} is a table; give csv: or npy: inputs")
    if paths.is_remote(root):
        found = [os.fspath(p) for p in epath.Path(root).glob("**/*") if p.is_file()]
    else:
        found = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    files = sorted(f for f in found if f.lower().endswith(folder.IMAGE_EXTENSIONS))
    if not files:
        raise ConfigError(f"--inputs={spec}: no {'/'.join(folder.IMAGE_EXTENSIONS)} images")
    height, width, channels = info.input_shape
    images = []
    for file in files:
        # PIL opens local paths itself and anything else from the bytes.
        source = io.BytesIO(paths.read_bytes(file)) if paths.is_remote(file) else file
        try:
            images.append(folder.read_image(source, (height, width), channels))
        except ValueError as e:
            raise ConfigError(f"--inputs={spec}: {file}: {e}") from None
    start = len(root.rstrip("/")) + 1
    return [f[start:] for f in files], np.stack(images)


def _read_csv(spec: str, path: str, info: DatasetInfo, flat: bool):
    if info.is_image and not flat:
        raise ConfigError(
            f"--inputs={spec}: csv: rows are a table's values, and this model takes "
            f"{info.name}'s images as images: give folder: (image files) or npy: (an array)"
        )
    text = paths.read_bytes(path).decode("utf-8-sig")
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in row)]
    if not rows:
        raise ConfigError(f"--inputs={spec} is empty")
    width = int(np.prod(info.input_shape))  # an image's values, row by row, for a flat model
    features = info.feature_names or tuple(f"x{i}" for i in range(width))
    header = [c.strip() for c in rows[0]]
    if _numbers(header):  # no header: the features in order
        table, columns = rows, {f: i for i, f in enumerate(features)}
    else:
        table, columns = rows[1:], {name: i for i, name in enumerate(header)}
    out = np.zeros((len(table), len(features)), np.float32)
    for j, feature in enumerate(features):
        column, _, value = feature.partition("=")
        if feature in columns:
            index, one_hot = columns[feature], None
        elif value and column in columns:
            index, one_hot = columns[column], value
        else:
            raise ConfigError(f"--inputs={spec} has no column {feature!r} (the model's input)")
        for i, row in enumerate(table):
            cell = row[index].strip() if index < len(row) else ""
            if one_hot is not None:
                out[i, j] = float(cell == one_hot)
                continue
            try:
                out[i, j] = float(cell)
            except ValueError:
                raise ConfigError(
                    f"--inputs={spec}: row {i + 1} column {feature!r} is {cell!r}, not a number"
                ) from None
    return [str(i) for i in range(len(table))], out.reshape(len(table), *info.input_shape)


def _numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def write_predictions(config: Config) -> str:
    """`--mode=predict`: predicts `config.inputs` with the workdir's best checkpoint into a CSV.

    One row per input: its name (file or row index), the predicted class name (or value) and,
    for classification, the probability of that class.

    Returns:
      The path written.
    """
    checks.validate(config)  # --inputs given and well formed, before the model is rebuilt
    overrides = {k: getattr(config, k) for k in ("data_dir", "batch_size", "eval_batch_size")}
    defaults = Config()
    overrides = {k: v for k, v in overrides.items() if v != getattr(defaults, k)}
    predictor = load(config.resolved_workdir(), **overrides)
    info = predictor.info
    names, inputs = read_inputs(config.inputs, info, flat=predictor.setup.run.takes_vectors)
    result = predictor.infer(inputs)
    output = config.output or paths.join(config.resolved_workdir(), PREDICTIONS_FILE)
    prediction = result["prediction"]
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        if "confidence" in result:  # a classifier (an embedding has none)
            classes = info.class_names or tuple(str(i) for i in range(info.num_classes))
            writer.writerow(["input", "prediction", "probability"])
            for name, p, q in zip(names, prediction, result["confidence"], strict=True):
                writer.writerow([name, classes[int(p)], f"{float(q):.6f}"])
        else:
            values = prediction.reshape(len(names), -1)
            head = "embedding" if "embedding" in result else "prediction"
            heads = (
                [head] if values.shape[1] == 1 else [f"{head}_{i}" for i in range(values.shape[1])]
            )
            writer.writerow(["input", *heads])
            for name, row in zip(names, values, strict=True):
                writer.writerow([name, *(f"{float(v):.6g}" for v in row)])
        paths.write_text(output, f.getvalue())
    print(
        f"wrote {len(names)} predictions ({predictor.which} checkpoint from epoch "
        f"{predictor.epoch}) to {output}",
        flush=True,
    )
    return output
