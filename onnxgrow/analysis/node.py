"""A node as the analysis reads it: name, op type, inputs and outputs as plain Python values, attributes parsed once.

The rules read a node's fields many times; reading them from the protobuf message each time builds new Python
objects on every access, and parsing an attribute (`onnx.helper.get_attribute_value`) is slow. A `Node` reads
each field once; the message itself stays in `proto` (for subgraphs and anything else the rules rarely need).
"""

from __future__ import annotations

from typing import Any

import onnx


class Node:
    """The fields of an `onnx.NodeProto` the rules read, copied once (the rules never change a node)."""

    __slots__ = ("proto", "name", "op_type", "domain", "input", "output", "_attrs", "_values")

    def __init__(self, proto: onnx.NodeProto) -> None:
        self.proto = proto
        self.name: str = proto.name
        self.op_type: str = proto.op_type
        self.domain: str = proto.domain
        # tuples: of strings only, the garbage collector stops tracking them; a slice copies the repeated field
        # in one step, where iterating it makes each string one at a time (twice as slow)
        self.input: tuple[str, ...] = tuple(proto.input[:])
        self.output: tuple[str, ...] = tuple(proto.output[:])
        self._attrs: dict[str, onnx.AttributeProto] | None = None
        self._values: dict[str, Any] | None = None

    @property
    def attribute(self) -> Any:
        """The node's attributes (the message's repeated field)."""
        return self.proto.attribute

    def attr(self, name: str, default: Any = None) -> Any:
        """The value of attribute `name` (the first of that name), or `default` when the node has none."""
        values = self._values
        if values is None:
            values = self._values = {}
        if name in values:
            value = values[name]
        else:
            attrs = self._attrs
            if attrs is None:
                attrs = self._attrs = {}
                for a in self.proto.attribute:
                    attrs.setdefault(a.name, a)
            found = attrs.get(name)
            if found is None:
                return default
            value = values[name] = onnx.helper.get_attribute_value(found)
        return list(value) if isinstance(value, list) else value  # a list of the caller's own, as parsing gives
