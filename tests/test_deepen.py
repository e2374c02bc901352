"""Depth growth of real torch exports: identity layers, zero residual blocks and block copies.

Models (tests/deepen_models.py) are exported with the TorchScript exporter (dynamo=False) and, for the
transformer encoders and some CNNs, the dynamo exporter too. Every deepened model is run here in
onnxruntime (graph optimisations off) next to the original on the same random inputs — not only
checked through deepen's own report.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from deepen_models import ACTIVATIONS, export_named  # noqa: E402

import onnxgrow  # noqa: E402
from onnxgrow.analysis.blocks import find_blocks  # noqa: E402
from onnxgrow.deepen import deepen_model  # noqa: E402
from onnxgrow.errors import OnnxGrowError  # noqa: E402
from onnxgrow.widen import inspect_model, widen_model  # noqa: E402

HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
NEEDS_ONNXSCRIPT = pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="dynamo export needs onnxscript")
DYNAMO = pytest.param(True, id="dynamo", marks=NEEDS_ONNXSCRIPT)
TORCHSCRIPT = pytest.param(False, id="torchscript")
TOL = 1e-5
BLOCK_ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


def case(name: str, dynamo: bool = False):
    """A (model name, exporter) parameter."""
    return pytest.param(
        name, dynamo, id=f"{name}-{'dynamo' if dynamo else 'ts'}", marks=[NEEDS_ONNXSCRIPT] if dynamo else []
    )


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export each (model, exporter) once per module: a cache of paths."""
    root = tmp_path_factory.mktemp("deepen_exports")
    cache: dict[tuple[str, bool], Path] = {}

    def get(name: str, dynamo: bool = False) -> Path:
        key = (name, dynamo)
        if key not in cache:
            cache[key] = export_named(name, root / f"{name}-{'dynamo' if dynamo else 'ts'}.onnx", dynamo)
        return cache[key]

    return get


def _feeds(model: onnx.ModelProto, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 2 for d in i.type.tensor_type.shape.dim]
        specs.append((i.name, dims))
    # a standard-normal draw and a wider one, so both small and large activations are exercised
    return [{n: (rng.standard_normal(d) * scale).astype(np.float32) for n, d in specs} for scale in (1.0, 3.0)]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def errors(original: onnx.ModelProto | Path, grown: onnx.ModelProto, seed: int = 7) -> tuple[float, float]:
    """(max abs error, max abs error / max |original output|) over every output and two inputs."""
    if not isinstance(original, onnx.ModelProto):
        original = onnx.load(str(original))
    worst_abs = worst_norm = 0.0
    for feeds in _feeds(original, seed):
        for want, got in zip(_run(original, feeds), _run(grown, feeds), strict=True):
            assert want.shape == got.shape
            diff = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
            scale = max(float(np.max(np.abs(want))), 1e-12)
            worst_abs, worst_norm = max(worst_abs, diff), max(worst_norm, diff / scale)
    return worst_abs, worst_norm


def assert_matches(original, grown: onnx.ModelProto, tol: float = TOL) -> None:
    onnx.checker.check_model(grown)
    _, norm = errors(original, grown)
    assert norm <= tol, f"normalised error {norm:.3g} > {tol:g}"


def assert_exact(original, grown: onnx.ModelProto) -> None:
    onnx.checker.check_model(grown)
    diff, _ = errors(original, grown)
    assert diff == 0.0, f"expected bitwise equal outputs, max abs error {diff:.3g}"


def nodes_by_op(model: onnx.ModelProto, *ops: str) -> list[onnx.NodeProto]:
    return [n for n in onnxgrow.load(model).graph.node if n.op_type in ops]


def new_names(original: onnx.ModelProto, grown: onnx.ModelProto) -> tuple[list[str], list[str]]:
    nodes = {n.name for n in original.graph.node}
    inits = {t.name for t in original.graph.initializer}
    return (
        [n.name for n in grown.graph.node if n.name not in nodes],
        [t.name for t in grown.graph.initializer if t.name not in inits],
    )


def hidden_sites(model: onnx.ModelProto) -> list[str]:
    """Tensors fed into every Gemm/MatMul layer but the first: the MLP's hidden activation outputs."""
    layers = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return [n.input[0] for n in layers[1:]]


