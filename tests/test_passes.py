"""The pass shape (onnxgrow/passes/base.py): a pass refuses a model its precondition rejects with a one-line error
that names the pass and the reason, a broken result is an internal error, and `modified` is honest: a pass with
nothing to do says so and returns a model equal to the one it was given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrow.analysis import analyse
from onnxgrow.errors import InternalError, OnnxGrowError
from onnxgrow.io import load
from onnxgrow.passes.base import PassBase, PassResult, PostconditionError, PreconditionError, Sequential
from onnxgrow.passes.copy_blocks import CopyBlocks
from onnxgrow.passes.fold import FoldConstants
from onnxgrow.passes.insert_layers import InsertLayers
from onnxgrow.passes.widen import WidenPass
from onnxgrow.plan.deepen import find_site
from onnxgrow.plan.widen import plan
from onnxgrow.stream import skeleton

MODELS = Path(__file__).resolve().parent.parent / "models"


def _residual(constant: bool = False) -> onnx.ModelProto:
    """x -> MatMul -> Relu -> MatMul -> Add(x) -> MatMul -> y: one residual block (b0); with `constant`, the last
    weight comes out of a Constant node (something to fold)."""
    rng = np.random.default_rng(0)
    w = {k: numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), k) for k in ("w1", "w2", "w3")}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu"),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Add", ["x", "h2"], ["s"], name="add"),
        helper.make_node("MatMul", ["s", "w3"], ["y"], name="fc3"),
    ]
    inits = [w["w1"], w["w2"]]
    if constant:
        nodes.insert(0, helper.make_node("Constant", [], ["w3"], name="const", value=w["w3"]))
    else:
        inits.append(w["w3"])
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


class _Toy(PassBase[PassResult]):
    """A pass whose conditions and declaration the test sets."""

    def __init__(
        self, *, needs: str | None = None, breaks: str | None = None, in_place: bool = True, returns_new: bool = False
    ) -> None:
        self.needs, self.breaks, self.in_place, self.returns_new = needs, breaks, in_place, returns_new
        self.ran = False

    def requires(self, model: onnx.ModelProto) -> str | None:
        return self.needs

    def ensures(self, model: onnx.ModelProto) -> str | None:
        return self.breaks

    def call(self, model: onnx.ModelProto) -> PassResult:
        self.ran = True
        return PassResult(_copy(model) if self.returns_new else model, modified=False)


def test_a_failed_precondition_names_the_pass_and_the_reason_and_runs_nothing():
    toy = _Toy(needs="it has no graph input called ids")
    with pytest.raises(PreconditionError) as info:
        toy(_residual())
    assert str(info.value) == "_Toy: cannot run on this model: it has no graph input called ids"
    assert isinstance(info.value, OnnxGrowError) and info.value.exit_code == 2  # the input's fault: exit 2
    assert not toy.ran


def test_a_failed_postcondition_or_a_false_declaration_is_an_internal_error():
    with pytest.raises(PostconditionError, match="_Toy: its result is wrong: graph output y is gone"):
        _Toy(breaks="graph output y is gone")(_residual())
    with pytest.raises(PostconditionError, match="declared in place but returned a new model"):
        _Toy(returns_new=True)(_residual())
    with pytest.raises(PostconditionError, match="declared to return a new model but returned the one it was given"):
        _Toy(in_place=False)(_residual())
    assert issubclass(PostconditionError, InternalError) and not issubclass(PostconditionError, OnnxGrowError)


def test_widen_pass_refuses_a_model_other_than_the_analysed_one():
    analysis = analyse(load(MODELS / "mlp.onnx"))
    plans, _ = plan(analysis, all="x2")
    with pytest.raises(
        PreconditionError,
        match=r"WidenPass: cannot run on this model: it is not the model that was "
        r"analysed \(weight \S+ is missing\)",
    ):
        WidenPass(analysis, plans)(load(MODELS / "cnn.onnx"))


def test_block_copy_refuses_deferred_bytes_for_a_weight_that_has_its_data():
    model = _residual()
    _, deferred = skeleton(model)
    with pytest.raises(PreconditionError, match="deferred bytes are given for w1, which is not a weight without data"):
        CopyBlocks(["b0"], 1, deferred=deferred)(model)


def test_fold_reports_what_it_did_and_nothing_when_there_is_nothing_to_fold():
    model = _residual(constant=True)
    done = FoldConstants()(model)
    assert done.model is model and done.modified and done.folded == ["const"]
    again = _copy(model)
    before = again.SerializeToString()
    nothing = FoldConstants()(again)
    assert nothing.model is again and not nothing.modified and nothing.folded == []
    assert again.SerializeToString() == before


def test_widen_pass_returns_a_new_model_and_leaves_the_given_one_alone():
    model = load(MODELS / "mlp.onnx")
    before = model.SerializeToString()
    analysis = analyse(model)
    plans, _ = plan(analysis, all="x2")
    grown = WidenPass(analysis, plans)(model)
    assert grown.modified and grown.model is not model and grown.deferred == {}
    assert model.SerializeToString() == before
    streamed = WidenPass(analysis, plans, stream=True)(model)
    assert streamed.deferred and model.SerializeToString() == before
    nothing = WidenPass(analysis, [])(model)
    assert not nothing.modified and nothing.model is not model
    assert nothing.model.SerializeToString() == before


def test_layer_passes_with_nothing_to_do_leave_the_model_as_it_was():
    model = _residual()
    before = model.SerializeToString()
    copied = CopyBlocks(["b0"], 0)(model)
    assert copied.model is model and not copied.modified and copied.inserted == []
    site = find_site(model, "relu", {"r1": [2, 4]})
    inserted = InsertLayers(site, "identity", 0)(model)
    assert inserted.model is model and not inserted.modified and inserted.inserted == []
    assert model.SerializeToString() == before
    # and with something to do they say so
    assert CopyBlocks(["b0"], 1)(model).modified and model.SerializeToString() != before


def test_layer_insertion_refuses_a_site_that_is_a_graph_output():
    model = _residual()
    site = find_site(model, "relu", {"r1": [2, 4]})
    site.tensor = "y"
    with pytest.raises(PreconditionError, match="InsertLayers: cannot run on this model: y is a graph output"):
        InsertLayers(site, "residual", 1)(model)


def test_a_sequence_is_modified_when_one_of_its_passes_is():
    model = _residual(constant=True)
    result = Sequential(_Toy(), FoldConstants(), _Toy())(model)
    assert result.model is model and result.modified
    quiet = Sequential(_Toy(), FoldConstants())(model)  # folded already
    assert not quiet.modified
    assert not Sequential(_Toy(), _Toy(in_place=False, returns_new=True)).in_place
    with pytest.raises(PreconditionError, match="_Toy: cannot run on this model: no"):
        Sequential(FoldConstants(), _Toy(needs="no"))(model)


@pytest.mark.parametrize("command", ["widen", "deepen"])
def test_result_to_dict_is_what_the_cli_prints(command, tmp_path, capsys):
    """`GrowResult.to_dict()` of WidenResult and DeepenResult is the CLI's --json output after "written"."""
    import json

    from onnxgrow.cli import main
    from onnxgrow.deepen import deepen_model
    from onnxgrow.widen import widen_model

    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_residual(), str(src))
    if command == "widen":
        result = widen_model(src, all="x2", check=False, output=out)
        flags = ["--all", "x2"]
    else:
        result = deepen_model(src, "b0", block="copy", check=False, output=out)
        flags = ["--after", "b0", "--block", "copy"]
    out.unlink()
    assert main([command, str(src), "-o", str(out), *flags, "--no-verify", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"written": str(out), **result.to_dict()}
    assert list(printed) == ["written", *result.to_dict()]  # the same keys in the same order
