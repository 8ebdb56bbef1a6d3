"""engine/huge_pages.py: run.py restarts itself once with 2 MiB pages for XLA's host buffers."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from engine import huge_pages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLIBC = ("glibc", "2.36")  # Debian 12's


def _this_machine_restarts() -> bool:
    try:
        with open(huge_pages.THP_MODE_FILE) as f:
            mode = huge_pages.thp_mode(f.read())
    except OSError:
        return False
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    return huge_pages.environment(env, platform.system(), platform.libc_ver(), mode) is not None


needs_madvise_thp = pytest.mark.skipif(
    not _this_machine_restarts(),
    reason="needs Linux, glibc >= 2.35 and transparent huge pages in madvise mode",
)


@pytest.mark.parametrize(
    "text, mode",
    [  # the kernel file's formats (Documentation/admin-guide/mm/transhuge.rst)
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never\n", "always"),
        ("always madvise [never]\n", "never"),
        ("", ""),
    ],
)
def test_thp_mode_reads_the_bracketed_word(text, mode):
    assert huge_pages.thp_mode(text) == mode


def test_the_tunable_is_added_to_those_already_set():
    assert huge_pages.environment({"A": "1"}, "Linux", GLIBC, "madvise") == {
        "A": "1",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert huge_pages.environment(env, "Linux", GLIBC, "madvise") == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    }


@pytest.mark.parametrize(
    "environ, system, libc, mode",
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "Linux", GLIBC, "madvise"),  # user's
        ({"GLIBC_TUNABLES": "x.y=1:glibc.malloc.hugetlb=1"}, "Linux", GLIBC, "madvise"),  # done
        ({}, "Darwin", ("", ""), "madvise"),
        ({}, "Linux", ("glibc", "2.31"), "madvise"),  # the tunable came with 2.35
        ({}, "Linux", ("", ""), "madvise"),  # musl: no glibc tunables
        ({}, "Linux", GLIBC, "always"),  # every large mapping gets huge pages already
        ({}, "Linux", GLIBC, "never"),  # none can
    ],
)
def test_no_restart_where_it_would_change_nothing(environ, system, libc, mode):
    assert huge_pages.environment(environ, system, libc, mode) is None


def _probe_run(tmp_path, **env_extra):
    """run.py's process as a plugin sees it: (returncode, pid seen inside, GLIBC_TUNABLES)."""
    (tmp_path / "probe_plugin.py").write_text(
        "import os\n"
        "print('PROBE', os.getpid(), os.environ.get('GLIBC_TUNABLES', ''), flush=True)\n"
        "raise SystemExit(0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(PYTHONPATH=str(tmp_path), JAX_PLATFORMS="cpu", **env_extra)
    child = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run.py"), "--plugins=probe_plugin"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = child.communicate(timeout=120)
    line = next((x for x in out.splitlines() if x.startswith("PROBE")), None)
    assert line is not None, err[-2000:]
    _, pid, tunables = [*line.split(" ", 2), ""][:3]
    return child.returncode, int(pid), tunables, child.pid


@needs_madvise_thp
def test_run_py_restarts_in_place_with_the_tunable(tmp_path):
    code, inner_pid, tunables, outer_pid = _probe_run(tmp_path)
    assert code == 0
    assert tunables == "glibc.malloc.hugetlb=1"
    assert inner_pid == outer_pid  # exec, not a child: signals and waits reach the run


@needs_madvise_thp
def test_a_user_choice_of_the_tunable_is_kept(tmp_path):
    _, _, tunables, _ = _probe_run(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert tunables == "glibc.malloc.hugetlb=0"


_FAULTS = textwrap.dedent(
    """
    import resource, jax, jax.numpy as jnp
    # The reversed exp(x) feeds a matrix-vector product, so XLA materialises it: a 64 MiB
    # temporary buffer allocated and freed on every call, as a train step's activations are.
    f = jax.jit(lambda x: jnp.sum(jnp.exp(x)[::-1] @ x[0]))
    x = jnp.ones((4096, 4096), jnp.float32)
    f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        f(x).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@needs_madvise_thp
def test_the_tunable_ends_the_page_faults_of_xlas_temporary_buffers():
    """The mechanism itself: XLA's temporary buffers fault 2 MiB at a time, not 4 KiB.

    64 MiB freed and reallocated a call is 16,384 faults in 4 KiB pages (64 MiB / 4 KiB) and 32
    in 2 MiB pages; measured over 5 calls (2026-12-04): 81,974 and 2,769 (the rest of the
    process's faults), so a tenth is a wide margin.
    """
    faults = {}
    for setting in ("0", "1"):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        env.update(GLIBC_TUNABLES=f"glibc.malloc.hugetlb={setting}", JAX_PLATFORMS="cpu")
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        faults[setting] = int(done.stdout.split()[-1])
    assert faults["0"] >= 5 * 16384 * 0.9, faults  # the cost being removed is real
    assert faults["1"] * 10 < faults["0"], faults
