"""Grouped convolutions with unequal widths per group and channel shuffles (AlexNet, ShuffleNet v1 and v2).

A grouped Conv keeps its group count: new units go inside every group of its output (and of its
consumers' input), so such a layer grows by multiples of its group count. A Concat of two branches that a
Reshape splits into (2, C/2) — ShuffleNetV2's channel shuffle — couples the branches: both grow alike and
their units interleave. The models are built here (torch modules exported with both exporters,
torchvision's shufflenet_v2_x0_5 with random weights, an AlexNet-style graph with onnx.helper at opset 9);
every growth is checked by widen's own verification and again here with onnxruntime on our own inputs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

from torch_models import export, randomise  # noqa: E402

from onnxgrow.cli import main  # noqa: E402
from onnxgrow.errors import OnnxGrowError  # noqa: E402
from onnxgrow.widen import STRATEGIES, inspect_model, widen_model  # noqa: E402

_NEEDS_ONNXSCRIPT = pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None, reason="dynamo export needs onnxscript"
)
EXPORTERS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo", marks=_NEEDS_ONNXSCRIPT)]
TOL = 1e-5


# -- models ----------------------------------------------------------------------------------------------
class AlexNetGrouped(nn.Module):
    """AlexNet's shape in small: conv2, conv4 and conv5 have groups=2 with other input than output widths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, groups=2)  # 4 -> 6 per group
        self.conv3 = nn.Conv2d(12, 10, 3, padding=1)
        self.conv4 = nn.Conv2d(10, 6, 3, padding=1, groups=2)  # 5 -> 3 per group
        self.conv5 = nn.Conv2d(6, 8, 3, padding=1, groups=2)  # 3 -> 4 per group
        self.fc6 = nn.Linear(8 * 4 * 4, 7)
        self.fc7 = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        x = torch.relu(self.conv5(torch.relu(self.conv4(torch.relu(self.conv3(x))))))
        return self.fc7(torch.relu(self.fc6(torch.flatten(x, 1))))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Unit(nn.Module):
    """A ShuffleNet v1 stride-2 unit with groups=3: grouped 1x1 conv (8 -> 6 per group), channel shuffle,
    depthwise 3x3, grouped 1x1 conv (6 -> 28 per group), concatenated with the average-pooled shortcut."""

    def __init__(self, c: int = 24, mid: int = 18, out: int = 108, g: int = 3) -> None:
        super().__init__()
        self.g = g
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.gconv1, self.bn1 = nn.Conv2d(c, mid, 1, groups=g), nn.BatchNorm2d(mid)
        self.dwconv, self.bn2 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid), nn.BatchNorm2d(mid)
        self.gconv2, self.bn3 = nn.Conv2d(mid, out - c, 1, groups=g), nn.BatchNorm2d(out - c)
        self.head = nn.Conv2d(out, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = channel_shuffle(torch.relu(self.bn1(self.gconv1(x))), self.g)
        y = self.bn3(self.gconv2(self.bn2(self.dwconv(y))))
        y = torch.relu(torch.cat([nn.functional.avg_pool2d(x, 3, 2, 1), y], 1))
        return self.head(y).mean((2, 3))


class GroupedDecoder(nn.Module):
    """ConvTranspose2d with groups=2 and 3 inputs -> 2 outputs per group between two plain convs."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 6, 3, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.out = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.up(torch.relu(self.enc(x)))))).mean((2, 3))


def _shufflenet_v2() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.shufflenet_v2_x0_5()


MODELS = {
    "alexnet_grouped": (AlexNetGrouped, (1, 3, 8, 8)),
    "shufflenet_v1_unit": (ShuffleV1Unit, (2, 3, 8, 8)),
    "grouped_convtranspose": (GroupedDecoder, (1, 3, 4, 4)),
    "shufflenet_v2": (_shufflenet_v2, (1, 3, 64, 64)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("grouped")
    cache: dict[tuple[str, bool], Path] = {}

    def get(name: str, dynamo: bool) -> Path:
        if (name, dynamo) not in cache:
            factory, shape = MODELS[name]
            torch.manual_seed(0)
            module = randomise(factory())
            example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            cache[name, dynamo] = export(module, example, root / f"{name}-{dynamo}.onnx", dynamo)
        return cache[name, dynamo]

    return get


# -- checks ------------------------------------------------------------------------------------------------
def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def assert_same_function(original, grown, what: str, seeds=(7, 8)) -> None:
    """Both models on our own random inputs: every output within TOL of the original's magnitude."""
    ref, cand = _session(original), _session(grown)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        feeds = {
            i.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in i.shape]).astype(np.float32)
            for i in ref.get_inputs()
        }
        for a, b in zip(ref.run(None, feeds), cand.run(None, feeds)):
            assert a.shape == b.shape, what
            err = float(np.max(np.abs(a.astype(np.float64) - b)))
            assert err <= TOL * max(1.0, float(np.max(np.abs(a)))), f"{what}: outputs differ by {err:.3g}"


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _layers(model: onnx.ModelProto) -> dict[str, tuple[str, int]]:
    """Every Conv/ConvTranspose/Gemm that makes units of its own (not depthwise: those follow their input)
    with its weight and the weight axis of its output units."""
    found = {}
    weights = _weights(model)
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type == "Conv" and group > 1 and weights[n.input[1]].shape[1] == 1:
            continue
        if n.op_type in ("Conv", "Gemm"):
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            found[n.name] = (n.input[1], 0 if n.op_type == "Conv" or trans_b else 1)
        elif n.op_type == "ConvTranspose":
            found[n.name] = (n.input[1], 1)
    return found


