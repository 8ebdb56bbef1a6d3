"""Where a figure was measured: the command, date, machine and allocator columns of a table row.

benchmarks/README.md gives each row these (see its "How the figures are recorded"); the scripts
that print a README table build them here so the rows read the same.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from engine.runtime import host_memory


def cpu() -> str:
    """The CPU's model name (/proc/cpuinfo), or the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    if not names:
        return platform.machine()
    # "Intel(R) Xeon(R) Processor" -> "Intel Xeon", as the README's machine column writes it.
    name = names[0].replace("(R)", "").replace("(TM)", "").removesuffix(" Processor")
    return " ".join(name.split())


def allocator() -> str:
    """This process's malloc in the README's words: preloaded allocator, or glibc's page size."""
    loaded = host_memory.loaded_allocator()
    if loaded != "glibc":
        return f"{loaded} preloaded"
    huge = "hugetlb=1" in os.environ.get("GLIBC_TUNABLES", "")
    return "glibc, 2 MiB pages" if huge else "glibc (default)"


def command(script: str) -> str:
    """The command line that ran `script` (`python benchmarks/NAME.py` and its arguments)."""
    return " ".join([f"python benchmarks/{script}", *sys.argv[1:]])


def columns(command_line: str, load: str) -> list[str]:
    """The cells command, date, machine (with `load`, the load average) and allocator."""
    machine = f"{os.cpu_count()}-core {cpu()}, load {load}"
    return [f"`{command_line}`", time.strftime("%Y-%m-%d"), machine, allocator()]
