"""Small helpers for engine tests: a fast default config and reading a workdir's results."""

import dataclasses
import json
import os

from engine.config import Config


def fast_config(data_dir: str, workdir: str, **overrides) -> Config:
    """A config that trains in seconds on digits: small MLP, few epochs, no progress bar."""
    base = Config(
        data_dir=data_dir,
        workdir=workdir,
        hidden_sizes=(32,),
        epochs=2,
        batch_size=64,
        progress=False,
        parallel="none",
    )
    return dataclasses.replace(base, **overrides)


def read_lines(workdir: str, name: str = "metrics.jsonl") -> list[str]:
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return f.read().splitlines()


def read_json(workdir: str, name: str) -> dict:
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return json.load(f)
