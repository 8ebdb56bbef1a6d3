"""CSV tables: numeric and one-hot features, task rule, missing values, one-line errors."""

import csv

import numpy as np
import pytest

from engine.data import table
from engine.data.source import CLASSIFICATION, REGRESSION


def _write(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_linear_regression_table_is_read_exactly(tmp_path):
    # y = 3 a - 2 b + 0.5 c + 1 (no noise): the loaded arrays must be the generated ones, in
    # file order, and an exact least-squares fit on them must recover the coefficients.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).round(6)
    y = x @ np.array([3.0, -2.0, 0.5]) + 1.0
    path = _write(tmp_path / "linear.csv", ["a", "b", "c", "y"], np.column_stack([x, y]))
    ds = table.load(path, target="y")
    assert ds.info.task == REGRESSION and ds.info.target_dim == 1
    assert ds.info.feature_names == ("a", "b", "c")
    assert ds.info.input_shape == (3,) and ds.info.time_ordered
    assert ds.test is None
    inputs, targets = ds.train.inputs, ds.train.targets
    assert inputs.dtype == np.float32 and targets.shape == (200, 1)
    np.testing.assert_allclose(inputs, x, rtol=1e-6)
    np.testing.assert_allclose(targets[:, 0], y, rtol=1e-6)
    design = np.column_stack([inputs, np.ones(200)]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, targets[:, 0].astype(np.float64), rcond=None)
    np.testing.assert_allclose(coef, [3.0, -2.0, 0.5, 1.0], atol=1e-4)


def test_categorical_features_are_one_hot_and_text_target_is_classification(tmp_path):
    rows = [
        ["1.5", "red", "yes"],
        ["2.5", "blue", "no"],
        ["3.5", "green", "yes"],
        ["4.5", "red", "no"],
    ]
    path = _write(tmp_path / "cat.csv", ["size", "colour", "bought"], rows, delimiter=";")
    ds = table.load(path, target="bought")
    assert ds.info.task == CLASSIFICATION
    assert ds.info.class_names == ("no", "yes")  # sorted
    np.testing.assert_array_equal(ds.train.targets, [1, 0, 1, 0])
    assert ds.info.feature_names == ("size", "colour=blue", "colour=green", "colour=red")
    expected = [[1.5, 0, 0, 1], [2.5, 1, 0, 0], [3.5, 0, 1, 0], [4.5, 0, 0, 1]]
    np.testing.assert_array_equal(ds.train.inputs, np.asarray(expected, np.float32))


@pytest.mark.parametrize(
    ("values", "task", "names"),
    [
        ([3, 1, 2, 1, 3, 2] * 4, CLASSIFICATION, ("1", "2", "3")),  # few integers
        (list(range(24)), REGRESSION, ()),  # 24 distinct integers > 20
        ([0.5, 1.0, 1.5, 2.0] * 6, REGRESSION, ()),  # not integers
        ([5, 7, 9, 11], REGRESSION, ()),  # integers that do not repeat (4 values, 4 rows)
    ],
)
def test_task_rule_for_numeric_targets(tmp_path, values, task, names):
    path = _write(tmp_path / "t.csv", ["x", "t"], [[i, v] for i, v in enumerate(values)])
    ds = table.load(path, target="t")
    assert ds.info.task == task
    assert ds.info.class_names == names
    if task == CLASSIFICATION:
        assert ds.info.num_classes == len(names)
        np.testing.assert_array_equal(ds.train.targets, np.asarray(values) - 1)
        assert ds.train.targets.dtype == np.int32


def test_task_override(tmp_path):
    path = _write(tmp_path / "t.csv", ["x", "t"], [[i, i % 3] for i in range(9)])
    ds = table.load(path, target="t", task=REGRESSION)
    assert ds.info.task == REGRESSION and ds.train.targets.shape == (9, 1)


def test_missing_values_are_warned_imputed_and_counted(tmp_path):
    rows = [
        ["1", "a", "10"],
        ["", "b", "20"],
        ["3", "NA", "30"],
        ["NaN", "a", ""],
        ["5", "?", "50"],
    ]
    path = _write(tmp_path / "m.csv", ["num", "cat", "y"], rows)
    with pytest.warns(UserWarning) as record:
        ds = table.load(path, target="y")
    messages = " | ".join(str(w.message) for w in record)
    # Row 4 has no target: dropped first. Then num misses 1 value (row 2), cat misses 2.
    assert "dropped 1 of 5 rows" in messages
    assert "num: 1 (mean)" in messages and "cat: 2 (most frequent)" in messages
    assert ds.train.inputs.shape == (4, 3)
    # Mean of num over the kept rows' values 1, 3, 5 is 3; the mode of cat over a, b is a.
    np.testing.assert_array_equal(ds.train.inputs[:, 0], [1, 3, 3, 5])
    assert ds.info.feature_names == ("num", "cat=a", "cat=b")
    np.testing.assert_array_equal(ds.train.inputs[:, 1], [1, 0, 1, 1])
    np.testing.assert_array_equal(ds.train.targets[:, 0], [10, 20, 30, 50])


def test_id_like_text_column_is_dropped_with_a_warning(tmp_path):
    rows = [[f"2024-01-{d:02d}", d, d * 2.5] for d in range(1, 61)]  # 60 distinct dates
    path = _write(tmp_path / "d.csv", ["date", "x", "y"], rows)
    with pytest.warns(UserWarning, match="date"):
        ds = table.load(path, target="y")
    assert ds.info.feature_names == ("x",)


def test_missing_target_column_is_one_line_listing_the_columns(tmp_path):
    path = _write(tmp_path / "p.csv", ["rooms", "area", "price"], [[1, 2, 3]])
    with pytest.raises(ValueError) as err:
        table.load(path, target="prize")
    message = str(err.value)
    assert "\n" not in message and "'prize'" in message
    assert "rooms, area, price" in message


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        table.load(str(tmp_path / "nope.csv"), target="y")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,y\n1,2\n3\n")
    with pytest.raises(ValueError, match="row 3 has 1 cells"):
        table.load(str(ragged), target="y")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\xe9,y\n1,2\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        table.load(str(latin), target="y")


def test_utf8_names_and_bom(tmp_path):
    path = tmp_path / "zh.csv"
    path.write_text("\ufeff面积,城市,价格\n50,北京,1.5\n80,上海,2.5\n", encoding="utf-8")
    ds = table.load(str(path), target="价格", task=REGRESSION)
    assert ds.info.feature_names == ("面积", "城市=上海", "城市=北京")
    np.testing.assert_array_equal(ds.train.targets[:, 0], [1.5, 2.5])
