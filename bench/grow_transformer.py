"""Grow a BERT-base-sized encoder to hidden 1536 and 24 layers, timed against reading and writing the result.

Builds the encoder locally (bench/grow_speed.py's builder: 12 post-norm layers, hidden 768, 12 heads, FFN
3072, random weights, nothing downloaded), then runs, each as a fresh process:
  widen   onnxgrow widen bert.onnx --hidden x2 --heads x2 --ffn x2 --keep-outputs
          (hidden 768 -> 1536 by whole copies, 12 -> 24 heads of 64, FFN 3072 -> 6144; exact)
  deepen  onnxgrow deepen wide.onnx --block copy --after layers --approximate   (12 -> 24 layers; post-norm)
  floor   onnx.load + onnx.save of the final model
both without and with onnxgrow's onnxruntime check, and prints each time as a ratio to the floor.

Run:  python bench/grow_transformer.py                        (~110 M -> ~730 M parameters; needs ~12 GB RAM)
      python bench/grow_transformer.py --layers 2 --hidden 32 --heads 4 --ffn 64 --vocab 100   (what the test runs)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grow_speed import build_bert  # noqa: E402

FLOOR = (
    "import onnx, sys; m = onnx.load(sys.argv[1]); "
    "onnx.save(m, sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True, "
    "location=sys.argv[2].rsplit('/', 1)[-1] + '.data', size_threshold=1024)"
)


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return took


def _params(path: Path) -> int:
    import numpy as np
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ffn", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = ap.parse_args()
    og = [sys.executable, "-m", "onnxgrow"]
    work = Path(tempfile.mkdtemp(prefix="onnxgrow-bench-"))
    try:
        bert, wide, deep, floor = (work / n for n in ("bert.onnx", "wide.onnx", "deep.onnx", "floor.onnx"))
        build_bert(bert, layers=args.layers, hidden=args.hidden, heads=args.heads, ffn=args.ffn, vocab=args.vocab)
        rows = []
        for verified in (False, True):
            flag = [] if verified else ["--no-verify"]
            t_wide = _timed(
                og
                + [
                    "widen",
                    str(bert),
                    "-o",
                    str(wide),
                    "--hidden",
                    "x2",
                    "--heads",
                    "x2",
                    "--ffn",
                    "x2",
                    "--keep-outputs",
                ]
                + flag
            )
            t_deep = _timed(
                og
                + ["deepen", str(wide), "-o", str(deep), "--block", "copy", "--after", "layers", "--approximate"]
                + flag
            )
            label = "verified" if verified else "no verify"
            rows += [
                (f"widen --hidden x2 --heads x2 --ffn x2 ({label})", t_wide),
                (f"deepen --after layers ({label})", t_deep),
                (f"both ({label})", t_wide + t_deep),
            ]
        t_floor = _timed([sys.executable, "-c", FLOOR, str(deep), str(floor)])
        before, after = _params(bert), _params(deep)
        size = sum(p.stat().st_size for p in work.glob("deep.onnx*"))
        lines = [
            f"### BERT-style encoder: {args.layers} layers x hidden {args.hidden} -> "
            f"{2 * args.layers} layers x hidden {2 * args.hidden}",
            f"parameters {before / 1e6:.1f} M -> {after / 1e6:.1f} M, result {size / 2**20:.0f} MiB",
            "",
            "| step | seconds | x floor |",
            "|---|---:|---:|",
            f"| floor: onnx.load + onnx.save of the result | {t_floor:.2f} | 1.00 |",
        ]
        lines += [f"| {name} | {t:.2f} | {t / t_floor:.2f} |" for name, t in rows]
        lines += ["", "(each step is a fresh process: times include Python start-up and imports)"]
        text = "\n".join(lines)
        print(text)
        if args.markdown:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(f"# bench/grow_transformer.py results\n\n{text}\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
