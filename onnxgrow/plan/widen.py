"""Widen planning: size requests (`--layer`, `--all`, `--heads/--ffn/--hidden`) become per-group plans checked
against the analysis (a group's constraint refuses or picks the strategy)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from ..analysis import Analysis, Group
from ..errors import OnnxGrowError, ParameterError

STRATEGIES = ("noise", "zero", "net2net")


@dataclass
class GroupPlan:
    """Grow `group` to `new_size` units with strategy `init` (zero | noise | net2net)."""

    group: Group
    new_size: int
    init: str
    note: str | None = None


def parse_size(spec: str | int | float, current: int | None, where: str) -> int:
    """`128` (absolute), `x2` / `x1.5` (factor) or `+3` (added units) → the new size."""
    if current is None:
        raise OnnxGrowError(f"{where}: the group's size is not known")
    text = str(spec).strip()
    try:
        if text.startswith(("x", "*")):
            factor = float(text[1:])
            if not math.isfinite(factor):
                raise OnnxGrowError(f"{where}: factor {text} must be a finite number")
            if not factor > 1:
                raise OnnxGrowError(f"{where}: factor {text} must be greater than 1 (shrinking is not supported)")
            new = int(round(current * factor))
        elif text.startswith("+"):
            new = current + int(text[1:])
        else:
            new = int(text)
    except ValueError:
        raise OnnxGrowError(f"{where}: expected a size such as 128, x2 or +3, got {text!r}") from None
    if new < current:
        raise OnnxGrowError(f"{where}: {new} is smaller than the current size {current}; shrinking is not supported")
    if new == current:
        raise OnnxGrowError(f"{where}: the group already has {current} units; ask for more (e.g. x2)")
    return new


def _fallback(group: Group, init: str, new_size: int) -> str | None:
    """A strategy the group's constraint allows, preferring the requested one."""
    for candidate in (init, "net2net", "zero", "noise"):
        if group.allows(candidate, new_size) is None:
            return candidate
    return None


#: transformer-wide requests: flag → what it grows in every layer
TRANSFORMER_PARTS = {"heads": "attention heads", "ffn": "feed-forward width", "hidden": "hidden size"}


def _transformer_plans(
    analysis: Analysis, parts: Mapping[str, str | int], init: str, plans: dict[str, GroupPlan], asked: dict[str, str]
) -> None:
    """--heads/--ffn/--hidden: the same request for that group of every transformer layer."""
    from ..analysis.transformer import layers as transformer_layers

    found = transformer_layers(analysis)
    for part, spec in parts.items():
        if part not in TRANSFORMER_PARTS:
            raise OnnxGrowError(f"--{part}: expected one of {', '.join('--' + k for k in TRANSFORMER_PARTS)}")
        flag = f"--{part} {spec}"
        if not found:
            raise OnnxGrowError(f"{flag}: no attention layer found in this model (see `onnxgrow inspect`)")
        groups: list[Group] = []
        seen: set[int] = set()  # ids of the groups listed (a shared group once; a set, not a scan per layer)
        for layer in found:
            for g in layer.ffn if part == "ffn" else [getattr(layer, part)]:
                if g is not None and id(g) not in seen:
                    seen.add(id(g))
                    groups.append(g)
        if not groups:
            raise OnnxGrowError(f"{flag}: no {TRANSFORMER_PARTS[part]} group found in this model's layers")
        for g in groups:
            if g.id in asked:
                raise OnnxGrowError(f"{flag}: group {g.id} is also requested by {asked[g.id]}")
            asked[g.id] = flag
            if g.constraint == "blocked":
                hint = " (pass --keep-outputs to keep the output's size)" if "graph output" in (g.reason or "") else ""
                raise OnnxGrowError(f"{flag}: group {g.id} cannot grow: {g.reason}{hint}")
            new = parse_size(spec, g.size, flag)
            if g.granularity > 1:
                new = g.size + math.ceil((new - g.size) / g.granularity) * g.granularity  # type: ignore[operator]
            strategy = _fallback(g, init, new)
            if strategy is None:
                raise OnnxGrowError(f"{flag}: {g.allows('net2net' if g.constraint == 'replicate' else init, new)}")
            note = None if strategy == init else f"--init {init} not allowed ({g.reason}); used {strategy}"
            plans[g.id] = GroupPlan(g, new, strategy, note)


