"""Shape ops: Transpose, Flatten, Squeeze/Unsqueeze, Reshape, Tile/Expand, Concat, Split, Slice, Gather, Shape.

They move axes without mixing their units (coupling): a layout is permuted, merged into a product, split,
concatenated or cut. Sizes written in the graph (Reshape targets, Split sizes, Slice ends) are recorded as
value or attribute uses, so that the rewrite makes them follow growth.
"""

from __future__ import annotations

import numpy as np

from ..layout import Cat, Layout, Prod, prod
from ..node import Node
from ..state import AttrUse, PositionsUse, State, ValueUse
from .common import attr, block_everything, const_ints, inp
from .registry import rule
from .shape_trace import computed_target, map_reshape
from .values import meet

#: a Slice bound at least this big means "to the end" whatever the axis grows to
_OPEN_END = 2**30
#: why an axis cut into equal chunks cannot grow (a chunk boundary falls inside a unit's blocks)
_CHUNK_ACROSS = (
    "cuts this axis into {k} chunks whose boundaries fall inside the blocks of a unit (channels "
    "shuffled by earlier layers): growing it would move old channels to another chunk"
)


def _concat_sign(node: Node, st: State) -> str | None:
    return meet([st.sign(n) for n in node.input if n])


@rule("coupling", "Transpose", sign="same")
def _transpose(node: Node, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    perm = attr(node, "perm") or list(reversed(range(len(lay))))
    st.set_layout(node.output[0], [lay[p] for p in perm])


@rule("coupling", "Flatten", sign="same")
def _flatten(node: Node, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    axis = int(attr(node, "axis", 1)) % (len(lay) + 1) if lay else 0
    left = lay[:axis] or [st.fresh(1, f"{node.name} leading axis")]
    right = lay[axis:] or [st.fresh(1, f"{node.name} trailing axis")]
    st.set_layout(node.output[0], [prod(left), prod(right)])


@rule("coupling", "Squeeze", "Unsqueeze", sign="same")
def _squeeze(node: Node, st: State) -> None:
    lay = st.layout(node.input[0])
    out_shape = st.shape(node.output[0])
    axes = const_ints(st, node, "axes", 1)
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
        st.set_layout(
            node.output[0], [st.fresh(1, f"{node.name} new axis") if i in axes else next(it) for i in range(rank)]
        )


@rule("coupling", "Reshape", sign="same")
def _reshape(node: Node, st: State) -> None:
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
    out = map_reshape(node, st, lay, list(in_shape), list(out_shape), target)
    if isinstance(out, str):
        for l in lay:
            st.block(l, f"{node.name} (Reshape) {out}")
        st.set_layout(node.output[0], [st.fresh(d, f"output of {node.name}") for d in out_shape])
        return
    if target is not None:
        for k, v in enumerate(target):
            if v > 0:
                st.value_uses.append(ValueUse(node.name, node.input[1], k, out[k], 1))
    else:
        computed_target(node, st, out)
    st.set_layout(node.output[0], out)


@rule("coupling", "Tile", "Expand", sign="same")
def _repeat(node: Node, st: State) -> None:
    """Repeating a size-1 axis (grouped-query attention repeats each key/value head for its query group):
    the repeated axis is a fixed new axis, every other axis passes. Anything else blocks what it touches."""
    lay, shape = st.layout(node.input[0]), st.shape(node.input[0])
    spec = node.input[1] if len(node.input) > 1 else ""
    if lay is None or shape is None or not spec or not st.is_const(spec):
        block_everything(
            node,
            st,
            f"{node.name} ({node.op_type}): its input shape or its {'repeats' if node.op_type == 'Tile' else 'shape'} is not known",
        )
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


@rule("coupling", "Concat", sign=_concat_sign)
def _concat(node: Node, st: State) -> None:
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
        parts = [
            l[k] if l is not None else st.fresh(st.inits[n].dims[k], f"constant {n} concatenated by {node.name}")
            for n, l in zip(ins, lays)
        ]
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


@rule("coupling", "Split", sign="same")
def _split(node: Node, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    axis = int(attr(node, "axis", 0)) % len(lay)
    split = const_ints(st, node, "split", 1)
    outs = [o for o in node.output]
    shapes = [st.shape(o) for o in outs]
    sizes = [s[axis] if s else None for s in shapes]
    part = lay[axis]
    if isinstance(part, Cat) and len(part.parts) == len(outs) and [st.size(p) for p in part.parts] == sizes:
        computed = split is None and bool(inp(node, 1))
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
        st.set_layout(o, lay[:axis] + [st.fresh(s, f"the part of the axis {node.name} cuts out")] + lay[axis + 1 :])


def _split_equal_chunks(
    node: Node, st: State, lay: list[Layout], axis: int, split: list[int] | None, sizes: list[int | None]
) -> bool:
    """Equal chunks of one group (GPT-2's packed q|k|v projection): the axis is chunk × unit, each output the
    unit factor. The chunk count is fixed; a unit grows inside every chunk, and the split sizes follow."""
    k, n = len(sizes), st.size(lay[axis])
    if k < 2 or None in sizes or len(set(sizes)) != 1 or n != k * (sizes[0] or 0) or (split is None and inp(node, 1)):
        return False
    view = st.grouped(lay[axis], k, node.name, f"{node.name} (Split) picks chunks along this axis")
    if view is None:
        return False
    _split_outputs(node, st, lay, axis, split, [view[1]] * k)
    return True


def _split_outputs(
    node: Node, st: State, lay: list[Layout], axis: int, split: list[int] | None, parts: list[Layout]
) -> None:
    """Output k of a Split has layout `parts[k]` on the split axis; given sizes (attribute or input) follow it."""
    for k, (o, p) in enumerate(zip(node.output, parts)):
        st.set_layout(o, lay[:axis] + [p] + lay[axis + 1 :])
        if attr(node, "split") is not None:
            st.attr_uses.append(AttrUse(node.name, "split", p, 1, k))
        elif split is not None:
            st.value_uses.append(ValueUse(node.name, node.input[1], k, p, 1))


@rule("coupling", "Slice", sign="same")
def _slice(node: Node, st: State) -> None:
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


def _slice_table(node: Node, st: State) -> bool:
    """Rows of a 2-D weight table sliced by position (a positional embedding cut to the sequence length):
    the table's columns are new units, like an embedding Gather's."""
    data = node.input[0]
    if not st.is_const(data) or len(st.inits[data].dims) != 2:
        return False
    axes = const_ints(st, node, "axes", 3)
    if axes is None or any(int(a) % 2 != 0 for a in axes):
        return False
    out_shape = st.shape(node.output[0])
    rows = st.fresh(out_shape[0] if out_shape else None, f"rows of {node.name}")
    st.set_layout(node.output[0], [rows, st.produce(node.name, data, 1, int(st.inits[data].dims[1]))])
    return True


def _slice_bounds(node: Node, st: State, rank: int) -> dict[int, tuple[int, int, int, int]] | None:
    """axis -> (start, end, step, position in the lists) of a Slice with constant bounds; None if computed."""

    def ints(name: str, index: int, default):
        value = attr(node, name)
        if value is not None:
            return [int(v) for v in value]
        src = inp(node, index)
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


def _slice_chunk(
    node: Node, st: State, layout: Layout, size_: int, n: int, start: int, end: int, step: int, pos: int
) -> Layout | str | None:
    """A Slice that keeps chunk i of k equal chunks of an axis (torch's `chunk` in the TorchScript export): the
    axis is read as Prod(k chunks, unit) as a Split into equal parts reads it; its bounds follow the unit.
    None when it is no such chunk; why, when it is one that cannot follow growth."""
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
    for value, which, index, mult in (
        (start, "starts", 1, i - k if start < 0 else i),
        (end, "ends", 2, i + 1 - k if end < 0 else i + 1),
    ):
        if value == 0 or (which == "ends" and value >= _OPEN_END) or (which == "ends" and end < 0 and mult == 0):
            continue
        if attr(node, which) is not None:
            st.attr_uses.append(AttrUse(node.name, which, unit, 1, pos, mult))
        else:
            st.value_uses.append(ValueUse(node.name, node.input[index], pos, unit, index, multiple=mult))
    return unit


def _slice_whole_axis(
    node: Node, st: State, layout: Layout, size_: int, start: int, end: int, step: int, pos: int
) -> None:
    """A Slice that keeps every position of an axis: fine when it keeps them after growth too.

    `ends` equal to the old size is rewritten to the new size; a reversed or shifted axis blocks.
    """
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


@rule("producer", "Gather", weights=(0,), sign="same")
def _gather(node: Node, st: State) -> None:
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
        inner = (
            list(li)
            if li is not None
            else (st.fresh_layout(idx, "indices") or [])
            if not st.is_const(idx)
            else [st.fresh(d, f"indices of {node.name}") for d in st.inits[idx].dims]
        )
        st.set_layout(node.output[0], ld[:axis] + inner + ld[axis + 1 :])
        return
    block_everything(node, st)


def _gather_positions(node: Node, st: State, ld: list[Layout], axis: int) -> bool:
    """A Gather whose constant indices are every position of the axis in order (torch's `as_strided` exported as
    Reshape(-1) then Gather of an arange shaped [1, C, 1, 1]): a Reshape of that axis into the indices' shape.
    The indices are rewritten as the arange of the grown axis."""
    idx, shape = node.input[1], st.shape(node.input[0])
    dim = None if shape is None else shape[axis]
    if not st.is_const(idx) or dim is None:
        return False
    values = np.asarray(st.value(idx))
    n = int(dim)
    if values.dtype.kind not in "iu" or values.size != n or not np.array_equal(values.reshape(-1), np.arange(n)):
        return False
    mapped = map_reshape(node, st, [ld[axis]], [n], list(values.shape), None)
    if isinstance(mapped, str):
        return False
    if not st.fixed(ld[axis]):
        st.positions_uses.append(PositionsUse(node.name, idx, list(mapped)))
    st.set_layout(node.output[0], ld[:axis] + list(mapped) + ld[axis + 1 :])
    return True


@rule("boundary", "Shape", "Size")
def _shape(node: Node, st: State) -> None:
    st.fresh_layout(node.output[0], f"output of {node.name}")
