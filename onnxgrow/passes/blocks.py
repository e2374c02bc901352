"""Residual blocks: find them (a branch that leaves a stream and re-joins it at an Add) and copy them.

A copy whose projection into the residual Add is zero adds nothing, so the model is unchanged, except when a
normalisation follows the Add inside the block (post-norm): then the copy normalises twice (approximate).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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


def copy_block(model: onnx.ModelProto, name: str, count: int, result) -> None:
    """Insert `count` copies of block `name` (or of a chain `bA-bB`) after it, each residual projection zeroed.

    A chain copies a whole transformer layer (attention block then feed-forward block) as one unit.
    """
    chain = resolve_chain(find_blocks(model), name)
    from .deepen import free_index, taken_names

    g = model.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    taken = taken_names(model)
    members = {nm for b in chain for nm in b.nodes}
    first, last = chain[0], chain[-1]
    unit = "-".join(dict.fromkeys([first.id, last.id]))
    exit_ = last.exit
    if exit_ in {o.name for o in g.output}:
        # the chain's output is the graph's: it now writes an inner tensor, the last copy the output
        inner = f"{exit_}/before_copy"
        while inner in taken:
            inner += "_"
        for n in g.node:
            n.output[:] = [inner if o == exit_ else o for o in n.output]
            n.input[:] = [inner if i == exit_ else i for i in n.input]
        for vi in g.value_info:
            if vi.name == exit_:
                vi.name = inner
        chain = [replace(b, exit=inner if b.exit == exit_ else b.exit, branch=b.branch) for b in chain]
        last = chain[-1]
        taken.add(inner)
    entry = last.exit
    position = max(i for i, n in enumerate(g.node) if n.name in members) + 1
    readers = [n for n in g.node if last.exit in n.input and n.name not in members]
    new_nodes: list[onnx.NodeProto] = []
    index = 0
    for _ in range(count):
        # copying a block of a grown model again continues the numbering: no name is reused
        index = free_index(taken, f"{unit}/copy", index)
        prefix = f"{unit}/copy{index}"
        index += 1
        rename = {first.entry: entry}
        new_inits: dict[str, onnx.TensorProto] = {}
        copies = []
        for block in chain:
            for nm in block.nodes:
                src = nodes[nm]
                node = onnx.NodeProto()
                node.CopyFrom(src)
                node.name = f"{prefix}/{src.name}"
                for j, i in enumerate(src.input):
                    if i in inits:
                        if i not in new_inits:
                            t = g.initializer.add()  # copied once, in place (extend would copy again)
                            t.CopyFrom(inits[i])
                            t.name = f"{prefix}/{i}"
                            new_inits[i] = t
                        node.input[j] = new_inits[i].name
                    elif i in rename:
                        node.input[j] = rename[i]
                for j, o in enumerate(src.output):
                    if o:
                        rename[o] = f"{prefix}/{o}"
                        node.output[j] = rename[o]
                copies.append(node)
        by_out = {o: n for n in copies for o in n.output}
        copied = {t.name: t for t in new_inits.values()}
        for block in chain:
            _zero_projection(rename[block.branch], by_out, copied, block)
        new_nodes += copies
        entry = rename[last.exit]
        result.inserted += [n.name for n in copies]
    if exit_ != last.exit:  # the last copy writes the graph output
        for n in new_nodes:
            n.output[:] = [exit_ if o == entry else o for o in n.output]
        entry = exit_
    for n in readers:
        for j, i in enumerate(n.input):
            if i == last.exit:
                n.input[j] = entry
    all_nodes = list(g.node)
    all_nodes[position:position] = new_nodes
    del g.node[:]
    g.node.extend(all_nodes)
    kinds = " + ".join(f"{b.id} ({b.kind})" for b in chain)
    exact = all(b.exact for b in chain)
    result.notes.append(f"copied {'block' if len(chain) == 1 else 'blocks'} {kinds} {count} time(s); "
                        f"{'its projection' if len(chain) == 1 else 'each projection'} into the residual Add is zero"
                        + ("" if exact else f"; a normalisation follows {'the' if len(chain) == 1 else 'an'} Add, "
                                            "so the copy is approximate"))
    result.exact &= exact


def _zero(t: onnx.TensorProto) -> None:
    """All zeros, same name, type and shape (raw bytes of zeros; no array made)."""
    if t.data_type == onnx.TensorProto.STRING:  # no raw form
        t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
        return
    n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    width = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "raw_data"):
        t.ClearField(field)
    t.raw_data = bytes(n * width)


def _zero_projection(tensor: str, by_out: dict, inits: dict[str, onnx.TensorProto], block: Block) -> None:
    """Walk back from the branch output to the last layer with weights and make its output zero."""
    while True:
        node = by_out.get(tensor)
        if node is None:
            break
        op = node.op_type
        consts = [i for i in node.input if i in inits]
        if op == "BatchNormalization":
            _zero(inits[node.input[1]])
            _zero(inits[node.input[2]])
            return
        if op in ("Gemm", "MatMul", "Conv", "ConvTranspose") and consts:
            for c in consts:
                _zero(inits[c])
            return
        if op == "Mul" and consts:
            _zero(inits[consts[0]])
            return
        if op == "Add" and consts:
            _zero(inits[consts[0]])
            tensor = next(i for i in node.input if i not in inits)
            continue
        if op in _THROUGH:
            tensor = node.input[0]
            continue
        break
    raise OnnxGrowError(f"block {block.id}: cannot find the layer that projects into its residual Add "
                        f"(stopped at {tensor}); copy refused")
