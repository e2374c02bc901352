"""Export for MXNet 1.9: an ONNX file that `mxnet.contrib.onnx.import_to_gluon` imports.

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
One rule per op family, looked up in `RULES`; a new op is one new rule.

MXNet itself is not imported here: the result is checked in MXNet by `tests/mxnet_driver.py`,
which runs in its own environment (MXNet 1.9 needs numpy < 1.24 and onnx < 1.17).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import InternalError, OnnxGrowError, VerificationFailed
from .io import ModelLike, load

#: what the written model declares; MXNet 1.9's translations follow these versions.
TARGET_OPSET = 12
TARGET_IR_VERSION = 7
#: oldest source opset whose ops the rules understand (older Add/Mul had `broadcast`/`axis`).
MIN_SOURCE_OPSET = 7

#: every op MXNet 1.9.1's importer has a translation for (`_convert_map` in _import_helper.py);
#: ops outside this set are refused with "MXNet has no translation", the others not (yet)
#: covered by a rule here with "not converted for MXNet".
MXNET_IMPORTER_OPS = frozenset("""
Constant RandomUniform RandomNormal RandomUniformLike RandomNormalLike Multinomial Add Sub Mul Div
Abs Neg Sum Tanh Ceil Floor Concat Sigmoid Relu Pad MatMul Conv ConvTranspose BatchNormalization
SpatialBN LeakyRelu Elu PRelu Selu Softmax FC GlobalAveragePool GlobalMaxPool GlobalLpPool Gemm LRN
Dropout Reshape Cast Split Slice Transpose Squeeze Unsqueeze Flatten Identity Reciprocal Sqrt Pow
Exp Log ReduceMax ReduceMean ReduceMin ReduceSum ReduceProd AveragePool MaxPool ArgMax ArgMin Max
Min Clip ReduceLogSum ReduceLogSumExp ReduceSumSquare ReduceL1 ReduceL2 MaxRoiPool
InstanceNormalization LogSoftmax Softsign Less Greater Equal And Xor Not Or Mean Acos Asin Atan Cos
Sin Softplus Tan Shape Size Gather HardSigmoid LpPool DepthToSpace SpaceToDepth Hardmax
LpNormalization TopK
""".split())

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
    taken: set[str] = field(default_factory=set)
    _values: dict[str, np.ndarray] = field(default_factory=dict)

    def fresh(self, base: str) -> str:
        """A tensor or node name not used anywhere in the model yet."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

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


def _like(node: onnx.NodeProto, inputs: list[str] | None = None, outputs: list[str] | None = None,
          op: str | None = None, **attrs) -> onnx.NodeProto:
    """`node` with other inputs/outputs/attributes (`attrs` replace; a value of None removes)."""
    merged = _attrs(node)
    merged.update(attrs)
    return _node(op or node.op_type, list(node.input) if inputs is None else inputs,
                 list(node.output) if outputs is None else outputs, node.name, **merged)


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
        raise Unsupported(f"its {what} (input {node.input[i]!r}) is computed in the graph; "
                          "MXNet's importer needs it as a constant initializer")
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


# ------------------------------------------------------------------------------------------ rules

_PASS = ("Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Ceil", "Floor",
         "Softsign", "Softplus", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Identity", "LeakyRelu", "Elu",
         "HardSigmoid", "Add", "Sub", "Mul", "Div", "Transpose", "LRN", "InstanceNormalization")


@rule(*_PASS)
def _same(node, ctx):
    """Same attributes and meaning in opset 12 and in MXNet's translation (broadcasting included)."""
    return [_like(node)]


@rule("Pow")
def _pow(node, ctx):
    """x ** 2 and x ** 3 (RMSNorm's square, GPT-2's tanh GELU) as products, x ** 0.5 as Sqrt, as onnxruntime's
    kernel computes them: a constant exponent would become a trainable Gluon parameter whose gradient,
    x ** p · ln x, is NaN for every negative x, and the first training step would fill the model with NaN."""
    e = ctx.value(node.input[1])
    x, y = node.input[0], node.output[0]
    if e is None or e.size != 1 or (ctx.dims(x) is not None and len(ctx.dims(node.input[1]) or []) > len(ctx.dims(x))):
        return [_like(node)]
    e = float(np.asarray(e).reshape(-1)[0])
    if e == 1.0:
        return [_node("Identity", [x], [y], node.name)]
    if e == 2.0:
        return [_node("Mul", [x, x], [y], node.name)]
    if e == 3.0:
        sq = ctx.fresh(f"{y}_squared")
        return [_node("Mul", [x, x], [sq], ctx.fresh(f"{node.name}/square")), _node("Mul", [sq, x], [y], node.name)]
    if e == 0.5:
        return [_node("Sqrt", [x], [y], node.name)]
    return [_like(node)]


@rule("Selu")
def _selu(node, ctx):
    # MXNet's selu has the standard constants built in and no attributes for them.
    a = _attrs(node)
    if abs(a.get("alpha", 1.67326319217681884765625) - 1.6732632) > 1e-6 or \
            abs(a.get("gamma", 1.05070102214813232421875) - 1.0507010) > 1e-6:
        raise Unsupported("MXNet's selu has fixed alpha and gamma; this node sets others")
    return [_like(node, alpha=None, gamma=None)]


