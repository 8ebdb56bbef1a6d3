"""The README's "Extend the engine" examples, run as written: each file, each command, both ways.

Each ```python block opening with `# NAME.py:` is written to a fresh folder as that module;
each `python` command of the ```bash blocks runs there, in order: `run.py` commands with a
workdir, the test's data folder and 10 epochs added (unless they give their own), and then
again through the Python API, `engine.fit(engine.Config(**the same flags))`. A README example
that stops working fails here.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _examples() -> tuple[dict[str, str], list[str]]:
    """The README's plugin files ({name: source}) and its commands that use them, in order."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Extend the engine") :]
    section = section[: section.index("\n## ", 1)]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        name = re.match(r"# (\w+\.py):", block)
        assert name, block[:80]
        files[name.group(1)] = block
    commands = [
        line
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("python ")
    ]
    return files, commands


FILES, COMMANDS = _examples()
RUNS = [c for c in COMMANDS if c.startswith("python run.py")]


def test_the_readme_has_an_example_of_each_extension():
    assert set(FILES) == {
        "my_model.py",
        "my_loss.py",
        "my_source.py",
        "my_program.py",
        "my_callback.py",
    }
    for name in FILES:
        assert any(f"--plugins={name[:-3]}" in c for c in RUNS), name


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder holding the README's plugin files, with its other commands run there."""
    where = tmp_path_factory.mktemp("readme")
    for name, source in FILES.items():
        (where / name).write_text(source, encoding="utf-8")
    for command in COMMANDS:
        if not command.startswith("python run.py"):
            args = [sys.executable, *command.split(" ", 2)[1:]]
            args = [a.strip('"') for a in args]
            done = subprocess.run(args, cwd=where, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-2000:]
    return where


def _flags(command: str, data_dir: str, workdir: str) -> list[str]:
    flags = command.split()[2:]
    extra = [f"--workdir={workdir}", f"--data_dir={data_dir}", "--noprogress"]
    if not any(f.startswith("--epochs=") for f in flags):
        extra.append("--epochs=10")
    return flags + extra


def _check(command: str, results: dict) -> None:
    assert "test" in results, results
    if "--callbacks=" in command:  # the callback ended the run early, for good
        assert results["stop_reason"] == "val accuracy reached 0.9", results
        assert results["best_epoch"] < 10


@pytest.mark.parametrize("command", RUNS)
def test_a_readme_command_works_from_run_py(command, folder, data_dir):
    workdir = str(folder / f"cli-{abs(hash(command))}")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), *_flags(command, data_dir, workdir)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        _check(command, json.load(f))


def _config_kwargs(flags: list[str]) -> dict:
    """`--name=value` flags as `engine.Config` keywords (lists as tuples, numbers as numbers)."""
    kwargs = {}
    for flag in flags:
        if flag == "--noprogress":
            kwargs["progress"] = False
            continue
        name, _, value = flag[2:].partition("=")
        if name in ("plugins", "callbacks"):
            kwargs[name] = tuple(value.split(","))
            continue
        try:
            kwargs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name] = value
    return kwargs


@pytest.mark.parametrize("command", RUNS)
def test_a_readme_command_works_from_python(command, folder, data_dir):
    workdir = str(folder / f"api-{abs(hash(command))}")
    kwargs = _config_kwargs(_flags(command, data_dir, workdir))
    code = (
        "import json, sys, engine\n"
        f"results = engine.fit(engine.Config(**{kwargs!r}))\n"
        "print(json.dumps(results))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _check(command, json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_program_s_own_flag_is_listed_and_refused_elsewhere(folder):
    run = [sys.executable, os.path.join(ROOT, "run.py"), "--plugins=my_program"]
    shown = subprocess.run([*run, "--help"], cwd=folder, capture_output=True, text=True)
    assert "--probe_l2: --program=linear_probe: the probe's L2 decay" in shown.stdout
    refused = subprocess.run([*run, "--probe_l2=0.1"], cwd=folder, capture_output=True, text=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: --probe_l2 belongs to the linear_probe program")
