"""Growing transformers (issue 7): feed-forward ×2, heads +2, hidden ×2 and depth +1.

Models (tests/transformer_models.py): nn.TransformerEncoderLayer encoders (pre- and post-norm, relu and
gelu), a GPT-style decoder (causal mask, logits tied to the token embedding) and a LLaMA-style model
(RMSNorm, SwiGLU), each exported by both torch exporters with a dynamic batch. Every grown model is run
in onnxruntime next to the original on a batch of another size than the export's, and must match within
1e-5 (normalised); grown models convert to PyTorch and train.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import transformer_models as tm  # noqa: E402

from onnxgrow import load  # noqa: E402
from onnxgrow.analysis.blocks import find_blocks, layer_units  # noqa: E402
from onnxgrow.analysis.transformer import layers  # noqa: E402
from onnxgrow.deepen import deepen_model  # noqa: E402
from onnxgrow.errors import OnnxGrowError  # noqa: E402
from onnxgrow.widen import inspect_model, widen_model  # noqa: E402

NAMES = ["encoder-pre-relu", "encoder-pre-gelu", "encoder-post-relu", "encoder-post-gelu", "gpt", "llama", "llama-rope"]
EXPORTERS = ["torchscript", "dynamo"]
CASES = [pytest.param(n, e, id=f"{n}-{e}") for n in NAMES for e in EXPORTERS]
FFN = {"llama": 12, "llama-rope": 12, "llama-gqa": 12}  # feed-forward width of each model (16 unless listed)
TOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(name, exporter) → path of the exported model (each exported once per module)."""
    cache: dict[tuple[str, str], Path] = {}
    folder = tmp_path_factory.mktemp("transformers")

    def get(name: str, exporter: str) -> Path:
        if (name, exporter) not in cache:
            module, ids = tm.build(name)
            path = folder / f"{name}-{exporter}.onnx"
            tm.export(module, ids, path, dynamo=exporter == "dynamo", dynamic_batch=True)
            cache[name, exporter] = path
        return cache[name, exporter]

    return get


def _ids(batch: int = 3, seed: int = 1, seq: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, tm.VOCAB, (batch, seq)).astype(np.int64)


def _run(model, ids: np.ndarray) -> np.ndarray:
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: ids})[0]


def _normalised(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12))


def _same(original: Path, grown, tol: float = TOL, seq: int = 6) -> None:
    for batch, seed in ((3, 1), (1, 2)):  # not the export's batch of 2: the dynamic batch must still work
        ids = _ids(batch, seed, seq)
        assert _normalised(_run(original, ids), _run(grown, ids)) < tol


@pytest.mark.parametrize("name,exporter", CASES)
def test_inspect_lists_every_layer(exported, name, exporter):
    found = layers(inspect_model(exported(name, exporter)))
    assert len(found) == 2
    for layer in found:
        assert (layer.heads.size, layer.heads.constraint, layer.head_size) == (2, "free", 4)
        assert (layer.hidden.size, layer.hidden.constraint) == (8, "replicate")
        assert [(g.size, g.constraint) for g in layer.ffn] == [(FFN.get(name, 16), "free")]
    assert found[0].heads is not found[1].heads and found[0].hidden is found[1].hidden


GROWTH = [("ffn", "x2"), ("heads", "+2"), ("hidden", "x2")]


@pytest.mark.parametrize("part,spec", GROWTH, ids=[f"{p}{s}" for p, s in GROWTH])
@pytest.mark.parametrize("name,exporter", CASES)
def test_grow_each_part_exactly(exported, name, exporter, part, spec):
    path = exported(name, exporter)
    result = widen_model(path, **{part: spec}, check=False)
    _same(path, result.model)
    after = layers(inspect_model(result.model))
    want = {"ffn": [FFN.get(name, 16) * 2], "heads": 4, "hidden": 16}[part]
    for layer in after:
        got = {"ffn": [g.size for g in layer.ffn], "heads": layer.heads.size, "hidden": layer.hidden.size}[part]
        assert got == want
        assert layer.head_size == 4  # the attention scale 1/sqrt(head size) stays right
    if part == "hidden":
        assert all(p.init == "net2net" for p in result.plans)  # LayerNorm/RMSNorm: only whole copies are exact


