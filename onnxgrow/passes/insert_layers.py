"""The layer-insertion pass: splice new layers (identity or zero-residual) after a tensor (`deepen --block identity`,
`--block residual`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ParameterError
from ..graph import main_names, opset, producers, replace_input
from ..growth_map import append_step
from ..plan.deepen import Site
from .base import PassBase, PassResult

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
#: activations f with f(f(x)) == f(x): an identity layer followed by the same one changes nothing.
IDEMPOTENT = ("Relu", "Clip")


@dataclass
class Splice:
    """New nodes and initializers that read `site.tensor` and write `output`."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    output: str = ""
    notes: list[str] = field(default_factory=list)
    exact: bool = True


class _Builder:
    def __init__(self, prefix: str, dtype: np.dtype, opset: int) -> None:
        self.prefix, self.dtype, self.opset = prefix, dtype, opset
        self.splice = Splice()

    def const(self, name: str, value: np.ndarray) -> str:
        full = f"{self.prefix}/{name}"
        self.splice.inits.append(numpy_helper.from_array(np.asarray(value).astype(self.dtype), full))
        return full

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{self.prefix}/{name}_output"
        self.splice.nodes.append(helper.make_node(op, inputs, [out], name=f"{self.prefix}/{name}", **attrs))
        return out

    def activation(self, kind: str, x: str, tag: str) -> str:
        if kind == "relu":
            return self.node("Relu", [x], f"{tag}_relu")
        if kind == "tanh":
            return self.node("Tanh", [x], f"{tag}_tanh")
        if kind == "silu":
            s = self.node("Sigmoid", [x], f"{tag}_sigmoid")
            return self.node("Mul", [x, s], f"{tag}_silu")
        if kind == "gelu":
            if self.opset >= 20:
                return self.node("Gelu", [x], f"{tag}_gelu")
            d = self.node("Div", [x, self.const(f"{tag}_sqrt2", np.array(np.sqrt(2.0)))], f"{tag}_div")
            e = self.node("Erf", [d], f"{tag}_erf")
            a = self.node("Add", [e, self.const(f"{tag}_one", np.array(1.0))], f"{tag}_add")
            m = self.node("Mul", [x, a], f"{tag}_mul")
            return self.node("Mul", [m, self.const(f"{tag}_half", np.array(0.5))], f"{tag}_gelu")
        raise ParameterError("activation", f"expected one of {', '.join(ACTIVATIONS)}", value=kind)

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, site: Site, tag: str, kernel: int = 1) -> str:
        """y = x·W + b on the feature axis (dense) or a same-padded stride-1 Conv (conv)."""
        if site.conv:
            rank = len(site.shape) - 2
            pad = kernel // 2
            return self.node(
                "Conv",
                [x, self.const(f"{tag}.weight", w), self.const(f"{tag}.bias", b)],
                tag,
                kernel_shape=[kernel] * rank,
                pads=[pad] * (2 * rank),
                strides=[1] * rank,
            )
        if len(site.shape) == 2:
            return self.node("Gemm", [x, self.const(f"{tag}.weight", w), self.const(f"{tag}.bias", b)], tag)
        y = self.node("MatMul", [x, self.const(f"{tag}.weight", w)], f"{tag}_matmul")
        return self.node("Add", [y, self.const(f"{tag}.bias", b)], f"{tag}_bias")


def _weight(site: Site, c_in: int, c_out: int, kernel: int) -> tuple[int, ...]:
    if site.conv:
        return (c_out, c_in) + (kernel,) * (len(site.shape) - 2)
    return (c_in, c_out)


