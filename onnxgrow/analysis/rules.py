"""Op rules: how each op moves, grows or constrains the axes of its tensors.

One rule per op family, looked up in `RULES` by op type; a new op is one new rule.
Roles follow DESIGN.md: producer, consumer, pass-through, coupling, mixer, boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from ..graph import nested_reads
from .layout import Atom, Cat, Layout, Prod, atoms, prod
from .state import State, WeightUse

RuleFn = Callable[[onnx.NodeProto, State], None]


@dataclass(frozen=True)
class Rule:
    """A rule for a family of ops: its role (for documentation and `inspect`) and what it does."""

    role: str
    apply: RuleFn
    subgraphs: bool = False  # the rule itself handles what the node's subgraphs read


RULES: dict[str, Rule] = {}


def rule(role: str, *ops: str, subgraphs: bool = False) -> Callable[[RuleFn], RuleFn]:
    """Register `fn` as the rule for `ops`."""

    def register(fn: RuleFn) -> RuleFn:
        for op in ops:
            RULES[op] = Rule(role, fn, subgraphs)
        return fn

    return register


# -- helpers --------------------------------------------------------------------------------
def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _inp(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _const_ints(st: State, node: onnx.NodeProto, attr_name: str, input_index: int) -> list[int] | None:
    """An int list given as attribute (old opsets) or constant input (new opsets)."""
    value = attr(node, attr_name)
    if value is not None:
        return [int(v) for v in value]
    name = _inp(node, input_index)
    if name and st.is_const(name):
        return [int(v) for v in np.asarray(st.value(name)).reshape(-1)]
    return None


def block_everything(node: onnx.NodeProto, st: State, why: str | None = None) -> None:
    """Boundary: inputs may not grow; outputs get new atoms of their own."""
    reason = why or f"{node.name} ({node.op_type}) has no growth rule"
    st.boundaries.setdefault(node.name, reason)
    for name in node.input:
        lay = st.layout(name)
        if lay:
            for l in lay:
                st.block(l, reason)
    for out in node.output:
        if out:
            st.fresh_layout(out, f"output of {node.name}")


def _acts(node: onnx.NodeProto, st: State) -> list[tuple[int, str, list[Layout]]]:
    return [(i, n, st.layout(n)) for i, n in enumerate(node.input) if n and st.layout(n) is not None]  # type: ignore[misc]


def _pass(node: onnx.NodeProto, st: State, i: int = 0) -> list[Layout] | None:
    lay = st.layout(_inp(node, i))
    if lay is None:
        block_everything(node, st, f"{node.name} ({node.op_type}): input shape unknown")
        return None
    st.set_layout(node.output[0], list(lay))
    for extra in node.output[1:]:
        if extra:
            st.fresh_layout(extra, f"output of {node.name}")
    return lay


# -- pass-through ------------------------------------------------------------------------------
ZERO_PRESERVING = {
    "Relu", "LeakyRelu", "Tanh", "Elu", "Selu", "Gelu", "Erf", "HardSwish", "Identity", "Dropout",
    "Cast", "Neg", "Abs", "Sign", "Sin", "Celu", "Mish", "Softsign", "ThresholdedRelu", "Shrink", "Round",
    "Floor", "Ceil", "Sqrt", "CastLike", "Clip", "Swish", "Asin", "Atan", "Sinh", "Tan", "Asinh", "Atanh", "Trilu",
}


@rule("pass-through", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
      "Softplus", "Softsign", "Gelu", "Erf", "Dropout", "Identity", "Cast", "CastLike", "Neg", "Abs", "Exp",
      "Sign", "Sin", "Cos", "Celu", "Mish", "ThresholdedRelu", "Shrink", "Round", "Floor", "Ceil", "Swish",
      "Clip", "Atan", "Sinh", "Cosh", "Tan", "Asinh", "IsNaN", "IsInf", "Not")
def _elementwise_unary(node: onnx.NodeProto, st: State) -> None:
    _pass(node, st)  # whether 0 stays 0 is tracked per tensor by `track_values`


@rule("boundary", "Log", "Reciprocal")
def _unsafe_unary(node: onnx.NodeProto, st: State) -> None:
    lay = _pass(node, st)
    if st.sign(node.input[0]) == "pos":
        return
    for l in lay or []:
        st.block(l, f"{node.name} ({node.op_type}) can turn new units into inf or NaN")


@rule("pass-through", "Sqrt", "Asin", "Acos", "Atanh", "Acosh")
def _partial_unary(node: onnx.NodeProto, st: State) -> None:
    """Ops defined on part of the real line: noise could leave it; 0 stays inside (but for Acosh)."""
    lay = _pass(node, st)
    sign = st.sign(node.input[0])
    if lay is None or (node.op_type == "Sqrt" and sign in ("pos", "nonneg")):
        return
    for l in lay:
        if node.op_type == "Acosh":
            st.block(l, f"{node.name} (Acosh) is not defined at 0 nor below: new units could be NaN")
        else:
            st.needs_zero(node.input[0], l, f"{node.name} ({node.op_type}) is not defined for every input: "
                                            "new units could be NaN unless they stay 0")


def _pow_exponent(node: onnx.NodeProto, st: State, layouts: list[Layout]) -> None:
    """Pow of an activation by a constant: fractional exponents need new units >= 0, negative ones > 0."""
    base, exp = node.input[0], node.input[1]
    if st.layout(base) is None or not st.is_const(exp) or not _broadcasts_onto_growable(st, node, exp):
        return
    e = np.asarray(st.value(exp), dtype=np.float64)
    sign = st.sign(base)
    if sign == "pos" or (np.all(e >= 0) and (sign == "nonneg" or np.all(np.mod(e, 1) == 0))):
        return
    for l in layouts:
        if np.all(e > 0):
            st.needs_zero(base, l, f"{node.name} (Pow) raises to a fractional power: new units could be NaN unless they stay 0")
        else:
            st.block(l, f"{node.name} (Pow) raises to a negative power: new units could be inf or NaN")


BINARY_FILL = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0, "Pow": 1.0, "Max": 0.0, "Min": 0.0,
               "Sum": 0.0, "Mean": 0.0, "PRelu": 0.25, "And": 1.0, "Or": 0.0, "Xor": 0.0, "Equal": 0.0,
               "Greater": 0.0, "Less": 0.0, "GreaterOrEqual": 0.0, "LessOrEqual": 0.0, "BitShift": 0.0,
               "Mod": 1.0, "Where": 0.0}


#: why an activation's axis of size 1 that an op broadcasts cannot grow
_BROADCAST = "{node} ({op}) broadcasts this axis of size 1: grown, it would stop being broadcast"


@rule("coupling", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Equal",
      "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "Where")
def _broadcast(node: onnx.NodeProto, st: State) -> None:
    """Elementwise with broadcasting: activations' axes join; constant per-unit vectors are padded."""
    out_shape = st.shape(node.output[0])
    shapes = [st.shape(n) if n else None for n in node.input]
    if out_shape is None or any(s is None for s, n in zip(shapes, node.input) if n):
        block_everything(node, st, f"{node.name} ({node.op_type}): shapes unknown")
        return
    rank = len(out_shape)
    result: list[Layout | None] = [None] * rank
    for i, name in enumerate(node.input):
        lay = st.layout(name)
        if lay is None:
            continue
        shape = shapes[i]
        for k in range(len(shape)):  # type: ignore[arg-type]
            j = rank - len(shape) + k  # type: ignore[arg-type]
            if shape[k] == 1 and out_shape[j] != 1:  # type: ignore[index]
                st.block(lay[k], _BROADCAST.format(node=node.name, op=node.op_type))
                continue
            result[j] = lay[k] if result[j] is None else st.unify(result[j], lay[k], node.name)  # type: ignore[arg-type]
    layouts = [r if r is not None else st.fresh(out_shape[j], f"broadcast in {node.name}") for j, r in enumerate(result)]
    fill = BINARY_FILL.get(node.op_type, 0.0)
    for i, name in enumerate(node.input):
        if not name or not st.is_const(name):
            continue
        shape = shapes[i]
        for k in range(len(shape)):  # type: ignore[arg-type]
            j = rank - len(shape) + k  # type: ignore[arg-type]
            if shape[k] != 1 or out_shape[j] == 1:  # type: ignore[index]
                if shape[k] == 1:  # type: ignore[index]
                    continue
                st.use(node.name, name, k, layouts[j], "param", fill)
    if node.op_type in ("Div", "Pow", "Mod") and len(node.input) > 1 and st.layout(node.input[1]) is not None \
            and not (node.op_type == "Div" and st.sign(node.input[1]) == "pos"):
        for l in layouts:
            st.block(l, f"{node.name} ({node.op_type}) divides by or raises to an activation; new units could be inf or NaN")
    st.set_layout(node.output[0], layouts)
    if node.op_type == "Pow":
        _pow_exponent(node, st, layouts)


@rule("pass-through", "BatchNormalization", "InstanceNormalization")
def _batchnorm(node: onnx.NodeProto, st: State) -> None:
    lay = _pass(node, st)
    if lay is None or len(lay) < 2:
        return
    fills = [1.0, 0.0, 0.0, 1.0] if node.op_type == "BatchNormalization" else [1.0, 0.0]
    if node.op_type == "InstanceNormalization":  # statistics over axes 2+: a mean, kept by whole copies
        for l in lay[2:]:
            st.constrain(l, "replicate", f"{node.name} (InstanceNormalization) normalises over this axis")
            _same_factor(st, l, f"{node.name} (InstanceNormalization) normalises over")
    for k, fill in enumerate(fills, start=1):
        name = _inp(node, k)
        if name and st.is_const(name):
            st.use(node.name, name, 0, lay[1], "param", fill)
        elif name:
            st.block(lay[1], f"{node.name}: {node.op_type} parameter {name} is not a constant")


