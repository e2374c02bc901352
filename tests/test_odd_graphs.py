"""Odd but valid graphs: each is grown correctly (checked here with onnxruntime, and the saved file passes
`onnx.checker.check_model(path, full_check=True)`) or refused with a reason that names what stops it.

Covered elsewhere, not repeated: op coverage of widen over opsets 7..latest (tests/test_rules.py), widen of
float16/float64/bfloat16 weights (tests/test_rules.py::test_dtypes_keep_their_type, ::test_bfloat16_...),
tied MatMul weights (tests/test_rules.py::test_tied_weight_*), unnamed nodes through the API
(tests/test_rules.py::test_unnamed_nodes_get_names_widen_accepts, tests/test_io.py), the Squeeze-if-size-1
If of TorchScript exports (tests/test_widen_torch.py), folding of Constant/Identity weights (tests/test_io.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")
from onnx_graphs import LATEST, Graph  # noqa: E402

import onnxgrow  # noqa: E402
from onnxgrow.cli import main  # noqa: E402
from onnxgrow.deepen import deepen_model  # noqa: E402
from onnxgrow.errors import OnnxGrowError, VerificationFailed  # noqa: E402
from onnxgrow.widen import inspect_model, widen_model  # noqa: E402


# ---------------------------------------------------------------------------------------------- helpers
def _session(model: onnx.ModelProto | Path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def random_feeds(model: onnx.ModelProto, seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Inputs for every real graph input; symbolic dimensions take `dims[name]` (default 3)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (dims or {}).get(d.dim_param, 3) for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype == np.bool_:
            feeds[inp.name] = np.asarray(rng.random(shape) < 0.5)
        elif np.issubdtype(dtype, np.integer):
            feeds[inp.name] = rng.integers(0, 5, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def assert_same(original: onnx.ModelProto, grown: onnx.ModelProto | Path, feeds_list=None, tol: float = 1e-5) -> None:
    """Every output of `grown` equals the original's within `tol`, normalised by the output's magnitude."""
    ref, new = _session(original), _session(grown)
    names = [o.name for o in ref.get_outputs()]
    for feeds in feeds_list or [random_feeds(original, s) for s in (0, 1)]:
        for name, want, got in zip(names, ref.run(names, feeds), new.run(names, feeds)):
            want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
            assert want.shape == got.shape, f"{name}: shape {got.shape} != {want.shape}"
            err = float(np.max(np.abs(want - got), initial=0.0)) / max(float(np.max(np.abs(want), initial=0.0)), 1e-3)
            assert err <= tol, f"{name}: normalised error {err:.3g} > {tol:g}"


def saved(model: onnx.ModelProto, tmp_path: Path, name: str = "grown.onnx") -> Path:
    """Save as onnxgrow does; the file must pass the full checker (stale value_info fails it)."""
    path = onnxgrow.save(model, tmp_path / name)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def grow_and_check(model, tmp_path, layers=None, tol: float = 1e-5, feeds_list=None, **kwargs):
    """widen (onnxgrow verifies), save, check the file, compare with the original here."""
    result = widen_model(model, layers, **kwargs)
    assert_same(model, saved(result.model, tmp_path), feeds_list, tol)
    return result


def refused(fn, *words: str) -> str:
    """`fn` raises a plain OnnxGrowError (not a failed verification) whose one line contains every word."""
    with pytest.raises(OnnxGrowError) as info:
        fn()
    assert not isinstance(info.value, VerificationFailed), info.value
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def group_of(model, producer: str):
    return next(g for g in inspect_model(model).groups if producer in g.producers)


def mlp(g: Graph, x: str, sizes=(4, 6, 5, 3), names=("fc1", "fc2", "fc3")) -> list[str]:
    """Gemm+Relu layers; returns every layer's output (the last without Relu)."""
    outs, h = [], x
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        h = g.gemm(h, k, n, names[i])
        if i < len(sizes) - 2:
            h = g.op("Relu", [h], name=f"relu{i + 1}")
        outs.append(h)
    return outs


