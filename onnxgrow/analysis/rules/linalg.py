"""Linear algebra: Gemm, MatMul, Einsum, Conv and ConvTranspose (the producers of new units, and their readers).

A weight's output axis makes a new atom (`st.produce`): the group that grows. Its input axis reads the
activation's layout (`st.use(..., "consumer")`); a bias follows the output.
"""

from __future__ import annotations

from ..layout import Layout, Prod
from ..node import Node
from ..state import AttrUse, State, WeightUse
from .common import BROADCAST, attr, block_everything, inp
from .registry import rule

#: a producer's output is its weights' new rows (0 under --init zero) when one of these inputs is a weight
_WEIGHTS = (0, 1)


@rule("producer", "Gemm", weights=_WEIGHTS)
def _gemm(node: Node, st: State) -> None:
    a, b, c = inp(node, 0), inp(node, 1), inp(node, 2)
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


def _bias(node: Node, st: State, c: str, out_layouts: list[Layout]) -> None:
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


@rule("producer", "MatMul", weights=_WEIGHTS)
def _matmul(node: Node, st: State) -> None:
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
        n_atom = st.produce(node.name, b, len(sb) - 1, sb[-1])
        batch = _batch(st, node, la[: ra - 2], sb[:-2], ra - 2)
        st.set_layout(out, batch + [la[ra - 2], n_atom])
    elif lb is not None and st.is_const(a):
        rb = len(sb)
        st.use(node.name, a, len(sa) - 1, lb[rb - 2], "consumer")
        m_atom = st.produce(node.name, a, len(sa) - 2, sa[-2])
        batch = _batch(st, node, lb[: rb - 2], sa[:-2], rb - 2)
        st.set_layout(out, batch + [m_atom, lb[rb - 1]])
    elif la is not None and lb is not None:
        st.block(la[-1], f"{node.name} (MatMul) contracts this axis between two activations")
        st.block(lb[-2], f"{node.name} (MatMul) contracts this axis between two activations")
        out_shape = st.shape(out) or []
        batch = []
        nb = len(out_shape) - 2
        for j in range(nb):
            ka, kb = j - (nb - (len(sa) - 2)), j - (nb - (len(sb) - 2))
            cands = []
            for k, shape, lay in ((ka, sa, la), (kb, sb, lb)):
                if k >= 0 and shape[k] != 1:
                    cands.append(lay[k])
                elif k >= 0 and out_shape[j] != 1:
                    st.block(lay[k], BROADCAST.format(node=node.name, op="MatMul"))
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


def _batch(st: State, node: Node, act_batch: list[Layout], w_batch: list, out_rank: int) -> list[Layout]:
    """Batch axes of a MatMul with a constant operand: the activation's, when the weight has none."""
    if any(d != 1 for d in w_batch):
        for l in act_batch:
            st.block(l, f"{node.name} (MatMul) has a batched weight")
    return list(act_batch)


def _einsum_terms(node: Node, ranks: list[int]) -> tuple[list[str], str] | None:
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
        t = t.replace("...", ell[width - k :] if k else "")
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
def _einsum(node: Node, st: State) -> None:
    """Einsum of activations (attention written as einsum): an axis kept in the output joins the axes of its
    letter in every operand (as broadcasting does); a letter summed over two operands is contracted between
    activations (blocked, as MatMul); a letter summed in one operand only is a sum (its new units must be 0)."""
    lays = [st.layout(n) for n in node.input]
    shapes = [st.shape(n) for n in node.input]
    out_shape = st.shape(node.output[0])
    if any(l is None for l in lays) or any(s is None for s in shapes) or out_shape is None:
        block_everything(node, st, f"{node.name} (Einsum) has a constant operand or an unknown shape")
        return
    known_lays = [l for l in lays if l is not None]  # every one, as checked above
    known_shapes = [s for s in shapes if s is not None]
    parsed = _einsum_terms(node, [len(s) for s in known_shapes])
    if parsed is None or len(parsed[1]) != len(out_shape):
        block_everything(node, st, f"{node.name} (Einsum): an equation onnxgrow cannot follow")
        return
    terms, rhs = parsed
    by_letter: dict[str, list[tuple[int, Layout, int | None]]] = {}
    for i, (t, lay, shape) in enumerate(zip(terms, known_lays, known_shapes)):
        for c, l, d in zip(t, lay, shape):
            by_letter.setdefault(c, []).append((i, l, d))
    for c, uses in by_letter.items():
        if c in rhs:
            continue
        real = [u for u in uses if u[2] != 1]
        for _, l, d in uses:
            if d == 1 and real:
                st.block(l, BROADCAST.format(node=node.name, op="Einsum"))
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
                st.block(l, BROADCAST.format(node=node.name, op="Einsum"))
        if not kept:
            out.append(st.fresh(d, f"broadcast in {node.name}"))
            continue
        joined = kept[0]
        for other in kept[1:]:
            joined = st.unify(joined, other, node.name)
        out.append(joined)
    st.set_layout(node.output[0], out)


@rule("producer", "Conv", "ConvTranspose", weights=_WEIGHTS)
def _conv(node: Node, st: State) -> None:
    x, w, b = node.input[0], node.input[1], inp(node, 2)
    lx = st.layout(x)
    if lx is None or not st.is_const(w) or len(lx) < 3:
        block_everything(node, st, f"{node.name} ({node.op_type}): weight is not a constant initializer")
        return
    out = node.output[0]
    out_shape = st.shape(out)
    spatial: list[Layout] = [
        st.fresh(out_shape[j] if out_shape else None, f"spatial axis of {node.name}") for j in range(2, len(lx))
    ]
    for l in lx[2:]:
        st.block(l, f"{node.name} ({node.op_type}) slides its kernel over this axis")
    group = int(attr(node, "group", 1))
    wdims = list(st.inits[w].dims)
    transpose = node.op_type == "ConvTranspose"
    in_axis, out_axis = (0, 1) if transpose else (1, 0)
    oc: Layout
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
            st.whole_groups(
                lx[1],
                cpg_in,
                f"{node.name} ({node.op_type}) reads it in groups of {cpg_in} channels that growth would cut",
            )
            st.attr_uses.append(AttrUse(node.name, "group", lx[1], cpg_in))
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


def _grouped_conv(node: Node, st: State, channels: Layout, group: int, cpg_in: int, cpg_out: int) -> Layout:
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
        st.block(
            channels,
            f"{node.name}: grouped {node.op_type} with {cpg_in} inputs and {cpg_out} outputs per "
            f"group reads channels onnxgrow cannot divide into its {group} groups",
        )
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
