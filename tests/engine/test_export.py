"""--mode=export: a StableHLO artifact served by a loader that imports jax and numpy only."""

import json
import os
import subprocess
import sys
import sysconfig
import types

import numpy as np
import pytest
from engine_helpers import fast_config

import engine
from engine.config import Config, ConfigError
from engine.workflows import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOADER = os.path.join(ROOT, "docs", "export", "load_stablehlo.py")
BATCHES = (1, 7, 100)

# Run with `python -I -S`: no PYTHONPATH, no script folder, no .pth files (so not the editable
# install's finder), only the interpreter's site-packages folders appended by hand.
SERVE = """
import importlib, sys
sys.path.extend({site!r})
for name in ("engine", "architectures", "losses", "run"):
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"{{name}} is importable in the serving process")
import runpy
import numpy as np
predict, meta = runpy.run_path({loader!r})["load"](sys.argv[1])
x = np.load(sys.argv[2])
out = {{}}
for n in {batches!r}:
    for key, value in predict(x[:n]).items():
        out[f"{{key}}_{{n}}"] = np.asarray(value)
np.savez(sys.argv[3], **out)
print(sorted(sys.modules.keys() & {{"engine", "architectures", "losses", "flax", "optax"}}))
"""


def serve(folder: str, inputs: np.ndarray, tmp_path) -> dict[str, np.ndarray]:
    """The standalone loader's outputs for inputs[:n], n in BATCHES, from a fresh process."""
    np.save(tmp_path / "x.npy", inputs)
    paths = sysconfig.get_paths()
    site = sorted({paths["purelib"], paths["platlib"]})
    script = SERVE.format(site=site, loader=LOADER, batches=BATCHES)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, folder, "x.npy", "out.npz"],
        capture_output=True, text=True, cwd=tmp_path, env={**env, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout  # no project module, not even flax
    with np.load(tmp_path / "out.npz") as f:
        return dict(f)


def check_served(predictor, folder: str, tmp_path, rtol: float = 1e-6) -> float:
    """Asserts the served outputs equal `Predictor.infer`'s; returns the largest difference.

    The outputs (logits, values, embeddings) within `rtol` of their scale (the largest, at
    least 1): a float32 sum in another order (another batch size, XLA's convolution where
    `Predictor` has the CPU matmul forms) differs by a few units in the last place, 1.9e-6 at
    16. Probabilities within 1e-6, classes equal.
    """
    inputs = predictor.examples("test")[0][:100]
    served = serve(folder, inputs, tmp_path)
    worst = 0.0
    for n in BATCHES:
        expected = predictor.infer(inputs[:n])
        got = {k: served[f"{k}_{n}"] for k in expected}
        scale = max(1.0, float(np.max(np.abs(expected["outputs"]))))
        diff = float(np.max(np.abs(got["outputs"] - expected["outputs"])))
        assert diff <= rtol * scale, (n, diff, scale)
        worst = max(worst, diff / scale)
        if "confidence" in expected:  # a classifier: the same classes and probabilities
            np.testing.assert_array_equal(got["prediction"], expected["prediction"])
            np.testing.assert_allclose(got["confidence"], expected["confidence"], atol=1e-6)
            probabilities = served[f"probabilities_{n}"]
            np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)
            np.testing.assert_allclose(probabilities.max(-1), expected["confidence"], atol=1e-6)
        else:
            top = max(1.0, float(np.max(np.abs(expected["prediction"]))))  # in target units
            np.testing.assert_allclose(got["prediction"], expected["prediction"], atol=rtol * top)
    return worst


@pytest.fixture(scope="module")
def lenet(data_dir, tmp_path_factory):
    """A one-epoch LeNet on digits: convolutions, and 8x8 inputs resized to 32x32 inside."""
    workdir = str(tmp_path_factory.mktemp("export") / "lenet")
    engine.fit(fast_config(data_dir, workdir, arch="lenet", epochs=1))
    return workdir


@pytest.fixture(scope="module")
def mlp(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("export") / "mlp")
    engine.fit(fast_config(data_dir, workdir, epochs=1))
    return workdir


def test_lenet_stablehlo_served_without_the_project_equals_predictor(lenet, tmp_path):
    predictor = engine.load(lenet)
    folder = str(tmp_path / "served")
    artifact = predictor.export(folder)
    assert artifact == os.path.join(folder, "model.stablehlo")
    with open(os.path.join(folder, "export.json"), encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["input"]["shape"] == ["b", 8, 8, 1] and meta["input"]["dtype"] == "float32"
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["versions"]["engine"] and meta["versions"]["jax"]
    assert meta["outputs"]["probabilities"] == {"shape": ["b", 10], "dtype": "float32"}
    assert meta["check"]["max_abs_diff"] < 1e-4
    check_served(predictor, folder, tmp_path)


def test_an_artifact_that_computes_something_else_is_not_kept(lenet, tmp_path, monkeypatch):
    stablehlo = export._stablehlo

    def off_by_one(*args):
        data, outputs = stablehlo(*args)
        return data, {**outputs, "outputs": outputs["outputs"] + 1.0}

    monkeypatch.setattr(export, "_stablehlo", off_by_one)
    with pytest.raises(ConfigError, match="artifact's outputs differ from the model's by"):
        engine.load(lenet).export(str(tmp_path / "served"))
    assert not (tmp_path / "served").exists()


def test_export_cli_writes_a_folder_and_refuses_to_write_over_one(mlp, data_dir, tmp_path):
    folder = tmp_path / "served"
    flags = [f"--workdir={mlp}", f"--data_dir={data_dir}", f"--output={folder}"]
    run = [sys.executable, os.path.join(ROOT, "run.py"), "--mode=export", *flags]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(folder)) == ["export.json", "model.stablehlo"]
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    again = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 2 and len(lines) == 1, again.stderr
    assert lines[0] == (
        f"error: --output={folder} already holds files; give a new or empty folder "
        "(an export is never written over another)"
    )
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    check_served(engine.load(mlp), str(folder), tmp_path)