# -- MLPs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_mlp_residual_after_every_activation(exported, act):
    path = exported(f"mlp_{act}")
    model = onnxgrow.load(path)
    sites = hidden_sites(model)
    assert len(sites) == 2
    for site in sites:
        for block_act in BLOCK_ACTIVATIONS:
            result = deepen_model(path, site, block="residual", activation=block_act, seed=3)
            assert result.exact and result.report.passed
            assert_matches(path, result.model)
            gemms = [n for n in result.model.graph.node if n.name in result.inserted and n.op_type == "Gemm"]
            assert len(gemms) == 2, result.inserted
        # a wider hidden layer too
        result = deepen_model(path, site, block="residual", hidden=11)
        dims = {t.name: list(t.dims) for t in result.model.graph.initializer}
        assert dims[f"{site}/deepen0/fc1.weight"][1] == 11
        assert_matches(path, result.model)


@pytest.mark.parametrize("dynamo", [TORCHSCRIPT, DYNAMO])
def test_mlp_identity_after_relu_is_exact(exported, dynamo):
    path = exported("mlp_relu", dynamo)
    model = onnxgrow.load(path)
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    assert len(relus) == 2
    for relu in relus:
        for after in (relu.name, relu.output[0]):  # node name or tensor name
            result = deepen_model(path, after, block="identity")
            ops = [n.op_type for n in result.model.graph.node if n.name in result.inserted]
            assert ops == ["Gemm", "Relu"]
            assert result.exact and result.report.passed
            assert any("followed by Relu" in note for note in result.notes), result.notes
            assert_exact(path, result.model)


@pytest.mark.parametrize(
    "act, op", [("sigmoid", "Sigmoid"), ("tanh", "Tanh"), ("leakyrelu", "LeakyRelu"), ("relu", "Gemm"), ("elu", "Elu")]
)
def test_identity_after_non_idempotent_inserts_linear_layer_alone(exported, act, op):
    path = exported(f"mlp_{act}")
    model = onnxgrow.load(path)
    node = next(n for n in model.graph.node if n.op_type == op)
    result = deepen_model(path, node.name, block="identity")
    ops = [n.op_type for n in result.model.graph.node if n.name in result.inserted]
    assert ops == ["Gemm"]
    text = " ".join(result.notes)
    assert "does not come out of an idempotent activation" in text and "linear" in text
    assert "--block residual" in text
    assert result.exact
    assert_matches(path, result.model)


# -- CNNs -----------------------------------------------------------------------------------------

CNNS = [f"cnn{d}d{v}" for d in (1, 2, 3) for v in ("", "_bn", "_bn_nofold")]


