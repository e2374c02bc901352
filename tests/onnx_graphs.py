"""Small ONNX graphs built with onnx.helper, and an exactness check of grown models with onnxruntime.

Used by tests/test_rules.py (op coverage) and tests/test_widen_property.py (random graphs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LATEST = onnx.defs.onnx_opset_version()
#: relative tolerance of a grown model's outputs (normalised by the output's magnitude)
TOL = 1e-5

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
}


def onnx_type(dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype in _NP_TO_ONNX:
        return _NP_TO_ONNX[dtype]
    return helper.np_dtype_to_tensor_dtype(dtype)


class Graph:
    """A graph under construction: `op` adds a node and returns its output name(s).

    Helpers with opset-dependent signatures (Clip, Squeeze, ReduceMean, Split, Pad, Resize, Slice)
    write the attribute form at old opsets and the input form at new ones.
    """

    def __init__(self, opset: int = LATEST, dtype=np.float32, seed: int = 0, names: bool = True) -> None:
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.domains: set[str] = set()
        self.names = names
        self._n = 0

    def _fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}{self._n}"

    # -- tensors ------------------------------------------------------------------------------
    def input(self, shape, name: str = "x", dtype=None) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, onnx_type(dtype or self.dtype), list(shape)))
        return name

    def const(self, value, name: str | None = None, dtype=None) -> str:
        name = name or self._fresh("c")
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values, name: str | None = None) -> str:
        return self.const(np.asarray(values, dtype=np.int64), name)

    def weight(self, *shape: int, name: str | None = None, fan_in: int | None = None, positive=False) -> str:
        fan = fan_in or (int(np.prod(shape[1:])) if len(shape) > 1 else 1)
        w = self.rng.standard_normal(shape) / np.sqrt(max(fan, 1))
        if positive:
            w = np.abs(w) + 0.1
        return self.const(w.astype(self.dtype), name or self._fresh("w"))

    # -- nodes ----------------------------------------------------------------------------------
    def op(self, op_type: str, inputs, n_out: int = 1, name: str | None = None, domain: str = "", **attrs):
        outs = [self._fresh(op_type.lower() + "_") for _ in range(n_out)]
        node_name = (name or self._fresh(op_type)) if self.names else ""
        self.nodes.append(
            helper.make_node(
                op_type,
                list(inputs),
                outs,
                name=node_name,
                domain=domain or None,
                **{k: v for k, v in attrs.items() if v is not None},
            )
        )
        if domain:
            self.domains.add(domain)
        return outs[0] if n_out == 1 else outs

    def gemm(self, x: str, k: int, n: int, name: str | None = None, bias=True, trans_b=0, **attrs) -> str:
        w = self.weight(*((n, k) if trans_b else (k, n)), fan_in=k, name=(name + ".weight") if name else None)
        ins = [x, w]
        if bias or self.opset < 11:
            ins.append(self.const(self.rng.standard_normal(n) * 0.1, (name + ".bias") if name else None))
        return self.op("Gemm", ins, name=name, transB=trans_b or None, **attrs)

    def conv(
        self,
        x: str,
        c_in: int,
        c_out: int,
        k: int = 3,
        dims: int = 2,
        name: str | None = None,
        bias=True,
        group: int = 1,
        pad: int | None = None,
    ) -> str:
        w = self.weight(c_out, c_in // group, *([k] * dims), name=(name + ".weight") if name else None)
        ins = [x, w] + ([self.const(self.rng.standard_normal(c_out) * 0.1)] if bias else [])
        p = k // 2 if pad is None else pad
        return self.op(
            "Conv", ins, name=name, kernel_shape=[k] * dims, pads=[p] * 2 * dims, group=group if group != 1 else None
        )

    def clip(self, x: str, lo: float | None, hi: float | None) -> str:
        if self.opset < 11:
            return self.op("Clip", [x], min=lo, max=hi)
        ins = [
            x,
            self.const(np.array(lo, self.dtype)) if lo is not None else "",
            self.const(np.array(hi, self.dtype)) if hi is not None else "",
        ]
        while ins and ins[-1] == "":
            ins.pop()
        return self.op("Clip", ins)

    def squeeze(self, x: str, axes, op: str = "Squeeze") -> str:
        if self.opset < 13:
            return self.op(op, [x], axes=list(axes))
        return self.op(op, [x, self.ints(axes)])

    def unsqueeze(self, x: str, axes) -> str:
        return self.squeeze(x, axes, "Unsqueeze")

    def reduce(self, op: str, x: str, axes, keepdims: int = 1) -> str:
        if (op == "ReduceSum" and self.opset >= 13) or self.opset >= 18:
            return self.op(op, [x, self.ints(axes)], keepdims=keepdims)
        return self.op(op, [x], axes=list(axes), keepdims=keepdims)

    def split(self, x: str, sizes, axis: int) -> list[str]:
        if self.opset < 13:
            return self.op("Split", [x], n_out=len(sizes), axis=axis, split=list(sizes))
        return self.op("Split", [x, self.ints(sizes)], n_out=len(sizes), axis=axis)

    def slice(self, x: str, starts, ends, axes) -> str:
        if self.opset < 10:
            return self.op("Slice", [x], starts=list(starts), ends=list(ends), axes=list(axes))
        return self.op("Slice", [x, self.ints(starts), self.ints(ends), self.ints(axes)])

    def pad(self, x: str, pads, mode: str = "constant", value: float = 0.0) -> str:
        if self.opset < 11:
            return self.op("Pad", [x], pads=list(pads), mode=mode, value=value)
        ins = [x, self.ints(pads)]
        if mode == "constant":
            ins.append(self.const(np.array(value, self.dtype)))
        return self.op("Pad", ins, mode=mode)

    def resize(self, x: str, scales=None, sizes=None, mode: str = "nearest") -> str:
        if self.opset < 9:
            return self.op("Upsample", [x], scales=[float(v) for v in scales], mode=mode)
        if self.opset < 10:
            return self.op("Upsample", [x, self.const(np.asarray(scales, np.float32), dtype=np.float32)], mode=mode)
        if self.opset == 10:
            return self.op("Resize", [x, self.const(np.asarray(scales, np.float32), dtype=np.float32)], mode=mode)
        roi = "" if self.opset >= 13 else self.const(np.zeros(0, np.float32), dtype=np.float32)
        if sizes is not None:
            scale_in = "" if self.opset >= 13 else self.const(np.zeros(0, np.float32), dtype=np.float32)
            return self.op("Resize", [x, roi, scale_in, self.ints(sizes)], mode=mode)
        return self.op("Resize", [x, roi, self.const(np.asarray(scales, np.float32), dtype=np.float32)], mode=mode)

    # -- model ----------------------------------------------------------------------------------
    def model(self, *outputs: str, out_dtype=None) -> onnx.ModelProto:
        elem = onnx_type(out_dtype or self.dtype)
        graph = helper.make_graph(
            self.nodes,
            "g",
            self.inputs,
            [helper.make_tensor_value_info(o, elem, None) for o in outputs],
            initializer=self.inits,
        )
        imports = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in sorted(self.domains)]
        model = helper.make_model(graph, opset_imports=imports, producer_name="onnxgrow-tests")
        model.ir_version = min(model.ir_version, 10)  # every supported onnxruntime reads IR 10
        # outputs get their inferred shapes (the checker wants a shape on every graph output)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        except Exception:
            known = {}
        for out in model.graph.output:
            vi = known.get(out.name)
            if vi is not None and vi.type.tensor_type.HasField("shape"):
                out.type.CopyFrom(vi.type)
            else:
                out.type.tensor_type.shape.SetInParent()
        return model


# -- running ------------------------------------------------------------------------------------------
def session(model: onnx.ModelProto):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def feeds_for(sess, seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else batch for d in inp.shape]
        dtype = _ORT_TYPES.get(inp.type, np.float32)
        if np.dtype(dtype).kind in "iu":  # ids into small tables
            feeds[inp.name] = rng.integers(0, 3, shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def normalised_error(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert ref.shape == got.shape, f"output shape changed: {ref.shape} -> {got.shape}"
    finite = np.isfinite(ref)
    if not np.array_equal(np.isfinite(got), finite):
        return float("inf")
    if not finite.any():
        return 0.0
    diff = float(np.max(np.abs(ref[finite] - got[finite])))
    return diff / max(float(np.max(np.abs(ref[finite]))), 1e-3)


def assert_same_outputs(original: onnx.ModelProto, grown: onnx.ModelProto, seeds=(0, 1), tol: float = TOL) -> float:
    """Run both models in onnxruntime (no graph optimisations) on shared random inputs; return the worst error."""
    ref_sess, new_sess = session(original), session(grown)
    worst = 0.0
    for seed in seeds:
        feeds = feeds_for(ref_sess, seed)
        want = ref_sess.run(None, feeds)
        got = new_sess.run(None, feeds)
        for o, a, b in zip(ref_sess.get_outputs(), want, got):
            err = normalised_error(a, b)
            assert err <= tol, f"output {o.name} differs: normalised error {err:.3g} > {tol:g}"
            worst = max(worst, err)
    return worst


def runnable(model: onnx.ModelProto) -> str | None:
    """Why onnxruntime cannot run this model (None: it can)."""
    try:
        sess = session(model)
        sess.run(None, feeds_for(sess))
    except Exception as exc:  # onnxruntime raises its own types
        return str(exc).splitlines()[0][:200]
    return None


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    t = next(t for t in model.graph.initializer if t.name == name)
    return numpy_helper.to_array(t)


def node_by_name(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def conv_transpose(
    g: Graph,
    x: str,
    c_in: int,
    c_out: int,
    k: int = 3,
    dims: int = 2,
    name: str | None = None,
    bias=True,
    group: int = 1,
    stride: int = 1,
) -> str:
    """ConvTranspose with weight [c_in, c_out/group, k...] (padding keeps the size when stride is 1)."""
    w = g.weight(
        c_in, c_out // group, *([k] * dims), fan_in=c_in * k**dims // group, name=(name + ".weight") if name else None
    )
    ins = [x, w] + ([g.const(g.rng.standard_normal(c_out) * 0.1)] if bias else [])
    return g.op(
        "ConvTranspose",
        ins,
        name=name,
        kernel_shape=[k] * dims,
        pads=[k // 2] * 2 * dims,
        strides=[stride] * dims if stride != 1 else None,
        group=group if group != 1 else None,
    )


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model computing in float64 (float32 weights, inputs, outputs and Casts become double)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    return m


def reference_error(original: onnx.ModelProto, grown: onnx.ModelProto, seed: int = 0) -> float:
    """Worst normalised output difference of two models run by onnx's reference evaluator (any dtype)."""
    from onnx.reference import ReferenceEvaluator

    a, b = ReferenceEvaluator(original), ReferenceEvaluator(grown)
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in original.graph.input:
        shape = [d.dim_value or 2 for d in inp.type.tensor_type.shape.dim]
        elem = inp.type.tensor_type.elem_type
        feeds[inp.name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(elem))
    return max(normalised_error(x, y) for x, y in zip(a.run(None, feeds), b.run(None, feeds)))