def _grown_layers(original: onnx.ModelProto, grown: onnx.ModelProto) -> set[str]:
    """Layers whose output units grew (their weight's output axis is longer)."""
    before, after = _weights(original), {t.name: list(t.dims) for t in grown.graph.initializer}
    return {name for name, (w, axis) in _layers(original).items() if after[w][axis] > before[w].shape[axis]}


def _group_attr(model: onnx.ModelProto, node: str) -> int:
    n = next(n for n in model.graph.node if n.name == node)
    return next((a.i for a in n.attribute if a.name == "group"), 1)


#: the layers of each model that cannot grow, and why (everything else must)
REFUSED = {
    "alexnet_grouped": {"fc7": "graph output"},
    "shufflenet_v1_unit": {"head": "graph output"},
    "grouped_convtranspose": {"out": "graph output"},
}
#: ShuffleNetV2 x0.5's stage 3 has 8 units on 48 + 48 channels: after four units' shuffles the fifth unit's
#: chunk(2) cuts through the 16 copies of a unit (48 = 16 x 3), so no growth keeps its two halves (at x2, the
#: first branch's channel 1 would have to land on an even position). Its last 1x1 convs and branch1 stay.
V2_STAGE3_REFUSED = 1 + 8  # stage3.0's branch1 output conv and every unit's branch2 output conv
#: conv1; 3 stride-2 units with 3 such layers; 13 stride-1 units with 2; conv5 (fc is the graph output)
V2_GROWN = 1 + 3 * 3 + 13 * 2 + 1 - V2_STAGE3_REFUSED


