"""The MXNet export's op rules: one per op family, each rewriting one node into the forms MXNet 1.9's importer
translates with the same meaning (registered in `registry.RULES`; a new op is one new rule here)."""

from __future__ import annotations

import numpy as np
import onnx

from .registry import (
    Unsupported,
    _attrs,
    _const_input,
    _like,
    _need_rank,
    _node,
    _norm_axes,
    _only_first_output,
    _strip,
    rule,
)

# ------------------------------------------------------------------------------------------ rules

_PASS = (
    "Relu",
    "Sigmoid",
    "Tanh",
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Ceil",
    "Floor",
    "Softsign",
    "Softplus",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Identity",
    "LeakyRelu",
    "Elu",
    "HardSigmoid",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Transpose",
    "LRN",
    "InstanceNormalization",
)


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
    if (
        abs(a.get("alpha", 1.67326319217681884765625) - 1.6732632) > 1e-6
        or abs(a.get("gamma", 1.05070102214813232421875) - 1.0507010) > 1e-6
    ):
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
    raise Unsupported(
        f"MXNet's {node.op_type.lower()} does not broadcast; its inputs differ in shape (or are not known)"
    )


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
        s_out = ctx.const(
            f"{node.name}.shape_out", np.array([-1 if d is None else d for d in known] + [n], dtype=np.int64)
        )
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
        raise Unsupported(
            "its weight is computed in the graph; MXNet's importer reads the number of filters from a constant weight"
        )
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
    if (
        any(a.get("pads", [0]))
        or any(a.get("output_padding", [0]))
        or "output_shape" in a
        or auto not in ("NOTSET", "VALID", "")
    ):
        raise Unsupported(
            "MXNet's translation pads the input instead of cropping the output: "
            "only pads, output_padding and output_shape of 0 are exact"
        )
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
    return [
        _like(
            node,
            outputs=_only_first_output(node, ctx, "statistics"),
            training_mode=None,
            spatial=None,
            is_test=None,
            consumed_inputs=None,
        )
    ]


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
        raise Unsupported(
            "MXNet's translation pads max pooling with edge values, exact only for pads smaller than the kernel"
        )
    return [
        _like(
            node,
            outputs=_only_first_output(node, ctx, "Indices"),
            kernel_shape=kernel,
            strides=strides,
            pads=pads,
            auto_pad=None,
            ceil_mode=None,
            storage_order=None,
            dilations=None,
        )
    ]


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
    pool = _like(
        node,
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        count_include_pad=None if not any(pads) else 1,
    )
    if not any(pads) or a.get("count_include_pad", 0):
        return [pool]
    spatial = (ctx.dims(node.input[0]) or [None] * (nd + 2))[2:]
    if None in spatial:
        raise Unsupported(
            "count_include_pad=0 with padding: MXNet counts the padded zeros, and rescaling the "
            "average needs the input's spatial size, which is not known"
        )
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
    return [
        pool,
        _node(
            "Mul",
            [pooled, ctx.const(f"{node.name}.count_scale", scale)],
            [node.output[0]],
            ctx.fresh(f"{node.name}/count_scale"),
        ),
    ]


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
            raise Unsupported(
                f"softmax over axes {axis}.. (opset {ctx.opset}) needs their sizes to become "
                "reshape + softmax on the last axis"
            )
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
    lo_name = ctx.const(
        f"{node.name}.min", np.array(-np.inf if lo is None else np.asarray(lo).reshape(-1)[0], dtype=dtype)
    )
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


