"""The benchmark keeps working (on a tiny model; no timing is asserted)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_grow_speed_runs_on_a_tiny_model():
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "grow_speed.py"), "--width", "32", "--depth", "2"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "x floor" in res.stdout and "widen --all x2 (verified)" in res.stdout


def test_grow_transformer_runs_on_a_tiny_encoder():
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "grow_transformer.py"), "--layers", "2", "--hidden", "32",
                          "--heads", "4", "--ffn", "64", "--vocab", "100"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "2 layers x hidden 32 -> 4 layers x hidden 64" in res.stdout and "x floor" in res.stdout


def test_zoo_grows_and_counts_layers():
    """bench/zoo.py on two of its models: every hidden layer grows, exactly (checked in onnxruntime)."""
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "zoo.py"), "--models", "inception-v2-caffe2",
                          "distilbert"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 5, res.stdout  # Inception-v2 once, DistilBERT fresh/trained x two exporters
    assert all("(100 %)" in row for row in rows), rows
    assert "5 models grown, 5 exact" in res.stdout