# ---------------------------------------------------------------------------------------------- names
def test_unnamed_nodes_through_the_cli(tmp_path, capsys):
    """Generated names (`<OpType>_<index>`) are what inspect prints, and widen/deepen accept them."""
    g = Graph(names=False)
    out = mlp(g, g.input(["batch", 4]))[-1]
    model = g.model(out)
    assert not any(n.name for n in model.graph.node)
    src = tmp_path / "unnamed.onnx"
    onnx.save(model, str(src))
    assert main(["inspect", str(src), "--json"]) == 0
    producers = [
        p
        for grp in json.loads(capsys.readouterr().out)["groups"]
        if grp["constraint"] == "free"
        for p in grp["producers"]
    ]
    assert producers == ["Gemm_0", "Gemm_2"]
    assert (
        main(["widen", str(src), "-o", str(tmp_path / "w.onnx"), "--layer", "Gemm_0=x2", "--layer", "Gemm_2=+3"]) == 0
    )
    assert main(["deepen", str(src), "-o", str(tmp_path / "d.onnx"), "--after", "Relu_1", "--block", "residual"]) == 0
    for f in ("w.onnx", "d.onnx"):
        assert_same(model, saved(onnx.load(str(tmp_path / f)), tmp_path, "re" + f))
    assert src.read_bytes() == model.SerializeToString()


