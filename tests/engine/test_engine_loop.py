"""The loop's step plumbing: the sums' zeros and the compiled accumulating step share one trace."""

import types

import jax.numpy as jnp
import numpy as np

from engine.runtime import loop, parallel


def _counting_program():
    traces = []

    def train_step(state, batch):
        traces.append(batch["inputs"].shape)  # Python runs only while JAX traces
        rows = jnp.sum(batch["mask"])
        return state + 1.0, {"loss": jnp.sum(batch["inputs"] * batch["mask"][:, None]), "n": rows}

    return types.SimpleNamespace(train_step=train_step), traces


def _batch(rows):
    return {
        "inputs": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3),
        "mask": np.ones(rows, np.float32),
    }


def test_zeros_and_the_compiled_step_trace_the_step_once():
    """As `loop.run` does it in jit mode, the default.

    (`--parallel=none` still traces twice: its state sits on one device, not in the mesh's
    replicated layout that the abstract state names.)
    """
    program, traces = _counting_program()
    plan = parallel.make_plan("jit")
    host_state = np.zeros((), np.float32)
    abstract = plan.abstract_state(host_state)
    zeros = loop.metric_zeros(program, abstract, plan.abstract_batch(_batch(1), 4), None)
    step = plan.wrap_train(loop.accumulating(program.train_step))
    state, sums, complete = loop.train_epoch(
        step, plan.place_state(host_state), [_batch(4)] * 3, plan, zeros
    )
    assert traces == [(4, 3)]  # one trace, at the real batch's shape
    # Expected by hand: 3 steps of sum(0..11) = 66 each; 4 rows each.
    assert complete and float(sums["loss"]) == 3 * 66.0 and float(sums["n"]) == 12.0
    assert float(plan.read(state)) == 3.0


def test_zeros_of_the_one_row_sample_cost_a_second_trace():
    """Why `abstract_batch` exists: at the sample's one row the shapes differ from the step's."""
    program, traces = _counting_program()
    plan = parallel.make_plan("jit")
    abstract = plan.abstract_state(np.zeros((), np.float32))
    zeros = loop.metric_zeros(program, abstract, _batch(1), None)
    step = plan.wrap_train(loop.accumulating(program.train_step))
    loop.train_epoch(step, plan.place_state(np.zeros((), np.float32)), [_batch(4)], plan, zeros)
    assert traces == [(1, 3), (4, 3)]
