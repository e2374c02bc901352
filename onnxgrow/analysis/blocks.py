"""Residual blocks: find them (a branch that leaves a stream and re-joins it at an Add), for `inspect` and deepen.

A block is what `deepen --block copy` copies (onnxgrow.passes.copy_blocks); a chain of blocks that starts where
the previous one ends is a transformer layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..collector import cycle_collector_paused
from ..errors import OnnxGrowError, closest
from ..graph import Index

_NORMS = ("LayerNormalization", "BatchNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
_IDEMPOTENT = ("Relu",)


@dataclass
class Block:
    """A residual block: nodes from `entry` (the stream) to `exit` (the stream after the block)."""

    id: str
    kind: str
    nodes: list[str]
    entry: str
    exit: str
    add: str
    branch: str  # the tensor the branch feeds into the residual Add
    exact: bool

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "nodes": self.nodes, "exact": self.exact}


#: ops of the small integer arithmetic that reads sizes (a Reshape target's batch read from the input ids)
_SHAPE_OPS = (
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Slice",
    "Identity",
    "Range",
    "ConstantOfShape",
    "Equal",
    "Where",
    "Expand",
    "Reshape",
    "Not",
    "Trilu",
)
#: past this many steps, size arithmetic is not followed (a block's own computation is not a size)
_SHAPE_DEPTH = 16


class Blocks(list[Block]):
    """The blocks of a model in graph order (a list), looked up by id or Add name without a scan."""

    _by_name: dict[str, Block] | None = None
    _position: dict[int, int]
    #: the index of the graph the blocks were found in (CopyBlocks reuses it while the graph is unchanged)
    graph_index: BlockIndex | None = None

    def _index(self) -> dict[str, Block]:
        if self._by_name is None:
            by_name: dict[str, Block] = {}
            for b in reversed(self):  # the first block of a name wins, as a scan in order finds it
                by_name[b.add] = b
                by_name[b.id] = b
            self._by_name = by_name
            self._position = {id(b): k for k, b in enumerate(self)}
        return self._by_name

    def lookup(self, name: str) -> Block | None:
        """The first block whose id or Add is `name`."""
        return self._index().get(name)

    def position(self, block: Block) -> int:
        """Where `block` is in the list."""
        self._index()
        return self._position[id(block)]


def as_blocks(blocks: list[Block]) -> Blocks:
    """`blocks` as a Blocks list (itself when it is one)."""
    return blocks if isinstance(blocks, Blocks) else Blocks(blocks)


class BlockIndex(Index):
    """The graph's index (onnxgrow.graph.Index) with, per tensor, whether it is a size or constant (the same
    for a block and its copy) or depends on a graph input; made once for the block search and the copies."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__(model)
        # one pass in graph order (inputs are written before they are read):
        # height[t]: nodes on the longest path of size arithmetic computing t (capped past _SHAPE_DEPTH);
        # reaches[t]: walking back from t's node, past constants and sizes, meets a graph input or a subgraph
        self.height: dict[str, int] = {}
        self.reaches: dict[str, bool] = {}
        cap = _SHAPE_DEPTH + 1
        for k, op in enumerate(self.ops):
            ins = self.ins[k]
            if op in ("Shape", "Size") and ins[0] not in self.producer:
                h = 1
            elif op in _SHAPE_OPS:
                h = min(1 + max((self._height(i) for i in ins), default=0), cap)
            else:
                h = cap
            r = self.subgraph[k] or any(
                self._height(i) > _SHAPE_DEPTH and self.reaches.get(i, i not in self.producer) for i in ins
            )
            for o in self.outs[k]:
                self.height[o] = h
                self.reaches[o] = r

    def _height(self, t: str) -> int:
        if t in self.inits or t == "":
            return 0
        return self.height.get(t, _SHAPE_DEPTH + 1)  # a graph input is no size

    def shape_only(self, t: str) -> bool:
        """Whether `t` is computed from sizes of graph inputs and constants alone (the same for a block and its
        copy), in at most _SHAPE_DEPTH steps."""
        return self._height(t) <= _SHAPE_DEPTH


def _branch(stream: str, branch: str, gr: BlockIndex) -> list[int] | None:
    """Nodes computing `branch` from `stream`, constants and sizes only; None when something else feeds in.

    A node written before the stream cannot read it: when its inputs come from a graph input the branch does
    not come from the stream alone, known without walking there (the walk stays inside the block)."""
    start = gr.producer.get(stream, -1)
    found: dict[str, int] = {}
    frontier = [branch]
    while frontier:
        t = frontier.pop()
        if t == stream or t in gr.inits or t == "" or (t != branch and gr.shape_only(t)):
            continue
        k = gr.producer.get(t)
        if k is None:
            return None  # a graph input other than the stream
        if k < start and gr.reaches[t]:
            return None  # comes from a graph input, not through the stream
        if gr.names[k] in found:
            continue
        if gr.subgraph[k]:
            return None
        found[gr.names[k]] = k
        frontier.extend(gr.ins[k])
    if not any(stream in gr.ins[k] for k in found.values()):
        return None
    return list(found.values())


