"""Image folders: classes and counts, exact pixels, sizes and channels, reuse, bad files."""

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

from engine.data import folder
from engine.data.source import ArraySource, RecordSource

sys.path.insert(0, os.path.dirname(__file__))
from folder_fixtures import colourise, digit_pixels, make_digits_folder


def _all(source):
    return source.get(np.arange(len(source)))


def _as_multiset(inputs, targets):
    return sorted((x.tobytes(), int(t)) for x, t in zip(inputs, targets))


@pytest.mark.parametrize("colour", [False, True])
def test_digits_folder_with_chinese_names_round_trips_exactly(tmp_path, colour, capsys):
    made = make_digits_folder(tmp_path / "digits", colour=colour, chinese=True)
    ds = folder.load(made.root, data_dir=str(tmp_path / "data"))
    channels = 3 if colour else 1
    assert ds.info.task == "classification" and ds.info.input_shape == (8, 8, channels)
    assert ds.info.class_names == tuple(f"类别_{d}" for d in range(10))
    assert ds.info.num_classes == 10 and ds.test is None and ds.val is None
    # Counts per class: scikit-learn's digits has 1797 images (178, 182, 177, ... per digit).
    assert len(ds.train) == 1797
    np.testing.assert_array_equal(np.bincount(ds.train.targets, minlength=10), made.counts)
    # Every image comes back bit-exact with its class (8x8 is kept, PNG is lossless).
    inputs, targets = _all(ds.train)
    assert inputs.dtype == np.uint8
    expected = [(image, label) for image, label in made.examples.values()]
    assert _as_multiset(inputs, targets) == _as_multiset(*zip(*expected))
    printed = capsys.readouterr().out
    assert "类别_3" in printed and str(made.counts[3]) in printed and "1797" in printed


def test_prepared_once_reused_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    made = make_digits_folder(tmp_path / "d", colour=False, chinese=False, n_per_class=5)
    data_dir = str(tmp_path / "data")
    calls = []
    prepare = folder._prepare
    monkeypatch.setattr(folder, "_prepare", lambda *a, **k: calls.append(1) or prepare(*a, **k))
    first = folder.load(made.root, data_dir=data_dir)
    second = folder.load(made.root, data_dir=data_dir)
    assert len(calls) == 1  # the unchanged folder is read back, not prepared again
    assert _as_multiset(*_all(first.train)) == _as_multiset(*_all(second.train))
    prepared = os.listdir(os.path.join(data_dir, folder.BUILDER_NAME))
    # A new image makes a new fingerprint: prepared again, and the stale copy removed.
    Image.fromarray(digit_pixels(np.full((8, 8), 16))).save(
        os.path.join(made.root, "class_3", "extra.png")
    )
    third = folder.load(made.root, data_dir=data_dir)
    assert len(calls) == 2 and len(third.train) == 51
    assert np.bincount(third.train.targets)[3] == 6
    now = {n for n in os.listdir(os.path.join(data_dir, folder.BUILDER_NAME)) if "." not in n}
    assert len(now) == 1 and not now & set(prepared)


