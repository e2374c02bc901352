"""Normalisations and softmax: mixers that compute statistics over an axis or over its units.

Normalising over a growing axis needs new units that leave the statistics alone (whole copies for a mean,
`replicate`), or blocks it; per-channel normalisations (BatchNorm) pass the channels with padded parameters.
"""

from __future__ import annotations

from ..layout import Atom, Cat, Layout, Prod
from ..node import Node
from ..state import State
from .common import ZERO_PAD, attr, inp, pass_through, same_factor
from .registry import rule


@rule("pass-through", "BatchNormalization", "InstanceNormalization")
def _batchnorm(node: Node, st: State) -> None:
    lay = pass_through(node, st)
    if lay is None or len(lay) < 2:
        return
    fills = [1.0, 0.0, 0.0, 1.0] if node.op_type == "BatchNormalization" else [1.0, 0.0]
    if node.op_type == "InstanceNormalization":  # statistics over axes 2+: a mean, kept by whole copies
        for l in lay[2:]:
            st.constrain(l, "replicate", f"{node.name} (InstanceNormalization) normalises over this axis")
            same_factor(st, l, f"{node.name} (InstanceNormalization) normalises over")
    for k, fill in enumerate(fills, start=1):
        name = inp(node, k)
        if name and st.is_const(name):
            st.use(node.name, name, 0, lay[1], "param", fill)
        elif name:
            st.block(lay[1], f"{node.name}: {node.op_type} parameter {name} is not a constant")


@rule("mixer", "LRN")
def _lrn(node: Node, st: State) -> None:
    lay = pass_through(node, st)
    if lay is not None:
        # judged once every layout is final: a later grouped Conv or Reshape may split these channels
        st.deferred.append(lambda: _lrn_channels(node, st, lay[1]))


def _lrn_channels(node: Node, st: State, channels: Layout) -> None:
    reason = f"{node.name} (LRN) sums squares across channels"
    channels = st.resolve(channels)
    # its window slides over the channels: only units appended at the end (behind zero padding) keep
    # every old window; units inserted inside a concatenation would change their neighbours' windows
    while isinstance(channels, Cat):
        parts = list(channels.parts)
        while (
            len(parts) > 1
            and isinstance(parts[-1], Atom)
            and st.info[st.find(parts[-1].id)].origin.startswith(ZERO_PAD)
        ):
            parts.pop()
        for p in parts[:-1]:
            st.block(p, f"{reason} with a sliding window: new units inside a concatenation would change it")
        channels = parts[-1]
    if isinstance(channels, Prod):
        st.block(channels, f"{reason} with a sliding window: new units would interleave with old ones")
    else:
        st.needs_zero(node.input[0], channels, reason)


@rule("mixer", "LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", zeros="nonzero")
def _layernorm(node: Node, st: State) -> None:
    lay = pass_through(node, st)
    if lay is None:
        return
    axis = int(attr(node, "axis", -1)) % len(lay)
    for k in range(axis, len(lay)):
        st.constrain(lay[k], "replicate", f"{node.name} ({node.op_type}) normalises over this axis")
        same_factor(st, lay[k], f"{node.name} ({node.op_type}) normalises over")
    for idx in (1, 2):
        name = inp(node, idx)
        if name and st.is_const(name):
            dims = list(st.inits[name].dims)
            for k in range(len(dims)):
                j = len(lay) - len(dims) + k
                if dims[k] != 1:
                    st.use(node.name, name, k, lay[j], "param", 1.0 if idx == 1 else 0.0)


@rule("mixer", "GroupNormalization", "MeanVarianceNormalization", zeros="nonzero")
def _groupnorm(node: Node, st: State) -> None:
    lay = pass_through(node, st)
    if lay is not None:
        st.block(lay[1], f"{node.name} ({node.op_type}) normalises over groups of channels")


@rule("mixer", "Softmax", zeros="nonzero", sign="pos")
@rule("mixer", "LogSoftmax", "Hardmax", zeros="nonzero")
def _softmax(node: Node, st: State) -> None:
    lay = pass_through(node, st)
    if lay is None:
        return
    default = -1 if st.opset >= 13 else 1
    axis = int(attr(node, "axis", default)) % len(lay)
    axes = [axis] if st.opset >= 13 else list(range(axis, len(lay)))
    for k in axes:
        st.block(lay[k], f"{node.name} ({node.op_type}) normalises over this axis")
