"""Reductions (ReduceSum, ReduceMean ..., ArgMax): mixers over the reduced axes.

What a reduced axis needs of new units is a fact of each op's rule (`reduce`): a mean or a max keeps its
value when new units are whole copies (`replicate`), a sum when they are 0 (`zero`); a product, a log-sum
or an arg-max cannot follow growth (`blocked`).
"""

from __future__ import annotations

from ..layout import Layout
from ..node import Node
from ..state import State
from .common import attr, block_everything, const_ints, same_factor
from .registry import RULES, rule


@rule("mixer", "ReduceMean", "ReduceMax", "ReduceMin", reduce="replicate", sign="same")
@rule("mixer", "ReduceSum", reduce="zero", sign="same")
@rule("mixer", "ReduceSumSquare", "ReduceL1", "ReduceL2", reduce="zero", sign="nonneg")
@rule("mixer", "ReduceProd", reduce="blocked")
@rule("mixer", "ReduceLogSumExp", "ReduceLogSum", "ArgMax", "ArgMin", reduce="blocked", zeros="nonzero")
def _reduce(node: Node, st: State) -> None:
    lay = st.layout(node.input[0])
    if lay is None:
        block_everything(node, st)
        return
    axes: list[int] | None
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [int(attr(node, "axis", 0))]
    else:
        axes_input_opset = 13 if node.op_type == "ReduceSum" else 18
        axes = attr(node, "axes")
        if axes is None and st.opset >= axes_input_opset:
            axes = const_ints(st, node, "axes", 1)
        if axes is None and len(node.input) > 1 and node.input[1]:
            block_everything(node, st, f"{node.name} ({node.op_type}): axes are computed")
            return
        if not axes:
            axes = [] if attr(node, "noop_with_empty_axes", 0) else list(range(len(lay)))
    axes = [int(a) % len(lay) for a in axes]
    keep = int(attr(node, "keepdims", 1))
    kind = RULES[node.op_type].reduce
    out: list[Layout] = []
    for k, l in enumerate(lay):
        if k in axes:
            if kind == "zero":
                st.needs_zero(node.input[0], l, f"{node.name} ({node.op_type}) reduces over this axis")
            else:
                st.constrain(l, kind, f"{node.name} ({node.op_type}) reduces over this axis")
                if node.op_type == "ReduceMean":
                    same_factor(st, l, f"{node.name} ({node.op_type}) averages over")
            if keep:
                out.append(st.fresh(1, f"reduced by {node.name}"))
        else:
            out.append(l)
    st.set_layout(node.output[0], out)