def caffe2_densenet(
    seed: int = 0,
    blocks=(4, 4, 4),
    growth: int = 8,
    stem: int = 16,
    classes: int = 1000,
    gain: float = 5.0,
    hw: int = 16,
) -> onnx.ModelProto:
    """A pre-activation DenseNet in the form Caffe2-era zoo files have: opset 9, IR version 4, batch 2 fixed,
    BatchNormalization followed by a per-channel Mul and Add, convolutions without bias, dense blocks that
    Concat every layer's output onto its input, transitions (1x1 conv halving the channels, AveragePool), then
    GlobalAveragePool → Flatten → Gemm logits.

    Weights are random with a `gain` over unit variance per layer, so activations grow layer after layer:
    with the defaults the logits reach about 4e5, and many of them are small differences of large partial sums.
    """
    g = Graph(opset=9, seed=seed)
    rng = g.rng

    def conv(x: str, c_in: int, c_out: int, k: int) -> str:
        w = rng.standard_normal((c_out, c_in, k, k)) * gain / np.sqrt(c_in * k * k)
        return g.op("Conv", [x, g.const(w)], kernel_shape=[k, k], pads=[k // 2] * 4)

    def bn_relu(x: str, c: int) -> str:
        y = g.op(
            "BatchNormalization",
            [
                x,
                g.const(rng.uniform(0.5, 1.5, c)),
                g.const(rng.standard_normal(c) * 0.1),
                g.const(rng.standard_normal(c) * 0.1),
                g.const(rng.uniform(0.5, 1.5, c)),
            ],
            epsilon=1e-5,
        )
        y = g.op("Mul", [y, g.const(rng.uniform(0.5, 1.5, (c, 1, 1)))])
        return g.op("Relu", [g.op("Add", [y, g.const(rng.standard_normal((c, 1, 1)) * 0.1)])])

    h, c = conv(g.input([2, 3, hw, hw], "data"), 3, stem, 3), stem
    for b, layers in enumerate(blocks):
        for _ in range(layers):
            h = g.op("Concat", [h, conv(bn_relu(h, c), c, growth, 3)], axis=1)
            c += growth
        if b < len(blocks) - 1:
            h = g.op("AveragePool", [conv(bn_relu(h, c), c, c // 2, 1)], kernel_shape=[2, 2], strides=[2, 2])
            c //= 2
    h = g.op("Flatten", [g.op("GlobalAveragePool", [bn_relu(h, c)])], axis=1)
    w = rng.standard_normal((classes, c)) * gain / np.sqrt(c)
    g.nodes.append(
        helper.make_node(
            "Gemm", [h, g.const(w), g.const(rng.standard_normal(classes))], ["logits"], name="fc", transB=1
        )
    )
    graph = helper.make_graph(
        g.nodes,
        "densenet",
        g.inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, classes])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="caffe2-like")
    model.ir_version = 4
    onnx.checker.check_model(model)
    return model
