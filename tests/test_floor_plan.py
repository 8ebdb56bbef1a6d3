"""The floor plan holds: imports point one way without cycles, programs keep to their own files.

`lint-imports` checks the contracts of `pyproject.toml` (`[tool.importlinter]`); each contract
is shown to fail on a copy of the code with one deliberate breach of it, so none passes
vacuously. The registry test reads the code as text: a program that another module names is one
that adding a program would have to touch.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from engine.programs import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT, "--no-logo", "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_lint_imports_keeps_every_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def _copy(tmp_path) -> str:
    copy = tmp_path / "copy"
    for name in ("engine", "architectures", "losses"):
        shutil.copytree(os.path.join(ROOT, name), copy / name)
    os.makedirs(copy / "tests")
    shutil.copy(os.path.join(ROOT, "tests", "import_contracts.py"), copy / "tests")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), copy)
    return str(copy)


def _add(copy: str, module: str, text: str) -> None:
    with open(os.path.join(copy, *module.split(".")) + ".py", "a", encoding="utf-8") as f:
        f.write(text)


@pytest.mark.parametrize(
    ("breach", "broken"),
    [
        # A leaf importing the runtime: the layers point down only.
        (("losses._validation", "\nfrom engine.runtime import report  # noqa\n"), "layers"),
        # Two runtime modules importing each other.
        (("engine.runtime.lock", "\nfrom engine.runtime import loop  # noqa\n"), "cycles"),
        # A project module imported inside a function (a cycle in hiding).
        (
            ("engine.runtime.report", "\n\ndef _hidden():\n    from engine import data  # noqa\n"),
            "inside functions",
        ),
        # An unlisted library imported lazily.
        (("engine.paths", "\n\ndef _hidden():\n    import csv  # noqa\n"), "inside functions"),
    ],
)
def test_each_contract_fails_on_its_breach(tmp_path, breach, broken):
    copy = _copy(tmp_path)
    if broken == "cycles":  # the other half of the cycle
        _add(copy, "engine.runtime.loop", "\nfrom engine.runtime import lock  # noqa\n")
    _add(copy, *breach)
    done = _lint(copy)
    assert done.returncode != 0, done.stdout[-2000:]
    failed = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(failed) == 1 and broken in failed[0], done.stdout[-2000:]


def _source_files() -> list[str]:
    found = [os.path.join(ROOT, "run.py"), os.path.join(ROOT, "search.py")]
    for folder, _, files in os.walk(os.path.join(ROOT, "engine")):
        found += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return found


def test_no_module_outside_a_program_names_it():
    # Adding a program touches its own files only: no other module names a registered
    # program other than the default (built-in programs live in engine/programs/NAME[.py|/]).
    others = [n for n in registry.names() if n != registry.DEFAULT]
    assert {"gan", "distill", "metric_learning"} <= set(others)
    for name in others:
        own = os.path.join(ROOT, "engine", "programs", name)
        pattern = re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE)
        for path in _source_files():
            if path.startswith(own + os.sep) or path == own + ".py":
                continue
            with open(path, encoding="utf-8") as f:
                hits = [i + 1 for i, line in enumerate(f) if pattern.search(line)]
            assert not hits, f"{path}:{hits} names the {name} program"
