"""Width growth of real architectures exported from torch with both exporters.

Each model in tests/torch_models.py is exported with the TorchScript exporter (dynamo=False) and the
dynamo exporter (dynamo=True). For every group that may grow, every size (x2, +3, a whole number of
channel groups) and every strategy its constraint allows, the grown model must compute what the
original computes: checked here with onnxruntime on inputs of our own, not only by widen's report.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from torch_models import ACTIVATIONS, MODELS, build, export  # noqa: E402

from onnxgrow.errors import OnnxGrowError  # noqa: E402
from onnxgrow.widen import STRATEGIES, inspect_model, widen_model  # noqa: E402

HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
_NEEDS_ONNXSCRIPT = pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="dynamo export needs onnxscript")
#: (dynamo, dynamic batch): both exporters with static shapes ...
EXPORTERS = [
    pytest.param((False, False), id="torchscript"),
    pytest.param((True, False), id="dynamo", marks=_NEEDS_ONNXSCRIPT),
]
#: ... and with a dynamic batch axis, as most real exports have (shape computations in the graph)
ALL_EXPORTERS = EXPORTERS + [
    pytest.param((False, True), id="torchscript-dynbatch"),
    pytest.param((True, True), id="dynamo-dynbatch", marks=_NEEDS_ONNXSCRIPT),
]
TOL = 1e-5

#: how many groups of each model must be free at least (so the tests cannot pass vacuously)
MIN_FREE = {
    "vgg": 3,  # conv1, conv2 (through Flatten into the Gemm), fc1
    "resnet_basic": 3,  # stem, conv1, and conv2 + downsample joined by the residual Add
    "resnet_bottleneck": 4,
    "densenet": 4,  # stem and both growth convs land at offsets of the concatenations
    "inception": 7,
    "mobilenet_se": 3,  # stem+depthwise+SE gate, SE squeeze, pointwise
    "resnext": 2,
    "alexnet_lrn": 1,
    "prelu_depth_multiplier": 1,
    "unet": 3,
    "ffn_layernorm": 1,  # the FFN hidden units; the model width is "replicate" (LayerNorm)
    "channel_shuffle": 0,
    "groupnorm": 0,
    **{f"mlp_{a}": 2 for a in ACTIVATIONS},
}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export each (model, exporter) once per session: a cache of paths."""
    root = tmp_path_factory.mktemp("torch_exports")
    cache: dict[tuple[str, tuple[bool, bool]], Path] = {}

    def get(name: str, variant: tuple[bool, bool]) -> Path:
        key = (name, variant)
        if key not in cache:
            dynamo, dynamic_batch = variant
            module, example = build(name)
            tag = ("dynamo" if dynamo else "ts") + ("-dynbatch" if dynamic_batch else "")
            cache[key] = export(module, example, root / f"{name}-{tag}.onnx", dynamo, dynamic_batch)
        return cache[key]

    return get


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _inputs(sess: ort.InferenceSession, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.standard_normal([d if isinstance(d, int) else 3 for d in i.shape]).astype(np.float32)
        for i in sess.get_inputs()
    }


def assert_same_function(original: onnx.ModelProto, grown: onnx.ModelProto, what: str, seeds=(101, 202)) -> None:
    """Run both models on our own random inputs: every output must match within TOL x its magnitude."""
    ref, cand = _session(original), _session(grown)
    for seed in seeds:
        feeds = _inputs(ref, seed)
        for meta, a, b in zip(ref.get_outputs(), ref.run(None, feeds), cand.run(None, feeds)):
            assert a.shape == b.shape, f"{what}: output {meta.name} shape {b.shape} != {a.shape}"
            assert np.all(np.isfinite(b)), f"{what}: output {meta.name} has NaN/Inf"
            err = float(np.max(np.abs(a.astype(np.float64) - b)))
            scale = max(1.0, float(np.max(np.abs(a))))
            assert err <= TOL * scale, f"{what}: output {meta.name} differs by {err:.3g} (magnitude {scale:.3g})"


def _sizes(group) -> list[str]:
    sizes = ["x2", "+3"]
    if group.granularity > 1:
        sizes.append(f"+{group.granularity}")
    return sizes


def _new_size(spec: str, size: int) -> int:
    return size * 2 if spec == "x2" else size + int(spec[1:])


def _grown_weight_dims(grown: onnx.ModelProto, original: onnx.ModelProto) -> set[str]:
    before = {t.name: list(t.dims) for t in original.graph.initializer}
    return {t.name for t in grown.graph.initializer if t.name in before and list(t.dims) != before[t.name]}


MODEL_NAMES = list(MODELS)
#: groups that cannot grow exactly, and the words their reason must contain
#: models whose first group cannot grow, with why (none today: channel shuffles and GroupNorm's reshapes
#: into groups are split into one group per factor, each checked exactly by test_widen_every_group)
BLOCKED: dict[str, str] = {}