def _confusing() -> onnx.ModelProto:
    """Tensors and weights named like nodes, ops and group ids: tensor 'Gemm', weight 'g0', node 'x' ..."""
    rng = np.random.default_rng(0)
    w = lambda *s: rng.standard_normal(s).astype(np.float32)
    inits = [
        numpy_helper.from_array(w(4, 6), "fc1"),
        numpy_helper.from_array(w(6), "Relu"),
        numpy_helper.from_array(w(6, 5), "g0"),
        numpy_helper.from_array(w(5, 3), "MatMul"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "fc1"], ["Gemm"], name="fc2"),
        helper.make_node("Add", ["Gemm", "Relu"], ["fc2_out"], name="Relu"),
        helper.make_node("Relu", ["fc2_out"], ["g1"], name="x"),
        helper.make_node("MatMul", ["g1", "g0"], ["fc1_out"], name="g1"),
        helper.make_node("Relu", ["fc1_out"], ["a2"], name="MatMul"),
        helper.make_node("MatMul", ["a2", "MatMul"], ["y"], name="y"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_names_that_look_like_ops_nodes_and_group_ids(tmp_path):
    model = _confusing()
    groups = {g.id: g for g in inspect_model(model).groups}
    assert groups["g0"].producers == ["fc2"] and groups["g1"].producers == ["g1"]
    # unambiguous names: the weight 'fc1' and the node 'fc2' are the same layer; node 'g1' is group g1
    for name, gid in (("fc1", "g0"), ("fc2", "g0"), ("g1", "g1")):
        res = grow_and_check(model, tmp_path, {name: "x2"})
        assert [p.group.id for p in res.plans] == [gid]
    # 'g0' is group g0 and also the weight of node g1 (group g1): refused, not guessed
    refused(lambda: widen_model(model, {"g0": "x2"}), "'g0' is ambiguous", "group g0", "weight g0 of group g1")
    # node 'x' (a Relu) and graph input 'x'; node 'g1' and tensor 'g1': deepen refuses to guess
    refused(lambda: deepen_model(model, "x"), "--after x", "ambiguous", "node x (Relu)", "--after g1")
    refused(lambda: deepen_model(model, "g1"), "--after g1", "ambiguous", "--after fc1_out")
    # tensor 'Gemm' (output of node fc2) and node 'fc2' itself are fine
    for after in ("Gemm", "fc2", "fc1_out", "a2"):
        for block in ("identity", "residual"):
            assert_same(model, saved(deepen_model(model, after, block=block).model, tmp_path))
    refused(lambda: widen_model(model, {"Relu": "x2"}), "'Relu'", "no axis group")


# ---------------------------------------------------------------------------------------------- shared weights
def _tied_embedding() -> onnx.ModelProto:
    """Input and output embeddings share one table: Gather(E, ids) ... Gemm(h, E, transB=1)."""
    g = Graph(17)
    ids = g.input([2, 5], "ids", dtype=np.int64)
    table = g.weight(10, 8, name="emb")
    h = g.op("Gather", [table, ids], name="embed")
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", [h, g.weight(8, 8)], name="fc"), g.const(np.zeros(8))])])
    h = g.op("Reshape", [h, g.ints([10, 8])])
    return g.model(g.op("Gemm", [h, table], transB=1, name="unembed"))


@pytest.mark.parametrize("init", ["zero", "noise", "net2net"])
def test_tied_embedding_table_is_untied_unless_ties_are_kept(init, tmp_path):
    """The table is read as rows (Gather: new units are new columns) and as columns (the Gemm reads them as
    inputs: zero, or split for net2net): the two readers need different tables, so each gets its own."""
    model = _tied_embedding()
    for layer in ("embed", "fc"):  # both groups meet the table (as rows of Gather, as columns of the Gemm)
        res = grow_and_check(model, tmp_path, {layer: "x2"}, init=init)
        assert [u.weight for u in res.untied] == ["emb"]
        refused(
            lambda layer=layer: widen_model(model, {layer: "x2"}, init=init, keep_ties=True),
            "weight emb",
            "embed",
            "unembed",
            "tied",
            "--keep-ties",
        )


def test_tied_weight_behind_identity_is_untied_on_load(tmp_path):
    """torch feeds equal weights through Identity: folding makes separate initializers, grown separately."""
    g = Graph()
    x = g.input(["batch", 4])
    w = g.weight(4, 4, name="shared")
    a = g.op("Relu", [g.op("MatMul", [x, w], name="fa")])
    b = g.op("Relu", [g.op("MatMul", [a, g.op("Identity", [w], name="tie")], name="fb")])
    model = g.model(g.gemm(b, 4, 3, "head"))
    res = grow_and_check(model, tmp_path, {"fa": "x2"})
    dims = {t.name: list(t.dims) for t in res.model.graph.initializer}
    assert dims["shared"] == [4, 8] and sorted(d for n, d in dims.items() if n.startswith("identity")) == [[8, 4]]


def test_bias_shared_by_two_layers(tmp_path):
    g = Graph()
    x = g.input([2, 4])
    bias = g.const(np.full(6, 0.3), "bias")
    h1 = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.weight(4, 6)], name="fa"), bias])])
    h2 = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.weight(4, 6)], name="fb"), bias])])
    model = g.model(
        g.op("Add", [g.op("MatMul", [h1, g.weight(6, 3)], name="ha"), g.op("MatMul", [h2, g.weight(6, 3)], name="hb")])
    )
    for layers in ({"fa": "x2"}, {"fa": "+1", "fb": "+2"}):
        untied = grow_and_check(model, tmp_path, layers)
        assert [u.weight for u in untied.untied] == ["bias"]
        refused(lambda layers=layers: widen_model(model, layers, keep_ties=True), "weight bias is shared", "tied")
    res = grow_and_check(model, tmp_path, {"fa": "x2", "fb": "x2"}, init="zero")  # the same growth: consistent
    assert [list(t.dims) for t in res.model.graph.initializer if t.name == "bias"] == [[12]]


