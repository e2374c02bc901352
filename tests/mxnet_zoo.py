"""One tiny ONNX model per case that `onnxgrow.mxnet.for_mxnet` converts, for tests/test_export_mxnet.py.

`CASES[name]()` returns (model, feeds). Most cases are written at a recent opset so the
conversion to MXNet's opset-12 dialect has something to do (axes as inputs, single-axis
Softmax, auto_pad, Gemm without C, ...); a few use old opsets (attribute forms).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class G:
    """A graph under construction with one float32 input `x`."""

    def __init__(self, shape, opset: int = OPSET, seed: int = 0) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.shape = list(shape)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, value, dtype=np.float32) -> str:
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def w(self, *shape, scale: float = 0.5) -> str:
        return self.const(self.rng.standard_normal(shape) * scale)

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs):
        self.n += 1
        outs = [f"t{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op.lower()}{self.n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, *outputs: str, out_type=TensorProto.FLOAT, x_shape=None) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape or self.shape)
        outs = [helper.make_tensor_value_info(o, out_type, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "zoo", [x], outs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        g = onnx.shape_inference.infer_shapes(m).graph
        inferred = {v.name: v for v in list(g.value_info) + list(g.output) if v.type.tensor_type.HasField("shape")}
        for out in m.graph.output:
            if out.name in inferred:
                out.CopyFrom(inferred[out.name])
        return m

    def feeds(self, positive: bool = False, unit: bool = False) -> dict[str, np.ndarray]:
        x = self.rng.standard_normal(self.shape).astype(np.float32)
        if positive:
            x = np.abs(x) + 0.5
        if unit:
            x = np.tanh(x) * 0.9
        return {"x": x}


Case = Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]
CASES: dict[str, Case] = {}


def case(name: str):
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


def _unary(op: str, positive: bool = False, unit: bool = False, **attrs) -> Case:
    def build():
        g = G([2, 3, 4])
        x = "x"
        # keep the op's input in its domain for any input (onnxruntime's check feeds random normals)
        if positive:
            x = g.op("Add", [g.op("Abs", [x]), g.const(0.5)])
        if unit:
            x = g.op("Mul", [g.op("Tanh", [x]), g.const(0.9)])
        return g.model(g.op(op, [x], **attrs)), g.feeds()

    return build


for _op in (
    "Relu",
    "Sigmoid",
    "Tanh",
    "Abs",
    "Neg",
    "Exp",
    "Ceil",
    "Floor",
    "Softsign",
    "Softplus",
    "Sin",
    "Cos",
    "Atan",
    "Identity",
    "Selu",
):
    CASES[_op] = _unary(_op)
CASES["Log"] = _unary("Log", positive=True)
CASES["Sqrt"] = _unary("Sqrt", positive=True)
CASES["Reciprocal"] = _unary("Reciprocal", positive=True)
CASES["Asin"] = _unary("Asin", unit=True)
CASES["Acos"] = _unary("Acos", unit=True)
CASES["Tan"] = _unary("Tan", unit=True)
CASES["LeakyRelu"] = _unary("LeakyRelu", alpha=0.2)
CASES["Elu"] = _unary("Elu", alpha=0.5)
CASES["HardSigmoid"] = _unary("HardSigmoid", alpha=0.3, beta=0.4)


def _binary(op: str, cshape, positive: bool = False) -> Case:
    def build():
        g = G([2, 3, 4, 5])
        c = g.const(np.abs(g.rng.standard_normal(cshape)) + 0.5 if positive else g.rng.standard_normal(cshape))
        return g.model(g.op(op, ["x", c])), g.feeds()

    return build


CASES["Add broadcast channel"] = _binary("Add", [3, 1, 1])
CASES["Sub broadcast last"] = _binary("Sub", [5])
CASES["Mul scalar"] = _binary("Mul", [])
CASES["Div broadcast"] = _binary("Div", [1, 3, 4, 1], positive=True)


@case("Pow scalar exponent")
def _pow():
    g = G([2, 3, 4])
    return g.model(g.op("Pow", ["x", g.const(4.0)])), g.feeds()


def _pow_const(exponent: float, positive: bool = False) -> Case:
    def build():
        g = G([2, 3, 4])
        x = g.op("Exp", ["x"]) if positive else "x"  # for_mxnet's own check feeds random normal numbers
        return g.model(g.op("Pow", [x, g.const(exponent)])), g.feeds()

    return build


# squares and cubes of negative numbers (RMSNorm, GPT-2's GELU) as products: no exponent to train into NaN
CASES["Pow 2 -> Mul"] = _pow_const(2.0)
CASES["Pow 3 -> Mul, Mul"] = _pow_const(3.0)
CASES["Pow 0.5 -> Sqrt"] = _pow_const(0.5, positive=True)


@case("Sum broadcast -> Add chain")
def _sum_broadcast():
    g = G([2, 3, 4])
    return g.model(g.op("Sum", ["x", g.w(4), g.w(3, 1)])), g.feeds()


@case("Sum same shapes")
def _sum_same():
    g = G([2, 3])
    return g.model(g.op("Sum", ["x", g.w(2, 3), g.op("Relu", ["x"])])), g.feeds()


@case("Max Min Mean same shapes")
def _maxmin():
    g = G([2, 3])
    a, b = g.w(2, 3), g.op("Tanh", ["x"])
    return g.model(
        g.op("Add", [g.op("Max", ["x", a]), g.op("Add", [g.op("Min", ["x", b]), g.op("Mean", ["x", a, b])])])
    ), g.feeds()


@case("Gemm without C")
def _gemm_noc():
    g = G([4, 6])
    return g.model(g.op("Gemm", ["x", g.w(5, 6)], transB=1, alpha=0.5)), g.feeds()


@case("Gemm transA with C")
def _gemm_ta():
    g = G([6, 4])
    return g.model(g.op("Gemm", ["x", g.w(6, 5), g.w(5)], transA=1, beta=2.0)), g.feeds()


@case("MatMul 2-D")
def _mm2():
    g = G([4, 6])
    return g.model(g.op("MatMul", ["x", g.w(6, 5)])), g.feeds()


@case("MatMul 3-D by 2-D -> reshapes")
def _mm3():
    g = G([2, 3, 6])
    return g.model(g.op("MatMul", ["x", g.w(6, 5)])), g.feeds()


@case("MatMul 3-D by 2-D, dynamic batch")
def _mm3_dyn():
    g = G([2, 3, 6])
    m = g.model(g.op("MatMul", ["x", g.w(6, 5)]), x_shape=["batch", 3, 6])
    return m, g.feeds()


@case("MatMul batched 3-D")
def _mm_batch():
    g = G([2, 3, 6])
    t = g.op("Transpose", ["x"], perm=[0, 2, 1])
    return g.model(g.op("MatMul", ["x", t])), g.feeds()


def _conv(shape, wshape, with_bias=True, **attrs) -> Case:
    def build():
        g = G(shape)
        ins = ["x", g.w(*wshape)] + ([g.w(wshape[0])] if with_bias else [])
        return g.model(g.op("Conv", ins, **attrs)), g.feeds()

    return build


CASES["Conv 2-D"] = _conv([2, 3, 6, 6], [4, 3, 3, 3], pads=[1, 1, 1, 1])
CASES["Conv no bias, no kernel_shape"] = _conv([2, 3, 6, 6], [4, 3, 3, 3], with_bias=False)
CASES["Conv SAME_UPPER stride 2"] = _conv([2, 3, 7, 7], [4, 3, 3, 3], auto_pad="SAME_UPPER", strides=[2, 2])
CASES["Conv SAME_LOWER even kernel"] = _conv([2, 3, 6, 6], [4, 3, 2, 2], auto_pad="SAME_LOWER")
CASES["Conv asymmetric pads"] = _conv([2, 3, 6, 6], [4, 3, 3, 3], pads=[0, 1, 1, 2])
CASES["Conv groups and dilation"] = _conv([2, 4, 7, 7], [4, 2, 3, 3], group=2, dilations=[2, 2], pads=[2, 2, 2, 2])
CASES["Conv 1-D"] = _conv([2, 3, 9], [4, 3, 3], pads=[1, 1], strides=[2])
CASES["Conv 3-D"] = _conv([1, 2, 4, 4, 4], [3, 2, 3, 3, 3], pads=[1, 1, 1, 1, 1, 1])


@case("ConvTranspose 2-D")
def _deconv():
    g = G([2, 3, 4, 4])
    return g.model(g.op("ConvTranspose", ["x", g.w(3, 2, 3, 3), g.w(2)], strides=[2, 2])), g.feeds()


def _bn(shape, opset=15) -> Case:
    def build():
        g = G(shape, opset=opset)
        c = shape[1]
        ins = ["x", g.w(c), g.w(c), g.w(c), g.const(np.abs(g.rng.standard_normal(c)) + 0.5)]
        return g.model(g.op("BatchNormalization", ins, epsilon=1e-3, momentum=0.8)), g.feeds()

    return build


CASES["BatchNormalization 4-D"] = _bn([2, 3, 4, 4])
CASES["BatchNormalization 2-D"] = _bn([4, 5])


def _pool(op, shape, **attrs) -> Case:
    def build():
        g = G(shape)
        return g.model(g.op(op, ["x"], **attrs)), g.feeds()

    return build


CASES["MaxPool pads strides"] = _pool("MaxPool", [2, 3, 7, 7], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
CASES["MaxPool asymmetric pads"] = _pool("MaxPool", [2, 3, 6, 6], kernel_shape=[2, 2], pads=[0, 0, 1, 1])
CASES["MaxPool 1-D"] = _pool("MaxPool", [2, 3, 8], kernel_shape=[2], strides=[2])
CASES["MaxPool ceil_mode, same size"] = _pool("MaxPool", [2, 3, 8, 8], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
CASES["MaxPool SAME_UPPER"] = _pool("MaxPool", [2, 3, 7, 7], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
CASES["AveragePool"] = _pool("AveragePool", [2, 3, 6, 6], kernel_shape=[2, 2], strides=[2, 2])
CASES["AveragePool pads counted"] = _pool(
    "AveragePool", [2, 3, 6, 6], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
)
CASES["GlobalAveragePool 4-D"] = _pool("GlobalAveragePool", [2, 3, 4, 5])
CASES["GlobalAveragePool 3-D -> ReduceMean"] = _pool("GlobalAveragePool", [2, 3, 7])
CASES["GlobalMaxPool 5-D -> ReduceMax"] = _pool("GlobalMaxPool", [1, 2, 3, 4, 5])
CASES["GlobalMaxPool 4-D"] = _pool("GlobalMaxPool", [2, 3, 4, 5])
CASES["LRN"] = _pool("LRN", [2, 5, 3, 3], size=3, alpha=1e-2, beta=0.75, bias=1.5)
# ceil_mode that changes the size becomes end padding (torchvision's GoogLeNet and SqueezeNet)
CASES["MaxPool ceil_mode, one more window"] = _pool(
    "MaxPool", [2, 3, 7, 7], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
)
CASES["MaxPool ceil_mode 3x3/2 (GoogLeNet)"] = _pool(
    "MaxPool", [2, 3, 9, 8], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
)
CASES["MaxPool ceil_mode with pads, last window dropped"] = _pool(
    "MaxPool", [1, 2, 5, 5], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1
)
# count_include_pad=0 with pads (the Caffe2 BN-Inception's pooling branch): rescaled by a constant map
CASES["AveragePool pads not counted"] = _pool("AveragePool", [2, 3, 6, 6], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
CASES["AveragePool pads not counted, stride 2, asymmetric"] = _pool(
    "AveragePool", [2, 3, 7, 6], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]
)
CASES["AveragePool 3-D pads not counted"] = _pool(
    "AveragePool", [1, 2, 4, 4, 4], kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1]
)


@case("HardSwish (MobileNetV3)")
def _hard_swish():
    g = G([2, 3, 4])
    x = g.op("Mul", ["x", g.const(4.0)])  # reaches both bends, at -3 and 3
    return g.model(g.op("HardSwish", [x])), g.feeds()


def _slice(shape, starts, ends, axes=None, steps=None, opset: int = OPSET) -> Case:
    def build():
        g = G(shape, opset=opset)
        if opset < 10:
            attrs = {"starts": starts, "ends": ends, **({"axes": axes} if axes is not None else {})}
            return g.model(g.op("Slice", ["x"], **attrs)), g.feeds()
        ins = ["x", g.const(starts, np.int64), g.const(ends, np.int64)]
        if axes is not None or steps is not None:
            ins.append(g.const(axes if axes is not None else list(range(len(starts))), np.int64))
        if steps is not None:
            ins.append(g.const(steps, np.int64))
        return g.model(g.op("Slice", ins)), g.feeds()

    return build


# Slice as Split + Concat (MXNet 1.9's own Slice translation reads the bounds as floats and fails)
CASES["Slice halves (LLaMA rotate_half)"] = _slice([2, 3, 4, 8], [4], [2**63 - 1], [3], [1])
CASES["Slice first half, axis 1"] = _slice([2, 6, 3], [0], [3], [1])
CASES["Slice 1..4 of 6, negative axis"] = _slice([2, 6], [1], [4], [-1])
CASES["Slice negative starts and ends, two axes"] = _slice([3, 8, 6], [-6, 1], [-2, -1], [1, 2])
CASES["Slice with step 2"] = _slice([2, 9, 3], [1], [9], [1], [2])
CASES["Slice with step 3, to the end"] = _slice([2, 10], [0], [100], [1], [3])
CASES["Slice opset 9 (attributes)"] = _slice([2, 6, 4], [0, 1], [2, 5], [0, 1], opset=9)


@case("Expand repeated axes (grouped-query attention)")
def _expand():
    g = G([2, 2, 1, 3, 4])
    return g.model(g.op("Expand", ["x", g.const([2, 2, 3, 3, 4], np.int64)])), g.feeds()


@case("Expand to a higher rank")
def _expand_rank():
    g = G([3, 1])
    return g.model(g.op("Expand", ["x", g.const([2, 3, 4], np.int64)])), g.feeds()


@case("Where(IsNaN(softmax)) after a finite mask (Hugging Face attention)")
def _nan_guard():
    g = G([2, 2, 4, 4])
    causal = np.triu(np.full((4, 4), np.finfo(np.float32).min, np.float32), 1)
    p = g.op("Softmax", [g.op("Add", ["x", g.const(causal.reshape(1, 1, 4, 4))])], axis=-1)
    guarded = g.op("Where", [g.op("IsNaN", [p]), g.const(0.0), p])
    return g.model(g.op("MatMul", [guarded, g.w(4, 3)])), g.feeds()


@case("InstanceNormalization")
def _inorm():
    g = G([2, 3, 4, 4])
    return g.model(g.op("InstanceNormalization", ["x", g.w(3), g.w(3)], epsilon=1e-4)), g.feeds()


def _flatten(axis, shape=(2, 3, 4, 5), x_shape=None) -> Case:
    def build():
        g = G(shape)
        return g.model(g.op("Flatten", ["x"], axis=axis), x_shape=x_shape), g.feeds()

    return build


CASES["Flatten axis 1"] = _flatten(1)
CASES["Flatten axis 0 -> Reshape"] = _flatten(0)
CASES["Flatten axis 2 -> Reshape"] = _flatten(2)
CASES["Flatten axis -1, dynamic batch -> Reshape"] = _flatten(-1, x_shape=["n", 3, 4, 5])


@case("Reshape 0 and -1")
def _reshape():
    g = G([2, 3, 4])
    return g.model(g.op("Reshape", ["x", g.const([0, -1, 2], np.int64)])), g.feeds()


@case("Transpose")
def _transpose():
    g = G([2, 3, 4])
    return g.model(g.op("Transpose", ["x"], perm=[2, 0, 1])), g.feeds()


@case("Squeeze Unsqueeze axes as inputs, negative")
def _squeeze():
    g = G([2, 1, 4])
    s = g.op("Squeeze", ["x", g.const([-2], np.int64)])
    return g.model(g.op("Unsqueeze", [s, g.const([-1, 0], np.int64)])), g.feeds()


@case("Squeeze Unsqueeze opset 11 attributes")
def _squeeze11():
    g = G([2, 1, 4], opset=11)
    s = g.op("Squeeze", ["x"], axes=[1])
    return g.model(g.op("Unsqueeze", [s], axes=[0, 3])), g.feeds()


@case("Concat negative axis")
def _concat():
    g = G([2, 3, 4])
    return g.model(g.op("Concat", ["x", g.w(2, 3, 2), g.op("Relu", ["x"])], axis=-1)), g.feeds()


@case("Split sizes as input")
def _split():
    g = G([2, 6, 3])
    a, b, c = g.op("Split", ["x", g.const([2, 2, 2], np.int64)], n_out=3, axis=1)
    return g.model(g.op("Add", [g.op("Sub", [a, b]), c])), g.feeds()


@case("Split equal, no sizes, opset 18")
def _split18():
    g = G([2, 3, 8], opset=18)
    a, b = g.op("Split", ["x"], n_out=2, axis=-1, num_outputs=2)
    return g.model(g.op("Mul", [a, b])), g.feeds()


def _softmax(op, shape, opset, **attrs) -> Case:
    def build():
        g = G(shape, opset=opset)
        return g.model(g.op(op, ["x"], **attrs)), g.feeds()

    return build


CASES["Softmax last axis"] = _softmax("Softmax", [2, 3, 4], OPSET)
CASES["Softmax axis 1 (opset 13+) -> Transpose"] = _softmax("Softmax", [2, 3, 4, 2], OPSET, axis=1)
CASES["Softmax opset 11 axis 1 -> Reshape"] = _softmax("Softmax", [2, 3, 4], 11, axis=1)
CASES["Softmax opset 11 default axis, 2-D"] = _softmax("Softmax", [3, 5], 11)
CASES["LogSoftmax axis 0"] = _softmax("LogSoftmax", [3, 4], OPSET, axis=0)


@case("Dropout ratio input (inference)")
def _dropout():
    g = G([2, 5])
    return g.model(g.op("Dropout", ["x", g.const(0.3)])), g.feeds()


@case("Clip min max inputs")
def _clip():
    g = G([2, 5])
    return g.model(g.op("Clip", ["x", g.const(-0.5), g.const(0.7)])), g.feeds()


@case("Clip max only")
def _clip_max():
    g = G([2, 5])
    return g.model(g.op("Clip", ["x", "", g.const(0.2)])), g.feeds()


@case("Clip no bounds")
def _clip_none():
    g = G([2, 5])
    return g.model(g.op("Relu", [g.op("Clip", ["x"])])), g.feeds()


@case("Clip opset 6 attributes")
def _clip6():
    g = G([2, 5], opset=7)
    return g.model(g.op("Clip", ["x"], min=0.0, max=6.0)), g.feeds()


def _pad(mode, pads, shape=(1, 2, 4, 5), value=None) -> Case:
    def build():
        g = G(list(shape))
        ins = ["x", g.const(pads, np.int64)] + ([g.const(value)] if value is not None else [])
        return g.model(g.op("Pad", ins, mode=mode)), g.feeds()

    return build


CASES["Pad constant"] = _pad("constant", [0, 0, 1, 2, 0, 0, 2, 1], value=0.5)
CASES["Pad reflect"] = _pad("reflect", [0, 0, 1, 2, 0, 0, 2, 1])
CASES["Pad edge 5-D"] = _pad("edge", [0, 0, 1, 0, 1, 0, 0, 1, 0, 2], shape=(1, 2, 3, 3, 3))


def _reduce(op, shape=(2, 3, 4), axes=(1,), keepdims=None, opset=OPSET) -> Case:
    def build():
        g = G(list(shape), opset=opset)
        kw = {} if keepdims is None else {"keepdims": keepdims}
        as_input = op == "ReduceSum" and opset >= 13 or opset >= 18
        if as_input:
            out = g.op(op, ["x", g.const(list(axes), np.int64)], **kw)
        else:
            out = g.op(op, ["x"], axes=list(axes), **kw)
        return g.model(out), g.feeds(positive=op in ("ReduceProd", "ReduceLogSum"))

    return build


CASES["ReduceMean default keepdims"] = _reduce("ReduceMean", axes=(-1,))
CASES["ReduceSum axes input, keepdims 0"] = _reduce("ReduceSum", axes=(0, 2), keepdims=0)
CASES["ReduceMax"] = _reduce("ReduceMax")
CASES["ReduceMin keepdims 0"] = _reduce("ReduceMin", keepdims=0)
CASES["ReduceProd"] = _reduce("ReduceProd")
CASES["ReduceL1"] = _reduce("ReduceL1", axes=(1, 2))
CASES["ReduceL2"] = _reduce("ReduceL2")
CASES["ReduceSumSquare"] = _reduce("ReduceSumSquare", keepdims=0)
CASES["ReduceLogSumExp"] = _reduce("ReduceLogSumExp")
CASES["ReduceMean opset 18 axes input"] = _reduce("ReduceMean", axes=(1,), opset=18)


@case("LayerNormalization last axis -> ReduceMean arithmetic")
def _layer_norm():
    g = G([2, 3, 8])
    return g.model(g.op("LayerNormalization", ["x", g.w(8), g.w(8)], epsilon=1e-3)), g.feeds()


@case("LayerNormalization axis 1, no bias")
def _layer_norm_axis1():
    g = G([2, 3, 4])
    return g.model(g.op("LayerNormalization", ["x", g.w(3, 4)], axis=1)), g.feeds()


@case("ArgMax")
def _argmax():
    g = G([3, 5])
    return g.model(g.op("ArgMax", ["x"], axis=1), out_type=TensorProto.INT64), g.feeds()


@case("Cast to int32 and back")
def _cast():
    g = G([3, 5])
    i = g.op("Cast", [g.op("Mul", ["x", g.const(3.0)])], to=TensorProto.INT32)
    return g.model(g.op("Cast", [i], to=TensorProto.FLOAT)), g.feeds()


@case("Gather constant indices, negative")
def _gather():
    g = G([2, 5, 3])
    return g.model(g.op("Gather", ["x", g.const([0, -1, 2], np.int64)], axis=1)), g.feeds()


@case("PRelu 2-D per channel")
def _prelu():
    g = G([4, 3])
    return g.model(g.op("PRelu", ["x", g.const([0.1, 0.2, 0.3])])), g.feeds()


@case("PRelu one slope")
def _prelu1():
    g = G([2, 3, 4, 4])
    return g.model(g.op("PRelu", ["x", g.const([0.25])])), g.feeds()


@case("Constant node")
def _constant():
    g = G([2, 3])
    g.nodes.append(
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.full((3,), 2.0, np.float32)))
    )
    return g.model(g.op("Mul", ["x", "k"])), g.feeds()


#: models `for_mxnet` must refuse: (builder, words the one-line error must contain)
REFUSED: dict[str, tuple[Case, list[str]]] = {}


def refused(name: str, *words: str):
    def register(fn: Case) -> Case:
        REFUSED[name] = (fn, list(words))
        return fn

    return register


@refused("Erf", "erf", "Erf", "no translation")
def _erf():
    g = G([2, 3])
    return g.model(g.op("Erf", ["x"])), g.feeds()


@refused("Slice of a dynamic axis", "slice", "Slice", "run time")
def _slice_dynamic():
    g = G([2, 6])
    model = g.model(
        g.op("Slice", ["x", g.const([1], np.int64), g.const([4], np.int64), g.const([1], np.int64)]), x_shape=[2, "n"]
    )
    return model, g.feeds()


@refused("Slice reversed", "slice", "Slice", "negative step")
def _slice_reversed():
    g = G([2, 6])
    ins = ["x", g.const([5], np.int64), g.const([0], np.int64), g.const([1], np.int64), g.const([-1], np.int64)]
    return g.model(g.op("Slice", ins)), g.feeds()


@refused("Where(IsNaN(softmax)) after a -inf mask", "isnan", "IsNaN", "no translation")
def _nan_guard_needed():
    """A mask of -inf can empty a whole row: the guard may fire, so it stays (and MXNet has no Where)."""
    g = G([2, 4, 4])
    mask = np.zeros((4, 4), np.float32)
    mask[3] = -np.inf
    p = g.op("Softmax", [g.op("Add", ["x", g.const(mask)])], axis=-1)
    return g.model(g.op("Where", [g.op("IsNaN", [p]), g.const(0.0), p])), g.feeds()


@refused("AveragePool pads not counted, dynamic size", "averagepool", "count_include_pad", "spatial size")
def _avg_pads():
    g = G([2, 3, 6, 6])
    return g.model(
        g.op("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), x_shape=[2, 3, "h", "w"]
    ), g.feeds()


@refused("MatMul broadcast batch", "matmul", "linalg_gemm2")
def _mm_bcast():
    g = G([2, 3, 4, 5])
    return g.model(g.op("MatMul", ["x", g.w(1, 3, 5, 2)])), g.feeds()


@refused("Split uneven", "split", "equal parts")
def _split_uneven():
    g = G([2, 5])
    a, b = g.op("Split", ["x", g.const([2, 3], np.int64)], n_out=2, axis=1)
    return g.model(
        g.op("ReduceSum", [a, g.const([1], np.int64)]), g.op("ReduceSum", [b, g.const([1], np.int64)])
    ), g.feeds()


@refused("ConvTranspose pads", "convtranspose", "pads")
def _deconv_pads():
    g = G([2, 3, 4, 4])
    return g.model(g.op("ConvTranspose", ["x", g.w(3, 2, 3, 3)], pads=[1, 1, 1, 1])), g.feeds()


@refused("Pad channel axis", "pad", "channel")
def _pad_channel():
    g = G([1, 2, 3, 3])
    return g.model(g.op("Pad", ["x", g.const([0, 1, 0, 0, 0, 0, 0, 0], np.int64)])), g.feeds()


@refused("MaxPool ceil_mode, dynamic size", "maxpool", "ceil_mode")
def _ceil():
    g = G([2, 3, 7, 7])
    return g.model(
        g.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), x_shape=[2, 3, "h", "w"]
    ), g.feeds()