@pytest.mark.parametrize("variant", ALL_EXPORTERS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_groups_are_growable(exported, name, variant):
    """Each architecture has the free groups it should have; blocked ones say why."""
    path = exported(name, variant)
    groups = inspect_model(str(path)).groups
    assert groups, f"{name}: no groups found"
    for g in groups:
        if g.constraint == "blocked":
            assert g.reason, f"{name}: blocked group {g.id} gives no reason"
        assert g.producers, f"{name}: group {g.id} has no producer"
    free = [g for g in groups if g.constraint == "free"]
    assert len(free) >= MIN_FREE[name], f"{name}: only {len(free)} free groups: {[g.to_dict() for g in groups]}"
    if name in BLOCKED:
        assert groups[0].constraint == "blocked" and BLOCKED[name] in groups[0].reason, groups[0].to_dict()
    if name == "ffn_layernorm":
        assert groups[0].constraint == "replicate" and "LayerNormalization" in groups[0].reason
    # the classifier's output reaches the graph output: it is the one group that must stay
    assert groups[-1].constraint == "blocked" and "graph output" in (groups[-1].reason or "")


#: every group of every model, both exporters; with a dynamic batch too, except for the MLPs (no shape ops)
EVERY_GROUP_CASES = [
    pytest.param(name, *v.values, id=f"{name}-{v.id}", marks=v.marks)
    for v in ALL_EXPORTERS
    for name in MODEL_NAMES
    if not (name.startswith("mlp_") and v.values[0][1])
]


@pytest.mark.parametrize("init", STRATEGIES)
@pytest.mark.parametrize("name,variant", EVERY_GROUP_CASES)
def test_widen_every_group(exported, name, variant, init):
    """Every growable group, ×2 and to odd sizes, with `init` where allowed: outputs unchanged."""
    path = exported(name, variant)
    original = onnx.load(str(path))
    groups = inspect_model(original).groups
    tried = 0
    for g in groups:
        if g.constraint == "blocked":
            with pytest.raises(OnnxGrowError, match="cannot grow"):
                widen_model(original, {g.id: "x2"}, init=init)
            continue
        for spec in _sizes(g):
            new = _new_size(spec, g.size)
            why = g.allows(init, new)
            what = f"{name}/{variant} {g.id} ({g.constraint}, {g.producers}) {spec} init={init}"
            if why is not None:
                with pytest.raises(OnnxGrowError):
                    widen_model(original, {g.id: spec}, init=init)
                continue
            result = widen_model(original, {g.id: spec}, init=init, seed=3)
            tried += 1
            assert result.plans[0].new_size == new
            assert result.report is not None and result.report.passed, what
            changed = _grown_weight_dims(result.model, original)
            assert set(g.weights) & changed, f"{what}: no weight of the group changed shape"
            onnx.checker.check_model(result.model)
            assert_same_function(original, result.model, what)
    if any(g.constraint == "free" for g in groups):
        assert tried, f"{name}: nothing could grow with init={init}"


@pytest.mark.parametrize("variant", ALL_EXPORTERS)
@pytest.mark.parametrize("init", STRATEGIES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_widen_all(exported, name, variant, init):
    """`all="x2"` grows every group that may grow (with a fallback strategy where needed)."""
    path = exported(name, variant)
    original = onnx.load(str(path))
    groups = inspect_model(original).groups
    if all(g.constraint == "blocked" for g in groups):
        with pytest.raises(OnnxGrowError, match="no group"):
            widen_model(original, all="x2", init=init)
        return
    result = widen_model(original, all="x2", init=init, seed=5)
    grown_ids = {p.group.id for p in result.plans}
    skipped_ids = {g.id for g, _ in result.skipped}
    assert grown_ids | skipped_ids == {g.id for g in groups}
    assert {g.id for g in groups if g.constraint == "free"} <= grown_ids
    for p in result.plans:
        assert p.group.allows(p.init, p.new_size) is None
        assert p.init == init or p.note
    assert result.params_after > result.params_before
    assert_same_function(original, result.model, f"{name} all=x2 init={init}")


# -- architecture-specific checks ----------------------------------------------------------------
def _node(model: onnx.ModelProto, weight: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if weight in n.input)


def _attr(node: onnx.NodeProto, name: str):
    return next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name)


@pytest.mark.parametrize("variant", EXPORTERS)
def test_vgg_flatten_columns(exported, variant):
    """Growing the last conv by 3 channels adds 3·H·W columns to the Gemm after Flatten."""
    original = onnx.load(str(exported("vgg", variant)))
    analysis = inspect_model(original)
    g = analysis.resolve("features.3.weight")
    result = widen_model(original, {g.id: "+3"}, init="noise")
    dims = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert dims["classifier.0.weight"] == [10, (8 + 3) * 2 * 2]
    assert dims["features.3.weight"][0] == 11


@pytest.mark.parametrize("variant", EXPORTERS)
@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck"])
def test_resnet_residual_couples_shortcut(exported, name, variant):
    """The block's last conv and the downsample conv feed one Add: one group, both grow."""
    original = onnx.load(str(exported(name, variant)))
    groups = inspect_model(original).groups
    down = next(
        n
        for n in original.graph.node
        if n.op_type == "Conv" and _attr(n, "kernel_shape") == [1, 1] and _attr(n, "strides") == [2, 2]
    )
    g = next(g for g in groups if down.name in g.producers)
    assert g.constraint == "free" and len(g.producers) == 2
    result = widen_model(original, {g.id: "+3"}, init="net2net")
    dims = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert dims[down.input[1]][0] == g.size + 3
    assert_same_function(original, result.model, name)


@pytest.mark.parametrize("variant", EXPORTERS)
def test_densenet_concat_offsets(exported, variant):
    """Growing the first dense layer inserts its new channels in the middle of the concatenation."""
    original = onnx.load(str(exported("densenet", variant)))
    groups = inspect_model(original).groups
    g = next(g for g in groups if any("layer1" in w for w in g.weights) and len(g.producers) == 1 and g.size == 3)
    result = widen_model(original, {g.id: "+2"}, init="noise")
    dims = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert dims["layer2.2.weight"][1] == 4 + 3 + 2
    assert dims["transition.2.weight"][1] == 4 + 3 + 3 + 2
    assert_same_function(original, result.model, "densenet")


@pytest.mark.parametrize("variant", EXPORTERS)
def test_mobilenet_depthwise_groups_follow(exported, variant):
    """The depthwise conv's `group` attribute grows with its channels; the SE gate joins them."""
    original = onnx.load(str(exported("mobilenet_se", variant)))
    groups = inspect_model(original).groups
    dw = _node(
        original, next(t.name for t in original.graph.initializer if list(t.dims)[:2] == [4, 1] and len(t.dims) == 4)
    )
    g = next(g for g in groups if dw.name in g.consumers or any(w in dw.input for w in g.weights))
    assert g.constraint == "free" and g.size == 4
    assert len(g.producers) == 2  # the stem conv and the SE expand conv (the Mul couples them)
    for spec in ("x2", "+3"):
        result = widen_model(original, {g.id: spec}, init="net2net")
        new_dw = next(n for n in result.model.graph.node if n.name == dw.name)
        assert _attr(new_dw, "group") == _new_size(spec, 4)
        assert_same_function(original, result.model, f"mobilenet {spec}")


@pytest.mark.parametrize("variant", EXPORTERS)
def test_resnext_grouped_conv_granularity(exported, variant):
    """groups=4 over 8 channels: the group grows in whole groups of 2 channels."""
    original = onnx.load(str(exported("resnext", variant)))
    groups = inspect_model(original).groups
    g = next(g for g in groups if g.granularity == 2)
    assert g.size == 8 and g.constraint == "free"
    assert g.allows("noise", 11) is not None and g.allows("noise", 12) is None
    result = widen_model(original, {g.id: "+4"}, init="net2net")
    conv = next(n for n in result.model.graph.node if n.op_type == "Conv" and _attr(n, "group") != 1)
    assert _attr(conv, "group") == 6
    assert_same_function(original, result.model, "resnext")


@pytest.mark.parametrize("variant", ALL_EXPORTERS)
def test_lrn_group_needs_zero(exported, variant):
    """Channels that meet LRN's cross-channel window may grow only with zeros."""
    original = onnx.load(str(exported("alexnet_lrn", variant)))
    groups = inspect_model(original).groups
    g = next(g for g in groups if "conv1.weight" in g.weights)
    assert g.constraint == "zero", g.to_dict()
    assert g.allows("noise", 12) and g.allows("net2net", 12) and g.allows("zero", 9) is None
    result = widen_model(original, {g.id: "+3"}, init="zero")
    assert_same_function(original, result.model, "alexnet lrn")


@pytest.mark.parametrize("variant", EXPORTERS)
@pytest.mark.parametrize("act", ["prelu"])
def test_prelu_slope_grows(exported, act, variant):
    """PReLU with one slope per channel: the slope vector grows with the channels."""
    original = onnx.load(str(exported(f"mlp_{act}", variant)))
    groups = inspect_model(original).groups
    g = groups[0]
    slope = next(
        t
        for t in original.graph.initializer
        if t.name not in ("net.0.weight", "net.0.bias")
        and 5 in list(t.dims)
        and len(t.dims) <= 2
        and _node(original, t.name).op_type == "PRelu"
    )
    assert slope.name in g.weights
    result = widen_model(original, {g.id: "+3"}, init="net2net")
    new = next(t for t in result.model.graph.initializer if t.name == slope.name)
    assert 8 in list(new.dims)
    assert_same_function(original, result.model, "prelu")
