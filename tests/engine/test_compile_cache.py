"""--compile_cache: JAX's persistent compilation cache in the user cache folder, on by default."""

import os
import subprocess
import sys

import jax

from engine.runtime import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, data_dir, *flags):
    # No JAX_* variables: the test session's own cache (conftest) must not be the one used.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), f"--data_dir={data_dir}", "--epochs=1",
         "--hidden_sizes=16", "--noprogress", "--nodoctor", *flags],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_run_fills_the_user_cache_folder_and_off_writes_none(tmp_path, data_dir):
    folder = tmp_path / "cache" / "jaxtrain" / "xla"
    _run(tmp_path, data_dir, f"--workdir={tmp_path / 'off'}", "--compile_cache=off")
    assert not folder.exists()
    _run(tmp_path, data_dir, f"--workdir={tmp_path / 'on'}")
    assert len(os.listdir(folder)) >= 2  # at least the train and eval steps


def test_a_cache_already_configured_is_kept():
    configured = jax.config.jax_compilation_cache_dir  # the test session's (conftest)
    assert configured
    assert compile_cache.enable("on") == configured
    assert compile_cache.enable("/elsewhere") == configured
    assert jax.config.jax_compilation_cache_dir == configured


def test_the_default_folder_follows_xdg(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    assert compile_cache.default_dir() == "/x/cache/jaxtrain/xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.default_dir() == os.path.expanduser("~/.cache/jaxtrain/xla")