@rule("PRelu")
def _prelu(node, ctx):
    # MXNet's prelu takes one slope per channel of axis 1, or one slope for all.
    slope = ctx.dims(node.input[1])
    rank = _need_rank(node, ctx)
    n = int(np.prod(slope)) if slope is not None and None not in slope else None
    if n == 1 or (rank == 2 and slope is not None and len(slope) == 1):
        return [_like(node)]
    raise Unsupported("MXNet's prelu takes a slope per channel only on 2-D inputs (or a single slope)")


@rule("Sum")
def _sum(node, ctx):
    ins = list(node.input)
    if len(ins) == 1:
        return [_like(node, op="Identity")]
    shapes = [ctx.dims(i) for i in ins]
    if all(s is not None and None not in s for s in shapes) and all(s == shapes[0] for s in shapes):
        return [_like(node)]  # add_n: same shapes only
    nodes, acc = [], ins[0]
    for k, x in enumerate(ins[1:], 1):
        out = node.output[0] if k == len(ins) - 1 else ctx.fresh(f"{node.output[0]}_sum{k}")
        nodes.append(_node("Add", [acc, x], [out], ctx.fresh(f"{node.name}/add{k}")))
        acc = out
    return nodes


@rule("Max", "Min", "Mean")
def _same_shape_only(node, ctx):
    shapes = [ctx.dims(i) for i in node.input]
    if all(s is not None and None not in s for s in shapes) and all(s == shapes[0] for s in shapes):
        return [_like(node)]
    raise Unsupported(f"MXNet's {node.op_type.lower()} does not broadcast; its inputs differ in shape (or are not known)")


@rule("Gemm")
def _gemm(node, ctx):
    a = _attrs(node)
    if len(node.input) >= 3 and node.input[2]:
        return [_like(node)]
    wdims = ctx.dims(node.input[1])
    if wdims is None or len(wdims) != 2 or wdims[1 if not a.get("transB", 0) else 0] is None:
        raise Unsupported("it has no C input and the size of B is not known")
    n = wdims[0] if a.get("transB", 0) else wdims[1]
    dtype = ctx.value(node.input[1]).dtype if ctx.value(node.input[1]) is not None else np.float32
    zero = ctx.const(f"{node.name}.zero_bias", np.zeros(n, dtype=dtype))
    return [_like(node, inputs=[node.input[0], node.input[1], zero], beta=1.0)]


@rule("MatMul")
def _matmul(node, ctx):
    a, b = node.input
    da, db = ctx.dims(a), ctx.dims(b)
    if da is None or db is None:
        raise Unsupported("the ranks of its inputs are not known")
    if len(da) == len(db) >= 2:
        lead = [(x, y) for x, y in zip(da[:-2], db[:-2])]
        if any(x is not None and y is not None and x != y for x, y in lead):
            raise Unsupported("MXNet's linalg_gemm2 does not broadcast batch dimensions")
        return [_like(node)]
    if len(db) == 2 and len(da) > 2:
        k, n = db
        known = da[:-1]
        if k is None or n is None or sum(d is None for d in known) > 1:
            raise Unsupported("MXNet's linalg_gemm2 needs equal ranks; reshaping to 2-D needs static sizes")
        flat = ctx.fresh(f"{node.output[0]}_2d")
        prod = ctx.fresh(f"{node.output[0]}_mm2d")
        s_in = ctx.const(f"{node.name}.shape_in", np.array([-1, k], dtype=np.int64))
        s_out = ctx.const(f"{node.name}.shape_out", np.array([-1 if d is None else d for d in known] + [n], dtype=np.int64))
        return [
            _node("Reshape", [a, s_in], [flat], ctx.fresh(f"{node.name}/to_2d")),
            _node("MatMul", [flat, b], [prod], node.name),
            _node("Reshape", [prod, s_out], [node.output[0]], ctx.fresh(f"{node.name}/from_2d")),
        ]
    raise Unsupported(f"MXNet's linalg_gemm2 needs inputs of equal rank (got {len(da)} and {len(db)})")


def _explicit_pads(node, ctx, a: dict, kernel: list[int], dilations: list[int]) -> list[int]:
    """`pads` in begin..., end... order, with `auto_pad` worked out (MXNet ignores auto_pad)."""
    nd = len(kernel)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return list(a.get("pads", [0] * 2 * nd))
    if auto == "VALID":
        return [0] * 2 * nd
    strides = list(a.get("strides", [1] * nd))
    spatial = (ctx.dims(node.input[0]) or [None] * (nd + 2))[2:]
    begin, end = [], []
    for i in range(nd):
        span = (kernel[i] - 1) * dilations[i] + 1
        if strides[i] == 1:
            total = span - 1
        else:
            if spatial[i] is None:
                raise Unsupported(f"auto_pad={auto} with stride {strides[i]} needs the input size, which is not known")
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + span - spatial[i])
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _weight_kernel(node, ctx) -> list[int]:
    w = ctx.value(node.input[1])
    if w is None:
        raise Unsupported("its weight is computed in the graph; MXNet's importer reads the number of filters "
                          "from a constant weight")
    return list(w.shape[2:])


