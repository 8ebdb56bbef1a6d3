"""Embedded scikit-learn datasets as TFDS builders, and the dataset-name dispatch."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn import datasets as skd

from engine import data
from engine.data import embedded

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Reference: scikit-learn's own loaders (the data the builders must reproduce row for row).
SKLEARN = {
    "digits": skd.load_digits,
    "breast_cancer": skd.load_breast_cancer,
    "diabetes": skd.load_diabetes,
    "iris": skd.load_iris,
    "wine": skd.load_wine,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize("name", embedded.NAMES)
def test_embedded_matches_sklearn(name, data_dir):
    ds = data.load(name, data.Options(data_dir))
    ref = SKLEARN[name]()
    assert ds.test is None and ds.val is None
    assert ds.train.inputs.dtype == np.float32
    if name == "digits":
        np.testing.assert_array_equal(ds.train.inputs[..., 0], ref.images)
        assert ds.info.input_shape == (8, 8, 1) and ds.info.is_image
        assert ds.train.inputs.min() == 0 and ds.train.inputs.max() == 16
        assert ds.info.feature_names == ()
    else:
        np.testing.assert_allclose(ds.train.inputs, ref.data.astype(np.float32))
        assert ds.info.feature_names == tuple(ref.feature_names)
        assert ds.info.input_shape == (ref.data.shape[1],)
    if name == "diabetes":
        assert ds.info.task == data.REGRESSION and ds.info.target_dim == 1
        assert ds.train.targets.shape == (442, 1) and ds.train.targets.dtype == np.float32
        np.testing.assert_array_equal(ds.train.targets[:, 0], ref.target.astype(np.float32))
        assert ds.train.targets.max() > 300  # raw disease progression (25..346), not rescaled
    else:
        assert ds.info.task == data.CLASSIFICATION
        assert ds.train.targets.dtype == np.int32
        np.testing.assert_array_equal(ds.train.targets, ref.target)
        assert ds.info.class_names == tuple(str(c) for c in ref.target_names)
        assert ds.info.num_classes == len(ref.target_names)


def test_prepared_once_then_reused(tmp_path, monkeypatch):
    first = data.load("iris", data.Options(str(tmp_path)))
    record_file = (
        tmp_path / "sklearn_iris" / "1.0.0" / "sklearn_iris-train.array_record-00000-of-00001"
    )
    mtime = record_file.stat().st_mtime_ns

    def no_rebuild(self, *args, **kwargs):
        raise AssertionError("the prepared dataset was generated again")

    monkeypatch.setattr(embedded._SklearnBuilder, "_generate_examples", no_rebuild)
    monkeypatch.setattr(embedded, "_sklearn_bunch", no_rebuild)  # nor is scikit-learn read
    second = data.load("iris", data.Options(str(tmp_path)))
    assert record_file.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.train.inputs, second.train.inputs)
    assert first.info == second.info


def test_concurrent_preparation_is_safe(tmp_path):
    # Two processes preparing the same set into one directory at once (as the hosts of a
    # multi-host run do): both must succeed and see the same data.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from engine.data import embedded
        ds = embedded.load("wine", data_dir={str(tmp_path)!r})
        print(len(ds.train), float(ds.train.inputs.sum()))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] and outputs[0].startswith("178 ")
    assert not [p for p in (tmp_path / "sklearn_wine").iterdir() if "incomplete" in p.name]


def test_builder_names_do_not_shadow_the_tfds_catalog():
    import tensorflow_datasets as tfds

    # Names listable without TensorFlow, plus TFDS' own `iris` (tensorflow_datasets/structured/
    # iris.py, which needs TensorFlow to import): the reason for the prefix.
    catalog = set(tfds.list_builders(with_community_datasets=False))
    assert "mnist" in catalog
    catalog.add("iris")
    for name, cls in embedded.BUILDERS.items():
        assert cls.name == f"sklearn_{name}" and cls.name not in catalog


def test_dataset_names_and_default():
    assert data.dataset_names() == ("digits", "breast_cancer", "diabetes", "iris", "wine")
    assert data.DEFAULT == "digits"


def test_default_data_dir_follows_tfds(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/somewhere/tfds")
    assert data.default_data_dir() == "/somewhere/tfds"
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_dispatch_by_prefix(monkeypatch):
    calls = []
    from engine.data import catalog, folder, table

    monkeypatch.setattr(folder, "load", lambda path, **kw: calls.append(("folder", path, kw)))
    monkeypatch.setattr(table, "load", lambda path, **kw: calls.append(("csv", path, kw)))
    monkeypatch.setattr(catalog, "load", lambda name, **kw: calls.append(("tfds", name, kw)))
    data.load("folder:/photos/猫", data.Options("/d", image_size=32, skip_bad_files=True))
    data.load("csv:prices.csv", data.Options("/d", target="price"))
    data.load("mnist:3.0.1", data.Options("/d"))
    assert calls == [
        ("folder", "/photos/猫", {"data_dir": "/d", "image_size": 32, "skip_bad_files": True}),
        ("csv", "prices.csv", {"target": "price", "data_dir": "/d"}),
        ("tfds", "mnist:3.0.1", {"data_dir": "/d", "image_size": None}),
    ]


@pytest.mark.parametrize("name", ["folder:", "csv:", ""])
def test_dispatch_rejects_missing_path(name):
    with pytest.raises(ValueError, match=r"path|name"):
        data.load(name, data.Options("/d"))
