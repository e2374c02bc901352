"""Stable generated names for nodes that have none, so every node can be named on the CLI."""
from __future__ import annotations

import onnx


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every unnamed node the name `<OpType>_<index>` (unique, stable for a given graph)."""
    taken = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if node.name:
            continue
        base = f"{node.op_type}_{i}"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        taken.add(name)
