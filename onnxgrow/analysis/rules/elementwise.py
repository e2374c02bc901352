"""Elementwise ops: unary activations and maths (pass-through) and binary ops with broadcasting (coupling).

Each registration carries the op's value facts: whether 0 stays 0 (`zeros`), the sign of its output (`sign`)
and the value new entries of a constant per-unit operand take (`fill`, the op's neutral element).
"""

from __future__ import annotations

import numpy as np

from ..layout import Layout
from ..node import Node
from ..state import State
from .common import BROADCAST, attr, block_everything, inp, pass_through
from .registry import RULES, rule
from .values import broadcasts_onto_growable, meet


def _relu_sign(node: Node, st: State) -> str | None:
    return "pos" if st.sign(node.input[0]) == "pos" else "nonneg"


def _clip_sign(node: Node, st: State) -> str | None:
    first = st.sign(node.input[0])
    if st.opset >= 11:
        low = inp(node, 1)
        bound = st.sign(low) if low and st.is_const(low) and st.value(low).size == 1 else None
    else:
        lowest = attr(node, "min", -np.inf)
        bound = "pos" if lowest > 0 else "nonneg" if lowest >= 0 else None
    return bound if first is None or bound == "pos" else first if bound is None else meet([first, bound])


def _clip_keeps_zero(node: Node, st: State) -> bool:
    """Whether Clip maps 0 to 0: its bounds are known and 0 lies between them."""
    if st.opset < 11:
        return float(attr(node, "min", -np.inf)) <= 0 <= float(attr(node, "max", np.inf))
    for i, ok in ((1, lambda v: v <= 0), (2, lambda v: v >= 0)):
        name = inp(node, i)
        if name and not (st.is_const(name) and bool(np.all(ok(np.asarray(st.value(name), dtype=np.float64))))):
            return False
    return True


# -- unary ------------------------------------------------------------------------------------------
@rule("pass-through", "Relu", sign=_relu_sign)
@rule("pass-through", "Abs", sign="nonneg")
@rule("pass-through", "Identity", "Dropout", "Cast", sign="same")
@rule("pass-through", "Clip", sign=_clip_sign, keeps_zero=_clip_keeps_zero)
@rule(
    "pass-through",
    "LeakyRelu",
    "Tanh",
    "HardSwish",
    "Elu",
    "Selu",
    "Softsign",
    "Gelu",
    "Erf",
    "CastLike",
    "Neg",
    "Sign",
    "Sin",
    "Celu",
    "Mish",
    "ThresholdedRelu",
    "Shrink",
    "Round",
    "Floor",
    "Ceil",
    "Swish",
    "Atan",
    "Sinh",
    "Tan",
    "Asinh",
)
@rule("pass-through", "Sigmoid", "Exp", "Softplus", zeros="nonzero", sign="pos")
@rule("pass-through", "HardSigmoid", zeros="nonzero", sign="nonneg")
@rule("pass-through", "Cos", "Cosh", "IsNaN", "IsInf", "Not", zeros="nonzero")
def _elementwise_unary(node: Node, st: State) -> None:
    pass_through(node, st)  # whether 0 stays 0 is a fact of the rule, tracked per tensor by `track_values`


@rule("boundary", "Log", zeros="nonzero")
@rule("boundary", "Reciprocal", zeros="nonzero", sign="same")
def _unsafe_unary(node: Node, st: State) -> None:
    lay = pass_through(node, st)
    if st.sign(node.input[0]) == "pos":
        return
    for l in lay or []:
        st.block(l, f"{node.name} ({node.op_type}) can turn new units into inf or NaN")


@rule("pass-through", "Sqrt", sign="same")
@rule("pass-through", "Asin", "Atanh")
@rule("pass-through", "Acos", "Acosh", zeros="nonzero")
def _partial_unary(node: Node, st: State) -> None:
    """Ops defined on part of the real line: noise could leave it; 0 stays inside (but for Acosh)."""
    lay = pass_through(node, st)
    sign = st.sign(node.input[0])
    if lay is None or (node.op_type == "Sqrt" and sign in ("pos", "nonneg")):
        return
    for l in lay:
        if node.op_type == "Acosh":
            st.block(l, f"{node.name} (Acosh) is not defined at 0 nor below: new units could be NaN")
        else:
            st.needs_zero(
                node.input[0],
                l,
                f"{node.name} ({node.op_type}) is not defined for every input: "
                "new units could be NaN unless they stay 0",
            )