@rule("Conv")
def _conv(node, ctx):
    a = _attrs(node)
    weight_kernel = _weight_kernel(node, ctx)
    kernel = list(a.get("kernel_shape", weight_kernel))
    nd = len(kernel)
    dil = list(a.get("dilations", [1] * nd))
    pads = _explicit_pads(node, ctx, a, kernel, dil)
    if pads[:nd] != pads[nd:] and nd not in (2, 3):
        raise Unsupported("asymmetric padding becomes MXNet's pad op, which takes 4-D and 5-D tensors only")
    return [_like(node, inputs=_strip(node.input), kernel_shape=kernel, pads=pads, auto_pad=None)]


@rule("ConvTranspose")
def _conv_transpose(node, ctx):
    a = _attrs(node)
    weight_kernel = _weight_kernel(node, ctx)
    kernel = list(a.get("kernel_shape", weight_kernel))
    nd = len(kernel)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if any(a.get("pads", [0])) or any(a.get("output_padding", [0])) or "output_shape" in a \
            or auto not in ("NOTSET", "VALID", ""):
        raise Unsupported("MXNet's translation pads the input instead of cropping the output: "
                          "only pads, output_padding and output_shape of 0 are exact")
    if nd not in (2, 3):
        raise Unsupported("MXNet's translation puts a pad op (4-D and 5-D tensors only) before every deconvolution")
    return [_like(node, inputs=_strip(node.input), kernel_shape=kernel, pads=None, auto_pad=None)]


@rule("BatchNormalization")
def _batch_norm(node, ctx):
    a = _attrs(node)
    if a.get("training_mode", 0):
        raise Unsupported("training_mode=1 (batch statistics) cannot be imported; export the model in eval mode")
    if a.get("spatial", 1) != 1:
        raise Unsupported("spatial=0 (per-activation statistics) is not what MXNet's BatchNorm computes")
    for i in (3, 4):
        if ctx.value(node.input[i]) is None:
            raise Unsupported("its running mean/variance are computed in the graph; MXNet needs them as initializers")
    return [_like(node, outputs=_only_first_output(node, ctx, "statistics"), training_mode=None, spatial=None,
                  is_test=None, consumed_inputs=None)]


def _pool_common(node, ctx, a: dict, *, ceil_as_padding: bool = False) -> tuple[list[int], list[int], list[int]]:
    """Kernel, strides and explicit pads of a pooling node. With `ceil_as_padding`, a `ceil_mode` that changes the
    output size becomes extra padding at the end of each axis (MXNet's translation always rounds down): the
    padded size then rounds down to the size ceil_mode gives, counted as onnxruntime and torch count it (a last
    window that would start in the end padding is dropped)."""
    kernel = list(a["kernel_shape"])
    nd = len(kernel)
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    if any(d != 1 for d in dil):
        raise Unsupported("MXNet's pooling translation ignores dilations")
    pads = _explicit_pads(node, ctx, a, kernel, dil)
    if a.get("ceil_mode", 0):
        spatial = (ctx.dims(node.input[0]) or [None] * (nd + 2))[2:]
        for i in range(nd):
            if spatial[i] is None:
                raise Unsupported("ceil_mode=1 with an unknown input size; MXNet's translation always rounds down")
            span = spatial[i] + pads[i] + pads[i + nd] - kernel[i]
            if span % strides[i] == 0:
                continue
            if not ceil_as_padding:
                raise Unsupported("ceil_mode=1 changes the output size here; MXNet's translation always rounds down")
            out = -(-span // strides[i]) + 1
            if (out - 1) * strides[i] >= spatial[i] + pads[i]:
                out -= 1  # the last window would start in the end padding: onnxruntime and torch drop it
            pads[i + nd] = (out - 1) * strides[i] + kernel[i] - spatial[i] - pads[i]
    return kernel, strides, pads


@rule("MaxPool")
def _max_pool(node, ctx):
    a = _attrs(node)
    kernel, strides, pads = _pool_common(node, ctx, a, ceil_as_padding=True)
    nd = len(kernel)
    if any(p >= k for p, k in zip(pads[:nd] + pads[nd:], kernel + kernel)):
        raise Unsupported("MXNet's translation pads max pooling with edge values, exact only for pads smaller than the kernel")
    return [_like(node, outputs=_only_first_output(node, ctx, "Indices"), kernel_shape=kernel, strides=strides,
                  pads=pads, auto_pad=None, ceil_mode=None, storage_order=None, dilations=None)]


@rule("AveragePool")
def _avg_pool(node, ctx):
    """MXNet's translation pads with zeros and counts them (count_include_pad=1). Where the model does not count
    them, the average over the window is rescaled by kernel size / elements inside the input, a constant map of
    the output's positions (it needs the input's spatial size)."""
    a = _attrs(node)
    kernel, strides, pads = _pool_common(node, ctx, a)
    nd = len(kernel)
    if any(pads) and len(kernel) == 1:
        raise Unsupported("MXNet's translation pads 1-D average pooling with edge values")
    pool = _like(node, kernel_shape=kernel, strides=strides, pads=pads, auto_pad=None, ceil_mode=None,
                 dilations=None, count_include_pad=None if not any(pads) else 1)
    if not any(pads) or a.get("count_include_pad", 0):
        return [pool]
    spatial = (ctx.dims(node.input[0]) or [None] * (nd + 2))[2:]
    if None in spatial:
        raise Unsupported("count_include_pad=0 with padding: MXNet counts the padded zeros, and rescaling the "
                          "average needs the input's spatial size, which is not known")
    counts = []
    for i in range(nd):
        out = (spatial[i] + pads[i] + pads[i + nd] - kernel[i]) // strides[i] + 1
        first = np.arange(out) * strides[i] - pads[i]
        inside = np.minimum(first + kernel[i], spatial[i]) - np.maximum(first, 0)
        counts.append(inside)
    inside = counts[0]
    for c in counts[1:]:
        inside = np.multiply.outer(inside, c)
    scale = (float(np.prod(kernel)) / inside).astype(np.float32).reshape([1, 1] + list(inside.shape))
    pooled = ctx.fresh(f"{node.output[0]}_with_pads")
    pool.output[0] = pooled
    return [pool, _node("Mul", [pooled, ctx.const(f"{node.name}.count_scale", scale)], [node.output[0]],
                        ctx.fresh(f"{node.name}/count_scale"))]


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node, ctx):
    rank = _need_rank(node, ctx)
    if rank == 4:
        return [_like(node)]
    # MXNet's translation gives the pooling a 2-D kernel; other ranks become a reduction.
    op = "ReduceMean" if node.op_type == "GlobalAveragePool" else "ReduceMax"
    return [_node(op, [node.input[0]], [node.output[0]], node.name, axes=list(range(2, rank)), keepdims=1)]


