"""Time the analysis steps of `inspect` (load with folding, analyse, find_blocks, transformer layers) and check
that a change to them keeps their results: a fingerprint of every group, block, layer and of the analysis
state, written as JSON and compared with one written before the change.

Run:  python bench/analysis_speed.py time [--cpu] MODEL.onnx [MODEL ...]  # best of 3, in-process
      python bench/analysis_speed.py dump OUT.json MODEL.onnx [MODEL ...]  # fingerprints
      python bench/analysis_speed.py compare A.json B.json                 # exit 1 when they differ
      python bench/analysis_speed.py build-bert OUT.onnx --layers 192      # a deep encoder (grow_speed.py's)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import onnx

from onnxgrow import io
from onnxgrow.analysis import transformer
from onnxgrow.analysis.blocks import find_blocks
from onnxgrow.analysis.groups import Analysis, analyse
from onnxgrow.analysis.state import State
from onnxgrow.passes.fold import fold_constants


def _state(st: State) -> dict:
    """What the rewrite reads of the analysis state, with every atom named by its union-find root."""

    def lay(layout) -> str:
        return repr(st.resolve(layout))

    roots = sorted({st.find(a) for a in range(len(st.parent))})
    return {
        "parent": [st.find(a) for a in range(len(st.parent))],
        "roots": {
            str(r): [
                st.info[r].size,
                st.info[r].origin,
                st.info[r].producers,
                st.info[r].constraints,
                st.info[r].granularity,
                st.info[r].nonzero_ops,
            ]
            for r in roots
        },
        "layouts": {name: [lay(x) for x in st.layout(name) or []] for name in st.layouts},
        "weight_uses": [[u.node, u.init, u.axis, lay(u.layout), u.role, u.fill] for u in st.weight_uses],
        "value_uses": [
            [v.node, v.init, v.index, lay(v.layout), v.input_index, v.divisor, v.per and lay(v.per), v.multiple]
            for v in st.value_uses
        ],
        "attr_uses": [[a.node, a.attr, lay(a.layout), a.divisor, a.index, a.multiple] for a in st.attr_uses],
        "positions_uses": [[p.node, p.init, [lay(x) for x in p.layouts]] for p in st.positions_uses],
        "same_factor": [[[lay(x) for x in parts], why] for parts, why in st.same_factor],
        "nonzero_at": st.nonzero_at,
        "signs": st.signs,
        "boundaries": st.boundaries,
        "splits": {str(k): repr(v) for k, v in st.splits.items()},
        "replicas": sorted(st.replicas),
        "kept_outputs": st.kept_outputs,
        "subgraph_reads": sorted(st.subgraph_reads),
    }


def fingerprint(model: onnx.ModelProto) -> dict:
    """Groups, blocks, layers and analysis state of a loaded model, as plain JSON values."""
    analysis: Analysis = analyse(model)
    return {
        "groups": [g.to_dict() | {"root": g.root} for g in analysis.groups],
        "blocks": [b.to_dict() | {"entry": b.entry, "exit": b.exit, "add": b.add} for b in find_blocks(model)],
        "layers": [layer.to_dict() for layer in transformer.layers(analysis)],
        "state": _state(analysis.state),
        "model": hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest(),
    }


def timings(path: str, clock=time.perf_counter) -> dict[str, float]:
    """Seconds of each step, best of 3 (each step's best taken on its own); `clock` time.process_time counts
    this process's CPU time only (steadier on a shared machine)."""
    best: dict[str, float] = {}
    for _ in range(3):
        t0 = clock()
        model = io.load(path)
        t1 = clock()
        analysis = analyse(model)
        t2 = clock()
        find_blocks(model)
        t3 = clock()
        transformer.layers(analysis)
        t4 = clock()
        unfolded = io.load(path, fold=False)
        t5 = clock()
        fold_constants(unfolded)
        t6 = clock()
        steps = {
            "fold": t6 - t5,
            "analyse": t2 - t1,
            "find_blocks": t3 - t2,
            "layers": t4 - t3,
            "total": t4 - t0,
        }
        for k, v in steps.items():
            best[k] = min(best.get(k, v), v)
    best["nodes"] = len(model.graph.node)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("models", nargs="+")
    t.add_argument("--cpu", action="store_true", help="CPU time of this process, not wall time")
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("models", nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    b = sub.add_parser("build-bert")
    b.add_argument("out")
    b.add_argument("--layers", type=int, default=192)
    args = ap.parse_args()
    if args.cmd == "time":
        for m in args.models:
            r = timings(m, time.process_time if args.cpu else time.perf_counter)
            per = 1e6 * r["analyse"] / r["nodes"]
            print(
                f"{Path(m).name}: {int(r['nodes'])} nodes  total {r['total']:.3f}s  fold {r['fold']:.3f}  "
                f"analyse {r['analyse']:.3f} ({per:.0f} us/node)  find_blocks {r['find_blocks']:.3f}  "
                f"layers {r['layers']:.3f}"
            )
        return 0
    if args.cmd == "dump":
        prints = {Path(m).name: fingerprint(io.load(m)) for m in args.models}
        Path(args.out).write_text(json.dumps(prints, sort_keys=True))
        return 0
    if args.cmd == "compare":
        a, b_ = json.loads(Path(args.a).read_text()), json.loads(Path(args.b).read_text())
        differ = [
            (m, k)
            for m in sorted(set(a) | set(b_))
            for k in ("groups", "blocks", "layers", "state", "model")
            if a.get(m, {}).get(k) != b_.get(m, {}).get(k)
        ]
        for m, k in differ:
            print(f"{m}: {k} differ")
        print("same" if not differ else f"{len(differ)} differences")
        return 1 if differ else 0
    sys.path.insert(0, str(Path(__file__).parent))
    from grow_speed import build_bert

    build_bert(Path(args.out), layers=args.layers, hidden=64, heads=4, ffn=256, vocab=1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
