"""Reshape and shape-arithmetic tracing: how a Reshape maps axes, and what a computed target shape reads.

`map_reshape` follows the row-major factors of the input axes into the output axes (merges make products,
splits split atoms). A target computed in the graph (Shape → Gather → Concat, torch's `view(b, s, h, -1)`) is
traced back by `computed_target`: sizes read at run time from the grown tensor follow growth by themselves,
constant pieces are rewritten, anything else blocks. `static_value` evaluates small shape computations that growth
cannot change (the condition of torch's Squeeze-if-size-is-1 `If`).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..layout import Atom, Cat, Layout, Prod, atoms, prod
from ..node import Node
from ..state import State, ValueUse
from .common import attr


def map_reshape(
    node: Node,
    st: State,
    lay: list[Layout],
    in_shape: list[int | None],
    out_shape: list[int | None],
    target: list[int] | None,
) -> list[Layout] | str:
    """Output layouts of a Reshape, or why they cannot be followed.

    Leading dynamic axes copied one to one (batch) map to themselves; then output axes of known size take
    input factors from the right and from the left (splitting an atom where an axis ends inside it); what
    is left (at most one output axis, the -1) is the product of the remaining factors.
    """
    out: list[Layout | None] = [None] * len(out_shape)
    i = j = 0
    while (
        i < len(in_shape)
        and j < len(out_shape)
        and in_shape[i] is None
        and not isinstance(lay[i], Prod)
        and ((target is None and out_shape[j] is None) or (target is not None and target[j] == 0))
    ):
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
                while (
                    n == 1
                    and factors
                    and (factors[-1] if right else factors[0])[1] == 1
                    and any(st.info[st.find(a)].producers for a in atoms((factors[-1] if right else factors[0])[0]))
                ):
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
        if n is None:  # not reached: only axes of known size are placed
            return False
        end = (factors[-1] if right else factors[0]) if factors else None
        if n == 1:
            if end is not None and end[1] == 1:
                out[k] = (factors.pop() if right else factors.popleft())[0]
            else:
                out[k] = st.fresh(1, f"{node.name} unit axis")
            return True
        got = take(right, int(n))
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
    return [l for l in out if l is not None]  # every axis is placed by now


def computed_target(node: Node, st: State, out: list[Layout]) -> None:
    """A Reshape target computed in the graph: each size of a growing axis must follow the growth.

    It does when it is read from the tensor's own shape at run time (Shape → Gather …), or when it is a
    constant piece of a Concat (then that constant is rewritten like a constant target).
    """
    elements: list[tuple | None] = []
    src = st.node_of.get(node.input[1])
    pieces = (
        list(src.input)
        if src is not None and src.op_type == "Concat" and int(attr(src, "axis", 0)) == 0
        else [node.input[1]]
    )
    for p, piece in enumerate(pieces):
        if src is not None and len(pieces) > 1 and st.is_const(piece):
            values = st.value(piece).reshape(-1).tolist()
            elements += [("const", piece, idx, p, v) for idx, v in enumerate(values)]
            continue
        static = static_value(st, piece)
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
        if e is not None and e[0] == "const" and e[4] > 0 and src is not None:  # constant pieces come from src
            st.value_uses.append(ValueUse(src.name, e[1], e[2], l, e[3]))
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
                st.block(
                    Atom(r), f"{node.name} (Reshape) reads this size at run time for an axis that does not grow with it"
                )


def _scaled(st: State, name: str, depth: int = 0) -> tuple | None:
    """("scaled", read, op, const, node) when `name` is one size read from a shape, × or ÷ a constant.

    torch's MultiheadAttention computes batch × heads and hidden ÷ heads this way at run time.
    """
    node = st.node_of.get(name)
    if node is None or depth > 6:
        return None
    if node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return _scaled(st, node.input[0], depth + 1)
    if (
        node.op_type not in ("Mul", "Div")
        or len(node.input) != 2
        or not st.is_const(node.input[1])
        or st.value(node.input[1]).size != 1
    ):
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


def _scaled_use(node: Node, st: State, e: tuple, out: Layout) -> None:
    """Record the constant of read × c (or read ÷ c) so that it follows the growth of the axes it relates."""
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
    elif (nb := st.size(big)) is not None and (ns := st.size(small)) and nb == c * ns:
        st.value_uses.append(ValueUse(where, const, 0, big, 1, per=small))
    else:
        for l in (read, out):
            st.block(l, f"{node.name} (Reshape) computes its target shape in a way onnxgrow cannot follow")


def static_value(st: State, name: str, depth: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
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
        deps[:] = [
            frozenset(st.find(a) for a in atoms(l)) | (frozenset("?") if d is None else frozenset())
            for l, d in zip(lay, shape)
        ]
        return np.array([-1 if d is None else d for d in shape], dtype=np.int64)[sl], deps[sl]
    ins = [static_value(st, n, depth + 1) if n else None for n in node.input]
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
        if starts is None or ends is None or len(starts) != 1 or (axes is not None and axes[0] not in (0, -1)):
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


def growable(st: State, deps: np.ndarray) -> bool:
    """Whether growth (or a dynamic size) can change a value computed from these atoms."""
    return any(a == "?" or st.info[st.find(a)].producers for s in deps.reshape(-1) for a in s)
