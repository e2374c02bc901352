"""The fold pass: weights computed by constant subgraphs become plain initializers (run by `onnxgrow.load`).

Later passes look for weights among initializers; torch's exporter and older tools hide them
behind `Constant`, `Identity`, `Transpose`, `Cast` … nodes or list them as graph inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..collector import cycle_collector_paused
from ..graph import drop_unused_initializers, live_nodes, subgraphs
from ..graph import opset as opset_of
from .base import PassBase, PassResult

#: ops that are never folded: random, or with side effects / subgraphs.
_NEVER = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "If",
    "Loop",
    "Scan",
    "SequenceConstruct",
    "SequenceEmpty",
    # quantisation stays visible, so that growth can refuse quantised models instead of dequantising them
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
}
#: do not materialise folded tensors bigger than this many elements (e.g. a huge ConstantOfShape).
MAX_FOLDED_ELEMENTS = 64 * 1024 * 1024


@dataclass
class FoldResult(PassResult):
    """The folded model (the one given), with the folded node names and the initializers moved out of graph
    inputs; `modified` when either list is not empty."""

    folded: list[str] = field(default_factory=list)
    inputs_dropped: list[str] = field(default_factory=list)
    #: IR version 3 requires every initializer to be a graph input; it is raised to 4 when
    #: the pass adds initializers or drops them from the inputs (old value here, else None).
    ir_version_raised_from: int | None = None


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    if node.op_type == "Constant":
        return [_constant_value(node)]
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input]
    graph_inputs = []
    feeds = {}
    for name, value in zip(names, values):
        if name == "" or value is None:
            continue
        feeds[name] = value
        graph_inputs.append(
            onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        )
    graph = onnx.helper.make_graph(
        [node], "fold", graph_inputs, [onnx.helper.make_value_info(o, onnx.TypeProto()) for o in node.output]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    outs = ReferenceEvaluator(model).run(None, feeds)
    return [np.asarray(o) for o in outs]


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    kind = attr.name
    if kind == "value":
        return numpy_helper.to_array(attr.t)
    if kind == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if kind == "value_floats":
        return np.array(list(attr.floats), dtype=np.float32)
    if kind == "value_int":
        return np.array(attr.i, dtype=np.int64)
    if kind == "value_ints":
        return np.array(list(attr.ints), dtype=np.int64)
    if kind == "sparse_value":
        sp = attr.sparse_tensor
        dense = np.zeros(tuple(sp.dims), dtype=onnx.helper.tensor_dtype_to_np_dtype(sp.values.data_type))
        values = numpy_helper.to_array(sp.values)
        idx = numpy_helper.to_array(sp.indices)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values
        else:
            dense[tuple(idx.T)] = values
        return dense
    raise ValueError(f"Constant attribute {kind} cannot be folded")


#: at most this many folding passes (each pass after the first re-runs shape inference)
MAX_PASSES = 64


class FoldConstants(PassBase[FoldResult]):
    """Replace every deterministic node whose inputs are all constant by initializers (in place).

    A size read from a shape that inference could not work out may become known once earlier sizes are
    folded (torch's TorchScript export of `chunk` with a dynamic batch: each Slice's bounds are computed from
    the shape of the previous one's output): then the pass runs again, until nothing more folds.
    """

    in_place = True

    def call(self, model: onnx.ModelProto) -> FoldResult:
        # each collection would walk the many small objects a pass over a large graph makes
        with cycle_collector_paused():
            return self._call(model)

    def _call(self, model: onnx.ModelProto) -> FoldResult:
        result = FoldResult(model, modified=False)
        graph = model.graph
        init_names = {t.name for t in graph.initializer}
        keep_inputs = [i for i in graph.input if i.name not in init_names]
        if len(keep_inputs) != len(graph.input):
            result.inputs_dropped = [i.name for i in graph.input if i.name in init_names]
            del graph.input[:]
            graph.input.extend(keep_inputs)
        for _ in range(MAX_PASSES):
            before = len(result.folded)
            stuck = _fold_pass(model, result)
            if not stuck or len(result.folded) == before:
                break
        result.modified = bool(result.folded or result.inputs_dropped)
        if result.modified and 0 < model.ir_version < 4:
            result.ir_version_raised_from = model.ir_version
            model.ir_version = 4
        return result

    def ensures(self, model: onnx.ModelProto) -> str | None:
        """Every graph output is still written: folding never removes what the model computes for its caller."""
        g = model.graph
        missing = {o.name for o in g.output}
        for n in reversed(g.node):  # outputs are mostly written last: the walk stops early
            if not missing:
                return None
            missing.difference_update(n.output)
        missing -= {i.name for i in g.input}
        missing -= {t.name for t in g.initializer}
        return f"graph output {sorted(missing)[0]} is no longer written" if missing else None


def fold_constants(model: onnx.ModelProto) -> FoldResult:
    """Run `FoldConstants` on `model` (in place)."""
    return FoldConstants()(model)


def _fold_pass(model: onnx.ModelProto, result: FoldResult) -> bool:
    """One pass over the nodes; True when a size it needed was unknown to shape inference (another pass,
    with the sizes folded now, may know it)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    opset = opset_of(model)
    init_by_name = {t.name: t for t in graph.initializer}
    known: dict[str, np.ndarray | None] = dict.fromkeys(init_by_name)  # lazily converted

    def value(name: str) -> np.ndarray:
        cached = known.get(name)
        if cached is None:
            cached = numpy_helper.to_array(init_by_name[name])
            known[name] = cached
        return cached

    kept: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    static = _StaticShapes(model)

    def add(name: str, arr: np.ndarray) -> None:
        tensor = numpy_helper.from_array(np.array(arr, copy=True, order="C"), name)
        new_inits.append(tensor)
        init_by_name[name] = tensor
        known[name] = arr

    for node in graph.node:
        sizes = static.value(node, known, value)
        if sizes is not None and not any(o in outputs for o in node.output):
            add(node.output[0], sizes)
            result.folded.append(node.name or node.op_type)
            continue
        inputs = node.input[:]  # a list, copied in one step
        foldable = (
            all(i == "" or i in known for i in inputs)  # first: false for nearly every node of a large graph
            and node.domain in ("", "ai.onnx")
            and node.op_type not in _NEVER
            and next(subgraphs(node), None) is None
            and not any(o in outputs for o in node.output)
            and (node.op_type == "Constant" or any(i for i in inputs))
        )
        if foldable and node.op_type == "ConstantOfShape" and node.input and node.input[0]:
            # do not even materialise a huge tensor only to throw it away
            try:
                foldable = int(np.prod(value(node.input[0]), dtype=np.float64)) <= MAX_FOLDED_ELEMENTS
            except Exception:
                foldable = False
        if foldable:
            try:
                outs = _evaluate(node, [value(i) if i else None for i in node.input], opset)
            except Exception:
                outs = None
            if outs is not None and all(o.size <= MAX_FOLDED_ELEMENTS for o in outs):
                for name, arr in zip(node.output, outs):
                    if name:
                        add(name, arr)
                result.folded.append(node.name or node.op_type)
                continue
        kept.append(node)
    if result.folded:
        if static.partial:  # Shape nodes whose static entries were all folded away now feed nothing
            kept = live_nodes(kept, graph)
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(new_inits)
        drop_unused_initializers(graph)
    return static.stuck


class _StaticShapes:
    """Sizes read from a tensor's shape that shape inference knows statically (hidden size, head size).

    Shape/Size of a fully static tensor folds to a constant; Gather/Slice picking only static entries of a
    partly dynamic shape (a dynamic batch) fold too, so `hidden / heads` becomes the constant head size.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.shapes: dict[str, list[int | None]] | None = None
        self.inputs: dict[str, list[int | str | None] | None] | None = None
        self.symbols: dict[str, list[int | str | None]] = {}
        self.model = model
        self.partial: dict[str, list[int | None]] = {}  # Shape outputs with dynamic entries
        self.unknown: dict[str, list[bool]] = {}  # Shape outputs: which entries inference could not tell
        #: a size was asked for that inference could not tell (not a named dynamic dimension)
        self.stuck = False

    def _shape(self, name: str) -> list[int | None] | None:
        declared = self._declared(name)
        if declared is not None:
            return declared
        if self.shapes is None:
            from ..analysis.shapes import infer_symbols

            self.symbols, solved = infer_symbols(self.model)
            self.shapes = {k: [solved.get(d) if isinstance(d, str) else d for d in v] for k, v in self.symbols.items()}
        return self.shapes.get(name)

    def _declared(self, name: str) -> list[int | None] | None:
        """The shape of a graph input as the model declares it (onnx's inference would not change it): the
        shape of the token ids a model reads its sequence length from needs no inference of the whole graph.
        A dynamic dimension counts as unknown here even where a Reshape elsewhere would pin its size."""
        if self.inputs is None:
            from ..analysis.shapes import _dims

            inits = {t.name for t in self.model.graph.initializer}
            self.inputs = {i.name: _dims(i.type) for i in self.model.graph.input if i.name not in inits}
        dims = self.inputs.get(name)
        if dims is None:
            return None
        self.symbols.setdefault(name, dims)
        return [d if isinstance(d, int) else None for d in dims]

    def value(self, node: onnx.NodeProto, known: dict, value) -> np.ndarray | None:
        op = node.op_type
        if op not in ("Shape", "Size") and not self.partial:
            return None  # no partly known shape to pick sizes from (most nodes of most graphs)
        if node.domain not in ("", "ai.onnx") or not node.input:
            return None
        if op in ("Shape", "Size") and node.input[0] not in known:
            shape = self._shape(node.input[0])
            if shape is None:
                return None
            if node.op_type == "Size":
                if any(d is None for d in shape):
                    return None
                return np.array(math.prod(d for d in shape if d is not None), dtype=np.int64)
            start = end = None
            for a in node.attribute:
                if a.name == "start":
                    start = int(a.i)
                elif a.name == "end":
                    end = int(a.i)
            dims = shape[slice(start, end)]
            if None in dims:
                from ..analysis.shapes import is_unknown

                self.partial[node.output[0]] = dims
                symbols = self.symbols.get(node.input[0], [None] * len(shape))[slice(start, end)]
                self.unknown[node.output[0]] = [v is None and is_unknown(d) for v, d in zip(dims, symbols)]
                return None
            return np.array(dims, dtype=np.int64)
        part = self.partial.get(node.input[0])
        if part is None or any(i and i not in known for i in node.input[1:]):
            return None
        if (
            node.op_type == "Gather"
            and len(node.input) == 2
            and all(a.i == 0 for a in node.attribute if a.name == "axis")
        ):
            idx = np.asarray(value(node.input[1])).astype(np.int64)
            picked = np.asarray(np.asarray(part, dtype=object)[idx], dtype=object)
            unknown = self.unknown.get(node.input[0])
            if unknown is not None and any(np.asarray(unknown, dtype=bool)[idx].reshape(-1)):
                self.stuck = True
        elif node.op_type == "Slice" and len(node.input) >= 3:
            starts, ends = (np.asarray(value(n)).reshape(-1) for n in node.input[1:3])
            axes = np.asarray(value(node.input[3])).reshape(-1) if len(node.input) > 3 and node.input[3] else [0]
            steps = np.asarray(value(node.input[4])).reshape(-1) if len(node.input) > 4 and node.input[4] else [1]
            if len(starts) != 1 or int(axes[0]) not in (0, -1):
                return None
            lo, hi = (int(max(min(v, 2**62), -(2**62))) for v in (starts[0], ends[0]))
            picked = np.asarray(part[slice(lo, hi, int(steps[0]))], dtype=object)
            if any(self.unknown.get(node.input[0], [])[slice(lo, hi, int(steps[0]))]):
                self.stuck = True
        else:
            return None
        if any(v is None for v in picked.reshape(-1)):
            return None
        return picked.astype(np.int64)
