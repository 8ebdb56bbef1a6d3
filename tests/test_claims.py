"""The published accuracy and speed-ratio figures, re-derived: fails where the tables claim more.

Slow (the zoo's rows train for minutes each, the baselines 15 runs): run with `pytest -q -m slow
tests/test_claims.py`, or one row with `-k`. The figures are parsed from benchmarks/README.md
itself, so they are written once; each case re-runs the command its row names. Five of its
tables are read, each the one table of its section, by column name:

- "### The zoo on digits": `--arch`, command (`python run.py ...`), digits test accuracy;
- "## baselines.py" and "## defaults.py": dataset (metric), seeds ("0-2", "5-9": each range
  is checked over its own seeds), engine default job, all baselines ("Model 0.1234; ...");
- "## throughput.py": case (ResNet-18 or LeNet), ratio (engine / bare);
- "## scaling.py": case (MLP or LeNet), simulated devices (the 1-device rows), jit / none,
  pmap / none;
- "### Against PyTorch's fastest configuration" (vs_torch.py): case, engine / fastest (skipped,
  with the reason, where PyTorch is not installed).

The wall-clock targets are re-run too: the default job under 10 s and the ResNet command under
120 s ("### Whole runs"), the default job's second start within 3 s of `import jax`
("## startup.py"). benchmarks/README.md lists the figures this module does not re-check, and why.

Rows of one case are newest first there, so the first row of each case is its claim; the rows
after it are earlier measurements, kept for the record and not checked.

Direction: an engine figure fails when the table's value exceeds the measured one by more than
the allowance; a baseline figure (the competition) fails when the table's value is below the
measured one by more than it, so the tables can neither flatter the engine nor belittle the
baselines. Allowances: accuracies and R^2 ACCURACY_SLACK = 0.005 (the runs are deterministic on
one machine, but float differences between CPUs can flip a borderline test example: one digits
test example is 1/539 = 0.0019; on iris one example in one of 3 seeds moves the mean by 0.0074,
so a flip there fails this test and asks for a look); speed ratios RATIO_SLACK = 0.05 (a chosen
noise allowance for medians of alternating trials on a shared 2-core machine, where other
processes' load moves one trial's rate by several percent).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "benchmarks", "README.md")
ACCURACY_SLACK = 0.005
RATIO_SLACK = 0.05

pytestmark = pytest.mark.slow


def _figures() -> str:
    with open(FIGURES, encoding="utf-8") as f:
        return f.read()


def _section(text: str, heading: str) -> str:
    """The lines under the heading line `heading` (e.g. "## throughput.py").

    The section ends at the next heading of the same or a higher level; a `#` line inside a
    fenced code block is not a heading.
    """
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    assert lines.count(heading) == 1, heading
    body, fenced = [], False
    for line in lines[lines.index(heading) + 1 :]:
        fenced ^= line.startswith("```")
        found = None if fenced else re.match(r"(#+) ", line)
        if found and len(found.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


def _cells(line: str) -> list[str]:
    r"""A table row's cells; `\|` is a pipe inside a cell, as in GitHub's Markdown."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


def _table(section: str) -> list[dict[str, str]]:
    """The rows of the one Markdown table in `section`, each as {column name: cell}."""
    lines = section.splitlines()
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
    ]
    assert len(starts) == 1, f"expected one table, found {len(starts)}"
    header = _cells(lines[starts[0]])
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


def _current(rows: list[dict[str, str]], *columns: str) -> list[dict[str, str]]:
    """The first row of each value of `columns` (the newest measurement of each case)."""
    first: dict[tuple, dict[str, str]] = {}
    for row in rows:
        first.setdefault(tuple(row[c] for c in columns), row)
    return list(first.values())


def _number(cell: str) -> float:
    return float(re.search(r"-?\d+\.\d+", cell).group())


