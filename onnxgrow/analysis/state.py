"""The analysis state: union-find over axis atoms, and what each group's members impose."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import opset
from .layout import Atom, Cat, Layout, Prod, atoms, children, size
from .node import Node

Role = Literal["producer", "consumer", "param"]


@dataclass
class WeightUse:
    """One axis of an initializer that follows a layout.

    producer: rows of new units (fresh → init strategy); consumer: columns reading units
    (fresh → 0, Net2Net copies divided by their count); param: per-unit constants
    (fresh → `fill`, or the strategy's noise when fill is None).
    """

    node: str
    init: str
    axis: int
    layout: Layout
    role: Role
    fill: float | None = 0.0


@dataclass
class ValueUse:
    """A number in a small int64 initializer (Reshape target, Split sizes) equal to a layout's size."""

    node: str
    init: str
    index: int
    layout: Layout
    input_index: int  # which input of `node` reads the initializer
    divisor: int = 1
    #: the number is size(layout) / size(per): a head count or head size that torch computes at run time
    per: Layout | None = None
    #: the number is size(layout) * multiple / divisor (the start of chunk `multiple` of a Slice)
    multiple: int = 1


@dataclass
class AttrUse:
    """An integer attribute equal to a layout's size divided by `divisor` (Conv `group`).

    With `index`, entry `index` of an ints attribute (Split `split`, Slice `ends` at old opsets).
    """

    node: str
    attr: str
    layout: Layout
    divisor: int = 1
    index: int | None = None
    multiple: int = 1


@dataclass
class PositionsUse:
    """A constant index tensor that lists every position of an axis in order (an arange read by Gather, as torch
    exports `as_strided` and `view`): its axes follow `layouts`, and it becomes the arange of the grown axis."""

    node: str
    init: str
    layouts: list[Layout]


@dataclass
class GroupInfo:
    """What is known of one union-find root."""

    size: int | None
    origin: str
    producers: list[str] = field(default_factory=list)
    constraints: list[tuple[str, str]] = field(default_factory=list)  # (kind, reason)
    granularity: int = 1
    nonzero_ops: list[str] = field(default_factory=list)  # ops mapping 0 to non-zero


#: numpy types of the tensors `_to_array` reads straight from their bytes
_RAW_TYPES: dict[int, type[np.generic]] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
}


def _to_array(t: onnx.TensorProto) -> np.ndarray:
    """numpy_helper.to_array, with a shortcut for the common case (little-endian raw bytes of a plain type)."""
    dtype = _RAW_TYPES.get(t.data_type)
    if (
        dtype is not None
        and _LITTLE
        and t.data_location != onnx.TensorProto.EXTERNAL
        and t.HasField("raw_data")
        and not t.HasField("segment")
    ):
        return np.frombuffer(t.raw_data, dtype=dtype).reshape(list(t.dims))
    return numpy_helper.to_array(t)


_LITTLE = sys.byteorder == "little"


def _prod(factors: list[Layout]) -> Layout:
    """Product of layouts; a single factor is itself (a nested product is flattened by `resolve`)."""
    return factors[0] if len(factors) == 1 else Prod(tuple(factors))


