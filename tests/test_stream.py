"""Streamed writing (onnxgrow.stream): the bytes are those protobuf and onnx.save write, and the grown
model written weight by weight is the model the widen pass builds in memory."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow import stream
from onnxgrow.analysis import analyse
from onnxgrow.io import load
from onnxgrow.passes.widen import WidenPass, _Rewriter
from onnxgrow.widen import plan, widen_model

MODELS = Path(__file__).resolve().parent.parent / "models"


def kitchen_sink() -> onnx.ModelProto:
    """Fields around and between the initializers: raw and typed tensors, an empty one, doc strings,
    metadata, an If whose branches hold their own initializers, value_info, a model-local function."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 300)).astype(np.float32), "w")
    w.doc_string = "raw weight"
    typed = helper.make_tensor("t", TensorProto.FLOAT, [300], rng.standard_normal(300).tolist())  # float_data
    ints = helper.make_tensor("i", TensorProto.INT64, [2], [1, 300])
    empty = numpy_helper.from_array(np.zeros((0,), np.float32), "e")
    half = numpy_helper.from_array(rng.standard_normal(400).astype(np.float16), "h")

    def branch(name: str, scale: float) -> onnx.GraphProto:
        c = numpy_helper.from_array(np.full(300, scale, np.float32), f"{name}_c")
        return helper.make_graph(
            [helper.make_node("Mul", ["y", f"{name}_c"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [None, 300])],
            [c],
        )

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm", doc_string="a node"),
        helper.make_node("Add", ["mm", "t"], ["y"], name="add"),
        helper.make_node("ReduceSum", ["y"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node(
            "If", ["cond"], ["z"], name="if", then_branch=branch("then", 2.0), else_branch=branch("else", 3.0)
        ),
    ]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    graph = helper.make_graph(
        nodes,
        "sink",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 300])],
        [w, typed, ints, empty, half, zero],
        doc_string="graph doc",
        value_info=[helper.make_tensor_value_info("mm", TensorProto.FLOAT, [1, 300])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test", doc_string="model doc"
    )
    helper.set_model_props(model, {"k": "v"})
    return model


def _models() -> list[tuple[str, onnx.ModelProto]]:
    return [(p.name, onnx.load(str(p))) for p in sorted(MODELS.glob("*.onnx"))] + [("kitchen_sink", kitchen_sink())]


@pytest.mark.parametrize("name, model", _models(), ids=[n for n, _ in _models()])
def test_streamed_bytes_are_those_of_serialize_to_string(name, model, tmp_path):
    skel, deferred = stream.skeleton(model)
    buf = io.BytesIO()
    n = stream.write_inline(skel, deferred, buf)
    want = model.SerializeToString()
    assert buf.getvalue() == want and n == len(want) == stream.encoded_size(skel, deferred)
    assert onnxgrow.save(model, tmp_path / "m.onnx").read_bytes() == want


@pytest.mark.parametrize("name, model", _models(), ids=[n for n, _ in _models()])
@pytest.mark.parametrize("explicit", [True, False])
def test_streamed_external_data_loads_as_onnx_save_writes_it(name, model, explicit, tmp_path, monkeypatch):
    import onnxgrow.io as gio

    if not explicit:  # switched on for size: tensors of EXTERNAL_THRESHOLD bytes or more go out
        monkeypatch.setattr(gio, "PROTOBUF_LIMIT", 1000)
    ours = onnxgrow.save(model, tmp_path / "ours.onnx", external_data=True if explicit else None)
    assert (tmp_path / "ours.onnx.data").exists()
    theirs = tmp_path / "theirs.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save(
        copy,
        str(theirs),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="theirs.onnx.data",
        size_threshold=0,
    )
    a, b = onnx.load(str(ours)), onnx.load(str(theirs))
    # onnx leaves typed fields (float_data ...) inline where onnxgrow moves them as raw bytes: compare values
    for ta, tb in zip(_tensors(a), _tensors(b), strict=True):
        assert ta.name == tb.name and ta.data_type == tb.data_type and list(ta.dims) == list(tb.dims)
        assert np.array_equal(numpy_helper.to_array(ta), numpy_helper.to_array(tb))
        for t in (ta, tb):  # and only tensors that were outside get data_location set on loading
            for f in stream._DATA_FIELDS + ("data_location",):
                t.ClearField(f)
    assert a.SerializeToString() == b.SerializeToString()
    external = [
        t for t in _tensors(onnx.load(str(ours), load_external_data=False)) if t.data_location == TensorProto.EXTERNAL
    ]
    assert external and all(t.data_type != TensorProto.STRING for t in external)


