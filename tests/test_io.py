"""Loading and saving: folding of constant weights, what is kept, atomic writes, external data.

Every numerical check runs the models in onnxruntime; models are built here with onnx.helper.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
import onnxgrow.io as gio
from onnxgrow.cli import main
from onnxgrow.errors import OnnxGrowError

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------------------- helpers


def arr(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def init(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def model(nodes, inputs, outputs, inits=(), *, opset: int = 17, ir_version: int = 8, **graph_kw) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), graph_kw.pop("name", "g"), list(inputs), list(outputs), list(inits), **graph_kw
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.checker.check_model(m)
    return m


def vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def mlp(hidden: int = 4, *, named: bool = True) -> onnx.ModelProto:
    """x[n,3] -> MatMul W1 -> Add b1 -> Relu -> MatMul W2 -> y[n,2]."""
    nm = (lambda s: s) if named else (lambda s: "")
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name=nm("fc1")),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name=nm("bias1")),
        helper.make_node("Relu", ["h1"], ["h2"], name=nm("act")),
        helper.make_node("MatMul", ["h2", "W2"], ["y"], name=nm("fc2")),
    ]
    inits = [init("W1", arr(3, hidden, seed=1)), init("b1", arr(hidden, seed=2)), init("W2", arr(hidden, 2, seed=3))]
    return model(nodes, [vi("x", ["n", 3])], [vi("y", ["n", 2])], inits)


def run(m: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = m.SerializeToString() if isinstance(m, onnx.ModelProto) else str(m)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_same_outputs(a, b, feeds) -> None:
    for x, y in zip(run(a, feeds), run(b, feeds), strict=True):
        np.testing.assert_array_equal(x, y)


def real_inputs(m: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


X = {"x": arr(5, 3, seed=9)}


# ---------------------------------------------------------------------------- loading


def test_load_from_path_and_from_proto_give_the_same_model(tmp_path):
    m = mlp()
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    from_path = onnxgrow.load(path)
    from_str = onnxgrow.load(str(path))
    from_proto = onnxgrow.load(m)
    assert from_path == from_proto == from_str
    assert from_proto is not m
    assert_same_outputs(m, from_path, X)


def test_load_does_not_modify_the_callers_proto():
    # unnamed nodes and a Constant: load renames and folds, but only its own copy
    m = mlp(named=False)
    m.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=init("c", np.float32(2.0))))
    m.graph.node[-1].output[0] = "y0"
    m.graph.node.append(helper.make_node("Mul", ["y0", "c"], ["y"]))
    onnx.checker.check_model(m)
    before = m.SerializeToString()
    loaded = onnxgrow.load(m)
    assert m.SerializeToString() == before
    assert "Constant" not in [n.op_type for n in loaded.graph.node]
    loaded.graph.node[0].name = "changed"
    assert m.SerializeToString() == before


def test_load_reads_every_model_in_models_folder():
    root = Path(__file__).resolve().parent.parent / "models"
    for name in ("mlp.onnx", "cnn.onnx", "encoder.onnx"):
        m = onnxgrow.load(root / name)
        assert all(n.name for n in m.graph.node)
        assert "Constant" not in [
            n.op_type for n in m.graph.node if not any(o in {x.name for x in m.graph.output} for o in n.output)
        ]


# ---------------------------------------------------------------------------- folding


def _folding_cases():
    """(id, model, op types that must disappear): each hides a weight behind a constant subgraph."""
    w1, b1, w2 = arr(3, 4, seed=1), arr(4, seed=2), arr(4, 2, seed=3)
    out = [vi("y", ["n", 2])]
    x = [vi("x", ["n", 3])]
    cases = []

    nodes = [
        helper.make_node("Constant", [], ["W1"], value=init("W1", w1), name="w1_const"),
        helper.make_node("Constant", [], ["b1"], value_floats=b1.tolist(), name="b1_const"),
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "W2"], ["y"]),
    ]
    cases.append(("Constant", model(nodes, x, out, [init("W2", w2)]), {"Constant"}))

    nodes = [
        helper.make_node("Constant", [], ["shape"], value_ints=[4]),
        helper.make_node("ConstantOfShape", ["shape"], ["b1"], value=init("v", np.array([0.25], np.float32))),
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "W2"], ["y"]),
    ]
    cases.append(
        ("ConstantOfShape", model(nodes, x, out, [init("W1", w1), init("W2", w2)]), {"Constant", "ConstantOfShape"})
    )

    # torch's exporter: one shared initializer fed to two users through Identity
    nodes = [
        helper.make_node("Identity", ["W1"], ["W1_copy"]),
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("MatMul", ["x", "W1_copy"], ["h1"]),
        helper.make_node("Add", ["h0", "h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["y"]),
    ]
    cases.append(("Identity", model(nodes, x, out, [init("W1", w1), init("W2", w2)]), {"Identity"}))

    nodes = [
        helper.make_node("Transpose", ["W1t"], ["W1"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "W2"], ["y"]),
    ]
    cases.append(
        ("Transpose", model(nodes, x, out, [init("W1t", w1.T.copy()), init("b1", b1), init("W2", w2)]), {"Transpose"})
    )

    # old exporters list every initializer as a graph input as well
    m = mlp()
    for t in m.graph.initializer:
        m.graph.input.append(vi(t.name, list(t.dims)))
    onnx.checker.check_model(m)
    cases.append(("initializers-as-inputs", m, set()))
    return cases


@pytest.mark.parametrize("case", _folding_cases(), ids=lambda c: c[0])
def test_folding_makes_plain_initializers_and_keeps_the_outputs(case):
    _, original, gone = case
    before = original.SerializeToString()
    folded = onnxgrow.load(original)
    assert original.SerializeToString() == before
    ops = [n.op_type for n in folded.graph.node]
    assert not gone & set(ops), ops
    # every tensor a node reads is now the input x, a plain initializer or another node's output
    inits = {t.name for t in folded.graph.initializer}
    produced = {o for n in folded.graph.node for o in n.output}
    for node in folded.graph.node:
        assert set(node.input) <= {"x"} | inits | produced, node
    assert [i.name for i in folded.graph.input] == ["x"]
    onnx.checker.check_model(folded)
    assert_same_outputs(original, folded, X)
    # and it still loads and computes the same after a round trip through bytes
    again = onnxgrow.load(folded)
    assert_same_outputs(original, again, X)


def test_folding_keeps_nodes_that_depend_on_real_inputs_or_randomness():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["zeros"], value=init("v", np.array([0.0], np.float32))),
        helper.make_node("RandomUniform", [], ["r"], shape=[1, 3], seed=1.0),
        helper.make_node("Mul", ["r", "zeros"], ["rz"]),
        helper.make_node("Add", ["x", "rz"], ["y"]),
    ]
    m = model(nodes, [vi("x", ["n", 3])], [vi("y", ["n", 3])])
    folded = onnxgrow.load(m)
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in m.graph.node]
    assert_same_outputs(m, folded, X)


def test_constant_feeding_a_graph_output_is_kept_as_a_node():
    nodes = [helper.make_node("Constant", [], ["y"], value=init("c", arr(2, seed=4)))]
    m = model(nodes, [], [vi("y", [2])])
    folded = onnxgrow.load(m)
    assert [n.op_type for n in folded.graph.node] == ["Constant"]
    assert_same_outputs(m, folded, {})


def test_fold_false_keeps_the_graph_as_it_was():
    # fully named models, so that load has nothing to add: equal protos
    for case_id, original, _ in _folding_cases():
        for i, node in enumerate(original.graph.node):
            node.name = node.name or f"n{i}"
        kept = onnxgrow.load(original, fold=False)
        assert kept == original, case_id


def test_ir3_model_with_initializer_inputs_still_loads_after_folding(tmp_path):
    # IR version 3 requires initializers to be graph inputs; once they are plain
    # initializers the model must declare IR >= 4 or the checker (and load) refuses it.
    m = mlp()
    for t in m.graph.initializer:
        m.graph.input.append(vi(t.name, list(t.dims)))
    m.ir_version = 3
    m.opset_import[0].version = 8
    onnx.checker.check_model(m)
    folded = onnxgrow.load(m)
    assert folded.ir_version >= 4
    onnx.checker.check_model(folded)
    path = onnxgrow.save(folded, tmp_path / "m.onnx")
    again = onnxgrow.load(path)
    assert_same_outputs(m, again, X)
    assert onnxgrow.load(m, fold=False).ir_version == 3


# ---------------------------------------------------------------------------- repairs of form


def _old_form(*, ir3: bool = True, output: str = "typed") -> onnx.ModelProto:
    """The MLP as older files have it, unchecked: IR version 3 (opset 8) without its initializers listed as
    graph inputs, and/or its output without a type ("none") or without a shape ("no-shape")."""
    m = mlp()
    if ir3:
        m.ir_version = 3
        m.opset_import[0].version = 8
    if output == "none":
        m.graph.output[0].ClearField("type")
    elif output == "no-shape":
        m.graph.output[0].type.tensor_type.ClearField("shape")
    return m


def _refused_by_checker(m: onnx.ModelProto) -> str:
    with pytest.raises(onnx.checker.ValidationError) as info:
        onnx.checker.check_model(m)
    return str(info.value)


@pytest.mark.parametrize(
    "ir3, output, words",
    [
        (True, "typed", ["IR version 3 -> 4", "not listed as graph inputs", "W1"]),
        (False, "none", ["inferred the type and shape of output(s) y"]),
        (False, "no-shape", ["inferred the type and shape of output(s) y"]),
        (True, "none", ["IR version 3 -> 4", "inferred the type and shape of output(s) y"]),
    ],
    ids=["ir3", "untyped-output", "shapeless-output", "both"],
)
def test_form_only_faults_are_repaired_with_one_line(tmp_path, capsys, ir3, output, words):
    m = _old_form(ir3=ir3, output=output)
    _refused_by_checker(m)  # the premise: onnx.checker refuses the file ...
    want = run(m, X)  # ... and onnxruntime runs it
    path = tmp_path / "old.onnx"
    onnx.save(m, str(path))
    before = digest(path)
    with pytest.warns(onnxgrow.ModelRepaired) as caught:
        loaded = onnxgrow.load(path)
    (warning,) = caught
    assert str(path) in str(warning.message) and all(w in str(warning.message) for w in words)
    onnx.checker.check_model(loaded)
    assert loaded.ir_version >= 4
    out = loaded.graph.output[0].type.tensor_type
    assert out.elem_type == TensorProto.FLOAT and [d.dim_param or d.dim_value for d in out.shape.dim] == ["n", 2]
    for a, b in zip(want, run(loaded, X), strict=True):
        np.testing.assert_array_equal(a, b)
    # the commands: one line on stderr saying what was repaired, then they proceed; the file is not changed
    grown = tmp_path / "wide.onnx"
    assert main(["widen", str(path), "-o", str(grown), "--all", "x2"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"onnxgrow: {path}: repaired") and all(w in lines[0] for w in words)
    onnx.checker.check_model(str(grown))  # what onnxgrow writes is valid ONNX
    assert main(["verify", str(path), str(grown)]) == 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # the reference, repaired once more
    assert digest(path) == before
    # a ModelProto is repaired in the copy load returns
    with pytest.warns(onnxgrow.ModelRepaired, match="^model: repaired"):
        onnxgrow.load(m)
    _refused_by_checker(m)


def test_form_repair_with_external_data(tmp_path):
    m = _old_form(ir3=True, output="none")
    want = run(m, X)
    path = tmp_path / "old.onnx"
    onnx.save(m, str(path), save_as_external_data=True, location="old.onnx.data", size_threshold=0)
    with pytest.warns(onnxgrow.ModelRepaired, match="IR version 3 -> 4"):
        loaded = onnxgrow.load(path)
    for a, b in zip(want, run(loaded, X), strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "old.onnx.data").unlink()
    with pytest.raises(OnnxGrowError, match="old.onnx.data"):
        onnxgrow.load(path)


def test_form_repairs_do_not_hide_faults_of_substance(tmp_path, capsys):
    # repaired form, and still a node reading a tensor that does not exist: the checker's refusal
    m = _old_form(ir3=True, output="none")
    m.graph.node[0].input[1] = "does_not_exist"
    path = tmp_path / "bad.onnx"
    onnx.save(m, str(path))
    with pytest.raises(OnnxGrowError, match="not a valid ONNX model.*does_not_exist"):
        onnxgrow.load(path)
    # an output that shape inference cannot type (made by an op of an unknown domain)
    m = _old_form(ir3=False, output="none")
    m.graph.node[-1].op_type, m.graph.node[-1].domain = "Foo", "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "untyped.onnx"
    onnx.save(m, str(path))
    with pytest.raises(OnnxGrowError, match="untyped.onnx: not a valid ONNX model: graph output.* y have no type"):
        onnxgrow.load(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "untyped.onnx" in err[0] and "repaired" not in err[0]


# ---------------------------------------------------------------------------- what is kept


def test_model_and_graph_properties_survive_load_and_save(tmp_path):
    m = mlp()
    m.ir_version = 7
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    m.producer_name, m.producer_version = "trainer", "9.9"
    m.domain, m.model_version, m.doc_string = "org.example", 42, "the model"
    helper.set_model_props(m, {"author": "someone", "epochs": "100"})
    m.graph.name, m.graph.doc_string = "the_graph", "graph doc"
    m.graph.node[0].doc_string = "first layer"
    onnx.checker.check_model(m)
    path = onnxgrow.save(onnxgrow.load(m), tmp_path / "m.onnx")
    back = onnx.load(str(path))
    assert back.ir_version == 7
    assert {(o.domain, o.version) for o in back.opset_import} == {("", 17), ("ai.onnx.ml", 3)}
    assert {p.key: p.value for p in back.metadata_props} == {"author": "someone", "epochs": "100"}
    assert (back.producer_name, back.producer_version) == ("trainer", "9.9")
    assert (back.domain, back.model_version, back.doc_string) == ("org.example", 42, "the model")
    assert (back.graph.name, back.graph.doc_string) == ("the_graph", "graph doc")
    assert [n.name for n in back.graph.node] == ["fc1", "bias1", "act", "fc2"]
    assert back.graph.node[0].doc_string == "first layer"
    assert_same_outputs(m, back, X)


def test_unnamed_nodes_get_stable_unique_names(tmp_path):
    m = mlp(named=False)
    m.graph.node[1].name = "Relu_2"  # a user name that looks like a generated one
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    first = [n.name for n in onnxgrow.load(path).graph.node]
    second = [n.name for n in onnxgrow.load(path).graph.node]
    third = [n.name for n in onnxgrow.load(m).graph.node]
    assert first == second == third
    assert all(first) and len(set(first)) == len(first)
    assert first[1] == "Relu_2"
    # the names survive a save: loading the saved model keeps them
    saved = onnxgrow.save(onnxgrow.load(path), tmp_path / "named.onnx")
    assert [n.name for n in onnxgrow.load(saved).graph.node] == first


# ---------------------------------------------------------------------------- saving


def test_save_writes_a_model_onnxruntime_runs(tmp_path):
    m = onnxgrow.load(mlp())
    out = onnxgrow.save(m, tmp_path / "out.onnx")
    assert out == tmp_path / "out.onnx"
    assert os.listdir(tmp_path) == ["out.onnx"]
    assert_same_outputs(m, out, X)


def test_save_accepts_a_bare_file_name_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnxgrow.save(mlp(), "bare.onnx")
    assert os.listdir(tmp_path) == ["bare.onnx"]


def test_save_replaces_the_output_only_at_the_end(tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old model")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # while the new model is written, the old file is still there untouched
        seen.append((Path(src), Path(dst), Path(dst).exists() and Path(dst).read_bytes() == b"old model"))
        real_replace(src, dst)

    monkeypatch.setattr(gio.os, "replace", spy)
    onnxgrow.save(mlp(), out)
    assert [(d, old_kept) for _, d, old_kept in seen] == [(out, True)]
    src = seen[0][0]
    assert src != out and src.resolve().parent.parent == tmp_path.resolve()  # a temporary in the same folder
    assert os.listdir(tmp_path) == ["out.onnx"]
    assert onnx.load(str(out)) == mlp()


def test_failed_save_leaves_the_old_output_and_no_temporary_files(tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old model")

    def disk_full(fh):  # the model has been written to the temporary file; flushing it to disk fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gio.stream, "fsync", disk_full)
    for external in (False, True):
        with pytest.raises(OSError):
            onnxgrow.save(mlp(), out, external_data=external)
        assert out.read_bytes() == b"old model"
        assert os.listdir(tmp_path) == ["out.onnx"]


def test_save_into_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(OnnxGrowError, match="does not exist"):
        onnxgrow.save(mlp(), tmp_path / "nowhere" / "out.onnx")
    assert os.listdir(tmp_path) == []


def test_save_onto_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OnnxGrowError, match="folder"):
        onnxgrow.save(mlp(), tmp_path / "d")
    assert os.listdir(tmp_path) == ["d"] and os.listdir(tmp_path / "d") == []


def test_save_does_not_change_the_model_object(tmp_path):
    m = onnxgrow.load(mlp())
    before = m.SerializeToString()
    onnxgrow.save(m, tmp_path / "a.onnx")
    onnxgrow.save(m, tmp_path / "b.onnx", external_data=True)
    assert m.SerializeToString() == before


# ---------------------------------------------------------------------------- external data


def test_external_data_round_trip(tmp_path):
    m = onnxgrow.load(mlp())
    path = onnxgrow.save(m, tmp_path / "m.onnx", external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    # the .onnx file refers to the data file by a relative name, so the pair can be moved
    raw = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in raw.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"m.onnx.data"}
    back = onnxgrow.load(path)
    assert {t.name: numpy_helper.to_array(t).tolist() for t in back.graph.initializer} == {
        t.name: numpy_helper.to_array(t).tolist() for t in m.graph.initializer
    }
    assert onnxgrow.verify(m, path).passed
    assert main(["verify", str(path), str(path)]) == 0
    # and it saves again, both ways, from the loaded model
    (tmp_path / "again").mkdir()
    again = onnxgrow.save(back, tmp_path / "again" / "m2.onnx", external_data=True)
    assert sorted(os.listdir(tmp_path / "again")) == ["m2.onnx", "m2.onnx.data"]
    plain = onnxgrow.save(back, tmp_path / "again" / "plain.onnx")
    assert not (tmp_path / "again" / "plain.onnx.data").exists()
    for p in (again, plain):
        assert_same_outputs(m, p, X)


def test_external_data_moves_typed_tensor_fields_too(tmp_path):
    # helper.make_tensor without raw=True stores float_data, which onnx would leave inline
    m = mlp()
    w = numpy_helper.to_array(m.graph.initializer[0])
    m.graph.initializer[0].CopyFrom(helper.make_tensor("W1", TensorProto.FLOAT, w.shape, w.flatten().tolist()))
    path = onnxgrow.save(m, tmp_path / "m.onnx", external_data=True)
    raw = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)
    assert_same_outputs(m, path, X)


def test_automatic_external_data_past_the_protobuf_limit(tmp_path, monkeypatch):
    big = mlp(hidden=64)  # W1 is 3x64 floats = 768 bytes, W2 64x2; the model is a few KB
    size = big.ByteSize()
    monkeypatch.setattr(gio, "EXTERNAL_THRESHOLD", 256)
    monkeypatch.setattr(gio, "PROTOBUF_LIMIT", size // 2)
    path = onnxgrow.save(big, tmp_path / "big.onnx")
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    assert path.stat().st_size < size // 2
    back = onnxgrow.load(path)
    assert_same_outputs(big, back, X)
    # verify has to hand such a model to onnxruntime as a file with its data file
    report = onnxgrow.verify(big, path)
    assert report.passed
    # under the limit again: one plain file
    monkeypatch.setattr(gio, "PROTOBUF_LIMIT", 2**31 - 1)
    onnxgrow.save(back, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()


def test_missing_external_data_file_names_the_file(tmp_path, capsys):
    path = onnxgrow.save(mlp(), tmp_path / "m.onnx", external_data=True)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(OnnxGrowError, match=r"m\.onnx\.data"):
        onnxgrow.load(path)
    assert main(["verify", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "m.onnx.data" in err and "Traceback" not in err


def test_truncated_external_data_file_is_a_clear_error(tmp_path):
    path = onnxgrow.save(mlp(), tmp_path / "m.onnx", external_data=True)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(OnnxGrowError, match=r"m\.onnx"):
        onnxgrow.load(path)


# ---------------------------------------------------------------------------- unreadable models


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "random", "truncated", "text"])
def test_unreadable_model_is_a_one_line_error_naming_the_file(tmp_path, kind):
    good = mlp().SerializeToString()
    path = tmp_path / f"{kind}.onnx"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(5).bytes(4000))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "text":
        path.write_text("this is not a model\n")
    with pytest.raises(OnnxGrowError) as info:
        onnxgrow.load(path)
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg


def test_invalid_graph_is_refused_by_the_checker(tmp_path):
    m = mlp()
    m.graph.node[0].input[1] = "does_not_exist"
    path = tmp_path / "bad.onnx"
    onnx.save(m, str(path))
    with pytest.raises(OnnxGrowError, match="bad.onnx"):
        onnxgrow.load(path)


# ---------------------------------------------------------------------------- inputs stay untouched


def test_input_file_bytes_unchanged_after_every_command(tmp_path):
    src = tmp_path / "src.onnx"
    m = mlp(named=False)
    m.graph.node.insert(0, helper.make_node("Identity", ["W2"], ["W2c"]))
    m.graph.node[-1].input[1] = "W2c"
    onnx.save(m, str(src))
    ext = onnxgrow.save(m, tmp_path / "ext.onnx", external_data=True)
    watched = [src, ext, tmp_path / "ext.onnx.data"]
    before = {p: digest(p) for p in watched}
    onnxgrow.load(src)
    onnxgrow.load(ext)
    onnxgrow.save(onnxgrow.load(src), tmp_path / "copy.onnx")
    assert main(["verify", str(src), str(ext), "--json"]) == 0
    assert main(["verify", str(src), str(src), "--iterations", "2", "--save-inputs", str(tmp_path / "in.npz")]) == 0
    onnxgrow.verify(str(ext), str(src), load_inputs=str(tmp_path / "in.npz"))
    from onnxgrow.demo import perturb

    perturb(str(src), str(tmp_path / "perturbed.onnx"))
    assert main(["verify", str(src), str(tmp_path / "perturbed.onnx")]) == 1
    assert {p: digest(p) for p in watched} == before


def test_python_module_entry_point_runs(tmp_path):
    import subprocess

    p = tmp_path / "m.onnx"
    onnx.save(mlp(), str(p))
    proc = subprocess.run(
        [sys.executable, "-m", "onnxgrow", "verify", str(p), str(p)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_external_data_keeps_shape_constants_inline(tmp_path):
    """--save-external-data (and verify's temporary copy past 2 GB): a Reshape target or Slice bound in the
    data file stops onnxruntime's shape inference at load ("Cannot parse data from external tensors")."""
    w = np.random.default_rng(0).standard_normal((4, 600)).astype(np.float32)  # big enough to go outside
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Slice", ["h", "start", "end", "axis"], ["s"]),
            helper.make_node("Reshape", ["s", "shape"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([0], np.int64), "start"),
            numpy_helper.from_array(np.array([300], np.int64), "end"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(np.array([-1, 30, 10], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = onnxgrow.save(model, tmp_path / "m.onnx", external_data=True)
    back = onnx.load(str(path), load_external_data=False)
    where = {t.name: t.data_location for t in back.graph.initializer}
    assert where["w"] == TensorProto.EXTERNAL and where["shape"] == where["end"] == TensorProto.DEFAULT
    x = np.ones((2, 4), np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, (x @ w)[:, :300].reshape(-1, 30, 10), rtol=1e-6)
