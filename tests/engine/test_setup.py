"""The one path every run takes (`engine.workflows.setup`): checked once, the data loaded once.

Before the restructuring a plain `python run.py` validated its configuration twice (run.py,
then `engine.fit`) and loaded the dataset twice (once to count rows for the automatic epoch
count, once to train); these tests count both, through the command line and the Python API.
"""

import os
import subprocess
import sys

from engine_helpers import read_json

import engine
import run
from engine.config import checks
from engine.data import embedded
from engine.workflows import setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _counting(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_run_checks_its_configuration_and_loads_its_data_once(data_dir, tmp_path, monkeypatch):
    loads = _counting(monkeypatch, embedded, "load")  # what the digits source reads
    validations = _counting(monkeypatch, checks, "validate")
    workdir = str(tmp_path / "cli")
    # The automatic epoch count (--epochs=0) and tested epoch (--select=auto) need the data.
    flags = [f"--workdir={workdir}", f"--data_dir={data_dir}", "--hidden_sizes=16", "--noprogress"]
    assert run.cli(["run.py", *flags]) == 0
    assert (len(loads), len(validations)) == (1, 1)
    config = read_json(workdir, "config.json")
    assert {"epochs=30", "select=best"} <= set(config["auto"])  # resolved from that one load

    del loads[:], validations[:]
    workdir = str(tmp_path / "api")
    engine.fit(
        engine.Config(data_dir=data_dir, workdir=workdir, hidden_sizes=(16,), progress=False)
    )
    assert (len(loads), len(validations)) == (1, 1)


def test_every_automatic_value_is_recorded(data_dir):
    # A program's recipe too (the GAN's): `auto` says what the run filled in and why.
    _, gan = setup.configure(engine.Config(program="gan"))
    assert {"arch=dcgan", "lr=0.0002", "schedule=constant", "normalize=symmetric"} <= set(gan.auto)
    assert "epochs=200" in gan.auto
    _, vgg = setup.resolved(engine.Config(arch="vgg", data_dir=data_dir))
    assert {"optimizer=momentum", "epochs=30", "select=best"} <= set(vgg.auto)


def test_docs_flags_md_is_the_generated_reference():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), "--helpmd"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(ROOT, "docs", "flags.md"), encoding="utf-8") as f:
        written = f.read()
    assert written == done.stdout, "docs/flags.md is stale: python run.py --helpmd > docs/flags.md"
