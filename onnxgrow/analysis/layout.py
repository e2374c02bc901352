"""Axis layouts: how the positions of one tensor axis are made of axis-group units.

An axis is an `Atom` (one group), a `Cat` (Concat of several layouts, in order) or a `Prod`
(row-major flattening of several layouts, as Flatten/Reshape make). Growing groups changes
the layout's size; `expand` maps every new position to the old position it copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union, final

import numpy as np


@final
@dataclass(frozen=True)
class Atom:
    """All positions of one axis group (identified by its union-find id)."""

    id: int


@final
@dataclass(frozen=True)
class Cat:
    """Positions of `parts` one after another (Concat)."""

    parts: tuple["Layout", ...]


@final
@dataclass(frozen=True)
class Prod:
    """Row-major product of `factors` (Flatten, Reshape merging axes, grouped channels)."""

    factors: tuple["Layout", ...]


Layout = Union[Atom, Cat, Prod]


def prod(factors: list[Layout]) -> Layout:
    """Product of layouts, flattening a single factor to itself."""
    return factors[0] if len(factors) == 1 else Prod(tuple(factors))


def children(layout: Layout) -> tuple[Layout, ...]:
    """Parts of a Cat or factors of a Prod; an Atom has none."""
    if isinstance(layout, Cat):
        return layout.parts
    if isinstance(layout, Prod):
        return layout.factors
    return ()


def atoms(layout: Layout) -> list[int]:
    """Every atom id in a layout (unresolved ids), in order.

    A list, not a generator: most layouts are one atom, and the analysis asks for atoms several times a node."""
    if type(layout) is Atom:
        return [layout.id]
    found: list[int] = []
    _collect_atoms(layout, found)
    return found


def _collect_atoms(layout: Layout, found: list[int]) -> None:
    if type(layout) is Atom:
        found.append(layout.id)
    else:
        for part in layout.parts if type(layout) is Cat else layout.factors:
            _collect_atoms(part, found)


def size(layout: Layout, atom_size: Callable[[int], int | None]) -> int | None:
    """Total number of positions, or None when some atom's size is not known."""
    if isinstance(layout, Atom):
        return atom_size(layout.id)
    cat = isinstance(layout, Cat)
    total = 0 if cat else 1
    for part in layout.parts if isinstance(layout, Cat) else layout.factors:
        n = size(part, atom_size)
        if n is None:
            return None
        total = total + n if cat else total * n
    return int(total)


@dataclass
class Expansion:
    """For each position of the grown axis: the old position it copies (-1: fresh) and a scale.

    `scale` is the Net2Net split factor 1/copies, used only on the consumer side.
    """

    src: np.ndarray
    scale: np.ndarray
    old_size: int

    @property
    def new_size(self) -> int:
        return int(self.src.shape[0])

    @property
    def fresh(self) -> np.ndarray:
        return self.src < 0

    @property
    def identity(self) -> bool:
        return self.new_size == self.old_size and bool(np.all(self.src == np.arange(self.old_size)))


def expand(layout: Layout, unit: Callable[[int], Expansion]) -> Expansion:
    """Combine the per-group unit maps `unit(atom)` over a layout."""
    if isinstance(layout, Atom):
        return unit(layout.id)
    if isinstance(layout, Cat):
        srcs, scales, offset = [], [], 0
        for part in layout.parts:
            e = expand(part, unit)
            srcs.append(np.where(e.src >= 0, e.src + offset, -1))
            scales.append(e.scale)
            offset += e.old_size
        return Expansion(np.concatenate(srcs), np.concatenate(scales), offset)
    src = np.zeros(1, dtype=np.int64)
    scale = np.ones(1)
    old = 1
    for factor in layout.factors:
        e = expand(factor, unit)
        fresh = (src[:, None] < 0) | (e.src[None, :] < 0)
        src = np.where(fresh, -1, src[:, None] * e.old_size + e.src[None, :]).reshape(-1)
        scale = (scale[:, None] * e.scale[None, :]).reshape(-1)
        old *= e.old_size
    return Expansion(src, scale, old)


def identity_expansion(n: int) -> Expansion:
    return Expansion(np.arange(n, dtype=np.int64), np.ones(n), n)
