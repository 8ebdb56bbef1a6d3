"""The engine's default jobs against classic scikit-learn baselines on the same held-out rows.

Runs, in one process:
  * `python run.py` (MLP on digits) vs `SVC(gamma=0.001)` (scikit-learn's digits example), both
    scored on the engine's test split (SVC fit on the engine's train + validation rows), and the
    SVC on scikit-learn's own 50/50 split for reference (about 0.97 in scikit-learn's docs);
  * `python run.py --dataset=diabetes --arch=mlp --loss=huber` vs `Ridge()` on the same split.
Also prints the wall time of the default job (target: under 60 s, compilation included).

Usage: python benchmarks/baselines.py [--data_dir=DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import data
from engine.config import Config
from engine.train import train_and_evaluate


def _split_arrays(name: str, data_dir: str):
    splits = data.split(data.load(name, data_dir=data_dir), test_fraction=0.3, val_fraction=0.1)

    def arrays(source):
        x, y = source.get(np.arange(len(source)))
        return x.reshape(len(x), -1), y

    (xt, yt), (xv, yv), (xs, ys) = arrays(splits.train), arrays(splits.val), arrays(splits.test)
    return np.concatenate([xt, xv]), np.concatenate([yt, yv]), xs, ys


def main() -> None:
    """Prints engine vs baseline figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=data.default_data_dir())
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="baselines-")

    start = time.perf_counter()
    digits = train_and_evaluate(
        Config(data_dir=args.data_dir, workdir=os.path.join(work, "digits"), progress=False)
    )
    seconds = time.perf_counter() - start
    x, y, xs, ys = _split_arrays("digits", args.data_dir)
    svc = accuracy_score(ys, SVC(gamma=0.001).fit(x, y).predict(xs))
    from sklearn.datasets import load_digits

    d = load_digits()
    a, b, c, e = train_test_split(d.data, d.target, test_size=0.5, shuffle=False)
    svc_docs = accuracy_score(e, SVC(gamma=0.001).fit(a, c).predict(b))

    diabetes = train_and_evaluate(
        Config(
            data_dir=args.data_dir,
            workdir=os.path.join(work, "diabetes"),
            dataset="diabetes",
            arch="mlp",
            loss="huber",
            progress=False,
        )
    )
    x, y, xs, ys = _split_arrays("diabetes", args.data_dir)
    ridge = r2_score(ys, Ridge().fit(x, y).predict(xs))

    print()
    print(f"default job (mlp on digits): {seconds:.1f} s wall, compilation included (target < 60)")
    print(
        f"digits test accuracy: engine {digits['test']['accuracy']:.4f} | "
        f"SVC(gamma=0.001) on the same split {svc:.4f} | "
        f"SVC on scikit-learn's 50/50 split {svc_docs:.4f}  (target: engine >= 0.97)"
    )
    print(
        f"diabetes test R^2: engine (mlp, huber) {diabetes['test']['r2']:.4f} | "
        f"Ridge() on the same split {ridge:.4f}  (target: engine >= 0.40)"
    )


if __name__ == "__main__":
    main()
