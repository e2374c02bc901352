"""The graph layer (onnxgrow/graph.py): walks reach If/Loop bodies, outer-scope reads count as reads, and fresh
names never clash with a node or tensor name anywhere in the model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxgrow import graph as G


def _model() -> onnx.ModelProto:
    """x -> Relu -> If(cond) whose branches read the outer weights `w_then` / `w_else`; `unused` is read by
    nothing and `dead` is a node whose output nothing reads."""
    then_b = helper.make_graph(
        [helper.make_node("Add", ["r", "w_then"], ["t"], name="inner_add")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    else_b = helper.make_graph(
        [helper.make_node("Mul", ["r", "w_else"], ["e"], name="inner_mul")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Neg", ["x"], ["d"], name="dead"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_b, else_branch=else_b),
    ]
    inits = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("w_then", "w_else", "unused")]
    inits.append(numpy_helper.from_array(np.array(True), "cond"))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.x", 2)])


def test_walks_reach_subgraphs():
    m = _model()
    walked = [n.name for n in G.walk(m.graph)]
    assert walked[:3] == ["relu", "dead", "if"] and sorted(walked[3:]) == ["inner_add", "inner_mul"]
    assert G.nested_reads(m.graph.node[2]) == {"r", "w_then", "w_else"}
    assert G.reads(m.graph) == {"x", "r", "w_then", "w_else", "cond", "y"}
    assert G.find_node(m.graph, lambda n: n.op_type == "Mul").name == "inner_mul"


def test_consumers_count_outer_scope_reads_when_asked():
    m = _model()
    assert "w_then" not in G.consumers(m.graph)
    assert [n.name for n in G.consumers(m.graph, nested=True)["w_then"]] == ["if"]
    assert [n.name for n in G.consumers(m.graph)["x"]] == ["relu", "dead"]
    assert G.producers(m.graph)["r"].name == "relu"


def test_cleanup_keeps_what_a_subgraph_reads_and_the_model_still_runs():
    import onnxruntime as ort

    m = _model()
    live = G.live_nodes(list(m.graph.node), m.graph)
    assert [n.name for n in live] == ["relu", "if"]
    del m.graph.node[:]
    m.graph.node.extend(live)
    assert G.drop_unused_initializers(m.graph) == ["unused"]
    assert {t.name for t in m.graph.initializer} == {"w_then", "w_else", "cond"}
    onnx.checker.check_model(m)
    x = np.array([-1.0, 2.0], np.float32)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.maximum(x, 0) + 1)


def test_opsets_and_fresh_names():
    m = _model()
    assert G.opset(m) == 13 and G.opset(m, "ai.onnx") == 13 and G.opset(m, "com.x") == 2 and G.opset(m, "none") == 1
    names = G.Names.of(m.graph)
    assert names.fresh("relu") == "relu_1" and names.fresh("relu") == "relu_2"
    assert names.fresh("inner_add") == "inner_add_1"  # a subgraph's node name is taken too
    assert names.fresh("t") == "t_1"  # and a subgraph's tensor name
    assert names.fresh("new") == "new"


def test_rewiring_and_renaming_touch_the_graph_itself_not_its_subgraphs():
    m = _model()
    m.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [2]))
    relu, dead, if_node = m.graph.node
    assert G.replace_input(dead, "x", "r") and list(dead.input) == ["r"]
    assert not G.replace_input(dead, "x", "r")  # nothing read x any more
    G.rename_tensor(m.graph, "r", "relu_out")
    assert list(relu.output) == ["relu_out"] and list(dead.input) == ["relu_out"]
    assert m.graph.value_info[0].name == "relu_out"
    assert G.nested_reads(if_node) == {"r", "w_then", "w_else"}  # a subgraph's outer-scope read is its own
    assert G.nodes_by_name(m.graph)["dead"] is dead
    assert G.main_names(m.graph) == {
        "relu",
        "dead",
        "if",
        "x",
        "relu_out",
        "d",
        "cond",
        "y",
        "w_then",
        "w_else",
        "unused",
    }


def test_index_answers_like_the_graph_and_keeps_in_step_when_a_tensor_is_renamed():
    m = _model()
    m.graph.node.append(helper.make_node("Add", ["r", "r"], ["twice"], name="double"))
    index = G.Index(m)
    assert index.names == ["relu", "dead", "if", "double"] and index.order["if"] == 2
    assert index.subgraph == [False, False, True, False]
    assert index.producer["r"] == 0 and index.consumers["r"] == [3]  # a node reading twice is one reader
    assert index.consumers["x"] == [0, 1] and index.inits == {"w_then", "w_else", "unused", "cond"}
    assert index.main_names() == G.main_names(m.graph)
    index.rename("r", "r2")
    assert list(m.graph.node[0].output) == ["r2"] and list(m.graph.node[3].input) == ["r2", "r2"]
    assert index.producer["r2"] == 0 and index.consumers["r2"] == [3] and "r" not in index.producer
    index.set_inputs(3, ["x", "r2"])
    assert list(m.graph.node[3].input) == ["x", "r2"] and index.ins[3] == ("x", "r2")
    assert index.current(m)
    m.graph.node.append(helper.make_node("Neg", ["x"], ["n"], name="neg"))
    assert not index.current(m)


def test_input_slots_say_which_input_a_tensor_is_to_each_reader():
    """The exporters tell weights from statistics by the input index a tensor fills (BatchNormalization's 3 and 4
    are running statistics): a node that reads a tensor twice has two slots, empty (omitted) inputs have none."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"], name="square"),
        helper.make_node("BatchNormalization", ["sq", "s", "b", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Clip", ["bn", "", "hi"], ["y"], name="clip"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    slots = {name: [(n.name, k) for n, k in pairs] for name, pairs in G.input_slots(g).items()}
    assert slots["x"] == [("square", 0), ("square", 1)]
    assert slots["mean"] == [("bn", 3)] and slots["var"] == [("bn", 4)]
    assert slots["hi"] == [("clip", 2)] and "" not in slots
