"""The widen pass: grow every weight, shape constant and attribute that a planned group touches."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from ..analysis.groups import Analysis
from ..analysis.layout import Expansion, Layout, atoms, expand, identity_expansion
from ..analysis.state import WeightUse
from ..errors import OnnxGrowError
from ..graph import Names, consumers, nodes_by_name, rename_tensor, replace_input
from ..growth_map import append_step, encode_scale, encode_src
from ..plan.widen import GroupPlan
from ..progress import ProgressFn
from ..stream import Buffer, Deferred, array_bytes, has_data, raw_nbytes, skeleton, stub
from ..stream import pieces as stream_pieces
from .base import PassBase, PassResult

#: a large grown weight is produced (and written) in pieces of about this many bytes
BLOCK_BYTES = 64 * 2**20


def unit_map(plan: GroupPlan, rng: np.random.Generator) -> Expansion:
    """Where each unit of the grown group comes from: itself, a copied unit (Net2Net) or nothing (-1)."""
    # per unit of the union-find group: a group repeated in blocks (grouped Conv) grows inside each block
    old, new = plan.group.units(int(plan.group.size or 0)), plan.group.units(plan.new_size)
    if plan.init != "net2net":
        src = np.concatenate([np.arange(old), -np.ones(new - old, dtype=np.int64)])
        return Expansion(src.astype(np.int64), np.ones(new), old)
    if plan.group.constraint == "replicate":
        extra = np.arange(old, new) % old  # every unit copied the same number of times
    else:
        b = plan.group.units(plan.group.granularity)
        blocks = rng.integers(0, old // b, size=(new - old) // b)
        extra = (blocks[:, None] * b + np.arange(b)[None, :]).reshape(-1)
    src = np.concatenate([np.arange(old), extra]).astype(np.int64)
    counts = np.bincount(src, minlength=old)
    return Expansion(src, 1.0 / counts[src], old)


@dataclass
class Untied:
    """A shared initializer whose readers grow it differently: each class of readers gets its own copy.

    `copies` maps each copy's name to the nodes that read it; the first copy keeps the original name."""

    weight: str
    copies: dict[str, list[str]]

    def to_dict(self) -> dict:
        return {"weight": self.weight, "copies": self.copies}


@dataclass
class Target:
    """One initializer of the grown model: `name`, grown from initializer `source` along `uses`."""

    name: str
    source: str
    uses: list[WeightUse]
    readers: list[str]


