"""The one graph layer: producers, consumers, subgraph walks, opsets and fresh names over onnx protos.

Every pass and analysis asks these questions of a graph; answering them here keeps the subtle parts (If/Loop/Scan
bodies read outer-scope tensors, a tensor name may be empty, names must stay unique across nodes and tensors) in
one place. It works on `onnx.GraphProto` directly, so weights are never copied (see README, "one graph layer").
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator

import onnx

_GRAPH, _GRAPHS = onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by a node's attributes (If branches, Loop and Scan bodies), not nested ones."""
    for a in node.attribute:
        if a.type == _GRAPH:
            yield a.g
        elif a.type == _GRAPHS:
            yield from a.graphs


def walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph` and of every subgraph under it, each graph's nodes before its subgraphs' nodes."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            yield node
            stack.extend(subgraphs(node))


def nested_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """Every subgraph under `graph`'s nodes, at any depth (not `graph` itself)."""
    for node in walk(graph):
        yield from subgraphs(node)


def nested_reads(node: onnx.NodeProto) -> set[str]:
    """Tensor names read by the nodes inside a node's subgraphs, at any depth (outer-scope reads among them)."""
    reads: set[str] = set()
    for g in subgraphs(node):
        for inner in walk(g):
            reads.update(inner.input)
    reads.discard("")
    return reads


def reads(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name something reads: a node of `graph` or of a subgraph, or a graph output."""
    used = {o.name for o in graph.output}
    for node in walk(graph):
        used.update(node.input)
    used.discard("")
    return used


def find_node(graph: onnx.GraphProto, pred: Callable[[onnx.NodeProto], bool]) -> onnx.NodeProto | None:
    """The first node (subgraphs included) for which `pred` holds."""
    return next((n for n in walk(graph) if pred(n)), None)


def live_nodes(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Of `nodes` (in topological order), those whose outputs something still reads: a graph output, a later
    node, or a node inside a later node's subgraph."""
    used = {o.name for o in graph.output}
    live: list[onnx.NodeProto] = []
    for n in reversed(nodes):
        if any(o in used for o in n.output if o):
            live.append(n)
            used.update(n.input)
            used |= nested_reads(n)
    return live[::-1]


def drop_unused_initializers(graph: onnx.GraphProto) -> list[str]:
    """Remove the initializers of `graph` that nothing reads any more; returns their names."""
    used = reads(graph)
    dropped = [t.name for t in graph.initializer if t.name not in used]
    if dropped:
        keep = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return dropped


def opset(model: onnx.ModelProto, domain: str = "") -> int:
    """The model's opset version for `domain` ("" and "ai.onnx" are the same); 1 when it imports none."""
    domains = ("", "ai.onnx") if domain in ("", "ai.onnx") else (domain,)
    return next((o.version for o in model.opset_import if o.domain in domains), 1)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node of `graph` that writes it (subgraph nodes excluded)."""
    return {o: n for n in graph.node for o in n.output if o}


def consumers(
    graph: onnx.GraphProto, nested: bool = False, only: Container[str] | None = None
) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes of `graph` that read it, each once, in graph order; with `nested`, a node whose
    subgraphs read an outer tensor counts as its reader too. With `only`, just the tensors in it (cheaper on a
    large graph when a pass asks about a few)."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        names = dict.fromkeys(n.input)
        if nested:
            names.update(dict.fromkeys(sorted(nested_reads(n))))
        for i in names:
            if i and (only is None or i in only):
                out.setdefault(i, []).append(n)
    return out


def main_names(graph: onnx.GraphProto) -> set[str]:
    """Every node and tensor name of `graph` itself (not of its subgraphs): nodes, initializers, node inputs and
    outputs, graph inputs and outputs, value_info."""
    names = {n.name for n in graph.node} | tensor_names(graph)
    names |= {v.name for v in graph.value_info}
    return names


def nodes_by_name(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Node name -> the node of `graph` (subgraph nodes excluded); of two nodes with one name, the last."""
    return {n.name: n for n in graph.node}


def replace_input(node: onnx.NodeProto, old: str, new: str) -> bool:
    """Make every input of `node` that reads `old` read `new`; whether there was one."""
    found = False
    for k, i in enumerate(node.input):
        if i == old:
            node.input[k] = new
            found = True
    return found


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Tensor `old` is called `new` from now on in `graph`'s own nodes (its writer and readers, not inside
    subgraphs) and its value_info."""
    for n in graph.node:
        for k, o in enumerate(n.output):
            if o == old:
                n.output[k] = new
        replace_input(n, old, new)
    for vi in graph.value_info:
        if vi.name == old:
            vi.name = new


def input_slots(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Tensor name -> every (node, input index) of `graph` that reads it, in graph order (a node reading a tensor
    twice appears twice: the slot, not only the reader, says what the tensor is to it)."""
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name:
                out.setdefault(name, []).append((n, k))
    return out


def tensor_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name `graph` declares or uses: inputs, outputs, initializers, node inputs and outputs."""
    names = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
    names.discard("")
    return names


def torch_name_scopes(node: onnx.NodeProto) -> list | None:
    """The module scopes torch's dynamo exporter recorded for a node (`pkg.torch.onnx.name_scopes`, e.g.
    ['', 'fc1', 'linear']), as written; None when it recorded none or the value is not a list."""
    import ast

    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            return value if isinstance(value, list) else None
    return None


class Index:
    """A graph's nodes indexed by position, for passes that walk large graphs many times: each node's name, op,
    inputs and outputs read from the protobuf once, the producer and readers of every tensor (positions; a
    reader once however often it reads), each name's position, the initializer and graph output names.

    It describes `graph` as it was when made; `rename` keeps it and the graph in step, `current` says whether
    nodes were added or removed since."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.nodes = list(g.node)
        self.names = [n.name for n in self.nodes]
        self.ops = [n.op_type for n in self.nodes]
        # a slice copies a repeated field in one step (iterating it makes each string on its own: twice as slow)
        self.ins = [tuple(n.input[:]) for n in self.nodes]
        self.outs = [tuple(n.output[:]) for n in self.nodes]
        self.inits = {t.name for t in g.initializer}
        self.outputs = {o.name for o in g.output}
        self.order = {name: k for k, name in enumerate(self.names)}
        #: per node, whether it holds a subgraph (If, Loop, Scan)
        self.subgraph = [
            len(n.attribute) > 0 and any(a.type in (_GRAPH, _GRAPHS) for a in n.attribute) for n in self.nodes
        ]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        producer, consumers = self.producer, self.consumers
        for k, (ins, outs) in enumerate(zip(self.ins, self.outs)):
            for i in ins:
                readers = consumers.setdefault(i, [])
                if not readers or readers[-1] != k:  # a node reading a tensor twice is one reader
                    readers.append(k)
            for o in outs:
                producer[o] = k

    def current(self, model: onnx.ModelProto) -> bool:
        """Whether this index still describes `model` (the same object, no node added or removed)."""
        return model is self.model and len(model.graph.node) == len(self.nodes)

    def main_names(self) -> set[str]:
        """What `main_names` returns for the graph, read from the index where it can be."""
        g = self.model.graph
        names = set(self.names) | self.inits | set(self.consumers) | set(self.producer)
        names |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}
        return names

    def set_inputs(self, k: int, ins: list[str] | tuple[str, ...]) -> None:
        """Node `k` reads `ins` from now on (the node and the index; the readers of its old inputs are not
        updated: use it to rewire a node to tensors that stand for the ones it read)."""
        self.ins[k] = tuple(ins)
        self.nodes[k].input[:] = list(ins)

    def rename(self, old: str, new: str) -> None:
        """Tensor `old` is called `new` from now on: in its writer, its readers, the value_info and the index."""
        writer = self.producer.pop(old, None)
        readers = self.consumers.pop(old, [])
        for k in dict.fromkeys(([writer] if writer is not None else []) + readers):
            self.outs[k] = tuple(new if o == old else o for o in self.outs[k])
            self.nodes[k].output[:] = list(self.outs[k])
            self.set_inputs(k, [new if i == old else i for i in self.ins[k]])
        if writer is not None:
            self.producer[new] = writer
        self.consumers[new] = readers
        for vi in self.model.graph.value_info:
            if vi.name == old:
                vi.name = new


class Names:
    """Fresh names that clash with none already taken (node names and tensor names share one space here, as
    several tools that read ONNX files assume)."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken = set(taken)

    @classmethod
    def of(cls, graph: onnx.GraphProto) -> Names:
        """The names used by `graph`'s nodes and tensors (subgraphs included)."""
        taken = tensor_names(graph) | {n.name for n in walk(graph) if n.name}
        for g in nested_graphs(graph):
            taken |= tensor_names(g)
        return cls(taken)

    def fresh(self, base: str, sep: str = "_") -> str:
        """`base` itself when free, else `base<sep>1`, `base<sep>2`, ...; the name is taken from then on."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}{sep}{k}", k + 1
        self.taken.add(name)
        return name
