"""Deepen planning: where new layers go (`--after` a node, tensor or weight: a `Site`, dense or convolutional, with
the scale of the weights around it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxGrowError, ParameterError, closest
from ..graph import consumers, nodes_by_name, producers

_WALK_THROUGH = {
    "Relu",
    "LeakyRelu",
    "Clip",
    "BatchNormalization",
    "Add",
    "Mul",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Dropout",
    "Identity",
    "MaxPool",
    "AveragePool",
    "Elu",
    "Selu",
    "HardSwish",
    "InstanceNormalization",
    "LayerNormalization",
    "Erf",
    "Div",
    "Cast",
}


_WEIGHTED = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "PRelu",
}


@dataclass
class Site:
    """Where new layers go: the tensor, its shape and dtype, whether it is dense or convolutional."""

    tensor: str
    shape: list[int | None]
    dtype: np.dtype
    conv: bool
    producer: onnx.NodeProto | None
    weight_std: float | None  # std of the producing layer's weight, to initialise like the model

    @property
    def channels(self) -> int:
        c = self.shape[1] if self.conv else self.shape[-1]
        if c is None:
            raise OnnxGrowError(
                f"{self.tensor}: its {'channel' if self.conv else 'feature'} size is not known statically"
            )
        return int(c)


def find_site(model: onnx.ModelProto, name: str, shapes: dict[str, list[int | None]]) -> Site:
    """The tensor named `name`, or the first output of the node named `name`."""
    g = model.graph
    writers = producers(g)
    nodes = nodes_by_name(g)
    graph_inputs = {i.name for i in g.input}
    if name in nodes and (name in writers or name in graph_inputs) and nodes[name].output[0] != name:
        # a node and another tensor share the name: inserting after the wrong one silently would be worse
        raise OnnxGrowError(
            f"--after {name}: ambiguous: node {name} ({nodes[name].op_type}) writes tensor {nodes[name].output[0]!r}, "
            f"and another tensor is also called {name!r}; give --after {nodes[name].output[0]} for the node's output"
        )
    tensor = nodes[name].output[0] if name in nodes else name
    if tensor not in writers and tensor not in graph_inputs:
        # a weight name (fc1.weight): after the layer that owns it
        owners = [n for n in g.node if name in n.input[1:] and n.op_type in _WEIGHTED]
        if len({n.name for n in owners}) == 1:
            tensor = owners[0].output[0]
    if tensor not in writers and tensor not in graph_inputs:
        names = list(nodes) + list(writers)
        raise ParameterError("after", f"no node or tensor of that name{closest(name, names)}", value=name)
    if tensor in {o.name for o in g.output}:
        raise ParameterError("after", f"{tensor} is a graph output; new layers go inside the network", value=name)
    shape = shapes.get(tensor)
    if not shape or len(shape) < 2:
        raise ParameterError("after", f"the shape of {tensor} is unknown or has fewer than 2 dimensions", value=name)
    elem = _elem_type(model, tensor)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise ParameterError("after", f"{tensor} is not a floating-point tensor ({dtype})", value=name)
    conv, std = _kind(model, tensor, writers, len(shape))
    return Site(tensor, shape, dtype, conv, writers.get(tensor), std)


def _elem_type(model: onnx.ModelProto, tensor: str) -> int | None:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == tensor and vi.type.HasField("tensor_type"):
            return vi.type.tensor_type.elem_type
    from ..analysis.shapes import light_copy

    light = onnx.shape_inference.infer_shapes(light_copy(model), strict_mode=False)
    for vi in light.graph.value_info:
        if vi.name == tensor:
            return vi.type.tensor_type.elem_type
    return None


def _kind(
    model: onnx.ModelProto, tensor: str, writers: dict[str, onnx.NodeProto], rank: int
) -> tuple[bool, float | None]:
    """Walk back to the layer that made the tensor: conv or dense, and the std of its weight."""
    inits = {t.name: t for t in model.graph.initializer}
    seen, frontier = set(), [tensor]
    while frontier:
        t = frontier.pop(0)
        node = writers.get(t)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"):
            weight = next((inits[i] for i in node.input if i in inits and len(inits[i].dims) >= 2), None)
            std = float(np.std(numpy_helper.to_array(weight).astype(np.float64))) if weight is not None else None
            return node.op_type.startswith("Conv") and rank >= 3, std or None
        if node.op_type in _WALK_THROUGH:
            frontier.extend(i for i in node.input if i and i not in inits)
    return _kind_from_readers(model, tensor, inits, rank)


def _kind_from_readers(model: onnx.ModelProto, tensor: str, inits: dict, rank: int) -> tuple[bool, float | None]:
    """No layer made the tensor (a graph input, say): a Conv that reads it, maybe through pooling or a
    normalisation, makes it convolutional; the std of that Conv's weight sizes new weights."""
    readers = consumers(model.graph)
    reached, frontier = {tensor}, [tensor]
    while frontier:
        for node in readers.get(frontier.pop(0), []):
            if node.op_type == "Conv" and rank >= 3 and node.input[0] in reached:
                weight = inits.get(node.input[1]) if len(node.input) > 1 else None
                std = float(np.std(numpy_helper.to_array(weight).astype(np.float64))) if weight is not None else None
                return True, std or None
            if node.op_type in _WALK_THROUGH and node.op_type not in ("Add", "Mul", "Div"):
                new = [o for o in node.output if o and o not in reached]
                reached.update(new)
                frontier.extend(new)
    return False, None
