"""Serve an exported workdir with jax and numpy alone: no project module is imported.

    python load_stablehlo.py EXPORT_FOLDER INPUTS.npy [OUT.npz]

EXPORT_FOLDER is what `python run.py --mode=export` wrote (model.stablehlo, export.json);
INPUTS.npy holds raw inputs (N, *input_shape) as the dataset gives them, any N.
"""

import json
import sys

import jax
import numpy as np


def load(folder):
    """The exported function (raw inputs -> dict of arrays) and its metadata."""
    with open(f"{folder}/export.json", encoding="utf-8") as f:
        meta = json.load(f)
    with open(f"{folder}/{meta['artifact']}", "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    return lambda x: exported.call(np.asarray(x, np.dtype(meta["input"]["dtype"]))), meta


if __name__ == "__main__":
    predict, meta = load(sys.argv[1])
    out = {k: np.asarray(v) for k, v in predict(np.load(sys.argv[2])).items()}
    if len(sys.argv) > 3:
        np.savez(sys.argv[3], **out)
    names = meta["class_names"]
    for row in out["prediction"][:10]:
        print(names[int(row)] if names and np.ndim(row) == 0 else row)