@pytest.mark.parametrize("name, dynamo", [case(n) for n in CNNS] + [case("cnn2d_bn", True), case("cnn3d", True)])
def test_cnn_identity_and_residual_after_relu(exported, name, dynamo):
    path = exported(name, dynamo)
    model = onnxgrow.load(path)
    if name.endswith("nofold"):
        assert len([n for n in model.graph.node if n.op_type == "BatchNormalization"]) == 2
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    assert len(relus) == 2
    for relu in relus:
        for kernel in (1, 3):
            result = deepen_model(path, relu.name, block="identity", kernel=kernel)
            convs = [n for n in result.model.graph.node if n.name in result.inserted and n.op_type == "Conv"]
            assert len(convs) == 1
            w = numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == convs[0].input[1]))
            assert list(w.shape[2:]) == [kernel] * (w.ndim - 2) and w.shape[0] == w.shape[1]
            dirac = np.zeros_like(w)
            for c in range(w.shape[0]):
                dirac[(c, c) + (kernel // 2,) * (w.ndim - 2)] = 1.0
            np.testing.assert_array_equal(w, dirac)
            assert result.exact and any("followed by Relu" in n for n in result.notes)
            assert_exact(path, result.model)
            result = deepen_model(path, relu.name, block="residual", kernel=kernel)
            assert result.exact and result.report.passed
            assert_matches(path, result.model)


@pytest.mark.parametrize("name", ["cnn1d_bn_nofold", "cnn2d_bn_nofold", "cnn3d_bn_nofold"])
def test_cnn_after_batchnorm(exported, name):
    """After a BatchNormalization (not idempotent): identity is a Dirac conv alone, residual matches."""
    path = exported(name)
    bn = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "BatchNormalization")
    result = deepen_model(path, bn.name, block="identity")
    assert [n.op_type for n in result.model.graph.node if n.name in result.inserted] == ["Conv"]
    assert any("--block residual" in n for n in result.notes)
    assert_matches(path, result.model)
    result = deepen_model(path, bn.name, block="residual", activation="silu")
    assert_matches(path, result.model)


# -- ResNet blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, dynamo", [case("resnet"), case("resnet_nofold"), case("resnet", True)])
def test_resnet_blocks_found_and_copied(exported, name, dynamo):
    path = exported(name, dynamo)
    model = onnxgrow.load(path)
    blocks = find_blocks(model)
    assert [b.kind for b in blocks] == ["basic", "basic", "bottleneck"]
    assert all(b.exact for b in blocks)
    convs = [
        len([n for n in b.nodes if next(m for m in model.graph.node if m.name == n).op_type == "Conv"]) for b in blocks
    ]
    assert convs == [2, 2, 3]
    for b in blocks:
        result = deepen_model(path, b.id, block="copy")
        assert result.exact and result.report.passed
        assert len(result.inserted) == len(b.nodes)
        assert len(nodes_by_op(result.model, "Conv")) == len(nodes_by_op(model, "Conv")) + convs[int(b.id[1:])]
        assert_exact(path, result.model)
    result = deepen_model(path, blocks[0].id, block="copy", count=2)
    assert len(result.inserted) == 2 * len(blocks[0].nodes)
    assert_exact(path, result.model)


# -- transformer encoders ------------------------------------------------------------------------

ENCODERS = [case(f"encoder_{n}_{a}", d) for n in ("pre", "post") for a in ("relu", "gelu") for d in (False, True)]
# a pre-norm stack ending in a final LayerNorm: the last block is still pre-norm (the norm is not part of it)
ENCODERS += [case("encoder_pre_gelu_final_norm"), case("encoder_pre_gelu_final_norm", True)]


@pytest.mark.parametrize("name, dynamo", ENCODERS)
def test_encoder_blocks_copied(exported, name, dynamo):
    path = exported(name, dynamo)
    blocks = find_blocks(onnxgrow.load(path))
    pre = "_pre_" in name
    kinds = ["attention", "feed-forward"] * 2
    assert [b.kind for b in blocks] == (kinds if pre else [k + " (post-norm)" for k in kinds])
    for b in blocks:
        assert b.exact is pre
        if not pre:  # an inexact copy is refused unless asked for, as widen refuses an inexact plan
            with pytest.raises(OnnxGrowError, match="pass approximate=True to write it anyway"):
                deepen_model(path, b.id, block="copy")
        result = deepen_model(path, b.id, block="copy", approximate=not pre)
        assert result.exact is pre
        assert result.report is not None
        if pre:
            assert result.report.passed
            assert_matches(path, result.model)
        else:
            # approximate: the copy normalises twice; the report says by how much
            assert result.report.worst_abs > 0
            assert result.report.worst_normalised > 0
            assert any("approximate" in n for n in result.notes)
            onnx.checker.check_model(result.model)
            abs_err, _ = errors(path, result.model)
            assert abs_err > 0


@pytest.mark.parametrize("dynamo", [TORCHSCRIPT, DYNAMO])
def test_encoder_copy_count_and_block_names(exported, dynamo):
    path = exported("encoder_pre_gelu", dynamo)
    model = onnxgrow.load(path)
    blocks = find_blocks(model)
    ff = next(b for b in blocks if b.kind == "feed-forward")
    result = deepen_model(path, ff.id, block="copy", count=3)
    assert len(result.inserted) == 3 * len(ff.nodes)
    assert all(n.startswith(f"{ff.id}/copy") for n in result.inserted)
    assert_matches(path, result.model)
    # the residual Add's node name works too
    result = deepen_model(path, ff.add, block="copy")
    assert_matches(path, result.model)


def test_encoder_residual_after_layernorm_output(exported):
    """A zero residual block in the middle of a transformer (3-D MatMul layers)."""
    path = exported("encoder_post_relu")
    model = onnxgrow.load(path)
    ln = [n for n in model.graph.node if n.op_type == "LayerNormalization"][0]
    result = deepen_model(path, ln.name, block="residual", activation="gelu")
    assert result.exact
    assert_matches(path, result.model)
    result = deepen_model(path, ln.name, block="identity")
    assert [n.op_type for n in result.model.graph.node if n.name in result.inserted] == ["MatMul", "Add"]
    assert_matches(path, result.model)


# -- count, names, noise, widen after deepen ----------------------------------------------------------


def test_count_three(exported):
    path = exported("mlp_relu")
    relu = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "Relu")
    before = len(nodes_by_op(path, "Gemm"))
    result = deepen_model(path, relu.name, block="identity", count=3)
    assert len(nodes_by_op(result.model, "Gemm")) == before + 3
    assert_exact(path, result.model)
    result = deepen_model(path, relu.name, block="residual", count=3)
    assert len(nodes_by_op(result.model, "Gemm")) == before + 6
    assert_matches(path, result.model)

    path = exported("cnn2d_bn")
    relu = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "Relu")
    before = len(nodes_by_op(path, "Conv"))
    result = deepen_model(path, relu.name, block="identity", count=3)
    assert len(nodes_by_op(result.model, "Conv")) == before + 3
    assert_exact(path, result.model)
    result = deepen_model(path, relu.name, block="residual", count=3, kernel=3)
    assert len(nodes_by_op(result.model, "Conv")) == before + 6
    assert_matches(path, result.model)


