"""The block-copy pass: insert copies of residual blocks (or chains of them: transformer layers) after them.

A copy whose projection into the residual Add is zero adds nothing, so the model is unchanged, except when a
normalisation follows the Add inside the block (post-norm): then the copy normalises twice (approximate).
Blocks are found by onnxgrow.analysis.blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ..analysis.blocks import Block, as_blocks, find_blocks, layer_units, resolve_chain
from ..errors import OnnxGrowError, ParameterError
from ..graph import Index, nodes_by_name, producers, torch_name_scopes
from ..growth_map import append_step
from ..stream import Deferred, has_data, pieces, raw_nbytes, read_raw, stub, zeros
from .base import PassBase, PassResult

_THROUGH = ("Reshape", "Transpose", "Dropout", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten")


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


@dataclass
class CopyResult(PassResult):
    """The model with the copies in place (the one given), the new node names, notes for the user, whether
    the copies leave the outputs unchanged, and the bytes of the model's stubs (see onnxgrow.stream): those
    given to the pass (under their new names where layers were renumbered) and the copies' own."""

    inserted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exact: bool = True
    deferred: dict[str, Deferred] = field(default_factory=dict)


class CopyBlocks(PassBase[CopyResult]):
    """Insert `count` copies of each unit (a block `bN` or a chain `bA-bB`: a transformer layer), each copy's
    projections into its residual Adds zeroed, and record it as a step of the model's growth map (in place).

    `order` "interleave" puts each unit's copies right after it (L0 L0' L1 L1'); "stack" puts them after the
    last unit, the whole sequence repeated `count` times (L0 L1 L0' L1', as G_stack does). When the units are
    transformer layers whose names carry a layer number (`model.layers.1`, `/bert/encoder/layer.1/...`),
    the layers are renumbered in their new order: weight names, node names and the exporter's module scopes
    of the layers and of their copies then read like an export of the deeper model.

    `blocks` are the model's blocks when already found. With `deferred` (name -> bytes of the stubs among the
    model's initializers; see onnxgrow.stream), each copied weight is added as a stub whose bytes are deferred
    too (in the result's `deferred`): those of its source, or zeros for a zeroed projection; without it, copies
    are filled in at once. The graph is indexed once and every copy spliced in one pass: time grows with the
    size of the model.
    """

    in_place = True

    def __init__(
        self,
        units: list[str],
        count: int,
        order: str = "interleave",
        *,
        blocks: list[Block] | None = None,
        deferred: Mapping[str, Deferred] | None = None,
    ) -> None:
        if order not in ORDERS:
            raise ParameterError("order", f"expected one of {', '.join(ORDERS)}", value=order)
        self.units, self.count, self.order, self.blocks, self.deferred = units, count, order, blocks, deferred

    def requires(self, model: onnx.ModelProto) -> str | None:
        if self.count < 0:
            return f"a negative number of copies ({self.count})"
        if self.deferred is not None:
            stubs = {t.name for t in model.graph.initializer if not has_data(t)}
            missing = next((name for name in self.deferred if name not in stubs), None)
            if missing is not None:
                return f"deferred bytes are given for {missing}, which is not a weight without data of this model"
        return None

    def call(self, model: onnx.ModelProto) -> CopyResult:
        deferred = dict(self.deferred) if self.deferred is not None else None
        result = CopyResult(model, modified=False, deferred=deferred or {})
        if not self.units or self.count == 0:
            return result
        order, count, units = self.order, self.count, self.units
        blocks = as_blocks(find_blocks(model) if self.blocks is None else self.blocks)
        chains = [resolve_chain(blocks, u) for u in units]
        seen: dict[str, str] = {}
        for unit, chain in zip(units, chains):
            for b in chain:
                if b.id in seen:
                    raise OnnxGrowError(
                        f"--after {','.join(units)}: block {b.id} is named twice ({seen[b.id]}, {unit})"
                    )
                seen[b.id] = unit
        chains.sort(key=lambda c: blocks.position(c[0]))
        layers = [[b.id for b in resolve_chain(blocks, u)] for u in layer_units(blocks)]
        layer_of: dict[tuple[str, ...], int] = {}
        for p, ids in enumerate(layers):
            layer_of.setdefault(tuple(ids), p)
        positions = [layer_of.get(tuple(b.id for b in c)) for c in chains]
        # runs of copies: (the unit they follow, [(unit, copy number), ...] in order)
        if order == "interleave":
            runs = [(k, [(k, c) for c in range(1, count + 1)]) for k in range(len(chains))]
        else:
            runs = [(len(chains) - 1, [(k, c) for c in range(1, count + 1) for k in range(len(chains))])]
        table: list[dict[str, int]] | None = None
        known = [p for p in positions if p is not None]
        if len(known) == len(positions):  # every unit is a layer
            following: dict[int, list[tuple[int, int]]] = {}
            for after, seq in runs:
                following.setdefault(known[after], []).extend(seq)
            table = []
            for p in range(len(layers)):
                table.append({"from": p, "copy": 0})
                table += [{"from": known[k], "copy": c} for k, c in following.get(p, [])]
        words = _layer_words(model, blocks, layers) if table is not None else None
        splicer = _Splicer(model, deferred, blocks.graph_index)
        copies: list[_Copy] = []
        # later runs first (the order of the names and weights they add)
        for after, seq in sorted(runs, key=lambda r: -blocks.position(chains[r[0]][-1])):
            copies += splicer.insert_copies(chains, positions, after, seq)
        splicer.splice()
        result.inserted = splicer.inserted
        step: dict = {
            "op": "deepen",
            "block": "copy",
            "order": order,
            "count": count,
            "layer_scopes": [],
            "layers": table,
            "weights": {},
        }
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
        else:
            result.deferred = splicer.deferred
        for chain in chains:
            kinds = " + ".join(f"{b.id} ({b.kind})" for b in chain)
            exact = all(b.exact for b in chain)
            one = len(chain) == 1
            result.notes.append(
                f"copied {'block' if one else 'blocks'} {kinds} {count} time(s); "
                f"{'its projection' if one else 'each projection'} into the residual Add is zero"
                + (
                    ""
                    if exact
                    else f"; a normalisation follows {'the' if one else 'an'} Add, so the copy is approximate"
                )
            )
            result.exact &= exact
        if order == "stack":
            result.notes.append(f"stacked: the copies follow {chains[-1][-1].id}, in the order of the units")
        append_step(model, step)
        result.modified = True
        return result


