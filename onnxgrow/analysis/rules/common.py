"""Helpers every family of rules uses: attributes, constant int lists, pass-through and boundary layouts."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from ..layout import Cat, Layout, Prod
from ..node import Node
from ..state import State

#: why an activation's axis of size 1 that an op broadcasts cannot grow
BROADCAST = "{node} ({op}) broadcasts this axis of size 1: grown, it would stop being broadcast"
#: the origin of the atoms a zero Pad adds (pooling windows and LRN treat them as zeros)
ZERO_PAD = "zero padding of "


def attr(node: Node | onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of a node's attribute, or `default` when the node does not have it."""
    if isinstance(node, Node):
        return node.attr(name, default)
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def inp(node: Node, i: int) -> str:
    """Input `i` of a node ('' when it has fewer inputs, as for an omitted optional input)."""
    return node.input[i] if len(node.input) > i else ""


def const_ints(st: State, node: Node, attr_name: str, input_index: int) -> list[int] | None:
    """An int list given as attribute (old opsets) or constant input (new opsets)."""
    value = attr(node, attr_name)
    if value is not None:
        return [int(v) for v in value]
    name = inp(node, input_index)
    if name and st.is_const(name):
        return [int(v) for v in np.asarray(st.value(name)).reshape(-1)]
    return None


def block_everything(node: Node, st: State, why: str | None = None) -> None:
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


def pass_through(node: Node, st: State, i: int = 0) -> list[Layout] | None:
    """The output keeps input `i`'s layout (other outputs get fresh atoms); None (and a boundary) if unknown."""
    lay = st.layout(inp(node, i))
    if lay is None:
        block_everything(node, st, f"{node.name} ({node.op_type}): input shape unknown")
        return None
    st.set_layout(node.output[0], list(lay))
    for extra in node.output[1:]:
        if extra:
            st.fresh_layout(extra, f"output of {node.name}")
    return lay


def same_factor(st: State, layout: Layout, reason: str) -> None:
    """A mean over a concatenation keeps its value only when every part is copied the same number of times."""
    if isinstance(layout, Cat):
        st.same_factor.append((list(layout.parts), reason))
    for child in layout.parts if isinstance(layout, Cat) else layout.factors if isinstance(layout, Prod) else ():
        same_factor(st, child, reason)
