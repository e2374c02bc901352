"""Static shapes of every tensor, from onnx shape inference on a weight-free copy of the model."""

from __future__ import annotations

import math

import onnx

#: initializers with more elements than this lose their data in the copy used for inference (values matter to
#: inference only where they are shapes, axes, sizes, scales: small integer tensors, or a few floats)
_KEEP_DATA = 4096
#: floating-point initializers keep their data only up to this many elements (Resize scales, Range bounds);
#: weights are never read by inference, and copying them in and out of it took longer than inferring
_KEEP_FLOAT_DATA = 64
_FLOATS = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


def light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the bytes of big weights (shape inference needs their dims only)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g = light.graph
    src = model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    listed = {i.name for i in src.input}
    external = onnx.TensorProto.EXTERNAL
    for t in src.initializer:
        dims = t.dims  # (each read of a field makes a new Python object: read once)
        data_type = t.data_type
        keep = _KEEP_FLOAT_DATA if data_type in _FLOATS else _KEEP_DATA
        if math.prod(dims) <= keep and t.data_location != external:
            g.initializer.append(t)
        elif (name := t.name) not in listed:
            # declared as a graph input with its type: inference sees the shape, no bytes
            vi = g.input.add()
            vi.name = name
            tensor = vi.type.tensor_type
            tensor.elem_type = data_type
            shape = tensor.shape
            shape.SetInParent()  # a scalar has a shape too: one without dimensions
            dim = shape.dim
            for d in dims:
                dim.add().dim_value = d
    return light


def _dims(tp: onnx.TypeProto) -> list[int | str | None] | None:
    """Sizes, with the symbol of a dynamic dimension ('batch', 'unk__1') or None when it has none."""
    if not tp.HasField("tensor_type"):
        return None
    tensor = tp.tensor_type  # read once: each read of a field makes a new Python object
    if not tensor.HasField("shape"):
        return None
    # an unset dim_value reads 0 (then dim_param, or nothing); a set one excludes dim_param (a oneof)
    return [v if (v := d.dim_value) > 0 else (d.dim_param or None) for d in tensor.shape.dim]


def _solve_reshapes(graph: onnx.GraphProto, shapes: dict[str, list]) -> dict[str, int]:
    """Sizes of the symbols onnx leaves for a Reshape's -1 (`unk__1`) when the other symbols cancel out.

    view(batch, seq, heads, -1) of a [batch, seq, hidden] tensor: 'batch' is on both sides, so the -1 is
    hidden / heads; onnx's inference cannot divide symbols, so it names the result `unk__N`.
    """
    solved: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape_in, shape_out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if shape_in is None or shape_out is None:
            continue
        din = [solved.get(d, d) if isinstance(d, str) else d for d in shape_in]
        dout = [solved.get(d, d) if isinstance(d, str) else d for d in shape_out]
        if None in din or None in dout:
            continue
        left = [d for d in din if isinstance(d, str)]
        right = [d for d in dout if isinstance(d, str)]
        for sym in list(left):
            if sym in right:
                left.remove(sym)
                right.remove(sym)
        known_in = 1
        for d in din:
            known_in *= d if isinstance(d, int) else 1
        known_out = 1
        for d in dout:
            known_out *= d if isinstance(d, int) else 1
        if not left and len(right) == 1 and known_out and known_in % known_out == 0:
            solved[right[0]] = known_in // known_out
    return solved


#: what `_read_shapes` finds for a type it has not read yet
_UNREAD: list = []


def _read_shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int | str | None]], dict[str, int]]:
    """`infer_symbols`, with one list for all the tensors of the same type (the callers copy them)."""
    light = light_copy(model)
    try:
        light = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: unknown shapes block growth locally
        pass
    named: dict[str, list] = {}
    # most tensors share a few types ([batch, seq, hidden] ...): a type's bytes are read in one call, where
    # reading its dims reads every field of every dim; each type is read once
    seen: dict[bytes, list | None] = {}
    graph = light.graph
    for values in (graph.input, graph.value_info, graph.output):
        for vi in values:
            tp = vi.type
            key = tp.SerializeToString()
            dims = seen.get(key, _UNREAD)
            if dims is _UNREAD:
                dims = seen[key] = _dims(tp)
            if dims is not None:
                named[vi.name] = dims
    return named, _solve_reshapes(graph, named)


def infer_symbols(model: onnx.ModelProto) -> tuple[dict[str, list[int | str | None]], dict[str, int]]:
    """Shapes with the symbols of dynamic dimensions ('batch', or 'unk__N' where onnx could not tell), and the
    sizes of the symbols that `_solve_reshapes` finds."""
    shared, solved = _read_shapes(model)
    return {k: list(v) for k, v in shared.items()}, solved


def is_unknown(dim: int | str | None) -> bool:
    """A dimension onnx's inference could not work out (as opposed to a named dynamic one such as 'batch')."""
    return dim is None or (isinstance(dim, str) and dim.startswith("unk__"))


def infer(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of inputs, outputs and intermediate tensors (None for a dynamic dimension)."""
    shared, solved = _read_shapes(model)
    done: dict[int, list[int | None]] = {}  # id of a shared list (all alive in `shared`) → it with symbols solved
    result: dict[str, list[int | None]] = {}
    for k, v in shared.items():
        dims = done.get(id(v))
        if dims is None:
            dims = done[id(v)] = [solved.get(d) if isinstance(d, str) else d for d in v]
        result[k] = list(dims)  # a list of each tensor's own
    return result
