"""engine/runtime/host_memory.py: run.py restarts itself once with 2 MiB pages for host buffers."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
from engine_helpers import records_without_timings

from engine.runtime import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLIBC = ("glibc", "2.36")  # Debian 12's


def _this_machine_restarts() -> bool:
    try:
        with open(host_memory.THP_MODE_FILE) as f:
            mode = host_memory.thp_mode(f.read())
    except OSError:
        return False
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    return host_memory.environment(env, platform.system(), platform.libc_ver(), mode) is not None


JEMALLOC = host_memory.find_jemalloc()
needs_jemalloc = pytest.mark.skipif(
    JEMALLOC is None or platform.system() != "Linux",
    reason="needs jemalloc installed (Debian/Ubuntu: apt-get install libjemalloc2)",
)


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
    assert host_memory.thp_mode(text) == mode


def test_the_tunable_is_added_to_those_already_set():
    assert host_memory.environment({"A": "1"}, "Linux", GLIBC, "madvise") == {
        "A": "1",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert host_memory.environment(env, "Linux", GLIBC, "madvise") == {
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
    assert host_memory.environment(environ, system, libc, mode) is None


_ALLOCATOR = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
_CONF = host_memory.JEMALLOC_CONF


# What the restarted process gives back when the user had set neither variable.
_NONE_SET = json.dumps({"LD_PRELOAD": None, "MALLOC_CONF": None})


def test_the_allocator_is_preloaded_beside_the_huge_pages():
    assert host_memory.environment({}, "Linux", GLIBC, "madvise", _ALLOCATOR) == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        "LD_PRELOAD": _ALLOCATOR,
        "MALLOC_CONF": _CONF,
        host_memory.RESTORE: _NONE_SET,
    }
    # Only the allocator is missing (an older start set the tunable): restart for it alone,
    # after a library the user preloads (a sanitizer's runtime must stay first) and with the
    # user's own jemalloc settings.
    env = {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        "LD_PRELOAD": "/opt/libasan.so",
        "MALLOC_CONF": "narenas:1",
    }
    assert host_memory.environment(env, "Linux", GLIBC, "madvise", _ALLOCATOR) == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
        "LD_PRELOAD": f"/opt/libasan.so {_ALLOCATOR}",
        "MALLOC_CONF": "narenas:1",
        host_memory.RESTORE: json.dumps(
            {"LD_PRELOAD": "/opt/libasan.so", "MALLOC_CONF": "narenas:1"}
        ),
    }
    # Without huge pages to ask for (THP "always", musl), the allocator still helps.
    assert host_memory.environment({}, "Linux", ("", ""), "always", _ALLOCATOR) == {
        "LD_PRELOAD": _ALLOCATOR,
        "MALLOC_CONF": _CONF,
        host_memory.RESTORE: _NONE_SET,
    }


def test_the_restarted_process_gives_the_environment_back():
    environ = host_memory.environment(
        {"LD_PRELOAD": "/opt/libasan.so", "PATH": "/bin"}, "Linux", GLIBC, "madvise", _ALLOCATOR
    )
    host_memory.give_back(environ)
    assert environ == {
        "LD_PRELOAD": "/opt/libasan.so",
        "PATH": "/bin",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }


@pytest.mark.parametrize(
    ("environ", "installed", "cpu"),
    [
        ({}, False, True),  # nothing named, no accelerator plugin
        ({}, True, False),  # a GPU/TPU plugin installed: not measured there
        ({"JAX_PLATFORMS": "cpu"}, True, True),
        ({"JAX_PLATFORMS": "cuda,cpu"}, False, False),
        ({"JAX_PLATFORMS": "tpu"}, False, False),
    ],
)
def test_the_restart_applies_to_cpu_backends_only(environ, installed, cpu):
    assert host_memory.cpu_backend(environ, installed) is cpu


@pytest.mark.parametrize(
    "environ",
    [
        {"JAXTRAIN_MALLOC": "system"},  # the user's opt-out
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},  # the user's
        {"LD_PRELOAD": _ALLOCATOR},  # done (the restarted process)
    ],
)
def test_an_allocator_choice_already_made_is_kept(environ):
    environ = {**environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert host_memory.environment(environ, "Linux", GLIBC, "madvise", _ALLOCATOR) is None


def test_no_allocator_outside_linux_or_where_none_is_installed(tmp_path):
    assert host_memory.environment({}, "Darwin", ("", ""), "", "/usr/lib/libjemalloc.dylib") is None
    assert host_memory.find_jemalloc((str(tmp_path / "missing.so"),)) is None
    present = tmp_path / "libjemalloc.so.2"
    present.write_bytes(b"")
    assert host_memory.find_jemalloc((str(tmp_path / "missing.so"), str(present))) == str(present)


def _probe_run(tmp_path, **env_extra):
    """run.py's process as a plugin sees it.

    Returns (returncode, pid inside, GLIBC_TUNABLES, outer pid, LD_PRELOAD or "-", whether
    jemalloc is mapped into the process).
    """
    (tmp_path / "probe_plugin.py").write_text(
        "import os, subprocess, sys\n"
        "maps = open('/proc/self/maps').read()\n"
        "child = subprocess.run([sys.executable, '-c', "
        "\"print(int('libjemalloc' in open('/proc/self/maps').read()))\"], "
        "capture_output=True, text=True).stdout.strip()\n"
        "print('PROBE', os.getpid(), int('libjemalloc' in maps), child,"
        " os.environ.get('LD_PRELOAD', '') or '-',"
        " os.environ.get('GLIBC_TUNABLES', ''), flush=True)\n"
        "raise SystemExit(0)\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "JAXTRAIN_MALLOC", "MALLOC_CONF")
    }
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
    _, pid, mapped, in_child, preload, tunables = [*line.split(" ", 5), ""][:6]
    assert in_child == "0"  # the processes it starts run with the system's allocator
    return child.returncode, int(pid), tunables, child.pid, preload, mapped == "1"


@needs_madvise_thp
def test_run_py_restarts_in_place_with_the_tunable(tmp_path):
    code, inner_pid, tunables, outer_pid, _, _ = _probe_run(tmp_path)
    assert code == 0
    assert tunables == "glibc.malloc.hugetlb=1"
    assert inner_pid == outer_pid  # exec, not a child: signals and waits reach the run


@needs_madvise_thp
def test_a_user_choice_of_the_tunable_is_kept(tmp_path):
    _, _, tunables, _, _, _ = _probe_run(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    assert tunables == "glibc.malloc.hugetlb=0"


_FAULTS = textwrap.dedent(
    """
    import resource, jax, jax.numpy as jnp
    # The reversed exp(x) feeds a matrix-vector product, so XLA materialises it: a 64 MiB
    # temporary buffer allocated and freed on every call, as a train step's activations are.
    f = jax.jit(lambda x: jnp.sum(jnp.exp(x)[::-1] @ x[0]))
    x = jnp.ones((4096, 4096), jnp.float32)
    for _ in range(WARMUP):
        f(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        f(x).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(warmup: int, **settings) -> int:
    """Minor page faults of 5 calls of _FAULTS after `warmup` calls in a fresh process.

    The process gets only `settings` of the host-memory variables (none of this one's).
    """
    names = ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF", host_memory.ALLOCATOR_CHOICE)
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(JAX_PLATFORMS="cpu", **settings)
    done = subprocess.run(
        [sys.executable, "-c", f"WARMUP = {warmup}\n" + _FAULTS],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@needs_madvise_thp
def test_the_tunable_ends_the_page_faults_of_xlas_temporary_buffers():
    """The mechanism itself: XLA's temporary buffers fault 2 MiB at a time, not 4 KiB.

    64 MiB freed and reallocated a call is 16,384 faults in 4 KiB pages (64 MiB / 4 KiB) and 32
    in 2 MiB pages; measured over 5 calls (2026-12-04): 81,974 and 2,769 (the rest of the
    process's faults), so a tenth is a wide margin.
    """
    faults = {s: _faults(1, GLIBC_TUNABLES=f"glibc.malloc.hugetlb={s}") for s in ("0", "1")}
    assert faults["0"] >= 5 * 16384 * 0.9, faults  # the cost being removed is real
    assert faults["1"] * 10 < faults["0"], faults


@needs_jemalloc
def test_run_py_runs_with_jemalloc_unless_told_not_to(tmp_path):
    code, inner_pid, _, outer_pid, preload, mapped = _probe_run(tmp_path)
    assert code == 0 and inner_pid == outer_pid
    assert mapped and preload == "-"  # loaded, and the user's environment given back
    _, _, _, _, preload, mapped = _probe_run(tmp_path, JAXTRAIN_MALLOC="system")
    assert preload == "-" and not mapped


@needs_jemalloc
@pytest.mark.parametrize("arch", ["mlp", "lenet"])
def test_training_is_the_same_with_and_without_jemalloc(tmp_path, arch):
    # The allocator changes where buffers live, never what is computed: the same metrics.jsonl
    # (timings aside) and test results, bit for bit.
    records = {}
    for malloc in ("jemalloc", "system"):
        workdir = str(tmp_path / malloc)
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
        env.update(JAX_PLATFORMS="cpu", JAXTRAIN_MALLOC="" if malloc == "jemalloc" else "system")
        flags = [f"--arch={arch}", "--epochs=3", f"--workdir={workdir}", "--noprogress"]
        flags.append(f"--data_dir={tmp_path / 'data'}")
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "run.py"), *flags],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
            records[malloc] = (records_without_timings(workdir), json.load(f)["test"])
    assert records["jemalloc"] == records["system"]


@needs_jemalloc
def test_jemalloc_so_set_ends_the_page_faults_of_xlas_temporary_buffers():
    """The allocator's effect: XLA's freed temporary buffers are reused, not faulted in again.

    64 MiB freed and reallocated a call is 16,384 faults a call in 4 KiB pages (81,974 over 5
    calls measured, above). jemalloc with JEMALLOC_CONF reuses it: 0 over calls 3-7 (0 over
    calls 2-6 too; 2026-12-07), so a hundredth is a wide margin.
    """
    small = "glibc.malloc.hugetlb=0"
    faults = {
        "glibc": _faults(2, GLIBC_TUNABLES=small),
        "jemalloc": _faults(
            2, GLIBC_TUNABLES=small, LD_PRELOAD=JEMALLOC, MALLOC_CONF=host_memory.JEMALLOC_CONF
        ),
    }
    assert faults["glibc"] >= 5 * 16384 * 0.9, faults
    assert faults["jemalloc"] * 100 < faults["glibc"], faults