def plan(
    analysis: Analysis,
    layers: Mapping[str, str | int] | None = None,
    *,
    all: str | float | None = None,
    init: str = "noise",
    approximate: bool = False,
    transformer: Mapping[str, str | int] | None = None,
) -> tuple[list[GroupPlan], list[tuple[Group, str]]]:
    """Turn user requests into per-group plans, refusing what a group's constraint forbids.

    `transformer` maps heads / ffn / hidden to a size spec applied to that group of every layer.
    """
    if init not in STRATEGIES:
        raise ParameterError("init", f"expected one of {', '.join(STRATEGIES)}", value=init)
    plans: dict[str, GroupPlan] = {}
    asked: dict[str, str] = {}
    skipped: list[tuple[Group, str]] = []
    if transformer:
        _transformer_plans(analysis, transformer, init, plans, asked)
    for name, spec in (layers or {}).items():
        group = analysis.resolve(name)
        if group.id in asked:
            by = asked[group.id] if asked[group.id].startswith("--") else f"--layer {asked[group.id]}"
            raise ParameterError("layers", f"names group {group.id}, already requested by {by}", key=name)
        asked[group.id] = name
        new = parse_size(spec, group.size, f"--layer {name}={spec}")
        if group.constraint == "blocked":
            raise ParameterError("layers", f"group {group.id} cannot grow: {group.reason}", key=name)
        why = group.allows(init, new)
        if why and not approximate:
            raise ParameterError(
                "layers",
                f"{why} (or pass approximate=True to grow it anyway and see the error)",
                key=name,
                mentions=("approximate=True",),
            )
        plans[group.id] = GroupPlan(group, new, init, "approximate: " + why if why else None)
    if all is not None:
        for group in analysis.groups:
            if group.id in plans:  # explicit --layer requests win over --all for their groups
                continue
            if group.constraint == "blocked":
                skipped.append((group, group.reason or "blocked"))
                continue
            new = parse_size(all if str(all).startswith(("x", "*", "+")) else f"x{all}", group.size, f"--all {all}")
            if group.granularity > 1:
                new = group.size + math.ceil((new - group.size) / group.granularity) * group.granularity  # type: ignore[operator]
            strategy = _fallback(group, init, new)
            if strategy is None:
                skipped.append((group, group.allows(init, new) or "no strategy keeps it exact"))
                continue
            note = None if strategy == init else f"--init {init} not allowed ({group.reason}); used {strategy}"
            plans[group.id] = GroupPlan(group, new, strategy, note)
        _skip_uneven_means(analysis, plans, skipped, set(asked))
    if not plans:
        if all is not None:
            raise ParameterError("all", "no group of this model can grow (see `onnxgrow inspect`)")
        raise OnnxGrowError(
            "nothing to widen: give --layer NAME=SIZE, --all xF, or --heads/--ffn/--hidden for a transformer"
        )
    return list(plans.values()), skipped


def _skip_uneven_means(
    analysis: Analysis, plans: dict[str, GroupPlan], skipped: list[tuple[Group, str]], explicit: set[str]
) -> None:
    """--all: skip the groups of a concatenation that a mean reads when its parts would grow by different factors."""
    from ..analysis.layout import atoms, size

    st = analysis.state
    changed = True
    while changed:
        changed = False
        new_of = {g.root: g.units(p.new_size) for g, p in ((p.group, p) for p in plans.values())}

        def grown(atom: int, new_of: dict[int, int] = new_of) -> int | None:
            return new_of.get(st.find(atom), st.atom_size(atom))

        for parts, reason in st.same_factor:
            ratios = set()
            for part in parts:
                old = st.size(part)
                new = size(part, grown)
                ratios.add(new / old if old and new is not None else 1.0)
            if len(ratios) < 2:
                continue
            for part in parts:
                for a in atoms(part):
                    group = analysis.group_of_atom(a)
                    if group is not None and group.id in plans and group.id not in explicit:
                        del plans[group.id]
                        skipped.append((group, f"{reason} a concatenation whose parts would grow by different factors"))
                        changed = True