def identity_layer(
    site: Site, prefix: str, opset: int, *, kernel: int = 3, noise_std: float = 0.0, rng: np.random.Generator
) -> Splice:
    """A linear layer computing the identity (+ the same idempotent activation when there is one)."""
    b = _Builder(prefix, site.dtype, opset)
    c = site.channels
    if site.conv:
        w = np.zeros(_weight(site, c, c, kernel))
        centre = (kernel // 2,) * (len(site.shape) - 2)
        for i in range(c):
            w[(i, i) + centre] = 1.0
    else:
        w = np.eye(c)
    if noise_std > 0:
        w = w + rng.standard_normal(w.shape) * noise_std * (site.weight_std or 1.0)
        b.splice.exact = False
        b.splice.notes.append(f"noise (std {noise_std:g}) added to the identity weights: approximate")
    y = b.linear(site.tensor, w, np.zeros(c), site, "identity", kernel)
    prod = site.producer
    if prod is not None and prod.op_type in IDEMPOTENT:
        y = b.node(
            prod.op_type,
            [y] + list(prod.input[1:]),
            prod.op_type.lower(),
            **{a.name: helper.get_attribute_value(a) for a in prod.attribute},
        )
        b.splice.notes.append(f"followed by {prod.op_type}, like {site.tensor}")
    else:
        b.splice.notes.append(
            f"{site.tensor} does not come out of an idempotent activation (Relu, Clip): inserted a linear "
            "identity layer alone; use --block residual for a trainable non-linear block"
        )
    b.splice.output = y
    return b.splice


def residual_block(
    site: Site,
    prefix: str,
    opset: int,
    *,
    hidden: int | None,
    activation: str,
    kernel: int = 3,
    rng: np.random.Generator,
) -> Splice:
    """x + W2·act(W1·x + b1) + b2 with W2 = 0 and b2 = 0: exact for any activation, trainable at once."""
    b = _Builder(prefix, site.dtype, opset)
    c = site.channels
    h = hidden or c
    fan_in = c * (kernel ** (len(site.shape) - 2) if site.conv else 1)
    std = site.weight_std or (1.0 / np.sqrt(fan_in))
    w1 = rng.standard_normal(_weight(site, c, h, kernel)) * std
    y = b.linear(site.tensor, w1, np.zeros(h), site, "fc1" if not site.conv else "conv1", kernel)
    y = b.activation(activation, y, "act")
    y = b.linear(y, np.zeros(_weight(site, h, c, 1)), np.zeros(c), site, "fc2" if not site.conv else "conv2", 1)
    b.splice.output = b.node("Add", [site.tensor, y], "residual")
    b.splice.notes.append(f"residual block {c} -> {h} -> {c} ({activation}), output projection zero")
    return b.splice


def free_index(taken: set[str], base: str, start: int = 0) -> int:
    """The smallest i >= start such that no name in `taken` starts with `{base}{i}/`."""
    used = set()
    for name in taken:
        if name.startswith(base):
            head = name[len(base) :].split("/", 1)
            if len(head) == 2 and head[0].isdigit():
                used.add(int(head[0]))
    i = start
    while i in used:
        i += 1
    return i


def apply_splice(model: onnx.ModelProto, site: Site, splice: Splice) -> None:
    """Insert the splice after the tensor's producer; every former reader of the tensor reads the new output."""
    g = model.graph
    for node in g.node:
        replace_input(node, site.tensor, splice.output)
    position = 0
    if site.producer is not None:
        position = next(i for i, n in enumerate(g.node) if n.name == site.producer.name) + 1
    nodes = list(g.node)
    nodes[position:position] = splice.nodes
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(splice.inits)


LAYER_KINDS = ("identity", "residual")


@dataclass
class InsertResult(PassResult):
    """The model with the new layers (the one given): their node names, notes for the user, and whether the
    model still computes what it did (noise on an identity makes it approximate)."""

    inserted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exact: bool = True


class InsertLayers(PassBase[InsertResult]):
    """Insert `count` layers of kind `block` ("identity" or "residual") one after the other after `site`, named
    `{label}/deepen{i}/...`, and record them as a step of the model's growth map (in place).

    Inserting after the same site again (a model deepened before) continues the numbering: no name is reused.
    """

    in_place = True

    def __init__(
        self,
        site: Site,
        block: str,
        count: int = 1,
        *,
        label: str | None = None,
        hidden: int | None = None,
        activation: str = "relu",
        kernel: int = 3,
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        if block not in LAYER_KINDS:
            raise ParameterError("block", f"expected one of {', '.join(LAYER_KINDS)}", value=block)
        self.site, self.block, self.count, self.label = site, block, count, label or site.tensor
        self.hidden, self.activation, self.kernel, self.noise_std, self.seed = (
            hidden,
            activation,
            kernel,
            noise_std,
            seed,
        )

    def requires(self, model: onnx.ModelProto) -> str | None:
        g = model.graph
        tensor = self.site.tensor
        if any(o.name == tensor for o in g.output):
            return f"{tensor} is a graph output; new layers go inside the network"
        if not any(i.name == tensor for i in g.input) and tensor not in producers(g):
            return f"no node writes {tensor} and no graph input is called so"
        return None

    def call(self, model: onnx.ModelProto) -> InsertResult:
        result = InsertResult(model, modified=self.count > 0)
        if self.count <= 0:
            return result
        rng = np.random.default_rng(self.seed)
        taken = main_names(model.graph)
        version = opset(model)
        site, index = self.site, 0
        new_inits: list[onnx.TensorProto] = []
        for _ in range(self.count):
            index = free_index(taken, f"{self.label}/deepen", index)
            prefix = f"{self.label}/deepen{index}"
            index += 1
            if self.block == "identity":
                splice = identity_layer(site, prefix, version, kernel=self.kernel, noise_std=self.noise_std, rng=rng)
            else:
                splice = residual_block(
                    site, prefix, version, hidden=self.hidden, activation=self.activation, kernel=self.kernel, rng=rng
                )
            apply_splice(model, site, splice)
            new_inits += splice.inits
            result.inserted += [n.name for n in splice.nodes]
            result.notes += [n for n in splice.notes if n not in result.notes]
            result.exact &= splice.exact
            site = Site(splice.output, site.shape, site.dtype, site.conv, splice.nodes[-1], site.weight_std)
        step: dict[str, Any] = {
            "op": "deepen",
            "block": self.block,
            "after": self.label,
            "count": self.count,
            "layers": None,
            "weights": {t.name: {"new": _new_kind(t)} for t in new_inits},
        }
        append_step(model, step)
        return result


def _new_kind(t: onnx.TensorProto) -> str:
    """How a weight deepen made starts: zero, identity (a Dirac/eye matrix), constant (one number), random."""
    value = numpy_helper.to_array(t)
    if value.size == 1:
        return "constant"
    if not np.any(value):
        return "zero"
    if value.ndim >= 2 and np.count_nonzero(value) == min(value.shape[:2]) and np.all(value[value != 0] == 1):
        return "identity"
    return "random"
