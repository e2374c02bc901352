"""Build the axis groups of a model: which (tensor, axis) pairs must grow together, and how."""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import onnx

from ..collector import cycle_collector_paused
from ..graph import find_node, nested_reads
from . import rules
from .layout import Atom, Prod, atoms
from .node import Node
from .shapes import infer
from .state import State


@dataclass
class Group:
    """An axis group: units that grow together, produced by `producers` and read by `consumers`."""

    id: str
    root: int
    size: int | None
    constraint: str  # free | zero | replicate | blocked
    reason: str | None
    producers: list[str]
    consumers: list[str]
    weights: list[str]
    granularity: int = 1
    #: the group's units are present once in each of this many equal blocks of its producers' axis (the
    #: groups of a grouped Conv, the chunks of a channel shuffle): `size` and `granularity` count all of them
    blocks: int = 1

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "size": self.size,
            "constraint": self.constraint,
            "reason": self.reason,
            "producers": self.producers,
            "consumers": self.consumers,
            "weights": self.weights,
            "granularity": self.granularity,
            "blocks": self.blocks,
        }

    def units(self, total: int) -> int:
        """Units of the union-find group for a size counted over all blocks."""
        return total // self.blocks

    def allows(self, init: str, new_size: int) -> str | None:
        """Why `init` strategy cannot grow this group to `new_size` (None: it can)."""
        if self.constraint == "blocked":
            return f"group {self.id} cannot grow: {self.reason}"
        if self.size is not None and (new_size - self.size) % self.granularity and self.blocks > 1:
            return (
                f"group {self.id} repeats its units in {self.blocks} equal blocks (the groups of a grouped Conv or "
                f"the halves of a channel shuffle) and grows inside each: by multiples of {self.granularity}; "
                f"{new_size} - {self.size} is not one"
            )
        if self.size is not None and (new_size - self.size) % self.granularity:
            return (
                f"group {self.id} grows in whole groups of {self.granularity} channels ({self.reason or 'grouped Conv'}); "
                f"{new_size} - {self.size} is not a multiple"
            )
        if self.constraint == "zero" and init != "zero":
            return f"group {self.id} needs new units to stay zero ({self.reason}): only --init zero keeps it exact"
        if self.constraint == "replicate":
            if init != "net2net":
                return f"group {self.id} needs whole copies of its units ({self.reason}): only --init net2net keeps it exact"
            if self.size and new_size % self.size:
                return f"group {self.id} needs whole copies of its units ({self.reason}): {new_size} is not a multiple of {self.size}"
        return None


@dataclass
class Analysis:
    """The groups of a model and the state the rewrite needs."""

    model: onnx.ModelProto
    state: State
    groups: list[Group] = field(default_factory=list)
    #: (the groups list, its length, root -> group): group_of_atom's index, remade when the list changes
    _by_root: tuple[list[Group], int, dict[int, Group]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def group(self, gid: str) -> Group:
        return next(g for g in self.groups if g.id == gid)

    def group_of_atom(self, atom: int) -> Group | None:
        root = self.state.find(atom)
        index = self._by_root
        if index is None or index[0] is not self.groups or index[1] != len(self.groups):
            by_root: dict[int, Group] = {}
            for g in reversed(self.groups):  # the first group of a root wins, as a scan finds it
                by_root[g.root] = g
            index = self._by_root = (self.groups, len(self.groups), by_root)
        return index[2].get(root)

    def names(self) -> list[str]:
        """Every name `resolve` accepts: group ids, node names, weight names."""
        nodes = [n for g in self.groups for n in g.producers]
        weights = [u.init for u in self.state.weight_uses if u.role == "producer"]
        return [g.id for g in self.groups] + nodes + weights

    def resolve(self, name: str) -> Group:
        """A group id, the name of a node that produces the group, or the name of its weight."""
        from ..errors import OnnxGrowError, closest

        by_id = next((g for g in self.groups if g.id == name), None)
        by_name: list[tuple[str, Group]] = []
        for u in self.state.weight_uses:
            if u.role == "producer" and (u.node == name or u.init == name):
                # a producer split by a Reshape (heads × head size) makes several groups: name the one that grows
                parts = [g for a in atoms(u.layout) if (g := self.group_of_atom(a)) is not None]
                growable = [g for g in parts if g.constraint != "blocked"]
                if len(growable) > 1:
                    raise OnnxGrowError(
                        f"{name!r} is ambiguous: it produces groups {', '.join(g.id for g in growable)} (a Reshape "
                        f"splits its output); use one of these ids from `onnxgrow inspect`"
                    )
                found = growable[0] if growable else parts[0] if parts else None
                if found and all(found is not g for _, g in by_name):
                    by_name.append((f"{'node' if u.node == name else 'weight'} {name} of group {found.id}", found))
        if by_id is not None and any(g is not by_id for _, g in by_name):
            # a tensor called like a group id: growing the wrong layer silently would be worse than asking
            others = "; ".join(what for what, g in by_name if g is not by_id)
            raise OnnxGrowError(
                f"{name!r} is ambiguous: it is group {by_id.id} and also {others}; name the layer by another of "
                f"its names (a node or weight name from `onnxgrow inspect`)"
            )
        if by_id is not None:
            return by_id
        if len(by_name) > 1:
            raise OnnxGrowError(
                f"{name!r} is ambiguous: it names "
                + " and ".join(w for w, _ in by_name)
                + "; use the group id from `onnxgrow inspect`"
            )
        if by_name:
            return by_name[0][1]
        node_names = {n.name: n for n in self.model.graph.node}
        if name in self.state.boundaries:
            raise OnnxGrowError(f"{name!r} makes no axis group that can grow: {self.state.boundaries[name]}")
        if name in node_names or name in self.state.inits:
            makers = ", ".join(op for op, r in rules.RULES.items() if r.role == "producer")
            raise OnnxGrowError(
                f"{name!r} produces no axis group that can grow (only nodes with weights — {makers} — make new "
                "units); see `onnxgrow inspect`"
            )
        hint = closest(name, self.names()) or " (`onnxgrow inspect` lists the names)"
        raise OnnxGrowError(f"no node, weight or group named {name!r}{hint}")


#: ops of quantised models (QDQ and QLinear/Integer forms, standard and onnxruntime's com.microsoft domain)
QUANTISED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulInteger16",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "MatMulBnb4",
        "GatherBlockQuantized",
        "QuantizeBFP",
        "DequantizeBFP",
        "DynamicQuantizeLSTM",
    }
)