@rule("Flatten")
def _flatten(node, ctx):
    axis = _attrs(node).get("axis", 1)
    rank = ctx.rank(node.input[0])
    if axis < 0:
        if rank is None:
            raise Unsupported("negative axis with an unknown input rank")
        axis += rank
    if axis == 1:
        return [_like(node, axis=None)]
    dims = ctx.dims(node.input[0])
    if axis == 0:
        shape = [1, -1]
    elif dims is not None and None not in dims[:axis]:
        shape = [int(np.prod(dims[:axis])), -1]
    elif dims is not None and None not in dims[axis:]:
        shape = [-1, int(np.prod(dims[axis:]))]
    else:
        raise Unsupported(f"MXNet's Flatten works on axis 1 only; axis {axis} needs static sizes to become a Reshape")
    s = ctx.const(f"{node.name}.shape", np.array(shape, dtype=np.int64))
    return [_node("Reshape", [node.input[0], s], [node.output[0]], node.name)]


@rule("Reshape")
def _reshape(node, ctx):
    shape = _const_input(node, ctx, 1, "target shape")
    if shape is None:
        raise Unsupported("it has no shape input")
    if _attrs(node).get("allowzero", 0) and 0 in shape.tolist():
        raise Unsupported("allowzero=1 with a 0 in the shape (a real empty dimension) has no MXNet equivalent")
    return [_like(node, allowzero=None)]


def _axes(node, ctx, input_index: int, since: int) -> list[int] | None:
    """`axes` from the attribute (opsets before `since`) or from a constant input."""
    if ctx.opset < since:
        axes = _attrs(node).get("axes")
        return None if axes is None else list(axes)
    value = _const_input(node, ctx, input_index, "axes")
    return None if value is None else [int(v) for v in value.reshape(-1)]


@rule("Squeeze")
def _squeeze(node, ctx):
    axes = _axes(node, ctx, 1, 13)
    if axes is not None:
        axes = _norm_axes(axes, ctx.rank(node.input[0]), node)
    return [_node("Squeeze", [node.input[0]], list(node.output), node.name, axes=axes)]


@rule("Unsqueeze")
def _unsqueeze(node, ctx):
    axes = _axes(node, ctx, 1, 13)
    if not axes:
        raise Unsupported("it has no axes")
    rank = ctx.rank(node.input[0])
    axes = sorted(_norm_axes(axes, None if rank is None else rank + len(axes), node))
    return [_node("Unsqueeze", [node.input[0]], list(node.output), node.name, axes=axes)]


@rule("Concat")
def _concat(node, ctx):
    axis = _norm_axes([_attrs(node)["axis"]], ctx.rank(node.input[0]), node)[0]
    return [_like(node, axis=axis)]


