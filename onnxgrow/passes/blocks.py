"""Residual blocks: find them (a branch that leaves a stream and re-joins it at an Add) and copy them.

A copy whose projection into the residual Add is zero adds nothing, so the model is unchanged, except when a
normalisation follows the Add inside the block (post-norm): then the copy normalises twice (approximate).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxGrowError, closest

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


def find_blocks(model: onnx.ModelProto) -> list[Block]:
    """Every Add whose one input is a branch computed from the other input alone."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    order = {n.name: i for i, n in enumerate(g.node)}
    outputs = {o.name for o in g.output}
    blocks: list[Block] = []
    for add in g.node:
        if add.op_type != "Add" or len(add.input) != 2 or any(i in inits for i in add.input):
            continue
        for stream, branch in (add.input, reversed(add.input)):
            nodes = _branch(stream, branch, producers, inits)
            if not nodes or not any(producers[t].op_type in ("Conv", "Gemm", "MatMul") for t in
                                    (o for n in nodes for o in n.output if o in producers)):
                continue
            names = {n.name for n in nodes}
            inner = {o for n in nodes for o in n.output}
            if any(c.name not in names and c.name != add.name for o in inner for c in consumers.get(o, [])):
                continue  # a branch tensor is read outside the block
            if inner & outputs:
                continue
            members = sorted(nodes, key=lambda n: order[n.name]) + [add]
            exit_, exact = add.output[0], True
            after = consumers.get(exit_, [])
            # a pre-norm branch normalises the stream itself: a norm after its Add belongs to what follows
            # (the network's final norm), not to the block
            pre_norm = any(n.op_type in _NORMS and n.input[0] == stream for n in nodes)
            if len(after) == 1 and exit_ not in outputs and after[0].input[0] == exit_:
                nxt = after[0]
                if nxt.op_type in _NORMS and not pre_norm:
                    members.append(nxt)
                    exit_, exact = nxt.output[0], False
                elif nxt.op_type in _IDEMPOTENT:
                    members.append(nxt)
                    exit_ = nxt.output[0]
            ops = [n.op_type for n in members]
            kind = ("attention" if "Softmax" in ops else
                    "conv" if "Conv" in ops else "feed-forward")
            if kind == "conv":
                kind = "bottleneck" if ops.count("Conv") >= 3 else "basic"
            kind += " (post-norm)" if not exact else ""
            blocks.append(Block(f"b{len(blocks)}", kind, [n.name for n in members], stream, exit_, add.name,
                                branch, exact))
            break
    return blocks


#: ops of the small integer arithmetic that reads sizes (a Reshape target's batch read from the input ids)
_SHAPE_OPS = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Mul", "Add", "Sub", "Div", "Slice", "Identity",
              "Range", "ConstantOfShape", "Equal", "Where", "Expand", "Reshape", "Not", "Trilu")


def _shape_only(t: str, producers: dict, inits: set[str], memo: dict[str, bool], depth: int = 0) -> bool:
    """Whether `t` is computed from sizes of graph inputs and constants alone: the same for a block and its copy."""
    if t in inits or t == "":
        return True
    if t in memo:
        return memo[t]
    node = producers.get(t)
    ok = node is not None and depth < 16 and (
        (node.op_type in ("Shape", "Size") and node.input[0] not in producers) or  # sizes of a graph input
        (node.op_type in _SHAPE_OPS and all(_shape_only(i, producers, inits, memo, depth + 1) for i in node.input)))
    memo[t] = ok
    return ok


def _branch(stream: str, branch: str, producers: dict, inits: set[str]) -> list[onnx.NodeProto] | None:
    """Nodes computing `branch` from `stream`, constants and sizes only; None when something else feeds in."""
    found: dict[str, onnx.NodeProto] = {}
    frontier = [branch]
    memo: dict[str, bool] = {}
    while frontier:
        t = frontier.pop()
        if t == stream or t in inits or t == "" or (t != branch and _shape_only(t, producers, inits, memo)):
            continue
        node = producers.get(t)
        if node is None:
            return None  # a graph input other than the stream
        if node.name in found:
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        found[node.name] = node
        frontier.extend(node.input)
    if not any(stream in n.input for n in found.values()):
        return None
    return list(found.values())


def resolve_block(blocks: list[Block], name: str) -> Block:
    for b in blocks:
        if name in (b.id, b.add):
            return b
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
    first, sep, last = name.partition("-")
    if not sep or not last:
        return [resolve_block(blocks, name)]
    a, b = resolve_block(blocks, first), resolve_block(blocks, last)
    ia, ib = blocks.index(a), blocks.index(b)
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


