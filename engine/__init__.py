"""The training engine: config, data, state, pure steps, parallelism, checkpoints, the loop."""
