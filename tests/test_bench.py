"""The benchmark keeps working (on a tiny model; no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_grow_speed_runs_on_a_tiny_model():
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "grow_speed.py"), "--width", "32", "--depth", "2"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "x floor" in res.stdout and "widen --all x2 (verified)" in res.stdout


def test_grow_transformer_runs_on_a_tiny_encoder():
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "grow_transformer.py"),
            "--layers",
            "2",
            "--hidden",
            "32",
            "--heads",
            "4",
            "--ffn",
            "64",
            "--vocab",
            "100",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "2 layers x hidden 32 -> 4 layers x hidden 64" in res.stdout and "x floor" in res.stdout


def test_grow_depth_runs_on_tiny_encoders():
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "grow_depth.py"),
            "--layers",
            "2",
            "3",
            "--repeat",
            "1",
            "--base-layers",
            "2",
            "--base-hidden",
            "32",
            "--base-heads",
            "4",
            "--base-ffn",
            "64",
            "--base-vocab",
            "100",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "| 3 |" in res.stdout and "deepen --after layers / floor" in res.stdout
    assert "2 layers x hidden 32" in res.stdout and "deepen --after layers (verified)" in res.stdout


def test_zoo_grows_and_counts_layers():
    """bench/zoo.py on two of its models: every hidden layer grows, exactly (checked in onnxruntime)."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "zoo.py"), "--models", "inception-v2-caffe2", "distilbert"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 5, res.stdout  # Inception-v2 once, DistilBERT fresh/trained x two exporters
    assert all("(100 %)" in row for row in rows), rows
    assert "5 models grown, 5 exact" in res.stdout


def test_zoo_exports_counts_what_converts_and_says_why_not(tmp_path, monkeypatch):
    """bench/zoo.py --exports: a grown CNN converts to PyTorch and MXNet and computes the same there; a GELU written
    with Erf converts to PyTorch but not to MXNet, with the reason; the table counts both."""
    import importlib.util

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxgrow import widen_model

    spec = importlib.util.spec_from_file_location("zoo", ROOT / "bench" / "zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "zoo", zoo)  # its dataclasses look their module up there
    spec.loader.exec_module(zoo)
    widen_model(ROOT / "models" / "cnn.onnx", all="x2", output=tmp_path / "cnn_x2.onnx")
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Erf", ["h"], ["y"])],
        "erf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "erf.onnx")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cnn = zoo.export_checks(tmp_path / "cnn_x2.onnx", tmp_path / "a")
    erf = zoo.export_checks(tmp_path / "erf.onnx", tmp_path / "b")
    assert cnn[0].startswith("yes (") and erf[0].startswith("yes ("), (cnn, erf)
    if (ROOT / ".venv-mxnet" / "bin" / "python").exists():
        assert cnn[1].startswith("yes ("), cnn
    assert erf[1].startswith("no: ") and "Erf" in erf[1], erf
    rows = [
        zoo.Row("cnn", "x", hidden=2, grown=2, error=0.0, torch=cnn[0], mxnet=cnn[1]),
        zoo.Row("erf", "x", hidden=1, grown=1, error=0.0, torch=erf[0], mxnet=erf[1]),
    ]
    table = zoo.markdown(rows, exports=True)
    assert "| to PyTorch | to MXNet |" in table and "compute the same there: 2/2." in table
    assert ("MXNet 1.9 and compute the same there: 1/2." in table) == cnn[1].startswith("yes")