def _is_quantised(node: Node | onnx.NodeProto) -> bool:
    return node.op_type in QUANTISED_OPS or node.op_type.startswith("QLinear")


def _quantised_node(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The first node of a quantised model's ops (subgraphs included), if any."""
    return find_node(graph, _is_quantised)


def refuse_quantised(model: onnx.ModelProto, command: str) -> None:
    """Growing a quantised model would leave new weights and units without quantisation parameters: refuse."""
    from ..errors import OnnxGrowError

    node = _quantised_node(model.graph)
    if node is not None:
        raise OnnxGrowError(
            f"{command}: node {node.name or '(unnamed)'} ({node.op_type}): quantised models are not supported yet; "
            "grow the float model, then quantise it again"
        )


_NOTHING: frozenset[str] = frozenset()  # what the subgraphs of a node without attributes read


def analyse(model: onnx.ModelProto, keep_outputs: bool = False) -> Analysis:
    """Run every node's rule over the graph and summarise the groups (model as loaded by onnxgrow.load).

    With `keep_outputs`, axes that reach a graph output may grow: widen then slices the output back to the
    original units (the first copy of each), so the model's interface stays the same.
    """
    with cycle_collector_paused():
        return _analyse(model, keep_outputs)


def _analyse(model: onnx.ModelProto, keep_outputs: bool) -> Analysis:
    shapes = infer(model)
    st = State(model, shapes)
    for inp in model.graph.input:
        if inp.name in st.inits:
            continue
        lay = st.fresh_layout(inp.name, f"graph input {inp.name}")
        for l in lay or []:
            st.block(l, f"it comes from graph input {inp.name}")
    inner_reads: list[AbstractSet[str]] = []  # what each node's subgraphs read (If/Loop/Scan bodies; mostly nothing)
    for node in st.nodes:
        rule = rules.rule_for(node.op_type, node.domain)
        reads = nested_reads(node.proto) if len(node.proto.attribute) else _NOTHING
        inner_reads.append(reads)
        for name in reads if rule is None or not rule.subgraphs else ():
            for l in st.layout(name) or []:
                st.block(l, f"{node.name} ({node.op_type}) reads it inside a subgraph")
        if rule is None:
            why = None
            if node.domain not in ("", "ai.onnx"):
                why = f"{node.name} is op {node.op_type} of domain {node.domain!r}, which onnxgrow does not know"
            elif node.op_type in QUANTISED_OPS:
                why = f"{node.name} ({node.op_type}): quantised models are not supported yet"
            rules.block_everything(node, st, why)
        else:
            rule.apply(node, st)
        rules.track_values(node, st, rule)
    for out in model.graph.output:
        if keep_outputs and out.name in st.node_of:
            st.kept_outputs.append(out.name)
            continue
        for l in st.layout(out.name) or []:
            st.block(l, f"it reaches graph output {out.name}")
    for check in st.deferred:
        check()
    st.normalise()
    _check_all_uses(model, st, inner_reads)
    groups = _summarise(st)
    # the main graph first, as `_quantised_node` walks it; subgraphs only when some node has one (and reads)
    quantised = next((n.proto for n in st.nodes if _is_quantised(n)), None)
    if quantised is None and any(inner_reads):
        quantised = _quantised_node(model.graph)
    if quantised is not None:  # as widen refuses: inspect must not show a group as free
        for g in groups:
            g.constraint = "blocked"
            g.reason = f"{quantised.name} ({quantised.op_type}): quantised models are not supported yet"
    return Analysis(model, st, groups)


def _check_all_uses(model: onnx.ModelProto, st: State, inner_reads: list[AbstractSet[str]]) -> None:
    """Weights read where no rule recorded how they grow.

    A main-graph node reading a weight without a recorded use keeps the weight as it is: the rewrite gives
    it its own copy when the weight grows for its other readers (untying). A weight read inside a subgraph
    or that is a graph output keeps its name, so it can grow only if every recorded reader leaves it as it is.
    """
    recorded: set[str] = {u.init for u in st.weight_uses} | {v.init for v in st.value_uses}
    for reads in inner_reads:
        st.subgraph_reads.update(i for i in reads if i in st.inits)
    pinned = st.subgraph_reads | {o.name for o in model.graph.output}
    for init in recorded & pinned:
        where = "is a graph output" if init in {o.name for o in model.graph.output} else "is read inside a subgraph"
        for u in st.weight_uses:
            if u.init == init:
                st.block(u.layout, f"weight {init} {where}")


def _summarise(st: State) -> list[Group]:
    by_root: dict[int, tuple[dict[str, None], dict[str, None]]] = {}  # root → (consumers, weights): ordered sets
    find = st.find
    for u in st.weight_uses:
        lay = u.layout
        for a in (lay.id,) if type(lay) is Atom else atoms(lay):
            root = find(a)
            entry = by_root.get(root)
            if entry is None:  # (not setdefault: that would make the two dicts for every atom of every use)
                entry = by_root[root] = ({}, {})
            if u.role == "consumer":
                entry[0].setdefault(u.node)
            entry[1].setdefault(u.init)
    order = {node.name: idx for idx, node in enumerate(st.nodes)}
    # the count of equal blocks (a grouped Conv's groups, a shuffle's halves) is fixed by the graph: not a layer
    replicas = {st.find(a) for a in st.replicas}
    roots = [r for r in by_root if st.info[r].producers and r not in replicas]
    roots.sort(key=lambda r: min(order.get(p, 1 << 30) for p in st.info[r].producers))
    # without replicas every group is one block (`_blocks` finds no factor that counts blocks)
    nodes = {n.name: n for n in st.nodes} if replicas else {}
    groups = []
    for i, root in enumerate(roots):
        info = st.info[root]
        constraint, reason = _constraint(info)
        if info.size is None and constraint != "blocked":
            constraint, reason = "blocked", "its size is not known statically"
        blocks = _blocks(st, root, nodes, replicas) if replicas else 1
        size = None if info.size is None else info.size * blocks
        groups.append(
            Group(
                f"g{i}",
                root,
                size,
                constraint,
                reason,
                list(dict.fromkeys(info.producers)),
                list(by_root[root][0]),
                list(by_root[root][1]),
                info.granularity * blocks,
                blocks,
            )
        )
    return groups


def _blocks(st: State, root: int, nodes: dict[str, Node], replicas: set[int]) -> int:
    """In how many equal blocks every producer of a group repeats its units in its output (1 unless all agree).

    A producer's output axis Prod(2, unit, 2) (a channel shuffle of two branches) or Prod(groups, unit) (a
    grouped Conv) holds each unit of the group once per block: the layer's size is blocks x units.
    """
    found: set[int] = set()
    for name in st.info[root].producers:
        node = nodes.get(name)
        out = st.layout(node.output[0]) if node is not None else None
        axes = [l for l in out or [] if any(st.find(a) == root for a in atoms(l))]
        if len(axes) != 1:
            return 1
        factors = list(axes[0].factors) if isinstance(axes[0], Prod) else [axes[0]]
        others = [f for f in factors if not (isinstance(f, Atom) and st.find(f.id) == root)]
        if len(others) != len(factors) - 1 or any(
            not isinstance(f, Atom) or st.find(f.id) not in replicas for f in others
        ):
            return 1
        found.add(math.prod(st.size(f) or 1 for f in others))
    return found.pop() if len(found) == 1 else 1


def _constraint(info) -> tuple[str, str | None]:
    blocked = [r for k, r in info.constraints if k == "blocked"]
    if blocked:
        return "blocked", blocked[0]
    zero = [r for k, r in info.constraints if k == "zero"]
    rep = [r for k, r in info.constraints if k == "replicate"]
    if zero and rep:
        return "blocked", f"{zero[0]} needs new units to be zero, but {rep[0]} needs copies"
    if zero:
        if info.nonzero_ops:
            return (
                "blocked",
                f"{zero[0]} needs new units to be zero, but {info.nonzero_ops[0]} maps 0 to a non-zero value",
            )
        return "zero", zero[0]
    if rep:
        return "replicate", rep[0]
    return "free", None
