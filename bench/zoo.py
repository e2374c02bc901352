"""How much of real architectures grows: `widen --all x2` on models built the way users make them.

For each model (torchvision classifiers, Caffe2-era opset-9 CNNs written with onnx.helper, Hugging Face
transformers from tiny configs with fresh and trained-like weights, both torch exporters where they export),
this exports it, runs `onnxgrow widen --all x2` (`--keep-outputs` for transformers, whose hidden state is
the output), checks the grown model against the original in onnxruntime here (independently of onnxgrow's
own check), and counts the hidden parametric layers that grew.

A *parametric layer* is a node that makes units with a weight (Conv, ConvTranspose, Gemm, MatMul with a
weight initializer, Gather on an embedding table); it is *hidden* when another parametric layer lies
downstream of it in the graph (a classifier or LM head, followed by nothing but the output, is not hidden);
it *grew* when its weight has more output units in the grown model (a depthwise convolution grows with its
input channels).

    python bench/zoo.py [--models NAME ...] [--exports] [--markdown bench/results/zoo.md]

With `--exports`, each grown model is also handed to training: `export --to torch` (onnx2torch, every weight a
trainable parameter), saved and run by PyTorch, and `export --to mxnet`, imported by MXNet 1.9's Gluon importer
(in .venv-mxnet); both run on the same random inputs as onnxruntime on the grown model (`onnxgrow verify`'s .pt and
MXNet candidates). A model converts when it is written and its outputs are within 1e-4 of each output's largest
value; otherwise the table gives the reason (the one line onnxgrow prints).

Nothing is downloaded: every model is built in code with random weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' model builders

TORCHVISION = {  # name: input size (the smallest each architecture takes without changing its structure)
    "alexnet": 224,
    "vgg11_bn": 224,
    "resnet18": 64,
    "resnet50": 64,
    "resnext50_32x4d": 64,
    "wide_resnet50_2": 64,
    "densenet121": 64,
    "googlenet": 64,
    "inception_v3": 96,
    "mobilenet_v2": 64,
    "mobilenet_v3_small": 64,
    "mobilenet_v3_large": 64,
    "efficientnet_b0": 64,
    "efficientnet_v2_s": 64,
    "shufflenet_v2_x0_5": 64,
    "squeezenet1_0": 64,
    "mnasnet0_5": 64,
    "regnet_x_400mf": 64,
    "regnet_y_400mf": 64,
    "convnext_tiny": 64,
    "swin_t": 224,
    "maxvit_t": 224,
    "vit_b_16": 224,
}
HF = ("bert", "distilbert", "vit", "gpt2", "llama")


@dataclass
class Row:
    model: str
    exporter: str
    params: str = ""
    hidden: int = 0
    grown: int = 0
    error: float | None = None
    note: str = ""
    seconds: float = 0.0
    torch: str = ""  # with --exports: "yes (error)" or "no: reason"
    mxnet: str = ""

    @property
    def share(self) -> float:
        return self.grown / self.hidden if self.hidden else 0.0


def _torchvision(name: str, exporter: str, path: Path) -> None:
    import torch
    import torchvision

    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    module = getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs).eval()
    size = TORCHVISION[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(1, 3, size, size),),
            str(path),
            dynamo=exporter == "dynamo",
            opset_version=18 if exporter == "dynamo" else 17,
        )


def _hf(name: str, exporter: str, trained: bool, path: Path) -> None:
    from hf_models import export_hf

    export_hf(name, path, exporter, trained=trained)


def _caffe2(name: str, path: Path) -> None:
    import caffe2_models

    model = {
        "densenet121-caffe2": lambda: caffe2_models.densenet((6, 12, 24, 16), 32, 224, 1000),
        "inception-v2-caffe2": lambda: caffe2_models.inception_v2(3, 64, 64, 1000),
    }[name]()
    onnx.save(model, str(path))


def cases() -> list[tuple[str, str, Callable[[Path], None], bool]]:
    """(model, exporter, build into path, transformer?) for every model of the zoo."""
    out: list[tuple[str, str, Callable[[Path], None], bool]] = []
    for name in TORCHVISION:
        for exporter in ("torchscript", "dynamo"):
            out.append((name, exporter, lambda p, n=name, e=exporter: _torchvision(n, e, p), False))
    for name in ("densenet121-caffe2", "inception-v2-caffe2"):
        out.append((name, "onnx.helper opset 9", lambda p, n=name: _caffe2(n, p), False))
    for name in HF:
        for trained in (False, True):
            for exporter in ("dynamo", "torchscript"):
                if name in ("gpt2", "llama") and exporter == "torchscript":
                    continue  # torch's TorchScript exporter has no rule for aten::diff (transformers' masks)
                label = f"{name} ({'trained-like' if trained else 'fresh'})"
                out.append((label, exporter, lambda p, n=name, e=exporter, t=trained: _hf(n, e, t, p), True))
    return out


def _session(model: onnx.ModelProto | str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def normalised_error(original: str, grown: str) -> float:
    """max |a - b| / max |a| over every output, onnxruntime on both models, two random inputs."""
    ref, new = _session(original), _session(grown)
    worst = 0.0
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        feeds = {}
        for i in ref.get_inputs():
            shape = [d if isinstance(d, int) else 2 for d in i.shape]
            feeds[i.name] = (rng.integers(0, 50, shape) if "int" in i.type else rng.standard_normal(shape)).astype(
                np.int64 if "int" in i.type else np.float32
            )
        for a, b in zip(ref.run(None, feeds), new.run(None, feeds)):
            a, b = a.astype(np.float64), b.astype(np.float64)
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return worst


PARAMETRIC = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"}


def hidden_layers(model: onnx.ModelProto) -> set[str]:
    """Parametric nodes with another parametric node downstream (data flow through the main graph)."""
    inits = {t.name: t for t in model.graph.initializer}
    param = {
        n.name
        for n in model.graph.node
        if n.op_type in PARAMETRIC
        and (
            (n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2)
            or (n.op_type != "Gather" and any(i in inits and len(inits[i].dims) >= 2 for i in n.input[:2]))
        )
    }
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    below: dict[str, bool] = {}  # node -> a parametric node is downstream of its outputs
    for n in reversed(model.graph.node):  # topological order: every reader is decided before its producer
        below[n.name] = any(r.name in param or below.get(r.name, False) for o in n.output for r in readers.get(o, []))
    return {name for name in param if below[name]}


def output_units(model: onnx.ModelProto) -> dict[str, int]:
    """Parametric node -> the number of units its weight makes (output channels, columns, embedding width)."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    units = {}
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        w = n.input[1] if len(n.input) > 1 else ""
        if n.op_type == "Conv" and w in inits:
            units[n.name] = inits[w][0]
        elif n.op_type == "ConvTranspose" and w in inits:
            units[n.name] = inits[w][1] * attrs.get("group", 1)
        elif n.op_type == "Gemm" and w in inits:
            units[n.name] = inits[w][0 if attrs.get("transB", 0) else 1]
        elif n.op_type == "MatMul" and w in inits:
            units[n.name] = inits[w][-1]
        elif n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]]) == 2:
            units[n.name] = inits[n.input[0]][1]
    return units


