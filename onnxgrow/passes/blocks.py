"""Residual blocks: find them (a branch that leaves a stream and re-joins it at an Add) and copy them.

A copy whose projection into the residual Add is zero adds nothing, so the model is unchanged, except when a
normalisation follows the Add inside the block (post-norm): then the copy normalises twice (approximate).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxGrowError, closest
from ..graph import torch_name_scopes
from ..stream import Deferred, has_data, pieces, raw_nbytes, stub, zeros

_NORMS = ("LayerNormalization", "BatchNormalization", "RMSNormalization", "SimplifiedLayerNormalization")
_THROUGH = ("Reshape", "Transpose", "Dropout", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten")
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
_SHAPE_OPS = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Mul", "Add", "Sub", "Div", "Slice", "Identity",
              "Range", "ConstantOfShape", "Equal", "Where", "Expand", "Reshape", "Not", "Trilu")
#: past this many steps, size arithmetic is not followed (a block's own computation is not a size)
_SHAPE_DEPTH = 16
_SUBGRAPH = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


class Blocks(list):
    """The blocks of a model in graph order (a list), looked up by id or Add name without a scan."""

    _by_name: dict[str, Block] | None = None
    _position: dict[int, int]
    #: the index of the graph the blocks were found in (copy_units reuses it while the graph is unchanged)
    graph_index: _Graph | None = None

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


def _blocks(blocks: list[Block]) -> Blocks:
    return blocks if isinstance(blocks, Blocks) else Blocks(blocks)


class _Graph:
    """The graph indexed once for the block search and the copies: each node's name, op, inputs and outputs
    (read from the protobuf once), producers, readers, positions, and which tensors are sizes or constants
    (the same for a block and its copy) or depend on a graph input."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.nodes = list(g.node)
        self.names = [n.name for n in self.nodes]
        self.ops = [n.op_type for n in self.nodes]
        self.ins = [tuple(n.input) for n in self.nodes]
        self.outs = [tuple(n.output) for n in self.nodes]
        self.inits = {t.name for t in g.initializer}
        self.producer: dict[str, int] = {}  # tensor -> index of the node that writes it
        self.consumers: dict[str, list[int]] = {}
        for k, (ins, outs) in enumerate(zip(self.ins, self.outs)):
            for i in ins:
                self.consumers.setdefault(i, []).append(k)
            for o in outs:
                self.producer[o] = k
        self.order = {name: k for k, name in enumerate(self.names)}
        self.outputs = {o.name for o in g.output}
        # one pass in graph order (inputs are written before they are read):
        # height[t]: nodes on the longest path of size arithmetic computing t (capped past _SHAPE_DEPTH);
        # reaches[t]: walking back from t's node, past constants and sizes, meets a graph input or a subgraph
        self.subgraph = [len(n.attribute) > 0 and any(a.type in _SUBGRAPH for a in n.attribute) for n in self.nodes]
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
            r = self.subgraph[k] or any(self._height(i) > _SHAPE_DEPTH and self.reaches.get(i, i not in self.producer)
                                        for i in ins)
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

    def current(self, model: onnx.ModelProto) -> bool:
        """Whether this index still describes `model` (the same object, no node added or removed)."""
        return model is self.model and len(model.graph.node) == len(self.nodes)


def _branch(stream: str, branch: str, gr: _Graph) -> list[int] | None:
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
    gr = _Graph(model)
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
            if any(gr.names[c] not in names and gr.names[c] != add_name for o in inner
                   for c in gr.consumers.get(o, [])):
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
            kind = ("attention" if "Softmax" in ops else
                    "conv" if "Conv" in ops else "feed-forward")
            if kind == "conv":
                kind = "bottleneck" if ops.count("Conv") >= 3 else "basic"
            kind += " (post-norm)" if not exact else ""
            blocks.append(Block(f"b{len(blocks)}", kind, [gr.names[k] for k in members], stream, exit_, add_name,
                                branch, exact))
            break
    return blocks


