"""How much does growing cost next to reading and writing the model once?

Builds an MLP locally (random weights, nothing downloaded), then times in one run:
  floor  = onnx.load + onnx.save of the grown result
  widen  = onnxgrow widen --all x2 without verification, and with verification
and prints each as a ratio to the floor, with peak resident memory. Run: python bench/grow_speed.py [--hidden N]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def build_mlp(path: Path, width: int, depth: int) -> None:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")
        inits += [w, b]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    head = numpy_helper.from_array(rng.standard_normal((width, 10)).astype(np.float32), "head")
    inits.append(head)
    nodes.append(helper.make_node("Gemm", [x, "head"], ["y"], name="head"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


_WRAP = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
         "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command, measured by a fresh wrapper process."""
    out = subprocess.run([sys.executable, "-c", _WRAP, *cmd], check=True, capture_output=True, text=True).stdout
    wall, kib = out.split()
    return float(wall), float(kib) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=8)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "mlp.onnx", Path(d) / "wide.onnx"
        build_mlp(src, args.width, args.depth)
        grow_nv = timed([py, "-m", "onnxgrow", "widen", str(src), "-o", str(out), "--all", "x2", "--no-verify"])
        grow_v = timed([py, "-m", "onnxgrow", "widen", str(src), "-o", str(out), "--all", "x2"])
        floor = timed([py, "-c", f"import onnx; onnx.save(onnx.load({str(out)!r}), {str(Path(d) / 'copy.onnx')!r})"])
        weights_mib = out.stat().st_size / 2**20
    print(f"MLP {args.depth}x{args.width} grown x2: {weights_mib:.1f} MiB of weights")
    print(f"{'step':<28}{'seconds':>9}{'x floor':>9}{'peak MiB':>10}{'x weights':>11}")
    for name, (sec, mib) in [("floor: onnx.load + save", floor), ("widen --all x2 --no-verify", grow_nv),
                             ("widen --all x2 (verified)", grow_v)]:
        print(f"{name:<28}{sec:>9.2f}{sec / floor[0]:>9.2f}{mib:>10.0f}{mib / weights_mib:>11.2f}")
    print("(each step is a fresh process, so every time includes Python start-up and imports)")


if __name__ == "__main__":
    main()
