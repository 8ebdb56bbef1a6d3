"""How the process gets host memory on Linux: a reusing allocator and huge pages, set at restart.

Why: XLA's CPU runtime allocates each step's temporary buffers afresh, for a ResNet-18 step at
32x32x3 batch 128 one 3.9 GB block, and frees it when the step ends. glibc serves a block that
large with a new `mmap` and returns it with `munmap` (blocks over 32 MiB always, whatever its
tunables say), so every step the kernel maps and zeroes the whole block again: about 970,000
page faults a step in 4 KiB pages, a quarter of the step's time, measured with `strace -c` and
`getrusage` (2026-12-04). Two remedies, each chosen before the process starts:

- TCMalloc (`libtcmalloc_minimal.so.4`, Debian/Ubuntu package `libtcmalloc-minimal4`, where
  installed): it keeps freed spans and hands them out again, so after the first step there are
  no page faults at all. PyTorch's CPU performance guide recommends preloading it (or jemalloc)
  for the same reason. ResNet-18 32x32x3 batch 128, engine epochs (2026-12-07, `python
  benchmarks/host_memory.py`): see the README. Freed memory stays with the process (its size
  stays at the step's peak) until it exits. jemalloc and mimalloc were measured too: jemalloc
  returned the pages as glibc does (800,000 faults an epoch), mimalloc kept them only with
  purging off and then still mapped new blocks now and then (4 s of kernel time in one epoch
  of four).
- Without TCMalloc, glibc 2.35's tunable `glibc.malloc.hugetlb=1` asks for 2 MiB transparent
  huge pages on those blocks, where the kernel's mode is `madvise` (most distributions'): 512
  times fewer faults, the step 1.3 times faster (ResNet-18 digits 1.15 times), but the kernel
  still zeroes every page each step.

The loader reads `LD_PRELOAD` and glibc its tunables once, when the process starts, so `run.py`
re-executes itself with both set before it imports JAX: same process id, same arguments, a few
tens of milliseconds. Nothing else in the process changes. What the user set is kept: a
`glibc.malloc.hugetlb` of their own (`=0` to keep 4 KiB pages), an allocator already in
`LD_PRELOAD`, or `JAXTRAIN_MALLOC=system` (glibc's malloc, no preload). Where neither can help
(not Linux, no TCMalloc and not glibc >= 2.35 with `madvise` huge pages, a script fed on stdin)
nothing happens. A notebook cannot restart itself: start Jupyter with the variables set.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(text: str) -> str:
    """The selected mode in the kernel's file, e.g. `always [madvise] never` -> `madvise`."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return ""


# Where distributions install TCMalloc's malloc-only library (Debian/Ubuntu multiarch, then
# Fedora/RHEL, then plain lib): checked by path, not with `ldconfig -p`, which would cost a
# subprocess at every start.
TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)
ALLOCATOR_CHOICE = "JAXTRAIN_MALLOC"  # "system": keep glibc's malloc
_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")  # already preloaded: the user's choice


def find_tcmalloc(paths: tuple[str, ...] = TCMALLOC_PATHS) -> str | None:
    """The first TCMalloc library among `paths` that exists, or None."""
    return next((p for p in paths if os.path.isfile(p)), None)


def _with_huge_pages(environ: dict[str, str], system: str, libc, mode: str) -> dict | None:
    name, version = libc
    if system != "Linux" or name != "glibc" or mode != "madvise":
        return None
    try:
        if tuple(int(p) for p in version.split(".")[:2]) < (2, 35):  # the tunable's release
            return None
    except ValueError:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(t.split("=")[0] == TUNABLE for t in tunables.split(":")):
        return None  # the user's (or an earlier start's) choice
    added = f"{TUNABLE}=1"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{added}" if tunables else added}


def _with_allocator(environ: dict[str, str], allocator: str | None) -> dict | None:
    preload = environ.get("LD_PRELOAD", "")
    if (
        allocator is None
        or environ.get(ALLOCATOR_CHOICE, "") == "system"
        or any(name in preload for name in _ALLOCATORS)
    ):
        return None
    return {**environ, "LD_PRELOAD": f"{allocator} {preload}" if preload else allocator}


def environment(
    environ: dict[str, str],
    system: str,
    libc: tuple[str, str],
    mode: str,
    allocator: str | None = None,
) -> dict[str, str] | None:
    """The environment to restart with, or None when restarting would change nothing.

    Args:
      environ: the current environment.
      system: `platform.system()`.
      libc: `platform.libc_ver()`, e.g. ("glibc", "2.36").
      mode: the kernel's transparent-huge-page mode (`thp_mode`).
      allocator: the TCMalloc library to preload (`find_tcmalloc()`), or None.
    """
    huge = _with_huge_pages(environ, system, libc, mode)
    preloaded = _with_allocator(huge or environ, allocator) if system == "Linux" else None
    return preloaded or huge


def restart() -> None:
    """Replaces this process by itself with the settings above, where they change something.

    Call first thing in a `__main__` script, before JAX is imported. Returns only when nothing
    was done; the restarted process returns from here at once, its environment already set.
    """
    script = sys.argv[0] if sys.argv else ""
    if not script or script in ("-", "-c") or not os.path.isfile(script):
        return  # `python -c` or stdin: the program cannot be read twice
    try:
        with open(THP_MODE_FILE) as f:
            mode = thp_mode(f.read())
    except OSError:
        mode = ""
    env = environment(
        dict(os.environ), platform.system(), platform.libc_ver(), mode, find_tcmalloc()
    )
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return  # cannot exec (odd interpreter path): run on as started
