"""The inspect and widen commands as a user runs them: exit codes, one-line errors, nothing written on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxgrow.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxgrow", *args], capture_output=True, text=True)


def outputs(path: Path, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_inspect_json_lists_groups(capsys):
    assert main(["inspect", str(MODELS / "mlp.onnx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    groups = {g["id"]: g for g in data["groups"]}
    assert set(groups["g0"]) >= {"id", "size", "constraint", "reason", "producers", "consumers", "weights"}
    assert groups["g0"]["size"] == 64 and groups["g0"]["constraint"] == "free" and groups["g0"]["reason"] is None
    assert "fc1.weight" in groups["g0"]["weights"] and "fc2.weight" in groups["g0"]["weights"]
    blocked = [g for g in data["groups"] if g["constraint"] == "blocked"]
    assert blocked and all("logits" in g["reason"] for g in blocked)


def test_inspect_table(capsys):
    assert main(["inspect", str(MODELS / "cnn.onnx")]) == 0
    out = capsys.readouterr().out
    assert "g0" in out and "free" in out and "blocked" in out and "residual blocks" in out


@pytest.mark.parametrize("init", ["noise", "zero", "net2net"])
def test_widen_writes_exact_model(tmp_path, init, capsys):
    src = MODELS / "cnn.onnx"
    before = src.read_bytes()
    out = tmp_path / "wide.onnx"
    assert main(["widen", str(src), "-o", str(out), "--all", "x2", "--init", init]) == 0
    text = capsys.readouterr().out
    assert "16 -> 32" in text and f"wrote {out}" in text
    assert src.read_bytes() == before
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    want, got = outputs(src, {"x": x})[0], outputs(out, {"x": x})[0]
    assert np.max(np.abs(want - got)) <= 1e-5 * max(1.0, np.max(np.abs(want)))
    grown = onnx.load(str(out))
    onnx.checker.check_model(grown, full_check=True)
    sizes = {t.name: list(t.dims) for t in grown.graph.initializer}
    assert sizes["head.weight"] == [10, 32]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.onnx"]


def test_widen_json_and_layer_names(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = main(
        [
            "widen",
            str(MODELS / "mlp.onnx"),
            "-o",
            str(out),
            "--layer",
            "/fc1/Gemm=100",
            "--layer",
            "fc2.weight=+3",
            "--json",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert {(g["id"], g["old"], g["new"]) for g in data["groups"]} == {("g0", 64, 100), ("g1", 32, 35)}
    assert data["verification"]["passed"] and data["params_after"] > data["params_before"]
    dims = {t.name: list(t.dims) for t in onnx.load(str(out)).graph.initializer}
    assert dims["fc1.weight"] == [100, 784] and dims["fc2.weight"] == [35, 100] and dims["fc3.weight"] == [10, 35]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--layer", "g2=x2"], ["g2", "graph output logits"]),
        (["--layer", "fc1=x2"], ["fc1", "did you mean", "/fc1/Gemm"]),
        (["--layer", "g0=32"], ["smaller", "shrinking is not supported"]),
        (["--layer", "g0=x1"], ["factor", "greater than 1"]),
        (["--layer", "g0=x0.5"], ["greater than 1"]),
        (["--layer", "g0=x2", "--layer", "fc1.weight=x3"], ["g0", "already requested"]),
        (["--layer", "g0"], ["NAME=SIZE"]),
        (["--all", "2"], ["--all", "x2"]),
        ([], ["--layer", "--all"]),
    ],
)
def test_widen_bad_requests(tmp_path, args, words):
    out = tmp_path / "o.onnx"
    res = run_cli("widen", str(MODELS / "mlp.onnx"), "-o", str(out), *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_widen_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes((MODELS / "mlp.onnx").read_bytes())
    res = run_cli("widen", str(src), "-o", str(src), "--all", "x2")
    assert res.returncode == 2 and "never overwrites its input" in res.stderr
    assert src.read_bytes() == (MODELS / "mlp.onnx").read_bytes()


def test_widen_missing_output_folder(tmp_path):
    res = run_cli("widen", str(MODELS / "mlp.onnx"), "-o", str(tmp_path / "nope" / "o.onnx"), "--all", "x2")
    assert res.returncode == 2 and "does not exist" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_failed_verification_writes_nothing(tmp_path, monkeypatch, capsys):
    """A rewrite that breaks the model (simulated) is caught by verification: exit 1, no file."""
    from onnxgrow.passes.widen import WidenPass

    real = WidenPass.call  # what the command runs: with -o, the grown model is written as it is grown

    def broken(self, model):
        done = real(self, model)
        assert self.stream
        t = next(t for t in done.model.graph.initializer if t.name == "fc3.bias")
        arr = np.frombuffer(bytes(done.deferred.pop(t.name).produce()), np.float32) + 1e-2
        t.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32).reshape(t.dims), t.name))
        return done

    monkeypatch.setattr(WidenPass, "call", broken)
    out = tmp_path / "o.onnx"
    assert main(["widen", str(MODELS / "mlp.onnx"), "-o", str(out), "--all", "x2"]) == 1
    err = capsys.readouterr().err
    assert "verification failed" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_replicate_group_needs_net2net(tmp_path, capsys):
    """LayerNorm groups only grow by whole copies; asking for noise names the LayerNorm."""
    from onnxgrow.widen import inspect_model

    proto = _layernorm_mlp()
    path = tmp_path / "ln.onnx"
    onnx.save(proto, str(path))
    groups = {g.id: g for g in inspect_model(str(path)).groups}
    assert groups["g0"].constraint == "replicate"
    out = tmp_path / "o.onnx"
    assert main(["widen", str(path), "-o", str(out), "--layer", "g0=x2"]) == 2
    assert "LayerNormalization" in capsys.readouterr().err and not out.exists()
    assert main(["widen", str(path), "-o", str(out), "--layer", "g0=x2", "--init", "net2net"]) == 0
    assert out.exists()


def _layernorm_mlp() -> onnx.ModelProto:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w1")
    g = numpy_helper.from_array(rng.random(6).astype(np.float32) + 0.5, "ln.g")
    b = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "ln.b")
    w2 = numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("LayerNormalization", ["h", "ln.g", "ln.b"], ["n"], name="ln", axis=-1),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [w1, g, b, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_value_info_of_grown_weights_is_refreshed():
    """The dynamo exporter records value_info for weights too; stale entries break shape inference downstream."""
    from onnx import helper, numpy_helper

    from onnxgrow.widen import widen_model

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["a"], name="fc1"),
            helper.make_node("Relu", ["a"], ["r"], name="act"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [w1, w2],
        value_info=[
            helper.make_tensor_value_info("w1", onnx.TensorProto.FLOAT, [8, 6]),
            helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 6]),
        ],
    )
    grown = widen_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"fc1": "x2"}).model
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in grown.graph.value_info}
    assert shapes == {"w1": [8, 12], "a": [2, 12]}
    onnx.shape_inference.infer_shapes(grown, strict_mode=True)
    onnx.checker.check_model(grown, full_check=True)