# -- producers and consumers -------------------------------------------------------------------
@rule("producer", "Gemm")
def _gemm(node: onnx.NodeProto, st: State) -> None:
    a, b, c = _inp(node, 0), _inp(node, 1), _inp(node, 2)
    ta, tb = attr(node, "transA", 0), attr(node, "transB", 0)
    la, lb = st.layout(a), st.layout(b)
    out = node.output[0]
    if la is not None and st.is_const(b):
        m_axis, k_axis = (1, 0) if ta else (0, 1)
        w_k, w_n = (1, 0) if tb else (0, 1)
        st.use(node.name, b, w_k, la[k_axis], "consumer")
        n_atom = st.produce(node.name, b, w_n, st.inits[b].dims[w_n])
        rows = la[m_axis]
        _bias(node, st, c, [rows, n_atom])
        st.set_layout(out, [rows, n_atom])
    elif lb is not None and st.is_const(a):
        w_m, w_k = (1, 0) if ta else (0, 1)
        k_axis, n_axis = (1, 0) if tb else (0, 1)
        st.use(node.name, a, w_k, lb[k_axis], "consumer")
        m_atom = st.produce(node.name, a, w_m, st.inits[a].dims[w_m])
        _bias(node, st, c, [m_atom, lb[n_axis]])
        st.set_layout(out, [m_atom, lb[n_axis]])
    else:
        block_everything(node, st, f"{node.name} (Gemm) multiplies two activations")


def _bias(node: onnx.NodeProto, st: State, c: str, out_layouts: list[Layout]) -> None:
    if not c:
        return
    if not st.is_const(c):
        lc = st.layout(c)
        for l in lc or []:
            st.block(l, f"{node.name}: bias {c} is not a constant")
        return
    shape = list(st.inits[c].dims)
    for k in range(len(shape)):
        j = len(out_layouts) - len(shape) + k
        if shape[k] != 1:
            st.use(node.name, c, k, out_layouts[j], "param", 0.0)


@rule("producer", "MatMul")
def _matmul(node: onnx.NodeProto, st: State) -> None:
    a, b = node.input[0], node.input[1]
    la, lb = st.layout(a), st.layout(b)
    sa, sb = st.shape(a), st.shape(b)
    out = node.output[0]
    if sa is None or sb is None or len(sa) < 2 or len(sb) < 2:
        block_everything(node, st, f"{node.name} (MatMul): 1-D or unknown operand shapes")
        return
    if la is not None and st.is_const(b):
        ra = len(sa)
        st.use(node.name, b, len(sb) - 2, la[ra - 1], "consumer")
        n_atom = st.produce(node.name, b, len(sb) - 1, sb[-1])  # type: ignore[arg-type]
        batch = _batch(st, node, la[: ra - 2], sb[:-2], ra - 2)
        st.set_layout(out, batch + [la[ra - 2], n_atom])
    elif lb is not None and st.is_const(a):
        rb = len(sb)
        st.use(node.name, a, len(sa) - 1, lb[rb - 2], "consumer")
        m_atom = st.produce(node.name, a, len(sa) - 2, sa[-2])  # type: ignore[arg-type]
        batch = _batch(st, node, lb[: rb - 2], sa[:-2], rb - 2)
        st.set_layout(out, batch + [m_atom, lb[rb - 1]])
    elif la is not None and lb is not None:
        st.block(la[-1], f"{node.name} (MatMul) contracts this axis between two activations")
        st.block(lb[-2], f"{node.name} (MatMul) contracts this axis between two activations")
        out_shape = st.shape(out) or []
        batch: list[Layout] = []
        nb = len(out_shape) - 2
        for j in range(nb):
            ka, kb = j - (nb - (len(sa) - 2)), j - (nb - (len(sb) - 2))
            cands = []
            for k, shape, lay in ((ka, sa, la), (kb, sb, lb)):
                if k >= 0 and shape[k] != 1:
                    cands.append(lay[k])
                elif k >= 0 and out_shape[j] != 1:
                    st.block(lay[k], _BROADCAST.format(node=node.name, op="MatMul"))
            if not cands:
                batch.append(st.fresh(out_shape[j], f"broadcast in {node.name}"))
            else:
                l0 = cands[0]
                for other in cands[1:]:
                    l0 = st.unify(l0, other, node.name)
                batch.append(l0)
        st.set_layout(out, batch + [la[-2], lb[-1]])
    else:
        block_everything(node, st)


def _einsum_terms(node: onnx.NodeProto, ranks: list[int]) -> tuple[list[str], str] | None:
    """The subscripts of each operand and of the output, with `...` spelt out as digits; None when the equation
    repeats a letter in one operand (a diagonal) or does not match the operands' ranks."""
    eq = attr(node, "equation", b"")
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        return None
    width = max([r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t] or [0])
    ell = "".join(str(k) for k in range(width))
    spelt = []
    for t, r in zip(terms, ranks):
        k = r - len(t.replace("...", ""))
        t = t.replace("...", ell[width - k:] if k else "")
        if len(t) != r or len(set(t)) != len(t):
            return None
        spelt.append(t)
    if not arrow:  # implicit output: broadcast axes, then the letters that appear once, in alphabetical order
        counts = {c: "".join(spelt).count(c) for c in "".join(spelt)}
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and not c.isdigit()))
    else:
        rhs = rhs.replace("...", ell)
    if len(set(rhs)) != len(rhs) or any(c not in "".join(spelt) for c in rhs):
        return None
    return spelt, rhs


@rule("coupling", "Einsum")
def _einsum(node: onnx.NodeProto, st: State) -> None:
    """Einsum of activations (attention written as einsum): an axis kept in the output joins the axes of its
    letter in every operand (as broadcasting does); a letter summed over two operands is contracted between
    activations (blocked, as MatMul); a letter summed in one operand only is a sum (its new units must be 0)."""
    lays = [st.layout(n) for n in node.input]
    shapes = [st.shape(n) for n in node.input]
    out_shape = st.shape(node.output[0])
    if any(l is None for l in lays) or any(s is None for s in shapes) or out_shape is None:
        block_everything(node, st, f"{node.name} (Einsum) has a constant operand or an unknown shape")
        return
    parsed = _einsum_terms(node, [len(s) for s in shapes])  # type: ignore[arg-type]
    if parsed is None or len(parsed[1]) != len(out_shape):
        block_everything(node, st, f"{node.name} (Einsum): an equation onnxgrow cannot follow")
        return
    terms, rhs = parsed
    by_letter: dict[str, list[tuple[int, Layout, int | None]]] = {}
    for i, (t, lay, shape) in enumerate(zip(terms, lays, shapes)):
        for c, l, d in zip(t, lay, shape):  # type: ignore[arg-type]
            by_letter.setdefault(c, []).append((i, l, d))
    for c, uses in by_letter.items():
        if c in rhs:
            continue
        real = [u for u in uses if u[2] != 1]
        for _, l, d in uses:
            if d == 1 and real:
                st.block(l, _BROADCAST.format(node=node.name, op="Einsum"))
        for i, l, _ in real:
            if len(real) > 1:
                st.block(l, f"{node.name} (Einsum) contracts this axis between two activations")
            else:
                st.needs_zero(node.input[i], l, f"{node.name} (Einsum) sums over this axis")
    out: list[Layout] = []
    for c, d in zip(rhs, out_shape):
        kept = [l for _, l, s in by_letter[c] if s != 1 or d == 1]
        for _, l, s in by_letter[c]:
            if s == 1 and d != 1:
                st.block(l, _BROADCAST.format(node=node.name, op="Einsum"))
        if not kept:
            out.append(st.fresh(d, f"broadcast in {node.name}"))
            continue
        joined = kept[0]
        for other in kept[1:]:
            joined = st.unify(joined, other, node.name)
        out.append(joined)
    st.set_layout(node.output[0], out)


def _batch(st: State, node: onnx.NodeProto, act_batch: list[Layout], w_batch: list, out_rank: int) -> list[Layout]:
    """Batch axes of a MatMul with a constant operand: the activation's, when the weight has none."""
    if any(d != 1 for d in w_batch):
        for l in act_batch:
            st.block(l, f"{node.name} (MatMul) has a batched weight")
    return list(act_batch)