# -- binary, with broadcasting ------------------------------------------------------------------------
def _sum_sign(node: Node, st: State) -> str | None:
    names = [n for n in node.input if n]
    if any(st.sign(n) is None for n in names if not st.is_const(n)):
        return None  # (what follows would say so too; activations first spares working out the constants' signs)
    signs = []
    for n in names:
        sg = st.sign(n)
        if sg == "pos" and st.is_const(n) and st.value(n).size > 1:
            sg = "nonneg"  # new entries of a per-unit constant are filled with 0
        signs.append(sg)
    if any(x is None for x in signs):
        return None
    return "pos" if any(x == "pos" for x in signs) else "nonneg"


def _product_sign(node: Node, st: State) -> str | None:
    ins = [n for n in node.input if n]
    if len(ins) == 2 and ins[0] == ins[1]:  # a square
        first = st.sign(ins[0])
        return first if first == "pos" else "nonneg"
    return meet([st.sign(n) for n in ins])


def _div_sign(node: Node, st: State) -> str | None:
    ins = [n for n in node.input if n]
    return st.sign(ins[0]) if len(ins) == 2 and st.sign(ins[1]) == "pos" else None


def _pow_sign(node: Node, st: State) -> str | None:
    ins = [n for n in node.input if n]
    if len(ins) != 2:
        return None
    first = st.sign(ins[0])
    if first is not None:
        return first
    if st.is_const(ins[1]):
        v = st.value(ins[1])
        if v.size and np.all(np.mod(v, 2) == 0):
            return "nonneg"
    return None


@rule("coupling", "Add", "Sum", zeros="sum", sign=_sum_sign)
@rule("coupling", "Sub", "Mean", "Min", zeros="sum")
@rule("coupling", "Max", zeros="sum", sign="same")
@rule("coupling", "Where", zeros="select")
@rule("coupling", "Mul", zeros="product", fill=1.0, sign=_product_sign)
@rule("coupling", "And", zeros="product", fill=1.0)
@rule("coupling", "Div", zeros="first", fill=1.0, sign=_div_sign)
@rule("coupling", "PRelu", zeros="first", fill=0.25)
@rule("coupling", "Pow", zeros="nonzero", fill=1.0, sign=_pow_sign)
@rule("coupling", "Mod", zeros="nonzero", fill=1.0)
@rule("coupling", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Or", "Xor", zeros="nonzero")
def _broadcast(node: Node, st: State) -> None:
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
        if shape is None:  # not reached: a tensor with a layout has a shape
            continue
        for k in range(len(shape)):
            j = rank - len(shape) + k
            if shape[k] == 1 and out_shape[j] != 1:
                st.block(lay[k], BROADCAST.format(node=node.name, op=node.op_type))
                continue
            joined = result[j]
            result[j] = lay[k] if joined is None else st.unify(joined, lay[k], node.name)
    layouts = [
        r if r is not None else st.fresh(out_shape[j], f"broadcast in {node.name}") for j, r in enumerate(result)
    ]
    fill = RULES[node.op_type].fill
    for i, name in enumerate(node.input):
        if not name or not st.is_const(name):
            continue
        shape = shapes[i]
        if shape is None:  # not reached: shapes of named inputs are known here
            continue
        for k in range(len(shape)):
            j = rank - len(shape) + k
            if shape[k] != 1 or out_shape[j] == 1:
                if shape[k] == 1:
                    continue
                st.use(node.name, name, k, layouts[j], "param", fill)
    if (
        node.op_type in ("Div", "Pow", "Mod")
        and len(node.input) > 1
        and st.layout(node.input[1]) is not None
        and not (node.op_type == "Div" and st.sign(node.input[1]) == "pos")
    ):
        for l in layouts:
            st.block(
                l, f"{node.name} ({node.op_type}) divides by or raises to an activation; new units could be inf or NaN"
            )
    st.set_layout(node.output[0], layouts)
    if node.op_type == "Pow":
        _pow_exponent(node, st, layouts)


def _pow_exponent(node: Node, st: State, layouts: list[Layout]) -> None:
    """Pow of an activation by a constant: fractional exponents need new units >= 0, negative ones > 0."""
    base, exp = node.input[0], node.input[1]
    if st.layout(base) is None or not st.is_const(exp) or not broadcasts_onto_growable(st, node, exp):
        return
    e = np.asarray(st.value(exp), dtype=np.float64)
    sign = st.sign(base)
    if sign == "pos" or (np.all(e >= 0) and (sign == "nonneg" or np.all(np.mod(e, 1) == 0))):
        return
    for l in layouts:
        if np.all(e > 0):
            st.needs_zero(
                base, l, f"{node.name} (Pow) raises to a fractional power: new units could be NaN unless they stay 0"
            )
        else:
            st.block(l, f"{node.name} (Pow) raises to a negative power: new units could be inf or NaN")