def resolve_block(blocks: list[Block], name: str) -> Block:
    """The block whose id (`b3`) or Add node is `name`."""
    found = _blocks(blocks).lookup(name)
    if found is not None:
        return found
    if not blocks:
        raise OnnxGrowError(f"--after {name}: this model has no residual block that can be copied "
                            "(a branch that leaves a stream and re-joins it at an Add)")
    names = [b.id for b in blocks] + [b.add for b in blocks]
    raise OnnxGrowError(f"--after {name}: no residual block of that id{closest(name, names)}; "
                        f"blocks: {', '.join(b.id for b in blocks)}")


def layer_units(blocks: list[Block]) -> list[str]:
    """One unit per transformer layer: its attention block and the block that starts where it ends (`bA-bB`)."""
    units = []
    for k, b in enumerate(blocks):
        if b.kind.startswith("attention"):
            nxt = blocks[k + 1] if k + 1 < len(blocks) else None
            units.append(f"{b.id}-{nxt.id}" if nxt is not None and nxt.entry == b.exit
                         and not nxt.kind.startswith("attention") else b.id)
    return units


def resolve_chain(blocks: list[Block], name: str) -> list[Block]:
    """`bN` → [bN]; `bA-bB` → the blocks A..B, each starting where the previous one ends (a transformer layer)."""
    blocks = _blocks(blocks)
    first, sep, last = name.partition("-")
    if not sep or not last:
        return [resolve_block(blocks, name)]
    a, b = resolve_block(blocks, first), resolve_block(blocks, last)
    ia, ib = blocks.position(a), blocks.position(b)
    if ib < ia:
        raise OnnxGrowError(f"--after {name}: {b.id} comes before {a.id}; give the blocks in order")
    chain = blocks[ia:ib + 1]
    for x, y in zip(chain, chain[1:]):
        if y.entry != x.exit:
            raise OnnxGrowError(f"--after {name}: block {y.id} does not start where {x.id} ends, so they cannot be "
                                f"copied as one unit")
    return chain


ORDERS = ("interleave", "stack")


@dataclass
class _Copy:
    """One inserted copy of a unit: its nodes (each with the name of the node it copies), its weights (copy
    name -> source name) and which layer it copies (`layer`, old position; None when not a layer) as copy `k`."""

    nodes: list[tuple[onnx.NodeProto, str]]
    weights: dict[str, str]
    layer: int | None
    k: int
    zeroed: set[str]