@pytest.mark.parametrize("name,exporter", CASES)
def test_depth_plus_one_copies_a_layer(exported, name, exporter):
    path = exported(name, exporter)
    units = layer_units(find_blocks(load(path)))
    assert len(units) == 2 and all("-" in u for u in units)  # attention block + feed-forward block
    post = "post" in name
    if post:  # a LayerNorm after each residual Add: the copy normalises again; refused unless asked for
        with pytest.raises(OnnxGrowError, match="pass approximate=True to write it anyway"):
            deepen_model(path, units[-1], block="copy")
    result = deepen_model(path, units[-1], block="copy", approximate=post)
    assert len(layers(inspect_model(result.model))) == 3
    if post:  # written with the error reported
        assert not result.exact and result.report.worst_normalised > 1e-3
    else:
        assert result.exact
        _same(path, result.model)


@pytest.mark.parametrize("name,exporter", CASES)
def test_grown_model_converts_to_torch_and_trains(exported, name, exporter):
    from onnxgrow.torch import to_module

    path = exported(name, exporter)
    grown = widen_model(path, heads="+2", ffn="x2", hidden="x2", check=False).model
    ids = _ids()
    gm = to_module(grown)
    with torch.no_grad():
        assert _normalised(_run(grown, ids), gm(torch.from_numpy(ids)).numpy()) < TOL
    gm.train()
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    target = torch.randn(_run(grown, ids).shape, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(4):
        loss = ((gm(torch.from_numpy(ids)) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_all_parts_and_depth_together(exported, exporter):
    path = exported("gpt", exporter)
    wide = widen_model(path, heads="+2", ffn="x2", hidden="x3", check=False)  # whole copies: x3 works too
    deep = deepen_model(wide.model, "layers", block="copy", check=False)
    _same(path, deep.model)
    after = layers(inspect_model(deep.model))
    assert [(x.heads.size, x.hidden.size, x.ffn[0].size) for x in after] == [(4, 24, 32)] * 4


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_hidden_state_output_keeps_its_size_with_keep_outputs(exported, exporter):
    path = exported("encoder-hidden-out", exporter)
    with pytest.raises(OnnxGrowError, match="--keep-outputs"):
        widen_model(path, hidden="x2", check=False)
    result = widen_model(path, hidden="x2", heads="+2", keep_outputs=True, check=False)
    _same(path, result.model)  # the same shape (8 wide) and values: the first copy of each unit
    out = result.model.graph.output[0].name
    assert any(n.output[0] == out and "keep_outputs" in n.name for n in result.model.graph.node)


def test_hidden_needs_whole_copies(exported):
    with pytest.raises(OnnxGrowError, match="whole copies"):
        widen_model(exported("llama", "torchscript"), hidden="+3", check=False)


def test_cli_grows_and_inspects_a_transformer(exported, tmp_path):
    path = exported("gpt", "dynamo")
    shown = subprocess.run([sys.executable, "-m", "onnxgrow", "inspect", str(path)], capture_output=True, text=True)
    assert shown.returncode == 0 and "transformer layers" in shown.stdout and "b0-b1" in shown.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "onnxgrow", "inspect", str(path), "--json"], capture_output=True, text=True
    )
    found = json.loads(listed.stdout)["transformer_layers"]
    assert [(x["heads"]["size"], x["head_size"], x["hidden"]["size"]) for x in found] == [(2, 4, 8)] * 2
    wide, deep = tmp_path / "wide.onnx", tmp_path / "deep.onnx"
    grown = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxgrow",
            "widen",
            str(path),
            "-o",
            str(wide),
            "--heads",
            "+2",
            "--ffn",
            "x2",
            "--hidden",
            "x2",
        ],
        capture_output=True,
        text=True,
    )
    assert grown.returncode == 0, grown.stderr
    assert "(exact)" in grown.stdout
    copied = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxgrow",
            "deepen",
            str(wide),
            "-o",
            str(deep),
            "--block",
            "copy",
            "--after",
            "layers",
        ],
        capture_output=True,
        text=True,
    )
    assert copied.returncode == 0, copied.stderr
    _same(path, deep)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxgrow",
            "widen",
            str(path),
            "-o",
            str(tmp_path / "x.onnx"),
            "--heads",
            "+2",
            "--layer",
            "g1=+1",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--heads" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_packed_qkv_split_heads_grow(tmp_path):
    """models/gpt.onnx (GPT-2 style: one q|k|v projection split in three, view(b, s, heads, -1) with a dynamic
    batch, the -1 solved from the shapes): heads, hidden and depth grow exactly."""
    path = Path(__file__).resolve().parent.parent / "models" / "gpt.onnx"
    found = layers(inspect_model(path))
    assert [(x.heads.size, x.head_size, x.hidden.size, x.ffn[0].size) for x in found] == [(4, 8, 32, 64)] * 2
    wide = widen_model(path, heads="+2", hidden="x2", check=False)
    deep = deepen_model(wide.model, "layers", block="copy", check=False)
    _same(path, deep.model, seq=8)
    qkv = [t for t in deep.model.graph.initializer if t.name == "qkv.0.bias"]
    assert qkv and list(qkv[0].dims) == [3 * 6 * 8]  # three chunks of 6 heads x 8


