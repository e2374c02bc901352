"""CI step 1: export the PyTorch model to ONNX and record what PyTorch itself computes on fixed inputs.

    python examples/ci/export_model.py OUTDIR

Writes OUTDIR/model.onnx (torch.onnx.export), OUTDIR/inputs.npz (the inputs, keyed by the ONNX model's input
names) and OUTDIR/torch_outputs.npz (PyTorch's outputs on those inputs, keyed by its output names): what
`onnxgrow verify MODEL --load-inputs inputs.npz --load-outputs torch_outputs.npz` checks any ONNX file against.
Replace `build_model` with your own module and checkpoint.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def build_model() -> nn.Module:
    """The network the ONNX file is made from (here a small CNN with fixed weights; load your checkpoint)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    # model.load_state_dict(torch.load("checkpoint.pt"))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    out = parser.parse_args().outdir
    out.mkdir(parents=True, exist_ok=True)
    model = build_model()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(out / "model.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    with torch.no_grad():
        logits = model(x)
    np.savez(out / "inputs.npz", image=x.numpy())
    np.savez(out / "torch_outputs.npz", logits=logits.numpy())
    print(f"exported {out / 'model.onnx'}; PyTorch's outputs in {out / 'torch_outputs.npz'}")


if __name__ == "__main__":
    main()