def copy_units(model: onnx.ModelProto, units: list[str], count: int, result, order: str = "interleave", *,
               blocks: list[Block] | None = None, deferred: dict[str, Deferred] | None = None) -> dict:
    """Insert `count` copies of each unit (a block `bN` or a chain `bA-bB`: a transformer layer), each copy's
    projections into its residual Adds zeroed, and return the growth-map step that records it.

    `order` "interleave" puts each unit's copies right after it (L0 L0' L1 L1'); "stack" puts them after the
    last unit, the whole sequence repeated `count` times (L0 L1 L0' L1', as G_stack does). When the units are
    transformer layers whose names carry a layer number (`model.layers.1`, `/bert/encoder/layer.1/...`),
    the layers are renumbered in their new order: weight names, node names and the exporter's module scopes
    of the layers and of their copies then read like an export of the deeper model.

    `blocks` are the model's blocks when already found. With `deferred` (name -> bytes of the stubs among the
    model's initializers; see onnxgrow.stream), each copied weight is added as a stub whose bytes are deferred
    there too: those of its source, or zeros for a zeroed projection; without it, copies are filled in at once.
    The graph is indexed once and every copy spliced in one pass: time grows with the size of the model.
    """
    if order not in ORDERS:
        raise OnnxGrowError(f"--order {order!r}: expected one of {', '.join(ORDERS)}")
    blocks = _blocks(find_blocks(model) if blocks is None else blocks)
    chains = [resolve_chain(blocks, u) for u in units]
    seen: dict[str, str] = {}
    for unit, chain in zip(units, chains):
        for b in chain:
            if b.id in seen:
                raise OnnxGrowError(f"--after {','.join(units)}: block {b.id} is named twice ({seen[b.id]}, {unit})")
            seen[b.id] = unit
    chains.sort(key=lambda c: blocks.position(c[0]))
    layers = [[b.id for b in resolve_chain(blocks, u)] for u in layer_units(blocks)]
    layer_of: dict[tuple[str, ...], int] = {}
    for p, ids in enumerate(layers):
        layer_of.setdefault(tuple(ids), p)
    positions = [layer_of.get(tuple(b.id for b in c)) for c in chains]
    as_layers = all(p is not None for p in positions)
    # runs of copies: (the unit they follow, [(unit, copy number), ...] in order)
    if order == "interleave":
        runs = [(k, [(k, c) for c in range(1, count + 1)]) for k in range(len(chains))]
    else:
        runs = [(len(chains) - 1, [(k, c) for c in range(1, count + 1) for k in range(len(chains))])]
    table = None
    if as_layers:
        following: dict[int, list[tuple[int, int]]] = {}
        for after, seq in runs:
            following.setdefault(positions[after], []).extend(seq)  # type: ignore[arg-type]
        table = []
        for p in range(len(layers)):
            table.append({"from": p, "copy": 0})
            table += [{"from": positions[k], "copy": c} for k, c in following.get(p, [])]
    words = _layer_words(model, blocks, layers) if as_layers else None
    splicer = _Splicer(model, result, deferred, blocks.graph_index)
    copies: list[_Copy] = []
    # later runs first (the order of the names and weights they add)
    for after, seq in sorted(runs, key=lambda r: -blocks.position(chains[r[0]][-1])):
        copies += splicer.insert_copies(chains, positions, after, seq)
    splicer.splice()
    step: dict = {"op": "deepen", "block": "copy", "order": order, "count": count, "layer_scopes": [],
                  "layers": table, "weights": {}}
    for cp in copies:
        for name, src in cp.weights.items():
            step["weights"][name] = {"source": src, "copy": True, "zeroed": name in cp.zeroed}
    if words and table is not None:
        new_index = {(x["from"], x["copy"]): i for i, x in enumerate(table)}
        renamed = _renumber(model, tuple(words), new_index, copies, step["weights"], splicer.deferred)
        if renamed is not None:
            step["layer_scopes"] = list(words.values())
            result.inserted = [renamed.get(n, n) for n in result.inserted]
    if deferred is None:
        _fill(model, splicer.deferred)
    for chain in chains:
        kinds = " + ".join(f"{b.id} ({b.kind})" for b in chain)
        exact = all(b.exact for b in chain)
        one = len(chain) == 1
        result.notes.append(f"copied {'block' if one else 'blocks'} {kinds} {count} time(s); "
                            f"{'its projection' if one else 'each projection'} into the residual Add is zero"
                            + ("" if exact else f"; a normalisation follows {'the' if one else 'an'} Add, so the "
                                                "copy is approximate"))
        result.exact &= exact
    if order == "stack":
        result.notes.append(f"stacked: the copies follow {chains[-1][-1].id}, in the order of the units")
    return step


