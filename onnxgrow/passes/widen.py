"""The widen pass: pad every weight, shape constant and attribute that a grown group touches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ..analysis.groups import Analysis, Group
from ..analysis.layout import Expansion, Layout, atoms, expand, identity_expansion
from ..analysis.state import WeightUse
from ..errors import OnnxGrowError


@dataclass
class GroupPlan:
    """Grow `group` to `new_size` units with strategy `init` (zero | noise | net2net)."""

    group: Group
    new_size: int
    init: str
    note: str | None = None


def unit_map(plan: GroupPlan, rng: np.random.Generator) -> Expansion:
    """Where each unit of the grown group comes from: itself, a copied unit (Net2Net) or nothing (-1)."""
    old, new = int(plan.group.size or 0), plan.new_size
    if plan.init != "net2net":
        src = np.concatenate([np.arange(old), -np.ones(new - old, dtype=np.int64)])
        return Expansion(src.astype(np.int64), np.ones(new), old)
    if plan.group.constraint == "replicate":
        extra = np.arange(old, new) % old  # every unit copied the same number of times
    else:
        b = plan.group.granularity
        blocks = rng.integers(0, old // b, size=(new - old) // b)
        extra = (blocks[:, None] * b + np.arange(b)[None, :]).reshape(-1)
    src = np.concatenate([np.arange(old), extra]).astype(np.int64)
    counts = np.bincount(src, minlength=old)
    return Expansion(src, 1.0 / counts[src], old)


class _Rewriter:
    def __init__(self, analysis: Analysis, plans: list[GroupPlan], noise_std: float, seed: int) -> None:
        self.a = analysis
        self.st = analysis.state
        self.rng = np.random.default_rng(seed)
        self.plans = {p.group.root: p for p in plans}
        self.maps = {root: unit_map(p, self.rng) for root, p in self.plans.items()}
        self.noise_std = noise_std

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

    def check(self) -> None:
        """Refuse tied weights whose uses disagree about how they grow."""
        for init, uses in self.weight_uses().items():
            per_axis: dict[int, list[WeightUse]] = {}
            for u in uses:
                per_axis.setdefault(u.axis, []).append(u)
            for axis, us in per_axis.items():
                first = us[0]
                e0 = expand(first.layout, self.unit)
                for other in us[1:]:
                    e = expand(other.layout, self.unit)
                    same_role = (other.role == "consumer") == (first.role == "consumer")
                    if not same_role or e.new_size != e0.new_size or not np.array_equal(e.src, e0.src):
                        raise OnnxGrowError(
                            f"weight {init} is shared by {first.node} and {other.node}, which would grow it "
                            f"differently (tied weights); grow both groups the same way or untie the weight")
        for parts, reason in self.st.same_factor:
            ratios = {(e.new_size / e.old_size if e.old_size else 1.0) for e in (expand(p, self.unit) for p in parts)}
            if len(ratios) > 1:
                ids = sorted({g.id for p in parts for a in atoms(p) if (g := self.a.group_of_atom(a)) is not None})
                raise OnnxGrowError(
                    f"{reason} a concatenation of groups {', '.join(ids)}: all of its parts must grow by the "
                    f"same whole factor (--init net2net), or none of them")

    def grow_weight(self, init: str, uses: list[WeightUse]) -> np.ndarray:
        arr = self.st.value(init)
        dtype = arr.dtype
        work = arr.astype(np.float64) if dtype.kind == "f" or dtype.kind == "V" or "bfloat" in str(dtype) else arr.copy()
        std = float(np.std(work)) if work.size > 1 and work.dtype.kind == "f" else 0.0
        scale_ref = std if std > 0 else (float(np.abs(work).max()) if work.size else 0.0) or 1e-2
        seen: set[int] = set()
        ordered = [u for u in uses if u.role == "consumer"] + [u for u in uses if u.role != "consumer"]
        for u in ordered:
            if u.axis in seen:
                continue
            seen.add(u.axis)
            plan = self.grown(u.layout)
            if plan is None:
                continue
            e = expand(u.layout, self.unit)
            shape = [1] * work.ndim
            shape[u.axis] = -1
            work = np.take(work, np.clip(e.src, 0, None), axis=u.axis)
            index = [slice(None)] * work.ndim
            fresh = np.nonzero(e.fresh)[0]
            # new units are usually one run at the end: a slice is far cheaper than fancy indexing
            contiguous = fresh.size and fresh[-1] - fresh[0] + 1 == fresh.size
            index[u.axis] = slice(int(fresh[0]), int(fresh[-1]) + 1) if contiguous else fresh
            if u.role == "consumer":
                if work.dtype.kind == "f" and not np.all(e.scale == 1):  # x * 1.0 == x: skip the pass
                    work = work * e.scale.reshape(shape)
                work[tuple(index)] = 0
            else:
                fresh_shape = list(work.shape)
                fresh_shape[u.axis] = int(e.fresh.sum())
                if u.fill is not None:
                    work[tuple(index)] = u.fill
                elif plan.init == "noise" and work.dtype.kind == "f":
                    work[tuple(index)] = self.rng.standard_normal(fresh_shape) * self.noise_std * scale_ref
                else:
                    work[tuple(index)] = 0
        return work.astype(dtype)

    # -- small constants and attributes -------------------------------------------------------------
    def new_size(self, layout: Layout) -> int:
        return expand(layout, self.unit).new_size

    def rewrite(self, model: onnx.ModelProto) -> onnx.ModelProto:
        self.check()
        out = onnx.ModelProto()
        out.CopyFrom(model)
        g = out.graph
        index = {t.name: i for i, t in enumerate(g.initializer)}
        for init, uses in self.weight_uses().items():
            new = self.grow_weight(init, uses)
            g.initializer[index[init]].CopyFrom(numpy_helper.from_array(new, init))
        self._values(g, index)
        nodes = {n.name: n for n in g.node}
        for au in self.st.attr_uses:
            if self.grown(au.layout):
                node = nodes[au.node]
                for a in node.attribute:
                    if a.name == au.attr and au.index is None:
                        a.i = self.new_size(au.layout) // au.divisor
                    elif a.name == au.attr:
                        a.ints[au.index] = self.new_size(au.layout) // au.divisor
        self._value_info(g)
        self._keep_outputs(g, index)
        return out

    def _keep_outputs(self, g: onnx.GraphProto, index: dict[str, int]) -> None:
        """Slice each kept graph output back to its original units (the first copy of each)."""
        opset = self.st.opset
        for name in self.st.kept_outputs:
            lay = self.st.layout(name) or []
            grown = [(k, expand(l, self.unit)) for k, l in enumerate(lay) if self.grown(l)]
            if not grown:
                continue
            inner = f"{name}/grown"
            for n in g.node:
                for k, o in enumerate(n.output):
                    if o == name:
                        n.output[k] = inner
                for k, i in enumerate(n.input):
                    if i == name:
                        n.input[k] = inner
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
        readers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                if i in by_init:
                    readers.setdefault(i, []).append(n)
        for init, per_node in by_init.items():
            orig = np.array(self.st.value(init))
            changed = {n: a for n, a in per_node.items() if not np.array_equal(a, orig.reshape(-1))}
            if not changed:
                continue
            for node in readers.get(init, []):
                if node.name not in changed:
                    continue
                arr = changed[node.name].reshape(orig.shape).astype(orig.dtype)
                name = f"{init}/{node.name}" if len(readers[init]) > 1 else init
                tensor = numpy_helper.from_array(arr, name)
                if name in index:
                    g.initializer[index[name]].CopyFrom(tensor)
                else:
                    index[name] = len(g.initializer)
                    g.initializer.append(tensor)
                    for k, i in enumerate(node.input):
                        if i == init:
                            node.input[k] = name

    def _value(self, vu) -> int:
        """The grown number a ValueUse stands for (refused when a run-time ratio stops being whole)."""
        n = self.new_size(vu.layout) // vu.divisor
        if vu.per is None:
            return n
        per = self.new_size(vu.per)
        if per == 0 or n % per:
            raise OnnxGrowError(
                f"node {vu.node}: computes a size as {self.st.size(vu.layout)} / {self.st.size(vu.per)} at run time "
                f"(as torch's MultiheadAttention computes the head size); after growing it would be {n} / {per}, "
                f"not a whole number: grow the hidden size and the heads by the same factor")
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


def widen_pass(model: onnx.ModelProto, analysis: Analysis, plans: list[GroupPlan], *,
               noise_std: float = 0.1, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> onnx.ModelProto:
    """Return a widened copy of `model` (the analysed one) following `plans`."""
    return _Rewriter(analysis, plans, noise_std, seed).rewrite(model)
