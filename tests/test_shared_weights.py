"""Shared (deduplicated) initializers: torch's exporters merge equal tensors read by unrelated nodes.

A freshly initialised Hugging Face model exported by the dynamo exporter reads one zero vector as the bias of
every LayerNorm and many Linears, and one vector of ones as the weight of every LayerNorm. Readers that grow
such a tensor differently get a copy each (untied); readers that grow it alike keep sharing it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxgrow import widen_model
from onnxgrow.widen import inspect_model, parse_size

pytest.importorskip("transformers")
from hf_models import export_hf

MODELS = ("bert", "vit")


@pytest.fixture(scope="module", params=MODELS)
def fresh(request, tmp_path_factory) -> tuple[str, str]:
    path = tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx"
    export_hf(request.param, path, "dynamo", trained=False)
    return request.param, str(path)


def shared(model: onnx.ModelProto) -> dict[str, int]:
    """Initializers read by more than one node, with their reader counts."""
    inits = {t.name for t in model.graph.initializer}
    counts = Counter(i for n in model.graph.node for i in set(n.input) if i in inits)
    return {k: c for k, c in counts.items() if c > 1}


def feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in model.graph.input:
        dims = [d.dim_value or 2 for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            out[i.name] = rng.integers(0, 50, size=dims).astype(np.int64)
        else:
            out[i.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def assert_exact(original: str, grown: onnx.ModelProto, tol: float = 1e-5) -> None:
    """Outputs of the grown model equal the original's (onnxruntime on both), relative to the output's scale."""
    ref = onnx.load(original)
    onnx.checker.check_model(grown)
    x = feeds(ref)
    for a, b in zip(run(ref, x), run(grown, x)):
        assert a.shape == b.shape
        assert np.max(np.abs(a - b)) <= tol * max(1.0, float(np.max(np.abs(a))))


def test_fresh_export_shares_initializers_between_unrelated_layers(fresh):
    """The premise: the exporter merged equal tensors (else these tests would test nothing)."""
    _, path = fresh
    assert len(shared(onnx.load(path))) >= 2


def test_all_x2_grows_every_free_group_exactly(fresh):
    name, path = fresh
    analysis = inspect_model(path, keep_outputs=True)
    growable = [g for g in analysis.groups if g.constraint != "blocked"]
    res = widen_model(path, all="x2", keep_outputs=True)
    assert res.report is not None and res.report.passed and res.exact
    assert {p.group.id for p in res.plans} == {g.id for g in growable}
    assert res.untied, "a fresh export needs untying to grow at all"
    assert_exact(path, res.model)


def test_every_group_alone_with_every_allowed_strategy(fresh):
    name, path = fresh
    analysis = inspect_model(path, keep_outputs=True)
    tried = 0
    for group in analysis.groups:
        if group.constraint == "blocked":
            continue
        new = parse_size("x2", group.size, "test")
        for init in ("noise", "zero", "net2net"):
            if group.allows(init, new) is not None:
                continue
            res = widen_model(path, {group.id: "x2"}, init=init, keep_outputs=True, check=False)
            assert_exact(path, res.model)
            tried += 1
    assert tried >= 10


@pytest.mark.parametrize("part", ["ffn", "heads", "hidden"])
def test_transformer_parts_grow_exactly(fresh, part):
    _, path = fresh
    res = widen_model(path, keep_outputs=True, **{part: "x2"})
    assert res.report is not None and res.report.passed
    assert_exact(path, res.model)


def test_a_real_tie_stays_a_tie(fresh):
    """Every LayerNorm reads one tensor of ones; they all normalise the hidden size, which --hidden grows
    alike for all of them: one grown tensor, still shared."""
    _, path = fresh
    original = onnx.load(path)
    ln_weights = {n.input[1] for n in original.graph.node if n.op_type == "LayerNormalization"}
    assert len(ln_weights) == 1
    res = widen_model(path, hidden="x2", keep_outputs=True)
    grown = res.model
    weights = {n.input[1] for n in grown.graph.node if n.op_type == "LayerNormalization"}
    assert weights == ln_weights
    (w,) = [t for t in grown.graph.initializer if t.name in weights]
    assert list(w.dims) == [64]
    assert all(u.weight not in ln_weights for u in res.untied)


def test_keep_ties_and_json_report(fresh, tmp_path):
    _, path = fresh
    out = tmp_path / "grown.onnx"

    def cmd(target):
        return [sys.executable, "-m", "onnxgrow", "widen", path, "-o", str(target), "--heads", "x2", "--keep-outputs"]

    refused = subprocess.run(cmd(out) + ["--keep-ties"], capture_output=True, text=True)
    assert refused.returncode == 2 and "tied" in refused.stderr and "--keep-ties" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not out.exists()
    done = subprocess.run(cmd(out) + ["--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["untied"] and all(len(u["copies"]) >= 2 for u in report["untied"])
    grown = onnx.load(str(out))
    names = {t.name for t in grown.graph.initializer}
    for u in report["untied"]:
        assert set(u["copies"]) <= names
        for copy, readers in u["copies"].items():
            for node in grown.graph.node:
                if node.name in readers:
                    assert copy in node.input
    plain = subprocess.run(cmd(tmp_path / "p.onnx"), capture_output=True, text=True)
    assert "untied" in plain.stdout
