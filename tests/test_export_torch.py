"""Training a grown model in PyTorch: `onnxgrow.torch.to_module`, `state_dict_for`, `export --to torch`.

Small torch networks (an MLP on sequences, whose Linears export as MatMul + Add, and a CNN with
BatchNorm and a Gemm head) are exported with torch.onnx.export(dynamo=False), grown with every
widening strategy and a residual deepen, and brought back into PyTorch. The tests check that
the module computes what onnxruntime computes, that every weight trains, and which new units get
gradients: `zero` with ReLU gives new units no gradient at all, ever (the failure the original
request warned about).
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import readme_examples

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2torch")
import onnxruntime as ort  # noqa: E402
from onnx import helper  # noqa: E402
from torch import nn  # noqa: E402

import onnxgrow  # noqa: E402
from onnxgrow.deepen import deepen_model  # noqa: E402
from onnxgrow.errors import OnnxGrowError  # noqa: E402
from onnxgrow.torch import load_module, save_module, state_dict_for, to_module, weight_initializers  # noqa: E402
from onnxgrow.widen import widen_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(2)


class MLP(nn.Module):
    """Linear-ReLU-Linear on (batch, tokens, features): torch exports MatMul with a transposed,
    renamed weight (`onnx::MatMul_12`) and an Add of `fc1.bias`."""

    def __init__(self, d: int = 16, hidden: int = 64, out: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CNN(nn.Module):
    """Conv-BN-ReLU twice, global pooling, Linear (a Gemm, which onnx2torch makes an nn.Linear)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _export(module: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    """TorchScript export; PRESERVE (module in eval mode) keeps BatchNorm instead of folding it into the Conv."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (x,),
            f,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            training=torch.onnx.TrainingMode.PRESERVE,
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return onnx.load_from_string(f.getvalue())


def _example(kind: str, batch: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 5, 16) if kind == "mlp" else (batch, 3, 8, 8)
    return torch.randn(*shape, generator=g)


@functools.cache
def original(kind: str) -> onnx.ModelProto:
    torch.manual_seed(0)
    if kind == "mlp":
        return _export(MLP(), _example(kind))
    net = CNN()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return _export(net, _example(kind))


#: where each model's first hidden layer is: the ONNX node whose weight (input 1) holds its units'
#: incoming weights (units along the given axis: MatMul weights are (in, out), Conv (out, in, kh, kw))
#: and the one whose weight holds their outgoing weights.
LAYERS = {
    "mlp": {"relu": "/act/Relu", "incoming": ("/fc1/MatMul", 1), "outgoing": ("/fc2/MatMul", 0), "old": 64},
    "cnn": {"relu": "/relu/Relu", "incoming": ("/conv1/Conv", 0), "outgoing": ("/conv2/Conv", 1), "old": 8},
}
STRATEGIES = ["noise", "zero", "net2net"]
CASES = [(k, s) for k in ("mlp", "cnn") for s in STRATEGIES + ["residual"]]


@functools.cache
def grown(kind: str, how: str) -> onnx.ModelProto:
    if how == "residual":
        return deepen_model(original(kind), LAYERS[kind]["relu"], block="residual").model
    return widen_model(original(kind), all="x2", init=how).model


def _ort(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.numpy()})[0]


def _normalised(out: torch.Tensor, ref: np.ndarray) -> float:
    out = out.detach().numpy()
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12))


def _weight_of(gm: nn.Module, model: onnx.ModelProto, node_name: str) -> nn.Parameter:
    """The module's Parameter holding the weight (input 1) of ONNX node `node_name`."""
    node = next(n for n in model.graph.node if n.name == node_name)
    keys = [k for k, v in gm.onnx_names.items() if v == node.input[1]]
    assert keys, f"no tensor of the module holds {node.input[1]}"
    return gm.get_parameter(keys[0])


def _new_units(gm: nn.Module, model: onnx.ModelProto, kind: str):
    """(incoming, outgoing): the weights of the new units of the first hidden layer, as views of
    the Parameters (plus a function that takes the same slice of a gradient)."""
    lay = LAYERS[kind]
    inc_node, inc_axis = lay["incoming"]
    out_node, out_axis = lay["outgoing"]
    w_in, w_out = _weight_of(gm, model, inc_node), _weight_of(gm, model, out_node)
    old = lay["old"]

    def part(t: torch.Tensor, axis: int) -> torch.Tensor:
        return t.narrow(axis, old, t.shape[axis] - old)

    return (w_in, lambda t: part(t, inc_axis)), (w_out, lambda t: part(t, out_axis))


def _loss(gm: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((gm(x) - y) ** 2).mean()


def _target(kind: str, x: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(*(x.shape[:2] + (4,) if kind == "mlp" else (x.shape[0], 5)), generator=g)


# -- (a) outputs, (b) parameters -------------------------------------------------------------------


@pytest.mark.parametrize("kind, how", CASES)
def test_module_computes_what_onnxruntime_computes(kind, how):
    model = grown(kind, how)
    gm = to_module(model)
    assert not gm.training, "to_module returns the module in eval mode"
    x = _example(kind, seed=3)
    assert _normalised(gm(x), _ort(model, x)) < 1e-5


@pytest.mark.parametrize("kind, how", CASES)
def test_every_weight_is_a_trainable_parameter(kind, how):
    model = grown(kind, how)
    gm = to_module(model)
    params = dict(gm.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    # no float buffer holds a weight: the only ones left are BatchNorm statistics
    floats = [n for n, b in gm.named_buffers() if b.is_floating_point()]
    assert all(n.endswith(("running_mean", "running_var")) for n in floats), floats
    # every weight initializer of the grown model is held by a Parameter
    kinds = weight_initializers(model)
    held = {v for k, v in gm.onnx_names.items() if k in params}
    assert {n for n, kind_ in kinds.items() if kind_ == "weight"} <= held
    n_weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer if kinds.get(t.name) == "weight")
    assert sum(p.numel() for p in gm.parameters()) == n_weights


def test_onnx2torch_alone_leaves_matmul_weights_frozen():
    """Why to_module exists: plain onnx2torch keeps MatMul weights and biases as buffers."""
    from onnx2torch import convert

    plain = convert(onnxgrow.load(grown("mlp", "net2net")))
    assert not list(plain.parameters())
    assert sum(b.is_floating_point() for b in plain.buffers()) == 4
    assert len(list(to_module(grown("mlp", "net2net")).parameters())) == 4


@pytest.mark.filterwarnings("ignore::UserWarning")  # onnx2torch's Slice indexes with a list
def test_scalar_constants_stay_buffers_in_a_transformer():
    """encoder.onnx: attention scales and shape constants stay buffers, every weight trains."""
    model = widen_model(ROOT / "models" / "encoder.onnx", all="x2", init="net2net").model
    gm = to_module(model)
    floats = {n: b for n, b in gm.named_buffers() if b.is_floating_point()}
    # scalars only (attention scales, folded from Constant nodes or from the static head size at load)
    assert floats and all(b.numel() == 1 for b in floats.values())
    names = {gm.onnx_names[k] for k, _ in gm.named_parameters()}
    assert {"embed.weight", "layer.self_attn.in_proj_bias", "layer.linear1.bias"} <= names
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {model.graph.input[0].name: ids.numpy()})[0]
    assert _normalised(gm(ids), ref) < 1e-5


def test_an_op_onnx2torch_cannot_convert_is_one_error():
    graph = helper.make_graph(
        [helper.make_node("Shrink", ["x"], ["h"], name="odd"), helper.make_node("Relu", ["h"], ["y"], name="r")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
    )
    with pytest.raises(OnnxGrowError, match=r"onnx2torch cannot convert node 'odd' \(Shrink\)"):
        to_module(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_tied_initializer_is_one_parameter():
    """An initializer read by two MatMuls trains as one Parameter (ONNX says it is one tensor)."""
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="m1"),
            helper.make_node("Relu", ["h"], ["r"], name="r"),
            helper.make_node("MatMul", ["r", "W"], ["y"], name="m2"),
        ],
        "tied",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [w],
    )
    gm = to_module(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert len(list(gm.parameters())) == 1 and len(gm.onnx_names) == 2


# -- (c) training, (d) gradients of the new units ------------------------------------------------------


@pytest.mark.parametrize("kind, how", CASES)
def test_optimiser_steps_lower_the_loss(kind, how):
    gm = to_module(grown(kind, how)).train()
    x = _example(kind, batch=16, seed=5)
    y = _target(kind, x)
    opt = (
        torch.optim.SGD(gm.parameters(), lr=0.05)
        if how in ("noise", "net2net")
        else torch.optim.Adam(gm.parameters(), lr=1e-2)
    )
    losses = []
    for _ in range(6):
        loss = _loss(gm, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def _grads(gm: nn.Module, kind: str, seed: int = 5) -> None:
    x = _example(kind, batch=16, seed=seed)
    gm.zero_grad()
    _loss(gm, x, _target(kind, x)).backward()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_zero_init_with_relu_new_units_never_learn(kind):
    """`--init zero`: new units compute relu(0) = 0 and their outgoing weights are 0, so neither
    their incoming nor their outgoing weights get a gradient, and optimiser steps never change that."""
    model = grown(kind, "zero")
    gm = to_module(model).train()
    (w_in, new_in), (w_out, new_out) = _new_units(gm, model, kind)
    assert torch.count_nonzero(new_in(w_in)) == 0 and torch.count_nonzero(new_out(w_out)) == 0
    opt = torch.optim.Adam(gm.parameters(), lr=1e-2)
    for step in range(4):
        _grads(gm, kind, seed=step)
        assert torch.count_nonzero(new_in(w_in.grad)) == 0, "new units' incoming weights got a gradient"
        assert torch.count_nonzero(new_out(w_out.grad)) == 0, "new units' outgoing weights got a gradient"
        assert torch.count_nonzero(w_in.grad) > 0  # the old units do learn
        opt.step()
    assert torch.count_nonzero(new_in(w_in)) == 0 and torch.count_nonzero(new_out(w_out)) == 0


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_noise_init_new_units_learn(kind):
    """`--init noise`: new units have random incoming weights and zero outgoing ones (that keeps the
    function), so the outgoing weights get a gradient at once and the incoming ones after one step."""
    model = grown(kind, "noise")
    gm = to_module(model).train()
    (w_in, new_in), (w_out, new_out) = _new_units(gm, model, kind)
    _grads(gm, kind)
    assert torch.count_nonzero(new_out(w_out.grad)) > 0
    assert torch.count_nonzero(new_in(w_in.grad)) == 0  # outgoing weights are still 0
    torch.optim.SGD(gm.parameters(), lr=0.05).step()
    _grads(gm, kind, seed=6)
    assert torch.count_nonzero(new_in(w_in.grad)) > 0
    assert torch.count_nonzero(new_out(w_out.grad)) > 0


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_net2net_new_units_learn(kind):
    model = grown(kind, "net2net")
    gm = to_module(model).train()
    (w_in, new_in), (w_out, new_out) = _new_units(gm, model, kind)
    _grads(gm, kind)
    assert torch.count_nonzero(new_in(w_in.grad)) > 0
    assert torch.count_nonzero(new_out(w_out.grad)) > 0


def test_net2net_copies_train_in_lockstep():
    """A Net2Net copy and its source get identical gradients, so plain SGD keeps them identical:
    the copy adds no capacity until something breaks the symmetry (noise, dropout)."""
    model = grown("mlp", "net2net")
    gm = to_module(model).train()
    w_in = _weight_of(gm, model, "/fc1/MatMul")  # (16, 128): column j is unit j's incoming weights
    cols = w_in.detach().T.clone()
    source = [int(torch.nonzero((cols[:64] == cols[j]).all(dim=1))[0]) for j in range(64, 128)]
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    for step in range(3):
        _grads(gm, "mlp", seed=step)
        opt.step()
    after = w_in.detach()
    assert not torch.equal(after, cols.T)  # it trained
    assert torch.equal(after[:, 64:], after[:, source])


def test_residual_block_learns():
    """`deepen --block residual`: the zero output projection gets a gradient at once (the block's
    hidden units are relu(W1 x + b1), not 0), its first layer from the second step on."""
    model = grown("mlp", "residual")
    gm = to_module(model).train()
    w1 = _weight_of(gm, model, "/act/Relu/deepen0/fc1_matmul")
    w2 = _weight_of(gm, model, "/act/Relu/deepen0/fc2_matmul")
    assert torch.count_nonzero(w2) == 0
    _grads(gm, "mlp")
    assert torch.count_nonzero(w2.grad) > 0 and torch.count_nonzero(w1.grad) == 0
    torch.optim.SGD(gm.parameters(), lr=0.05).step()
    _grads(gm, "mlp", seed=6)
    assert torch.count_nonzero(w1.grad) > 0


# -- (e) back to ONNX and grown again ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_trained_module_exports_back_and_grows_again(kind, tmp_path):
    gm = to_module(grown(kind, "net2net")).train()
    x = _example(kind, batch=16, seed=5)
    opt = torch.optim.Adam(gm.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        _loss(gm, x, _target(kind, x)).backward()
        opt.step()
    gm.eval()
    path = tmp_path / "trained.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            gm,
            (x,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    back = onnxgrow.load(path)
    assert _normalised(gm(x), _ort(back, x)) < 1e-5
    again = widen_model(path, all="x2", init="net2net")
    assert again.exact and again.report.passed
    assert again.params_after > again.params_before


# -- (f) state_dict_for ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", STRATEGIES)
def test_state_dict_for_the_users_bigger_mlp(how):
    model = grown("mlp", how)
    user = MLP(hidden=128).eval()
    sd = state_dict_for(user, model)
    user.load_state_dict(sd, strict=True)
    x = _example("mlp", seed=3)
    assert _normalised(user(x), _ort(model, x)) < 1e-5


def test_state_dict_for_the_users_bigger_cnn():
    model = grown("cnn", "net2net")
    user = CNN(c=16).eval()
    user.load_state_dict(state_dict_for(user, model), strict=True)
    x = _example("cnn", seed=3)
    assert _normalised(user(x), _ort(model, x)) < 1e-5
    # the BatchNorm statistics came from the model, num_batches_tracked from the module
    assert user.bn1.running_var.shape == (16,) and not torch.all(user.bn1.running_var == 1)


class Block(nn.Module):
    """A Linear, then a bare parameter used transposed (torch folds `w.t()` into a renamed tensor)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.w = nn.Parameter(torch.randn(d, d) / d**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x)) @ self.w.t()


class Nested(nn.Module):
    """Sequential and ModuleList scopes, an embedding, a LayerNorm; every matrix square, so only
    the mapping (not the shapes) can tell a weight from its transpose."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(d, d), nn.ReLU(), Block(d))
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.emb = nn.Embedding(10, d)
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = self.layers(x) + self.emb(ids)
        for block in self.blocks:
            x = block(x)
        return self.ln(x)


@pytest.mark.parametrize("dynamo", [False, True])
def test_state_dict_for_finds_every_weight_of_a_nested_module(dynamo, tmp_path):
    torch.manual_seed(0)
    net = Nested().eval()
    with torch.no_grad():
        net.ln.weight.uniform_(0.5, 1.5)
    args = (torch.randn(2, 5, 8), torch.randint(0, 10, (2, 5)))
    path = tmp_path / "nested.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(net, args, dynamo=True, input_names=["x", "ids"], verbose=False).save(str(path))
        else:
            torch.onnx.export(net, args, str(path), dynamo=False, opset_version=17, input_names=["x", "ids"])
    user = Nested()
    sd = state_dict_for(user, path)
    expected = net.state_dict()
    assert sd.keys() == expected.keys()
    assert [k for k, v in expected.items() if not torch.equal(sd[k], v)] == []
    user.load_state_dict(sd, strict=True)
    assert torch.equal(user.eval()(*args), net(*args))


def test_state_dict_for_a_wrong_module_lists_every_mismatch():
    with pytest.raises(OnnxGrowError) as err:
        state_dict_for(MLP(hidden=96), grown("mlp", "noise"))
    text = str(err.value)
    assert "3 mismatches" in text
    for key in ("fc1.weight: module [96, 16]", "fc1.bias: module [96]", "fc2.weight: module [4, 96]"):
        assert key in text, text

    class Renamed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin1, self.fc2, self.extra = nn.Linear(16, 128), nn.Linear(128, 4), nn.Linear(2, 2)

    with pytest.raises(OnnxGrowError) as err:
        state_dict_for(Renamed(), grown("mlp", "noise"))
    text = str(err.value)
    assert "not in the model: lin1.weight [128, 16], lin1.bias [128], extra.weight [2, 2], extra.bias [2]" in text
    assert "no place in the module:" in text and "fc1.bias [128]" in text and "(read by /fc1/MatMul)" in text


def test_state_dict_for_a_deepened_model_names_the_new_layers():
    with pytest.raises(OnnxGrowError) as err:
        state_dict_for(MLP(), grown("mlp", "residual"))
    text = str(err.value)
    assert "4 mismatches" in text and text.count("/act/Relu/deepen0/") >= 4


# -- (g) saving and the CLI ----------------------------------------------------------------------------


def test_save_and_load_module(tmp_path):
    gm = to_module(grown("mlp", "noise"))
    path = save_module(gm, tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    back = load_module(path)
    x = _example("mlp")
    assert torch.equal(back(x), gm(x)) and back.onnx_names == gm.onnx_names
    assert len(list(back.parameters())) == 4
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(OnnxGrowError, match="not a saved torch module"):
        load_module(tmp_path / "junk.pt")


def test_cli_export_to_torch(tmp_path):
    model = grown("mlp", "net2net")
    src = tmp_path / "grown.onnx"
    onnxgrow.save(model, src)
    out = tmp_path / "out.pt"
    res = subprocess.run(
        [sys.executable, "-m", "onnxgrow", "export", str(src), "--to", "torch", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout
    module = torch.load(out, weights_only=False)
    x = _example("mlp", seed=3)
    assert _normalised(module(x), _ort(model, x)) < 1e-5
    assert all(p.requires_grad for p in module.parameters()) and len(list(module.parameters())) == 4


def _torch_section() -> str:
    """The README's torch section."""
    return readme_examples.section("```python torch")


def test_readme_torch_section_runs(tmp_path):
    section = _torch_section()
    shutil.copytree(ROOT / "models", tmp_path / "models")
    (tmp_path / "out").mkdir()
    env = readme_examples.env()
    readme_examples.run_all(section, tmp_path)
    blocks = re.findall(r"```python torch\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    # the blocks run one after the other in one interpreter (one torch import), as in a notebook
    res = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    outputs = [res.stdout]
    # what the prose after each block says it prints
    said = [
        q
        for para in re.findall(r"(?m)^(?:which )?prints (.*?)(?:\n\n|\Z)", section, flags=re.S)
        for q in re.findall(r"`([^`]+)`", para)
    ]
    assert len(said) >= 3
    for quoted in said:
        quoted = " ".join(quoted.split()).split("...")[0].strip()
        assert any(quoted in out for out in outputs), f"no block printed {quoted!r}:\n" + "".join(outputs)