@pytest.mark.parametrize("external", [False, True])
def test_batched_writes_and_early_writeback_keep_the_bytes(external, tmp_path, monkeypatch):
    """The writer gathers small pieces, cuts big ones, reports progress and starts the disk writes as it goes
    (every `_WRITEBACK` bytes): with all three at a few hundred bytes the file is still byte for byte the model
    (inline) or loads as the same model (external data), and progress only grows, to the total."""
    monkeypatch.setattr(stream, "_BATCH", 64)
    monkeypatch.setattr(stream, "CHUNK", 500)
    monkeypatch.setattr(stream, "_WRITEBACK", 700)
    monkeypatch.setattr(stream, "_REPORT", 300)
    calls = []
    real = stream.start_writeback
    monkeypatch.setattr(stream, "start_writeback", lambda fh: (calls.append(fh.tell()), real(fh)))
    model = kitchen_sink()
    skel, deferred = stream.skeleton(model)
    seen: list[tuple[int, int]] = []
    path = tmp_path / "m.onnx"
    with open(path, "wb") as fh:
        if external:
            with open(tmp_path / "m.onnx.data", "wb") as data_fh:
                stream.write_external(
                    skel, deferred, fh, data_fh, "m.onnx.data", 0, lambda _s, d, t: seen.append((d, t))
                )
        else:
            stream.write_inline(skel, deferred, fh, lambda _s, d, t: seen.append((d, t)))
    if external:
        back = onnx.load(str(path))
        for a, b in zip(_tensors(back), _tensors(model), strict=True):
            assert np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    else:
        assert path.read_bytes() == model.SerializeToString()
    assert len(calls) >= 2 and calls == sorted(calls)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == seen[-1][1] and len(set(t for _, t in seen)) == 1


def test_start_writeback_ignores_what_is_not_a_file():
    stream.start_writeback(io.BytesIO(b"x"))  # no file descriptor: nothing to do, no error


def _tensors(model: onnx.ModelProto) -> list[TensorProto]:
    return list(model.graph.initializer) + list(stream._subgraph_tensors(model.graph))


def test_the_model_object_is_not_changed_and_no_weight_is_copied_into_the_skeleton():
    model = kitchen_sink()
    before = model.SerializeToString()
    skel, deferred = stream.skeleton(model)
    assert set(deferred) == {"w", "e", "h", "zero"}  # raw_data; typed fields and subgraphs stay in the copy
    assert all(not stream.has_data(t) for t in skel.graph.initializer if t.name in deferred)
    assert skel.graph.initializer[0].doc_string == "raw weight"
    stream.write_inline(skel, deferred, io.BytesIO())
    assert model.SerializeToString() == before


def test_wrong_deferred_length_is_refused():
    model = kitchen_sink()
    skel, deferred = stream.skeleton(model)
    deferred["w"] = stream.Deferred(deferred["w"].nbytes, lambda: b"short")
    with pytest.raises(onnxgrow.OnnxGrowError, match="tensor w: 5 bytes"):
        stream.write_inline(skel, deferred, io.BytesIO())


@pytest.mark.parametrize(
    "path, init",
    [
        ("mlp.onnx", "noise"),
        ("cnn.onnx", "noise"),
        ("cnn.onnx", "net2net"),
        ("encoder.onnx", "zero"),
        ("encoder.onnx", "net2net"),
    ],
)
def test_grown_model_streamed_is_the_one_built_in_memory(path, init, tmp_path):
    original = load(MODELS / path)
    analysis = analyse(original)
    plans, _ = plan(analysis, all="x2", init=init)
    in_memory = WidenPass(analysis, plans, seed=3)(original).model
    rewritten = WidenPass(analysis, plans, seed=3, stream=True)(original)
    buf = io.BytesIO()
    stream.write_inline(rewritten.model, rewritten.deferred, buf)
    assert buf.getvalue() == in_memory.SerializeToString()
    # and through the API: written, verified, renamed into place
    result = widen_model(MODELS / path, all="x2", init=init, seed=3, output=tmp_path / "g.onnx")
    assert result.report is not None and result.report.passed
    written = onnx.load(str(tmp_path / "g.onnx"))
    assert (
        written.SerializeToString()
        == widen_model(MODELS / path, all="x2", init=init, seed=3, check=False).model.SerializeToString()
    )
    assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]


@pytest.mark.parametrize(
    "path, init",
    [
        ("mlp.onnx", "noise"),
        ("cnn.onnx", "noise"),
        ("cnn.onnx", "zero"),
        ("cnn.onnx", "net2net"),
        ("encoder.onnx", "noise"),
        ("encoder.onnx", "net2net"),
    ],
)
def test_grow_weight_in_one_array_equals_axis_by_axis(path, init):
    """The fast way (old values copied once, new units filled in place, piece by piece) gives the weights,
    random draws included, of the general way (np.take per axis), whatever the size of the pieces."""
    original = load(MODELS / path)
    analysis = analyse(original)
    plans, _ = plan(analysis, all="x2", init=init)
    rewriter = _Rewriter(analysis, plans, 0.1, 7)
    for name, uses in rewriter.weight_uses().items():
        a, b = rewriter.grow_weight(name, uses), rewriter.grow_weight(name, uses, general=True)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
        for block_bytes in (1, 100, 4096):
            pieces = [p.copy() for p in rewriter.grow_blocks(name, uses, block_bytes=block_bytes)]
            assert np.array_equal(np.concatenate(pieces), a), (name, block_bytes)


def test_float16_weights_grow_in_their_own_type():
    from onnx_graphs import Graph

    g = Graph(17, dtype=np.float16)
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 6, "fc1")], name="r1")
    model = g.model(g.gemm(h, 6, 3, "fc2"))
    result = widen_model(model, {"fc1": "x2"}, atol=2e-3, rtol=2e-3)
    assert {t.data_type for t in result.model.graph.initializer} == {TensorProto.FLOAT16}
    w = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    old = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, arr in old.items():  # old values kept exactly
        assert np.array_equal(w[name][tuple(slice(0, n) for n in arr.shape)], arr)
