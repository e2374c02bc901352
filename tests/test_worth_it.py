"""bench/worth_it.py --quick produces its plot and table and reports the zero strategy's dead units."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("torch")
pytest.importorskip("onnx2torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def test_worth_it_quick(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "worth_it.py"), "--quick", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    png, md = tmp_path / "worth_it.png", tmp_path / "worth_it.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = md.read_text()
    for method in ("small (trained on)", "big from scratch", "grown: zero", "grown: noise", "grown: net2net"):
        assert f"| {method} |" in table
    # the zero strategy's new units never get a gradient with ReLU: all of them stay zero
    line = next(l for l in table.splitlines() if l.startswith("- `zero`:"))
    fractions = [float(f) for f in re.findall(r" (\d\.\d+) \(", line)]
    assert len(fractions) == 3 and all(f > 0.99 for f in fractions), line
    summary = json.loads((tmp_path / "worth_it.json").read_text())["summary"]
    assert all(t["dead_fraction"]["zero"] > 0.99 and t["dead_fraction"]["noise"] < 0.01 for t in summary.values())
