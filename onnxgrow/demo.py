"""Helpers for `make demo`: make a perturbed copy of a model to show a failing verification."""

from __future__ import annotations

import sys

import numpy as np
from onnx import numpy_helper

from .io import load, save


def perturb(src: str, dst: str, delta: float = 1e-3) -> str:
    """Copy `src` to `dst` with the first element of its largest float weight changed by `delta`."""
    model = load(src, fold=False)
    floats = [t for t in model.graph.initializer if numpy_helper.to_array(t).dtype.kind == "f"]
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(target).copy()
    arr.reshape(-1)[0] += delta
    target.CopyFrom(numpy_helper.from_array(arr, target.name))
    save(model, dst)
    print(f"changed {target.name}[0] by {delta:g} -> {dst}")
    return target.name


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "perturb":
        sys.exit("usage: python -m onnxgrow.demo perturb SRC DST")
    perturb(sys.argv[2], sys.argv[3])
