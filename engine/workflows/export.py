"""Exporting a trained workdir for serving: `python run.py --mode=export` and `Predictor.export`.

The exported function is the program's inference (`Program.infer`) with the restored state
folded in as constants: raw inputs (N, *input_shape) float32 in, with the training's
normalisation and resizing inside, and the same arrays as `Predictor.infer` out (`outputs`,
`prediction`, and `probabilities`/`confidence` for a classifier or `embedding` for an embedding
run). The batch dimension is symbolic, so one artifact serves any N.

Formats: `stablehlo` (`jax.export`, serialised; loaded with `jax` and `numpy` alone, see
docs/export/load_stablehlo.py) and `onnx` (`jax2onnx`, checked with `onnxruntime`; the optional
`.[export]` extra). Beside the artifact, `export.json` says what it takes and gives.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from engine import paths
from engine.config import Config, ConfigError
from engine.runtime import report
from engine.workflows.setup import Trained, restore

FORMATS = ("stablehlo", "onnx")
ARTIFACTS = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}
METADATA_FILE = "export.json"
DEFAULT_FOLDER = "export"
CHECK_ROWS = 8  # test rows run through the written artifact, compared with the JAX function
CHECK_TOLERANCE = 1e-4  # of the outputs' scale: float32 summation order stays far below it
EXTRA_HINT = "pip install -e '.[export]'"


def inference_function(trained: Trained):
    """The trained run's inference as `f(raw_inputs) -> dict of arrays`, state folded in.

    Raises:
      ConfigError: the program has no inference function (`Program.infer` is None), naming it.
    """
    infer = trained.setup.program.infer
    if infer is None:
        raise ConfigError(
            f"the {trained.config.program} program has no inference function (its nets do "
            "not map an input to a prediction); nothing to export"
        )
    state = trained.state

    def fn(inputs):
        out = dict(infer(state, inputs.astype(jnp.float32)))
        if "confidence" in out:  # a classifier: the whole distribution, not only its maximum
            logits = out["outputs"]
            if logits.shape[-1] == 1:
                p = jax.nn.sigmoid(logits)
                out["probabilities"] = jnp.concatenate([1 - p, p], axis=-1)
            else:
                out["probabilities"] = jax.nn.softmax(logits, axis=-1)
        return out

    return fn


def export(trained: Trained, output: str, format: str = "stablehlo") -> str:
    """Writes `trained`'s inference to the folder `output` in `format`, with `export.json`.

    Returns:
      The artifact's path.

    Raises:
      ConfigError: an unknown format, a folder that already holds files, a program without
        inference, a missing optional extra, or a network the converter cannot express.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format={format} is not valid; choose {' or '.join(FORMATS)}")
    _check_output(output)
    converter = _onnx_modules() if format == "onnx" else None  # before any work
    fn = inference_function(trained)
    info = trained.setup.run.splits.info
    shape = tuple(int(d) for d in info.input_shape)
    sample = _sample_rows(trained, shape)
    expected = jax.device_get(jax.jit(fn)(sample))
    if format == "stablehlo":
        data, got = _stablehlo(fn, shape, sample)
    else:
        data, got = _onnx(converter, fn, shape, sample, expected)
    diff = max(float(np.max(np.abs(got[k] - expected[k]), initial=0.0)) for k in expected)
    worst = max(_relative(got[k], expected[k]) for k in expected if expected[k].dtype.kind == "f")
    if not worst <= CHECK_TOLERANCE:  # a converter that computes something else: keep nothing
        raise ConfigError(
            f"the {format} artifact's outputs differ from the model's by {worst:.3g} of their "
            f"scale on {len(sample)} test rows (allowed {CHECK_TOLERANCE:g}); nothing written"
        )
    paths.make_dirs(output)
    artifact = paths.join(output, ARTIFACTS[format])
    paths.write_bytes(artifact, data)
    meta = _metadata(trained, format, shape, expected, diff)
    report.write_json(output, METADATA_FILE, meta)
    return artifact


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference as a fraction of the expected values' scale (at least 1)."""
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(np.asarray(got, np.float64) - expected), initial=0.0)) / scale


def _check_output(output: str) -> None:
    """Refuses a path that is a file or a folder holding anything: nothing is overwritten."""
    if not output:
        raise ConfigError("--mode=export needs --output=FOLDER (a new or empty folder)")
    if paths.exists(output) and not paths.is_dir(output):
        raise ConfigError(f"--output={output} is a file; --mode=export writes a folder")
    if paths.exists(output) and paths.list_dir(output):
        raise ConfigError(
            f"--output={output} already holds files; give a new or empty folder "
            "(an export is never written over another)"
        )


