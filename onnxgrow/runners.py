"""Where `verify`'s candidate runs: onnxruntime (an .onnx file), PyTorch (a module saved by `export --to torch`),
or MXNet 1.9's Gluon import (an .onnx file written by `export --to mxnet`), so that the training hand-off is
checked the way the grown model is.

Every runner takes the same feeds (input name -> array, the model's graph inputs) and returns its outputs by the
reference's output names. MXNet cannot share onnxgrow's environment (it needs numpy < 1.24 and onnx < 1.17): its
runner starts that environment's Python on `gluon_run.py`, a script that imports only mxnet, numpy and onnx,
and exchanges the arrays through .npz files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import OnnxGrowError, ParameterError

#: how the candidate of `verify` runs
RUNTIMES = ("onnxruntime", "torch", "mxnet")
#: environment variable naming the Python of an MXNet 1.9 environment (else `mxnet_python`, else .venv-mxnet)
MXNET_PYTHON_ENV = "ONNXGROW_MXNET_PYTHON"


def runtime_for(candidate: object, runtime: str | None) -> str:
    """The runtime of a candidate: `runtime` when given, else torch for a .pt/.pth file and onnxruntime otherwise."""
    if runtime is not None:
        if runtime not in RUNTIMES:
            raise ParameterError("candidate_runtime", f"expected {', '.join(RUNTIMES)}", value=runtime)
        return runtime
    if isinstance(candidate, (str, os.PathLike)) and Path(candidate).suffix.lower() in (".pt", ".pth"):
        return "torch"
    return "onnxruntime"


class TorchRunner:
    """A torch module saved with `torch.save` (what `export --to torch` writes, or the user's own module saved
    whole), run in eval mode without gradients; its positional inputs are the ONNX model's inputs in order."""

    def __init__(
        self, path: str | os.PathLike, input_names: list[str], output_names: list[str], provider: str = "cpu"
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise OnnxGrowError(
                f"candidate {path}: running a .pt file needs torch: pip install 'onnxgrow[torch]' ({exc})"
            ) from None
        from .export.torch import load_module

        self.label = f"candidate {path}"
        self.module = load_module(path).eval()
        self.device = "cuda" if provider == "cuda" else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ParameterError(
                "provider",
                "torch sees no CUDA device; use provider='cpu'",
                value=provider,
                mentions=("provider='cpu'",),
            )
        self.module.to(self.device)
        self.input_names, self.output_names = input_names, output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        try:
            with torch.no_grad():
                outs = self.module(*args)
        except Exception as exc:  # the module's own failure on these inputs
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise OnnxGrowError(f"{self.label}: the module failed on the inputs: {first}") from exc
        if isinstance(outs, dict):
            outs = list(outs.values())
        elif isinstance(outs, torch.Tensor):
            outs = [outs]
        outs = [o for o in outs]
        if len(outs) != len(self.output_names) or not all(isinstance(o, torch.Tensor) for o in outs):
            raise OnnxGrowError(
                f"{self.label}: the module returns {len(outs)} value(s), the reference has "
                f"{len(self.output_names)} output(s) ({', '.join(self.output_names)})"
            )
        return {name: o.detach().cpu().numpy() for name, o in zip(self.output_names, outs)}


def mxnet_python(given: str | None = None) -> str:
    """The Python of an MXNet 1.9 environment: `given` (`mxnet_python`), else $ONNXGROW_MXNET_PYTHON, else
    .venv-mxnet/bin/python in the current folder or next to onnxgrow's source."""
    for candidate in (given, os.environ.get(MXNET_PYTHON_ENV)):
        if candidate:
            path = shutil.which(candidate) or candidate
            if not Path(path).is_file():
                raise ParameterError("mxnet_python", "no such Python", value=candidate)
            return str(path)
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        venv = root / ".venv-mxnet" / "bin" / "python"
        if venv.is_file():
            return str(venv)
    raise ParameterError(
        "candidate_runtime",
        "needs the Python of an MXNet 1.9 environment (MXNet needs numpy < 1.24 "
        f"and onnx < 1.17): give mxnet_python=PATH or set {MXNET_PYTHON_ENV} (`make "
        ".venv-mxnet/.installed` makes .venv-mxnet)",
        value="mxnet",
        mentions=("mxnet_python=PATH",),
    )


class MXNetRunner:
    """An ONNX file imported by MXNet 1.9 (`mxnet.contrib.onnx.import_to_gluon`) and run as a Gluon block, in
    the Python of an MXNet environment. All runs happen in one process when `run_all` is used."""

    def __init__(self, path: str | os.PathLike, output_names: list[str], python: str | None = None) -> None:
        self.path, self.output_names = str(path), output_names
        self.python = mxnet_python(python)
        self.label = f"candidate {path} (MXNet Gluon)"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_all([feeds])[0]

    def run_all(self, feeds_list: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        script = Path(__file__).resolve().parent / "export" / "mxnet" / "gluon_run.py"
        with tempfile.TemporaryDirectory(prefix="onnxgrow-mxnet-") as tmp:
            inputs, outputs = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npz")
            arrays = {f"{i}/{k}": v for i, feeds in enumerate(feeds_list) for k, v in feeds.items()}
            np.savez(inputs, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keyword arrays as bool
            try:
                res = subprocess.run(
                    [self.python, str(script), self.path, inputs, outputs], capture_output=True, text=True, timeout=3600
                )
            except OSError as exc:
                raise ParameterError("mxnet_python", f"cannot run it ({exc})", value=self.python) from None
            if res.returncode != 0:
                lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
                why = lines[-1][:300] if lines else f"exit status {res.returncode}"
                raise OnnxGrowError(f"{self.label}: MXNet cannot import or run it: {why}")
            data = np.load(outputs)
            info = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
            names = info.get("outputs", self.output_names)
            result = []
            for i in range(len(feeds_list)):
                result.append({name: data[f"{i}/{name}"] for name in names if f"{i}/{name}" in data.files})
            return result