def _torch_names(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> the torch module its weight belongs to (weights are named after modules by the dynamo
    exporter; the TorchScript exporter names nodes after them)."""
    names = {}
    for node, (w, _) in _layers(model).items():
        names[node] = w.rsplit(".", 1)[0] if "." in w and not w.startswith("onnx::") else node.strip("/").split("/")[-2]
    return names


def _check_refusals(name: str, original: onnx.ModelProto, result) -> None:
    grown = _grown_layers(original, result.model)
    layers = _layers(original)
    refused = set(layers) - grown
    if name == "shufflenet_v2":
        assert len(grown) == V2_GROWN and len(refused) == V2_STAGE3_REFUSED + 1, (len(grown), sorted(refused))
        modules = _torch_names(original)
        assert all("stage3" in n + modules[n] or modules[n] == "fc" for n in refused), sorted(refused)
        reasons = {why for g, why in result.skipped}
        assert any("chunks whose boundaries fall inside the blocks of a unit" in r for r in reasons), reasons
        return
    modules = _torch_names(original)
    assert {modules[n] for n in refused} == set(REFUSED[name]), (sorted(refused), modules)
    for g, why in result.skipped:
        assert any(REFUSED[name][modules[p]] in why for p in g.producers if modules.get(p) in REFUSED[name]), why


# -- every model, both exporters, every strategy -------------------------------------------------------------
@pytest.mark.parametrize("init", STRATEGIES)
@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", list(MODELS))
def test_widen_all_x2(exported, name, dynamo, init):
    """--all x2 grows every hidden layer (ShuffleNetV2: all but stage 3's shuffled chain), exactly."""
    path = exported(name, dynamo)
    original = onnx.load(str(path))
    result = widen_model(original, all="x2", init=init, seed=1)
    assert result.exact and result.report is not None and result.report.passed, result.report.summary()
    assert all(p.init == init for p in result.plans)
    onnx.checker.check_model(result.model)
    assert_same_function(original, result.model, f"{name} --all x2 --init {init}")
    _check_refusals(name, original, result)
    # grouped convs keep their group count; grown layers are twice as wide
    for node, (w, axis) in _layers(original).items():
        old, new = _weights(original)[w].shape[axis], _weights(result.model)[w].shape[axis]
        assert new in (old, 2 * old), (node, old, new)
        if _group_attr(original, node) not in (1, old):  # not plain, not depthwise: unequal widths per group
            assert _group_attr(result.model, node) == _group_attr(original, node)


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_shufflenet_v2_dynamic_batch(tmp_path, dynamo):
    """With a dynamic batch the TorchScript export computes each chunk's bounds from the shape of the previous
    unit's output: folded pass after pass, they become constants that follow the growth like static ones."""
    torch.manual_seed(0)
    module = randomise(_shufflenet_v2())
    path = export(module, torch.randn(1, 3, 64, 64), tmp_path / "v2.onnx", dynamo, dynamic_batch=True)
    original = onnx.load(str(path))
    result = widen_model(original, all="x2", init="noise")
    assert result.report.passed and result.exact
    _check_refusals("shufflenet_v2", original, result)
    assert_same_function(original, result.model, "v2 dynamic batch")  # a batch of 2, not the exported 1


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_alexnet_groups_sizes_and_weights(exported, dynamo):
    """Each grouped layer is one group of its full width that grows in multiples of its group count; new
    units sit at the end of every group, the consumer's columns for them are zero, the old ones unchanged."""
    original = onnx.load(str(exported("alexnet_grouped", dynamo)))
    analysis = inspect_model(original)
    conv1 = next(g for g in analysis.groups if "conv1.weight" in g.weights and g.constraint != "blocked")
    conv2 = next(g for g in analysis.groups if "conv3.weight" in g.weights and "conv2.weight" in g.weights)
    assert (conv1.size, conv1.granularity, conv1.constraint) == (8, 2, "free")
    assert (conv2.size, conv2.granularity, conv2.constraint) == (12, 2, "free")
    assert len(analysis.groups) == 7  # conv1..conv5, fc6, and fc7 (the output); not the group counts
    assert conv1.allows("noise", 9) is not None and "multiples of 2" in conv1.allows("noise", 9)
    for layer in conv1.producers + ["conv1.weight", conv1.id]:
        assert analysis.resolve(layer) is conv1
    with pytest.raises(OnnxGrowError, match="multiples of 2"):
        widen_model(original, {conv1.id: "+1"})

    result = widen_model(original, {conv1.id: "+2", conv2.id: "x2"}, init="noise")
    assert_same_function(original, result.model, "alexnet +2 / x2")
    old, new = _weights(original), _weights(result.model)
    assert new["conv1.weight"].shape == (10, 3, 3, 3) and new["conv2.weight"].shape == (24, 5, 3, 3)
    kept = [0, 1, 2, 3, 5, 6, 7, 8]  # group 0: 0..3 (+4 new), group 1: 5..8 (+9 new)
    np.testing.assert_array_equal(new["conv1.weight"][kept], old["conv1.weight"])
    assert np.all(new["conv1.weight"][[4, 9]] != 0)  # noise rows
    old_rows = [*range(6), *range(12, 18)]  # conv2's old units: 6 at the start of each of its groups of 12
    np.testing.assert_array_equal(new["conv2.weight"][old_rows][:, :4], old["conv2.weight"])
    assert np.all(new["conv2.weight"][old_rows][:, 4] == 0)  # old units read nothing of conv1's new units
    assert np.all(new["conv3.weight"][:, [6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23]] == 0)
    np.testing.assert_array_equal(new["conv3.weight"][:, [*range(6), *range(12, 18)]], old["conv3.weight"])
    conv2_node = next(n for n in result.model.graph.node if "conv2.weight" in n.input)
    assert _group_attr(result.model, conv2_node.name) == 2


def test_alexnet_cli_inspect_and_widen(exported, tmp_path, capsys):
    """`inspect` lists the grouped layers at their full width with their step; `widen --layer` names them."""
    path = exported("alexnet_grouped", False)
    assert main(["inspect", str(path), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    conv2 = next(g for g in groups if "/conv2/Conv" in g["producers"])
    assert (conv2["size"], conv2["granularity"], conv2["blocks"], conv2["constraint"]) == (12, 2, 2, "free")
    assert main(["inspect", str(path)]) == 0
    assert "free (x2)" in capsys.readouterr().out
    out = tmp_path / "wide.onnx"
    assert (
        main(
            [
                "widen",
                str(path),
                "-o",
                str(out),
                "--layer",
                "/conv2/Conv=x2",
                "--layer",
                "/conv4/Conv=+2",
                "--init",
                "net2net",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "12 -> 24" in text and "6 -> 8" in text and "exact" in text
    assert_same_function(onnx.load(str(path)), onnx.load(str(out)), "cli widen")
    assert main(["widen", str(path), "-o", str(tmp_path / "bad.onnx"), "--layer", "/conv4/Conv=+1"]) == 2
    assert "multiples of 2" in capsys.readouterr().err and not (tmp_path / "bad.onnx").exists()


def _gconv(model: onnx.ModelProto, shape: tuple[int, int]) -> onnx.NodeProto:
    weights = _weights(model)
    return next(
        n
        for n in model.graph.node
        if n.op_type == "Conv" and _group_attr(model, n.name) == 3 and weights[n.input[1]].shape[:2] == shape
    )


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_shufflenet_v1_shuffle_follows_groups(exported, dynamo):
    """gconv1's 3 x 6 units are shuffled into gconv2's 3 groups of 6 (2 from each of gconv1's groups): they
    grow inside every group of both, in steps of 9 (a unit more in each of the 3 x 3 blocks)."""
    original = onnx.load(str(exported("shufflenet_v1_unit", dynamo)))
    analysis = inspect_model(original)
    gconv1, gconv2 = _gconv(original, (18, 8)), _gconv(original, (84, 6))
    group = analysis.resolve(gconv1.name)
    assert (group.size, group.granularity, group.constraint) == (18, 9, "free")
    assert (analysis.resolve(gconv2.name).size, analysis.resolve(gconv2.name).granularity) == (84, 3)
    for init in STRATEGIES:
        result = widen_model(original, {group.id: "+9"}, init=init, seed=2)
        assert result.report.passed
        assert_same_function(original, result.model, f"v1 +9 {init}")
        new = _weights(result.model)
        assert new[gconv1.input[1]].shape == (27, 8, 1, 1) and new[gconv2.input[1]].shape == (84, 9, 1, 1)
        shuffle = [n for n in result.model.graph.node if n.op_type == "Reshape"][0]
        assert new[shuffle.input[1]].tolist()[1:3] == [3, 9]


def test_shuffle_into_groups_that_cut_units_is_refused(tmp_path):
    """gconv1's 3 groups of 2 shuffled into gconv2's 3 groups of 2 (2 is not a multiple of 3): a unit of
    gconv1 would need another place in each of its groups; gconv1 is refused naming gconv2, the rest grows."""
    torch.manual_seed(0)
    path = export(randomise(ShuffleV1Unit(c=12, mid=6, out=24)), torch.randn(1, 3, 8, 8), tmp_path / "v1.onnx", False)
    original = onnx.load(str(path))
    analysis = inspect_model(original)
    gconv1, gconv2 = _gconv(original, (6, 4)), _gconv(original, (12, 2))
    group = next(g for g in analysis.groups if gconv1.name in g.producers)
    assert group.constraint == "blocked" and "cannot divide into its 3 groups" in group.reason
    assert gconv2.name in group.reason
    result = widen_model(original, all="x2", init="net2net")
    assert result.report.passed
    assert_same_function(original, result.model, "v1 with a shuffle that cuts units")
    assert gconv1.name not in _grown_layers(original, result.model)
    assert len(_grown_layers(original, result.model)) == 2  # the stem and gconv2


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_shufflenet_v2_branches_grow_together(exported, dynamo):
    """Stage 2: both branches of the stride-2 unit and every unit's branch2 output form one group, whose units
    repeat in 8 blocks (the shuffles and chunks): 24 channels, grown by multiples of 8, exactly."""
    original = onnx.load(str(exported("shufflenet_v2", dynamo)))
    analysis = inspect_model(original)
    stage2 = [g for g in analysis.groups if g.blocks > 1 and g.constraint == "free" and g.size == 24]
    assert len(stage2) == 1 and len(stage2[0].producers) == 5, [g.to_dict() for g in analysis.groups]
    g = stage2[0]
    assert g.granularity == 8 and "multiples of 8" in (g.allows("zero", 28) or "")
    result = widen_model(original, {g.id: "+8"}, init="net2net", seed=3)
    assert result.report.passed
    assert_same_function(original, result.model, "v2 stage 2 +8")
    grown = _grown_layers(original, result.model)
    assert set(g.producers) <= grown and len(grown) == 5


# -- opset 9, written with onnx.helper (Caffe2-era AlexNet: group=2, LRN) -------------------------------------
def _alexnet_opset9(lrn: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def weight(name, *shape):
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)
        )
        return name

    def conv(x, name, c_in, c_out, group=1, k=3):
        ins = [x, weight(f"{name}_w", c_out, c_in // group, k, k), weight(f"{name}_b", c_out)]
        nodes.append(
            helper.make_node("Conv", ins, [name], name=name, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
        )
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    h = conv("data", "conv1", 3, 8)
    if lrn:
        nodes.append(helper.make_node("LRN", [h], ["norm1"], name="norm1", size=3))
        h = "norm1"
    h = conv(h, "conv2", 8, 12, group=2)
    nodes.append(helper.make_node("MaxPool", [h], ["pool2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]))
    h = conv(conv("pool2", "conv3", 12, 10), "conv4", 10, 6, group=2)
    h = conv(h, "conv5", 6, 8, group=2)
    nodes.append(helper.make_node("Flatten", [h], ["flat"], name="flat"))
    nodes.append(
        helper.make_node(
            "Gemm", ["flat", weight("fc6_w", 7, 8 * 16), weight("fc6_b", 7)], ["fc6"], name="fc6", transB=1
        )
    )
    nodes.append(helper.make_node("Dropout", ["fc6"], ["drop6"], name="drop6", ratio=0.5))
    nodes.append(
        helper.make_node("Gemm", ["drop6", weight("fc7_w", 3, 7), weight("fc7_b", 3)], ["prob"], name="fc7", transB=1)
    )
    graph = helper.make_graph(
        nodes,
        "alexnet",
        [helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, [1, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("init", STRATEGIES)
def test_alexnet_opset9(init):
    model = _alexnet_opset9(lrn=False)
    result = widen_model(model, all="x2", init=init, seed=4)
    assert result.report.passed and result.exact
    assert_same_function(model, result.model, f"opset 9 alexnet {init}")
    assert _grown_layers(model, result.model) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6"}
    assert _weights(result.model)["conv4_w"].shape == (12, 10, 3, 3)  # 2 groups of 6 outputs, 10 inputs each


def test_lrn_before_grouped_conv_blocks_interleaving():
    """LRN's window slides across conv1's channels; conv2's groups would put new units in the middle of
    them (between the two groups): conv1 cannot grow, the rest can (zero units keep LRN's windows)."""
    model = _alexnet_opset9(lrn=True)
    analysis = inspect_model(model)
    conv1 = [g for g in analysis.groups if "conv1" in g.producers]
    assert conv1 and all(g.constraint == "blocked" for g in conv1)
    assert any("LRN" in (g.reason or "") and "interleave" in (g.reason or "") for g in conv1)
    result = widen_model(model, all="x2", init="noise")
    assert_same_function(model, result.model, "opset 9 alexnet with LRN")
    assert _grown_layers(model, result.model) == {"conv2", "conv3", "conv4", "conv5", "fc6"}


def test_groups_that_cut_across_a_concatenation_are_refused():
    """A grouped Conv whose groups straddle the parts of a Concat (3 + 5 channels, 2 groups of 4) cannot keep
    each part's units in their group: the parts are refused, naming the Conv."""
    rng = np.random.default_rng(1)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "a_w"], ["a"], name="a", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "b_w"], ["b"], name="b", kernel_shape=[1, 1]),
        helper.make_node("Concat", ["a", "b"], ["ab"], name="cat", axis=1),
        helper.make_node("Conv", ["ab", "g_w"], ["g"], name="gconv", kernel_shape=[1, 1], group=2),
        helper.make_node("Conv", ["g", "o_w"], ["y"], name="out", kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "straddle",
        [helper.make_tensor_value_info("x", 1, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", 1, [1, 2, 3, 3])],
        [w("a_w", 3, 2, 1, 1), w("b_w", 5, 2, 1, 1), w("g_w", 6, 4, 1, 1), w("o_w", 2, 6, 1, 1)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    groups = {p: g for g in inspect_model(model).groups for p in g.producers}
    for layer in ("a", "b"):
        assert groups[layer].constraint == "blocked" and "gconv" in groups[layer].reason
        assert "cannot divide into its 2 groups" in groups[layer].reason
    assert groups["gconv"].constraint == "free" and groups["gconv"].size == 6
    result = widen_model(model, all="x2", init="noise")
    assert_same_function(model, result.model, "straddling concat")