_REDUCE = (
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
)


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
    return [
        _node(
            node.op_type,
            [node.input[0]],
            [node.output[0]],
            node.name,
            axes=axes or None,
            keepdims=int(a.get("keepdims", 1)),
        )
    ]


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
    mean, d, sq, var, veps, std, norm = (
        t("mean"),
        t("centred"),
        t("squared"),
        t("var"),
        t("var_eps"),
        t("std"),
        t("norm"),
    )
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
    return [
        _node("HardSigmoid", [node.input[0]], [t], ctx.fresh(f"{node.name}/hard_sigmoid"), alpha=1.0 / 6, beta=0.5),
        _node("Mul", [node.input[0], t], [node.output[0]], node.name),
    ]


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
        raise Unsupported(
            f"elements {begin}..{end} of an axis of {size} need a split into {parts} parts of "
            f"{part} (more than {MAX_SPLIT_PARTS}); MXNet's Slice translation is not exact"
        )
    names = [ctx.fresh(f"{out}_part{k}") for k in range(parts)]
    keep = names[begin // part : end // part]
    nodes = [_node("Split", [x], names, ctx.fresh(f"{base}/split"), axis=axis, split=[int(part)] * parts)]
    if len(keep) == 1:
        nodes.append(_node("Identity", keep, [out], ctx.fresh(f"{base}/take")))
    else:
        nodes.append(_node("Concat", keep, [out], ctx.fresh(f"{base}/concat"), axis=axis))
    return nodes


def _take_strided(
    ctx, x: str, dims: list[int | None], axis: int, begin: int, count: int, step: int, out: str, base: str
) -> list[onnx.NodeProto]:
    """`count` elements from `begin` every `step` along `axis`: a range of count · step elements reshaped to
    (count, step), the first of each step taken, reshaped back (the last element alone when the range would run
    past the end of the axis)."""
    size = dims[axis]
    if size is None:
        raise Unsupported(f"axis {axis} has a size only known at run time; slicing it in MXNet needs it static")
    if any(d is None for d in dims[axis + 1 :]):
        raise Unsupported("a strided slice needs static sizes after the sliced axis")
    if count == 1:
        return _take_range(ctx, x, axis, size, begin, begin + 1, out, base)
    whole = begin + count * step <= size
    n = count if whole else count - 1
    rng, grid, first, rows = (ctx.fresh(f"{out}_{tag}") for tag in ("range", "grid", "first", "rows"))
    nodes = _take_range(ctx, x, axis, size, begin, begin + n * step, rng, base)
    tail = [int(d) for d in dims[axis + 1 :] if d is not None]  # all static (checked above)
    nodes.append(
        _node(
            "Reshape",
            [rng, ctx.const(f"{base}.grid_shape", np.array([0] * axis + [n, step] + tail, dtype=np.int64))],
            [grid],
            ctx.fresh(f"{base}/grid"),
        )
    )
    nodes += _take_range(ctx, grid, axis + 1, step, 0, 1, first, f"{base}/first")
    target = out if whole else rows
    nodes.append(
        _node(
            "Reshape",
            [first, ctx.const(f"{base}.rows_shape", np.array([0] * axis + [n] + tail, dtype=np.int64))],
            [target],
            ctx.fresh(f"{base}/rows"),
        )
    )
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
        nodes.append(
            _node(
                "Unsqueeze",
                [node.input[0]],
                [x],
                ctx.fresh(f"{node.name}/unsqueeze"),
                axes=list(range(rank - len(ctx.dims(node.input[0])))),
            )
        )
    repeats = []
    for axis, (d, t) in enumerate(zip(dims, target)):
        if t == 1 or d == t:
            continue
        if d != 1:
            raise Unsupported(f"axis {axis} of size {'unknown' if d is None else d} cannot broadcast to {t}")
        repeats.append((axis, t))
    for k, (axis, t) in enumerate(repeats):
        out = node.output[0] if k == len(repeats) - 1 else ctx.fresh(f"{node.output[0]}_axis{axis}")
        nodes.append(
            _node(
                "Concat",
                [x] * t,
                [out],
                node.name if k == len(repeats) - 1 else ctx.fresh(f"{node.name}/axis{axis}"),
                axis=axis,
            )
        )
        x = out
    if not repeats:
        nodes.append(_node("Identity", [x], [node.output[0]], node.name))
    return nodes