class State:
    """Union-find of atoms plus the uses recorded by the op rules."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, list[int | None]]) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = opset(model)
        self.inits = {t.name: t for t in model.graph.initializer}
        self.shapes = shapes
        self.parent: list[int] = []
        self.info: list[GroupInfo] = []
        self.layouts: dict[str, list[Layout]] = {}
        self.weight_uses: list[WeightUse] = []
        self.value_uses: list[ValueUse] = []
        self.attr_uses: list[AttrUse] = []
        self.positions_uses: list[PositionsUse] = []
        #: parts of a concatenation that a mean (LayerNorm, ReduceMean) reads: each must grow by the same factor
        self.same_factor: list[tuple[list[Layout], str]] = []
        self._values: dict[str, np.ndarray] = {}
        #: initializer → its sign (see `sign`), whether it has a non-zero element, its dims: worked out once
        self._const_signs: dict[str, str | None] = {}
        self._nonzero_consts: dict[str, bool] = {}
        self._init_dims: dict[str, list[int | None]] = {}
        #: tensor → the number of splits when its stored layouts were last resolved (see `layout`)
        self._resolved_at: dict[str, int] = {}
        #: tensor → op that may make its new units non-zero even when grown with zeros (absent: they stay 0)
        self.nonzero_at: dict[str, str] = {}
        #: tensor → "pos" or "nonneg" when every value of it is known to be positive / not negative
        self.signs: dict[str, str] = {}
        #: tensor → the node of the main graph that computes it
        #: the nodes of the main graph, as the rules read them
        self.nodes: list[Node] = [Node(n) for n in model.graph.node]
        self.node_of: dict[str, Node] = {o: n for n in self.nodes for o in n.output if o}
        self._readers: dict[str, list[Node]] | None = None
        #: node → why its rule treated it as a boundary (to explain why a Gemm/Conv makes no group)
        self.boundaries: dict[str, str] = {}
        #: root → the product of finer atoms it was split into (a Reshape splitting hidden into heads × head size)
        self.splits: dict[int, Prod] = {}
        #: graph outputs whose grown axes are sliced back to the original units (widen --keep-outputs)
        self.kept_outputs: list[str] = []
        #: initializers read inside a subgraph (If/Loop/Scan bodies): their readers there cannot be rewired
        self.subgraph_reads: set[str] = set()
        #: atoms that count equal blocks of an axis (a grouped Conv's groups, the chunks of a Split, the equal
        #: parts of a Concat): a unit of the group next to them is present once in every block
        self.replicas: set[int] = set()
        #: checks that need every layout in its final form (after later ops have split atoms): run after the rules
        self.deferred: list[Callable[[], None]] = []

    # -- union-find -------------------------------------------------------------------
    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def fresh(self, size_: int | None, origin: str, fixed: bool = True) -> Atom:
        """A new atom; `fixed` ones (all but producers' outputs) cannot change size."""
        self.parent.append(len(self.parent))
        info = GroupInfo(size_, origin)
        if fixed:
            info.constraints.append(("blocked", f"its size is fixed by {origin}"))
        self.info.append(info)
        return Atom(len(self.parent) - 1)

    def atom_size(self, a: int) -> int | None:
        return self.info[self.find(a)].size

    def size(self, layout: Layout) -> int | None:
        if type(layout) is Atom:  # (the common case, inline)
            return self.info[self.find(layout.id)].size
        return size(layout, self.atom_size)

    # -- splits ------------------------------------------------------------------------
    def resolve(self, layout: Layout) -> Layout:
        """The layout with every split atom replaced by the product of its parts (recursively)."""
        splits = self.splits
        if type(layout) is Atom:
            if not splits:
                return layout
            parts = splits.get(self.find(layout.id))
            return layout if parts is None else self.resolve(parts)
        if type(layout) is Cat:
            old = layout.parts
            new = tuple([self.resolve(p) for p in old])
            return layout if all(a is b for a, b in zip(old, new)) else Cat(new)
        parent = self.parent
        flat: list[Layout] = []  # a product of products is one product (row-major nesting is associative)
        same = True
        for f in layout.factors:
            if type(f) is Atom:  # inline, the common case: an atom of a group that is not split is itself
                a = f.id
                if parent[a] != a:
                    a = self.find(a)
                if a not in splits:
                    flat.append(f)
                    continue
            r = self.resolve(f)
            if type(r) is Prod:
                flat.extend(r.factors)
                same = False
            else:
                flat.append(r)
                same = same and r is f
        return layout if same else Prod(tuple(flat))

    def _resolve_all(self, layouts: list[Layout]) -> list[Layout]:
        """`resolve` of each layout (`layouts` itself when none changes), with the common case inline: an atom of
        a group that is not split."""
        parent, splits = self.parent, self.splits
        out: list[Layout] | None = None
        for k, l in enumerate(layouts):
            if type(l) is Atom:
                a = l.id
                if parent[a] != a:
                    a = self.find(a)
                if a not in splits:
                    if out is not None:
                        out.append(l)
                    continue
            r = self.resolve(l)
            if out is None:
                if r is l:
                    continue
                out = layouts[:k]
            out.append(r)
        return layouts if out is None else out

    def normalise(self) -> None:
        """Replace split atoms in every recorded use (run once, after all rules)."""
        if not self.splits:
            return
        for u in self.weight_uses:
            u.layout = self.resolve(u.layout)
        for v in self.value_uses:
            v.layout = self.resolve(v.layout)
            v.per = None if v.per is None else self.resolve(v.per)
        for au in self.attr_uses:
            au.layout = self.resolve(au.layout)
        for pu in self.positions_uses:
            pu.layouts = [self.resolve(l) for l in pu.layouts]
        self.same_factor = [([self.resolve(p) for p in parts], why) for parts, why in self.same_factor]
        # tensor layouts need nothing here: `layout` resolves them whenever one is read

    def split(self, atom: Atom, sizes: list[int], origin: str) -> list[Layout] | None:
        """Split one atom into a row-major product of parts of `sizes` (None when it was split otherwise).

        Every part inherits the atom's producers and constraints: each is a group of its own, and the ops
        downstream decide which can grow (the head count can, a head's size is contracted by attention).
        """
        root = self.find(atom.id)
        if root in self.splits:
            done = self.splits[root]
            return list(done.factors) if [self.size(f) for f in done.factors] == sizes else None
        info = self.info[root]
        if info.size is None or math.prod(sizes) != info.size or info.granularity > 1:
            return None
        parts: list[Layout] = []
        for n in sizes:
            part = self.fresh(n, origin, fixed=False)
            pi = self.info[part.id]
            pi.origin = info.origin
            pi.producers = list(info.producers)
            pi.constraints = list(info.constraints)
            pi.nonzero_ops = list(info.nonzero_ops)
            parts.append(part)
        self.splits[root] = Prod(tuple(parts))
        return parts

    def grouped(self, layout: Layout, g: int, node: str, fix: str | None) -> tuple[Layout, Layout] | None:
        """`layout` read as g equal consecutive blocks built alike: (block count, one block's layout), so that
        Prod(count, block) has the positions of `layout` and a unit of the block grows inside every block.

        An atom or the leading factor of a product is split; the parts of a concatenation are grouped into
        blocks, which are unified (they must grow alike). `fix` blocks the count (a grouped Conv's group count);
        a count that ends inside a growable atom splits it, even into a single unit, so that it can still grow
        inside its block. None when the layout cannot be read so (its size is unknown or not a multiple of g,
        or the blocks would cut across its parts); the caller blocks it.
        """
        layout = self.resolve(layout)
        n = self.size(layout)
        if n is None or g < 1 or n % g:
            return None
        first_new = len(self.parent)
        if g == 1:
            return self.fresh(1, f"a single block of {node}"), layout
        if isinstance(layout, Cat):
            view = self._grouped_cat(layout, g, n // g, node)
        else:
            view = self._grouped_prod(list(layout.factors) if isinstance(layout, Prod) else [layout], g, node)
        if view is None:
            return None
        count, block = view
        # atoms made here to count the blocks (a whole factor taken into the count stays a group of its own)
        self.replicas.update(a for a in atoms(count) if a >= first_new)
        if fix:
            self.block(count, fix)
        return count, block

    def fixed(self, layout: Layout) -> bool:
        """Whether no atom of a layout has producers: its positions never move nor grow (atoms without producers
        are made fixed, so a later join with a growing group blocks that group anyway)."""
        return not any(self.info[self.find(a)].producers for a in atoms(self.resolve(layout)))

    def growable(self, layout: Layout) -> bool:
        """Whether an atom belongs to a group with producers that nothing blocks yet."""
        if not isinstance(layout, Atom):
            return False
        info = self.info[self.find(layout.id)]
        return bool(info.producers) and all(k != "blocked" for k, _ in info.constraints)

    def _grouped_prod(self, factors: list[Layout], g: int, node: str) -> tuple[Layout, Layout] | None:
        prefix: list[Layout] = []
        need = g
        for k, f in enumerate(factors):
            if need == 1:
                return _prod(prefix), _prod(factors[k:])
            s = self.size(f)
            if s is None:
                return None
            if need % s == 0 and not (s == need and self.growable(f)):
                prefix.append(f)
                need //= s
                continue
            if s % need:
                return None
            if isinstance(f, Atom):
                parts: list[Layout] | None = self.split(f, [need, s // need], f"split by {node}")
            else:
                inner = self._grouped_cat(f, need, s // need, node) if isinstance(f, Cat) else None
                parts = None if inner is None else list(inner)
            if parts is None:
                return None
            return _prod(prefix + [parts[0]]), _prod([parts[1]] + factors[k + 1 :])
        if need != 1:
            return None
        return _prod(prefix), self.fresh(1, f"a single unit in each block of {node}")

    def _grouped_cat(self, layout: Cat, g: int, m: int, node: str) -> tuple[Layout, Layout] | None:
        blocks: list[Layout] = []
        pending: list[Layout] = []
        acc = 0
        for part in layout.parts:
            s = self.size(part)
            if s is None:
                return None
            if not pending and s % m == 0:  # one or several whole blocks
                if s == m:
                    blocks.append(part)
                    continue
                inner = self.grouped(part, s // m, node, f"{node} reads this axis in blocks of {m}")
                if inner is None:
                    return None
                blocks += [inner[1]] * (s // m)
                continue
            pending.append(part)
            acc += s
            if acc == m:
                blocks.append(Cat(tuple(pending)))
                pending, acc = [], 0
            elif acc > m:
                return None
        if pending or len(blocks) != g:
            return None
        block = blocks[0]
        for other in blocks[1:]:
            block = self.unify(block, other, node)
        return self.fresh(g, f"the {g} equal blocks {node} reads"), block

    def unify(self, a: Layout, b: Layout, node: str) -> Layout:
        """Make two layouts the same (their groups grow together); block when shapes differ."""
        a, b = self.resolve(a), self.resolve(b)
        if a == b:
            return a
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Atom) and isinstance(y, Prod) and self.size(x) == self.size(y):
                sizes = [self.size(f) for f in y.factors]
                known = [s for s in sizes if s is not None]
                if len(known) == len(sizes) and self.split(x, known, f"split by {node}") is not None:
                    return self.unify(self.resolve(x), y, node)
        if isinstance(a, Atom) and isinstance(b, Atom):
            ra, rb = self.find(a.id), self.find(b.id)
            if ra != rb:
                ia, ib = self.info[ra], self.info[rb]
                if ia.size is None:
                    ia.size = ib.size
                elif ib.size is not None and ia.size != ib.size:
                    self.block(a, f"{node} joins axes of sizes {ia.size} and {ib.size}")
                self.parent[rb] = ra
                ia.producers += ib.producers
                ia.constraints += ib.constraints
                ia.nonzero_ops += ib.nonzero_ops
                ia.granularity = math.lcm(ia.granularity, ib.granularity)
                if ia.origin == "derived":
                    ia.origin = ib.origin
            return a
        if type(a) is type(b):
            pa, pb = children(a), children(b)
            if len(pa) == len(pb) and all(self.size(x) == self.size(y) for x, y in zip(pa, pb)):
                for x, y in zip(pa, pb):
                    self.unify(x, y, node)
                return a
        reason = f"{node} joins axes built differently (concatenated, flattened or plain)"
        self.block(a, reason)
        self.block(b, reason)
        return a

    # -- constraints -----------------------------------------------------------------
    def constrain(self, layout: Layout, kind: str, reason: str) -> None:
        for a in atoms(self.resolve(layout)):
            self.info[self.find(a)].constraints.append((kind, reason))

    def block(self, layout: Layout, reason: str) -> None:
        self.constrain(layout, "blocked", reason)

    def nonzero(self, layout: Layout, op: str) -> None:
        for a in atoms(self.resolve(layout)):
            self.info[self.find(a)].nonzero_ops.append(op)

    def needs_zero(self, name: str, layout: Layout, reason: str) -> None:
        """A mixer needs the new units of `layout` in tensor `name` to be exactly 0."""
        self.constrain(layout, "zero", reason)
        if name in self.nonzero_at:
            self.nonzero(layout, self.nonzero_at[name])

    def sign(self, name: str) -> str | None:
        """'pos' / 'nonneg' when all values of a tensor are known to be > 0 / >= 0."""
        if name in self.inits:
            if name not in self._const_signs:
                v = self.value(name)
                self._const_signs[name] = (
                    None
                    if v.dtype.kind not in "fiu" or v.size == 0
                    else "pos"
                    if bool(np.all(v > 0))
                    else "nonneg"
                    if bool(np.all(v >= 0))
                    else None
                )
            return self._const_signs[name]
        return self.signs.get(name)

    def granularity(self, layout: Layout, g: int) -> None:
        for a in atoms(self.resolve(layout)):
            i = self.info[self.find(a)]
            i.granularity = math.lcm(i.granularity, g)

    def whole_groups(self, layout: Layout, c: int, reason: str) -> None:
        """Let `layout` grow only by whole groups of c consecutive positions (new ones all new, copies whole):
        the groups of an equal-width grouped Conv, whose count grows with the channels.

        The leading factor of a product appends blocks of the rest's size r at the end: it grows in multiples
        of c / gcd(c, r). The rest grows inside every block: only when r is a multiple of c (then by the same
        rule), else it is blocked. Each part of a concatenation must hold whole groups. What cannot keep the
        groups whole is blocked with `reason`.
        """
        layout = self.resolve(layout)
        n = self.size(layout)
        if c <= 1:
            return
        if n is None or n % c or (isinstance(layout, Cat) and any((self.size(p) or 0) % c for p in layout.parts)):
            self.block(layout, reason)
        elif isinstance(layout, Cat):
            for part in layout.parts:
                self.whole_groups(part, c, reason)
        else:
            first, *rest = layout.factors if isinstance(layout, Prod) else (layout,)
            r = self.size(_prod(rest)) if rest else 1
            if r is None:
                self.block(layout, reason)
                return
            if isinstance(first, Atom):
                self.granularity(first, c // math.gcd(c, r))
            else:
                self.whole_groups(first, c // math.gcd(c, r), reason)
            if rest and r % c:
                self.block(_prod(rest), reason)
            elif rest:
                self.whole_groups(_prod(rest), c, reason)

    # -- uses --------------------------------------------------------------------------
    def produce(self, node: str, init: str, axis: int, size_: int | None) -> Atom:
        atom = self.fresh(size_, "producer", fixed=False)
        self.info[atom.id].producers.append(node)
        self.weight_uses.append(WeightUse(node, init, axis, atom, "producer", None))
        return atom

    def use(self, node: str, init: str, axis: int, layout: Layout, role: Role, fill: float | None = 0.0) -> None:
        dim = self._init_shape(init)[axis] if init in self.inits else None
        n = self.size(layout)
        if n is not None and dim is not None and n != dim:
            self.block(layout, f"{node}: weight {init} axis {axis} has {dim} entries, the tensor axis has {n}")
            return
        self.weight_uses.append(WeightUse(node, init, axis, layout, role, fill))

    # -- tensors -------------------------------------------------------------------------
    def readers(self) -> dict[str, list[Node]]:
        """Tensor → the nodes of the main graph that read it, each once, in graph order (`graph.consumers` over
        the Node views, made on the first call)."""
        if self._readers is None:
            readers: dict[str, list[Node]] = {}
            for n in self.nodes:
                for i in dict.fromkeys(n.input) if len(n.input) > 1 else n.input:
                    if i:
                        readers.setdefault(i, []).append(n)
            self._readers = readers
        return self._readers

    def is_const(self, name: str) -> bool:
        return name in self.inits

    def value(self, name: str) -> np.ndarray:
        if name not in self._values:
            self._values[name] = _to_array(self.inits[name])
        return self._values[name]

    def has_nonzero(self, name: str) -> bool:
        """Whether a constant has an element that is not 0 (worked out once)."""
        if name not in self._nonzero_consts:
            self._nonzero_consts[name] = bool(np.any(self.value(name) != 0))
        return self._nonzero_consts[name]

    def shape(self, name: str) -> list[int | None] | None:
        if name in self.inits:
            return list(self._init_shape(name))
        return self.shapes.get(name)

    def _init_shape(self, name: str) -> list[int | None]:
        """The dims of initializer `name`, read from the message once (the list is the cache's: not to change)."""
        dims = self._init_dims.get(name)
        if dims is None:
            dims = self._init_dims[name] = list(self.inits[name].dims)
        return dims

    def layout(self, name: str) -> list[Layout] | None:
        lay = self.layouts.get(name)
        if lay is None:
            return None
        splits = self.splits
        if not splits:
            return list(lay)
        # resolved layouts change only when an atom is split: union-find merges only atoms that are not split, and
        # splits are never undone, so the count of splits tells whether a resolved layout is still current; the
        # stored layouts are replaced by their resolved form (the same positions: only `layout` reads them)
        count = len(splits)
        if self._resolved_at.get(name) != count:
            resolved = self._resolve_all(lay)
            if resolved is not lay:
                self.layouts[name] = lay = resolved
            self._resolved_at[name] = count
        return list(lay)

    def has_layout(self, name: str) -> bool:
        """Whether `layout(name)` is not None (without resolving it)."""
        return self.layouts.get(name) is not None

    def set_layout(self, name: str, layouts: list[Layout]) -> None:
        if name:
            self.layouts[name] = layouts
            self._resolved_at.pop(name, None)  # (new layouts may hold atoms split since: `layout` resolves them)

    def fresh_layout(self, name: str, origin: str) -> list[Layout] | None:
        """Layouts of fresh atoms for a tensor (an output whose axes are new)."""
        shape = self.shape(name)
        if shape is None:
            return None
        result: list[Layout] = [self.fresh(d, origin) for d in shape]
        self.set_layout(name, result)
        return result