class _Splicer:
    """Copies of units built against an index of the graph made once; `splice` puts them all in place."""

    def __init__(self, model: onnx.ModelProto, result, deferred: dict[str, Deferred] | None,
                 index: _Graph | None = None) -> None:
        g = self.graph = model.graph
        gr = self.index = index if index is not None and index.current(model) else _Graph(model)
        self.result = result
        self.inits = {t.name: t for t in g.initializer}
        self.outputs = gr.outputs
        # every node, initializer and tensor name in the main graph (as onnxgrow.passes.deepen.taken_names)
        self.taken = set(gr.names) | gr.inits | set(gr.consumers) | set(gr.producer)
        self.taken |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
        self.copy_numbers: dict[str, set[int]] = {}  # unit -> k of every name `unit/copyK/...` taken
        for name in self.taken:
            unit, sep, rest = name.partition("/copy")
            number, slash, _ = rest.partition("/")
            if sep and slash and number.isdigit() and "/" not in unit:
                self.copy_numbers.setdefault(unit, set()).add(int(number))
        self.deferred: dict[str, Deferred] = {} if deferred is None else deferred
        self.inserts: dict[int, list[onnx.NodeProto]] = {}  # position of a node -> new nodes after it

    def _free_copy_number(self, unit: str) -> int:
        used = self.copy_numbers.setdefault(unit, set())
        k = 0
        while k in used:
            k += 1
        used.add(k)
        return k

    def _copy_weight(self, src: onnx.TensorProto, name: str) -> onnx.TensorProto:
        """A copy of `src` named `name`: a stub with the source's bytes deferred when they are raw bytes."""
        t = self.graph.initializer.add()  # made in place (extend would copy again)
        source = self.deferred.get(src.name)
        if source is not None and not has_data(src):
            t.CopyFrom(src)
            self.deferred[name] = source
        elif src.HasField("raw_data") and (nbytes := raw_nbytes(src.data_type, src.dims)) is not None:
            t.CopyFrom(stub(src))
            self.deferred[name] = Deferred(nbytes, lambda src=src: src.raw_data)
        else:
            t.CopyFrom(src)
        t.name = name
        return t

    def _zero(self, t: onnx.TensorProto) -> str:
        if t.name in self.deferred and not has_data(t):
            self.deferred[t.name] = zeros(self.deferred[t.name].nbytes)
            return t.name
        return _zero(t)

    def _rename_tensor(self, old: str, new: str) -> None:
        """Tensor `old` is called `new` from now on: in its writer, its readers and the index."""
        gr = self.index
        writer = gr.producer.pop(old, None)
        readers = gr.consumers.pop(old, [])
        for k in dict.fromkeys(([writer] if writer is not None else []) + readers):
            n = gr.nodes[k]
            gr.outs[k] = tuple(new if o == old else o for o in gr.outs[k])
            gr.ins[k] = tuple(new if i == old else i for i in gr.ins[k])
            n.output[:] = list(gr.outs[k])
            n.input[:] = list(gr.ins[k])
        if writer is not None:
            gr.producer[new] = writer
        gr.consumers[new] = readers
        for vi in self.graph.value_info:
            if vi.name == old:
                vi.name = new

    def insert_copies(self, chains: list[list[Block]], positions: list[int | None], after: int,
                      seq: list[tuple[int, int]]) -> list[_Copy]:
        """Copies of `chains[k]` for each (k, copy number) of `seq`, one after the other, to go after the last
        node of `chains[after]`; each reads the stream the one before it writes."""
        gr, taken, inits = self.index, self.taken, self.inits
        anchor = chains[after]
        exit_ = anchor[-1].exit
        stream = exit_
        members = {nm for b in anchor for nm in b.nodes}
        readers = [k for k in dict.fromkeys(gr.consumers.get(exit_, [])) if gr.names[k] not in members]
        if exit_ in self.outputs:
            # the unit's output is the graph's: it now writes an inner tensor, the last copy the output
            stream = f"{exit_}/before_copy"
            while stream in taken:
                stream += "_"
            self._rename_tensor(exit_, stream)
            taken.add(stream)
        position = max(gr.order[nm] for nm in members)
        entry = stream
        new_nodes: list[onnx.NodeProto] = []
        made: list[_Copy] = []
        for k, c in seq:
            chain = chains[k]
            first, last = chain[0], chain[-1]
            unit = "-".join(dict.fromkeys([first.id, last.id]))
            # copying a block of a grown model again continues the numbering: no name is reused
            prefix = f"{unit}/copy{self._free_copy_number(unit)}"
            taken.add(f"{prefix}/")
            rename = {first.entry: entry}
            new_inits: dict[str, onnx.TensorProto] = {}
            copy = _Copy([], {}, positions[k], c, set())
            for block in chain:
                for nm in block.nodes:
                    at = gr.order[nm]
                    node = onnx.NodeProto()
                    node.CopyFrom(gr.nodes[at])
                    node.name = f"{prefix}/{nm.lstrip('/')}"
                    ins = list(gr.ins[at])
                    for j, i in enumerate(ins):
                        if i in inits:
                            if i not in new_inits:
                                t = self._copy_weight(inits[i], f"{prefix}/{i.lstrip('/')}")
                                new_inits[i] = t
                                copy.weights[t.name] = i
                            ins[j] = new_inits[i].name
                        elif i in rename:
                            ins[j] = rename[i]
                    outs = list(gr.outs[at])
                    for j, o in enumerate(outs):
                        if o:
                            outs[j] = rename[o] = f"{prefix}/{o.lstrip('/')}"
                    node.input[:] = ins
                    node.output[:] = outs
                    copy.nodes.append((node, nm))
            by_out = {o: n for n, _ in copy.nodes for o in n.output}
            copied = {t.name: t for t in new_inits.values()}
            for block in chain:
                copy.zeroed |= {self._zero(copied[w])
                                for w in _projection(rename[block.branch], by_out, copied, block)}
            new_nodes += [n for n, _ in copy.nodes]
            made.append(copy)
            entry = rename[stream if last.exit == exit_ else last.exit]  # the graph output was renamed above
            taken |= {n.name for n, _ in copy.nodes} | set(copy.weights) | set(rename.values())
        if exit_ != stream:  # the last copy writes the graph output
            for n in new_nodes:
                n.output[:] = [exit_ if o == entry else o for o in n.output]
            entry = exit_
        for r in readers:
            if stream in gr.ins[r]:
                gr.ins[r] = tuple(entry if i == stream else i for i in gr.ins[r])
                gr.nodes[r].input[:] = list(gr.ins[r])
        # a run inserted later at the same place goes first, as it would be inserted before the earlier one
        self.inserts[position] = new_nodes + self.inserts.get(position, [])
        self.result.inserted += [n.name for n in new_nodes]
        return made

    def splice(self) -> None:
        """Put every copy in place: after the last node of the unit it follows."""
        if not self.inserts:
            return
        nodes: list[onnx.NodeProto] = []
        for i, n in enumerate(self.index.nodes):
            nodes.append(n)
            nodes += self.inserts.get(i, [])
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.inserts = {}