def zoo_claims() -> list[tuple[str, float]]:
    """(run.py flags, digits test accuracy) for each architecture of the zoo table."""
    claims = []
    for row in _current(_table(_section(_figures(), "### The zoo on digits")), "`--arch`"):
        command = re.fullmatch(r"`python run\.py(.*)`", row["command"])
        assert command, row
        claims.append((command.group(1).strip(), _number(row["digits test accuracy"])))
    return claims


def baseline_claims() -> dict[tuple[int, int], dict[str, dict[str, float]]]:
    """{(first seed, seeds): {dataset: {"engine": mean, model: mean, ...}}} of both tables.

    Each row's "seeds" column (e.g. 0-2, 5-9) says which seeds its means are over; the newest
    row of each dataset and seed range is the claim.
    """
    text = _figures()
    claims: dict[tuple[int, int], dict[str, dict[str, float]]] = {}
    for heading in ("## baselines.py", "## defaults.py"):
        rows = _table(_section(text, heading))
        for row in _current(rows, "dataset (metric)", "seeds"):
            first, last = map(int, re.fullmatch(r"(\d+)-(\d+)", row["seeds"]).groups())
            seeds = (first, last - first + 1)
            name = row["dataset (metric)"].split(" ")[0]
            models = dict(
                re.fullmatch(r"(.+) (-?\d+\.\d+)", part.strip()).groups()
                for part in row["all baselines"].split(";")
            )
            engine = {"engine": _number(row["engine default job"])}
            claims.setdefault(seeds, {})[name] = engine | {k: float(v) for k, v in models.items()}
    return claims


def ratio_claims() -> dict[str, float]:
    """Speed ratios from the throughput and scaling tables, by benchmark case."""
    text = _figures()
    claims = {}
    for row in _current(_table(_section(text, "## throughput.py")), "case"):
        case = "resnet18" if "ResNet-18" in row["case"] else "lenet"
        assert case == "resnet18" or "LeNet" in row["case"], row
        claims[f"throughput-{case}"] = _number(row["ratio (engine / bare)"])
    scaling = _table(_section(text, "## scaling.py"))
    one_device = [row for row in scaling if row["simulated devices"] == "1"]
    for row in _current(one_device, "case"):
        case = "mlp" if "MLP" in row["case"] else "lenet"
        assert case == "mlp" or "LeNet" in row["case"], row
        for mode in ("jit", "pmap"):
            claims[f"scaling-{case}-{mode}"] = _number(row[f"{mode} / none"])
    return claims


def test_the_readme_has_the_figures_this_module_checks():
    # Parsing must not silently find nothing: every table and figure is in benchmarks/README.md.
    assert len(zoo_claims()) >= 7
    tables = baseline_claims()
    # The baselines (seeds 0-2), the default runs on the seeds the table recipe was chosen on
    # (0-4) and on the held-out seeds (5-9, the headline).
    assert {(0, 3), (0, 5), (5, 5)} <= set(tables)
    for claims in tables.values():
        assert set(claims) == {"digits", "iris", "wine", "breast_cancer", "diabetes"}
    assert len(ratio_claims()) == 6