@pytest.mark.parametrize("block", ["identity", "residual"])
@pytest.mark.parametrize("name", ["mlp_relu", "mlp_gelu", "cnn2d_bn_nofold"])
def test_new_names_are_prefixed(exported, name, block):
    path = exported(name)
    original = onnxgrow.load(path)
    after = next(n for n in original.graph.node if n.op_type in ("Relu", "Mul", "BatchNormalization")).name
    for count in (1, 3):
        result = deepen_model(path, after, block=block, count=count)
        nodes, inits = new_names(original, result.model)
        assert nodes and inits
        assert sorted(nodes) == sorted(result.inserted)
        if count == 1:
            assert all(n.startswith(f"{after}/deepen0/") for n in nodes + inits), nodes + inits
        else:
            for n in nodes + inits:
                assert any(n.startswith(f"{after}/deepen{i}/") for i in range(count)), n
            assert {n.split("/deepen")[1].split("/")[0] for n in nodes} == {"0", "1", "2"}
        # no name clashes: every node and initializer name is unique
        names = [n.name for n in result.model.graph.node]
        assert len(names) == len(set(names))
        inames = [t.name for t in result.model.graph.initializer]
        assert len(inames) == len(set(inames))


@pytest.mark.parametrize("name", ["mlp_relu", "cnn2d_bn"])
def test_noise_makes_identity_approximate(exported, name):
    path = exported(name)
    relu = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "Relu")
    result = deepen_model(path, relu.name, block="identity", noise_std=0.1, seed=1)
    assert result.exact is False
    assert result.report is not None and result.report.worst_abs > 0
    assert any("noise" in n and "approximate" in n for n in result.notes)
    abs_err, _ = errors(path, result.model)
    assert abs_err > 0


@pytest.mark.parametrize(
    "name, block",
    [
        ("mlp_relu", "identity"),
        ("mlp_tanh", "residual"),
        ("cnn2d_bn", "identity"),
        ("cnn2d_bn_nofold", "residual"),
        ("cnn1d", "residual"),
    ],
)
def test_deepen_then_widen_all_matches_original(exported, name, block):
    path = exported(name)
    model = onnxgrow.load(path)
    after = (
        hidden_sites(model)[0]
        if name.startswith("mlp")
        else next(n for n in model.graph.node if n.op_type == "Relu").name
    )
    deep = deepen_model(path, after, block=block)
    for init in ("noise", "zero"):
        wide = widen_model(deep.model, all="x2", init=init)
        assert wide.plans, "nothing was widened"
        assert wide.params_after > deep.params_after
        assert_matches(path, wide.model)


@pytest.mark.parametrize("name, dynamo", [case("resnet"), case("resnet_nofold"), case("encoder_pre_relu", True)])
def test_copy_then_widen_matches_original(exported, name, dynamo):
    path = exported(name, dynamo)
    deep = deepen_model(path, "b0", block="copy", count=2)
    wide = widen_model(deep.model, all="x2")
    assert wide.plans and wide.params_after > deep.params_after
    assert_matches(path, wide.model)


@pytest.mark.parametrize("name, dynamo", [case("resnet"), case("resnet_nofold"), case("encoder_post_relu", True)])
def test_identity_and_residual_after_every_relu_of_residual_networks(exported, name, dynamo):
    """Relus inside blocks and on the residual stream (read by the next block and its Add)."""
    path = exported(name, dynamo)
    relus = [n.name for n in onnxgrow.load(path).graph.node if n.op_type == "Relu"]
    assert relus
    for relu in relus:
        result = deepen_model(path, relu, block="identity")
        assert result.exact and any("followed by Relu" in n for n in result.notes)
        assert_exact(path, result.model)
        result = deepen_model(path, relu, block="residual", activation="tanh")
        assert_matches(path, result.model)


