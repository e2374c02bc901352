"""Transformer layers seen through the axis groups: heads, head size, hidden and feed-forward groups.

An attention is a Softmax between two MatMuls of activations (scores = Q·Kᵀ, then scores·V). Its head count
is the growable batch axis of the scores MatMul (the factor a Reshape split off the Q projection), its head
size the contracted axis. The hidden size is the group the Q projection reads; a feed-forward group is one
produced from hidden and consumed back into hidden that is not an attention group. `inspect` prints this
and `widen --heads/--ffn/--hidden` grows every layer's group at once.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..collector import cycle_collector_paused
from .groups import Analysis, Group
from .layout import Atom, atoms
from .node import Node
from .state import State

#: ops allowed between the scores MatMul and the Softmax (scale, mask, casts), and after it (dropout, casts)
_BEFORE_SOFTMAX = ("Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity", "Transpose")
_AFTER_SOFTMAX = ("Cast", "Identity", "Dropout", "Where")
#: readers of the probabilities that only test them for a guard (dynamo's scaled_dot_product_attention writes
#: Where(IsNaN(p), 0, p) after the Softmax): not the path to the value MatMul
_GUARDS = ("IsNaN", "IsInf")
#: ops from the Q projection to the scores MatMul
_Q_PATH = ("Reshape", "Transpose", "Add", "Mul", "Div", "Squeeze", "Unsqueeze", "Gather", "Split", "Cast", "Identity")


@dataclass
class Layer:
    """One transformer layer: its attention and the feed-forward groups that follow it."""

    index: int
    scores: str  # the Q·Kᵀ MatMul
    heads: Group | None
    head_size: int | None
    value_size: Group | None  # each head's value width (grows on its own)
    hidden: Group | None
    ffn: list[Group] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "layer": self.index,
            "scores": self.scores,
            "heads": _brief(self.heads),
            "head_size": self.head_size,
            "value_size": _brief(self.value_size),
            "hidden": _brief(self.hidden),
            "ffn": [_brief(g) for g in self.ffn],
        }


def _brief(g: Group | None) -> dict | None:
    return None if g is None else {"group": g.id, "size": g.size, "constraint": g.constraint}


def layers(analysis: Analysis) -> list[Layer]:
    """The transformer layers of a model, in graph order (empty when it has no attention)."""
    with cycle_collector_paused():  # see `cycle_collector_paused`: the analysis holds many objects
        return _layers(analysis)


def _layers(analysis: Analysis) -> list[Layer]:
    st = analysis.state
    order = {n.name: i for i, n in enumerate(st.nodes)}
    consumers = st.readers()

    def groups_of(layout) -> list[Group]:
        if type(layout) is Atom:  # most layouts: one atom, one group at most
            grp = analysis.group_of_atom(layout.id)
            return [] if grp is None else [grp]
        found: dict[int, Group] = {}  # by identity, in order (a Group compares by value, field by field)
        for a in atoms(layout):
            grp = analysis.group_of_atom(a)
            if grp is not None:
                found.setdefault(id(grp), grp)
        return list(found.values())

    produced: dict[str, dict[int, Group]] = {}
    read: dict[str, dict[int, Group]] = {}
    for u in st.weight_uses:
        target = produced if u.role == "producer" else read if u.role == "consumer" else None
        if target is not None:
            for grp in groups_of(u.layout):
                target.setdefault(u.node, {}).setdefault(id(grp), grp)

    found: list[Layer] = []
    attention: set[int] = set()  # every group on an attention's batch, head-size or value axes: not a FFN
    for sm in st.nodes:
        if sm.op_type not in ("Softmax", "LogSoftmax"):
            continue
        qk = _walk_back(sm.input[0], st, _BEFORE_SOFTMAX)
        if qk is None or qk.op_type != "MatMul" or any(st.is_const(i) for i in qk.input):
            continue
        lay = st.layout(qk.input[0])
        if lay is None or len(lay) < 3:
            continue
        on_batch = [grp for l in lay[:-2] for grp in groups_of(l) if grp.producers]
        attention.update(id(grp) for l in lay for grp in groups_of(l))
        # grouped-query attention: the heads axis is key/value heads × a fixed repeat; the free factor grows
        heads = next((grp for grp in on_batch if grp.constraint != "blocked"), on_batch[0] if on_batch else None)
        head_size = st.size(lay[-1])
        av = _walk_forward(sm.output[0], consumers, _AFTER_SOFTMAX)
        value = None
        values = st.layout(av.input[1]) if av is not None else None
        if values is not None:
            value = next((grp for grp in groups_of(values[-1]) if grp.producers), None)
            attention.update(id(grp) for l in values for grp in groups_of(l))
        q_proj = _walk_back(qk.input[0], st, _Q_PATH)
        hidden = next(iter(read.get(q_proj.name, {}).values()), None) if q_proj is not None else None
        found.append(Layer(len(found), qk.name, heads, head_size, value, hidden))
    if not found:
        return found
    # every product of two activations (Q·Kᵀ, P·V, whatever attention form the walks above missed) is attention
    for n in st.nodes:
        if n.op_type == "MatMul" and not any(st.is_const(i) for i in n.input):
            attention.update(id(grp) for i in n.input for l in st.layout(i) or [] for grp in groups_of(l))
    hidden_ids = {id(layer.hidden) for layer in found if layer.hidden is not None}
    # the layers by the position of their scores MatMul: a group belongs to the last one before it
    starts = sorted((order.get(layer.scores, 0), k) for k, layer in enumerate(found))
    # of equal positions the first layer is the owner (max keeps the first of equal keys)
    firsts: list[tuple[int, int]] = []
    for pos, k in starts:
        if not firsts or firsts[-1][0] != pos:
            firsts.append((pos, k))
    for grp in analysis.groups:
        if id(grp) in attention or id(grp) in hidden_ids or not grp.producers or not grp.consumers:
            continue
        from_hidden = all(any(h in hidden_ids for h in read.get(p, {})) for p in grp.producers)
        to_hidden = all(any(h in hidden_ids for h in produced.get(c, {})) for c in grp.consumers)
        if from_hidden and to_hidden:
            at = min(order.get(p, 0) for p in grp.producers)
            i = bisect.bisect_left(firsts, (at, -1)) - 1
            if i >= 0:
                found[firsts[i][1]].ffn.append(grp)
    return found


def _walk_back(name: str, st: State, through: tuple[str, ...], depth: int = 0) -> Node | None:
    """The first node before `name` (following input 0, or the non-constant input) that is not in `through`."""
    node = st.node_of.get(name)
    if node is None or depth > 12:
        return None
    if node.op_type not in through:
        return node
    candidates = node.input[1:3] if node.op_type == "Where" else node.input  # Where(mask, scores, fill)
    inputs = [i for i in candidates if i and not st.is_const(i)]
    return _walk_back(inputs[0], st, through, depth + 1) if inputs else None


def _walk_forward(name: str, consumers: dict[str, list[Node]], through: tuple[str, ...], depth: int = 0) -> Node | None:
    """The first node after `name` that is not in `through`, following its only reader (guards aside)."""
    nxt = [n for n in consumers.get(name, []) if n.op_type not in _GUARDS]
    if len(nxt) != 1 or depth > 6:
        return None
    node = nxt[0]
    return node if node.op_type not in through else _walk_forward(node.output[0], consumers, through, depth + 1)
