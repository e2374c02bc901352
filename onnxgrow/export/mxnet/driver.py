"""The MXNet export's driver: the graph walk that applies the rules, compatibility rewrites, checking.

Export for MXNet 1.9: an ONNX file that `mxnet.contrib.onnx.import_to_gluon` imports.

MXNet 1.9.1's importer (retired upstream) reads an ONNX graph op by op through a fixed table
(`mxnet/contrib/onnx/onnx2mx/_import_helper.py`) and has expectations a modern exporter no
longer meets:

- every initializer must also be a graph input (it looks weights up among the inputs);
- one opset for the whole file, read as `max(opset_import)`; its op translations follow the
  opset 11/12 forms: `axes`/`split` as attributes (Squeeze, Unsqueeze, Reduce*, Split),
  but pads/bounds/ratio as constant inputs (Pad, Clip, Dropout);
- constant operands must be initializers (Reshape's shape, Pad's pads, Clip's bounds, ...);
- quirks of its translations: Gemm needs C; MatMul becomes `linalg_gemm2` (equal ranks
  only); Flatten only on axis 1; reductions default to `keepdims=0`; Softmax works on
  one axis; pooling ignores `ceil_mode` and `dilations` and counts padded zeros in averages;
  Conv ignores `auto_pad`; Split without a `split` attribute counts the *graph* outputs.

`for_mxnet` rewrites a model into that dialect (ONNX opset 12, IR version 7), changing ops only
where the meaning stays the same, and checks with onnxruntime that the result computes what
the input does. A node it cannot express raises `OnnxGrowError` naming the node and its op.
One rule per op family, looked up in `RULES` (registry.py); a new op is one new rule in rules.py.

MXNet itself is not imported here: the result is checked in MXNet by `tests/mxnet_driver.py`,
which runs in its own environment (MXNet 1.9 needs numpy < 1.24 and onnx < 1.17).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ... import graph as G
from ...errors import InternalError, OnnxGrowError, VerificationFailed
from ...io import ModelLike, load
from . import rules as _rules  # noqa: F401  (registers every rule in RULES)
from .registry import (
    _FLOAT_TYPES,
    MIN_SOURCE_OPSET,
    MXNET_IMPORTER_OPS,
    RULES,
    TARGET_IR_VERSION,
    TARGET_OPSET,
    Context,
    Unsupported,
    _attrs,
)

# ------------------------------------------------------------------------------------------- pass

#: why ops MXNet's importer does list are still refused (its translation would not be exact).
REFUSED = {
    "Shape": "it reads a size that is only known at run time; MXNet's importer needs constant shapes "
    "(give the model's inputs static sizes, then onnxgrow folds the shape arithmetic)",
    "Size": "it reads a size that is only known at run time; MXNet's importer needs constant shapes",
}


def _why_not(node: onnx.NodeProto) -> str:
    if node.domain not in ("", "ai.onnx"):
        return f"it is in the custom domain {node.domain!r}; MXNet's importer knows only standard ONNX ops"
    if node.op_type in REFUSED:
        return REFUSED[node.op_type]
    if node.op_type in MXNET_IMPORTER_OPS:
        return (
            f"MXNet 1.9's importer translates {node.op_type} in a way onnxgrow cannot confirm as exact, "
            "so it is not converted"
        )
    return f"MXNet 1.9's ONNX importer has no translation for {node.op_type}"


def fold_static_shapes(model: onnx.ModelProto) -> int:
    """Replace Shape/Size of tensors whose sizes are all static by constants and fold what follows
    (Gather, Concat, ... down to Reshape targets). Returns how many nodes were replaced."""
    from ...analysis.shapes import infer
    from ...passes.fold import fold_constants

    g = model.graph
    todo = [n for n in g.node if n.op_type in ("Shape", "Size") and n.domain in ("", "ai.onnx")]
    if not todo:
        return 0
    shapes = infer(model)
    inits = {t.name: list(t.dims) for t in g.initializer}
    done = 0
    for node in todo:
        dims = inits.get(node.input[0], shapes.get(node.input[0]))
        if dims is None or None in dims:
            continue
        if node.op_type == "Shape":
            a = _attrs(node)
            value = np.array(dims[a.get("start", 0) : a.get("end", len(dims))], dtype=np.int64)
        else:
            value = np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
        const = helper.make_node("Constant", [], [node.output[0]], name=node.name, value=numpy_helper.from_array(value))
        node.CopyFrom(const)
        done += 1
    if done:
        fold_constants(model)
    return done


#: ops that can make an infinity out of finite numbers on purpose (a mask written as log(0))
_MAKES_INFINITY = {"Log", "ConstantOfShape"}


def _may_be_minus_infinity(model: onnx.ModelProto, tensor: str) -> bool:
    """Whether something upstream of `tensor` can put -inf (or NaN) into it on purpose: a constant with a
    non-finite value (an attention mask), a Log, a ConstantOfShape. Overflow of finite arithmetic is not counted."""
    g = model.graph
    producer = G.producers(g)
    inits = {t.name: t for t in g.initializer}
    seen, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in inits:
            t = inits[name]
            if t.data_type in (
                onnx.TensorProto.FLOAT,
                onnx.TensorProto.DOUBLE,
                onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16,
            ):
                if not np.all(np.isfinite(numpy_helper.to_array(t).astype(np.float64))):
                    return True
            continue
        node = producer.get(name)
        if node is None:
            continue
        if node.op_type in _MAKES_INFINITY or node.domain not in ("", "ai.onnx"):
            return True
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                v = numpy_helper.to_array(a.t)
                if v.dtype.kind == "f" and not np.all(np.isfinite(v.astype(np.float64))):
                    return True
            elif a.type == onnx.AttributeProto.GRAPH:
                return True
        todo.extend(node.input)
    return False


def drop_nan_guards(model: onnx.ModelProto) -> int:
    """Remove `Where(IsNaN(p), c, p)` after a Softmax (torch writes it for attention probabilities, to zero the
    rows a mask removes entirely) where it cannot fire: a softmax row is NaN only when its scores are NaN, +inf
    or all -inf, and when nothing upstream of the scores can be -inf on purpose (no mask constant with -inf, no
    Log), the rows of finite inputs are finite. The Where becomes an Identity (MXNet has neither IsNaN nor Where).
    In place; returns how many were removed."""
    g = model.graph
    producer = G.producers(g)
    readers = G.consumers(g)
    shapes = None
    removed, dead = 0, set()
    for k, node in enumerate(g.node):
        if node.op_type != "Where" or node.domain not in ("", "ai.onnx") or len(node.input) != 3:
            continue
        cond, fill, value = node.input
        guard = producer.get(cond)
        probs = producer.get(value)
        if (
            guard is None
            or guard.op_type != "IsNaN"
            or guard.input[0] != value
            or probs is None
            or probs.op_type not in ("Softmax", "LogSoftmax")
        ):
            continue
        if shapes is None:
            from ...analysis.shapes import infer

            shapes = infer(model)
        want, fill_dims = shapes.get(value), shapes.get(fill)
        if fill in {t.name for t in g.initializer}:
            fill_dims = list(next(t.dims for t in g.initializer if t.name == fill))
        if (
            want is None
            or fill_dims is None
            or len(fill_dims) > len(want)
            or any(d not in (1, w) for d, w in zip(reversed(fill_dims), reversed(want)))
        ):
            continue  # the fill could broadcast the result to another shape
        if _may_be_minus_infinity(model, probs.input[0]):
            continue
        g.node[k].CopyFrom(helper.make_node("Identity", [value], list(node.output), name=node.name))
        removed += 1
        if len(readers.get(cond, [])) == 1:  # this Where alone reads it (once: a bool is no fill)
            dead.add(cond)
    if dead:
        keep = [n for n in g.node if not (n.op_type == "IsNaN" and n.output[0] in dead)]
        del g.node[:]
        g.node.extend(keep)
    return removed


def convert(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite `model` (already loaded and folded) into the MXNet 1.9 dialect; no verification."""
    from ...analysis.shapes import infer

    opset = G.opset(model)
    if opset < MIN_SOURCE_OPSET:
        raise OnnxGrowError(f"opset {opset}: for_mxnet converts models of opset {MIN_SOURCE_OPSET} or later")
    for _ in range(8):  # each round may make more sizes static (a folded Reshape target, ...)
        if not fold_static_shapes(model):
            break
    g = model.graph
    if g.sparse_initializer:
        raise OnnxGrowError("sparse initializers cannot be imported by MXNet; store them dense")
    for t in list(g.initializer):
        if t.data_type in _FLOAT_TYPES:
            raise OnnxGrowError(
                f"initializer {t.name!r} is {onnx.TensorProto.DataType.Name(t.data_type).lower()}: "
                "MXNet's importer loads every weight as float32; convert the model to float32 first"
            )
    for vi in g.input:
        if vi.type.tensor_type.elem_type in _FLOAT_TYPES:
            raise OnnxGrowError(f"input {vi.name!r} is not float32: MXNet's importer computes in float32")
    drop_nan_guards(model)

    ctx = Context(model, opset, infer(model), G.reads(g), {t.name: t for t in g.initializer}, names=G.Names.of(g))

    nodes: list[onnx.NodeProto] = []
    failures: list[tuple[onnx.NodeProto, str]] = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensor = _constant_tensor(node)
            if tensor is None:
                failures.append((node, "its value is not a plain tensor"))
                continue
            tensor.name = node.output[0]
            g.initializer.append(tensor)
            ctx.inits[tensor.name] = tensor
            continue
        fn = RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if fn is None:
            failures.append((node, _why_not(node)))
            continue
        try:
            nodes.extend(fn(node, ctx))
        except Unsupported as exc:
            failures.append((node, str(exc)))
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            failures.append((node, f"cannot read its attributes or inputs ({type(exc).__name__}: {exc})"))
    if failures:
        node, why = failures[0]
        more = ""
        if len(failures) > 1:
            counts: dict[str, int] = {}
            for n, _ in failures[1:]:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
            ops = ", ".join(op if c == 1 else f"{op} x{c}" for op, c in counts.items())
            more = f" ({len(failures) - 1} more node(s) cannot be exported either: {ops})"
        raise OnnxGrowError(f"cannot export for MXNet: node {node.name!r} ({node.op_type}): {why}{more}")

    g.ClearField("node")
    g.node.extend(nodes)
    g.initializer.extend(ctx.new_inits)
    _unique_node_names(g)
    _prune_initializers(g)
    _initializers_as_inputs(g)
    g.ClearField("value_info")
    model.ClearField("opset_import")
    model.opset_import.append(helper.make_opsetid("", TARGET_OPSET))
    model.ir_version = TARGET_IR_VERSION
    model.ClearField("functions")
    return model


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    a = node.attribute[0] if len(node.attribute) == 1 else None
    if a is None:
        return None
    if a.name == "value":
        t = onnx.TensorProto()
        t.CopyFrom(a.t)
        return t
    value = helper.get_attribute_value(a)
    arrays = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if a.name in arrays:
        return numpy_helper.from_array(np.array(value, dtype=arrays[a.name]))
    return None