@rule("producer", "Conv", "ConvTranspose")
def _conv(node: onnx.NodeProto, st: State) -> None:
    x, w, b = node.input[0], node.input[1], _inp(node, 2)
    lx = st.layout(x)
    if lx is None or not st.is_const(w) or len(lx) < 3:
        block_everything(node, st, f"{node.name} ({node.op_type}): weight is not a constant initializer")
        return
    out = node.output[0]
    out_shape = st.shape(out)
    spatial = [st.fresh(out_shape[j] if out_shape else None, f"spatial axis of {node.name}") for j in range(2, len(lx))]
    for l in lx[2:]:
        st.block(l, f"{node.name} ({node.op_type}) slides its kernel over this axis")
    group = int(attr(node, "group", 1))
    wdims = list(st.inits[w].dims)
    transpose = node.op_type == "ConvTranspose"
    in_axis, out_axis = (0, 1) if transpose else (1, 0)
    if group == 1:
        st.use(node.name, w, in_axis, lx[1], "consumer")
        c_out = wdims[out_axis]
        oc = st.produce(node.name, w, out_axis, c_out)
    else:
        cpg_in = wdims[0] // group if transpose else wdims[1]
        cpg_out = wdims[1] if transpose else wdims[0] // group
        if cpg_in == cpg_out or (cpg_in == 1):
            mult = cpg_out // cpg_in if cpg_in == 1 else 1
            # new channels form whole new groups: input, output and `group` grow together
            st.whole_groups(lx[1], cpg_in, f"{node.name} ({node.op_type}) reads it in groups of {cpg_in} channels "
                                           "that growth would cut")
            st.attr_uses.append(_attr_use(node.name, "group", lx[1], cpg_in))
            if mult == 1:
                oc = lx[1]
                st.use(node.name, w, 0, lx[1], "param", None)
            else:
                oc = Prod((lx[1], st.fresh(mult, f"depth multiplier of {node.name}")))
                st.use(node.name, w, 0, oc, "param", None)
        else:
            oc = _grouped_conv(node, st, lx[1], group, cpg_in, cpg_out)
    if b:
        if st.is_const(b):
            st.use(node.name, b, 0, oc, "param", 0.0)
        else:
            st.block(oc, f"{node.name}: bias {b} is not a constant")
    st.set_layout(out, [lx[0], oc] + spatial)


def _grouped_conv(node: onnx.NodeProto, st: State, channels: Layout, group: int, cpg_in: int, cpg_out: int) -> Layout:
    """A grouped Conv/ConvTranspose whose groups have other input than output widths (AlexNet, ShuffleNet v1).

    The group count stays; units grow inside every group. The input channels are read as Prod(groups, per-group
    input), the output channels are Prod(groups, per-group output) with a new producer atom: the weight's
    per-group axis reads the per-group input (Conv axis 1) or makes the per-group output (ConvTranspose axis 1),
    its other axis follows the whole input (ConvTranspose axis 0) or output (Conv axis 0) layout.
    """
    w = node.input[1]
    transpose = node.op_type == "ConvTranspose"
    fixed = f"{node.name} ({node.op_type}) has {group} groups: their count is fixed, units grow inside each"
    view = st.grouped(channels, group, node.name, fixed)
    if view is None:  # its input cannot grow; its output still can (new units read the old inputs)
        st.block(channels, f"{node.name}: grouped {node.op_type} with {cpg_in} inputs and {cpg_out} outputs per "
                           f"group reads channels onnxgrow cannot divide into its {group} groups")
        per_in: Layout = st.fresh(cpg_in, f"the inputs of a group of {node.name}")
    else:
        per_in = view[1]
    per_out = st.fresh(cpg_out, "producer", fixed=False)
    st.info[per_out.id].producers.append(node.name)
    count = st.fresh(group, f"the groups of {node.name}")
    st.replicas.add(count.id)
    out = Prod((count, per_out))
    if transpose:
        st.use(node.name, w, 0, channels, "consumer")
        st.weight_uses.append(WeightUse(node.name, w, 1, per_out, "producer", None))
    else:
        st.use(node.name, w, 1, per_in, "consumer")
        st.weight_uses.append(WeightUse(node.name, w, 0, out, "producer", None))
    return out


def _attr_use(node: str, name: str, layout: Layout, divisor: int):
    from .state import AttrUse

    return AttrUse(node, name, layout, divisor)


@rule("producer", "Gather")
def _gather(node: onnx.NodeProto, st: State) -> None:
    data, idx = node.input[0], node.input[1]
    axis = int(attr(node, "axis", 0))
    li = st.layout(idx)
    if st.is_const(data) and li is not None:
        dims = list(st.inits[data].dims)
        axis %= len(dims)
        if len(dims) == 2 and axis == 0:
            d = st.produce(node.name, data, 1, dims[1])
            st.set_layout(node.output[0], list(li) + [d])
            return
    ld = st.layout(data)
    if ld is not None and _gather_positions(node, st, ld, axis % len(ld)):
        return
    if ld is not None:
        axis %= len(ld)
        st.block(ld[axis], f"{node.name} (Gather) picks positions along this axis")
        inner = list(li) if li is not None else (st.fresh_layout(idx, "indices") or []) if not st.is_const(idx) else \
            [st.fresh(d, f"indices of {node.name}") for d in st.inits[idx].dims]
        st.set_layout(node.output[0], ld[:axis] + inner + ld[axis + 1:])
        return
    block_everything(node, st)


def _gather_positions(node: onnx.NodeProto, st: State, ld: list[Layout], axis: int) -> bool:
    """A Gather whose constant indices are every position of the axis in order (torch's `as_strided` exported as
    Reshape(-1) then Gather of an arange shaped [1, C, 1, 1]): a Reshape of that axis into the indices' shape.
    The indices are rewritten as the arange of the grown axis."""
    from .state import PositionsUse

    idx, shape = node.input[1], st.shape(node.input[0])
    if not st.is_const(idx) or shape is None or shape[axis] is None:
        return False
    values = np.asarray(st.value(idx))
    n = int(shape[axis])  # type: ignore[arg-type]
    if values.dtype.kind not in "iu" or values.size != n or not np.array_equal(values.reshape(-1), np.arange(n)):
        return False
    mapped = _map_reshape(node, st, [ld[axis]], [n], list(values.shape), None)
    if isinstance(mapped, str):
        return False
    if not st.fixed(ld[axis]):
        st.positions_uses.append(PositionsUse(node.name, idx, list(mapped)))
    st.set_layout(node.output[0], ld[:axis] + list(mapped) + ld[axis + 1:])
    return True


