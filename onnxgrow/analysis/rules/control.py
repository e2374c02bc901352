"""Control flow: an If whose condition growth cannot change is followed into the branch it takes.

Any other If (and Loop, Scan: they have no rule) blocks every layout its subgraphs read.
"""

from __future__ import annotations

import onnx

from ...graph import nested_reads
from ..node import Node
from ..state import State
from .common import attr, block_everything, inp
from .registry import RULES, rule
from .shape_trace import growable, static_value
from .values import track_values


@rule("coupling", "If", subgraphs=True, zeros="own")
def _if(node: Node, st: State) -> None:
    """An If whose condition growth cannot change (torch's Squeeze-if-size-is-1): the chosen branch's rule.

    Only a branch made of Constants and one Identity/Squeeze/Unsqueeze of an outer tensor is followed;
    any other If blocks what its subgraphs read.
    """
    cond = static_value(st, node.input[0])
    why = f"{node.name} (If) reads it inside a subgraph"
    if cond is not None and cond[0].size == 1 and not growable(st, cond[1]):
        branch = attr(node, "then_branch" if bool(cond[0].reshape(-1)[0]) else "else_branch")
        if _follow_branch(node, st, branch):
            return
        why = f"{node.name} (If) reads it inside a branch onnxgrow cannot follow"
    for name in nested_reads(node.proto):
        for l in st.layout(name) or []:
            st.block(l, why)
    block_everything(node, st, why)


def _follow_branch(node: Node, st: State, branch: onnx.GraphProto) -> bool:
    consts = {}
    for n in branch.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    body = [n for n in branch.node if n.output[0] not in consts]
    if len(body) != 1 or len(branch.output) != 1 or len(node.output) != 1 or branch.output[0].name != body[0].output[0]:
        return False
    inner = body[0]
    src = inp(inner, 0)
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
    view = Node(copy)
    RULES[inner.op_type].apply(view, st)
    track_values(view, st)
    return True