# ---------------------------------------------------------------------------------------------- control flow
def _around(kind: str) -> onnx.ModelProto:
    """fc1 -> Relu -> fc2 -> Relu -> <If | Loop | Scan> -> head: fc1 grows around it, fc2 reaches into it."""
    g = Graph(17)
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 6, "fc1")], name="r1")
    h2 = g.op("Relu", [g.gemm(h, 6, 5, "fc2")], name="r2")
    f = TensorProto.FLOAT
    if kind == "If":
        cond = g.input([], "cond", dtype=np.bool_)
        then = helper.make_graph(
            [helper.make_node("Neg", [h2], ["t"])], "then", [], [helper.make_tensor_value_info("t", f, [2, 5])]
        )
        other = helper.make_graph(
            [helper.make_node("Identity", [h2], ["e"])], "else", [], [helper.make_tensor_value_info("e", f, [2, 5])]
        )
        y = g.op("If", [cond], then_branch=then, else_branch=other, name="branch")
    elif kind == "Loop":
        body = helper.make_graph(
            [helper.make_node("Tanh", ["v_in"], ["v_out"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_in", f, [2, 5]),
            ],
            [
                helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_out", f, [2, 5]),
            ],
        )
        y = g.op("Loop", [g.ints(np.array(3), "trip"), "", h2], body=body, name="loop")
    else:
        body = helper.make_graph(
            [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["y_t"])],
            "body",
            [helper.make_tensor_value_info("s_in", f, [5]), helper.make_tensor_value_info("x_t", f, [5])],
            [helper.make_tensor_value_info("s_out", f, [5]), helper.make_tensor_value_info("y_t", f, [5])],
        )
        y = g.op(
            "Scan", [g.const(np.zeros(5, np.float32), "s0"), h2], n_out=2, body=body, num_scan_inputs=1, name="scan"
        )[1]
    return g.model(g.gemm(y, 5, 3, "head"))


@pytest.mark.parametrize("kind", ["If", "Loop", "Scan"])
def test_control_flow_grows_around_and_refuses_inside(kind, tmp_path):
    model = _around(kind)
    node = {"If": "branch", "Loop": "loop", "Scan": "scan"}[kind]
    feeds = [random_feeds(model, s) for s in (0, 1)]
    if kind == "If":  # both branches
        feeds = [dict(feeds[0], cond=np.array(True)), dict(feeds[1], cond=np.array(False))]
    for init in ("noise", "zero", "net2net"):
        grow_and_check(model, tmp_path, {"fc1": "x2"}, init=init, feeds_list=feeds)
    assert group_of(model, "fc2").constraint == "blocked"
    refused(lambda: widen_model(model, {"fc2": "x2"}), "layers['fc2']", node, kind)
    res = grow_and_check(model, tmp_path, all="x2", feeds_list=feeds)
    assert {p.group.id for p in res.plans} == {group_of(model, "fc1").id}
    # a new layer before the control flow is fine; the tensor it reads is not changed
    for block in ("identity", "residual"):
        assert_same(model, saved(deepen_model(model, "r1", block=block).model, tmp_path), feeds)


def test_if_reading_a_grown_tensor_inside_its_branch_is_refused():
    """A subgraph that captures an outer tensor of a growing group: refused naming the If."""
    g = Graph(17)
    x = g.input([2, 4])
    cond = g.input([], "cond", dtype=np.bool_)
    h = g.op("Relu", [g.gemm(x, 4, 6, "fc1")])
    then = helper.make_graph(
        [helper.make_node("Mul", [h, h], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 6])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", [h], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 6])],
    )
    y = g.op("If", [cond], then_branch=then, else_branch=other, name="gate")
    model = g.model(g.gemm(y, 6, 3, "head"))
    refused(lambda: widen_model(model, {"fc1": "x2"}), "layers['fc1']", "gate (If)", "subgraph")


# ---------------------------------------------------------------------------------------------- shapes
def test_dynamic_batch_and_sequence(tmp_path, capsys):
    g = Graph(17)
    x = g.input(["batch", "seq", 8])
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.weight(8, 16)], name="fc1"), g.const(np.zeros(16))])])
    h = g.op("Relu", [g.op("MatMul", [h, g.weight(16, 12)], name="fc2")])
    model = g.model(g.op("MatMul", [h, g.weight(12, 4)], name="fc3"))
    feeds = [random_feeds(model, s, {"batch": b, "seq": t}) for s, (b, t) in enumerate([(1, 1), (3, 7), (2, 33)])]
    for init in ("noise", "zero", "net2net"):
        grow_and_check(model, tmp_path, {"fc1": "x2", "fc2": "+5"}, init=init, feeds_list=feeds)
    for block in ("identity", "residual"):
        assert_same(model, saved(deepen_model(model, "fc1", block=block).model, tmp_path), feeds)
    src = tmp_path / "seq.onnx"
    onnx.save(model, str(src))
    assert (
        main(["widen", str(src), "-o", str(tmp_path / "w.onnx"), "--all", "x2", "--input-shapes", "x:5x9x8", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["verification"]["inputs"] == {"x": [5, 9, 8]}
    assert_same(model, tmp_path / "w.onnx", feeds)


def test_several_graph_outputs(tmp_path):
    """An intermediate output fixes its group (named in the reason); the others grow; every output is kept."""
    g = Graph(17)
    x = g.input(["batch", 4])
    h = g.op("Relu", [g.gemm(x, 4, 6, "fc1")])
    h2 = g.op("Relu", [g.gemm(h, 6, 5, "fc2")])
    y1 = g.gemm(h2, 5, 3, "head1")
    y2 = g.op("Sigmoid", [g.gemm(h2, 5, 2, "head2")])
    model = g.model(y1, y2, h)
    refused(lambda: widen_model(model, {"fc1": "x2"}), "layers['fc1']", f"graph output {h}")
    res = grow_and_check(model, tmp_path, {"fc2": "x3"}, init="net2net")
    assert [o.name for o in res.model.graph.output] == [y1, y2, h]
    res = grow_and_check(model, tmp_path, all="x2")
    assert [p.group.id for p in res.plans] == [group_of(model, "fc2").id]
    assert sorted(why for _, why in res.skipped) == sorted(
        [f"it reaches graph output {h}", f"it reaches graph output {y1}", f"it reaches graph output {y2}"]
    )


def _small_cnn(opset: int) -> onnx.ModelProto:
    g = Graph(opset)
    x = g.input(["n", 2, 6, 6] if opset >= 9 else [2, 2, 6, 6])
    h = g.op("Relu", [g.conv(x, 2, 4, name="c1")], name="r1")
    h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Relu", [g.conv(h, 4, 4, name="c2")], name="r2")
    h = g.op("Relu", [g.gemm(g.op("Flatten", [h]), 4 * 9, 8, "fc1")], name="r3")
    return g.model(g.gemm(h, 8, 3, "head"))


@pytest.mark.parametrize("opset", sorted({7, 8, 9, 10, 11, 12, 13, 17, LATEST}))
def test_old_and_new_opsets_widen_and_deepen(opset, tmp_path):
    model = _small_cnn(opset)
    res = grow_and_check(model, tmp_path, all="x2", init="net2net")
    assert len(res.plans) == 3
    grow_and_check(model, tmp_path, {"c1": "+3", "fc1": "x1.5"})
    for after in ("r1", "r2", "r3"):
        for block in ("identity", "residual"):
            grown = deepen_model(model, after, block=block, kernel=1 if after == "r3" else 3).model
            assert next(o for o in grown.opset_import if o.domain in ("", "ai.onnx")).version == opset
            assert_same(model, saved(grown, tmp_path))


@pytest.mark.parametrize("block", ["identity", "residual"])
def test_float16_deepen(block, tmp_path):
    """float16 layers stay float16 (widen of float16 is in tests/test_rules.py)."""
    g = Graph(17, dtype=np.float16)
    x = g.input(["n", 2, 5, 5])
    h = g.op("Relu", [g.conv(x, 2, 4, name="c1")], name="r1")
    h = g.op("Relu", [g.gemm(g.op("Flatten", [h]), 100, 6, "fc1")], name="r2")
    model = g.model(g.gemm(h, 6, 3, "head"))
    for after in ("r1", "r2"):
        res = deepen_model(model, after, block=block, atol=2e-3, rtol=2e-3)
        assert {t.data_type for t in res.model.graph.initializer} == {TensorProto.FLOAT16}
        assert_same(model, saved(res.model, tmp_path), tol=2e-3)


def test_bfloat16_grows_unverified_and_says_why_it_cannot_verify(tmp_path, capsys):
    """onnxruntime's CPU provider has no bfloat16 Gemm: growth is refused unverified, naming the op;
    --no-verify grows it (weights stay bfloat16, old values kept)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g = Graph(17, dtype=ml_dtypes.bfloat16)
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 6, "fc1")], name="r1")
    model = g.model(g.gemm(h, 6, 3, "fc2"))
    src = tmp_path / "bf16.onnx"
    onnx.save(model, str(src))
    rc = main(["widen", str(src), "-o", str(tmp_path / "w.onnx"), "--layer", "fc1=x2"])
    err = capsys.readouterr().err
    if rc == 0:  # an onnxruntime that runs bfloat16 Gemm on CPU: then it was verified
        return
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    for word in ("bf16.onnx: cannot verify the growth", "onnxruntime cannot load", "Gemm", "--no-verify"):
        assert word in err, err
    assert not (tmp_path / "w.onnx").exists()
    for argv in (
        ["widen", str(src), "-o", str(tmp_path / "w.onnx"), "--layer", "fc1=x2", "--no-verify"],
        ["deepen", str(src), "-o", str(tmp_path / "d.onnx"), "--after", "r1", "--no-verify"],
    ):
        assert main(argv) == 0
    for f in ("w.onnx", "d.onnx"):
        grown = onnx.load(str(tmp_path / f))
        onnx.checker.check_model(grown, full_check=True)
        assert {t.data_type for t in grown.graph.initializer} == {TensorProto.BFLOAT16}
    w1 = numpy_helper.to_array(
        next(t for t in onnx.load(str(tmp_path / "w.onnx")).graph.initializer if t.name == "fc1.weight")
    )
    old = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc1.weight"))
    assert w1.shape == (4, 12)
    np.testing.assert_array_equal(w1[:, :6].astype(np.float32), old.astype(np.float32))


# ---------------------------------------------------------------------------------------------- quantised
def _quantised(kind: str) -> onnx.ModelProto:
    g = Graph(13)
    s, z = g.const(np.array(0.05, np.float32)), g.const(np.array(0, np.uint8), dtype=np.uint8)
    if kind == "qdq":  # activations quantised and dequantised around float layers
        x = g.input([2, 4])
        dq = g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z], name="q"), s, z], name="dq")
        h = g.op("Relu", [g.gemm(dq, 4, 6, "fc1")], name="r1")
        return g.model(g.gemm(h, 6, 3, "fc2"))
    if kind == "weights":  # int8 weights dequantised in the graph (folding must not hide them)
        x = g.input([2, 4])
        wq = g.const(np.random.default_rng(0).integers(-100, 100, (4, 6)).astype(np.int8), dtype=np.int8)
        zi = g.const(np.array(0, np.int8), dtype=np.int8)
        w = g.op("DequantizeLinear", [wq, s, zi], name="dq_w")
        h = g.op("Relu", [g.op("MatMul", [x, w], name="fc1")], name="r1")
        return g.model(g.gemm(h, 6, 3, "fc2"))
    if kind == "qlinearconv":
        x = g.input([1, 2, 5, 5])
        w = g.const(np.random.default_rng(0).integers(0, 255, (3, 2, 3, 3)).astype(np.uint8), dtype=np.uint8)
        c = g.op(
            "QLinearConv",
            [g.op("QuantizeLinear", [x, s, z], name="q"), s, z, w, s, z, s, z],
            name="qconv",
            pads=[1, 1, 1, 1],
        )
        h = g.op("Relu", [g.conv(g.op("DequantizeLinear", [c, s, z], name="dq"), 3, 4, name="c1")], name="r1")
        return g.model(g.conv(h, 4, 2, name="c2"))
    x = g.input([2, 4])  # qlinearmatmul
    w = g.const(np.random.default_rng(0).integers(0, 255, (4, 6)).astype(np.uint8), dtype=np.uint8)
    c = g.op("QLinearMatMul", [g.op("QuantizeLinear", [x, s, z], name="q"), s, z, w, s, z, s, z], name="qmm")
    h = g.op("Relu", [g.gemm(g.op("DequantizeLinear", [c, s, z], name="dq"), 6, 5, "fc1")], name="r1")
    return g.model(g.gemm(h, 5, 3, "fc2"))


@pytest.mark.parametrize("kind", ["qdq", "weights", "qlinearconv", "qlinearmatmul"])
def test_quantised_models_are_refused(kind):
    model = _quantised(kind)
    _session(model).run(None, random_feeds(model))  # a valid model onnxruntime runs
    op = {
        "qdq": "QuantizeLinear",
        "weights": "DequantizeLinear",
        "qlinearconv": "QuantizeLinear",
        "qlinearmatmul": "QuantizeLinear",
    }[kind]
    layer = "c1" if kind == "qlinearconv" else "fc1"
    for fn in (
        lambda: widen_model(model, {layer: "x2"}),
        lambda: widen_model(model, all="x2"),
        lambda: deepen_model(model, "r1"),
        lambda: deepen_model(model, "r1", block="residual"),
    ):
        refused(fn, op, "quantised models are not supported yet")
    assert all(g.constraint == "blocked" and "quantised" in g.reason for g in inspect_model(model).groups)


def test_dequantize_of_constant_weights_is_not_folded_away():
    model = onnxgrow.load(_quantised("weights"))
    assert [n.op_type for n in model.graph.node][0] == "DequantizeLinear"


# ---------------------------------------------------------------------------------------------- initializers
@pytest.mark.parametrize("ir_version", [3, 4, 8])
def test_initializers_listed_as_graph_inputs(ir_version, tmp_path):
    g = Graph(9)
    out = mlp(g, g.input(["n", 4]))
    model = g.model(out[-1])
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    feeds = [random_feeds(model, s) for s in (0, 1)]
    res = grow_and_check(model, tmp_path, all="x2", feeds_list=feeds)
    assert [i.name for i in res.model.graph.input] == ["x"] and res.model.ir_version >= 4
    for block in ("identity", "residual"):
        assert_same(model, saved(deepen_model(model, "relu1", block=block).model, tmp_path), feeds)


# ---------------------------------------------------------------------------------------------- value_info
def _with_value_info() -> onnx.ModelProto:
    """Concat, Split, Flatten and Reshape outputs all have value_info that growth makes stale."""
    g = Graph(13)
    x = g.input(["n", 2, 4, 4])
    a = g.op("Relu", [g.conv(x, 2, 3, name="ca")])
    b = g.op("Relu", [g.conv(x, 2, 2, name="cb")])
    s1, s2 = g.split(g.op("Concat", [a, b], axis=1), [3, 2], 1)
    d = g.op("Relu", [g.conv(s1, 3, 4, name="cd")], name="rd")
    f = g.op("Flatten", [g.op("Concat", [d, s2], axis=1)])
    h = g.op("Relu", [g.gemm(f, 6 * 16, 8, "fc")], name="rf")
    r = g.op("Reshape", [h, g.ints([-1, 2, 4])])
    model = g.model(g.op("MatMul", [r, g.weight(4, 3)], name="head"))
    model = onnx.shape_inference.infer_shapes(model)
    for vi in model.graph.value_info:  # and a symbolic batch everywhere, as exporters write it
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_param"):
            dims[0].dim_param = "n"
    return model


def test_stale_value_info_is_refreshed(tmp_path):
    model = _with_value_info()
    assert len(model.graph.value_info) >= 12
    # fc's 8 units are reshaped to 2 × 4: the 2 reach the output, the 4 (what `--layer fc` names) grow
    for layers in ({"ca": "x2"}, {"cb": "+3", "cd": "x2"}, {"ca": "+1", "cb": "+1", "cd": "+1"}, {"fc": "+1"}):
        res = grow_and_check(model, tmp_path, layers)
        inferred = onnx.shape_inference.infer_shapes(res.model, strict_mode=True)
        recorded = {v.name: v.type for v in res.model.graph.value_info}
        for v in inferred.graph.value_info:  # what is still recorded agrees with inference
            if v.name in recorded:
                want = [d.dim_value for d in v.type.tensor_type.shape.dim]
                got = [d.dim_value for d in recorded[v.name].tensor_type.shape.dim]
                assert [w for w, o in zip(want, got) if o] == [o for o in got if o], v.name
    res = grow_and_check(model, tmp_path, all="x2")
    for after in ("rd", "rf"):
        assert_same(model, saved(deepen_model(res.model, after, block="residual").model, tmp_path))