@pytest.mark.parametrize(("flags", "claimed"), zoo_claims(), ids=[f for f, _ in zoo_claims()])
def test_zoo_accuracy(flags, claimed, data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    done = subprocess.run(
        [
            sys.executable,
            "run.py",
            *flags.split(),
            f"--workdir={workdir}",
            f"--data_dir={data_dir}",
            "--noprogress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        measured = json.load(f)["test"]["accuracy"]
    assert claimed <= measured + ACCURACY_SLACK, (flags, claimed, measured)


@pytest.mark.parametrize("seeds", sorted(baseline_claims()), ids=lambda s: f"seeds{s[0]}+{s[1]}")
def test_baselines_table(data_dir, seeds):
    sys.path.insert(0, ROOT)
    from benchmarks import baselines

    claims = baseline_claims()[seeds]
    first, count = seeds
    measured = baselines.measure(data_dir, tuple(claims), count, first)
    for name, claim in claims.items():
        got = {k: sum(v) / len(v) for k, v in measured[name].items() if k != "metric"}
        assert claim["engine"] <= got["engine"] + ACCURACY_SLACK, (name, claim, got)
        for model, value in claim.items():
            if model != "engine":
                assert value >= got[model] - ACCURACY_SLACK, (name, model, value, got[model])


@pytest.mark.parametrize("case", ["resnet18", "lenet"])
def test_throughput_ratio(case):
    sys.path.insert(0, ROOT)
    from benchmarks import throughput

    claimed = ratio_claims()[f"throughput-{case}"]
    measured = throughput.measure(case)["ratio"]
    assert claimed <= measured + RATIO_SLACK, (case, claimed, measured)


def test_one_device_scaling_ratios():
    sys.path.insert(0, ROOT)
    from benchmarks import scaling

    result = scaling._run_child(1, ["mlp", "lenet"], 15)
    assert "error" not in result, result
    claims = ratio_claims()
    for case in ("mlp", "lenet"):
        modes = result["cases"][case]
        for mode in ("jit", "pmap"):
            measured = modes[mode]["rate"] / modes["none"]["rate"]
            claimed = claims[f"scaling-{case}-{mode}"]
            assert claimed <= measured + RATIO_SLACK, (case, mode, claimed, measured)


def torch_claims() -> dict[str, float]:
    """{case: engine / fastest PyTorch} from vs_torch.py's table of the README's install."""
    section = _section(_figures(), "### Against PyTorch's fastest configuration")
    return {
        row["case"]: _number(row["engine / fastest"]) for row in _current(_table(section), "case")
    }


@pytest.mark.parametrize("case", sorted(torch_claims()))
def test_vs_torch_ratio(case):
    # Each configuration of PyTorch the table measured (eager, fused, channels_last, compile),
    # against the engine; skipped where PyTorch (an optional benchmark extra) is absent.
    pytest.importorskip("torch", reason="PyTorch is the optional bench extra: pip install torch")
    sys.path.insert(0, ROOT)
    from benchmarks import vs_torch

    measured = vs_torch.measure(case, 5, None, "jit", list(vs_torch.TORCH_SETUPS))["ratio"]
    assert torch_claims()[case] <= measured + RATIO_SLACK, (case, measured)


def _timed_run(*flags: str, workdir: str, data_dir: str) -> tuple[float, dict]:
    """Wall seconds of `python run.py FLAGS` (its test results too)."""
    args = [sys.executable, "run.py", *flags, f"--workdir={workdir}", f"--data_dir={data_dir}"]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        return seconds, json.load(f)["test"]


@pytest.mark.parametrize(
    ("flags", "target"),
    # "### Whole runs": the default job under 10 s, the README's ResNet command under 120 s, both
    # with the compilation cache warm (a first run fills it, the second is timed).
    [((), 10.0), (("--arch=resnet", "--loss=huber"), 120.0)],
    ids=["default job", "resnet huber"],
)
def test_whole_run_wall_time_targets(flags, target, data_dir, tmp_path):
    _timed_run(*flags, "--epochs=1", workdir=str(tmp_path / "warm"), data_dir=data_dir)
    seconds, _ = _timed_run(
        *flags, "--noprogress", workdir=str(tmp_path / "run"), data_dir=data_dir
    )
    assert seconds < target, (flags, seconds, os.getloadavg())


def test_second_start_target(data_dir, tmp_path):
    # "## startup.py": the default job's first step within 3 s of `import jax` on a second start
    # (the compilation cache filled by a first one). ResNet-18's is not met on this machine
    # (3.82 s on 2026-12-07), as the table says; its row is not a claim of the target.
    sys.path.insert(0, ROOT)
    from benchmarks import startup

    cache = str(tmp_path / "cache")
    startup._trial("mlp", cache, data_dir, str(tmp_path / "first"))
    first_step, jax_import = startup._trial("mlp", cache, data_dir, str(tmp_path / "second"))
    assert first_step - jax_import <= 3.0, (first_step, jax_import, os.getloadavg())