def find_blocks(model: onnx.ModelProto) -> Blocks:
    """Every Add whose one input is a branch computed from the other input alone (in time about linear in the
    size of the graph: each branch is walked from the Add back to where it leaves the stream)."""
    with cycle_collector_paused():  # the index makes many small objects: see `cycle_collector_paused`
        return _find_blocks(model)


def _find_blocks(model: onnx.ModelProto) -> Blocks:
    gr = BlockIndex(model)
    blocks = Blocks()
    blocks.graph_index = gr
    for a, op in enumerate(gr.ops):
        ins = gr.ins[a]
        if op != "Add" or len(ins) != 2 or ins[0] in gr.inits or ins[1] in gr.inits:
            continue
        for stream, branch in (ins, ins[::-1]):
            nodes = _branch(stream, branch, gr)
            if not nodes or not any(gr.ops[k] in ("Conv", "Gemm", "MatMul") for k in nodes):
                continue
            names = {gr.names[k] for k in nodes}
            inner = {o for k in nodes for o in gr.outs[k]}
            add_name = gr.names[a]
            if any(
                gr.names[c] not in names and gr.names[c] != add_name for o in inner for c in gr.consumers.get(o, [])
            ):
                continue  # a branch tensor is read outside the block
            if inner & gr.outputs:
                continue
            members = sorted(nodes, key=lambda k: gr.order[gr.names[k]]) + [a]
            exit_, exact = gr.outs[a][0], True
            after = gr.consumers.get(exit_, [])
            # a pre-norm branch normalises the stream itself: a norm after its Add belongs to what follows
            # (the network's final norm), not to the block
            pre_norm = any(gr.ops[k] in _NORMS and gr.ins[k][0] == stream for k in nodes)
            if len(after) == 1 and exit_ not in gr.outputs and gr.ins[after[0]][0] == exit_:
                nxt = after[0]
                if gr.ops[nxt] in _NORMS and not pre_norm:
                    members.append(nxt)
                    exit_, exact = gr.outs[nxt][0], False
                elif gr.ops[nxt] in _IDEMPOTENT:
                    members.append(nxt)
                    exit_ = gr.outs[nxt][0]
            ops = [gr.ops[k] for k in members]
            kind = "attention" if "Softmax" in ops else "conv" if "Conv" in ops else "feed-forward"
            if kind == "conv":
                kind = "bottleneck" if ops.count("Conv") >= 3 else "basic"
            kind += " (post-norm)" if not exact else ""
            blocks.append(
                Block(f"b{len(blocks)}", kind, [gr.names[k] for k in members], stream, exit_, add_name, branch, exact)
            )
            break
    return blocks


def resolve_block(blocks: list[Block], name: str) -> Block:
    """The block whose id (`b3`) or Add node is `name`."""
    found = as_blocks(blocks).lookup(name)
    if found is not None:
        return found
    if not blocks:
        raise OnnxGrowError(
            f"--after {name}: this model has no residual block that can be copied "
            "(a branch that leaves a stream and re-joins it at an Add)"
        )
    names = [b.id for b in blocks] + [b.add for b in blocks]
    raise OnnxGrowError(
        f"--after {name}: no residual block of that id{closest(name, names)}; blocks: {', '.join(b.id for b in blocks)}"
    )


def layer_units(blocks: list[Block]) -> list[str]:
    """One unit per transformer layer: its attention block and the block that starts where it ends (`bA-bB`)."""
    units = []
    for k, b in enumerate(blocks):
        if b.kind.startswith("attention"):
            nxt = blocks[k + 1] if k + 1 < len(blocks) else None
            units.append(
                f"{b.id}-{nxt.id}"
                if nxt is not None and nxt.entry == b.exit and not nxt.kind.startswith("attention")
                else b.id
            )
    return units


def resolve_chain(blocks: list[Block], name: str) -> list[Block]:
    """`bN` → [bN]; `bA-bB` → the blocks A..B, each starting where the previous one ends (a transformer layer)."""
    blocks = as_blocks(blocks)
    first, sep, last = name.partition("-")
    if not sep or not last:
        return [resolve_block(blocks, name)]
    a, b = resolve_block(blocks, first), resolve_block(blocks, last)
    ia, ib = blocks.position(a), blocks.position(b)
    if ib < ia:
        raise OnnxGrowError(f"--after {name}: {b.id} comes before {a.id}; give the blocks in order")
    chain = blocks[ia : ib + 1]
    for x, y in zip(chain, chain[1:]):
        if y.entry != x.exit:
            raise OnnxGrowError(
                f"--after {name}: block {y.id} does not start where {x.id} ends, so they cannot be copied as one unit"
            )
    return chain