def _fill(model: onnx.ModelProto, deferred: dict[str, Deferred]) -> None:
    """Give every stub of `model` whose bytes are in `deferred` its data (in place)."""
    for t in model.graph.initializer:
        if t.name in deferred and not has_data(t):
            t.raw_data = b"".join(pieces(t.name, deferred[t.name]))


# -- layer numbers in names ---------------------------------------------------------------------------

#: `word.N` not inside a longer word or number: `layers.3` in model.layers.3.mlp or /model/layers.3/MatMul
_TOKEN = re.compile(r"(?<![\w])([A-Za-z_]\w*)\.(\d+)(?![\w])")
#: node metadata written by torch's dynamo exporter that names the node's module
_SCOPE_KEYS = ("pkg.torch.onnx.name_scopes", "namespace")


def node_scope_texts(node: onnx.NodeProto) -> list[str]:
    """The texts that name a node's module: its name and the dynamo exporter's module scopes."""
    return [node.name] + [x for x in torch_name_scopes(node) or [] if isinstance(x, str)]


def _numbers(texts: list[str], words: tuple[str, ...]) -> set[int]:
    return {int(m.group(2)) for t in texts for m in _TOKEN.finditer(t) if m.group(1) in words}


def _layer_words(model: onnx.ModelProto, blocks: list[Block], layers: list[list[str]]) -> dict[str, str]:
    """The words W such that the nodes of layer p (and of no other) are named `W.p` (`layers` in
    model.layers.3, `layer` in /bert/encoder/layer.3/..., or one per module list when a model keeps one
    list per kind of module), each with the dotted module path up to it (`model.layers`); {} when no word
    numbers every layer."""
    if not layers:
        return {}
    nodes = {n.name: n for n in model.graph.node}
    by_id = {b.id: b for b in blocks}
    if len(layers) == 1:
        return _one_layer_words(model, [nodes[nm] for b in layers[0] for nm in by_id[b].nodes])
    words: set[str] | None = None
    path: dict[str, str] = {}
    for p, ids in enumerate(layers):
        seen: dict[str, set[int]] = {}
        for b in ids:
            for nm in by_id[b].nodes:
                for text in node_scope_texts(nodes[nm]):
                    for m in _TOKEN.finditer(text):
                        seen.setdefault(m.group(1), set()).add(int(m.group(2)))
                        if "/" not in text and int(m.group(2)) == p:
                            path.setdefault(m.group(1), text[:m.start(2) - 1])
        fits = {w for w, values in seen.items() if values == {p}}
        words = fits if words is None else words & fits
    return {w: path.get(w, w) for w in sorted(words or ())}