@pytest.mark.parametrize("init", ["noise", "zero", "net2net"])
@pytest.mark.parametrize(
    "name,exporter", [("llama", "torchscript"), ("llama", "dynamo"), ("encoder-pre-gelu", "dynamo")]
)
def test_feed_forward_grows_exactly_with_every_strategy(exported, name, exporter, init):
    """SwiGLU (silu(gate) * up) and GELU feed-forward layers: every strategy keeps the model exact."""
    path = exported(name, exporter)
    result = widen_model(path, ffn="x2", init=init, check=False)
    assert all(p.init == init for p in result.plans)
    _same(path, result.model)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_grouped_query_attention_grows_key_value_heads(exported, exporter):
    """4 query heads sharing 2 key/value heads (repeat_interleave → Tile/Expand, then Reshape): the growable
    group is the key/value heads, each new one bringing its 2 query heads."""
    path = exported("llama-gqa", exporter)
    found = layers(inspect_model(path))
    assert [(x.heads.size, x.heads.constraint, x.head_size) for x in found] == [(2, "free", 2)] * 2
    result = widen_model(path, heads="+1", check=False)
    _same(path, result.model)
    dims = [list(t.dims) for t in result.model.graph.initializer]
    # kv heads 2 -> 3 (k and v projections 4 -> 6 wide), each repeated twice: 6 query heads (q 8 -> 12 wide,
    # as wide as the 2 layers' gate and up projections)
    assert dims.count([8, 6]) == 4 and dims.count([8, 12]) == 2 + 4
    _same(path, widen_model(path, hidden="x2", ffn="x2", check=False).model)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_multi_query_attention_heads_are_refused_with_the_reason(exported, exporter):
    """One key/value head for all query heads: its view makes a new unit axis, not a split of the projection,
    so the head count cannot grow yet and says why; hidden and feed-forward still grow exactly."""
    path = exported("llama-mqa", exporter)
    with pytest.raises(OnnxGrowError, match=r"--heads \+2: group g\d+ cannot grow: .*(Tile|Expand)"):
        widen_model(path, heads="+2", check=False)
    _same(path, widen_model(path, hidden="x2", ffn="x2", check=False).model)
