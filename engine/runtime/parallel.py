"""How the pure steps run on the hardware: plain jit, jit with shardings over a mesh, or pmap.

One `Plan` holds the three things that differ between modes: how the steps are wrapped, how the
state and batches are placed on devices, and how they are read back. The step functions are the
same in every mode (see `engine.programs.steps`).

* `none`: `jax.jit` on the default device (one process, one device).
* `jit` (default): a one-dimensional `data` mesh over every device of every process; batches
  sharded along their first axis, `jax.jit` with in/out shardings and the state donated.
  Arrays are global, so the loss and BatchNorm statistics are those of the global batch
  without any explicit collective. The state is replicated, or with `sharding="fsdp"` its
  large parameter and optimizer leaves are split over the same `data` axis (`fsdp_spec`):
  XLA then gathers each weight where a layer needs it and reduce-scatters its gradient.
* `pmap`: `jax.pmap` over the local devices with axis `data`; the steps sum over the axis with
  `lax.psum`. State carries a leading device axis; it is read back from the first local shard
  (`addressable_shards[0]`), never with `x[0]`, which would gather.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
SHARDINGS = ("replicated", "fsdp")
# The state's collections fsdp splits: the trained parameters (and a frozen teacher's), and the
# optimizer's moments, which mirror them. BatchNorm statistics, step counters, keys and
# normalisation constants stay whole: they are small, and a step reads all of them.
SHARDED_COLLECTIONS = ("params", "opt_state")
# Leaves below this many elements (4 KiB of float32) stay whole: splitting a bias or a
# BatchNorm scale saves nothing and costs a gather each step.
MIN_SHARDED_ELEMENTS = 1024


def fsdp_spec(path: tuple[str, ...], shape: tuple[int, ...], devices: int) -> P:
    """How fsdp lays out one state leaf: split along one dimension over `AXIS`, or whole.

    The one rule of `--sharding=fsdp`: a leaf under a `SHARDED_COLLECTIONS` name with at least
    `MIN_SHARDED_ELEMENTS` elements is split along its largest dimension that the device count
    divides (the last of equals: a kernel's output features); anything else is replicated.

    >>> fsdp_spec(("params", "Dense_0", "kernel"), (64, 128), 4)
    P(None, 'data')
    >>> fsdp_spec(("batch_stats", "bn", "mean"), (8192,), 4), fsdp_spec(("params", "b"), (10,), 4)
    (P(), P())
    """
    if devices <= 1 or not any(name in SHARDED_COLLECTIONS for name in path):
        return P()
    if int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_ELEMENTS:
        return P()
    divisible = [(size, i) for i, size in enumerate(shape) if size % devices == 0]
    if not divisible:
        return P()
    _, dim = max(divisible)
    return P(*([None] * dim), AXIS)


def _names(path) -> tuple[str, ...]:
    """The key names along a pytree path (dict keys, attribute names, sequence indices)."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The parallel mode of a run and the device facts it depends on."""

    mode: str
    mesh: Mesh
    num_devices: int  # global device count the batch is split over
    num_processes: int
    process_index: int
    sharding: str = "replicated"  # the state's layout under jit (`SHARDINGS`)

    @property
    def axis_name(self) -> str | None:
        """The axis the steps sum over: only pmap needs explicit collectives."""
        return AXIS if self.mode == "pmap" else None

    @functools.cached_property
    def cpu_multi_device(self) -> bool:
        """Several CPU devices (simulated ones, or CPU processes) take part in each step."""
        return self.num_devices > 1 and self.mesh.devices.flat[0].platform == "cpu"

    @property
    def is_main(self) -> bool:
        """Whether this process prints and writes logs (process 0)."""
        return self.process_index == 0

    # --- steps ------------------------------------------------------------------------------
    def wrap_train(self, train_step: Callable) -> Callable:
        """Compiles `train_step(state, batch, totals) -> (state, totals)`, donating both."""
        if self.mode == "pmap":
            return jax.pmap(train_step, axis_name=AXIS, donate_argnums=(0, 2))
        if self.mode == "jit":
            rep, data = self._replicated(), NamedSharding(self.mesh, P(AXIS))
            return _StateJit(
                lambda state: jax.jit(
                    train_step,
                    in_shardings=(state, data, rep),
                    out_shardings=(state, rep),
                    donate_argnums=(0, 2),
                ),
                replicated=None if self.fsdp else rep,
            )
        return jax.jit(train_step, donate_argnums=(0, 2))

    def wrap_eval(self, eval_step: Callable) -> Callable:
        """Compiles `eval_step(state, batch, totals)` for this mode, donating the totals."""
        if self.mode == "pmap":
            return jax.pmap(eval_step, axis_name=AXIS, donate_argnums=2)
        if self.mode == "jit":
            rep, data = self._replicated(), NamedSharding(self.mesh, P(AXIS))
            return _StateJit(
                lambda state: jax.jit(
                    eval_step,
                    in_shardings=(state, data, rep),
                    out_shardings=rep,
                    donate_argnums=2,
                ),
                replicated=None if self.fsdp else rep,
            )
        return jax.jit(eval_step, donate_argnums=2)

    def wrap_state_update(self, update: Callable) -> Callable:
        """Compiles `update(state, value) -> state` (a host scalar fed in), donating the state.

        For callbacks that change the state between epochs (the plateau schedule's feed).
        """
        if self.mode == "pmap":
            return jax.pmap(update, axis_name=AXIS, in_axes=(0, None), donate_argnums=0)
        if self.mode == "jit":
            rep = self._replicated()
            return _StateJit(
                lambda state: jax.jit(
                    update, in_shardings=(state, rep), out_shardings=state, donate_argnums=0
                ),
                replicated=None if self.fsdp else rep,
            )
        return jax.jit(update, donate_argnums=0)

    # --- placement --------------------------------------------------------------------------
    @property
    def fsdp(self) -> bool:
        """Whether the state's large leaves are split over the devices (jit only)."""
        return self.mode == "jit" and self.sharding == "fsdp"

    def _replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def state_shardings(self, tree: Any) -> Any:
        """The sharding of each leaf of a state (or any tree) in the jit layout."""
        rep = self._replicated()
        if not self.fsdp:
            return jax.tree.map(lambda _: rep, tree)
        n = self.mesh.shape[AXIS]
        return jax.tree_util.tree_map_with_path(
            lambda path, a: NamedSharding(self.mesh, fsdp_spec(_names(path), np.shape(a), n)),
            tree,
        )

    def describe_sharding(self, tree: Any) -> str:
        """One start-up line: how many leaves and bytes of the state fsdp splits."""
        leaves = jax.tree.leaves(tree)
        split = [
            s.spec != P() for s in jax.tree.leaves(self.state_shardings(tree), is_leaf=_is_sharding)
        ]
        nbytes = [int(np.prod(np.shape(a), dtype=np.int64)) * a.dtype.itemsize for a in leaves]
        share = sum(b for b, s in zip(nbytes, split) if s) / max(sum(nbytes), 1)
        return (
            f"fsdp over {self.mesh.shape[AXIS]} devices: {sum(split)} of {len(leaves)} state "
            f"leaves split, {100 * share:.1f}% of the state's bytes (the rest stays whole: "
            f"under {MIN_SHARDED_ELEMENTS} elements, statistics, or no divisible dimension)"
        )

    def place_state(self, state: Any) -> Any:
        """Puts a host (or single-device) state on the devices in this mode's layout."""
        if self.mode == "pmap":
            n = jax.local_device_count()
            return jax.tree.map(lambda a: _put_local_stack(np.asarray(a), n), state)
        if self.mode == "jit":
            return jax.tree.map(
                lambda a, s: _put_global(np.asarray(a), s), state, self.state_shardings(state)
            )
        return jax.device_put(state)

    def place_batch(self, batch: dict[str, np.ndarray]) -> Any:
        """This process's slice of the global batch, in the form the wrapped step takes.

        With one process the host arrays go straight to the compiled step, which copies and
        shards them as its `in_shardings` say: a separate `device_put` per batch cost 15% of a
        small MLP's step here. Several processes build one global array from their slices.
        """
        if self.mode == "pmap":
            n = jax.local_device_count()
            return {k: v.reshape((n, v.shape[0] // n, *v.shape[1:])) for k, v in batch.items()}
        if self.mode == "jit" and self.num_processes > 1:
            sharding = NamedSharding(self.mesh, P(AXIS))
            return jax.make_array_from_process_local_data(sharding, batch)
        return batch

    def abstract_batch(self, sample: dict[str, np.ndarray], rows: int) -> Any:
        """Shape structs of a `rows`-row global batch as `place_batch` hands it to the step.

        For tracing the step at the shapes and placement of its real calls, so that the
        compiled step reuses that trace (`engine.runtime.loop.metric_zeros`): a struct sharded
        differently from the real argument makes JAX trace again. Under pmap, the one-row
        `sample` itself: the step is traced per device there and shares no trace.
        """
        if self.mode == "pmap":
            return sample
        several = self.mode == "jit" and self.num_processes > 1  # a global array, as above
        sharding = NamedSharding(self.mesh, P(AXIS)) if several else None
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((rows, *np.shape(x)[1:]), x.dtype, sharding=sharding),
            sample,
        )

    def read(self, tree: Any) -> Any:
        """Host NumPy copy of the state or metrics (every process gets the whole value).

        Replicated values are read from the first local shard, without a cross-device
        gather; fsdp's split leaves are gathered (across processes, a collective that every
        process calls).
        """

        def one(a):
            if self.mode == "pmap":  # a placed host state is a NumPy stack (see place_state)
                local = a.addressable_shards[0].data if isinstance(a, jax.Array) else a
                return np.asarray(local)[0]
            if isinstance(a, jax.Array) and not a.is_fully_addressable:
                if not a.sharding.is_fully_replicated:
                    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
                return np.asarray(a.addressable_shards[0].data)
            return np.asarray(a)

        return jax.tree.map(one, tree)

    def global_state(self, state: Any) -> Any:
        """The state as global arrays (what orbax saves, in every mode): as placed under jit."""
        if self.mode == "jit":
            return state
        host = self.read(state) if self.mode == "pmap" else jax.tree.map(np.asarray, state)
        rep = self._replicated()
        return jax.tree.map(lambda a: _put_global(a, rep), host)

    def abstract_state(self, host_state: Any) -> Any:
        """Shape/dtype/sharding structs of a host state in this plan's global layout.

        orbax restores into these shardings whatever layout and device count a checkpoint
        was saved with, so a run moves between device counts, processes and `--sharding`.
        """
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s),
            host_state,
            self.state_shardings(host_state),
        )

    def from_global(self, state: Any) -> Any:
        """Converts a restored global state (`abstract_state`'s layout) into this mode's."""
        if self.mode == "jit":
            return state
        return self.place_state(self.read_global(state))

    @staticmethod
    def read_global(tree: Any) -> Any:
        """Host copy of global replicated arrays, read from this process's first shard."""
        return jax.tree.map(lambda a: np.asarray(a.addressable_shards[0].data), tree)


class _StateJit:
    """A jitted step whose state argument keeps the shardings it was placed with.

    Under fsdp each state leaf has its own sharding, which the wrapper does not know until it
    sees a placed state: the first call compiles with the state's shardings as its in and out
    shardings (so a step's output state is laid out exactly as its input was). Replicated
    states compile at once, with one sharding for the whole state.
    """

    def __init__(self, make: Callable[[Any], Callable], *, replicated: NamedSharding | None):
        self._make = make
        self._jitted = None if replicated is None else make(replicated)

    def _for(self, state) -> Callable:
        if self._jitted is None:
            self._jitted = self._make(jax.tree.map(lambda a: a.sharding, state))
        return self._jitted

    def __call__(self, state, *args):
        return self._for(state)(state, *args)

    def lower(self, state, *args):
        """`jax.jit(...).lower` at this state's layout (ahead-of-time compiles, benchmarks)."""
        return self._for(state).lower(state, *args)

    def _cache_size(self) -> int:
        return 0 if self._jitted is None else self._jitted._cache_size()


def _is_sharding(x) -> bool:
    return isinstance(x, jax.sharding.Sharding)


def _put_global(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # make_array_from_callback works for every process count (device_put of host data onto
    # devices of other processes does not); each process supplies the same replicated value.
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


def _put_local_stack(a: np.ndarray, n: int) -> np.ndarray:
    # pmap's input layout: a leading axis of one entry per local device. Host arrays are what
    # pmap accepts in every process count; it transfers them once, its outputs stay on device.
    return np.ascontiguousarray(np.broadcast_to(a, (n, *a.shape)))


def make_plan(mode: str, sharding: str = "replicated") -> Plan:
    """Builds the plan for `mode` (and the state's `sharding`) over every process's devices."""
    devices = jax.devices() if mode != "none" else jax.devices()[:1]
    mesh = Mesh(np.array(devices), (AXIS,))
    return Plan(
        mode=mode,
        mesh=mesh,
        num_devices=len(devices),
        num_processes=jax.process_count(),
        process_index=jax.process_index(),
        sharding=sharding,
    )
