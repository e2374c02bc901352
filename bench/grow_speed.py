"""How much does growing cost next to reading and writing the model once?

Builds its models locally (random weights, nothing downloaded) and measures, in one run, wall time and
peak resident memory of:
  floor   = onnx.load + onnx.save of the grown result
  widen   = onnxgrow widen --all x2 without verification, and with verification
  verify  = onnxgrow verify ORIGINAL GROWN, next to Polygraphy comparing the same two models with
            onnxruntime (polygraphy run A --onnxrt --save-outputs, then run B --load-outputs)
and prints each as a ratio to the floor, and peak memory / size of the grown model's weights, also less the
baseline: the peak RSS of a process that only starts Python and imports what `onnxgrow` imports (onnx,
numpy, onnxruntime, rich), measured in the same run. The budget is checked on the whole peak.

Models: vgg16 (~138 M parameters), bert (BERT-base-sized encoder, ~110 M), mlp2g (an MLP whose
weights exceed protobuf's 2 GB limit, saved with external data).

Run:  python bench/grow_speed.py                      # all three (needs ~16 GB RAM, several minutes)
      python bench/grow_speed.py --models vgg16 bert
      python bench/grow_speed.py --width 32 --depth 2  # a tiny square MLP only (what the test runs)
      python bench/grow_speed.py --models mlp2g --mlp2g-dims 4096 4608 4096  # a smaller external-data MLP
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Budgets from issue 9.
GROW_BUDGET = 1.5  # grow without verification <= 1.5 x floor
MEMORY_BUDGET = 2.5  # peak RSS <= 2.5 x the grown model's weights


def _save(model: onnx.ModelProto, path: Path, external: bool = False) -> None:
    if external:
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save(model, str(path))


def _w(rng, name, shape, scale=None):
    fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]))
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(scale if scale is not None else 1.0 / np.sqrt(fan_in))
    return numpy_helper.from_array(a, name)


def _zeros(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def build_mlp(path: Path, width: int, depth: int) -> dict:
    """A square MLP: depth x (Gemm width x width + Relu) + a 10-way head."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        inits += [_w(rng, f"w{i}", (width, width)), _zeros(f"b{i}", (width,))]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    inits.append(_w(rng, "head", (width, 10), 1.0))
    nodes.append(helper.make_node("Gemm", [x, "head"], ["y"], name="head"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return {"x": [2, width]}


def build_mlp2g(path: Path, d_in: int = 16384, hidden: int = 18432, d_out: int = 16384) -> dict:
    """in -> hidden -> out: 2 x 16384 x 18432 floats = 2.4 GB (> protobuf's 2 GB), external data.
    Only `hidden` can grow, so x2 doubles the weights (4.8 GB) rather than quadrupling them."""
    rng = np.random.default_rng(0)
    inits = [
        _w(rng, "w0", (d_in, hidden)),
        _zeros("b0", (hidden,)),
        _w(rng, "w1", (hidden, d_out)),
        _zeros("b1", (d_out,)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0"),
        helper.make_node("Relu", ["h"], ["r"], name="relu0"),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], name="fc1"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp2g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", d_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    del inits, graph
    _save(model, path, external=True)
    return {"x": [2, d_in]}


def build_vgg16(path: Path, classes: int = 1000) -> dict:
    """VGG-16 (configuration D): 13 3x3 convs + 3 FC layers, 138.4 M parameters, input N x 3 x 224 x 224."""
    rng = np.random.default_rng(0)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    nodes, inits, x, c = [], [], "x", 3
    for i, v in enumerate(cfg):
        if v == "M":
            nodes.append(
                helper.make_node("MaxPool", [x], [f"p{i}"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
            )
            x = f"p{i}"
            continue
        inits += [_w(rng, f"conv{i}.w", (v, c, 3, 3)), _zeros(f"conv{i}.b", (v,))]
        nodes.append(
            helper.make_node("Conv", [x, f"conv{i}.w", f"conv{i}.b"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1])
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, c = f"r{i}", v
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
    x, d = "flat", 512 * 7 * 7
    for j, n in enumerate([4096, 4096, classes]):
        inits += [_w(rng, f"fc{j}.w", (d, n)), _zeros(f"fc{j}.b", (n,))]
        nodes.append(helper.make_node("Gemm", [x, f"fc{j}.w", f"fc{j}.b"], [f"f{j}"], name=f"fc{j}"))
        if j < 2:
            nodes.append(helper.make_node("Relu", [f"f{j}"], [f"fr{j}"], name=f"fcrelu{j}"))
            x = f"fr{j}"
        d = n
    graph = helper.make_graph(
        nodes,
        "vgg16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("f2", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return {"x": [2, 3, 224, 224]}


def build_bert(
    path: Path,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
    vocab: int = 30522,
    max_pos: int = 512,
) -> dict:
    """A BERT-base-sized encoder from MatMul/Add/LayerNormalization/Gelu/Softmax (opset 20), ~110 M params.
    Input token ids N x S; position embeddings are sliced to S."""
    rng = np.random.default_rng(0)
    hd = hidden // heads
    nodes, inits = [], []
    I64 = lambda name, vals: inits.append(numpy_helper.from_array(np.array(vals, np.int64), name))  # noqa: E731
    I64("shape_heads", [0, 0, heads, hd])
    I64("shape_merge", [0, 0, hidden])
    I64("zero", [0])
    I64("one", [1])  # noqa: E702
    inits.append(numpy_helper.from_array(np.array(1.0 / np.sqrt(hd), np.float32), "scale"))
    inits += [
        _w(rng, "emb.word", (vocab, hidden), 0.02),
        _w(rng, "emb.pos", (max_pos, hidden), 0.02),
        numpy_helper.from_array(np.ones(hidden, np.float32), "emb.ln.g"),
        _zeros("emb.ln.b", (hidden,)),
    ]
    nodes += [
        helper.make_node("Gather", ["emb.word", "ids"], ["we"], name="word_emb"),
        helper.make_node("Shape", ["ids"], ["ids_shape"], name="ids_shape"),
        helper.make_node("Slice", ["ids_shape", "one", "shape_merge"], ["seq"], name="seq_len"),  # [S]
        helper.make_node("Slice", ["emb.pos", "zero", "seq", "zero"], ["pe"], name="pos_emb"),
        helper.make_node("Add", ["we", "pe"], ["e"], name="emb_add"),
        helper.make_node("LayerNormalization", ["e", "emb.ln.g", "emb.ln.b"], ["h_in"], name="emb_ln", epsilon=1e-12),
    ]
    # shape_merge's first element is 0, so Slice(ids_shape, 1, 0) would be empty: use a dedicated end.
    nodes[2] = helper.make_node("Slice", ["ids_shape", "one", "two"], ["seq"], name="seq_len")
    I64("two", [2])
    x = "h_in"

    def dense(name, inp, d_in, d_out, out):
        inits.extend([_w(rng, f"{name}.w", (d_in, d_out)), _zeros(f"{name}.b", (d_out,))])
        nodes.extend(
            [
                helper.make_node("MatMul", [inp, f"{name}.w"], [f"{out}_mm"], name=f"{name}.mm"),
                helper.make_node("Add", [f"{out}_mm", f"{name}.b"], [out], name=f"{name}.add"),
            ]
        )

    def ln(name, inp, out):
        inits.extend(
            [numpy_helper.from_array(np.ones(hidden, np.float32), f"{name}.g"), _zeros(f"{name}.b", (hidden,))]
        )
        nodes.append(
            helper.make_node("LayerNormalization", [inp, f"{name}.g", f"{name}.b"], [out], name=name, epsilon=1e-12)
        )

    for i in range(layers):
        p = f"l{i}"
        for t in "qkv":
            dense(f"{p}.{t}", x, hidden, hidden, f"{p}_{t}")
            nodes.append(helper.make_node("Reshape", [f"{p}_{t}", "shape_heads"], [f"{p}_{t}h"], name=f"{p}.{t}.split"))
        nodes += [
            helper.make_node("Transpose", [f"{p}_qh"], [f"{p}_qt"], name=f"{p}.q.t", perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", [f"{p}_kh"], [f"{p}_kt"], name=f"{p}.k.t", perm=[0, 2, 3, 1]),
            helper.make_node("Transpose", [f"{p}_vh"], [f"{p}_vt"], name=f"{p}.v.t", perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", [f"{p}_qt", f"{p}_kt"], [f"{p}_s"], name=f"{p}.scores"),
            helper.make_node("Mul", [f"{p}_s", "scale"], [f"{p}_ss"], name=f"{p}.scale"),
            helper.make_node("Softmax", [f"{p}_ss"], [f"{p}_p"], name=f"{p}.softmax", axis=-1),
            helper.make_node("MatMul", [f"{p}_p", f"{p}_vt"], [f"{p}_c"], name=f"{p}.ctx"),
            helper.make_node("Transpose", [f"{p}_c"], [f"{p}_ct"], name=f"{p}.ctx.t", perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}_ct", "shape_merge"], [f"{p}_cm"], name=f"{p}.merge"),
        ]
        dense(f"{p}.o", f"{p}_cm", hidden, hidden, f"{p}_o")
        nodes.append(helper.make_node("Add", [x, f"{p}_o"], [f"{p}_r1"], name=f"{p}.res1"))
        ln(f"{p}.ln1", f"{p}_r1", f"{p}_a")
        dense(f"{p}.ffn1", f"{p}_a", hidden, ffn, f"{p}_f1")
        nodes.append(helper.make_node("Gelu", [f"{p}_f1"], [f"{p}_g"], name=f"{p}.gelu"))
        dense(f"{p}.ffn2", f"{p}_g", ffn, hidden, f"{p}_f2")
        nodes.append(helper.make_node("Add", [f"{p}_a", f"{p}_f2"], [f"{p}_r2"], name=f"{p}.res2"))
        ln(f"{p}.ln2", f"{p}_r2", f"{p}_out")
        x = f"{p}_out"
    graph = helper.make_graph(
        nodes,
        "bert",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", "S", hidden])],
        inits,
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    return {"ids": [2, 16]}


_WRAP = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "w = time.perf_counter() - t; sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:]) if r.returncode else None; "
    "print(r.returncode, w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def timed(cmd: list[str]) -> tuple[float, float] | None:
    """Wall seconds and peak RSS (MiB) of a command, measured by a fresh wrapper process (None: it failed)."""
    res = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True)
    rc, wall, kib = res.stdout.split()
    if rc != "0":
        print(f"  FAILED (exit {rc}): {' '.join(cmd[:6])} ...\n{res.stderr.strip()[-1500:]}", file=sys.stderr)
        return None
    return float(wall), float(kib) / 1024


def weights_bytes(path: Path) -> int:
    """Size of the model file plus its external data files."""
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "*.data"))


def _params(path: Path) -> int:
    m = onnx.load(str(path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == TensorProto.FLOAT)


_FLOOR = (
    "import onnx, sys; m = onnx.load(sys.argv[1]); "
    "onnx.save(m, sys.argv[2], save_as_external_data=sys.argv[3] == '1', "
    "all_tensors_to_one_file=True, location=sys.argv[2].rsplit('/', 1)[-1] + '.data')"
)


_BASELINE = "import onnx, numpy, onnxruntime, rich, onnxgrow.cli, onnxgrow.cli_grow, onnxgrow.widen, onnxgrow.verify"


def baseline() -> float:
    """Peak RSS (MiB) of a Python that only imports what onnxgrow's commands import."""
    m = timed([sys.executable, "-c", _BASELINE])
    return m[1] if m else 0.0


def bench_model(name: str, builder, d: Path, polygraphy: str | None) -> list:
    py = sys.executable
    src, out, out_v = d / f"{name}.onnx", d / f"{name}_x2.onnx", d / f"{name}_x2v.onnx"
    print(f"== {name}: building ...", flush=True)
    shapes = builder(src)
    rows = []
    grow_nv = timed([py, "-m", "onnxgrow", "widen", str(src), "-o", str(out), "--all", "x2", "--no-verify"])
    if grow_nv is None:
        return [(name, "widen --all x2 --no-verify", None)]
    grown = weights_bytes(out)
    external = any(out.parent.glob(out.name + "*.data"))
    floor = timed([py, "-c", _FLOOR, str(out), str(d / f"{name}_copy.onnx"), "1" if external else "0"])
    for p in d.glob(f"{name}_copy.onnx*"):
        p.unlink()
    grow_v = timed([py, "-m", "onnxgrow", "widen", str(src), "-o", str(out_v), "--all", "x2"])
    for p in d.glob(f"{name}_x2v.onnx*"):
        p.unlink()
    shape_args = [f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items()]
    verify = timed([py, "-m", "onnxgrow", "verify", str(src), str(out), "--input-shapes", *shape_args])
    poly = None
    if polygraphy:
        pshapes = [f"{k}:[{','.join(map(str, v))}]" for k, v in shapes.items()]
        ref = d / f"{name}_ref.json"
        a = timed([polygraphy, "run", str(src), "--onnxrt", "--input-shapes", *pshapes, "--save-outputs", str(ref)])
        b = a and timed(
            [
                polygraphy,
                "run",
                str(out),
                "--onnxrt",
                "--input-shapes",
                *pshapes,
                "--load-outputs",
                str(ref),
                "--atol",
                "1e-5",
                "--rtol",
                "1e-5",
            ]
        )
        if a and b:
            poly = (a[0] + b[0], max(a[1], b[1]))
        ref.unlink(missing_ok=True)
    info = f"{_params(src) / 1e6:.1f} M -> {_params(out) / 1e6:.1f} M params, grown weights {grown / 2**20:.0f} MiB" + (
        " (external data)" if external else ""
    )
    rows = [
        ("floor: onnx.load + save", floor),
        ("widen --all x2 --no-verify", grow_nv),
        ("widen --all x2 (verified)", grow_v),
        ("onnxgrow verify A B", verify),
    ]
    if polygraphy:
        rows.append(("polygraphy run A, run B", poly))
    for p in d.glob(f"{name}*"):
        p.unlink()
    return [info, grown, rows]


def report(name: str, result: list, base: float) -> list[str]:
    if len(result) != 3:
        return [f"### {name}: FAILED at {result[0][1]}"]
    info, grown, rows = result
    floor = rows[0][1]
    lines = [
        f"### {name}: {info}",
        "",
        f"| {'step':<28} | {'seconds':>8} | {'x floor':>7} | {'peak MiB':>8} | {'x weights':>9} | {'less base':>9} |",
        f"|{'-' * 30}|{'-' * 10}:|{'-' * 8}:|{'-' * 9}:|{'-' * 10}:|{'-' * 10}:|",
    ]
    for step, m in rows:
        if m is None:
            lines.append(f"| {step:<28} | {'failed':>8} | {'':>7} | {'':>8} | {'':>9} | {'':>9} |")
            continue
        ratio = f"{m[0] / floor[0]:.2f}" if floor else "-"
        lines.append(
            f"| {step:<28} | {m[0]:>8.2f} | {ratio:>7} | {m[1]:>8.0f} | {m[1] * 2**20 / grown:>9.2f} "
            f"| {(m[1] - base) * 2**20 / grown:>9.2f} |"
        )
    by = dict(rows)
    verdicts = []
    if floor and by["widen --all x2 --no-verify"]:
        r = by["widen --all x2 --no-verify"][0] / floor[0]
        verdicts.append(
            f"grow (no verify) {r:.2f} x floor: {'OK' if r <= GROW_BUDGET else 'MISSED'} (budget {GROW_BUDGET})"
        )
    peaks = [m[1] for s, m in rows if m and s.startswith("widen")]
    if peaks:
        r = max(peaks) * 2**20 / grown
        verdicts.append(
            f"peak memory of widen {r:.2f} x grown weights: {'OK' if r <= MEMORY_BUDGET else 'MISSED'} "
            f"(budget {MEMORY_BUDGET}; {(max(peaks) - base) * 2**20 / grown:.2f} x less the "
            f"{base:.0f} MiB baseline)"
        )
    if by.get("onnxgrow verify A B") and by.get("polygraphy run A, run B"):
        v, p = by["onnxgrow verify A B"][0], by["polygraphy run A, run B"][0]
        verdicts.append(f"verify {v:.2f} s vs Polygraphy {p:.2f} s: {'OK' if v <= p else 'MISSED'}")
    if grown >= 2**31:
        ok = by["widen --all x2 (verified)"] is not None and by["onnxgrow verify A B"] is not None
        verdicts.append(
            f"the > 2 GB model grows ({grown / 2**30:.1f} GiB of weights, external data) and verifies, "
            f"no protobuf size error: {'OK' if ok else 'FAILED'}"
        )
    lines += [""] + [f"- {v}" for v in verdicts]
    return lines


MODELS = {"vgg16": build_vgg16, "bert": build_bert, "mlp2g": build_mlp2g}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--width", type=int, help="bench only a square MLP of this width (tiny mode)")
    ap.add_argument("--depth", type=int, default=None, help="depth of that MLP (default 8)")
    ap.add_argument(
        "--mlp2g-dims",
        type=int,
        nargs=3,
        metavar=("IN", "HIDDEN", "OUT"),
        help="sizes of the mlp2g model (default 16384 18432 16384: 2.4 GB); smaller ones for quick runs",
    )
    ap.add_argument("--no-polygraphy", action="store_true", help="skip the Polygraphy comparison")
    ap.add_argument("--tmp", default=None, help="folder for the models (default: the system temp folder)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = ap.parse_args()
    polygraphy = None
    if not args.no_polygraphy:
        polygraphy = shutil.which(
            "polygraphy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        )
        if polygraphy is None:
            print("polygraphy is not installed (pip install polygraphy): skipping the Polygraphy comparison")
    if args.width is not None or args.depth is not None:
        width, depth = args.width or 1024, args.depth or 8
        models = {f"mlp {depth}x{width}": lambda p: build_mlp(p, width, depth)}
    else:
        models = {m: MODELS[m] for m in args.models}
        if args.mlp2g_dims and "mlp2g" in models:
            models["mlp2g"] = lambda p: build_mlp2g(p, *args.mlp2g_dims)
    base = baseline()
    out = [f"baseline (Python + the imports of onnxgrow's commands, no model): {base:.0f} MiB peak RSS", ""]
    print(out[0], flush=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        for name, builder in models.items():
            lines = report(name, bench_model(name.replace(" ", "_"), builder, Path(d), polygraphy), base)
            print("\n".join(lines), "", sep="\n", flush=True)
            out += lines + [""]
    note = (
        "(each step is a fresh process, so every time includes Python start-up and imports; "
        "peak MiB is the peak RSS of that process; 'less base' subtracts the baseline above before dividing)"
    )
    print(note)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(out + [note]) + "\n")


if __name__ == "__main__":
    main()
