"""Batches of a split, in-memory or streamed through grain, in an order fixed by (seed, epoch).

One plan serves both paths. Epoch `e` visits the rows in `order(e)`: a permutation drawn from
`np.random.default_rng([seed, e])` when shuffling, else file order. Global batch `s` is
`order(e)[s * B:(s + 1) * B]`, padded to `B` rows with mask False after the last row; process `p`
of `P` yields rows `[p * B / P, (p + 1) * B / P)` of it. So concatenating the processes' batches
gives exactly the single-process batch, the position in the data is a pure function of
(seed, epoch, step), and resuming at `start_step` reads nothing that is skipped.

- In memory (`streaming=False`): each batch is gathered by index from the source in the calling
  thread (cheap for arrays in memory).
- Streaming (`streaming=True`): a `grain.MapDataset` over this process's step numbers maps each
  step to its batch (one `Source.get` of its rows: random access into the record files), read
  by `num_workers` spawned worker processes (`mp_prefetch`, each holding up to `prefetch`
  batches; grain interleaves their outputs back in step order) and within each by two reader
  threads. Batches come back pickled (not in shared memory) as ordinary NumPy arrays.
  Workers are started per epoch (about 1-3 s of start-up here) and stopped when the epoch's
  last batch is handed out, when the stream is closed or garbage-collected (leaving a `for`
  loop early), or at interpreter exit. Workers are started with the `spawn` method: the source
  must be picklable (`ArraySource`, `Subset`, `RecordSource` over a TFDS data source with a
  module-level decode such as `FeatureDecoder`), and a script that streams needs an
  `if __name__ == "__main__":` guard. Known grain 0.2.18 race: closing a stream mid-epoch while
  grain is still starting or stopping a worker can print an error at exit (harmless: the
  daemon workers are stopped anyway).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import weakref
from collections.abc import Iterator

import numpy as np
from absl import flags

from engine.data.source import Source

Batch = dict[str, np.ndarray]
_NO_SHARED_MEMORY = 2**62  # grain's min_shm_size: arrays smaller than this are pickled

# Streams (generators over grain iterators) not yet finished. Closed at exit, while the modules
# grain's cleanup needs still exist; otherwise an epoch abandoned mid-way is torn down during
# interpreter shutdown, with errors printed from half-destroyed modules.
_OPEN_STREAMS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_streams() -> None:
    for stream in list(_OPEN_STREAMS):
        with contextlib.suppress(ValueError):  # a generator running in another thread
            stream.close()


@dataclasses.dataclass(frozen=True)
class ClassBatches:
    """Batches of P classes x K examples each (FaceNet; "PK batches" of Hermans et al. 2017).

    A loss that mines its triplets inside the batch needs every batch to hold
    several examples of each of several classes; a uniform shuffle of 10 digit classes in 64
    rows does too, but not 1,000 classes. Each batch draws P distinct classes, then the next K
    rows of each class's own shuffled queue (refilled with a new permutation when it runs out,
    so a class with fewer than K rows repeats rows within a batch). An epoch is N // (P K)
    such batches: about one pass over the data, every batch full.

    Attributes:
      labels: (N,) the split's class of each row.
      classes_per_batch: P.
      examples_per_class: K.
    """

    labels: np.ndarray = dataclasses.field(compare=False)
    classes_per_batch: int
    examples_per_class: int

    @property
    def rows(self) -> int:
        """P x K: the rows of one batch."""
        return self.classes_per_batch * self.examples_per_class

    def order(self, rng: np.random.Generator, steps: int) -> np.ndarray:
        """`steps` batches of rows, concatenated: (steps * P * K,) int64."""
        classes = np.unique(self.labels)
        pools = [np.flatnonzero(self.labels == c) for c in classes]
        queues = [rng.permutation(pool) for pool in pools]
        k = self.examples_per_class
        rows = []
        for _ in range(steps):
            for c in rng.choice(len(classes), self.classes_per_batch, replace=False):
                while len(queues[c]) < k:
                    queues[c] = np.concatenate([queues[c], rng.permutation(pools[c])])
                rows.append(queues[c][:k])
                queues[c] = queues[c][k:]
        return np.concatenate(rows).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which rows each process reads at each step: a pure function of (seed, epoch, step)."""

    num_examples: int
    batch_size: int
    num_processes: int
    process_index: int
    shuffle: bool
    seed: int
    class_batches: ClassBatches | None = None  # training batches of P classes x K rows

    @property
    def local_batch_size(self) -> int:
        """Rows per process and step."""
        return self.batch_size // self.num_processes

    @property
    def steps(self) -> int:
        """Batches per epoch, ceil(N / batch_size) (N // batch_size with class batches)."""
        if self.class_batches is not None:
            return max(1, self.num_examples // self.batch_size)
        return -(-self.num_examples // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's visiting order of all rows, `(num_examples,)` int64."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.class_batches is not None:
            return self.class_batches.order(rng, self.steps)
        if not self.shuffle:
            return np.arange(self.num_examples)
        return rng.permutation(self.num_examples)

    def local_indices(self, order: np.ndarray, step: int) -> np.ndarray:
        """This process's rows of global batch `step`, `(local_batch_size,)`, -1 = padding."""
        start = step * self.batch_size + self.process_index * self.local_batch_size
        rows = order[start : start + self.local_batch_size]
        return np.pad(rows, (0, self.local_batch_size - len(rows)), constant_values=-1)


def read_batch(source: Source, indices: np.ndarray, example: tuple[np.ndarray, np.ndarray]):
    """The batch of rows `indices` (-1 = padding: zeros, mask False).

    Args:
      source: where rows are read from.
      indices: `(b,)` row numbers, -1 for padding rows.
      example: `(inputs, targets)` of one row with a leading axis of 1, giving padding's shape
        and dtype without reading anything.

    Returns:
      {"inputs": (b, ...), "targets": (b,) or (b, d), "mask": (b,) bool}.
    """
    mask = indices >= 0
    if mask.all():
        inputs, targets = source.get(indices)
    else:
        inputs = np.zeros((len(indices), *example[0].shape[1:]), example[0].dtype)
        targets = np.zeros((len(indices), *example[1].shape[1:]), example[1].dtype)
        if mask.any():
            inputs[mask], targets[mask] = source.get(indices[mask])
    return {"inputs": np.asarray(inputs), "targets": np.asarray(targets), "mask": mask}


@dataclasses.dataclass
class _StepToBatch:
    """grain map: step number -> this process's batch (runs inside grain's worker processes)."""

    plan: Plan
    source: Source
    example: tuple[np.ndarray, np.ndarray]
    epoch: int

    def __post_init__(self):
        self._order = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_order"] = None  # each worker draws the permutation itself: cheaper than pickling
        return state

    def __call__(self, step: int) -> Batch:
        if self._order is None:
            self._order = self.plan.order(self.epoch)
        return read_batch(self.source, self.plan.local_indices(self._order, step), self.example)


class Loader:
    """Per-epoch batches of one split for one process; see the module docstring for the order.

    `len(loader)` is the number of batches per epoch (ceil(N / batch_size)); `num_examples` is N.
    """

    def __init__(
        self,
        source: Source,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        streaming: bool = False,
        num_processes: int = 1,
        process_index: int = 0,
        num_workers: int = 2,
        prefetch: int = 2,
        class_batches: ClassBatches | None = None,
    ):
        n = len(source)
        if n == 0:
            raise ValueError("cannot make batches of an empty split")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_processes < 1 or not 0 <= process_index < num_processes:
            raise ValueError(
                f"process_index {process_index} must lie in [0, num_processes={num_processes})"
            )
        if batch_size % num_processes:
            raise ValueError(
                f"global batch_size {batch_size} must be divisible by the number of processes "
                f"{num_processes}"
            )
        if num_workers < 0 or prefetch < 1:
            raise ValueError(
                f"need num_workers >= 0 and prefetch >= 1, got {num_workers} and {prefetch}"
            )
        self.source = source
        if class_batches is not None:
            pk = class_batches.rows
            if pk != batch_size:
                raise ValueError(f"P x K = {pk} rows must equal the batch size {batch_size}")
            if class_batches.classes_per_batch > len(np.unique(class_batches.labels)):
                raise ValueError(
                    f"{class_batches.classes_per_batch} classes per batch, but the split has "
                    f"{len(np.unique(class_batches.labels))}"
                )
        self.plan = Plan(n, batch_size, num_processes, process_index, shuffle, seed, class_batches)
        self.streaming = streaming
        self.num_workers = num_workers
        self.prefetch = prefetch
        # One row tells the padding's shape and dtype (one read, at construction).
        self._example = source.get(np.array([0]))

    def __len__(self) -> int:
        return self.plan.steps

    @property
    def num_examples(self) -> int:
        """Rows in the split (N), padding not counted."""
        return self.plan.num_examples

    @property
    def batch_size(self) -> int:
        """Rows per batch this process yields (the global batch / number of processes)."""
        return self.plan.local_batch_size

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """This process's row numbers of batch `step` of `epoch` (-1 marks padding)."""
        return self.plan.local_indices(self.plan.order(epoch), step)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, from `start_step` on (earlier batches are not read).

        Yields:
          {"inputs": (b, ...), "targets": (b,) or (b, d), "mask": (b,) bool}, NumPy arrays,
          b = batch_size // num_processes.
        """
        if not 0 <= start_step <= len(self):
            raise ValueError(f"start_step {start_step} outside [0, {len(self)}] steps per epoch")
        if self.streaming:
            stream = self._stream(epoch, start_step)
            _OPEN_STREAMS.add(stream)
            return stream
        return self._gather(epoch, start_step)

    def _gather(self, epoch: int, start_step: int) -> Iterator[Batch]:
        order = self.plan.order(epoch)
        for step in range(start_step, len(self)):
            yield read_batch(self.source, self.plan.local_indices(order, step), self._example)

    def _stream(self, epoch: int, start_step: int) -> Iterator[Batch]:
        import grain

        if not flags.FLAGS.is_parsed():
            # grain's worker code reads its own absl flags; outside an absl app (tests, notebooks,
            # scripts) nobody parsed them, so use their defaults. run.py parses them first.
            flags.FLAGS.mark_as_parsed()

        dataset = grain.MapDataset.range(start_step, len(self)).map(
            _StepToBatch(self.plan, self.source, self._example, epoch)
        )
        # Two reader threads per process overlap file reads with decoding; the buffer counts
        # whole batches.
        stream = dataset.to_iter_dataset(
            grain.ReadOptions(num_threads=2, prefetch_buffer_size=self.prefetch)
        )
        if self.num_workers > 0:
            # Batches travel from the workers pickled, not in grain's shared memory: its blocks
            # are freed by an asynchronous deleter, still pending at exit (leak warnings, late
            # unlinks), and a batch the caller keeps (or a CPU device buffer aliasing it) could
            # outlive its block. Pickling 0.4 MB CIFAR batches measured no slower here.
            stream = grain.experimental.WithOptionsIterDataset(
                stream, grain.experimental.DatasetOptions(min_shm_size=_NO_SHARED_MEMORY)
            )
            stream = stream.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self.num_workers, per_worker_buffer_size=self.prefetch
                )
            )
        iterator = iter(stream)
        remaining = len(self) - start_step
        try:
            for batch in iterator:
                remaining -= 1
                if remaining == 0:
                    # Let grain reach its own end before the caller gets the last batch: its
                    # workers then stop themselves. A caller that stops at len(loader) without
                    # asking for more (zip, islice, a step counter) would otherwise close grain
                    # while its prefetch threads are stopping the same workers (a grain race
                    # that prints errors at exit).
                    for _ in iterator:
                        pass
                yield {key: np.asarray(value) for key, value in batch.items()}
        finally:
            # Stops the worker processes now, whether the epoch ended, the caller broke out of
            # the loop, or an exception unwound it (GC alone would do it only eventually).
            iterator.close()


def make_loader(
    source: Source,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    streaming: bool = False,
    num_processes: int = 1,
    process_index: int = 0,
    num_workers: int = 2,
    prefetch: int = 2,
    class_batches: ClassBatches | None = None,
) -> Loader:
    """A loader of `source` for one process (see `Loader` and the module docstring).

    Args:
      source: the split to batch.
      batch_size: the GLOBAL batch size (all processes together).
      shuffle: a new order every epoch (training) or file order (evaluation).
      seed: fixes the shuffled orders.
      streaming: read through grain worker processes instead of gathering in this thread.
      num_processes: processes (hosts) sharing each global batch.
      process_index: this process's position among them.
      num_workers: grain worker processes (streaming only; 0 reads in this process).
      prefetch: batches buffered per worker (streaming only).
      class_batches: draw each batch as P classes x K rows (`ClassBatches`) instead of a
        shuffle; P x K must be `batch_size`.

    >>> from engine.data.source import ArraySource
    >>> src = ArraySource(np.arange(5.0)[:, None], np.arange(5, dtype=np.int32))
    >>> loader = make_loader(src, batch_size=2, shuffle=False, seed=0)
    >>> len(loader), [b["mask"].tolist() for b in loader.epoch(0)]
    (3, [[True, True], [True, True], [True, False]])
    """
    return Loader(
        source,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        streaming=streaming,
        num_processes=num_processes,
        process_index=process_index,
        num_workers=num_workers,
        prefetch=prefetch,
        class_batches=class_batches,
    )
