"""Test-session settings shared by every test: a compilation cache, one prepared-data directory."""

import os
import tempfile

import jax
import pytest

# One persistent XLA compilation cache for every test process and the subprocesses they start
# (inherited through the environment): many tests compile the same small programs, and a
# cached executable is the same code, so results are unchanged. Set before JAX reads its
# configuration (at the first compile); an explicit JAX_COMPILATION_CACHE_DIR wins.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"jaxtrain-tests-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Collecting the packages' doctests may have imported JAX already (it reads the environment at
# import): set this process's configuration too, before anything compiles.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One prepared-datasets directory per test process (the embedded sets are built once)."""
    return str(tmp_path_factory.mktemp("tfds"))