def _one_layer_words(model: onnx.ModelProto, inside: list[onnx.NodeProto]) -> dict[str, str]:
    """With one layer, a number 0 could name anything (`mlp.0` of a Sequential inside it): the word W such that
    every node of the layer is named `W.0` (its name or a module scope) and no node outside it has `W.N`."""
    names = {n.name for n in inside}
    words: set[str] | None = None
    path: dict[str, str] = {}
    for n in inside:
        here = set()
        for text in node_scope_texts(n):
            for m in _TOKEN.finditer(text):
                if m.group(2) == "0":
                    here.add(m.group(1))
                    if "/" not in text:
                        path.setdefault(m.group(1), text[:m.start(2) - 1])
        words = here if words is None else words & here
    outside = {m.group(1) for n in model.graph.node if n.name not in names
               for text in node_scope_texts(n) for m in _TOKEN.finditer(text)}
    return {w: path.get(w, w) for w in sorted((words or set()) - outside)}


def _sub(text: str, words: tuple[str, ...], old: int, new: int) -> str:
    """`text` with `W.old` written `W.new` for each word W."""
    alt = "|".join(re.escape(w) for w in words)
    return re.sub(rf"(?<![\w])({alt})\.{old}(?![\w])", rf"\g<1>.{new}", text)


def _renumber(model: onnx.ModelProto, word: tuple[str, ...], new_index: dict[tuple[int, int], int], copies: list[_Copy],
              weights: dict[str, dict], deferred: dict[str, Deferred] | None = None) -> dict[str, str] | None:
    """Number every layer's nodes and weights by its new place (`W.p` -> `W.q`), and each copy by its own: a copy
    named after its source (the layer's number changed), else it keeps its `unit/copyK/` prefix. Updates the
    step's `weights` (renamed originals get an entry); returns old -> new node names, or None (nothing
    renamed) when two names would clash."""
    g = model.graph
    moved = {old: new for (old, c), new in new_index.items() if c == 0}
    node_names: dict[str, str] = {}  # keyed by name: protobuf may wrap the same node in a new object
    scopes: dict[str, tuple[int, int]] = {}
    copy_of: dict[str, tuple[int, int, str]] = {}
    for cp in copies:
        if cp.layer is None:
            continue
        for n, src_name in cp.nodes:
            copy_of[n.name] = (cp.layer, new_index[(cp.layer, cp.k)], src_name)
    for n in g.node:
        if n.name in copy_of:
            old, new, src_name = copy_of[n.name]
            if _numbers([src_name], word) == {old}:
                node_names[n.name] = _sub(src_name, word, old, new)
            scopes[n.name] = (old, new)
            continue
        found = _numbers(node_scope_texts(n), word)
        if len(found) == 1:
            old = found.pop()
            if old in moved and moved[old] != old:
                node_names[n.name] = _sub(n.name, word, old, moved[old])
                scopes[n.name] = (old, moved[old])
    init_names: dict[str, str] = {}
    for cp in copies:
        for name, src in cp.weights.items():
            if cp.layer is not None and _numbers([src], word) == {cp.layer}:
                init_names[name] = _sub(src, word, cp.layer, new_index[(cp.layer, cp.k)])
    for t in g.initializer:
        if t.name in weights:
            continue
        found = _numbers([t.name], word)
        if len(found) == 1:
            old = found.pop()
            if old in moved and moved[old] != old:
                init_names[t.name] = _sub(t.name, word, old, moved[old])
    final_nodes = [node_names.get(n.name, n.name) for n in g.node]
    final_inits = [init_names.get(t.name, t.name) for t in g.initializer]
    tensors = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {o.name for o in g.output}
    if len(set(final_nodes)) != len(final_nodes) or len(set(final_inits)) != len(final_inits) or \
            any(new in tensors for new in init_names.values()):
        return None
    renamed_nodes = {}
    for n in g.node:
        key = n.name
        if key in node_names:
            renamed_nodes[key] = node_names[key]
            n.name = node_names[key]
        if key in scopes:
            old, new = scopes[key]
            for p in n.metadata_props:
                if p.key in _SCOPE_KEYS:
                    p.value = _sub(p.value, word, old, new)
        for j, i in enumerate(n.input):
            if i in init_names:
                n.input[j] = init_names[i]
    for t in g.initializer:
        if t.name in init_names:
            t.name = init_names[t.name]
    if deferred:  # the bytes of renamed stubs follow their names (all at once: a new name may be an old one)
        deferred.update({init_names[old]: deferred.pop(old) for old in list(init_names) if old in deferred})
    for vi in list(g.value_info) + list(g.input):
        if vi.name in init_names:
            vi.name = init_names[vi.name]
    before = dict(weights)
    weights.clear()
    weights.update({k: v for k, v in before.items() if k not in init_names})
    for old, new in init_names.items():
        weights[new] = before.get(old, {"source": old})
    return renamed_nodes


