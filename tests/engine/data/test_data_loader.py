"""Loaders: padding, masks, (seed, epoch) order, resume, process slices, grain streaming.

The streaming path is checked against the in-memory path on array_record files made here.
"""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from engine.data import make_loader, records
from engine.data.source import ArraySource, RecordSource

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
N = 103  # not a multiple of any batch size used here


def _source(n=N, regression=False):
    inputs = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 3), np.float32)
    if regression:
        return ArraySource(inputs, np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32))
    return ArraySource(inputs, (np.arange(n) % 7).astype(np.int32))


class CountingSource:
    """Wraps a source and records every row read."""

    def __init__(self, source):
        self.source, self.targets, self.read = source, source.targets, []

    def __len__(self):
        return len(self.source)

    def get(self, indices):
        self.read.extend(int(i) for i in indices)
        return self.source.get(indices)


def _rows(batch):
    return batch["inputs"][:, 0, 0, 0].astype(int)


def _epoch(loader, epoch, start_step=0):
    return list(loader.epoch(epoch, start_step))


def test_every_example_exactly_once_with_padding_masked():
    loader = make_loader(_source(), batch_size=16, shuffle=True, seed=0)
    assert len(loader) == 7 and loader.num_examples == N  # ceil(103 / 16) = 7
    batches = _epoch(loader, 0)
    assert len(batches) == 7
    assert {b["inputs"].shape for b in batches} == {(16, 4, 4, 3)}  # one shape, even the last
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.dtype == bool and mask.sum() == N and not mask[N:].any()
    rows = np.concatenate([_rows(b) for b in batches])[mask]
    assert sorted(rows.tolist()) == list(range(N))
    targets = np.concatenate([b["targets"] for b in batches])[mask]
    np.testing.assert_array_equal(targets, rows % 7)
    last = batches[-1]
    assert last["mask"].tolist() == [True] * 7 + [False] * 9
    assert not last["inputs"][7:].any() and last["targets"].dtype == np.int32


def test_regression_targets_keep_their_width():
    batch = next(
        make_loader(_source(regression=True), batch_size=8, shuffle=False, seed=0).epoch(0)
    )
    assert batch["targets"].shape == (8, 2) and batch["targets"].dtype == np.float32


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = make_loader(_source(), batch_size=16, shuffle=True, seed=5)
    b = make_loader(_source(), batch_size=16, shuffle=True, seed=5)
    first = [_rows(x) for x in _epoch(a, 3)]
    assert all(np.array_equal(x, _rows(y)) for x, y in zip(first, _epoch(b, 3)))
    assert all(np.array_equal(x, _rows(y)) for x, y in zip(first, _epoch(a, 3)))  # re-run
    assert not np.array_equal(first[0], _rows(_epoch(a, 4)[0]))  # next epoch: new order
    other_seed = make_loader(_source(), batch_size=16, shuffle=True, seed=6)
    assert not np.array_equal(first[0], _rows(_epoch(other_seed, 3)[0]))
    # The documented formula: np.random.default_rng([seed, epoch]).permutation(N).
    expected = np.random.default_rng([5, 3]).permutation(N)[:16]
    np.testing.assert_array_equal(first[0], expected)


def test_without_shuffle_file_order_every_epoch():
    loader = make_loader(_source(), batch_size=10, shuffle=False, seed=0)
    for epoch in (0, 1):
        rows = np.concatenate([_rows(b)[b["mask"]] for b in _epoch(loader, epoch)])
        np.testing.assert_array_equal(rows, np.arange(N))


def test_start_step_resumes_exactly_without_reading_skipped_rows():
    counting = CountingSource(_source())
    loader = make_loader(counting, batch_size=16, shuffle=True, seed=1)
    full = _epoch(loader, 2)
    counting.read.clear()
    resumed = _epoch(loader, 2, start_step=4)
    assert len(resumed) == 3
    for x, y in zip(full[4:], resumed):
        assert all(np.array_equal(x[k], y[k]) for k in x)
    skipped = np.concatenate([_rows(b)[b["mask"]] for b in full[:4]])
    assert not set(counting.read) & set(skipped.tolist())
    assert _epoch(loader, 2, start_step=len(loader)) == []


