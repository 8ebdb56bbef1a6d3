"""What runs a program: the loop, its callbacks, checkpoints, devices and the process around them.

`program` is the interface a program gives the loop; `loop` runs its pure steps epoch by epoch
and calls the `callbacks` for everything else; `parallel` places state and batches for the
parallel mode; `checkpoint` (orbax), `lock` (one run per workdir) and `report` (metrics.jsonl,
JSON, plots) keep what the run leaves on disk; `compile_cache` and `host_memory` set the
process up. Kept light: `run.py` imports it before JAX loads.
"""