def _zero(t: onnx.TensorProto) -> str:
    """All zeros, same name, type and shape (raw bytes of zeros; no array made); returns the name."""
    if t.data_type == onnx.TensorProto.STRING:  # no raw form
        t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
        return t.name
    n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    width = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "raw_data"):
        t.ClearField(field)
    t.raw_data = bytes(n * width)
    return t.name


def _projection(tensor: str, by_out: dict, inits: dict[str, onnx.TensorProto], block: Block) -> list[str]:
    """Walk back from the branch output to the last layer with weights: the weights that, set to zero, make its
    output zero."""
    zeroed: list[str] = []
    while True:
        node = by_out.get(tensor)
        if node is None:
            break
        op = node.op_type
        consts = [i for i in node.input if i in inits]
        if op == "BatchNormalization":
            return zeroed + [inits[node.input[1]].name, inits[node.input[2]].name]
        if op in ("Gemm", "MatMul", "Conv", "ConvTranspose") and consts:
            return zeroed + consts
        if op == "Mul" and consts:
            return zeroed + [consts[0]]
        if op == "Add" and consts:
            zeroed.append(consts[0])
            tensor = next(i for i in node.input if i not in inits)
            continue
        if op in _THROUGH:
            tensor = node.input[0]
            continue
        break
    raise OnnxGrowError(f"block {block.id}: cannot find the layer that projects into its residual Add "
                        f"(stopped at {tensor}); copy refused")