def _sample_rows(trained: Trained, shape: tuple[int, ...]) -> np.ndarray:
    test = trained.setup.run.splits.test
    rows = min(CHECK_ROWS, len(test))
    if rows == 0:
        return np.zeros((1, *shape), np.float32)
    return np.asarray(test.get(np.arange(rows))[0], np.float32).reshape(rows, *shape)


def _stablehlo(fn, shape: tuple[int, ...], sample: np.ndarray) -> tuple[bytes, dict]:
    """`fn` through `jax.export` with a symbolic batch: its bytes, and their outputs on `sample`.

    The bytes are deserialised and called, the round trip a server makes.
    """
    try:
        exported = jax.export.export(jax.jit(fn))(_input_spec(shape))
    except Exception as e:  # any tracing failure is named in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"this network cannot be exported to StableHLO: {first}") from None
    data = bytes(exported.serialize())
    loaded = jax.export.deserialize(bytearray(data))
    return data, jax.device_get(loaded.call(sample))


def _onnx_modules():
    """`jax2onnx` and `onnxruntime`, the optional `.[export]` extra.

    Raises:
      ConfigError: one of them is not installed, naming the install command.
    """
    # jax2onnx logs a traceback for each of its plugins for libraries this project lacks.
    logging.getLogger("jax2onnx").setLevel(logging.ERROR)
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    try:
        import jax2onnx
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"--format=onnx needs {e.name}: {EXTRA_HINT}") from None
    return jax2onnx, onnxruntime


def _onnx(modules, fn, shape, sample: np.ndarray, expected: dict) -> tuple[bytes, dict]:
    """`fn` through `jax2onnx` with a symbolic batch, run by `onnxruntime` on `sample`."""
    jax2onnx, onnxruntime = modules
    names = sorted(expected)
    spec = _input_spec(shape)
    # Traced by JAX first, so jax2onnx converts primitives only: its own rule for
    # jax.image.resize (the resizing to --image_size) refuses a symbolic batch.
    closed = jax.make_jaxpr(lambda x: tuple(fn(x)[k] for k in names))(spec)

    def primitives(inputs):  # ONNX outputs are a list: a fixed order, named in export.json
        return tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, inputs))

    try:
        model = jax2onnx.to_onnx(primitives, [spec], input_names=["inputs"], output_names=names)
    except Exception as e:  # the converter's refusal, named in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"jax2onnx cannot convert this network: {first}") from None
    data = model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its shape-merging notes are not the user's
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    got = session.run(names, {"inputs": sample})
    return data, dict(zip(names, got, strict=True))


def _input_spec(shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """Raw inputs (b, *shape) float32 with `b` symbolic: one artifact for any batch size."""
    (batch,) = jax.export.symbolic_shape("b")
    return jax.ShapeDtypeStruct((batch, *shape), jnp.float32)


def _metadata(trained: Trained, format: str, shape, expected: dict, diff: float) -> dict:
    config, info = trained.config, trained.setup.run.splits.info
    classes = info.class_names or (
        tuple(str(i) for i in range(info.num_classes)) if "probabilities" in expected else None
    )
    return {
        "format": format,
        "artifact": ARTIFACTS[format],
        "input": {
            "name": "inputs",
            "shape": ["b", *shape],
            "dtype": "float32",
            "raw": "as the dataset gives them; normalisation and resizing are inside",
        },
        "outputs": {
            k: {"shape": ["b", *np.shape(v)[1:]], "dtype": str(np.asarray(v).dtype)}
            for k, v in sorted(expected.items())
        },
        "class_names": list(classes) if classes is not None else None,
        "program": config.program,
        "arch": config.arch,
        "dataset": config.dataset,
        "checkpoint": {"which": trained.which, "epoch": int(trained.epoch)},
        "check": {"rows": len(next(iter(expected.values()))), "max_abs_diff": diff},
        "versions": {"engine": _version("jaxtrain"), "jax": jax.__version__},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None  # running from a source tree that was never installed


def write_export(config: Config) -> str:
    """`--mode=export`: exports the workdir's best checkpoint to `--output` (a folder).

    Returns:
      The artifact's path.
    """
    output = config.output or paths.join(config.resolved_workdir(), DEFAULT_FOLDER)
    _check_output(output)  # before the model is rebuilt: a refusal costs nothing
    if config.format == "onnx":
        _onnx_modules()
    overrides: dict[str, Any] = {
        k: getattr(config, k)
        for k in ("data_dir", "batch_size", "eval_batch_size")
        if getattr(config, k) != getattr(Config(), k)
    }
    trained = restore(config.resolved_workdir(), **overrides)
    artifact = export(trained, output, config.format)
    print(
        f"exported the {trained.which} checkpoint (epoch {trained.epoch}) of "
        f"{config.resolved_workdir()} as {config.format} to {artifact}",
        flush=True,
    )
    return artifact
