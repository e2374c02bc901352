"""Stable generated names for nodes that have none, so every node can be named on the CLI."""

from __future__ import annotations

import onnx

from .graph import Names


def name_nodes(graph: onnx.GraphProto) -> None:
    """Give every unnamed node the name `<OpType>_<index>` (unique, stable for a given graph)."""
    names = Names(n.name for n in graph.node if n.name)
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = names.fresh(f"{node.op_type}_{i}")
