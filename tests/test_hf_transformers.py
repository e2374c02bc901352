"""Hugging Face transformers (tiny configs, tests/hf_models.py) as `inspect --layers` reads them (issue 13.6).

Dynamo exports compute attention with `Where(IsNaN(p), 0, p)` after the Softmax, and torch merges equal
initializers; every layer must still show its value size, and its feed-forward column only its own
feed-forward group (an attention group there made `--ffn` grow the value heads too).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

import hf_models as hf  # noqa: E402

from onnxgrow.analysis.transformer import layers  # noqa: E402
from onnxgrow.cli import main  # noqa: E402
from onnxgrow.widen import inspect_model, widen_model  # noqa: E402

CASES = [pytest.param(n, "dynamo", id=f"{n}-dynamo") for n in hf.NAMES] + [
    pytest.param(n, "torchscript", id=f"{n}-torchscript") for n in hf.TORCHSCRIPT
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(name, exporter, trained) → the HFExport (each model exported once per module)."""
    cache: dict[tuple[str, str, bool], hf.HFExport] = {}
    folder = tmp_path_factory.mktemp("hf")

    def get(name: str, exporter: str, trained: bool = False) -> hf.HFExport:
        key = (name, exporter, trained)
        if key not in cache:
            cache[key] = hf.export_hf(
                name, folder / f"{name}-{exporter}-{int(trained)}.onnx", exporter, trained=trained
            )
        return cache[key]

    return get


def _cell(g) -> str:
    return f"{g.size} ({g.id}, {g.constraint})"


@pytest.mark.parametrize("name,exporter", CASES)
def test_inspect_layers_reads_value_size_and_feed_forward(exported, name, exporter, capsys):
    path = exported(name, exporter).path
    found = layers(inspect_model(path))
    assert len(found) == 2
    # LLaMA has grouped-query attention: 4 query heads of 8 on 2 key/value heads (its heads column counts the
    # key/value heads, each growing with its group of query heads)
    head = hf.HIDDEN // (2 * hf.HEADS if name == "llama" else hf.HEADS)
    for layer in found:
        assert layer.heads is not None and layer.heads.size == hf.HEADS
        assert layer.head_size == head
        assert layer.value_size is not None and layer.value_size.size == head, f"layer {layer.index}: no value size"
        assert [g.size for g in layer.ffn] == [hf.FFN], f"layer {layer.index}: feed-forward {layer.ffn}"
        attention = {id(layer.heads), id(layer.value_size)}
        assert not attention & {id(g) for g in layer.ffn}
    # no layer's feed-forward group is another layer's attention group
    attention_ids = {g.id for layer in found for g in (layer.heads, layer.value_size)}
    assert not attention_ids & {g.id for layer in found for g in layer.ffn}
    # what the user reads: the value size and one feed-forward group per row
    assert main(["inspect", str(path), "--layers"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ ") and "(g" in line]
    for layer in found:
        row = next(r for r in rows if r.split("│")[1].strip() == str(layer.index))
        cells = [c.strip() for c in row.split("│")[1:-1]]
        assert cells[4] == _cell(layer.value_size) and cells[6] == _cell(layer.ffn[0]), cells
    assert main(["inspect", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["transformer_layers"]
    assert [len(x["ffn"]) for x in listed] == [1, 1] and all(x["value_size"]["size"] == head for x in listed)


def _run(path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_ffn_grows_every_feed_forward_group_and_nothing_else(exported, name, tmp_path):
    made = exported(name, "dynamo", trained=True)
    found = layers(inspect_model(made.path))
    out = tmp_path / "wide.onnx"
    result = widen_model(made.path, ffn="x2", output=out)
    assert sorted(p.group.id for p in result.plans) == sorted(g.id for layer in found for g in layer.ffn)
    assert all(p.new_size == 2 * hf.FFN for p in result.plans)
    x = made.example.numpy()
    ref, got = _run(made.path, x), _run(out, x)
    assert float(np.abs(ref - got).max()) <= 1e-5 * float(np.abs(ref).max())
