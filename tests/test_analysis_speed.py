"""bench/analysis_speed.py keeps working: it times the inspect steps and fingerprints their results (no timing is
asserted); two fingerprints of the same models compare equal, and a changed result is reported."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "bench" / "analysis_speed.py")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT)


def test_fingerprints_compare_equal_and_a_change_is_found(tmp_path):
    enc = tmp_path / "enc.onnx"
    assert _run("build-bert", str(enc), "--layers", "2").returncode == 0
    models = [str(enc), str(ROOT / "models" / "cnn.onnx")]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        res = _run("dump", str(out), *models)
        assert res.returncode == 0, res.stderr
    same = _run("compare", str(a), str(b))
    assert same.returncode == 0 and "same" in same.stdout
    prints = json.loads(a.read_text())
    assert prints["enc.onnx"]["groups"] and len(prints["enc.onnx"]["layers"]) == 2
    prints["enc.onnx"]["groups"][0]["reason"] = "changed"
    b.write_text(json.dumps(prints))
    differ = _run("compare", str(a), str(b))
    assert differ.returncode == 1 and "enc.onnx: groups differ" in differ.stdout


def test_timing_runs():
    res = _run("time", "--cpu", str(ROOT / "models" / "mlp.onnx"))
    assert res.returncode == 0, res.stderr
    assert "analyse" in res.stdout and "find_blocks" in res.stdout
