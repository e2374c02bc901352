"""Does growing scale with depth? And `deepen` of a BERT-base-sized encoder next to reading and writing it.

Depth scaling: BERT-style encoders (bench/grow_speed.py's builder: post-norm layers, hidden 64, 4 heads,
FFN 256, a vocabulary of 1000, so the weights are tiny and the time is the work on the graph) of 12 to 768
layers. Each command is a fresh process, timed against the floor, `onnx.load` + `onnx.save` of the input,
measured in the same run:
  inspect MODEL
  widen   MODEL --ffn x2 --no-verify
  deepen  MODEL --block copy --after layers --approximate --no-verify        (the layers twice over)
Each time divided by the floor should stay within 2 x of its value at the shallowest depth (issue 17's
budget). That ratio also compares the cost of a node with the floor's (mostly bytes), and its shallow end is
mostly Python start-up and imports; linearity itself is read from the seconds each further node costs over
the deepest step against the steps before it (1 when linear; a quadratic pass reads about 4).

BERT-base: the encoder with hidden 768, 12 heads, FFN 3072, a 30522-token vocabulary (109 M parameters)
deepened to 24 layers (`deepen --block copy --after layers --approximate`, without and with the
onnxruntime check), timed against `onnx.load` + `onnx.save` of the result; peak RSS of each step against
the size of the grown weights (the result's file).

Every step is timed `--repeat` times and the fastest run kept (the machine may be shared; the floor is
timed in the same way). Peak RSS is that of the fastest run.

Run:  python bench/grow_depth.py                                   (a few minutes; BERT-base needs ~3 GB RAM)
      python bench/grow_depth.py --layers 2 4 --base-hidden 32 --base-layers 2 --repeat 1  (what the test runs)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grow_speed import build_bert, timed, weights_bytes  # noqa: E402

#: budgets of issue 17
DEPTH_BUDGET = 2.0  # time / floor at any depth <= 2 x its value at the shallowest
DEEPEN_BUDGET = 1.2  # deepen --after layers --no-verify <= 1.2 x the floor on BERT-base -> 24 layers
MEMORY_BUDGET = 1.3  # peak RSS of deepen <= 1.3 x the grown weights
LINEAR_BUDGET = 1.5  # seconds per node over the deepest step <= 1.5 x over the steps before it

FLOOR = (
    "import onnx, sys; m = onnx.load(sys.argv[1]); "
    "onnx.save(m, sys.argv[2], save_as_external_data=sys.argv[3] == '1', "
    "all_tensors_to_one_file=True, location=sys.argv[2].rsplit('/', 1)[-1] + '.data')"
)


def best(cmd: list[str], repeat: int) -> tuple[float, float] | None:
    """(wall seconds, peak MiB) of the fastest of `repeat` runs; None when a run failed."""
    runs = []
    for _ in range(repeat):
        m = timed(cmd)
        if m is None:
            return None
        runs.append(m)
    return min(runs)


def _clean(folder: Path, stem: str) -> None:
    for p in folder.glob(stem + "*"):
        p.unlink()


def depth_rows(work: Path, layers: list[int], repeat: int) -> list[dict]:
    """Per depth, the floor and the three commands run in turn, `repeat` rounds (the fastest run of each kept):
    a slow spell of a shared machine then slows all four, not the one that ran during it."""
    py = sys.executable
    og = [py, "-m", "onnxgrow"]
    rows = []
    for n in layers:
        src = work / f"enc{n}.onnx"
        build_bert(src, layers=n, hidden=64, heads=4, ffn=256, vocab=1000)
        nodes = len(onnx.load(str(src), load_external_data=False).graph.node)
        print(f"== {n} layers ({nodes} nodes)", flush=True)
        commands = {
            "floor": [py, "-c", FLOOR, str(src), str(work / "floor.onnx"), "0"],
            "inspect": og + ["inspect", str(src)],
            "widen": og + ["widen", str(src), "-o", str(work / "wide.onnx"), "--ffn", "x2", "--no-verify"],
            "deepen": og
            + ["deepen", str(src), "-o", str(work / "deep.onnx"), "--block", "copy", "--after", "layers"]
            + ["--approximate", "--no-verify"],
        }
        runs: dict[str, list[tuple[float, float]] | None] = {key: [] for key in commands}
        for _ in range(repeat):
            for key, cmd in commands.items():
                done = runs[key]
                if done is None:  # failed once: not run again
                    continue
                m = timed(cmd)
                if m is None:
                    runs[key] = None
                else:
                    done.append(m)
        row: dict = {"layers": n, "nodes": nodes} | {key: min(r) if r else None for key, r in runs.items()}
        row["deep_weights"] = weights_bytes(work / "deep.onnx") if (work / "deep.onnx").exists() else 0
        for stem in ("floor.onnx", "wide.onnx", "deep.onnx", src.name):
            _clean(work, stem)
        rows.append(row)
        print("   " + ", ".join(f"{k} {v[0]:.2f} s" for k, v in row.items() if isinstance(v, tuple)), flush=True)
    return rows


COMMANDS = (("inspect", "inspect"), ("widen", "widen --ffn x2"), ("deepen", "deepen --after layers"))


def depth_report(rows: list[dict]) -> list[str]:
    lines = [
        "### Depth scaling: BERT-style encoders, hidden 64 (time / floor; floor = onnx.load + onnx.save of the input)",
        "",
        "| layers | nodes | floor (s) | "
        + " | ".join(f"{label} (s)" for _, label in COMMANDS)
        + " | "
        + " | ".join(f"{label} / floor" for _, label in COMMANDS)
        + " | deepen peak MiB | grown weights MiB | peak / grown |",
        "|---:|---:|---:|" + "---:|" * (2 * len(COMMANDS) + 3),
    ]
    first: dict[str, float] = {}
    worst: dict[str, float] = {}
    for row in rows:
        floor = row["floor"][0] if row["floor"] else None
        secs, ratios = [], []
        for key, _ in COMMANDS:
            m = row[key]
            secs.append(f"{m[0]:.2f}" if m else "failed")
            if m and floor:
                r = m[0] / floor
                first.setdefault(key, r)
                worst[key] = max(worst.get(key, 0.0), r / first[key])
                ratios.append(f"{r:.2f}")
            else:
                ratios.append("-")
        grown = row["deep_weights"] / 2**20
        peak = (
            f"{row['deepen'][1]:.0f} | {grown:.1f} | {row['deepen'][1] / grown:.2f}"
            if row["deepen"] and grown
            else "- | - | -"
        )
        lines.append(
            f"| {row['layers']} | {row['nodes']:,} | {floor:.2f} | "
            if floor
            else f"| {row['layers']} | {row['nodes']:,} | failed | "
        )
        lines[-1] += " | ".join(secs) + " | " + " | ".join(ratios) + f" | {peak} |"
    lines.append("")
    for key, label in COMMANDS:
        if key in worst:
            w = worst[key]
            lines.append(
                f"- {label}: time / floor grows {w:.2f} x from {rows[0]['layers']} to {rows[-1]['layers']} "
                f"layers: {'OK' if w <= DEPTH_BUDGET else 'MISSED'} (budget {DEPTH_BUDGET})"
            )
        else:
            lines.append(f"- {label}: FAILED")
    # linearity itself, free of the start-up every run pays: the cost of a further node over the deepest step
    # against its cost from the shallowest depth to the one before the deepest (1 when linear, ~4 when the
    # work is quadratic in the nodes and the last step quadruples the graph)
    if len(rows) >= 3:
        a, b, c = rows[0], rows[-2], rows[-1]
        for key, label in (("floor", "floor"),) + COMMANDS:
            if a[key] and b[key] and c[key] and c["nodes"] > b["nodes"] > a["nodes"]:
                lo = (b[key][0] - a[key][0]) / (b["nodes"] - a["nodes"])
                hi = (c[key][0] - b[key][0]) / (c["nodes"] - b["nodes"])
                if lo > 0:
                    lines.append(
                        f"- {label}: seconds per further node from {b['layers']} to {c['layers']} layers / from "
                        f"{a['layers']} to {b['layers']}: {hi / lo:.2f} (1 = linear in the graph; {LINEAR_BUDGET} "
                        f"allowed): {'OK' if hi / lo <= LINEAR_BUDGET else 'MISSED'}"
                    )
    # the cost of each further node: constant from one depth to the next when the time is linear in the graph
    slopes = []
    for key, label in (("floor", "floor"),) + COMMANDS:
        steps = []
        for a, b in zip(rows, rows[1:]):
            if a[key] and b[key] and b["nodes"] > a["nodes"]:
                steps.append(f"{(b[key][0] - a[key][0]) * 1e3 / (b['nodes'] - a['nodes']):.2f}")
        if steps:
            slopes.append(f"{label} {' / '.join(steps)}")
    if slopes:
        lines.append("- milliseconds per further node from one depth to the next (" + "; ".join(slopes) + ")")
    last = rows[-1]
    if last["deepen"] and last["deep_weights"]:
        r = last["deepen"][1] * 2**20 / last["deep_weights"]
        lines.append(
            f"- peak memory of deepen at {last['layers']} layers {r:.2f} x grown weights: "
            f"{'OK' if r <= MEMORY_BUDGET else 'MISSED'} (budget {MEMORY_BUDGET}; at hidden 64 the weights "
            "are small next to Python, its imports and the graph)"
        )
    return lines


def base_rows(work: Path, layers: int, hidden: int, heads: int, ffn: int, vocab: int, repeat: int) -> dict:
    py = sys.executable
    src, deep, deep_v = work / "base.onnx", work / "deep.onnx", work / "deep_v.onnx"
    print(f"== BERT-base-sized encoder: {layers} layers x hidden {hidden} -> {2 * layers} layers", flush=True)
    build_bert(src, layers=layers, hidden=hidden, heads=heads, ffn=ffn, vocab=vocab)
    cmd = [py, "-m", "onnxgrow", "deepen", str(src), "--block", "copy", "--after", "layers", "--approximate"]
    out = {"no_verify": best(cmd + ["-o", str(deep), "--no-verify"], repeat)}
    out["verified"] = best(cmd + ["-o", str(deep_v)], repeat)
    _clean(work, deep_v.name)
    out["input"] = weights_bytes(src)
    out["grown"] = weights_bytes(deep) if deep.exists() else 0
    external = any(work.glob(deep.name + "*.data"))
    out["floor"] = best([py, "-c", FLOOR, str(deep), str(work / "floor.onnx"), "1" if external else "0"], repeat)
    _clean(work, "floor.onnx")
    out["title"] = (
        f"{layers} layers x hidden {hidden} ({out['input'] / 2**20:.0f} MiB) -> {2 * layers} layers "
        f"({out['grown'] / 2**20:.0f} MiB)"
    )
    _clean(work, deep.name)
    _clean(work, src.name)
    return out


def base_report(base: dict) -> list[str]:
    floor, grown = base["floor"], base["grown"]
    lines = [
        f"### deepen --block copy --after layers of a BERT-base-sized encoder: {base['title']}",
        "",
        "| step | seconds | x floor | peak MiB | x grown weights |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m in (
        ("floor: onnx.load + onnx.save of the result", floor),
        ("deepen --after layers --no-verify", base["no_verify"]),
        ("deepen --after layers (verified)", base["verified"]),
    ):
        if m is None:
            lines.append(f"| {label} | failed | | | |")
            continue
        ratio = f"{m[0] / floor[0]:.2f}" if floor else "-"
        lines.append(f"| {label} | {m[0]:.2f} | {ratio} | {m[1]:.0f} | {m[1] * 2**20 / grown:.2f} |")
    lines.append("")
    if floor and base["no_verify"]:
        r = base["no_verify"][0] / floor[0]
        lines.append(
            f"- deepen (no verify) {r:.2f} x floor: {'OK' if r <= DEEPEN_BUDGET else 'MISSED'} (budget {DEEPEN_BUDGET})"
        )
    peaks = [m[1] for m in (base["no_verify"], base["verified"]) if m]
    if peaks and grown:
        r = max(peaks) * 2**20 / grown
        lines.append(
            f"- peak memory of deepen {r:.2f} x grown weights: {'OK' if r <= MEMORY_BUDGET else 'MISSED'} "
            f"(budget {MEMORY_BUDGET})"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[12, 48, 192, 768], help="depths of the scaling table")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each step; the fastest is kept (default 3)")
    ap.add_argument("--no-base", action="store_true", help="skip the BERT-base-sized encoder")
    ap.add_argument("--base-layers", type=int, default=12)
    ap.add_argument("--base-hidden", type=int, default=768)
    ap.add_argument("--base-heads", type=int, default=12)
    ap.add_argument("--base-ffn", type=int, default=3072)
    ap.add_argument("--base-vocab", type=int, default=30522)
    ap.add_argument("--tmp", default=None, help="folder for the models (default: the system temp folder)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = ap.parse_args()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="onnxgrow-depth-", dir=args.tmp))
    try:
        out = depth_report(depth_rows(work, sorted(args.layers), args.repeat))
        if not args.no_base:
            out += [""] + base_report(
                base_rows(
                    work,
                    args.base_layers,
                    args.base_hidden,
                    args.base_heads,
                    args.base_ffn,
                    args.base_vocab,
                    args.repeat,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    note = (
        f"(each step a fresh process, the fastest of {args.repeat} runs; at each depth the floor and the commands "
        "run in turn, round after round. Times include Python start-up and imports; peak MiB is the peak RSS of "
        f"that process. Load average {load[0]:.1f} on {os.cpu_count()} CPUs at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; single times on a small VM vary by 10-30 %, "
        "ratios come from the same run.)"
    )
    text = "\n".join(out + ["", note])
    print("\n" + text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"# bench/grow_depth.py results\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