@rule("Split")
def _split(node, ctx):
    a = _attrs(node)
    rank = ctx.rank(node.input[0])
    axis = _norm_axes([a.get("axis", 0)], rank, node)[0]
    n = len(node.output)
    if ctx.opset < 13:
        sizes = a.get("split")
    else:
        value = _const_input(node, ctx, 1, "split sizes")
        sizes = None if value is None else [int(v) for v in value]
    if sizes is None:
        dims = ctx.dims(node.input[0])
        size = None if dims is None else dims[axis]
        if size is None:
            raise Unsupported("the size of the split axis is not known")
        part = -(-size // n)
        sizes = [part] * (n - 1) + [size - part * (n - 1)]
    if len(set(sizes)) != 1:
        raise Unsupported(f"MXNet's split makes equal parts only (sizes {list(sizes)})")
    return [_node("Split", [node.input[0]], list(node.output), node.name, axis=axis, split=list(sizes))]


@rule("Softmax", "LogSoftmax")
def _softmax(node, ctx):
    rank = _need_rank(node, ctx)
    a = _attrs(node)
    axis = a.get("axis", 1 if ctx.opset < 13 else -1)
    axis = axis + rank if axis < 0 else axis
    last = rank - 1
    if axis == last:
        return [_like(node, axis=last)]
    dims = ctx.dims(node.input[0])
    if ctx.opset < 13:
        # opset < 13: softmax over everything from `axis` on, flattened.
        if dims is not None and all(d == 1 for d in dims[axis:-1]):
            return [_like(node, axis=last)]
        if dims is None or None in dims[axis:]:
            raise Unsupported(f"softmax over axes {axis}.. (opset {ctx.opset}) needs their sizes to become "
                              "reshape + softmax on the last axis")
        s_in = ctx.const(f"{node.name}.shape_in", np.array([0] * axis + [-1], dtype=np.int64))
        s_out = ctx.const(f"{node.name}.shape_out", np.array([0] * axis + list(dims[axis:]), dtype=np.int64))
        flat, soft = ctx.fresh(f"{node.output[0]}_flat"), ctx.fresh(f"{node.output[0]}_soft")
        return [
            _node("Reshape", [node.input[0], s_in], [flat], ctx.fresh(f"{node.name}/flatten")),
            _node(node.op_type, [flat], [soft], node.name, axis=axis),
            _node("Reshape", [soft, s_out], [node.output[0]], ctx.fresh(f"{node.name}/unflatten")),
        ]
    # opset >= 13: one axis; move it last, where opset 12 and MXNet agree.
    perm = [i for i in range(rank) if i != axis] + [axis]
    inv = [perm.index(i) for i in range(rank)]
    moved, soft = ctx.fresh(f"{node.output[0]}_moved"), ctx.fresh(f"{node.output[0]}_soft")
    return [
        _node("Transpose", [node.input[0]], [moved], ctx.fresh(f"{node.name}/to_last"), perm=perm),
        _node(node.op_type, [moved], [soft], node.name, axis=last),
        _node("Transpose", [soft], [node.output[0]], ctx.fresh(f"{node.name}/from_last"), perm=inv),
    ]


@rule("Dropout")
def _dropout(node, ctx):
    if ctx.opset < 12:
        ratio = _attrs(node).get("ratio", 0.5)
    else:
        value = _const_input(node, ctx, 1, "ratio")
        ratio = 0.5 if value is None else float(np.asarray(value).reshape(-1)[0])
    r = ctx.const(f"{node.name}.ratio", np.array(ratio, dtype=np.float32))
    return [_node("Dropout", [node.input[0], r], _only_first_output(node, ctx, "mask"), node.name)]


@rule("Clip")
def _clip(node, ctx):
    if ctx.opset < 11:
        a = _attrs(node)
        lo, hi = a.get("min"), a.get("max")
    else:
        lo, hi = _const_input(node, ctx, 1, "min"), _const_input(node, ctx, 2, "max")
    if lo is None and hi is None:
        return [_node("Identity", [node.input[0]], [node.output[0]], node.name)]
    # MXNet's translation reads min from input 1 and max from input 2; a missing min is -inf.
    dtype = np.float32
    lo_name = ctx.const(f"{node.name}.min", np.array(-np.inf if lo is None else np.asarray(lo).reshape(-1)[0], dtype=dtype))
    ins = [node.input[0], lo_name]
    if hi is not None:
        ins.append(ctx.const(f"{node.name}.max", np.array(np.asarray(hi).reshape(-1)[0], dtype=dtype)))
    return [_node("Clip", ins, [node.output[0]], node.name)]


@rule("Pad")
def _pad(node, ctx):
    a = _attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = _need_rank(node, ctx)
    if ctx.opset < 11:
        pads, value = list(a.get("pads", a.get("paddings", []))), a.get("value", 0.0)
    else:
        pads_v = _const_input(node, ctx, 1, "pads")
        if pads_v is None:
            raise Unsupported("it has no pads")
        pads = [int(p) for p in pads_v]
        v = _const_input(node, ctx, 2, "constant value")
        value = 0.0 if v is None else float(np.asarray(v).reshape(-1)[0])
        axes_v = _const_input(node, ctx, 3, "axes")
        if axes_v is not None:
            axes = _norm_axes(axes_v.tolist(), rank, node)
            full = [0] * 2 * rank
            for i, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[i], pads[i + len(axes)]
            pads = full
    if mode not in ("constant", "reflect", "edge"):
        raise Unsupported(f"MXNet's pad has no mode {mode!r}")
    if rank not in (4, 5):
        raise Unsupported(f"MXNet's pad takes 4-D and 5-D tensors only (this one is {rank}-D)")
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        raise Unsupported("MXNet's pad does not pad the batch or channel axis")
    if any(p < 0 for p in pads):
        raise Unsupported("MXNet's pad cannot crop (negative pads)")
    ins = [node.input[0], ctx.const(f"{node.name}.pads", np.array(pads, dtype=np.int64))]
    if mode == "constant":
        ins.append(ctx.const(f"{node.name}.value", np.array(value, dtype=np.float32)))
    return [_node("Pad", ins, [node.output[0]], node.name, mode=mode)]


_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp")


@rule(*_REDUCE)
def _reduce(node, ctx):
    a = _attrs(node)
    axes = _axes(node, ctx, 1, 13 if node.op_type == "ReduceSum" else 18)
    if not axes and a.get("noop_with_empty_axes", 0):
        return [_node("Identity", [node.input[0]], [node.output[0]], node.name)]
    rank = ctx.rank(node.input[0])
    if axes:
        axes = _norm_axes(axes, rank, node)
    elif rank is not None:
        axes = list(range(rank))
    if node.op_type in ("ReduceL1", "ReduceL2") and (axes is None or len(axes) > 2):
        raise Unsupported("MXNet's norm reduces over at most 2 axes")
    # MXNet's reductions default to keepdims=0, ONNX's to 1: always say which.
    return [_node(node.op_type, [node.input[0]], [node.output[0]], node.name, axes=axes or None,
                  keepdims=int(a.get("keepdims", 1)))]


@rule("LayerNormalization")
def _layer_norm(node, ctx):
    """MXNet's importer has no LayerNorm: the same arithmetic from ops it has (ReduceMean, Sub, Mul,
    Add, Sqrt, Div); onnxruntime's kernel computes these steps in float32 too."""
    a = _attrs(node)
    if a.get("stash_type", 1) != 1:
        raise Unsupported("stash_type other than float32 is not what the decomposition computes")
    outs = _only_first_output(node, ctx, "Mean/InvStdDev")
    rank = _need_rank(node, ctx)
    axis = a.get("axis", -1)
    axes = list(range(axis + rank if axis < 0 else axis, rank))
    x, out, base = node.input[0], outs[0], node.name
    t = lambda tag: ctx.fresh(f"{out}_{tag}")  # noqa: E731
    mean, d, sq, var, veps, std, norm = t("mean"), t("centred"), t("squared"), t("var"), t("var_eps"), t("std"), t("norm")
    eps = ctx.const(f"{base}.epsilon", np.array(a.get("epsilon", 1e-5), dtype=np.float32))
    nodes = [
        _node("ReduceMean", [x], [mean], ctx.fresh(f"{base}/mean"), axes=axes, keepdims=1),
        _node("Sub", [x, mean], [d], ctx.fresh(f"{base}/centre")),
        _node("Mul", [d, d], [sq], ctx.fresh(f"{base}/square")),
        _node("ReduceMean", [sq], [var], ctx.fresh(f"{base}/var"), axes=axes, keepdims=1),
        _node("Add", [var, eps], [veps], ctx.fresh(f"{base}/add_eps")),
        _node("Sqrt", [veps], [std], ctx.fresh(f"{base}/std")),
        _node("Div", [d, std], [norm], ctx.fresh(f"{base}/normalise")),
    ]
    scale = node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    scaled = out if bias is None else t("scaled")
    nodes.append(_node("Mul", [norm, scale], [scaled], base))
    if bias is not None:
        nodes.append(_node("Add", [scaled, bias], [out], ctx.fresh(f"{base}/bias")))
    return nodes


@rule("ArgMax", "ArgMin")
def _arg(node, ctx):
    a = _attrs(node)
    if a.get("select_last_index", 0):
        raise Unsupported("select_last_index=1 has no MXNet equivalent")
    axis = _norm_axes([a.get("axis", 0)], ctx.rank(node.input[0]), node)[0]
    return [_like(node, axis=axis, keepdims=int(a.get("keepdims", 1)), select_last_index=None)]


@rule("Cast")
def _cast(node, ctx):
    if not _attrs(node).get("saturate", 1):
        raise Unsupported("saturate=0 has no MXNet equivalent")
    return [_like(node, saturate=None)]


@rule("Gather")
def _gather(node, ctx):
    a = _attrs(node)
    rank = ctx.rank(node.input[0])
    axis = _norm_axes([a.get("axis", 0)], rank, node)[0]
    idx = ctx.value(node.input[1])
    if idx is not None and (idx < 0).any():
        dims = ctx.dims(node.input[0])
        if dims is None or dims[axis] is None:
            raise Unsupported("negative indices (MXNet's take clips them) on an axis of unknown size")
        fixed = np.where(idx < 0, idx + dims[axis], idx).astype(idx.dtype)
        return [_like(node, inputs=[node.input[0], ctx.const(f"{node.input[1]}_positive", fixed)], axis=axis)]
    return [_like(node, axis=axis)]


@rule("HardSwish")
def _hard_swish(node, ctx):
    """HardSwish(x) = x · HardSigmoid(x) with alpha 1/6 and beta 1/2: the ONNX definition of the op itself
    (torch's x · relu6(x + 3) / 6), from ops MXNet's importer translates and with no constant to train."""
    t = ctx.fresh(f"{node.output[0]}_hard_sigmoid")
    return [_node("HardSigmoid", [node.input[0]], [t], ctx.fresh(f"{node.name}/hard_sigmoid"), alpha=1.0 / 6,
                  beta=0.5),
            _node("Mul", [node.input[0], t], [node.output[0]], node.name)]


#: the most parts `_take_range` splits an axis into (a slice whose bounds share no larger divisor is refused)
MAX_SPLIT_PARTS = 256


def _take_range(ctx, x: str, axis: int, size: int, begin: int, end: int, out: str, base: str) -> list[onnx.NodeProto]:
    """x[begin:end] along `axis` (of static `size`) as MXNet translates it exactly: a Split into equal parts
    (their size the largest divisor of begin, end and size), then the parts in range, concatenated. MXNet 1.9's
    own Slice translation is not usable: it reads the bounds as floats and compares the ends with the first graph
    input's shape."""
    if begin == 0 and end == size:
        return [_node("Identity", [x], [out], ctx.fresh(f"{base}/all"))]
    part = np.gcd.reduce([begin, end, size])
    parts = size // part
    if parts > MAX_SPLIT_PARTS:
        raise Unsupported(f"elements {begin}..{end} of an axis of {size} need a split into {parts} parts of "
                          f"{part} (more than {MAX_SPLIT_PARTS}); MXNet's Slice translation is not exact")
    names = [ctx.fresh(f"{out}_part{k}") for k in range(parts)]
    keep = names[begin // part:end // part]
    nodes = [_node("Split", [x], names, ctx.fresh(f"{base}/split"), axis=axis, split=[int(part)] * parts)]
    if len(keep) == 1:
        nodes.append(_node("Identity", keep, [out], ctx.fresh(f"{base}/take")))
    else:
        nodes.append(_node("Concat", keep, [out], ctx.fresh(f"{base}/concat"), axis=axis))
    return nodes


def _take_strided(ctx, x: str, dims: list[int | None], axis: int, begin: int, count: int, step: int, out: str,
                  base: str) -> list[onnx.NodeProto]:
    """`count` elements from `begin` every `step` along `axis`: a range of count · step elements reshaped to
    (count, step), the first of each step taken, reshaped back (the last element alone when the range would run
    past the end of the axis)."""
    size = dims[axis]
    if any(d is None for d in dims[axis + 1:]):
        raise Unsupported("a strided slice needs static sizes after the sliced axis")
    if count == 1:
        return _take_range(ctx, x, axis, size, begin, begin + 1, out, base)
    whole = begin + count * step <= size
    n = count if whole else count - 1
    rng, grid, first, rows = (ctx.fresh(f"{out}_{tag}") for tag in ("range", "grid", "first", "rows"))
    nodes = _take_range(ctx, x, axis, size, begin, begin + n * step, rng, base)
    tail = [int(d) for d in dims[axis + 1:]]
    nodes.append(_node("Reshape", [rng, ctx.const(f"{base}.grid_shape", np.array([0] * axis + [n, step] + tail,
                                                                                   dtype=np.int64))],
                       [grid], ctx.fresh(f"{base}/grid")))
    nodes += _take_range(ctx, grid, axis + 1, step, 0, 1, first, f"{base}/first")
    target = out if whole else rows
    nodes.append(_node("Reshape", [first, ctx.const(f"{base}.rows_shape", np.array([0] * axis + [n] + tail,
                                                                                     dtype=np.int64))],
                       [target], ctx.fresh(f"{base}/rows")))
    if not whole:
        last = ctx.fresh(f"{out}_last")
        nodes += _take_range(ctx, x, axis, size, begin + n * step, begin + n * step + 1, last, f"{base}/last")
        nodes.append(_node("Concat", [rows, last], [out], ctx.fresh(f"{base}/join"), axis=axis))
    return nodes


@rule("Slice")
def _slice(node, ctx):
    """Slice with constant bounds on axes of static size, written as Split and Concat (and Reshape for steps)."""
    rank = _need_rank(node, ctx)
    if ctx.opset < 10:
        a = _attrs(node)
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in _const_input(node, ctx, 1, "starts").reshape(-1)]
        ends = [int(v) for v in _const_input(node, ctx, 2, "ends").reshape(-1)]
        value = _const_input(node, ctx, 3, "axes")
        axes = list(range(len(starts))) if value is None else [int(v) for v in value.reshape(-1)]
        value = _const_input(node, ctx, 4, "steps")
        steps = [1] * len(starts) if value is None else [int(v) for v in value.reshape(-1)]
    axes = _norm_axes(axes, rank, node)
    dims = list(ctx.dims(node.input[0]) or [None] * rank)
    plan = []
    for axis, start, end, step in zip(axes, starts, ends, steps):
        size = dims[axis]
        if size is None:
            raise Unsupported(f"axis {axis} has a size only known at run time; slicing it in MXNet needs it static")
        if step <= 0:
            raise Unsupported("a negative step (reversing) has no exact MXNet translation here")
        start = min(max(start + size if start < 0 else start, 0), size)
        end = min(max(end + size if end < 0 else end, 0), size)
        count = max(0, -(-(end - start) // step))
        if count == 0:
            raise Unsupported("it makes an empty tensor, which MXNet cannot hold")
        plan.append((axis, start, end, step, count))
    nodes, x = [], node.input[0]
    for k, (axis, start, end, step, count) in enumerate(plan):
        out = node.output[0] if k == len(plan) - 1 else ctx.fresh(f"{node.output[0]}_axis{axis}")
        base = node.name if k == len(plan) - 1 else ctx.fresh(f"{node.name}/axis{axis}")
        if step == 1:
            nodes += _take_range(ctx, x, axis, dims[axis], start, end, out, base)
        else:
            nodes += _take_strided(ctx, x, dims, axis, start, count, step, out, base)
        dims[axis], x = count, out
    if not nodes:
        return [_node("Identity", [node.input[0]], [node.output[0]], node.name)]
    return nodes


@rule("Expand")
def _expand(node, ctx):
    """Expand to a constant shape, written as copies concatenated along each axis it repeats (exact, and no
    constant to train)."""
    shape = _const_input(node, ctx, 1, "shape")
    dims = ctx.dims(node.input[0])
    if dims is None:
        raise Unsupported("the rank of its input is not known")
    target = [int(v) for v in shape.reshape(-1)]
    rank = max(len(dims), len(target))
    dims = [1] * (rank - len(dims)) + list(dims)
    target = [1] * (rank - len(target)) + target
    nodes, x = [], node.input[0]
    if rank > len(ctx.dims(node.input[0])):
        x = ctx.fresh(f"{node.output[0]}_unsqueezed")
        nodes.append(_node("Unsqueeze", [node.input[0]], [x], ctx.fresh(f"{node.name}/unsqueeze"),
                           axes=list(range(rank - len(ctx.dims(node.input[0]))))))
    repeats = []
    for axis, (d, t) in enumerate(zip(dims, target)):
        if t == 1 or d == t:
            continue
        if d != 1:
            raise Unsupported(f"axis {axis} of size {'unknown' if d is None else d} cannot broadcast to {t}")
        repeats.append((axis, t))
    for k, (axis, t) in enumerate(repeats):
        out = node.output[0] if k == len(repeats) - 1 else ctx.fresh(f"{node.output[0]}_axis{axis}")
        nodes.append(_node("Concat", [x] * t, [out], node.name if k == len(repeats) - 1 else
                           ctx.fresh(f"{node.name}/axis{axis}"), axis=axis))
        x = out
    if not repeats:
        nodes.append(_node("Identity", [x], [node.output[0]], node.name))
    return nodes


# ------------------------------------------------------------------------------------------- pass

def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


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
        return (f"MXNet 1.9's importer translates {node.op_type} in a way onnxgrow cannot confirm as exact, "
                "so it is not converted")
    return f"MXNet 1.9's ONNX importer has no translation for {node.op_type}"


def fold_static_shapes(model: onnx.ModelProto) -> int:
    """Replace Shape/Size of tensors whose sizes are all static by constants and fold what follows
    (Gather, Concat, ... down to Reshape targets). Returns how many nodes were replaced."""
    from .analysis.shapes import infer
    from .passes.fold import fold_constants

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
            value = np.array(dims[a.get("start", 0):a.get("end", len(dims))], dtype=np.int64)
        else:
            value = np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)
        const = helper.make_node("Constant", [], [node.output[0]], name=node.name,
                                 value=numpy_helper.from_array(value))
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
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    seen, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in inits:
            t = inits[name]
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                               onnx.TensorProto.BFLOAT16):
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
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    shapes = None
    removed, dead = 0, set()
    for k, node in enumerate(g.node):
        if node.op_type != "Where" or node.domain not in ("", "ai.onnx") or len(node.input) != 3:
            continue
        cond, fill, value = node.input
        guard = producer.get(cond)
        probs = producer.get(value)
        if guard is None or guard.op_type != "IsNaN" or guard.input[0] != value or probs is None \
                or probs.op_type not in ("Softmax", "LogSoftmax"):
            continue
        if shapes is None:
            from .analysis.shapes import infer

            shapes = infer(model)
        want, fill_dims = shapes.get(value), shapes.get(fill)
        if fill in {t.name for t in g.initializer}:
            fill_dims = list(next(t.dims for t in g.initializer if t.name == fill))
        if want is None or fill_dims is None or len(fill_dims) > len(want) or \
                any(d not in (1, w) for d, w in zip(reversed(fill_dims), reversed(want))):
            continue  # the fill could broadcast the result to another shape
        if _may_be_minus_infinity(model, probs.input[0]):
            continue
        g.node[k].CopyFrom(helper.make_node("Identity", [value], list(node.output), name=node.name))
        removed += 1
        if readers.get(cond, 0) == 1:
            dead.add(cond)
    if dead:
        keep = [n for n in g.node if not (n.op_type == "IsNaN" and n.output[0] in dead)]
        del g.node[:]
        g.node.extend(keep)
    return removed


def convert(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite `model` (already loaded and folded) into the MXNet 1.9 dialect; no verification."""
    from .analysis.shapes import infer

    opset = _default_opset(model)
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
            raise OnnxGrowError(f"initializer {t.name!r} is {onnx.TensorProto.DataType.Name(t.data_type).lower()}: "
                                "MXNet's importer loads every weight as float32; convert the model to float32 first")
    for vi in g.input:
        if vi.type.tensor_type.elem_type in _FLOAT_TYPES:
            raise OnnxGrowError(f"input {vi.name!r} is not float32: MXNet's importer computes in float32")
    drop_nan_guards(model)

    consumed = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    taken = {n.name for n in g.node} | {i for n in g.node for i in n.input} | {o for n in g.node for o in n.output}
    taken |= {t.name for t in g.initializer} | {v.name for v in g.input} | {v.name for v in g.output}
    ctx = Context(model, opset, infer(model), consumed, {t.name: t for t in g.initializer}, taken=taken)

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
    tensors = {t.name for t in g.initializer} | {v.name for v in g.input}
    seen: set[str] = set()
    for i, node in enumerate(g.node):
        base = node.name or f"{node.op_type}_{i}"
        name, k = base, 1
        while name in seen or name in tensors:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)


def _prune_initializers(g: onnx.GraphProto) -> None:
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    dropped = {t.name for t in g.initializer} - used
    if dropped:
        g.ClearField("initializer")
        g.initializer.extend(keep)
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
    from .io import needs_external_data
    from .stream import copy_except

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
        from .verify import check_relative_to, failure_text, verify

        # rewritten ops (LayerNormalization written out, ...) round differently: judged against each output's size
        relative_to = check_relative_to(verify_args.pop("relative_to", None), "output")
        report = verify(source, out, relative_to=relative_to, **verify_args)
        if not report.passed:
            raise VerificationFailed(f"export for MXNet changed the outputs: {failure_text(report)}; nothing was "
                                     "written", report)
    return out