class _Splicer:
    """Copies of units built against an index of the graph made once; `splice` puts them all in place."""

    def __init__(
        self, model: onnx.ModelProto, deferred: dict[str, Deferred] | None, index: Index | None = None
    ) -> None:
        g = self.graph = model.graph
        gr = self.index = index if index is not None and index.current(model) else Index(model)
        self.inserted: list[str] = []  # names of the new nodes, in the order they were made
        self.inits = {t.name: t for t in g.initializer}
        self.outputs = gr.outputs
        self.taken = gr.main_names()
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
            self.deferred[name] = Deferred(nbytes, read_raw(src))
        else:
            t.CopyFrom(src)
        t.name = name
        return t

    def _zero(self, t: onnx.TensorProto) -> str:
        if t.name in self.deferred and not has_data(t):
            self.deferred[t.name] = zeros(self.deferred[t.name].nbytes)
            return t.name
        return _zero(t)

    def insert_copies(
        self, chains: list[list[Block]], positions: list[int | None], after: int, seq: list[tuple[int, int]]
    ) -> list[_Copy]:
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
            gr.rename(exit_, stream)
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
                copy.zeroed |= {self._zero(copied[w]) for w in _projection(rename[block.branch], by_out, copied, block)}
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
                gr.set_inputs(r, [entry if i == stream else i for i in gr.ins[r]])
        # a run inserted later at the same place goes first, as it would be inserted before the earlier one
        self.inserts[position] = new_nodes + self.inserts.get(position, [])
        self.inserted += [n.name for n in new_nodes]
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
    nodes = nodes_by_name(model.graph)
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
                            path.setdefault(m.group(1), text[: m.start(2) - 1])
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
                        path.setdefault(m.group(1), text[: m.start(2) - 1])
        words = here if words is None else words & here
    outside = {
        m.group(1)
        for n in model.graph.node
        if n.name not in names
        for text in node_scope_texts(n)
        for m in _TOKEN.finditer(text)
    }
    return {w: path.get(w, w) for w in sorted((words or set()) - outside)}


def _sub(text: str, words: tuple[str, ...], old: int, new: int) -> str:
    """`text` with `W.old` written `W.new` for each word W."""
    alt = "|".join(re.escape(w) for w in words)
    return re.sub(rf"(?<![\w])({alt})\.{old}(?![\w])", rf"\g<1>.{new}", text)


def _renumber(
    model: onnx.ModelProto,
    word: tuple[str, ...],
    new_index: dict[tuple[int, int], int],
    copies: list[_Copy],
    weights: dict[str, dict],
    deferred: dict[str, Deferred] | None = None,
) -> dict[str, str] | None:
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
    tensors = set(producers(g)) | {i.name for i in g.input} | {o.name for o in g.output}
    if (
        len(set(final_nodes)) != len(final_nodes)
        or len(set(final_inits)) != len(final_inits)
        or any(new in tensors for new in init_names.values())
    ):
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
    for old_name, new_name in init_names.items():
        weights[new_name] = before.get(old_name, {"source": old_name})
    return renamed_nodes


def _zero(t: onnx.TensorProto) -> str:
    """All zeros, same name, type and shape (raw bytes of zeros; no array made); returns the name."""
    if t.data_type == onnx.TensorProto.STRING:  # no raw form
        t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
        return t.name
    n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
    width = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "raw_data"):
        t.ClearField(name)
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
    raise OnnxGrowError(
        f"block {block.id}: cannot find the layer that projects into its residual Add "
        f"(stopped at {tensor}); copy refused"
    )