@pytest.mark.parametrize("num_processes", [2, 4])
def test_process_slices_concatenate_to_the_global_batch(num_processes):
    single = _epoch(make_loader(_source(), batch_size=16, shuffle=True, seed=3), 1)
    parts = [
        _epoch(
            make_loader(
                _source(),
                batch_size=16,
                shuffle=True,
                seed=3,
                num_processes=num_processes,
                process_index=p,
            ),
            1,
        )
        for p in range(num_processes)
    ]
    for step, whole in enumerate(single):
        assert all(len(part[step]["mask"]) == 16 // num_processes for part in parts)
        for key in whole:
            joined = np.concatenate([part[step][key] for part in parts])
            np.testing.assert_array_equal(joined, whole[key])


def test_bad_arguments_give_one_line_errors():
    with pytest.raises(ValueError, match=r"batch_size 10 must be divisible by .* processes 4"):
        make_loader(_source(), batch_size=10, shuffle=False, seed=0, num_processes=4)
    with pytest.raises(ValueError, match="process_index 2 must lie in"):
        make_loader(
            _source(), batch_size=8, shuffle=False, seed=0, num_processes=2, process_index=2
        )
    with pytest.raises(ValueError, match="empty split"):
        make_loader(_source(n=0), batch_size=8, shuffle=False, seed=0)
    loader = make_loader(_source(), batch_size=16, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="start_step 8 outside"):
        loader.epoch(0, start_step=8)


# ---- Streaming through grain, from TFDS array_record files generated here. ----


@pytest.fixture(scope="module")
def record_files(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, N)
    builder = records.write_arrays(
        "loader_test_images",
        {"train": (images, labels)},
        data_dir=str(tmp_path_factory.mktemp("tfds")),
        num_classes=5,
        encoding="png",
    )
    return builder, ArraySource(images, labels.astype(np.int32))


def test_record_source_reads_back_the_arrays(record_files):
    builder, memory = record_files
    source = records.record_source(builder, "train")
    assert isinstance(source, RecordSource) and len(source) == N
    np.testing.assert_array_equal(source.targets, memory.targets)
    x, y = source.get(np.array([7, 2, 7]))
    np.testing.assert_array_equal(x, memory.inputs[[7, 2, 7]])
    np.testing.assert_array_equal(y, memory.targets[[7, 2, 7]])
    cache = os.path.join(os.fspath(builder.data_dir), "train.targets.npy")
    np.testing.assert_array_equal(np.load(cache), memory.targets)  # cached for the next run
    np.testing.assert_array_equal(records.record_source(builder, "train").targets, memory.targets)


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_equals_in_memory(record_files, num_workers):
    builder, memory = record_files
    source = records.record_source(builder, "train")
    kwargs = {"batch_size": 16, "shuffle": True, "seed": 4}
    in_memory = make_loader(memory, **kwargs)
    streamed = make_loader(source, streaming=True, num_workers=num_workers, **kwargs)
    assert len(streamed) == len(in_memory) == 7
    _assert_same_batches(_epoch(streamed, 1), _epoch(in_memory, 1))


def test_streaming_process_slice_resumed_equals_in_memory(record_files):
    # One of two processes, resuming at step 3: the same rows as the in-memory path. (Reading in
    # this process: which process reads a batch does not change the plan, tested above.)
    builder, memory = record_files
    kwargs = {"batch_size": 16, "shuffle": True, "seed": 4, "num_processes": 2, "process_index": 1}
    streamed = make_loader(
        records.record_source(builder, "train"), streaming=True, num_workers=0, **kwargs
    )
    _assert_same_batches(_epoch(streamed, 2, 3), _epoch(make_loader(memory, **kwargs), 2, 3))


def test_abandoned_stream_stops_its_workers(record_files):
    builder, _ = record_files
    loader = make_loader(
        records.record_source(builder, "train"),
        batch_size=8,
        shuffle=True,
        seed=0,
        streaming=True,
        num_workers=2,
    )
    stream = loader.epoch(0)
    for _ in range(3):
        next(stream)
    assert len(multiprocessing.active_children()) == 2
    stream.close()  # what leaving a for loop early does (also on garbage collection)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("taken", [3, 16])
def test_process_exits_promptly_with_an_unfinished_stream(tmp_path, taken):
    # 3 of 16 batches: abandoned mid-epoch. 16 of 16: every batch taken, but the generator never
    # asked for more (as zip or a step counter leave it), so it is still open at exit.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import numpy as np
        from engine.data import make_loader
        from engine.data.source import ArraySource

        if __name__ == "__main__":
            src = ArraySource(np.zeros((64, 2, 2, 1), np.uint8), np.zeros(64, np.int32))
            stream = make_loader(
                src, batch_size=4, shuffle=True, seed=0, streaming=True, num_workers=2
            ).epoch(0)
            for _ in range({taken}):
                next(stream)
            print("leaving with", 16 - {taken}, "batches unread")
        """
    )
    path = tmp_path / "exit_check.py"
    path.write_text(script)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"leaving with {16 - taken} batches unread" in done.stdout
    assert time.perf_counter() - start < 20  # grain waits 25 s for a worker that hangs
    assert "leaked shared_memory" not in done.stderr
    if taken == 16:
        assert "Traceback" not in done.stderr, done.stderr