def copy_units(model: onnx.ModelProto, units: list[str], count: int, result, order: str = "interleave") -> dict:
    """Insert `count` copies of each unit (a block `bN` or a chain `bA-bB`: a transformer layer), each copy's
    projections into its residual Adds zeroed, and return the growth-map step that records it.

    `order` "interleave" puts each unit's copies right after it (L0 L0' L1 L1'); "stack" puts them after the
    last unit, the whole sequence repeated `count` times (L0 L1 L0' L1', as G_stack does). When the units are
    transformer layers whose names carry a layer number (`model.layers.1`, `/bert/encoder/layer.1/...`),
    the layers are renumbered in their new order: weight names, node names and the exporter's module scopes
    of the layers and of their copies then read like an export of the deeper model.
    """
    if order not in ORDERS:
        raise OnnxGrowError(f"--order {order!r}: expected one of {', '.join(ORDERS)}")
    blocks = find_blocks(model)
    chains = [resolve_chain(blocks, u) for u in units]
    seen: dict[str, str] = {}
    for unit, chain in zip(units, chains):
        for b in chain:
            if b.id in seen:
                raise OnnxGrowError(f"--after {','.join(units)}: block {b.id} is named twice ({seen[b.id]}, {unit})")
            seen[b.id] = unit
    chains.sort(key=lambda c: blocks.index(c[0]))
    layers = [[b.id for b in resolve_chain(blocks, u)] for u in layer_units(blocks)]
    positions = [layers.index([b.id for b in c]) if [b.id for b in c] in layers else None for c in chains]
    as_layers = all(p is not None for p in positions)
    # runs of copies: (the unit they follow, [(unit, copy number), ...] in order)
    if order == "interleave":
        runs = [(k, [(k, c) for c in range(1, count + 1)]) for k in range(len(chains))]
    else:
        runs = [(len(chains) - 1, [(k, c) for c in range(1, count + 1) for k in range(len(chains))])]
    table = None
    if as_layers:
        table = []
        for p in range(len(layers)):
            table.append({"from": p, "copy": 0})
            for after, seq in runs:
                if positions[after] == p:
                    table += [{"from": positions[k], "copy": c} for k, c in seq]
    from .deepen import taken_names

    words = _layer_words(model, blocks, layers) if as_layers else None
    taken = taken_names(model)
    copies: list[_Copy] = []
    # later runs first: inserting after a unit moves no earlier block
    for after, seq in sorted(runs, key=lambda r: -blocks.index(chains[r[0]][-1])):
        copies += _insert_copies(model, chains, positions, after, seq, taken, result)
    step: dict = {"op": "deepen", "block": "copy", "order": order, "count": count, "layer_scopes": [],
                  "layers": table, "weights": {}}
    for cp in copies:
        for name, src in cp.weights.items():
            step["weights"][name] = {"source": src, "copy": True, "zeroed": name in cp.zeroed}
    if words and table is not None:
        new_index = {(x["from"], x["copy"]): i for i, x in enumerate(table)}
        renamed = _renumber(model, tuple(words), new_index, copies, step["weights"])
        if renamed is not None:
            step["layer_scopes"] = list(words.values())
            result.inserted = [renamed.get(n, n) for n in result.inserted]
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