class _Rewriter:
    def __init__(
        self, analysis: Analysis, plans: list[GroupPlan], noise_std: float, seed: int, keep_ties: bool = False
    ) -> None:
        self.a = analysis
        self.st = analysis.state
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.plans = {p.group.root: p for p in plans}
        self.maps = {root: unit_map(p, self.rng) for root, p in self.plans.items()}
        self.noise_std = noise_std
        self.keep_ties = keep_ties
        self.untied: list[Untied] = []

    def unit(self, atom: int) -> Expansion:
        root = self.st.find(atom)
        if root in self.maps:
            return self.maps[root]
        return identity_expansion(int(self.st.atom_size(atom) or 0))

    def grown(self, layout: Layout) -> GroupPlan | None:
        for a in atoms(layout):
            p = self.plans.get(self.st.find(a))
            if p is not None:
                return p
        return None

    # -- weights -------------------------------------------------------------------------------
    def weight_uses(self) -> dict[str, list[WeightUse]]:
        touched: dict[str, list[WeightUse]] = {}
        for u in self.st.weight_uses:
            touched.setdefault(u.init, []).append(u)
        return {k: v for k, v in touched.items() if any(self.grown(u.layout) for u in v)}

    def _signature(self, init: str, node: str, uses: list[WeightUse]) -> tuple:
        """How one node's uses grow a weight: per grown axis its role, fill, new size and unit map.

        Two readers with the same signature can share the grown weight (a real tie); different ones cannot."""
        per_axis: dict[int, tuple | None] = {}
        for u in uses:
            plan = self.grown(u.layout)
            sig = None
            if plan is not None:
                e = expand(u.layout, self.unit)
                consumer = u.role == "consumer"
                fresh = None if consumer else (u.role, plan.init if u.fill is None else u.fill)
                sig = (consumer, fresh, e.new_size, e.src.tobytes(), e.scale.tobytes() if consumer else b"")
            if per_axis.setdefault(u.axis, sig) != sig:
                raise OnnxGrowError(
                    f"weight {init} is read twice by {node}, which would grow its axis {u.axis} in two different ways"
                )
        return tuple(sorted((axis, sig) for axis, sig in per_axis.items() if sig is not None))

    def _readers(self) -> tuple[dict[str, list[str]], set[str]]:
        """Main-graph nodes reading each initializer, and the initializers that must keep their name
        (read inside a subgraph, or a graph output: those readers cannot be rewired to a copy)."""
        graph = self.a.model.graph
        readers = {i: [n.name for n in nodes] for i, nodes in consumers(graph, only=self.st.inits).items()}
        pinned = {o.name for o in graph.output} | set(self.st.subgraph_reads)
        return readers, pinned

    def targets(self) -> list[Target]:
        """Every initializer the plans change, untying shared ones whose readers grow them differently."""
        readers, pinned = self._readers()
        names = Names(self.st.inits)  # a copy is named after the weight and its first reader
        nodes: set[str] | None = None  # the main graph's node names, when a weight is untied
        result: list[Target] = []
        for init, uses in self.weight_uses().items():
            by_node: dict[str, list[WeightUse]] = {}
            for u in uses:
                by_node.setdefault(u.node, []).append(u)
            classes: dict[tuple, list[str]] = {}
            for node in list(dict.fromkeys(readers.get(init, []) + list(by_node))):
                classes.setdefault(self._signature(init, node, by_node.get(node, [])), []).append(node)
            if len(classes) == 1:
                result.append(Target(init, init, uses, []))
                continue
            sigs = list(classes)
            if nodes is None:
                nodes = set(nodes_by_name(self.a.model.graph))
            fixed = [sig for sig in sigs if any(n not in nodes for n in classes[sig])]
            if init in pinned:
                fixed.append(())
            fixed = list(dict.fromkeys(fixed))
            if self.keep_ties or len(fixed) > 1:
                a, b = (classes[sig][0] for sig in sigs[:2])
                why = (
                    "(--keep-ties keeps it shared; drop it to give each reader its own copy)"
                    if self.keep_ties
                    else "and some of its readers cannot be given a copy (inside a subgraph or a graph output)"
                )
                raise OnnxGrowError(
                    f"weight {init} is shared by {a} and {b}, which would grow it differently (tied weights) {why}"
                )
            keeper = fixed[0] if fixed else sigs[0]
            if keeper not in classes:
                classes[keeper] = []
            copies: dict[str, list[str]] = {init: classes[keeper]}
            for sig in sigs:
                if sig == keeper:
                    continue
                copies[names.fresh(f"{init}/{classes[sig][0]}")] = classes[sig]
            for name, members in copies.items():
                result.append(Target(name, init, [u for u in uses if u.node in members], members))
            self.untied.append(Untied(init, copies))
        return result

    def check(self) -> None:
        """Refuse plans that no rewrite keeps exact: concatenations whose parts a mean needs grown alike."""
        for parts, reason in self.st.same_factor:
            ratios = {(e.new_size / e.old_size if e.old_size else 1.0) for e in (expand(p, self.unit) for p in parts)}
            if len(ratios) > 1:
                ids = sorted({g.id for p in parts for a in atoms(p) if (g := self.a.group_of_atom(a)) is not None})
                raise OnnxGrowError(
                    f"{reason} a concatenation of groups {', '.join(ids)}: all of its parts must grow by the "
                    f"same whole factor (--init net2net), or none of them"
                )

    def _steps(self, uses: list[WeightUse]) -> list[tuple[WeightUse, GroupPlan, Expansion]]:
        """The grown axes of a weight in the order they are applied: consumer uses first, one use per axis."""
        seen: set[int] = set()
        steps = []
        for u in [u for u in uses if u.role == "consumer"] + [u for u in uses if u.role != "consumer"]:
            if u.axis in seen:
                continue
            seen.add(u.axis)
            plan = self.grown(u.layout)
            if plan is not None:
                steps.append((u, plan, expand(u.layout, self.unit)))
        return steps

    def grown_shape(self, init: str, uses: list[WeightUse]) -> list[int]:
        """The shape `grow_weight` will return, known without growing anything."""
        shape = list(self.st.inits[init].dims)
        for u, _, e in self._steps(uses):
            shape[u.axis] = e.new_size
        return shape

    def grow_weight(self, init: str, uses: list[WeightUse], *, general: bool = False) -> np.ndarray:
        """The grown weight as one array (see `grow_blocks`)."""
        blocks = list(self.grow_blocks(init, uses, general=general, block_bytes=None))
        if not blocks:  # a first axis of size 0
            return np.empty(self.grown_shape(init, uses), dtype=numpy_helper.to_array(self.st.inits[init]).dtype)
        return blocks[0]

    def grow_blocks(
        self, init: str, uses: list[WeightUse], *, general: bool = False, block_bytes: int | None = BLOCK_BYTES
    ) -> Iterator[np.ndarray]:
        """The grown weight in the weight's own dtype (float16/bfloat16 are worked on in float32), as pieces of
        about `block_bytes` along its first axis, in order (None: one piece). A piece is valid until the next
        is asked for (one buffer is reused, so a large weight is never held whole).

        Steps apply in order: each gathers its axis (copied units, and old units in place) and then
        overwrites the new units of that axis: 0 for a consumer, `fill` or noise for a producer; a later
        step's new units overwrite an earlier step's. When every grown axis only appends new units after
        the old ones (zero and noise inits) the pieces are built directly; otherwise (Net2Net copies, units
        interleaved by a concatenation or flattening) the weight is grown whole, axis by axis with np.take.
        `general` forces the second way (tests check both give the same weight). Each step draws its noise
        from its own generator (seed, weight name, step), in C order over its new units, so the values do
        not depend on the pieces' size nor on the order weights are grown in.
        """
        arr = numpy_helper.to_array(self.st.inits[init])  # not cached: the copy lives while this weight grows
        dtype = arr.dtype
        native = dtype.kind == "f" and dtype.itemsize >= 4
        wdtype = dtype if native or dtype.kind not in "fV" and "bfloat" not in str(dtype) else np.dtype(np.float32)
        steps = self._steps(uses)
        noise = any(p.init == "noise" and u.fill is None and u.role != "consumer" for u, p, _ in steps)
        scale_ref = _scale_ref(arr) if noise and wdtype.kind == "f" else 0.0
        gens = [self._generator(init, k) for k in range(len(steps))]
        if not general and all(_appends(e, arr.shape[u.axis]) for u, _, e in steps):
            blocks = self._appended_blocks(arr, steps, wdtype, scale_ref, gens, block_bytes)
        else:
            blocks = iter([self._grow_general(arr, steps, wdtype, scale_ref, gens)])
        for block in blocks:
            yield block if block.dtype == dtype else block.astype(dtype)

    def _generator(self, init: str, k: int) -> np.random.Generator:
        """The noise stream of step `k` of weight `init`."""
        key = np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(init.encode()), k))
        return np.random.Generator(np.random.PCG64(key))

    def _fill_fresh(
        self, view: np.ndarray, u: WeightUse, plan: GroupPlan, scale_ref: float, gen: np.random.Generator
    ) -> None:
        """Write the new units of one step into `view`: 0 (consumer), the use's fill, or noise."""
        if u.role == "consumer":
            view[...] = 0
        elif u.fill is not None:
            view[...] = u.fill
        elif plan.init == "noise" and view.dtype.kind == "f":
            _fill_noise(view, gen, self.noise_std * scale_ref)
        else:
            view[...] = 0

    def _appended_blocks(
        self,
        arr: np.ndarray,
        steps: list,
        wdtype: np.dtype,
        scale_ref: float,
        gens: list[np.random.Generator],
        block_bytes: int | None,
    ) -> Iterator[np.ndarray]:
        """Every step appends its new units after the old ones: per piece of rows, copy the old values in
        and fill each step's new units (its region: earlier steps' axes whole, later steps' axes old)."""
        final = list(arr.shape)
        for u, _, e in steps:
            final[u.axis] = e.new_size
        row_bytes = int(np.prod(final[1:], dtype=np.int64)) * wdtype.itemsize
        rows = final[0] if block_bytes is None else max(1, block_bytes // max(1, row_bytes))
        buf = np.empty([min(rows, final[0])] + final[1:], dtype=wdtype)
        regions = []
        for k, (u, _, e) in enumerate(steps):
            region = [slice(0, n) for n in final]
            region[u.axis] = slice(arr.shape[u.axis], e.new_size)
            for later, _, _ in steps[k + 1 :]:
                region[later.axis] = slice(0, arr.shape[later.axis])
            regions.append(region)
        old = tuple(slice(0, n) for n in arr.shape[1:])
        for r0 in range(0, final[0], rows):
            r1 = min(r0 + rows, final[0])
            block = buf[: r1 - r0]
            if r0 < arr.shape[0]:
                k = min(r1, arr.shape[0]) - r0
                block[(slice(0, k),) + old] = arr[r0 : r0 + k]
            for (u, plan, _), region, gen in zip(steps, regions, gens):
                lo, hi = max(region[0].start, r0), min(region[0].stop, r1)
                if lo >= hi:
                    continue
                view = block[(slice(lo - r0, hi - r0),) + tuple(region[1:])]
                if view.size:
                    self._fill_fresh(view, u, plan, scale_ref, gen)
            yield block

    def _grow_general(
        self, arr: np.ndarray, steps: list, wdtype: np.dtype, scale_ref: float, gens: list[np.random.Generator]
    ) -> np.ndarray:
        """Axis by axis: gather the axis (copies and old units), scale consumers' copies, fill new units."""
        work = arr if arr.dtype == wdtype else arr.astype(wdtype)
        for (u, plan, e), gen in zip(steps, gens):
            shape = [1] * work.ndim
            shape[u.axis] = -1
            work = np.take(work, np.clip(e.src, 0, None), axis=u.axis)
            index = [slice(None)] * work.ndim
            fresh = np.nonzero(e.fresh)[0]
            if u.role == "consumer" and work.dtype.kind == "f" and not np.all(e.scale == 1):  # x * 1.0 == x
                work *= e.scale.reshape(shape).astype(work.dtype)
            if not fresh.size:
                continue
            # new units are usually one run at the end: a slice (a view, filled in place) is far cheaper
            if fresh[-1] - fresh[0] + 1 == fresh.size:
                index[u.axis] = slice(int(fresh[0]), int(fresh[-1]) + 1)
                self._fill_fresh(work[tuple(index)], u, plan, scale_ref, gen)
            else:
                index[u.axis] = fresh
                values = np.empty(work[tuple(index)].shape, dtype=work.dtype)
                self._fill_fresh(values, u, plan, scale_ref, gen)
                work[tuple(index)] = values
        return work

    # -- small constants and attributes -------------------------------------------------------------
    def new_size(self, layout: Layout) -> int:
        return expand(layout, self.unit).new_size

    def rewrite(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Deferred]]:
        """The grown model with every weight a stub (name, type, grown shape) whose bytes are deferred:
        a grown weight is computed only when its bytes are asked for, an unchanged one read from `model`."""
        self.check()
        targets = self.targets()
        out, deferred = skeleton(model)
        g = out.graph
        index = {t.name: i for i, t in enumerate(g.initializer)}
        by_name: dict[str, list[onnx.NodeProto]] = {}  # a list: two nodes may share a name
        for n in g.node:
            by_name.setdefault(n.name, []).append(n)
        for tg in targets:  # untied copies first, made from the original (unchanged) stubs
            if tg.name == tg.source:
                continue
            t = g.initializer.add()
            t.CopyFrom(g.initializer[index[tg.source]])
            t.name = tg.name
            index[tg.name] = len(g.initializer) - 1
            if tg.source in deferred:
                deferred[tg.name] = deferred[tg.source]
            for node in (n for r in tg.readers for n in by_name.get(r, [])):
                replace_input(node, tg.source, tg.name)
        for tg in targets:
            if not self._steps(tg.uses):
                continue
            t = g.initializer[index[tg.name]]
            t.CopyFrom(stub(t))
            del t.dims[:]
            t.dims.extend(self.grown_shape(tg.source, tg.uses))
            nbytes = raw_nbytes(t.data_type, list(t.dims))
            if nbytes is None:  # no raw bytes for this type (strings): grow it now
                t.CopyFrom(numpy_helper.from_array(self.grow_weight(tg.source, tg.uses), tg.name))
                deferred.pop(tg.name, None)
                continue
            deferred[tg.name] = Deferred(nbytes, self._grown_bytes(tg, t.data_type))
        self._values(g, index)
        self._positions(g, index)
        nodes = nodes_by_name(g)
        for au in self.st.attr_uses:
            if self.grown(au.layout):
                node = nodes[au.node]
                for a in node.attribute:
                    if a.name == au.attr and au.index is None:
                        a.i = self.new_size(au.layout) * au.multiple // au.divisor
                    elif a.name == au.attr:
                        a.ints[au.index] = self.new_size(au.layout) * au.multiple // au.divisor
        self._value_info(g)
        self._keep_outputs(g, index)
        append_step(out, self.growth_step(targets))
        return out, deferred

    def _grown_bytes(self, tg: Target, data_type: int) -> Callable[[], Iterator[Buffer]]:
        """A producer of the grown weight's bytes, piece by piece, grown when they are asked for."""
        return lambda: (array_bytes(b, data_type) for b in self.grow_blocks(tg.source, tg.uses))

    def growth_step(self, targets: list[Target]) -> dict:
        """This widening as a step of the growth map (see onnxgrow.growth_map): per changed weight its source
        (the shared weight an untied copy was made from, else itself), old shape and, per grown axis, the
        expansion of its units (one table entry per distinct expansion, shared by a group's weights) and role."""
        table: list[dict] = []
        index: dict[tuple, int] = {}
        weights: dict[str, dict] = {}
        for tg in targets:
            axes = []
            for u, _, e in self._steps(tg.uses):
                key = (e.old_size, e.src.tobytes(), e.scale.tobytes())
                if key not in index:
                    index[key] = len(table)
                    scale = encode_scale(e.scale)
                    table.append({"old": e.old_size, "src": encode_src(e.src)} | ({"scale": scale} if scale else {}))
                axes.append({"axis": u.axis, "expansion": index[key], "role": u.role})
            if not axes and tg.name == tg.source:
                continue
            weights[tg.name] = {
                "source": tg.source,
                "old_shape": [int(d) for d in self.st.inits[tg.source].dims],
                "shape": self.grown_shape(tg.source, tg.uses),
                "axes": axes,
            }
        groups = [
            {"id": p.group.id, "old": p.group.size, "new": p.new_size, "init": p.init} for p in self.plans.values()
        ]
        return {"op": "widen", "groups": groups, "expansions": table, "weights": weights}

    def _keep_outputs(self, g: onnx.GraphProto, index: dict[str, int]) -> None:
        """Slice each kept graph output back to its original units (the first copy of each)."""
        opset = self.st.opset
        for name in self.st.kept_outputs:
            lay = self.st.layout(name) or []
            grown = [(k, expand(l, self.unit)) for k, l in enumerate(lay) if self.grown(l)]
            if not grown:
                continue
            inner = f"{name}/grown"
            rename_tensor(g, name, inner)
            cur = inner
            for step, (axis, e) in enumerate(grown):
                last = step == len(grown) - 1
                dst = name if last else f"{name}/kept_{axis}"
                keep = np.array([int(np.nonzero(e.src == j)[0][0]) for j in range(e.old_size)], dtype=np.int64)
                node_name = f"{name}/keep_outputs_{axis}"
                if opset >= 10 and np.array_equal(keep, np.arange(e.old_size)):
                    params = []
                    for what, v in (("starts", 0), ("ends", e.old_size), ("axes", axis)):
                        t = f"{node_name}/{what}"
                        g.initializer.append(numpy_helper.from_array(np.array([v], dtype=np.int64), t))
                        params.append(t)
                    g.node.append(onnx.helper.make_node("Slice", [cur] + params, [dst], name=node_name))
                else:
                    t = f"{node_name}/indices"
                    g.initializer.append(numpy_helper.from_array(keep, t))
                    g.node.append(onnx.helper.make_node("Gather", [cur, t], [dst], name=node_name, axis=axis))
                cur = dst

    def _values(self, g: onnx.GraphProto, index: dict[str, int]) -> None:
        by_init: dict[str, dict[str, np.ndarray]] = {}
        for vu in self.st.value_uses:
            arr = by_init.setdefault(vu.init, {}).get(vu.node)
            if arr is None:
                arr = np.array(self.st.value(vu.init)).reshape(-1).copy()
                by_init[vu.init][vu.node] = arr
            if self.grown(vu.layout) or (vu.per is not None and self.grown(vu.per)):
                arr[vu.index] = self._value(vu)
        changes: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = []
        for init, per_node in by_init.items():
            orig = np.array(self.st.value(init))
            changed = {n: a for n, a in per_node.items() if not np.array_equal(a, orig.reshape(-1))}
            if changed:
                changes.append((init, orig, changed))
        if not changes:  # the graph is not walked for readers when no value changes (a deep model's usual case)
            return
        readers = consumers(g, only={init for init, _, _ in changes})
        for init, orig, changed in changes:
            for node in readers.get(init, []):
                if node.name not in changed:
                    continue
                arr = changed[node.name].reshape(orig.shape).astype(orig.dtype)
                name = f"{init}/{node.name}" if len(readers[init]) > 1 else init
                _put(g, index, node, init, numpy_helper.from_array(arr, name))

    def _positions(self, g: onnx.GraphProto, index: dict[str, int]) -> None:
        """Index tensors that list every position of a grown axis (see PositionsUse): the arange of the grown axis,
        in the grown shape; a node gets its own copy when others read the same tensor."""
        grown = [pu for pu in self.st.positions_uses if any(self.grown(l) for l in pu.layouts)]
        if not grown:
            return
        readers = {i: len(nodes) for i, nodes in consumers(g, only={pu.init for pu in grown}).items()}
        nodes = nodes_by_name(g)
        pinned = self.st.subgraph_reads | {o.name for o in g.output}
        for pu in grown:
            shape = [self.new_size(l) for l in pu.layouts]
            dtype = np.asarray(self.st.value(pu.init)).dtype
            node = nodes[pu.node]
            name = pu.init if readers.get(pu.init, 0) <= 1 and pu.init not in pinned else f"{pu.init}/{pu.node}"
            _put(
                g,
                index,
                node,
                pu.init,
                numpy_helper.from_array(np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape), name),
            )

    def _value(self, vu) -> int:
        """The grown number a ValueUse stands for (refused when a run-time ratio stops being whole)."""
        n = self.new_size(vu.layout) * vu.multiple // vu.divisor
        if vu.per is None:
            return n
        per = self.new_size(vu.per)
        if per == 0 or n % per:
            raise OnnxGrowError(
                f"node {vu.node}: computes a size as {self.st.size(vu.layout)} / {self.st.size(vu.per)} at run time "
                f"(as torch's MultiheadAttention computes the head size); after growing it would be {n} / {per}, "
                f"not a whole number: grow the hidden size and the heads by the same factor"
            )
        return n // per

    def _value_info(self, g: onnx.GraphProto) -> None:
        """Refresh recorded shapes of tensors and weights whose axes grew (stale ones break inference)."""
        weights = {t.name: list(t.dims) for t in g.initializer}
        for vi in list(g.value_info) + list(g.input):
            if vi.name in weights and vi.type.HasField("tensor_type"):
                shape = vi.type.tensor_type.shape
                if len(shape.dim) == len(weights[vi.name]):
                    for d, n in zip(shape.dim, weights[vi.name]):
                        if d.HasField("dim_value"):
                            d.dim_value = n
                continue
            lay = self.st.layout(vi.name)
            if lay is None or not vi.type.HasField("tensor_type"):
                continue
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(lay):
                continue
            for d, l in zip(dims, lay):
                if self.grown(l) and d.HasField("dim_value"):
                    d.dim_value = self.new_size(l)
                elif self.grown(l) and d.HasField("dim_param"):
                    d.ClearField("dim_param")  # "2*batch" is no longer the size: leave it unknown


