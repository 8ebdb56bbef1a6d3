"""TFDS catalog datasets by name, through TFDS' real builders, writer and array_record reader.

No network: the catalog builders (`cifar10`, `mnist`) run their real preparation with only the
download-and-parse step (`_split_generators`) replaced by generated images in their own format,
through the engine's own prepare path. Every later load reads those files offline.
"""

import os
import pickle
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from catalog_fixtures import CIFAR10_NAMES, examples, prepare
from PIL import Image

from engine.data import catalog


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("catalog"))
    truth = {
        "cifar10": prepare("cifar10", data_dir, (32, 32, 3), {"train": 40, "test": 12}),
        "mnist": prepare("mnist", data_dir, (28, 28, 1), {"train": 30, "test": 10}),
        "cats_vs_dogs": prepare("cats_vs_dogs", data_dir, None, {"train": 12}),
    }
    return data_dir, truth


def _read_all(source):
    return source.get(np.arange(len(source)))


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to download or prepare fails the test: loads must read the files."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to prepare a dataset that is already prepared")

    monkeypatch.setattr(catalog, "_prepare", refuse)
    monkeypatch.setattr(catalog, "_online", lambda: False)


@pytest.mark.parametrize(
    ("name", "shape", "class_names"),
    [
        ("cifar10", (32, 32, 3), CIFAR10_NAMES),
        ("mnist", (28, 28, 1), tuple(str(d) for d in range(10))),
    ],
)
def test_prepared_catalog_dataset_is_read_offline(prepared, offline, name, shape, class_names):
    data_dir, truth = prepared
    truth = truth[name]
    ds = catalog.load(name, data_dir=data_dir)
    assert ds.info.task == "classification"
    assert ds.info.input_shape == shape
    assert ds.info.num_classes == 10 and ds.info.class_names == class_names
    assert ds.val is None
    for split, source in (("train", ds.train), ("test", ds.test)):
        assert len(source) == len(truth[split])
        inputs, targets = _read_all(source)
        assert inputs.dtype == np.uint8 and inputs.shape == (len(source), *shape)
        # Every example comes back bit-exact (PNG is lossless) with its own label; the order is
        # TFDS' shuffled write order, so match by content.
        assert {x.tobytes(): int(t) for x, t in zip(inputs, targets)} == truth[split]
        np.testing.assert_array_equal(source.targets, targets)
        assert source.targets.dtype == np.int32


def test_versioned_name_and_variable_size_images(prepared, offline):
    data_dir, truth = prepared
    ds = catalog.load("mnist:3.0.1", data_dir=data_dir)
    assert ds.info.name == "mnist:3.0.1" and len(ds.train) == len(truth["mnist"]["train"])
    # Fixed-size images keep their size whatever image_size says (the engine resizes on device).
    assert catalog.load("cifar10", data_dir=data_dir, image_size=16).info.input_shape == (
        32, 32, 3,
    )  # fmt: skip
    # Variable-size photos are fitted to one size; cats_vs_dogs has only a train split.
    for image_size, side in ((None, catalog.VARIABLE_SIZE_DEFAULT), (24, 24)):
        cats = catalog.load("cats_vs_dogs", data_dir=data_dir, image_size=image_size)
        assert cats.info.input_shape == (side, side, 3) and cats.test is None
        inputs, targets = cats.train.get(np.arange(len(cats.train)))
        assert inputs.shape == (12, side, side, 3) and inputs.dtype == np.uint8
        # Each decoded photo is the generated one fitted with Pillow (shorter side, centre
        # crop), exactly: PNG storage is lossless. Same seed, same generated examples.
        originals = examples("cats_vs_dogs", 12, None, 0).values()
        expected = [
            (np.asarray(catalog.fit_image(Image.fromarray(e["image"]), (side, side))), e["label"])
            for e in originals
        ]
        got = sorted((x.tobytes(), int(t)) for x, t in zip(inputs, targets))
        assert got == sorted((x.tobytes(), t) for x, t in expected)


def test_labels_are_cached_beside_the_records(prepared, offline):
    data_dir, _ = prepared
    ds = catalog.load("cifar10", data_dir=data_dir)
    cache = os.path.join(data_dir, "cifar10", "3.0.2", "engine-labels-train.npy")
    np.testing.assert_array_equal(np.load(cache), ds.train.targets)
    # A cache of the right length is trusted (that is what makes ImageNet loads fast) ...
    np.save(cache, np.zeros(len(ds.train), np.int32))
    assert not catalog.load("cifar10", data_dir=data_dir).train.targets.any()
    # ... and one of the wrong length is rebuilt from the records.
    np.save(cache, np.zeros(3, np.int32))
    again = catalog.load("cifar10", data_dir=data_dir)
    np.testing.assert_array_equal(again.train.targets, _read_all(again.train)[1])
    np.testing.assert_array_equal(np.load(cache), again.train.targets)


def test_sources_pickle_for_worker_processes(prepared, offline):
    data_dir, _ = prepared
    source = catalog.load("mnist", data_dir=data_dir).train
    copy = pickle.loads(pickle.dumps(source))
    for a, b in zip(source.get(np.arange(5)), copy.get(np.arange(5))):
        np.testing.assert_array_equal(a, b)


def test_unknown_name_is_one_line_listing_the_other_forms(tmp_path):
    with pytest.raises(ValueError) as err:
        catalog.load("no_such_dataset", data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    for expected in ("digits", "iris", "folder:PATH", "csv:PATH", "no_such_dataset"):
        assert expected in message


def test_missing_data_without_network_is_one_line_naming_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "_online", lambda: False)
    with pytest.raises(ValueError) as err:
        catalog.load("cifar10", data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "cifar10", "3.0.2") in message
    assert "tfds build cifar10" in message and "no network" in message


def test_failed_download_is_one_line_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "_online", lambda: True)

    def unreachable(self, dl_manager):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'\nsecond line")

    monkeypatch.setattr(tfds.builder_cls("cifar10"), "_split_generators", unreachable)
    with pytest.raises(ValueError) as err:
        catalog.load("cifar10", data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert "ConnectionError: Failed to resolve" in message and str(tmp_path) in message


def test_bad_version_and_non_image_datasets_are_one_line(tmp_path):
    with pytest.raises(ValueError) as err:
        catalog.load("mnist:9.9.9", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and "9.9.9" in str(err.value)
    with pytest.raises(ValueError) as err:
        catalog.load("imdb_reviews", data_dir=str(tmp_path))  # text, no Image feature
    assert "\n" not in str(err.value) and "image classification" in str(err.value)


def test_tfrecord_only_data_is_one_line_asking_for_array_record(prepared, offline, tmp_path):
    # The same prepared mnist, but its info says TFRecord (TFDS' default with TensorFlow),
    # which has no random access.
    data_dir, _ = prepared
    shutil.copytree(os.path.join(data_dir, "mnist"), tmp_path / "mnist")
    info = tmp_path / "mnist" / "3.0.1" / "dataset_info.json"
    info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
    with pytest.raises(ValueError) as err:
        catalog.load("mnist", data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "file_format='array_record'" in message