def _insert_copies(model: onnx.ModelProto, chains: list[list[Block]], positions: list[int | None], after: int,
                   seq: list[tuple[int, int]], taken: set[str], result) -> list[_Copy]:
    """Insert a copy of `chains[k]` for each (k, copy number) of `seq`, one after the other, after the last
    node of `chains[after]`; each reads the stream the one before it writes."""
    from .deepen import free_index

    g = model.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    anchor = chains[after]
    exit_ = anchor[-1].exit
    stream = exit_
    if exit_ in {o.name for o in g.output}:
        # the unit's output is the graph's: it now writes an inner tensor, the last copy the output
        stream = f"{exit_}/before_copy"
        while stream in taken:
            stream += "_"
        for n in g.node:
            n.output[:] = [stream if o == exit_ else o for o in n.output]
            n.input[:] = [stream if i == exit_ else i for i in n.input]
        for vi in g.value_info:
            if vi.name == exit_:
                vi.name = stream
        taken.add(stream)
    members = {nm for b in anchor for nm in b.nodes}
    position = max(i for i, n in enumerate(g.node) if n.name in members) + 1
    readers = [n for n in g.node if stream in n.input and n.name not in members]
    entry = stream
    new_nodes: list[onnx.NodeProto] = []
    made: list[_Copy] = []
    for k, c in seq:
        chain = chains[k]
        first, last = chain[0], chain[-1]
        unit = "-".join(dict.fromkeys([first.id, last.id]))
        # copying a block of a grown model again continues the numbering: no name is reused
        prefix = f"{unit}/copy{free_index(taken, f'{unit}/copy')}"
        taken.add(f"{prefix}/")
        rename = {first.entry: entry}
        new_inits: dict[str, onnx.TensorProto] = {}
        copy = _Copy([], {}, positions[k], c, set())
        for block in chain:
            for nm in block.nodes:
                src = nodes[nm]
                node = onnx.NodeProto()
                node.CopyFrom(src)
                node.name = f"{prefix}/{src.name.lstrip('/')}"
                for j, i in enumerate(src.input):
                    if i in inits:
                        if i not in new_inits:
                            t = g.initializer.add()  # copied once, in place (extend would copy again)
                            t.CopyFrom(inits[i])
                            t.name = f"{prefix}/{i.lstrip('/')}"
                            new_inits[i] = t
                            copy.weights[t.name] = i
                        node.input[j] = new_inits[i].name
                    elif i in rename:
                        node.input[j] = rename[i]
                for j, o in enumerate(src.output):
                    if o:
                        rename[o] = f"{prefix}/{o.lstrip('/')}"
                        node.output[j] = rename[o]
                copy.nodes.append((node, src.name))
        by_out = {o: n for n, _ in copy.nodes for o in n.output}
        copied = {t.name: t for t in new_inits.values()}
        for block in chain:
            copy.zeroed |= _zero_projection(rename[block.branch], by_out, copied, block)
        new_nodes += [n for n, _ in copy.nodes]
        made.append(copy)
        entry = rename[stream if last.exit == exit_ else last.exit]  # the graph output was renamed above
        taken |= {n.name for n, _ in copy.nodes} | set(copy.weights) | set(rename.values())
    if exit_ != stream:  # the last copy writes the graph output
        for n in new_nodes:
            n.output[:] = [exit_ if o == entry else o for o in n.output]
        entry = exit_
    for n in readers:
        for j, i in enumerate(n.input):
            if i == stream:
                n.input[j] = entry
    all_nodes = list(g.node)
    all_nodes[position:position] = new_nodes
    del g.node[:]
    g.node.extend(all_nodes)
    result.inserted += [n.name for n in new_nodes]
    return made


# -- layer numbers in names ---------------------------------------------------------------------------

#: `word.N` not inside a longer word or number: `layers.3` in model.layers.3.mlp or /model/layers.3/MatMul
_TOKEN = re.compile(r"(?<![\w])([A-Za-z_]\w*)\.(\d+)(?![\w])")
#: node metadata written by torch's dynamo exporter that names the node's module
_SCOPE_KEYS = ("pkg.torch.onnx.name_scopes", "namespace")


def node_scope_texts(node: onnx.NodeProto) -> list[str]:
    """The texts that name a node's module: its name and the dynamo exporter's module scopes."""
    texts = [node.name]
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list):
                texts += [x for x in value if isinstance(x, str)]
    return texts


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
              weights: dict[str, dict]) -> dict[str, str] | None:
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


def _zero_projection(tensor: str, by_out: dict, inits: dict[str, onnx.TensorProto], block: Block) -> set[str]:
    """Walk back from the branch output to the last layer with weights and make its output zero; returns the
    weights set to zero."""
    zeroed: set[str] = set()
    while True:
        node = by_out.get(tensor)
        if node is None:
            break
        op = node.op_type
        consts = [i for i in node.input if i in inits]
        if op == "BatchNormalization":
            return zeroed | {_zero(inits[node.input[1]]), _zero(inits[node.input[2]])}
        if op in ("Gemm", "MatMul", "Conv", "ConvTranspose") and consts:
            return zeroed | {_zero(inits[c]) for c in consts}
        if op == "Mul" and consts:
            return zeroed | {_zero(inits[consts[0]])}
        if op == "Add" and consts:
            zeroed.add(_zero(inits[consts[0]]))
            tensor = next(i for i in node.input if i not in inits)
            continue
        if op in _THROUGH:
            tensor = node.input[0]
            continue
        break
    raise OnnxGrowError(f"block {block.id}: cannot find the layer that projects into its residual Add "
                        f"(stopped at {tensor}); copy refused")
