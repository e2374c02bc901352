"""The rule registry: one `Rule` per op type, with the op's layout function and its value facts.

A rule says how an op moves, grows or constrains the axes of its tensors (`apply`) and what is known of the
values it computes (`zeros`, `sign`, `fill` ...): everything onnxgrow knows about an op is on its rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Union

from ..node import Node
from ..state import State

RuleFn = Callable[[Node, State], None]
#: the sign of a node's output ('pos' / 'nonneg' / None: unknown), worked out from its inputs' signs
SignFn = Callable[[Node, State], Union[str, None]]
#: what kind of op a rule is for (DESIGN.md): makes new units, reads them, passes them, joins axes, mixes the
#: units of an axis, or stops growth
Role = Literal["producer", "pass-through", "coupling", "mixer", "boundary"]
#: how an op's output keeps new units at 0 when its inputs' new units are 0 (under --init zero):
#: follow: 0 when every activation input's new units are; product: when any activation input's are (0 · x);
#: first: when the first input's are (Div, PRelu); sum: when every input's are and no constant or broadcast
#: activation adds to them; select: as sum, of the inputs after the first (Where's condition); nonzero: never
#: (the op maps 0 to a non-zero value); own: the rule records it itself (If, for the branch it follows)
Zeros = Literal["follow", "product", "first", "sum", "select", "nonzero", "own"]


@dataclass(frozen=True)
class Rule:
    """What onnxgrow knows of an op: its role, how it moves axes (`apply`) and facts about its values."""

    role: Role
    apply: RuleFn
    #: the rule itself handles what the node's subgraphs read (else every layout read there is blocked)
    subgraphs: bool = False
    #: how 0 in the new units of the inputs reaches the output (see `Zeros`)
    zeros: Zeros = "follow"
    #: for `zeros="follow"`: whether this node maps 0 to 0 (Clip: when 0 lies between its bounds)
    keeps_zero: Callable[[Node, State], bool] | None = None
    #: inputs that are weights when constant: the output's new units are then the weights' new (zero) rows
    weights: tuple[int, ...] = ()
    #: the output's sign: 'pos', 'nonneg', 'same' (that of the first input), a function, or None (unknown)
    sign: str | SignFn | None = None
    #: the value new entries of a constant per-unit operand take (the op's neutral element: 1 for Mul)
    fill: float = 0.0
    #: for reductions: what the reduced axis needs of new units ('replicate', 'zero' or 'blocked')
    reduce: str = ""


RULES: dict[str, Rule] = {}


def rule(
    role: Role,
    *ops: str,
    subgraphs: bool = False,
    zeros: Zeros = "follow",
    keeps_zero: Callable[[Node, State], bool] | None = None,
    weights: tuple[int, ...] = (),
    sign: str | SignFn | None = None,
    fill: float = 0.0,
    reduce: str = "",
) -> Callable[[RuleFn], RuleFn]:
    """Register `fn` as the rule for `ops`, each with the same facts (an op is registered once)."""

    def register(fn: RuleFn) -> RuleFn:
        for op in ops:
            if op in RULES:
                raise ValueError(f"op {op} has two rules")
            RULES[op] = Rule(role, fn, subgraphs, zeros, keeps_zero, weights, sign, fill, reduce)
        return fn

    return register


def rule_for(op_type: str, domain: str) -> Rule | None:
    """The rule of an op in the default domain; None means: boundary."""
    if domain not in ("", "ai.onnx"):
        return None
    return RULES.get(op_type)
