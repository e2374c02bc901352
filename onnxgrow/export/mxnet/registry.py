"""The MXNet export's rule registry: what a rule may read and add (`Context`), `RULES`, and the helpers rules share.

One rule per op family rewrites one node into nodes MXNet 1.9's importer translates with the same meaning; the
rules live in `rules.py`, the graph walk that applies them in `driver.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...graph import Names

#: what the written model declares; MXNet 1.9's translations follow these versions.
TARGET_OPSET = 12
TARGET_IR_VERSION = 7
#: oldest source opset whose ops the rules understand (older Add/Mul had `broadcast`/`axis`).
MIN_SOURCE_OPSET = 7

#: every op MXNet 1.9.1's importer has a translation for (`_convert_map` in _import_helper.py);
#: ops outside this set are refused with "MXNet has no translation", the others not (yet)
#: covered by a rule here with "not converted for MXNet".
MXNET_IMPORTER_OPS = frozenset(
    """
Constant RandomUniform RandomNormal RandomUniformLike RandomNormalLike Multinomial Add Sub Mul Div
Abs Neg Sum Tanh Ceil Floor Concat Sigmoid Relu Pad MatMul Conv ConvTranspose BatchNormalization
SpatialBN LeakyRelu Elu PRelu Selu Softmax FC GlobalAveragePool GlobalMaxPool GlobalLpPool Gemm LRN
Dropout Reshape Cast Split Slice Transpose Squeeze Unsqueeze Flatten Identity Reciprocal Sqrt Pow
Exp Log ReduceMax ReduceMean ReduceMin ReduceSum ReduceProd AveragePool MaxPool ArgMax ArgMin Max
Min Clip ReduceLogSum ReduceLogSumExp ReduceSumSquare ReduceL1 ReduceL2 MaxRoiPool
InstanceNormalization LogSoftmax Softsign Less Greater Equal And Xor Not Or Mean Acos Asin Atan Cos
Sin Softplus Tan Shape Size Gather HardSigmoid LpPool DepthToSpace SpaceToDepth Hardmax
LpNormalization TopK
""".split()
)

_FLOAT_TYPES = {onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


class Unsupported(Exception):
    """A node the importer cannot take; collected and reported as one OnnxGrowError."""


@dataclass
class Context:
    """What a rule may read (shapes, constant values) and add (initializers, fresh names)."""

    model: onnx.ModelProto
    opset: int
    shapes: dict[str, list[int | None]]
    consumed: set[str]
    inits: dict[str, onnx.TensorProto] = field(default_factory=dict)
    new_inits: list[onnx.TensorProto] = field(default_factory=list)
    names: Names = field(default_factory=Names)
    _values: dict[str, np.ndarray] = field(default_factory=dict)

    def fresh(self, base: str) -> str:
        """A tensor or node name not used anywhere in the model yet."""
        return self.names.fresh(base)

    def const(self, base: str, value: np.ndarray) -> str:
        """Add an initializer holding `value`; return its (fresh) name."""
        name = self.fresh(base)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.new_inits.append(tensor)
        self.inits[name] = tensor
        return name

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant (initializer) tensor, None when it is computed."""
        if name not in self.inits:
            return None
        if name not in self._values:
            self._values[name] = numpy_helper.to_array(self.inits[name])
        return self._values[name]

    def dims(self, name: str) -> list[int | None] | None:
        if name in self.inits:
            return list(self.inits[name].dims)
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        d = self.dims(name)
        return None if d is None else len(d)


Rule = Callable[[onnx.NodeProto, Context], list[onnx.NodeProto]]
#: op type -> rule rewriting one node into nodes MXNet 1.9's importer takes (same meaning).
RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------- helpers


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _node(op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> onnx.NodeProto:
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return helper.make_node(op, inputs, outputs, name=name, **attrs)


def _like(
    node: onnx.NodeProto,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    op: str | None = None,
    **attrs,
) -> onnx.NodeProto:
    """`node` with other inputs/outputs/attributes (`attrs` replace; a value of None removes)."""
    merged = _attrs(node)
    merged.update(attrs)
    return _node(
        op or node.op_type,
        list(node.input) if inputs is None else inputs,
        list(node.output) if outputs is None else outputs,
        node.name,
        **merged,
    )


def _strip(inputs) -> list[str]:
    """Inputs without trailing empty (omitted optional) names."""
    out = list(inputs)
    while out and out[-1] == "":
        out.pop()
    return out


def _const_input(node: onnx.NodeProto, ctx: Context, i: int, what: str) -> np.ndarray | None:
    """The constant value of optional input `i` (None when omitted); refuse a computed one."""
    if len(node.input) <= i or node.input[i] == "":
        return None
    value = ctx.value(node.input[i])
    if value is None:
        raise Unsupported(
            f"its {what} (input {node.input[i]!r}) is computed in the graph; "
            "MXNet's importer needs it as a constant initializer"
        )
    return value


def _need_rank(node: onnx.NodeProto, ctx: Context, name: str | None = None) -> int:
    r = ctx.rank(name if name is not None else node.input[0])
    if r is None:
        raise Unsupported("the rank of its input is not known (shape inference could not tell)")
    return r


def _only_first_output(node: onnx.NodeProto, ctx: Context, what: str) -> list[str]:
    extra = [o for o in node.output[1:] if o and o in ctx.consumed]
    if extra:
        raise Unsupported(f"its {what} output {extra[0]!r} is used; MXNet's translation has only the first output")
    return [node.output[0]]


def _norm_axes(axes, rank: int | None, node: onnx.NodeProto) -> list[int]:
    out = []
    for a in axes:
        a = int(a)
        if a < 0:
            if rank is None:
                raise Unsupported("it has a negative axis and the rank of its input is not known")
            a += rank
        out.append(a)
    return out