#: the largest error (relative to each output's largest value) at which an exported model counts as converted
EXPORT_TOL = 1e-4


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200].replace("|", "/")


def export_checks(grown: Path, folder: Path) -> tuple[str, str]:
    """("yes (error)" or "no: reason") for the grown model exported to PyTorch and to MXNet, each run by its
    framework (onnxgrow.verify with a .pt candidate, and with the MXNet Gluon import) against onnxruntime."""
    from onnxgrow import OnnxGrowError, save, verify
    from onnxgrow.mxnet import for_mxnet
    from onnxgrow.torch import save_module, to_module

    def checked(candidate: Path, runtime: str) -> str:
        rep = verify(
            grown, candidate, candidate_runtime=runtime, atol=0.0, rtol=EXPORT_TOL, relative_to="output", iterations=2
        )
        err = rep.worst_normalised
        return f"yes ({err:.1e})" if rep.passed else f"no: outputs differ by {err:.1e} of their largest value"

    results = []
    for runtime in ("torch", "mxnet"):
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if runtime == "torch":
                    path = folder / "grown.pt"
                    save_module(to_module(grown), path)
                else:
                    path = folder / "grown_mx.onnx"
                    save(for_mxnet(grown), path)
                results.append(checked(path, runtime))
        except OnnxGrowError as exc:
            results.append(f"no: {_why(exc)}")
        except Exception as exc:  # a bug: counted, and said so
            results.append(f"no (internal error): {type(exc).__name__}: {_why(exc)}")
    return results[0], results[1]


