"""Old-opset models (the Caffe2-era zoo files, opset 9) go to PyTorch: grown, converted by `to_module`, trained.

onnx2torch has no converter for some ops in their opset 7-9 forms (Dropout-7 above all: "onnx2torch cannot
convert node 'n139' (Dropout)" on the zoo's Inception-v1 and VGG-19). `to_module` converts such a model up with
onnx's version converter to the lowest opset where every node converts; the Dropout becomes an `nn.Dropout`,
the identity in eval mode as in the ONNX model and dropout again in training, as in the network it came from.
Models: VGG- and Inception-v1-style graphs with LRN, Dropout, a Softmax at the end and every initializer listed
as a graph input (IR version 3), the Caffe2-style DenseNet and BN-Inception of tests/caffe2_models.py, the
opset-9 AlexNet of tests/test_grouped.py, and a VGG-style torch module exported at opset 9 by the TorchScript
exporter (the dynamo exporter writes opset 18 and up only). Each is checked against onnxruntime.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2torch")
import caffe2_models  # noqa: E402
import onnxruntime as ort  # noqa: E402
from test_grouped import _alexnet_opset9  # noqa: E402
from torch import nn  # noqa: E402

from onnxgrow.torch import load_module, to_module  # noqa: E402
from onnxgrow.widen import widen_model  # noqa: E402

torch.set_num_threads(2)


class TorchVGG(nn.Module):
    """A small VGG with LRN and Dropout, exported at opset 9 by the TorchScript exporter."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.LocalResponseNorm(3),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5), nn.Softmax(dim=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _torch_vgg_opset9() -> onnx.ModelProto:
    import io

    torch.manual_seed(0)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TorchVGG().eval(),
            (torch.randn(1, 3, 16, 16),),
            f,
            dynamo=False,
            opset_version=9,
            input_names=["data"],
            output_names=["prob"],
        )
    model = onnx.load_from_string(f.getvalue())
    assert model.opset_import[0].version == 9
    return model


MODELS = {
    "vgg (caffe2, opset 9)": lambda: caffe2_models.vgg(),
    "inception-v1 (caffe2, opset 9)": lambda: caffe2_models.inception_v1(),
    "densenet (caffe2, opset 9)": lambda: caffe2_models.densenet(initializers_as_inputs=True),
    "inception-v2 (caffe2, opset 9)": lambda: caffe2_models.inception_v2(),
    "alexnet (opset 9)": lambda: _alexnet_opset9(lrn=True),
    "vgg (torch TorchScript exporter, opset 9)": _torch_vgg_opset9,
}


def _input(model: onnx.ModelProto, seed: int = 0) -> np.ndarray:
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {model.graph.input[0].name: x})[0]


@pytest.fixture(scope="module", params=list(MODELS))
def grown(request) -> tuple[str, onnx.ModelProto, onnx.ModelProto]:
    original = MODELS[request.param]()
    assert original.opset_import[0].version == 9
    return request.param, original, widen_model(original, all="x2", init="noise").model


def test_old_opset_models_need_the_conversion(grown):
    """The point of the conversion: onnx2torch alone refuses these models (all but the torch export, whose
    eval-mode export has no Dropout left, have a Dropout-7)."""
    name, original, _ = grown
    if "torch" in name:
        pytest.skip("the TorchScript exporter drops Dropout in eval mode")
    from onnx2torch import convert

    import onnxgrow

    with pytest.raises(NotImplementedError, match="Dropout"):
        convert(onnxgrow.load(original))


def test_grown_old_opset_model_converts_and_matches_onnxruntime(grown):
    name, original, wide = grown
    for model in (original, wide):
        gm = to_module(model)
        assert not gm.training
        x = _input(model, seed=1)
        with torch.no_grad():
            got = gm(torch.from_numpy(x)).numpy()
        want = _ort(model, x)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1.0), name
    assert sum(p.numel() for p in to_module(wide).parameters()) > sum(
        p.numel() for p in to_module(original).parameters()
    )


def test_grown_old_opset_model_trains(grown):
    """Every parameter gets a gradient and SGD lowers the loss (steps in eval mode: no dropout noise in the
    comparison); in training mode the Dropout layers drop again."""
    name, _, wide = grown
    gm = to_module(wide)
    x = torch.from_numpy(_input(wide, seed=2))
    labels = torch.tensor([1])
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)

    def loss() -> torch.Tensor:  # the models end in Softmax: cross-entropy on their probabilities
        return -torch.log(gm(x)[torch.arange(1), labels] + 1e-9).mean()

    before = float(loss().detach())
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        missing = [k for k, p in gm.named_parameters() if p.grad is None]
        assert not missing, f"{name}: no gradient for {missing[:5]}"
        opt.step()
    after = float(loss().detach())
    assert after < before, (name, before, after)
    dropout = [n for n in wide.graph.node if n.op_type == "Dropout"]
    if dropout:
        gm.train()
        torch.manual_seed(0)
        with torch.no_grad():
            assert not torch.equal(gm(x), gm(x)), f"{name}: dropout is not active in training mode"


def test_dropout_in_training_mode_is_dropout():
    """The converted Dropout-7 acts like the network's own dropout: identity in eval mode, zeroes in training."""
    gm = to_module(caffe2_models.vgg())
    drops = [m for m in gm.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)


def test_dropout_that_cannot_convert_is_dropped():
    """A Dropout onnx2torch refuses at any opset (a `seed` at opset 13) is the identity at inference: dropped."""
    from onnx import helper

    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Dropout", ["h"], ["y"], name="drop", seed=3),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [2, 3])],
        [helper.make_tensor_value_info("y", 1, [2, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    gm = to_module(model)
    x = _input(model)
    with torch.no_grad():
        assert np.allclose(gm(torch.from_numpy(x)).numpy(), _ort(model, x), atol=1e-6)


def test_cli_export_to_torch_of_a_grown_opset9_vgg(tmp_path):
    """The command that failed: `export --to torch` of a grown opset-9 VGG writes a module that matches."""
    src, wide, out = tmp_path / "vgg.onnx", tmp_path / "vgg_x2.onnx", tmp_path / "vgg_x2.pt"
    onnx.save(caffe2_models.vgg(), str(src))
    cli = [sys.executable, "-m", "onnxgrow"]
    res = subprocess.run(cli + ["widen", str(src), "-o", str(wide), "--all", "x2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(cli + ["export", str(wide), "--to", "torch", "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"wrote {out}", res.stdout + res.stderr
    gm = load_module(out)
    model = onnx.load(str(wide))
    x = _input(model, seed=4)
    with torch.no_grad():
        assert np.allclose(gm(torch.from_numpy(x)).numpy(), _ort(model, x), atol=1e-6)