def _unique_node_names(g: onnx.GraphProto) -> None:
    """Non-empty names that differ from each other and from every tensor (MXNet names symbols by them)."""
    names = G.Names({t.name for t in g.initializer} | {v.name for v in g.input})
    for i, node in enumerate(g.node):
        node.name = names.fresh(node.name or f"{node.op_type}_{i}")


def _prune_initializers(g: onnx.GraphProto) -> None:
    dropped = set(G.drop_unused_initializers(g))
    inputs = [v for v in g.input if v.name not in dropped]
    if len(inputs) != len(g.input):
        g.ClearField("input")
        g.input.extend(inputs)


def _initializers_as_inputs(g: onnx.GraphProto) -> None:
    """MXNet's importer looks weights up among the graph inputs: list every initializer there."""
    listed = {v.name for v in g.input}
    for t in g.initializer:
        if t.name not in listed:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def _checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or past protobuf's 2 GB limit (which onnx.checker cannot serialise) a copy without its
    initializers: each is also a graph input of its type and shape, so the graph checks the same."""
    from ...io import needs_external_data
    from ...stream import copy_except

    if not needs_external_data(model):
        return model
    light = copy_except(model, ("graph",))
    light.graph.CopyFrom(copy_except(model.graph, ("initializer",)))
    return light


def for_mxnet(model: ModelLike, *, check: bool = True, **verify_args) -> onnx.ModelProto:
    """A copy of `model` that MXNet 1.9's `mxnet.contrib.onnx.import_to_gluon` imports.

    Every initializer is listed as a graph input, the file is ONNX opset 12 / IR version 7, and
    ops are rewritten into the forms MXNet's importer translates with the same meaning. With
    `check` (default) onnxruntime runs both models on the same random inputs (`verify_args`
    as for `onnxgrow.verify`, but `relative_to` defaults to "output", as for growth) and
    `VerificationFailed` is raised when any output differs.
    Raises `OnnxGrowError` naming the first node MXNet cannot take. A model past protobuf's 2 GB limit is
    converted the same way; `onnxgrow.save` writes it with external data (`OUT.data`), which MXNet's importer
    reads (it loads the file with onnx.load, which reads the data file next to it).
    """
    source = load(model)
    out = onnx.ModelProto()
    out.CopyFrom(source)
    out = convert(out)
    try:
        onnx.checker.check_model(_checkable(out))
    except onnx.checker.ValidationError as exc:  # a rule wrote something invalid: a bug here, not the user's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InternalError(f"export for MXNet wrote a model that is not valid ONNX ({first})") from exc
    if check:
        from ...verify import check_relative_to, failure_text, verify

        # rewritten ops (LayerNormalization written out, ...) round differently: judged against each output's size
        relative_to = check_relative_to(verify_args.pop("relative_to", None), "output")
        report = verify(source, out, relative_to=relative_to, **verify_args)
        if not report.passed:
            raise VerificationFailed(
                f"export for MXNet changed the outputs: {failure_text(report)}; nothing was written", report
            )
    return out
