"""Pooling, padding and resizing: ops that slide windows over or resample the spatial axes.

Channels pass through; a spatial axis is kept only where positions map one to one (a stride-1 window over
zero padding, as torch exports LocalResponseNorm), else it gets fresh atoms and growth stops there.
"""

from __future__ import annotations

import numpy as np

from ..layout import Atom, Cat, Layout
from ..node import Node
from ..state import State, ValueUse
from .common import ZERO_PAD, attr, block_everything, const_ints, inp
from .registry import rule
from .values import meet


def _pad_sign(node: Node, st: State) -> str | None:
    first = st.sign(node.input[0])
    return meet([first, "nonneg"]) if first else None


@rule(
    "pass-through",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Resize",
    "Upsample",
    "DepthToSpace",
    sign="same",
)
@rule("pass-through", "LpPool", "GlobalLpPool", "MaxRoiPool")
def _spatial(node: Node, st: State) -> None:
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
        spatial = [
            st.fresh(out_shape[j] if out_shape else None, f"spatial axis of {node.name}") for j in range(2, len(lay))
        ]
    st.set_layout(node.output[0], [lay[0], lay[1]] + spatial)
    for extra in node.output[1:]:
        if extra:
            st.fresh_layout(extra, f"indices of {node.name}")
            st.block(lay[1], f"{node.name} returns indices")


def _resize_channels(node: Node, st: State, lay: list[Layout]) -> str | None:
    """Why a Resize/Upsample may not pass the channel axis (None: it keeps it; constant `sizes` are rewritten)."""
    rank = len(lay)
    given_axes = attr(node, "axes")
    axes = [int(a) % rank for a in given_axes] if given_axes is not None else list(range(rank))
    if 1 not in axes:
        return None
    pos = axes.index(1)
    scales = attr(node, "scales")
    if scales is None:
        name = inp(node, 2 if node.op_type == "Resize" and st.opset >= 11 else 1)
        if name and not st.is_const(name):
            return "computes its scales"
        scales = st.value(name).reshape(-1).tolist() if name else []
    if len(scales):
        return None if len(scales) > pos and float(scales[pos]) == 1.0 else "resizes the channel axis"
    sizes = inp(node, 3) if node.op_type == "Resize" else ""
    if not sizes or not st.is_const(sizes):
        return "computes its output sizes"
    values = st.value(sizes).reshape(-1)
    if len(values) <= pos or int(values[pos]) != st.size(lay[1]):
        return "resizes the channel axis"
    if attr(node, "keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
        return "keeps an aspect ratio that counts the channel axis"
    st.value_uses.append(ValueUse(node.name, sizes, pos, lay[1], 3))
    return None


def _window(node: Node, st: State, lay: list[Layout], j: int, out_shape) -> Layout:
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
    if auto in (b"NOTSET", "NOTSET", b"VALID", "VALID") and k == 1 and stride == 1 and lo == 0 and hi == 0:
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
    if (
        auto in (b"NOTSET", "NOTSET")
        and stride == 1
        and dil == 1
        and len(parts) == 1
        and isinstance(parts[0], Atom)
        and (zero_pads or lo == hi == 0)
        and pre + lo + post + hi == k - 1
    ):
        st.needs_zero(node.input[0], parts[0], f"{node.name} ({node.op_type}) sums a sliding window across this axis")
        return parts[0]
    st.block(l, f"{node.name} ({node.op_type}) pools a window over this axis")
    return st.fresh(out_shape[j] if out_shape else None, f"spatial axis of {node.name}")


def _pad_value(st: State, node: Node) -> float | None:
    if st.opset < 11:
        return float(attr(node, "value", 0.0))
    name = inp(node, 2)
    if not name:
        return 0.0
    return float(np.asarray(st.value(name)).reshape(-1)[0]) if st.is_const(name) else None


@rule("pass-through", "Pad", sign=_pad_sign)
def _pad(node: Node, st: State) -> None:
    lay = st.layout(node.input[0])
    pads = const_ints(st, node, "pads", 1)
    out_shape = st.shape(node.output[0])
    if lay is None or pads is None or out_shape is None:
        block_everything(node, st)
        return
    axes = const_ints(st, node, "axes", 3) if len(node.input) > 3 and node.input[3] else list(range(len(lay)))
    if axes is None:
        block_everything(node, st, f"{node.name} (Pad): its axes are computed")
        return
    n = len(axes)
    result = list(lay)
    mode = attr(node, "mode", b"constant")
    zero = mode in (b"constant", "constant") and _pad_value(st, node) == 0.0
    for idx, ax in enumerate(axes):
        ax %= len(lay)
        lo, hi = pads[idx], pads[idx + n]
        if not (lo or hi):
            continue
        if zero and lo >= 0 and hi >= 0:
            # zeros before and after: the axis's units keep their order between fixed padding blocks
            parts: list[Layout] = [st.fresh(lo, ZERO_PAD + node.name)] if lo else []
            parts.append(lay[ax])
            parts += [st.fresh(hi, ZERO_PAD + node.name)] if hi else []
            result[ax] = Cat(tuple(parts))
            continue
        st.block(lay[ax], f"{node.name} (Pad) pads this axis")
        result[ax] = st.fresh(out_shape[ax], f"padded by {node.name}")
    st.set_layout(node.output[0], result)


@rule("boundary", "SpaceToDepth", zeros="nonzero", sign="same")
def _space_to_depth(node: Node, st: State) -> None:
    """Moves positions into channels: a boundary (its output keeps its input's sign)."""
    block_everything(node, st)
