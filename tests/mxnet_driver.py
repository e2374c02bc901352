"""The MXNet side of the MXNet tests; runs inside .venv-mxnet (mxnet 1.9.1, numpy<1.24, onnx<1.17).

Standalone on purpose: it imports mxnet, numpy and onnx only (never onnxgrow, which needs
onnxruntime and a newer numpy). tests/test_export_mxnet.py drives it through subprocess and
exchanges files with it (ONNX models, .npz arrays, .json results).

  python tests/mxnet_driver.py make  OUTDIR [--steps N]           Gluon nets trained a little, exported to ONNX
  python tests/mxnet_driver.py run   MODEL INPUTS.npz OUT.npz     import_to_gluon, forward, save the outputs
  python tests/mxnet_driver.py train MODEL DATA.npz OUT.json [--steps N --lr F --grads GRADS.npz]
  python tests/mxnet_driver.py batch JOBS.json OUT.json           many of the above in one process

`make` writes for each net NAME: OUTDIR/NAME.onnx, OUTDIR/NAME_data.npz (x, y: a training
batch; gluon: the trained net's own output on x) and OUTDIR/make.json (losses while training).
`train` fits the imported block to y with mean squared error and SGD, and reports the loss
before and after (inference mode, so BatchNorm uses its running statistics) and each step's
loss in training mode; `--grads` saves every parameter's gradient from the first step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

CTX = mx.cpu()


# --------------------------------------------------------------------------------------- networks


def mlp() -> tuple[nn.HybridSequential, tuple[int, ...], int]:
    """Dense + Activation layers: 10 features -> 16 -> 12 -> 3."""
    net = nn.HybridSequential()
    net.add(nn.Dense(16), nn.Activation("relu"), nn.Dense(12), nn.Activation("tanh"), nn.Dense(3))
    return net, (10,), 3


def cnn() -> tuple[nn.HybridSequential, tuple[int, ...], int]:
    """Conv2D + BatchNorm + Activation twice (with a max pool), Flatten, Dense + Activation, Dense."""
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(4, 3, padding=1),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.MaxPool2D(2),
        nn.Conv2D(6, 3, padding=1),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.Flatten(),
        nn.Dense(8),
        nn.Activation("relu"),
        nn.Dense(3),
    )
    return net, (3, 8, 8), 3


NETS = {"mx_mlp": mlp, "mx_cnn": cnn}


def make(outdir: str, steps: int = 5, batch: int = 16, seed: int = 0) -> dict:
    """Build each net, train it `steps` SGD steps on a random batch, export it with mx.onnx.export_model."""
    os.makedirs(outdir, exist_ok=True)
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    summary = {}
    for name, build in NETS.items():
        net, in_shape, n_out = build()
        net.initialize(mx.init.Xavier(), ctx=CTX)
        net.hybridize()
        x = rng.standard_normal((batch,) + in_shape).astype(np.float32)
        y = rng.standard_normal((batch, n_out)).astype(np.float32)
        losses = _fit(net, x, y, steps, lr=0.05)
        gluon_out = net(nd.array(x, ctx=CTX)).asnumpy()  # inference mode, like the exported graph
        prefix = os.path.join(outdir, name)
        net.export(prefix, epoch=0)
        onnx_path = prefix + ".onnx"
        mx.onnx.export_model(
            prefix + "-symbol.json",
            prefix + "-0000.params",
            [(batch,) + in_shape],
            [np.float32],
            onnx_path,
            dynamic=True,
            dynamic_input_shapes=[(None,) + in_shape],
        )
        np.savez(prefix + "_data.npz", x=x, y=y, gluon=gluon_out)
        summary[name] = {"onnx": onnx_path, "data": prefix + "_data.npz", "train_losses": losses}
    with open(os.path.join(outdir, "make.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


# ----------------------------------------------------------------------------------------- import


def load(model: str) -> gluon.SymbolBlock:
    from mxnet.contrib import onnx as onnx_mxnet

    return onnx_mxnet.import_to_gluon(model, ctx=CTX)


def input_names(model: str) -> list[str]:
    """The data inputs in the order the SymbolBlock takes them (graph inputs that are not weights)."""
    import onnx

    m = onnx.load(model, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


def output_names(model: str) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(model, load_external_data=False).graph.output]


def _forward(net, arrays: list[np.ndarray]):
    outs = net(*[nd.array(a, ctx=CTX, dtype=a.dtype) for a in arrays])
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def run(model: str, inputs: str, out: str) -> dict:
    """Import `model`, feed it the arrays of `inputs` (by input name), save the outputs (by output name)."""
    net = load(model)
    feeds = np.load(inputs)
    names = input_names(model)
    missing = [n for n in names if n not in feeds]
    if missing:
        raise SystemExit(f"{inputs}: no array for input(s) {', '.join(missing)}")
    outs = _forward(net, [feeds[n] for n in names])
    arrays = {name: o.asnumpy() for name, o in zip(output_names(model), outs)}
    np.savez(out, **arrays)
    return {"outputs": {k: list(v.shape) for k, v in arrays.items()}}


# -------------------------------------------------------------------------------------- training


def _mse(pred, y):
    return ((pred - y) ** 2).mean()


def _fit(net, x: np.ndarray, y: np.ndarray, steps: int, lr: float, grads: dict | None = None) -> list[float]:
    params = net.collect_params()
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": lr})
    xs, ys = nd.array(x, ctx=CTX), nd.array(y, ctx=CTX)
    losses = []
    for step in range(steps):
        with autograd.record():
            loss = _mse(net(xs), ys)
        loss.backward()
        if step == 0 and grads is not None:
            for name, p in params.items():
                if p.grad_req != "null":
                    grads[name] = p.grad(CTX).asnumpy()
        trainer.step(1)
        losses.append(float(loss.asscalar()))
    return losses


def train(
    model: str, data: str, out: str | None = None, steps: int = 10, lr: float = 0.05, grads: str | None = None
) -> dict:
    """Import `model` and train it on (x, y) from `data`; the loss before and after, in inference mode."""
    net = load(model)
    arrays = np.load(data)
    x, y = arrays["x"], arrays["y"]
    xs, ys = nd.array(x, ctx=CTX), nd.array(y, ctx=CTX)
    before = float(_mse(net(xs), ys).asscalar())
    first: dict = {}
    losses = _fit(net, x, y, steps, lr, grads=first if grads else None)
    after = float(_mse(net(xs), ys).asscalar())
    if grads:
        np.savez(grads, **first)
    result = {
        "loss_before": before,
        "loss_after": after,
        "train_losses": losses,
        "params": {k: list(v.shape) for k, v in net.collect_params().items()},
    }
    if out:
        with open(out, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


# ----------------------------------------------------------------------------------------- batch

COMMANDS = {"make": make, "run": run, "train": train}


def batch(jobs: str, out: str) -> list:
    """Run [{"cmd": ..., "args": {...}}, ...] in one process; each result or its error goes to `out`."""
    with open(jobs) as fh:
        todo = json.load(fh)
    results = []
    for job in todo:
        try:
            results.append({"ok": True, "result": COMMANDS[job["cmd"]](**job["args"])})
        except Exception as exc:  # reported to the test, which decides
            lines = str(exc).strip().splitlines()
            results.append(
                {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500],
                    "traceback": traceback.format_exc()[-3000:],
                }
            )
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("make")
    s.add_argument("outdir")
    s.add_argument("--steps", type=int, default=5)
    s = sub.add_parser("run")
    s.add_argument("model")
    s.add_argument("inputs")
    s.add_argument("out")
    s = sub.add_parser("train")
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("out")
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--lr", type=float, default=0.05)
    s.add_argument("--grads")
    s = sub.add_parser("batch")
    s.add_argument("jobs")
    s.add_argument("out")
    args = vars(p.parse_args(argv))
    cmd = args.pop("cmd")
    result = {"make": make, "run": run, "train": train, "batch": batch}[cmd](**args)
    if cmd != "batch":
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