@pytest.mark.parametrize(
    "name, block",
    [("mlp_relu", "identity"), ("mlp_silu", "residual"), ("cnn2d", "identity"), ("cnn3d_bn_nofold", "residual")],
)
def test_widen_group_of_inserted_layer(exported, name, block):
    path = exported(name)
    model = onnxgrow.load(path)
    after = (
        hidden_sites(model)[0]
        if name.startswith("mlp")
        else next(n for n in model.graph.node if n.op_type == "Relu").name
    )
    deep = deepen_model(path, after, block=block)
    layer = next(n for n in deep.model.graph.node if n.name in deep.inserted and n.op_type in ("Gemm", "Conv"))
    analysis = inspect_model(deep.model)
    group = next(g for g in analysis.groups if layer.name in g.producers)
    assert group.constraint != "blocked", group.reason
    for key in (layer.name, group.id):
        wide = widen_model(deep.model, {key: "x2"})
        assert [p.group.id for p in wide.plans] == [group.id]
        assert wide.plans[0].new_size == 2 * group.size
        assert_matches(path, wide.model)


def test_deepen_twice_at_the_same_site(exported):
    """Growing step by step: a second deepen after the same name gets fresh names (deepen1, ...)."""
    path = exported("mlp_relu")
    relu = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "Relu").name
    first = deepen_model(path, relu, block="identity")
    second = deepen_model(first.model, relu, block="residual", count=2)
    nodes, inits = new_names(first.model, second.model)
    assert nodes and all(n.startswith((f"{relu}/deepen1/", f"{relu}/deepen2/")) for n in nodes + inits)
    third = deepen_model(second.model, relu, block="identity")
    assert all(n.startswith(f"{relu}/deepen3/") for n in third.inserted)
    onnx.checker.check_model(third.model, full_check=True)
    assert_exact(path, third.model)


def test_copy_block_twice(exported):
    path = exported("resnet")
    first = deepen_model(path, "b0", block="copy")
    onnx.checker.check_model(first.model, full_check=True)
    for b in ("b0", "b1"):  # the original block again, and the copy (now b1)
        again = deepen_model(first.model, b, block="copy", count=2)
        onnx.checker.check_model(again.model, full_check=True)
        names = [n.name for n in again.model.graph.node]
        assert len(names) == len(set(names))
        assert len(find_blocks(again.model)) == 6
        assert_exact(path, again.model)


def test_copy_block_whose_output_is_the_graph_output(tmp_path):
    """The last block of a network without a head: the copy must feed the graph output, not dangle."""
    from deepen_models import build, export

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 4)

        def forward(self, x):
            return x + self.b(torch.relu(self.a(x)))

    path = export(*build(Residual, (3, 4)), tmp_path / "res.onnx")
    original = onnxgrow.load(path)
    [block] = find_blocks(original)
    result = deepen_model(path, block.id, block="copy", count=2)
    assert [o.name for o in result.model.graph.output] == [o.name for o in original.graph.output]
    onnx.checker.check_model(result.model, full_check=True)
    assert_exact(path, result.model)
    # every inserted node is live: the graph output depends on it
    g = result.model.graph
    producers = {o: n for n in g.node for o in n.output}
    live, frontier = set(), [o.name for o in g.output]
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and node.name not in live:
            live.add(node.name)
            frontier.extend(node.input)
    assert set(result.inserted) <= live
    assert len(find_blocks(result.model)) == 3


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d", "cnn3d"])
def test_cnn_deepen_after_graph_input_is_convolutional(exported, name):
    """The image itself (no producer): the new layer is a Conv over channels, not a MatMul over width."""
    path = exported(name)
    for block in ("identity", "residual"):
        result = deepen_model(path, "x", block=block)
        ops = {n.op_type for n in result.model.graph.node if n.name in result.inserted}
        assert "Conv" in ops and "MatMul" not in ops, ops
        assert_matches(path, result.model)


# -- errors --------------------------------------------------------------------------------------


def test_api_errors(exported):
    path = exported("mlp_relu")
    with pytest.raises(OnnxGrowError, match="did you mean"):
        deepen_model(path, "/net/net.1/Relux")
    with pytest.raises(OnnxGrowError, match="graph output"):
        deepen_model(path, "y")
    with pytest.raises(OnnxGrowError, match="no residual block"):
        deepen_model(path, "b0", block="copy")
    # the API names its parameters (the CLI words the same errors with its flags: test_cli_grow)
    with pytest.raises(OnnxGrowError, match="^block='dense': expected one of identity, residual, copy$"):
        deepen_model(path, "/net/net.1/Relu", block="dense")
    with pytest.raises(OnnxGrowError, match="^count=0: must be at least 1$"):
        deepen_model(path, "/net/net.1/Relu", count=0)
    with pytest.raises(OnnxGrowError, match="^after='y': y is a graph output"):
        deepen_model(path, "y")