def measure(
    name: str, exporter: str, build: Callable[[Path], None], transformer: bool, folder: Path, exports: bool = False
) -> Row:
    from onnxgrow import widen_model
    from onnxgrow.widen import inspect_model

    row = Row(name, exporter)
    src, dst = folder / "model.onnx", folder / "grown.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the dynamo exporter reports its steps on stdout
            build(src)
    except Exception as exc:  # the exporter's failure: the model is not in the zoo
        row.note = f"does not export: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
        return row
    start = time.perf_counter()
    try:
        analysis = inspect_model(src, keep_outputs=transformer)
        hidden = hidden_layers(analysis.model)
        why = Counter()
        result = widen_model(src, all="x2", keep_outputs=transformer, output=dst)
        before, after = output_units(analysis.model), output_units(onnx.load(str(dst), load_external_data=False))
        grown = {p for p in hidden if after.get(p, 0) > before.get(p, 0)}
        for g in analysis.groups:
            for p in g.producers:
                if p in hidden and p not in grown:
                    why[(g.reason or "skipped").split(" (")[0][:70]] += 1
        row.hidden, row.grown = len(hidden), len(grown)
        row.params = f"{result.params_before / 1e6:.2f} M -> {result.params_after / 1e6:.2f} M"
        row.error = normalised_error(str(src), str(dst))
        notes = [f"untied {len(result.untied)} shared"] if result.untied else []
        notes += [f"{n} not grown: {w}" for w, n in why.most_common(2)]
        row.note = "; ".join(notes)
        if exports:
            row.torch, row.mxnet = export_checks(dst, folder)
    except Exception as exc:
        row.note = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        if "--debug" in sys.argv:
            traceback.print_exc()
    row.seconds = time.perf_counter() - start
    return row


def markdown(rows: list[Row], exports: bool = False) -> str:
    extra = " to PyTorch | to MXNet |" if exports else ""
    lines = [
        "| model | exporter | parameters (`--all x2`) | hidden layers grown | normalised error | notes |" + extra,
        "|---|---|---|---:|---:|---|" + ("---|---|" if exports else ""),
    ]
    for r in rows:
        err = "" if r.error is None else f"{r.error:.1e}"
        grown = f"{r.grown}/{r.hidden} ({100 * r.share:.0f} %)" if r.hidden else "-"
        cells = f" {r.torch or '-'} | {r.mxnet or '-'} |" if exports else ""
        lines.append(f"| {r.model} | {r.exporter} | {r.params} | {grown} | {err} | {r.note} |" + cells)
    ok = [r for r in rows if r.hidden]
    exact = [r for r in ok if r.error is not None and r.error <= 1e-5]
    lines.append("")
    lines.append(
        f"{len(ok)} models grown, {len(exact)} exact (normalised error <= 1e-5); hidden layers grown: "
        f"{sum(r.grown for r in ok)}/{sum(r.hidden for r in ok)}; models under 90 %: "
        f"{', '.join(f'{r.model} ({r.exporter})' for r in ok if r.share < 0.9) or 'none'}."
    )
    if exports:
        for side in ("torch", "mxnet"):
            done = [r for r in ok if getattr(r, side)]
            yes = [r for r in done if getattr(r, side).startswith("yes")]
            lines.append(
                f"Grown models that convert to {'PyTorch' if side == 'torch' else 'MXNet 1.9'} and compute "
                f"the same there: {len(yes)}/{len(done)}."
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="only these models (names as in the table, prefix match)")
    parser.add_argument("--markdown", type=Path, help="write the table to this file")
    parser.add_argument(
        "--exports", action="store_true", help="also export each grown model to PyTorch and MXNet and run it there"
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of failures")
    args = parser.parse_args()
    rows = []
    for name, exporter, build, transformer in cases():
        if args.models and not any(name.startswith(m) for m in args.models):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(name, exporter, build, transformer, Path(tmp), exports=args.exports)
        rows.append(row)
        grown = f"{row.grown}/{row.hidden}" if row.hidden else "-"
        err = "" if row.error is None else f"{row.error:.1e}"
        print(f"{name:28s} {exporter:20s} {grown:>9s} {err:>8s} {row.seconds:6.1f}s  {row.note}", flush=True)
        if args.exports:
            print(f"    torch: {row.torch}\n    mxnet: {row.mxnet}", flush=True)
    table = markdown(rows, exports=args.exports)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text("# `widen --all x2` on real architectures (bench/zoo.py)\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
