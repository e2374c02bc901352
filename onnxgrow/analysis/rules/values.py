"""Value tracking after each node's rule: which tensors keep new units at 0, and which are known > 0 or >= 0.

The facts come from the node's `Rule` (`zeros`, `keeps_zero`, `weights`, `sign`); an op without a rule is a
boundary whose output may be anything.
"""

from __future__ import annotations

from ..layout import atoms
from ..node import Node
from ..state import State
from .registry import Rule, rule_for


def meet(signs: list[str | None]) -> str | None:
    """Sign of a product (or concatenation) of tensors with these signs."""
    if not signs or any(s is None for s in signs):
        return None
    return "pos" if all(s == "pos" for s in signs) else "nonneg"


def broadcasts_onto_growable(st: State, node: Node, const: str) -> bool:
    """Whether a constant reaches the new units of some growable output axis (scalar or size-1 there)."""
    lay = st.layout(node.output[0]) or []
    dims = st.shape(const) or []
    for j, l in enumerate(lay):
        k = j - (len(lay) - len(dims))
        if k < 0 or dims[k] == 1:
            if any(st.info[st.find(a)].producers for a in atoms(l)):
                return True
    return False


def activation_broadcasts(st: State, node: Node, name: str) -> bool:
    """Whether an activation input is broadcast onto the new units of a growable output axis (its value lands
    there: h + ReduceSum(h, axis=1) gives every new channel the sum, however the channel started)."""
    out, lay = st.layout(node.output[0]) or [], st.layout(name)
    if lay is None:
        return True
    if lay == out:  # the output's axes are the input's: nothing is broadcast
        return False
    for j, l in enumerate(out):
        roots = {st.find(a) for a in atoms(l)}
        if not any(st.info[r].producers for r in roots):
            continue
        k = j - (len(out) - len(lay))
        if k < 0 or not roots & {st.find(a) for a in atoms(lay[k])}:
            return True
    return False


def sign_of(node: Node, st: State, rule: Rule | None) -> str | None:
    """'pos' / 'nonneg' when every value of the node's outputs is known to be > 0 / >= 0."""
    if rule is None or rule.sign is None or not any(node.input):
        return None
    if rule.sign == "same":
        return st.sign(next(n for n in node.input if n))
    if isinstance(rule.sign, str):
        return rule.sign
    return rule.sign(node, st)


def _nonzero_reason(node: Node, st: State, rule: Rule | None) -> str | None:
    """The op that may make the new units of the node's outputs non-zero (None: they stay 0 when grown so)."""
    op = node.op_type
    if rule is None:
        return op
    if rule.weights and any(st.is_const(node.input[i]) for i in rule.weights if i < len(node.input)):
        return None
    kind = rule.zeros
    if kind == "nonzero":
        return op
    if kind == "first":
        first = node.input[0]
        return st.nonzero_at.get(first) if st.has_layout(first) else op
    nonzero_at, layouts = st.nonzero_at, st.layouts
    # the activation inputs are those with a layout
    if kind == "product":  # only when every activation input has one
        acts = [n for n in node.input if n and layouts.get(n) is not None]
        return nonzero_at[acts[0]] if acts and all(n in nonzero_at for n in acts) else None
    if kind in ("sum", "select"):
        reason = _first_flagged(node, nonzero_at, layouts)
        for n in node.input[1:] if kind == "select" else node.input:
            if reason is not None:
                break  # the first reason found is the one recorded
            if n and st.is_const(n) and broadcasts_onto_growable(st, node, n) and st.has_nonzero(n):
                reason = f"{op} of the constant {n}"
            elif n and not st.is_const(n) and activation_broadcasts(st, node, n):
                reason = f"{op} of {n} broadcast over the axis"
        return reason
    if rule.keeps_zero is not None and not rule.keeps_zero(node, st):
        return f"{op} (0 lies outside its bounds)"
    return _first_flagged(node, nonzero_at, layouts)


def _first_flagged(node: Node, nonzero_at: dict[str, str], layouts: dict[str, list]) -> str | None:
    """The op recorded in `nonzero_at` for the first activation input (one with a layout) that has one."""
    if nonzero_at:
        for n in node.input:
            if n in nonzero_at and layouts.get(n) is not None:
                return nonzero_at[n]
    return None


_LOOK_UP = Rule("boundary", lambda node, st: None)  # the default of `track_values`: look the node's rule up


def track_values(node: Node, st: State, rule: Rule | None = _LOOK_UP) -> None:
    """After a node's rule: which outputs keep new units at 0 (under --init zero), and signs of outputs.

    `rule` is the node's rule (None: it has none) when the caller has looked it up already.
    """
    if rule is _LOOK_UP:
        rule = rule_for(node.op_type, node.domain)
    if rule is not None and rule.zeros == "own":
        return  # the rule tracks what it follows (If: the branch it takes); else its outputs are fresh
    reason = _nonzero_reason(node, st, rule)
    sign = sign_of(node, st, rule)
    if not reason and not sign:
        return
    for out in node.output:
        if not out:
            continue
        if reason:
            st.nonzero_at[out] = reason
        if sign:
            st.signs[out] = sign