def test_after_a_weight_name_means_after_its_layer(exported):
    path = exported("mlp_relu")
    gemm = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "Gemm")
    for name in (gemm.input[1], gemm.input[2]):
        result = deepen_model(path, name, block="residual")
        fc1 = next(n for n in result.model.graph.node if n.name == f"{name}/deepen0/fc1")
        assert fc1.input[0] == gemm.output[0]
        assert_matches(path, result.model)


# -- command line --------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxgrow", *args], capture_output=True, text=True)


def test_cli_unknown_name_suggests_closest(exported, tmp_path):
    path = exported("mlp_relu")
    out = tmp_path / "deep.onnx"
    proc = run_cli("deepen", str(path), "-o", str(out), "--after", "/net/net.1/Relu_output")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "did you mean" in lines[0] and "/net/net.1/Relu" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_after_graph_output(exported, tmp_path):
    path = exported("mlp_relu")
    out = tmp_path / "deep.onnx"
    for after in ("y", "/net/net.4/Gemm"):
        proc = run_cli("deepen", str(path), "-o", str(out), "--after", after)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "graph output" in lines[0], proc.stderr
        assert not out.exists()


def test_cli_deepen_writes_and_reports(exported, tmp_path):
    path = exported("cnn2d_bn_nofold")
    relu = next(n for n in onnxgrow.load(path).graph.node if n.op_type == "Relu").name
    out = tmp_path / "deep.onnx"
    proc = run_cli(
        "deepen", str(path), "-o", str(out), "--after", relu, "--block", "residual", "--count", "2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["written"] == str(out) and data["exact"] and data["verification"]["passed"]
    assert data["params_after"] > data["params_before"]
    assert_matches(path, onnx.load(str(out)))


def test_cli_inspect_json_lists_blocks(exported):
    proc = run_cli("inspect", str(exported("resnet")), "--json")
    assert proc.returncode == 0, proc.stderr
    blocks = json.loads(proc.stdout)["blocks"]
    assert [b["kind"] for b in blocks] == ["basic", "basic", "bottleneck"]
    for b in blocks:
        assert set(b) == {"id", "kind", "nodes", "exact"} and b["exact"] is True and b["nodes"]
    proc = run_cli("inspect", str(exported("encoder_post_gelu")), "--json")
    blocks = json.loads(proc.stdout)["blocks"]
    assert len(blocks) == 4 and all(b["exact"] is False for b in blocks)


def test_cli_copy_block_by_id(exported, tmp_path):
    path = exported("encoder_pre_relu")
    out = tmp_path / "deep.onnx"
    proc = run_cli("deepen", str(path), "-o", str(out), "--after", "b1", "--block", "copy")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    assert_matches(path, onnx.load(str(out)))
    proc = run_cli("deepen", str(path), "-o", str(tmp_path / "x.onnx"), "--after", "b9", "--block", "copy")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_cli_failed_verification_writes_nothing(exported, tmp_path, monkeypatch, capsys):
    """A layer that is not the identity (a bug, simulated here) fails the check: exit 1, no file, JSON report."""
    import importlib

    from onnxgrow.cli import main
    from onnxgrow.passes.insert_layers import identity_layer

    def broken(site, prefix, opset, **kwargs):
        splice = identity_layer(site, prefix, opset, **kwargs)
        weight = splice.inits[0]
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))
        return splice

    # patched in the module of the pass that calls it
    monkeypatch.setattr(importlib.import_module("onnxgrow.passes.insert_layers"), "identity_layer", broken)
    path = exported("mlp_relu")
    out = tmp_path / "deep.onnx"
    with pytest.raises(onnxgrow.VerificationFailed, match="nothing was written"):
        deepen_model(path, "/net/net.1/Relu")
    rc = main(["deepen", str(path), "-o", str(out), "--after", "/net/net.1/Relu", "--json"])
    captured = capsys.readouterr()
    assert rc == 1 and not out.exists()
    data = json.loads(captured.out)
    assert data["written"] is None and data["verification"]["passed"] is False
    assert len(captured.err.strip().splitlines()) == 1 and "nothing was written" in captured.err