# -- coupling: shape ops ----------------------------------------------------------------------
@rule("coupling", "Transpose")
def _transpose(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    perm = attr(node, "perm") or list(reversed(range(len(lay))))
    st.set_layout(node.output[0], [lay[p] for p in perm])


@rule("coupling", "Flatten")
def _flatten(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    axis = int(attr(node, "axis", 1)) % (len(lay) + 1) if lay else 0
    left = lay[:axis] or [st.fresh(1, f"{node.name} leading axis")]
    right = lay[axis:] or [st.fresh(1, f"{node.name} trailing axis")]
    st.set_layout(node.output[0], [prod(left), prod(right)])


@rule("coupling", "Squeeze", "Unsqueeze")
def _squeeze(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    out_shape = st.shape(node.output[0])
    axes = _const_ints(st, node, "axes", 1)
    if lay is None or out_shape is None:
        block_everything(node, st)
        return
    if node.op_type == "Squeeze":
        if axes is None:
            in_shape = st.shape(node.input[0]) or []
            axes = [i for i, d in enumerate(in_shape) if d == 1]
        axes = [a % len(lay) for a in axes]
        st.set_layout(node.output[0], [l for i, l in enumerate(lay) if i not in axes])
    else:
        if axes is None:
            block_everything(node, st)
            return
        rank = len(lay) + len(axes)
        axes = sorted(a % rank for a in axes)
        it = iter(lay)
        st.set_layout(node.output[0], [st.fresh(1, f"{node.name} new axis") if i in axes else next(it) for i in range(rank)])


@rule("coupling", "Reshape")
def _reshape(node: onnx.NodeProto, st: State) -> None:
    """Map input axes to output axes through their row-major factors: merges make products, splits split atoms.

    Splitting hidden (one atom) into heads × head size makes two atoms that grow on their own: attention then
    blocks the head size (contracted between activations) and leaves the head count free.
    """
    lay = st.layout(node.input[0])
    in_shape = st.shape(node.input[0])
    out_shape = st.shape(node.output[0])
    if lay is None or in_shape is None or out_shape is None:
        block_everything(node, st, f"{node.name} (Reshape): shapes unknown")
        return
    target = st.value(node.input[1]).reshape(-1).tolist() if st.is_const(node.input[1]) else None
    out = _map_reshape(node, st, lay, list(in_shape), list(out_shape), target)
    if isinstance(out, str):
        for l in lay:
            st.block(l, f"{node.name} (Reshape) {out}")
        st.set_layout(node.output[0], [st.fresh(d, f"output of {node.name}") for d in out_shape])
        return
    if target is not None:
        from .state import ValueUse

        for k, v in enumerate(target):
            if v > 0:
                st.value_uses.append(ValueUse(node.name, node.input[1], k, out[k], 1))
    else:
        _computed_target(node, st, out)
    st.set_layout(node.output[0], out)


def _map_reshape(node: onnx.NodeProto, st: State, lay: list[Layout], in_shape: list[int | None],
                 out_shape: list[int | None], target: list[int] | None) -> list[Layout] | str:
    """Output layouts of a Reshape, or why they cannot be followed.

    Leading dynamic axes copied one to one (batch) map to themselves; then output axes of known size take
    input factors from the right and from the left (splitting an atom where an axis ends inside it); what
    is left (at most one output axis, the -1) is the product of the remaining factors.
    """
    from collections import deque

    out: list[Layout | None] = [None] * len(out_shape)
    i = j = 0
    while i < len(in_shape) and j < len(out_shape) and in_shape[i] is None and not isinstance(lay[i], Prod) and (
            (target is None and out_shape[j] is None) or (target is not None and target[j] == 0)):
        out[j] = lay[i]
        i, j = i + 1, j + 1
    factors: deque = deque()
    for l, d in zip(lay[i:], in_shape[i:]):
        parts = list(l.factors) if isinstance(l, Prod) else [l]
        sizes = [st.size(p) for p in parts]
        if len(parts) == 1 and sizes[0] is None:
            sizes = [d]
        factors.extend([p, n] for p, n in zip(parts, sizes))

    def take(right: bool, n: int) -> list[Layout] | None:
        got: list[Layout] = []
        while n > 1:
            if not factors:
                return None
            f, s = factors[-1] if right else factors[0]
            if s is None:
                return None
            if s == 1:
                st.block(f, f"{node.name} (Reshape) drops this axis of size 1")
                factors.pop() if right else factors.popleft()
            elif n % s == 0:
                got.append(f)
                factors.pop() if right else factors.popleft()
                n //= s
                # a growable group of one unit next in line belongs with it (one key/value head, repeated)
                while n == 1 and factors and (factors[-1] if right else factors[0])[1] == 1 and any(
                        st.info[st.find(a)].producers for a in atoms((factors[-1] if right else factors[0])[0])):
                    got.append((factors.pop() if right else factors.popleft())[0])
            elif s % n == 0 and isinstance(f, Atom):
                parts = st.split(f, [s // n, n] if right else [n, s // n], f"split by {node.name}")
                if parts is None:
                    return None
                if right:
                    factors[-1] = [parts[0], s // n]
                    got.append(parts[1])
                else:
                    factors[0] = [parts[1], s // n]
                    got.append(parts[0])
                n = 1
            elif s % n == 0 and isinstance(f, Cat) and not st.fixed(f):
                # a concatenation of equal parts split at their boundaries (ShuffleNetV2's shuffle of its two
                # branches): the parts grow alike, and Cat(X, X) is the product of a fixed count and X
                view = st.grouped(f, s // n if right else n, node.name, None)
                if view is None:
                    return None
                count, block = view
                if right:
                    factors[-1] = [count, s // n]
                    got.append(block)
                else:
                    factors[0] = [block, s // n]
                    got.append(count)
                n = 1
            elif not regroup_fixed(right, n):
                return None
        return got[::-1] if right else got

    def regroup_fixed(right: bool, n: int) -> bool:
        """Positions that no growth moves (spatial axes rolled by Slice+Concat, windows) are regrouped at will:
        the end factor, merged with its fixed neighbours until n divides it, becomes fixed atoms (rest, n)."""
        merged = 1
        taken: list[list] = []
        while factors and st.fixed((factors[-1] if right else factors[0])[0]):
            s = (factors[-1] if right else factors[0])[1]
            if s is None:
                break
            taken.append(factors.pop() if right else factors.popleft())
            merged *= s
            if merged % n == 0:
                why = f"{node.name} (Reshape) regroups positions that do not grow"
                rest, part = [st.fresh(merged // n, why), merged // n], st.fresh(n, why)
                if right:
                    factors.append(rest)
                    factors.append([part, n])
                else:
                    factors.appendleft(rest)
                    factors.appendleft([part, n])
                return True
        for item in reversed(taken):  # no luck: put them back as they were
            factors.append(item) if right else factors.appendleft(item)
        return False

    def place(k: int, right: bool) -> bool:
        n = out_shape[k]
        end = (factors[-1] if right else factors[0]) if factors else None
        if n == 1:
            if end is not None and end[1] == 1:
                out[k] = (factors.pop() if right else factors.popleft())[0]
            else:
                out[k] = st.fresh(1, f"{node.name} unit axis")
            return True
        got = take(right, int(n))  # type: ignore[arg-type]
        if got is None:
            return False
        out[k] = prod(got)
        return True

    r = len(out_shape) - 1
    while r >= j and out_shape[r] is not None:
        if not place(r, True):
            return "splits or merges this axis in a way onnxgrow cannot follow"
        r -= 1
    while j <= r and out_shape[j] is not None:
        if not place(j, False):
            return "splits or merges this axis in a way onnxgrow cannot follow"
        j += 1
    if j == r:
        if not factors:
            return "has an output axis onnxgrow cannot map"
        out[j] = prod([f for f, _ in factors])
        factors.clear()
    elif j < r:
        return "has dynamic dimensions it cannot map"
    for f, s in factors:
        if s != 1:
            return "maps this axis to nothing onnxgrow can follow"
        st.block(f, f"{node.name} (Reshape) drops this axis of size 1")
    return out  # type: ignore[return-value]


def _computed_target(node: onnx.NodeProto, st: State, out: list[Layout]) -> None:
    """A Reshape target computed in the graph: each size of a growing axis must follow the growth.

    It does when it is read from the tensor's own shape at run time (Shape → Gather …), or when it is a
    constant piece of a Concat (then that constant is rewritten like a constant target).
    """
    from .state import ValueUse

    elements: list[tuple | None] = []
    src = st.node_of.get(node.input[1])
    pieces = list(src.input) if src is not None and src.op_type == "Concat" and int(attr(src, "axis", 0)) == 0 \
        else [node.input[1]]
    for p, piece in enumerate(pieces):
        if src is not None and len(pieces) > 1 and st.is_const(piece):
            values = st.value(piece).reshape(-1).tolist()
            elements += [("const", piece, idx, p, v) for idx, v in enumerate(values)]
            continue
        static = _static(st, piece)
        n = (st.shape(piece) or [None])[0] if static is None else static[0].size
        scaled = _scaled(st, piece) if static is None else None
        if scaled is not None:
            elements.append(scaled)
        elif static is not None:
            elements += [("read", d) for d in static[1].reshape(-1)]
        elif n is not None:
            elements += [None] * n
        else:
            elements = []
            break
    for k, l in enumerate(out):
        roots = {st.find(a) for a in atoms(l)}
        if not any(st.info[r].producers for r in roots):
            continue
        e = elements[k] if len(elements) == len(out) else None
        if e is not None and e[0] == "scaled":
            continue  # recorded below, whichever side grows
        if e is not None and e[0] == "const" and e[4] > 0:
            st.value_uses.append(ValueUse(src.name, e[1], e[2], l, e[3]))  # type: ignore[union-attr]
        elif e is not None and e[0] == "read" and {a if a == "?" else st.find(a) for a in e[1]} == roots:
            pass  # read at run time from the grown tensor's own shape
        elif not (e is not None and e[0] == "const" and e[4] == -1):
            st.block(l, f"{node.name} (Reshape) computes its target shape in a way onnxgrow cannot follow")
    # a size read at run time from a growing axis must land on an axis that grows with it
    for k, e in enumerate(elements if len(elements) == len(out) else []):
        if e is not None and e[0] == "scaled":
            _scaled_use(node, st, e, out[k])
            continue
        if e is None or e[0] != "read":
            continue
        read = {st.find(a) for a in e[1] if a != "?"}
        if read and read != {st.find(a) for a in atoms(out[k])}:
            for r in read:
                st.block(Atom(r), f"{node.name} (Reshape) reads this size at run time for an axis that does not grow with it")


def _scaled(st: State, name: str, depth: int = 0) -> tuple | None:
    """("scaled", read, op, const, node) when `name` is one size read from a shape, × or ÷ a constant.

    torch's MultiheadAttention computes batch × heads and hidden ÷ heads this way at run time.
    """
    node = st.node_of.get(name)
    if node is None or depth > 6:
        return None
    if node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return _scaled(st, node.input[0], depth + 1)
    if node.op_type not in ("Mul", "Div") or len(node.input) != 2 or not st.is_const(node.input[1]) \
            or st.value(node.input[1]).size != 1:
        return None
    read = _read_axis(st, node.input[0])
    return None if read is None else ("scaled", read, node.op_type, node.input[1], node.name)


def _read_axis(st: State, name: str, depth: int = 0) -> Layout | None:
    """The layout of the one axis whose size `name` holds (Shape → Gather, through Cast/Squeeze)."""
    node = st.node_of.get(name)
    if node is None or depth > 6:
        return None
    if node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return _read_axis(st, node.input[0], depth + 1)
    if node.op_type == "Gather" and st.is_const(node.input[1]) and st.value(node.input[1]).size == 1:
        src = st.node_of.get(node.input[0])
        if src is None or src.op_type != "Shape" or int(attr(src, "start", 0)) != 0:
            return None
        lay = st.layout(src.input[0])
        k = int(st.value(node.input[1]).reshape(-1)[0])
        return None if lay is None or not -len(lay) <= k < len(lay) else lay[k]
    return None


def _factors_of(layout: Layout) -> list[Layout]:
    return list(layout.factors) if isinstance(layout, Prod) else [layout]


def _scaled_use(node: onnx.NodeProto, st: State, e: tuple, out: Layout) -> None:
    """Record the constant of read × c (or read ÷ c) so that it follows the growth of the axes it relates."""
    from .state import ValueUse

    _, read, op, const, where = e
    c = int(st.value(const).reshape(-1)[0])
    big, small = (out, read) if op == "Mul" else (read, out)
    rest = list(_factors_of(big))
    for f in _factors_of(small):
        if f in rest:
            rest.remove(f)
        else:
            rest = []
            break
    if rest and len(rest) < len(_factors_of(big)) and st.size(prod(rest)) == c:
        st.value_uses.append(ValueUse(where, const, 0, prod(rest), 1))
    elif st.size(big) is not None and st.size(small) and st.size(big) == c * st.size(small):
        st.value_uses.append(ValueUse(where, const, 0, big, 1, small))
    else:
        for l in (read, out):
            st.block(l, f"{node.name} (Reshape) computes its target shape in a way onnxgrow cannot follow")


@rule("coupling", "Tile", "Expand")
def _repeat(node: onnx.NodeProto, st: State) -> None:
    """Repeating a size-1 axis (grouped-query attention repeats each key/value head for its query group):
    the repeated axis is a fixed new axis, every other axis passes. Anything else blocks what it touches."""
    from .state import ValueUse

    lay, shape = st.layout(node.input[0]), st.shape(node.input[0])
    spec = node.input[1] if len(node.input) > 1 else ""
    if lay is None or shape is None or not spec or not st.is_const(spec):
        block_everything(node, st, f"{node.name} ({node.op_type}): its input shape or its {'repeats' if node.op_type == 'Tile' else 'shape'} is not known")
        return
    values = [int(v) for v in st.value(spec).reshape(-1)]
    lead = len(values) - len(lay) if node.op_type == "Expand" else 0
    if lead < 0 or (node.op_type == "Tile" and len(values) != len(lay)):
        block_everything(node, st, f"{node.name} ({node.op_type}) changes the rank in a way onnxgrow cannot follow")
        return
    out: list[Layout] = [st.fresh(v, f"new axis of {node.name}") for v in values[:lead]]
    for k, (l, d) in enumerate(zip(lay, shape)):
        v = values[lead + k]
        repeated = v > 1 if node.op_type == "Tile" else (v > 1 and d == 1)
        if not repeated:
            out.append(l)
            if node.op_type == "Expand" and v > 1:  # the size written out: it follows the axis
                st.value_uses.append(ValueUse(node.name, spec, lead + k, l, 1))
        elif d == 1:
            out.append(st.fresh(v * (d if node.op_type == "Tile" else 1), f"repeated by {node.name}"))
        else:
            st.block(l, f"{node.name} ({node.op_type}) repeats this axis")
            out.append(st.fresh(None if d is None else d * v, f"repeated by {node.name}"))
    st.set_layout(node.output[0], out)


@rule("coupling", "Concat")
def _concat(node: onnx.NodeProto, st: State) -> None:
    out_shape = st.shape(node.output[0])
    ins = [n for n in node.input if n]
    lays = [st.layout(n) for n in ins]
    if out_shape is None or any(l is None and not st.is_const(n) for l, n in zip(lays, ins)):
        block_everything(node, st)
        return
    rank = len(out_shape)
    axis = int(attr(node, "axis", 0)) % rank
    if all(l is None for l in lays):
        block_everything(node, st, f"{node.name} (Concat) concatenates constants only")
        return
    result: list[Layout] = []
    for k in range(rank):
        parts = [l[k] if l is not None else st.fresh(st.inits[n].dims[k], f"constant {n} concatenated by {node.name}")
                 for n, l in zip(ins, lays)]
        if k == axis:
            result.append(Cat(tuple(parts)))
            continue
        acts = [p for p, l in zip(parts, lays) if l is not None]
        l0 = acts[0]
        for other in acts[1:]:
            l0 = st.unify(l0, other, node.name)
        result.append(l0)
    # a constant concatenated along another axis (a class token expanded to the batch) is a per-unit
    # parameter on the axes it shares with the activations: new units read 0 from it
    for n, l in zip(ins, lays):
        if l is None:
            for k in range(rank):
                if k != axis:
                    st.use(node.name, n, k, result[k], "param", 0.0)
    st.set_layout(node.output[0], result)


@rule("coupling", "Split")
def _split(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    axis = int(attr(node, "axis", 0)) % len(lay)
    split = _const_ints(st, node, "split", 1)
    outs = [o for o in node.output]
    sizes = [st.shape(o)[axis] if st.shape(o) else None for o in outs]  # type: ignore[index]
    part = lay[axis]
    if isinstance(part, Cat) and len(part.parts) == len(outs) and [st.size(p) for p in part.parts] == sizes:
        computed = split is None and bool(_inp(node, 1))
        if computed:
            st.block(part, f"{node.name} (Split) computes its sizes")
        _split_outputs(node, st, lay, axis, split, list(part.parts))
        if split is None and not computed:
            # equal parts (no sizes given, or num_outputs): they must stay equal, so they grow together
            for p in part.parts[1:]:
                st.unify(part.parts[0], p, node.name)
        return
    if _split_equal_chunks(node, st, lay, axis, split, sizes):
        return
    equal = len(sizes) > 1 and None not in sizes and len(set(sizes)) == 1 and isinstance(part, Prod)
    st.block(part, f"{node.name} (Split) " + (_CHUNK_ACROSS.format(k=len(sizes)) if equal else "cuts this axis"))
    for o, s in zip(outs, sizes):
        st.set_layout(o, lay[:axis] + [st.fresh(s, f"the part of the axis {node.name} cuts out")] + lay[axis + 1:])


def _split_equal_chunks(node: onnx.NodeProto, st: State, lay: list[Layout], axis: int, split: list[int] | None,
                        sizes: list[int | None]) -> bool:
    """Equal chunks of one group (GPT-2's packed q|k|v projection): the axis is chunk × unit, each output the
    unit factor. The chunk count is fixed; a unit grows inside every chunk, and the split sizes follow."""
    k, n = len(sizes), st.size(lay[axis])
    if k < 2 or None in sizes or len(set(sizes)) != 1 or n != k * sizes[0] or (split is None and _inp(node, 1)):
        return False
    view = st.grouped(lay[axis], k, node.name, f"{node.name} (Split) picks chunks along this axis")
    if view is None:
        return False
    _split_outputs(node, st, lay, axis, split, [view[1]] * k)
    return True


def _split_outputs(node: onnx.NodeProto, st: State, lay: list[Layout], axis: int, split: list[int] | None,
                   parts: list[Layout]) -> None:
    """Output k of a Split has layout `parts[k]` on the split axis; given sizes (attribute or input) follow it."""
    from .state import AttrUse, ValueUse

    for k, (o, p) in enumerate(zip(node.output, parts)):
        st.set_layout(o, lay[:axis] + [p] + lay[axis + 1:])
        if attr(node, "split") is not None:
            st.attr_uses.append(AttrUse(node.name, "split", p, 1, k))
        elif split is not None:
            st.value_uses.append(ValueUse(node.name, node.input[1], k, p, 1))


@rule("coupling", "Slice")
def _slice(node: onnx.NodeProto, st: State) -> None:
    if _slice_table(node, st):
        return
    lay = st.layout(node.input[0])
    out_shape = st.shape(node.output[0])
    in_shape = st.shape(node.input[0])
    if lay is None or out_shape is None or in_shape is None:
        block_everything(node, st)
        return
    result = list(lay)
    bounds = _slice_bounds(node, st, len(lay))
    for k, (a, b) in enumerate(zip(in_shape, out_shape)):
        if a != b and a is not None and b and bounds is not None and k in bounds:
            chunk = _slice_chunk(node, st, lay[k], a, b, *bounds[k])
            if isinstance(chunk, str):
                st.block(lay[k], f"{node.name} (Slice) {chunk}")
                result[k] = st.fresh(b, f"the part of the axis {node.name} cuts out")
                continue
            if chunk is not None:
                result[k] = chunk
                continue
        if a != b or a is None:
            st.block(lay[k], f"{node.name} (Slice) cuts this axis")
            result[k] = st.fresh(b, f"the part of the axis {node.name} cuts out")
        elif bounds is None:
            st.block(lay[k], f"{node.name} (Slice) computes its starts, ends or steps")
        elif k in bounds:
            _slice_whole_axis(node, st, lay[k], a, *bounds[k])
    st.set_layout(node.output[0], result)


def _slice_table(node: onnx.NodeProto, st: State) -> bool:
    """Rows of a 2-D weight table sliced by position (a positional embedding cut to the sequence length):
    the table's columns are new units, like an embedding Gather's."""
    data = node.input[0]
    if not st.is_const(data) or len(st.inits[data].dims) != 2:
        return False
    axes = _const_ints(st, node, "axes", 3)
    if axes is None or any(int(a) % 2 != 0 for a in axes):
        return False
    out_shape = st.shape(node.output[0])
    rows = st.fresh(out_shape[0] if out_shape else None, f"rows of {node.name}")
    st.set_layout(node.output[0], [rows, st.produce(node.name, data, 1, int(st.inits[data].dims[1]))])
    return True


#: a Slice bound at least this big means "to the end" whatever the axis grows to
_OPEN_END = 2**30


def _slice_bounds(node: onnx.NodeProto, st: State, rank: int) -> dict[int, tuple[int, int, int, int]] | None:
    """axis -> (start, end, step, position in the lists) of a Slice with constant bounds; None if computed."""
    def ints(name: str, index: int, default):
        value = attr(node, name)
        if value is not None:
            return [int(v) for v in value]
        src = _inp(node, index)
        if not src:
            return default
        return [int(v) for v in np.asarray(st.value(src)).reshape(-1)] if st.is_const(src) else None

    starts, ends = ints("starts", 1, None), ints("ends", 2, None)
    if starts is None or ends is None:
        return None
    axes = ints("axes", 3, list(range(len(starts))))
    steps = ints("steps", 4, [1] * len(starts))
    if axes is None or steps is None:
        return None
    return {int(ax) % rank: (starts[i], ends[i], steps[i], i) for i, ax in enumerate(axes)}


#: why an axis cut into equal chunks cannot grow (a chunk boundary falls inside a unit's blocks)
_CHUNK_ACROSS = ("cuts this axis into {k} chunks whose boundaries fall inside the blocks of a unit (channels "
                 "shuffled by earlier layers): growing it would move old channels to another chunk")


def _slice_chunk(node: onnx.NodeProto, st: State, layout: Layout, size_: int, n: int, start: int, end: int, step: int,
                 pos: int) -> Layout | str | None:
    """A Slice that keeps chunk i of k equal chunks of an axis (torch's `chunk` in the TorchScript export): the
    axis is read as Prod(k chunks, unit) as a Split into equal parts reads it; its bounds follow the unit.
    None when it is no such chunk; why, when it is one that cannot follow growth."""
    from .state import AttrUse, ValueUse

    lo = start + size_ if start < 0 else start
    hi = min(end + size_ if end < 0 else end, size_)
    if step != 1 or size_ % n or lo % n or hi - lo != n or not 0 <= lo < size_:
        return None
    k, i = size_ // n, lo // n
    view = st.grouped(layout, k, node.name, f"{node.name} (Slice) picks chunk {i + 1} of {k} along this axis")
    if view is None:
        return _CHUNK_ACROSS.format(k=k)
    unit = view[1]
    # each bound as a multiple of the unit: start i (or i - k from the end), end i + 1 (or open)
    for value, which, index, mult in ((start, "starts", 1, i - k if start < 0 else i),
                                      (end, "ends", 2, i + 1 - k if end < 0 else i + 1)):
        if value == 0 or (which == "ends" and value >= _OPEN_END) or (which == "ends" and end < 0 and mult == 0):
            continue
        if attr(node, which) is not None:
            st.attr_uses.append(AttrUse(node.name, which, unit, 1, pos, mult))
        else:
            st.value_uses.append(ValueUse(node.name, node.input[index], pos, unit, index, multiple=mult))
    return unit


def _slice_whole_axis(node: onnx.NodeProto, st: State, layout: Layout, size_: int, start: int, end: int, step: int,
                      pos: int) -> None:
    """A Slice that keeps every position of an axis: fine when it keeps them after growth too.

    `ends` equal to the old size is rewritten to the new size; a reversed or shifted axis blocks.
    """
    from .state import AttrUse, ValueUse

    if step != 1 or not (start == 0 or start <= -_OPEN_END):
        st.block(layout, f"{node.name} (Slice) starts this axis at an offset, reverses it or steps over it")
        return
    if end >= _OPEN_END:
        return
    if end < size_:  # a negative end that happens to reach the end of the old axis
        st.block(layout, f"{node.name} (Slice) ends this axis at a fixed distance from its end")
    elif attr(node, "ends") is not None:
        st.attr_uses.append(AttrUse(node.name, "ends", layout, 1, pos))
    else:
        st.value_uses.append(ValueUse(node.name, node.input[2], pos, layout, 2))


# -- pooling, padding, resizing ------------------------------------------------------------------
@rule("pass-through", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
      "GlobalLpPool", "Resize", "Upsample", "MaxRoiPool", "DepthToSpace")
def _spatial(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    out_shape = st.shape(node.output[0])
    if lay is None or len(lay) < 2 or node.op_type == "DepthToSpace":
        block_everything(node, st)
        return
    if node.op_type in ("Resize", "Upsample"):
        why = _resize_channels(node, st, lay)
        if why:
            block_everything(node, st, f"{node.name} ({node.op_type}) {why}")
            return
    if node.op_type in ("MaxPool", "AveragePool", "LpPool"):
        spatial = [_window(node, st, lay, j, out_shape) for j in range(2, len(lay))]
    else:
        global_kind = {"GlobalAveragePool": "replicate", "GlobalMaxPool": "replicate"}.get(node.op_type)
        for l in lay[2:]:
            if global_kind:
                st.constrain(l, global_kind, f"{node.name} ({node.op_type}) pools over this axis")
            elif node.op_type == "GlobalLpPool":
                st.needs_zero(node.input[0], l, f"{node.name} ({node.op_type}) pools over this axis")
            else:
                st.block(l, f"{node.name} ({node.op_type}) resamples this axis")
        spatial = [st.fresh(out_shape[j] if out_shape else None, f"spatial axis of {node.name}") for j in range(2, len(lay))]
    st.set_layout(node.output[0], [lay[0], lay[1]] + spatial)
    for extra in node.output[1:]:
        if extra:
            st.fresh_layout(extra, f"indices of {node.name}")
            st.block(lay[1], f"{node.name} returns indices")


def _resize_channels(node: onnx.NodeProto, st: State, lay: list[Layout]) -> str | None:
    """Why a Resize/Upsample may not pass the channel axis (None: it keeps it; constant `sizes` are rewritten)."""
    from .state import ValueUse

    rank = len(lay)
    given_axes = attr(node, "axes")
    axes = [int(a) % rank for a in given_axes] if given_axes is not None else list(range(rank))
    if 1 not in axes:
        return None
    pos = axes.index(1)
    scales = attr(node, "scales")
    if scales is None:
        name = _inp(node, 2 if node.op_type == "Resize" and st.opset >= 11 else 1)
        if name and not st.is_const(name):
            return "computes its scales"
        scales = st.value(name).reshape(-1).tolist() if name else []
    if len(scales):
        return None if len(scales) > pos and float(scales[pos]) == 1.0 else "resizes the channel axis"
    sizes = _inp(node, 3) if node.op_type == "Resize" else ""
    if not sizes or not st.is_const(sizes):
        return "computes its output sizes"
    values = st.value(sizes).reshape(-1)
    if len(values) <= pos or int(values[pos]) != st.size(lay[1]):
        return "resizes the channel axis"
    if attr(node, "keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
        return "keeps an aspect ratio that counts the channel axis"
    st.value_uses.append(ValueUse(node.name, sizes, pos, lay[1], 3))
    return None


ZERO_PAD = "zero padding of "


def _window(node: onnx.NodeProto, st: State, lay: list[Layout], j: int, out_shape) -> Layout:
    """Spatial axis `j` of a windowed pool: kept when the window maps positions 1:1, else blocked.

    A stride-1 window of size k over an axis padded by k-1 zeros (an explicit zero Pad, or the pool's own
    pads when they count as zeros) keeps one output per unit: old units stay exact when new ones are 0
    (they take the place of padding zeros). This is how torch exports LocalResponseNorm.
    """
    d = j - 2
    rank = len(lay) - 2
    k = list(attr(node, "kernel_shape", [1] * rank))[d]
    stride = list(attr(node, "strides", None) or [1] * rank)[d]
    dil = list(attr(node, "dilations", None) or [1] * rank)[d]
    pads = list(attr(node, "pads", None) or [0] * 2 * rank)
    lo, hi = pads[d], pads[d + rank]
    auto = attr(node, "auto_pad", b"NOTSET")
    l = lay[j]
    if (auto in (b"NOTSET", "NOTSET", b"VALID", "VALID") and k == 1 and stride == 1 and lo == 0 and hi == 0):
        return l
    zero_pads = node.op_type == "LpPool" or (node.op_type == "AveragePool" and attr(node, "count_include_pad", 0))
    parts = list(l.parts) if isinstance(l, Cat) else [l]

    def is_pad(p: Layout) -> bool:
        return isinstance(p, Atom) and st.info[st.find(p.id)].origin.startswith(ZERO_PAD)

    pre = post = 0
    while parts and is_pad(parts[0]):
        pre += st.size(parts.pop(0)) or 0
    while parts and is_pad(parts[-1]):
        post += st.size(parts.pop()) or 0
    if (auto in (b"NOTSET", "NOTSET") and stride == 1 and dil == 1 and len(parts) == 1 and isinstance(parts[0], Atom)
            and (zero_pads or lo == hi == 0) and pre + lo + post + hi == k - 1):
        st.needs_zero(node.input[0], parts[0], f"{node.name} ({node.op_type}) sums a sliding window across this axis")
        return parts[0]
    st.block(l, f"{node.name} ({node.op_type}) pools a window over this axis")
    return st.fresh(out_shape[j] if out_shape else None, f"spatial axis of {node.name}")


def _pad_value(st: State, node: onnx.NodeProto) -> float | None:
    if st.opset < 11:
        return float(attr(node, "value", 0.0))
    name = _inp(node, 2)
    if not name:
        return 0.0
    return float(np.asarray(st.value(name)).reshape(-1)[0]) if st.is_const(name) else None


@rule("pass-through", "Pad")
def _pad(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    pads = _const_ints(st, node, "pads", 1)
    out_shape = st.shape(node.output[0])
    if lay is None or pads is None or out_shape is None:
        block_everything(node, st)
        return
    axes = _const_ints(st, node, "axes", 3) if len(node.input) > 3 and node.input[3] else list(range(len(lay)))
    n = len(axes)  # type: ignore[arg-type]
    result = list(lay)
    mode = attr(node, "mode", b"constant")
    zero = mode in (b"constant", "constant") and _pad_value(st, node) == 0.0
    for idx, ax in enumerate(axes):  # type: ignore[arg-type]
        ax %= len(lay)
        lo, hi = pads[idx], pads[idx + n]
        if not (lo or hi):
            continue
        if zero and lo >= 0 and hi >= 0:
            # zeros before and after: the axis's units keep their order between fixed padding blocks
            parts = [st.fresh(lo, ZERO_PAD + node.name)] if lo else []
            parts.append(lay[ax])
            parts += [st.fresh(hi, ZERO_PAD + node.name)] if hi else []
            result[ax] = Cat(tuple(parts))
            continue
        st.block(lay[ax], f"{node.name} (Pad) pads this axis")
        result[ax] = st.fresh(out_shape[ax], f"padded by {node.name}")
    st.set_layout(node.output[0], result)


@rule("boundary", "Shape", "Size")
def _shape(node: onnx.NodeProto, st: State) -> None:
    st.fresh_layout(node.output[0], f"output of {node.name}")


def _static(st: State, name: str, depth: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """The value of a small shape computation that growth cannot change, with the atoms each element reads.

    Follows Shape → Gather/Squeeze/Unsqueeze/Cast → Equal/Not from constants; None when unknown.
    """
    if st.is_const(name):
        v = np.asarray(st.value(name))
        return v, np.full(v.shape, frozenset(), dtype=object)
    node = st.node_of.get(name)
    if node is None or depth > 8:
        return None
    op = node.op_type
    if op == "Shape":
        shape, lay = st.shape(node.input[0]), st.layout(node.input[0])
        if shape is None or lay is None or len(shape) != len(lay):
            return None
        start, end = int(attr(node, "start", 0)), attr(node, "end", None)
        sl = slice(start, None if end is None else int(end))
        deps = np.empty(len(lay), dtype=object)
        # a dynamic size reads the unknown "?" (never static)
        deps[:] = [frozenset(st.find(a) for a in atoms(l)) | (frozenset("?") if d is None else frozenset())
                   for l, d in zip(lay, shape)]
        return np.array([-1 if d is None else d for d in shape], dtype=np.int64)[sl], deps[sl]
    ins = [_static(st, n, depth + 1) if n else None for n in node.input]
    if not ins or ins[0] is None:
        return None
    v, d = ins[0]
    if op == "Gather" and len(ins) > 1 and ins[1] is not None:
        idx = ins[1][0].astype(np.int64)
        axis = int(attr(node, "axis", 0))
        deps = np.empty(np.shape(idx), dtype=object)
        deps[...] = np.take(d, idx, axis=axis)
        return np.asarray(np.take(v, idx, axis=axis)), deps
    if op in ("Cast", "Identity"):
        return v, d
    if op == "Slice" and v.ndim == 1 and all(n == "" or st.is_const(n) for n in node.input[1:]):
        bounds = [st.value(n).reshape(-1).tolist() if n else None for n in node.input[1:5]] + [None] * 4
        starts, ends, axes, steps = bounds[:4]
        if len(starts) != 1 or (axes is not None and axes[0] not in (0, -1)):
            return None
        sl = slice(int(starts[0]), int(ends[0]), int(steps[0]) if steps else 1)
        return v[sl], d[sl]
    if op in ("Squeeze", "Unsqueeze"):
        out = st.shape(node.output[0])
        return (v.reshape(out), d.reshape(out)) if out is not None and None not in out else None
    if op == "Not":
        return np.logical_not(v), d
    if op == "Equal" and len(ins) == 2 and ins[1] is not None:
        w, e = ins[1]
        vb, wb = np.broadcast_arrays(v, w)
        db, eb = np.broadcast_arrays(d, e)
        deps = np.empty(vb.shape, dtype=object)
        deps[...] = [x | y for x, y in zip(db.reshape(-1), eb.reshape(-1))] if vb.size else []
        return vb == wb, deps
    return None


def _growable(st: State, deps: np.ndarray) -> bool:
    """Whether growth (or a dynamic size) can change a value computed from these atoms."""
    return any(a == "?" or st.info[st.find(a)].producers for s in deps.reshape(-1) for a in s)


@rule("coupling", "If", subgraphs=True)
def _if(node: onnx.NodeProto, st: State) -> None:
    """An If whose condition growth cannot change (torch's Squeeze-if-size-is-1): the chosen branch's rule.

    Only a branch made of Constants and one Identity/Squeeze/Unsqueeze of an outer tensor is followed;
    any other If blocks what its subgraphs read.
    """
    cond = _static(st, node.input[0])
    why = f"{node.name} (If) reads it inside a subgraph"
    if cond is not None and cond[0].size == 1 and not _growable(st, cond[1]):
        branch = attr(node, "then_branch" if bool(cond[0].reshape(-1)[0]) else "else_branch")
        if _follow_branch(node, st, branch):
            return
        why = f"{node.name} (If) reads it inside a branch onnxgrow cannot follow"
    for name in nested_reads(node):
        for l in st.layout(name) or []:
            st.block(l, why)
    block_everything(node, st, why)


def _follow_branch(node: onnx.NodeProto, st: State, branch: onnx.GraphProto) -> bool:
    consts = {}
    for n in branch.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    body = [n for n in branch.node if n.output[0] not in consts]
    if len(body) != 1 or len(branch.output) != 1 or len(node.output) != 1 or branch.output[0].name != body[0].output[0]:
        return False
    inner = body[0]
    src = _inp(inner, 0)
    lay, shape = st.layout(src), st.shape(src)
    if inner.op_type not in ("Identity", "Squeeze", "Unsqueeze") or lay is None or shape is None:
        return False
    if any(n not in consts for n in inner.input[1:] if n):
        return False
    axes = attr(inner, "axes")
    if axes is None and len(inner.input) > 1 and inner.input[1]:
        axes = consts[inner.input[1]].reshape(-1).tolist()
    if inner.op_type == "Identity":
        out_shape = list(shape)
    elif axes is None:
        return False
    elif inner.op_type == "Squeeze":
        drop = {int(a) % len(shape) for a in axes}
        if any(shape[a] != 1 for a in drop):
            return False
        out_shape = [d for i, d in enumerate(shape) if i not in drop]
    else:
        rank = len(shape) + len(axes)
        add = {int(a) % rank for a in axes}
        it = iter(shape)
        out_shape = [1 if i in add else next(it) for i in range(rank)]
    out = node.output[0]
    st.shapes[out] = out_shape
    copy = onnx.NodeProto()
    copy.CopyFrom(inner)
    copy.name = f"{node.name}/{inner.name or inner.op_type}"
    del copy.input[1:]
    del copy.output[:]
    copy.output.append(out)
    copy.ClearField("attribute")
    if inner.op_type != "Identity":
        copy.attribute.append(onnx.helper.make_attribute("axes", [int(a) for a in axes]))
    RULES[inner.op_type].apply(copy, st)
    track_values(copy, st)
    return True


# -- mixers ------------------------------------------------------------------------------------
@rule("mixer", "LRN")
def _lrn(node: onnx.NodeProto, st: State) -> None:
    lay = _pass(node, st)
    if lay is not None:
        # judged once every layout is final: a later grouped Conv or Reshape may split these channels
        st.deferred.append(lambda: _lrn_channels(node, st, lay[1]))


def _lrn_channels(node: onnx.NodeProto, st: State, channels: Layout) -> None:
    reason = f"{node.name} (LRN) sums squares across channels"
    channels = st.resolve(channels)
    # its window slides over the channels: only units appended at the end (behind zero padding) keep
    # every old window; units inserted inside a concatenation would change their neighbours' windows
    while isinstance(channels, Cat):
        parts = list(channels.parts)
        while len(parts) > 1 and isinstance(parts[-1], Atom) and st.info[st.find(parts[-1].id)].origin.startswith(ZERO_PAD):
            parts.pop()
        for p in parts[:-1]:
            st.block(p, f"{reason} with a sliding window: new units inside a concatenation would change it")
        channels = parts[-1]
    if isinstance(channels, Prod):
        st.block(channels, f"{reason} with a sliding window: new units would interleave with old ones")
    else:
        st.needs_zero(node.input[0], channels, reason)


@rule("mixer", "LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
def _layernorm(node: onnx.NodeProto, st: State) -> None:
    lay = _pass(node, st)
    if lay is None:
        return
    axis = int(attr(node, "axis", -1)) % len(lay)
    for k in range(axis, len(lay)):
        st.constrain(lay[k], "replicate", f"{node.name} ({node.op_type}) normalises over this axis")
        _same_factor(st, lay[k], f"{node.name} ({node.op_type}) normalises over")
    for idx in (1, 2):
        name = _inp(node, idx)
        if name and st.is_const(name):
            dims = list(st.inits[name].dims)
            for k in range(len(dims)):
                j = len(lay) - len(dims) + k
                if dims[k] != 1:
                    st.use(node.name, name, k, lay[j], "param", 1.0 if idx == 1 else 0.0)


def _same_factor(st: State, layout: Layout, reason: str) -> None:
    """A mean over a concatenation keeps its value only when every part is copied the same number of times."""
    if isinstance(layout, Cat):
        st.same_factor.append((list(layout.parts), reason))
    for child in (layout.parts if isinstance(layout, Cat) else layout.factors if isinstance(layout, Prod) else ()):
        _same_factor(st, child, reason)


@rule("mixer", "GroupNormalization", "MeanVarianceNormalization")
def _groupnorm(node: onnx.NodeProto, st: State) -> None:
    lay = _pass(node, st)
    if lay is not None:
        st.block(lay[1], f"{node.name} ({node.op_type}) normalises over groups of channels")


@rule("mixer", "Softmax", "LogSoftmax", "Hardmax")
def _softmax(node: onnx.NodeProto, st: State) -> None:
    lay = _pass(node, st)
    if lay is None:
        return
    default = -1 if st.opset >= 13 else 1
    axis = int(attr(node, "axis", default)) % len(lay)
    axes = [axis] if st.opset >= 13 else list(range(axis, len(lay)))
    for k in axes:
        st.block(lay[k], f"{node.name} ({node.op_type}) normalises over this axis")


REDUCE_CONSTRAINT = {
    "ReduceMean": "replicate", "ReduceMax": "replicate", "ReduceMin": "replicate",
    "ReduceSum": "zero", "ReduceSumSquare": "zero", "ReduceL1": "zero", "ReduceL2": "zero",
    "ReduceLogSumExp": "blocked", "ReduceLogSum": "blocked", "ReduceProd": "blocked",
    "ArgMax": "blocked", "ArgMin": "blocked",
}


@rule("mixer", *REDUCE_CONSTRAINT)
def _reduce(node: onnx.NodeProto, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [int(attr(node, "axis", 0))]
    else:
        axes_input_opset = 13 if node.op_type == "ReduceSum" else 18
        axes = attr(node, "axes")
        if axes is None and st.opset >= axes_input_opset:
            axes = _const_ints(st, node, "axes", 1)
        if axes is None and len(node.input) > 1 and node.input[1]:
            block_everything(node, st, f"{node.name} ({node.op_type}): axes are computed")
            return
        if not axes:
            axes = [] if attr(node, "noop_with_empty_axes", 0) else list(range(len(lay)))
    axes = [int(a) % len(lay) for a in axes]
    keep = int(attr(node, "keepdims", 1))
    kind = REDUCE_CONSTRAINT[node.op_type]
    out = []
    for k, l in enumerate(lay):
        if k in axes:
            if kind == "zero":
                st.needs_zero(node.input[0], l, f"{node.name} ({node.op_type}) reduces over this axis")
            else:
                st.constrain(l, kind, f"{node.name} ({node.op_type}) reduces over this axis")
                if node.op_type == "ReduceMean":
                    _same_factor(st, l, f"{node.name} ({node.op_type}) averages over")
            if keep:
                out.append(st.fresh(1, f"reduced by {node.name}"))
        else:
            out.append(l)
    st.set_layout(node.output[0], out)


# -- value facts ------------------------------------------------------------------------------------
#: 0 times anything is 0: the output's new units are 0 when one activation input's are
_ZERO_IF_ANY = {"Mul", "And"}
#: new units are 0 when every activation input's are and no constant adds a non-zero value to them
_ADDITIVE = {"Add", "Sub", "Sum", "Mean", "Max", "Min", "Where"}
#: the new units of a producer's output are its new (zero) rows
_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"}
#: ops whose output may be non-zero where its input is all zeros (besides unary ops not in ZERO_PRESERVING)
_NONZERO = {"Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "RMSNormalization",
            "SimplifiedLayerNormalization", "GroupNormalization", "MeanVarianceNormalization",
            "ReduceLogSumExp", "ReduceLogSum", "ArgMax", "ArgMin", "Log", "Reciprocal", "Pow", "Equal", "Greater",
            "Less", "GreaterOrEqual", "LessOrEqual", "Or", "Xor", "Not", "Mod", "BitShift", "Exp", "Cos", "Cosh",
            "Acos", "Acosh", "IsNaN", "IsInf", "Sigmoid", "HardSigmoid", "Softplus"}
#: ops whose output has the sign of their first input
_SAME_SIGN = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Identity", "Dropout", "Cast", "Slice",
              "Split", "Tile", "Expand", "Gather", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
              "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "Resize", "Upsample", "DepthToSpace",
              "SpaceToDepth", "Relu", "Sqrt", "Reciprocal", "Max", "Clip"}
_NONNEG = {"Relu", "Abs", "HardSigmoid", "ReduceSumSquare", "ReduceL1", "ReduceL2"}
_POSITIVE = {"Sigmoid", "Exp", "Softplus", "Softmax"}


def _meet(signs: list[str | None]) -> str | None:
    """Sign of a product (or concatenation) of tensors with these signs."""
    if not signs or any(s is None for s in signs):
        return None
    return "pos" if all(s == "pos" for s in signs) else "nonneg"


def _broadcasts_onto_growable(st: State, node: onnx.NodeProto, const: str) -> bool:
    """Whether a constant reaches the new units of some growable output axis (scalar or size-1 there)."""
    lay = st.layout(node.output[0]) or []
    dims = list(st.inits[const].dims)
    for j, l in enumerate(lay):
        k = j - (len(lay) - len(dims))
        if k < 0 or dims[k] == 1:
            if any(st.info[st.find(a)].producers for a in atoms(l)):
                return True
    return False


def _activation_broadcasts(st: State, node: onnx.NodeProto, name: str) -> bool:
    """Whether an activation input is broadcast onto the new units of a growable output axis (its value lands
    there: h + ReduceSum(h, axis=1) gives every new channel the sum, however the channel started)."""
    out, lay = st.layout(node.output[0]) or [], st.layout(name)
    if lay is None:
        return True
    for j, l in enumerate(out):
        roots = {st.find(a) for a in atoms(l)}
        if not any(st.info[r].producers for r in roots):
            continue
        k = j - (len(out) - len(lay))
        if k < 0 or not roots & {st.find(a) for a in atoms(lay[k])}:
            return True
    return False


def _sign_of(st: State, node: onnx.NodeProto) -> str | None:
    op = node.op_type
    ins = [n for n in node.input if n]
    if not ins:
        return None
    if op in _POSITIVE:
        return "pos"
    first = st.sign(ins[0])
    if op == "Clip":
        low = _inp(node, 1)
        bound = (st.sign(low) if low and st.is_const(low) and st.value(low).size == 1 else None)             if st.opset >= 11 else ("pos" if attr(node, "min", -np.inf) > 0 else "nonneg" if attr(node, "min", -np.inf) >= 0 else None)
        return bound if first is None or bound == "pos" else first if bound is None else _meet([first, bound])
    if op in _NONNEG:
        return first if op == "Relu" and first == "pos" else "nonneg"
    if op in _SAME_SIGN:
        return first
    if op == "Mul" and len(ins) == 2 and ins[0] == ins[1]:
        return first if first == "pos" else "nonneg"
    if op in ("Mul", "Concat"):
        return _meet([st.sign(n) for n in ins])
    if op in ("Add", "Sum"):
        signs = []
        for n in ins:
            sg = st.sign(n)
            if sg == "pos" and st.is_const(n) and st.value(n).size > 1:
                sg = "nonneg"  # new entries of a per-unit constant are filled with 0
            signs.append(sg)
        if any(x is None for x in signs):
            return None
        return "pos" if any(x == "pos" for x in signs) else "nonneg"
    if op == "Div" and len(ins) == 2 and st.sign(ins[1]) == "pos":
        return first
    if op == "Pad":
        return _meet([first, "nonneg"]) if first else None
    if op == "Pow" and len(ins) == 2:
        if first is not None:
            return first
        e = ins[1]
        if st.is_const(e):
            v = st.value(e)
            if v.size and np.all(np.mod(v, 2) == 0):
                return "nonneg"
    return None


def _clip_keeps_zero(node: onnx.NodeProto, st: State) -> bool:
    """Whether Clip maps 0 to 0: its bounds are known and 0 lies between them."""
    if st.opset < 11:
        return float(attr(node, "min", -np.inf)) <= 0 <= float(attr(node, "max", np.inf))
    for i, ok in ((1, lambda v: v <= 0), (2, lambda v: v >= 0)):
        name = _inp(node, i)
        if name and not (st.is_const(name) and bool(np.all(ok(np.asarray(st.value(name), dtype=np.float64))))):
            return False
    return True


def track_values(node: onnx.NodeProto, st: State) -> None:
    """After a node's rule: which outputs keep new units at 0 (under --init zero), and signs of outputs."""
    op = node.op_type
    if op == "If":
        return  # its rule tracks the branch it follows; an If it cannot follow has fresh outputs
    acts = [n for n in node.input if n and st.has_layout(n)]
    flagged = [st.nonzero_at[n] for n in acts if n in st.nonzero_at]
    reason: str | None = None
    known = rule_for(op, node.domain) is not None
    if not known:
        reason = op
    elif op in _PRODUCERS and any(st.is_const(n) for n in node.input[:1 if op == "Gather" else 2]):
        reason = None
    elif op in _ZERO_IF_ANY:
        reason = flagged[0] if acts and len(flagged) == len(acts) else None
    elif op in ("Div", "PRelu"):
        first = node.input[0]
        reason = st.nonzero_at.get(first) if st.has_layout(first) else op
    elif op in _ADDITIVE:
        reason = flagged[0] if flagged else None
        values = node.input[1:] if op == "Where" else node.input
        for n in values:
            if n and st.is_const(n) and np.any(st.value(n) != 0) and _broadcasts_onto_growable(st, node, n):
                reason = reason or f"{op} of the constant {n}"
            elif n and not st.is_const(n) and _activation_broadcasts(st, node, n):
                reason = reason or f"{op} of {n} broadcast over the axis"
    elif op in _NONZERO or (RULES[op].apply is _elementwise_unary and op not in ZERO_PRESERVING):
        reason = op
    elif op == "Clip" and not _clip_keeps_zero(node, st):
        reason = f"{op} (0 lies outside its bounds)"
    else:
        reason = flagged[0] if flagged else None
    sign = _sign_of(st, node)
    for out in node.output:
        if not out:
            continue
        if reason:
            st.nonzero_at[out] = reason
        if sign:
            st.signs[out] = sign


def rule_for(op_type: str, domain: str) -> Rule | None:
    """The rule of an op in the default domain; None means: boundary."""
    if domain not in ("", "ai.onnx"):
        return None
    return RULES.get(op_type)
