"""Train/validation/test splits: sizes, stratification, seeds, time order, own splits, k-fold."""

import numpy as np
import pytest

from engine.data import splits as splits_lib
from engine.data.source import (
    CLASSIFICATION,
    REGRESSION,
    ArraySource,
    Dataset,
    DatasetInfo,
    Subset,
)


def _dataset(labels, task=CLASSIFICATION, test=None, val=None):
    n = len(labels)
    inputs = np.arange(n, dtype=np.float32)[:, None]  # input = row number: easy to trace rows
    info = DatasetInfo("t", task, (1,), num_classes=int(np.max(labels)) + 1)
    if task == REGRESSION:
        labels = np.asarray(labels, np.float32)[:, None]
        info = DatasetInfo("t", task, (1,), target_dim=1)
    return Dataset(info, ArraySource(inputs, np.asarray(labels)), test=test, val=val)


def _rows(source):
    return source.get(np.arange(len(source)))[0][:, 0].astype(int)


# Imbalanced labels: 600 / 300 / 97 / 3 rows.
LABELS = np.repeat(np.arange(4), [600, 300, 97, 3]).astype(np.int32)


def test_sizes_follow_the_fractions():
    s = splits_lib.split(_dataset(LABELS), test_fraction=0.3, val_fraction=0.1, seed=0)
    # Formula: test = round(1000 * 0.3) = 300; val = round(700 * 0.1) = 70; train = 630.
    assert (len(s.train), len(s.val), len(s.test)) == (630, 70, 300)


def test_splits_are_disjoint_and_cover_every_row():
    s = splits_lib.split(_dataset(LABELS), seed=3)
    rows = np.concatenate([_rows(s.train), _rows(s.val), _rows(s.test)])
    assert sorted(rows.tolist()) == list(range(len(LABELS)))


def test_stratified_class_proportions_within_one_example():
    s = splits_lib.split(_dataset(LABELS), test_fraction=0.3, val_fraction=0.1, seed=1)
    counts = np.bincount(LABELS)
    # Expected per class: its share of each split's size (test 300 of 1000, val 70 of 700).
    test_counts = np.bincount(s.test.targets, minlength=4)
    assert np.all(np.abs(test_counts - counts * 300 / 1000) < 1)
    rest = counts - test_counts
    val_counts = np.bincount(s.val.targets, minlength=4)
    assert np.all(np.abs(val_counts - rest * 70 / 700) < 1)
    assert test_counts[3] == 1  # 3 * 0.3 = 0.9: the rare class is still represented


def test_same_seed_same_split_other_seed_other_split():
    ds = _dataset(LABELS)
    a, b = splits_lib.split(ds, seed=7), splits_lib.split(ds, seed=7)
    c = splits_lib.split(ds, seed=8)
    assert np.array_equal(a.test.indices, b.test.indices)
    assert np.array_equal(a.val.indices, b.val.indices)
    assert not np.array_equal(a.test.indices, c.test.indices)


def test_regression_split_is_random_not_stratified():
    ds = _dataset(np.linspace(0, 1, 200), task=REGRESSION)
    s = splits_lib.split(ds, test_fraction=0.25, val_fraction=0.2, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (120, 30, 50)
    assert s.train.targets.shape == (120, 1)


def test_time_split_holds_out_the_last_rows():
    ds = _dataset(LABELS)
    s = splits_lib.split(ds, test_fraction=0.2, val_fraction=0.25, method="time")
    train, val, test = _rows(s.train), _rows(s.val), _rows(s.test)
    assert train.max() < val.min() and val.max() < test.min()  # every test row after training
    np.testing.assert_array_equal(test, np.arange(800, 1000))  # the last 20% in file order
    np.testing.assert_array_equal(val, np.arange(600, 800))  # the 25% of the rest before it
    np.testing.assert_array_equal(train, np.arange(600))


def test_own_test_and_val_splits_are_used():
    own_test = ArraySource(np.zeros((5, 1), np.float32), np.zeros(5, np.int32))
    own_val = ArraySource(np.zeros((4, 1), np.float32), np.zeros(4, np.int32))
    s = splits_lib.split(_dataset(LABELS, test=own_test, val=own_val))
    assert s.test is own_test and s.val is own_val and len(s.train) == 1000
    s = splits_lib.split(_dataset(LABELS, test=own_test), val_fraction=0.1)
    assert s.test is own_test and (len(s.train), len(s.val)) == (900, 100)


def test_nested_subsets_read_the_right_rows():
    s = splits_lib.split(_dataset(LABELS), seed=0)
    assert isinstance(s.val, Subset)
    x, y = s.val.get(np.array([0, 1]))
    np.testing.assert_array_equal(y, LABELS[x[:, 0].astype(int)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_fraction": 0.0}, "test_fraction must be between 0 and 1"),
        ({"test_fraction": 1.0}, "test_fraction must be between 0 and 1"),
        ({"val_fraction": -0.1}, "val_fraction must be between 0 and 1"),
        ({"test_fraction": 0.001}, "empty split"),
        ({"method": "sorted"}, "unknown split method 'sorted'; valid: random, time"),
    ],
)
def test_bad_arguments_give_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        splits_lib.split(_dataset(LABELS[::10]), **kwargs)
    assert "\n" not in str(err.value)


def test_kfold_stratified_covers_each_row_once():
    folds = splits_lib.kfold(LABELS, 5, seed=0)
    val_rows = np.concatenate([val for _, val in folds])
    assert sorted(val_rows.tolist()) == list(range(len(LABELS)))
    for train, val in folds:
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(LABELS)
        # Each class's count in a fold is within one of count / k (stratified, as sklearn's
        # StratifiedKFold promises).
        assert np.all(np.abs(np.bincount(LABELS[val], minlength=4) - np.bincount(LABELS) / 5) < 1)
    assert {len(val) for _, val in folds} == {200}
    with pytest.raises(ValueError, match="2 <= k"):
        splits_lib.kfold(LABELS, 1)
