"""Static shapes of every tensor, from onnx shape inference on a weight-free copy of the model."""
from __future__ import annotations

import onnx

#: initializers with more elements than this lose their data in the copy used for inference.
_KEEP_DATA = 4096


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
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
    for t in src.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n <= _KEEP_DATA and t.data_location != onnx.TensorProto.EXTERNAL:
            g.initializer.append(t)
        else:
            # declared as a graph input with its type: inference sees the shape, no bytes
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _dims(tp: onnx.TypeProto) -> list[int | None] | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tp.tensor_type.shape.dim]


def infer(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of inputs, outputs and intermediate tensors (None for a dynamic dimension)."""
    light = _light_copy(model)
    try:
        light = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: unknown shapes block growth locally
        pass
    shapes: dict[str, list[int | None]] = {}
    for vi in list(light.graph.input) + list(light.graph.value_info) + list(light.graph.output):
        dims = _dims(vi.type)
        if dims is not None:
            shapes[vi.name] = dims
    return shapes