def test_onnx_without_the_extra_names_the_install(tmp_path):
    try:
        import jax2onnx  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the export extra is installed")
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[export\]'"):
        export.export(types.SimpleNamespace(), str(tmp_path / "onnx"), format="onnx")
    assert not (tmp_path / "onnx").exists()


def test_a_program_without_inference_and_a_file_as_output_are_refused(tmp_path):
    gan = types.SimpleNamespace(
        setup=types.SimpleNamespace(program=types.SimpleNamespace(infer=None)),
        config=types.SimpleNamespace(program="gan"),
    )
    with pytest.raises(ConfigError, match="the gan program has no inference function"):
        export.inference_function(gan)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file; --mode=export writes a folder"):
        export.export(gan, str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="--format=tflite is not valid"):
        export.export(gan, str(tmp_path / "new"), "tflite")


# The zoo at a quarter of its width: one epoch each (ResNet-18, GoogLeNet: minutes on 2 cores).
ZOO = {
    "mlp": {},
    "lenet": {},
    "alexnet": {"width": 0.25},
    "vgg": {"width": 0.25, "depth": 11},
    "nin": {"width": 0.25},
    "googlenet": {"width": 0.25},
    "resnet": {"width": 0.25},
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ZOO))
def test_every_zoo_network_exports_to_stablehlo(arch, data_dir, tmp_path):
    workdir = str(tmp_path / arch)
    engine.fit(fast_config(data_dir, workdir, arch=arch, epochs=1, **ZOO[arch]))
    predictor = engine.load(workdir)
    predictor.export(str(tmp_path / "served"))
    # 2e-6: through 8 to 22 layers the order of float32 sums differs more (measured largest
    # differences, logits within 1: VGG-11 1.07e-6, NiN 1.01e-6, AlexNet 2.8e-7).
    worst = check_served(predictor, str(tmp_path / "served"), tmp_path, rtol=2e-6)
    print(f"{arch}: largest difference {worst:.3g} of the outputs' scale")


@pytest.mark.slow
def test_the_metric_learning_and_distilled_students_export(data_dir, tmp_path):
    embedding = str(tmp_path / "triplet")
    engine.fit(fast_config(data_dir, embedding, loss="triplet_margin", epochs=1))
    predictor = engine.load(embedding)
    predictor.export(str(tmp_path / "emb"))
    check_served(predictor, str(tmp_path / "emb"), tmp_path)
    teacher, student = str(tmp_path / "teacher"), str(tmp_path / "student")
    engine.fit(fast_config(data_dir, teacher, epochs=1, hidden_sizes=(64,)))
    engine.fit(fast_config(data_dir, student, epochs=1, teacher=teacher))
    predictor = engine.load(student)
    predictor.export(str(tmp_path / "student_served"))
    check_served(predictor, str(tmp_path / "student_served"), tmp_path)


@pytest.mark.slow
def test_the_gan_is_refused_in_one_line(data_dir, tmp_path):
    workdir = str(tmp_path / "gan")
    gan = dict(program="gan", width=0.25, epochs=1, batch_size=32, test_fraction=0.8)
    engine.fit(Config(data_dir=data_dir, workdir=workdir, progress=False, parallel="none", **gan))
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), "--mode=export", f"--workdir={workdir}",
         f"--data_dir={data_dir}", f"--output={tmp_path / 'served'}"],
        capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "the gan program has no inference function" in done.stderr
    assert not (tmp_path / "served").exists()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "lenet", "resnet"])
def test_onnx_with_onnxruntime_equals_predictor(arch, data_dir, tmp_path):
    pytest.importorskip("jax2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    workdir = str(tmp_path / arch)
    engine.fit(fast_config(data_dir, workdir, arch=arch, epochs=1, **ZOO[arch]))
    predictor = engine.load(workdir)
    artifact = predictor.export(str(tmp_path / "onnx"), format="onnx")
    with open(tmp_path / "onnx" / "export.json", encoding="utf-8") as f:
        names = sorted(json.load(f)["outputs"])
    session = onnxruntime.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    inputs = predictor.examples("test")[0][:100].astype(np.float32)
    for n in BATCHES:
        got = dict(zip(names, session.run(names, {"inputs": inputs[:n]}), strict=True))
        expected = predictor.infer(inputs[:n])
        np.testing.assert_allclose(got["outputs"], expected["outputs"], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(got["prediction"], expected["prediction"])
