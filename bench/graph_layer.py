"""Which graph layer? onnxgrow's own (onnxgrow/graph.py over the protobuf) against onnx-graphsurgeon.

Every command answers the same structural questions (producers, consumers, subgraph walks, which tensors are
still read) before it rewrites weights. This measures, on a BERT-base-sized encoder built here (random
weights, ~110 M parameters) and in one run, wall time and peak resident memory of a fresh process that:
  floor        onnx.load + onnx.save
  onnxgrow     onnx.load, builds producer and consumer maps, the read set and a walk, + onnx.save
  graphsurgeon onnx.load, gs.import_onnx, cleanup().toposort(), gs.export_onnx, + onnx.save
and prints each as a ratio to the floor (each measured 3 times, the minimum kept).

Run:  python bench/graph_layer.py [--layers 12] [--hidden 768] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grow_speed import build_bert, timed  # noqa: E402

_LOAD = "import onnx, sys; m = onnx.load(sys.argv[1]); "
_SAVE = "onnx.save(m, sys.argv[2])"
STEPS = {
    "floor": _LOAD + _SAVE,
    "onnxgrow": _LOAD + "from onnxgrow import graph as G; g = m.graph; "
    "p, c, r = G.producers(g), G.consumers(g, nested=True), G.reads(g); "
    "n = sum(1 for _ in G.walk(g)); " + _SAVE,
    "graphsurgeon": _LOAD + "import onnx_graphsurgeon as gs; g = gs.import_onnx(m); g.cleanup().toposort(); "
    "m = gs.export_onnx(g); " + _SAVE,
}


def measure(model: Path, out: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """The minimum wall time and peak RSS (MiB) of each step over `repeats` fresh processes."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):
        for name, code in STEPS.items():
            got = timed([sys.executable, "-c", code, str(model), str(out)])
            if got is None:
                raise SystemExit(f"{name} failed")
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], got[0]), min(old[1], got[1]))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model, out = Path(d) / "bert.onnx", Path(d) / "out.onnx"
        heads = max(1, args.hidden // 64)
        build_bert(model, layers=args.layers, hidden=args.hidden, heads=heads, ffn=4 * args.hidden)
        size = model.stat().st_size / 2**20
        best = measure(model, out, args.repeats)
    floor_t, floor_m = best["floor"]
    lines = [
        f"BERT-style encoder, {args.layers} layers, hidden {args.hidden} ({size:.0f} MiB); "
        f"minimum of {args.repeats} fresh processes each",
        "",
        "| step | seconds | × floor | peak MiB | × floor's peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (t, m) in best.items():
        lines.append(f"| {name} | {t:.2f} | {t / floor_t:.2f} | {m:.0f} | {m / floor_m:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(
            "# Graph layer: onnxgrow/graph.py against onnx-graphsurgeon (bench/graph_layer.py)\n\n" + text + "\n"
        )


if __name__ == "__main__":
    main()