def _corrupt_files(root):
    garbage = os.path.join(root, "class_1", "坏图.png")
    with open(garbage, "wb") as handle:
        handle.write(b"this is not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, format="PNG")
    truncated = os.path.join(root, "class_2", "truncated.png")
    with open(truncated, "wb") as handle:
        handle.write(buffer.getvalue()[:-30])  # the header reads; the pixel data is cut short
    return garbage, truncated


@pytest.mark.parametrize("which", [0, 1])
def test_corrupt_image_stops_with_its_path(tmp_path, which):
    made = make_digits_folder(tmp_path / "d", colour=False, chinese=False, n_per_class=3)
    bad = _corrupt_files(made.root)
    os.remove(bad[1 - which])  # one bad file at a time: header failure, then pixel failure
    with pytest.raises(ValueError) as err:
        folder.load(made.root, data_dir=str(tmp_path / "data"))
    message = str(err.value)
    assert "\n" not in message and bad[which] in message and "--skip_bad_files" in message
    base = tmp_path / "data" / folder.BUILDER_NAME
    assert not [p for p in base.iterdir() if p.is_dir()]  # nothing half-prepared is left


def test_skip_bad_files_counts_them(tmp_path):
    made = make_digits_folder(tmp_path / "d", colour=False, chinese=False, n_per_class=3)
    _corrupt_files(made.root)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        ds = folder.load(made.root, data_dir=str(tmp_path / "data"), skip_bad_files=True)
    assert len(ds.train) == 30


def test_split_folders_become_the_datasets_own_splits(tmp_path):
    root = tmp_path / "split"
    train = make_digits_folder(root / "train", colour=False, chinese=False, n_per_class=6)
    test = make_digits_folder(root / "test", colour=False, chinese=False, n_per_class=2, offset=6)
    val = make_digits_folder(root / "val", colour=False, chinese=False, n_per_class=1, offset=8)
    ds = folder.load(str(root), data_dir=str(tmp_path / "data"))
    assert (len(ds.train), len(ds.test), len(ds.val)) == (60, 20, 10)
    for source, made in ((ds.train, train), (ds.test, test), (ds.val, val)):
        expected = [(image, label) for image, label in made.examples.values()]
        assert _as_multiset(*_all(source)) == _as_multiset(*zip(*expected))
    text = folder.describe(ds)
    assert text.splitlines()[1].split() == ["class", "train", "val", "test"]
    assert text.splitlines()[-1].split() == ["total", "60", "10", "20"]


def test_split_class_missing_from_train_is_an_error(tmp_path):
    root = tmp_path / "split"
    make_digits_folder(root / "train", colour=False, chinese=False, n_per_class=1)
    os.makedirs(root / "test" / "class_99")
    with pytest.raises(ValueError, match="class_99"):
        folder.load(str(root), data_dir=str(tmp_path / "data"))


def test_mixed_sizes_and_channels_become_one_shape(tmp_path):
    root = tmp_path / "mixed"
    grey = digit_pixels(np.tile(np.arange(8) * 2, (8, 1)))  # a horizontal ramp
    os.makedirs(root / "a")
    os.makedirs(root / "b")
    Image.fromarray(grey).save(root / "a" / "small_grey.png")  # 8x8 grey
    Image.fromarray(colourise(grey)).resize((40, 20)).save(root / "b" / "wide.jpg", quality=95)
    Image.fromarray(colourise(grey)).resize((24, 24)).save(root / "b" / "square.png")
    ds = folder.load(str(root), data_dir=str(tmp_path / "data"))
    # Median of the shorter sides 8, 20, 24 is 20; one colour image makes 3 channels.
    assert ds.info.input_shape == (20, 20, 3)
    inputs, targets = _all(ds.train)
    assert inputs.shape == (3, 20, 20, 3)
    a = inputs[targets == 0][0]
    np.testing.assert_array_equal(a[..., 0], a[..., 1])  # the grey image repeated into RGB
    sized = folder.load(str(root), data_dir=str(tmp_path / "data"), image_size=12)
    assert sized.info.input_shape == (12, 12, 3)
    assert _all(sized.train)[0].shape == (3, 12, 12, 3)


def test_large_sets_stay_on_disk_with_the_same_examples(tmp_path, monkeypatch):
    made = make_digits_folder(tmp_path / "d", colour=True, chinese=True, n_per_class=4)
    in_memory = folder.load(made.root, data_dir=str(tmp_path / "data"))
    assert isinstance(in_memory.train, ArraySource)
    monkeypatch.setattr(folder, "IN_MEMORY_BYTES", 0)
    on_disk = folder.load(made.root, data_dir=str(tmp_path / "data"))
    assert isinstance(on_disk.train, RecordSource)
    for a, b in zip(_all(in_memory.train), _all(on_disk.train)):
        np.testing.assert_array_equal(a, b)  # same order too
    np.testing.assert_array_equal(in_memory.train.targets, on_disk.train.targets)


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        folder.load(str(tmp_path / "nope"), data_dir=str(tmp_path / "data"))
    os.makedirs(tmp_path / "flat")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(ValueError, match="no class sub-folders"):
        folder.load(str(tmp_path / "flat"), data_dir=str(tmp_path / "data"))
    os.makedirs(tmp_path / "empty" / "cats")
    with pytest.raises(ValueError, match=r"no \.jpg/\.jpeg/\.png images"):
        folder.load(str(tmp_path / "empty"), data_dir=str(tmp_path / "data"))


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4
    os.makedirs(tmp_path / "deep" / "a")
    # 16-bit value v * 257 is 8-bit value v (65535 / 255 = 257).
    Image.fromarray(pixels * 257).save(tmp_path / "deep" / "a" / "x.png")
    ds = folder.load(str(tmp_path / "deep"), data_dir=str(tmp_path / "data"))
    assert ds.info.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(_all(ds.train)[0][0, ..., 0], pixels)


def test_stray_files_are_ignored_with_a_warning(tmp_path):
    root = tmp_path / "split"
    make_digits_folder(root / "train", colour=False, chinese=False, n_per_class=2)
    (root / "README.txt").write_text("notes")  # beside train/
    (root / "train" / "class_0" / "notes.txt").write_text("notes")  # inside a class
    (root / "train" / "class_0" / ".DS_Store").write_text("hidden")  # hidden: not counted
    with pytest.warns(UserWarning, match="ignored 2 file"):
        ds = folder.load(str(root), data_dir=str(tmp_path / "data"))
    assert len(ds.train) == 20
