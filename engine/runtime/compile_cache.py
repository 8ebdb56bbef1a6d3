"""JAX's persistent compilation cache, on by default: a second start skips XLA's compiles.

A run compiles its train and eval steps (and initialisation, resizing, metrics) on every start;
for a ResNet that is most of a short run's first seconds. JAX can keep the compiled executables
on disk, keyed by the program, the JAX/XLA versions, the devices and the compile options, so a
cached executable is the same code and results do not change.

`--compile_cache=on` (default) uses `$XDG_CACHE_HOME/jaxtrain/xla` (`~/.cache/jaxtrain/xla`);
a folder path uses that folder; `off` disables the cache. A cache the user or the environment
already configured (`JAX_COMPILATION_CACHE_DIR`, `jax.config`) is left as it is.
"""

from __future__ import annotations

import os

import jax

CHOICES = ("on", "off")  # or a folder


def default_dir() -> str:
    """`$XDG_CACHE_HOME/jaxtrain/xla`, or `~/.cache/jaxtrain/xla`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxtrain", "xla")


def enable(setting: str) -> str | None:
    """Turns the cache on for `setting` (on, off or a folder); returns the folder in use.

    Must run before the process's first compile: JAX reads the setting once, at that compile.
    """
    if setting == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured:  # the user's or the environment's choice wins
        return configured
    folder = default_dir() if setting == "on" else os.path.abspath(setting)
    jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        # JAX skips programs compiled in under 1 s; a small net's steps are such programs, and
        # together they are the start-up time this cache is for.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