def _appends(e: Expansion, old: int) -> bool:
    """Whether a grown axis keeps its `old` units in place and appends only new ones (no copies)."""
    return bool(np.all(e.src[:old] == np.arange(old)) and np.all(e.src[old:] < 0) and np.all(e.scale[:old] == 1))


def _fill_noise(view: np.ndarray, rng: np.random.Generator, std: float, chunk: int = 1 << 22) -> None:
    """Fill `view` with normal noise of standard deviation `std`, drawn in C order (the values of one
    draw of `view.shape`), in place or through pieces of `chunk` elements: no temporary of the view's size."""
    if view.flags.c_contiguous and view.dtype in (np.float32, np.float64):
        rng.standard_normal(dtype=view.dtype, out=view)
        view *= view.dtype.type(std)
        return
    dtype = np.float64 if view.dtype == np.float64 else np.float32
    if view.ndim == 0:
        view[...] = rng.standard_normal(dtype=dtype) * dtype(std)
        return
    rows = max(1, chunk // max(1, int(np.prod(view.shape[1:], dtype=np.int64))))
    for start in range(0, view.shape[0], rows):
        block = view[start : start + rows]
        draw = rng.standard_normal(block.shape, dtype=dtype)
        draw *= dtype(std)
        block[...] = draw


def _scale_ref(arr: np.ndarray) -> float:
    """The weight's standard deviation (else its largest magnitude, else 0.01): the scale of new noise.

    Accumulated in float64 over pieces of the weight, so that no float64 copy of a large weight is made."""
    flat = arr.reshape(-1)
    if flat.size > 1:
        step = 1 << 22
        mean = float(np.add.reduce(flat, dtype=np.float64)) / flat.size
        sq = sum(
            float(np.square(flat[i : i + step].astype(np.float64) - mean).sum()) for i in range(0, flat.size, step)
        )
        std = (sq / flat.size) ** 0.5
        if std > 0:
            return std
    return (float(np.abs(flat.astype(np.float64)).max()) if flat.size else 0.0) or 1e-2


@dataclass
class WidenPassResult(PassResult):
    """The widened model (a new one) and the shared weights it untied. With `stream`, the model's grown and
    unchanged weights are stubs whose bytes are in `deferred` (see onnxgrow.stream); else `deferred` is empty."""

    deferred: dict[str, Deferred] = field(default_factory=dict)
    untied: list[Untied] = field(default_factory=list)


class WidenPass(PassBase[WidenPassResult]):
    """Grow the analysed model's groups as `plans` say: every weight, shape constant and attribute they touch.

    The given model (the one `analysis` was made of) is left alone; the result is a new model. With `stream`,
    nothing is grown until the bytes are asked for, in the order the model is written, one weight at a time;
    without it every weight is grown now (`progress` gets the step "grow" in bytes). A weight shared by readers
    that would grow it differently is untied (a copy per reader class) unless `keep_ties`, which refuses such a
    plan instead.
    """

    in_place = False

    def __init__(
        self,
        analysis: Analysis,
        plans: list[GroupPlan],
        *,
        noise_std: float = 0.1,
        seed: int = 0,
        keep_ties: bool = False,
        stream: bool = False,
        progress: ProgressFn | None = None,
    ) -> None:
        self.analysis, self.plans = analysis, plans
        self.noise_std, self.seed, self.keep_ties = noise_std, seed, keep_ties
        self.stream, self.progress = stream, progress

    def requires(self, model: onnx.ModelProto) -> str | None:
        """The model must be the analysed one: its weights are read from the analysis."""
        if model is self.analysis.model:
            return None
        dims = {t.name: t.dims for t in model.graph.initializer}
        for name, t in self.analysis.state.inits.items():
            if name not in dims or list(dims[name]) != list(t.dims):
                return (
                    f"it is not the model that was analysed (weight {name} is "
                    f"{'missing' if name not in dims else 'of another shape'})"
                )
        return None

    def ensures(self, model: onnx.ModelProto) -> str | None:
        """The grown model reads and writes the tensors the original does (names and element types)."""
        before, after = self.analysis.model.graph, model.graph
        for what, old, new in (("input", before.input, after.input), ("output", before.output, after.output)):
            if [(v.name, v.type.tensor_type.elem_type) for v in old] != [
                (v.name, v.type.tensor_type.elem_type) for v in new
            ]:
                return f"its graph {what}s differ from the original's"
        return None

    def call(self, model: onnx.ModelProto) -> WidenPassResult:
        if not self.plans:
            same = onnx.ModelProto()
            same.CopyFrom(model)
            return WidenPassResult(same, modified=False)
        rewriter = _Rewriter(self.analysis, self.plans, self.noise_std, self.seed, self.keep_ties)
        out, deferred = rewriter.rewrite(model)
        if not self.stream:
            materialise(out, deferred, self.progress)
            deferred = {}
        return WidenPassResult(out, modified=True, deferred=deferred, untied=rewriter.untied)


def materialise(model: onnx.ModelProto, deferred: dict[str, Deferred], progress: ProgressFn | None = None) -> None:
    """Fill every stub of `model` with its deferred bytes (in place); `progress` gets the step "grow" in bytes."""
    todo = [t for t in model.graph.initializer if t.name in deferred and not has_data(t)]
    total, done = sum(deferred[t.name].nbytes for t in todo), 0
    if progress:
        progress("grow", 0, total)
    for t in todo:
        t.raw_data = b"".join(stream_pieces(t.name, deferred[t.name]))
        done += deferred[t.name].nbytes
        if progress:
            progress("grow", done, total)


def _put(g: onnx.GraphProto, index: dict[str, int], node: onnx.NodeProto, old: str, tensor: onnx.TensorProto) -> None:
    """Store `tensor` as an initializer (replacing one of its name); a new name is also rewired into `node` in place
    of `old` (the node gets its own copy)."""
    if tensor.name in index:
        g.initializer[index[tensor.name]].CopyFrom(tensor)
        return
    index[tensor.name] = len(g.initializer)
    g.initializer.append(tensor)
    replace_input(node, old, tensor.name)
