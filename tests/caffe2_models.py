"""Classic CNNs in the form of the ONNX-zoo files converted from Caffe2 (opset 7-9), written with onnx.helper.

Caffe2's converter wrote BatchNorm as `BatchNormalization -> Mul(const[C,1,1]) -> Add(const[C,1,1])` (the
learnt scale and shift as separate ops), kept inference-mode `Dropout`, ended classifiers with `Softmax`,
used `Reshape` with a shape initializer before the `Gemm`, and (IR version 3) listed every initializer as a
graph input. Weights are random; `scale` multiplies every weight so that the logits reach large magnitudes
(1e4 and more, as in the zoo's random-weight checks), where float32 rounding of long sums is visible.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Caffe2Graph:
    """Nodes and initializers of an opset-7..9 graph under construction."""

    def __init__(self, opset: int = 9, seed: int = 0, scale: float = 1.0) -> None:
        self.opset, self.scale = opset, scale
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value: np.ndarray, base: str = "w") -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = False) -> str:
        w = self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k)) * self.scale
        ins = [x, self.const(w, "conv_w")]
        if bias:
            ins.append(self.const(self.rng.standard_normal(c_out) * 0.1, "conv_b"))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def bn(self, x: str, c: int, affine_after: bool = True) -> str:
        """BatchNormalization with the scale/shift written as Mul and Add after it (Caffe2's SpatialBN form)."""
        stats = [
            self.rng.uniform(0.8, 1.2, c) if affine_after else self.rng.uniform(0.5, 1.5, c),
            self.rng.standard_normal(c) * 0.1,
            self.rng.standard_normal(c) * 0.1,
            self.rng.uniform(0.5, 1.5, c),
        ]
        if affine_after:
            stats[0], stats[1] = np.ones(c), np.zeros(c)
        y = self.op("BatchNormalization", [x] + [self.const(s, "bn") for s in stats], epsilon=1e-5)
        if affine_after:
            y = self.op("Mul", [y, self.const(self.rng.uniform(0.5, 1.5, (c, 1, 1)), "scale")])
            y = self.op("Add", [y, self.const(self.rng.standard_normal((c, 1, 1)) * 0.1, "shift")])
        return y

    def model(self, x: onnx.ValueInfoProto, out: str, initializers_as_inputs: bool = False) -> onnx.ModelProto:
        inputs = [x]
        if initializers_as_inputs:  # IR version 3: every weight is also a graph input
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        graph = helper.make_graph(
            self.nodes, "caffe2", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="onnx-caffe2"
        )
        model.ir_version = 3 if initializers_as_inputs else 4
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.output[0].CopyFrom(inferred.graph.output[0])
        return model

    def classifier(self, x: str, c: int, classes: int, hw: int) -> str:
        """Global average pool, Dropout, Reshape to [N, C], Gemm, Softmax (the zoo's classifier head)."""
        y = self.op("AveragePool", [x], kernel_shape=[hw, hw]) if hw > 1 else x
        y = self.op("Dropout", [y], ratio=0.5)
        y = self.op("Reshape", [y, self.name_shape([1, c])])
        w = self.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c) * self.scale
        y = self.op("Gemm", [y, self.const(w, "fc_w"), self.const(np.zeros(classes), "fc_b")], transB=1)
        return self.op("Softmax", [y]) if self.softmax else y

    softmax = True

    def name_shape(self, shape: list[int]) -> str:
        name = self.name("shape")
        self.inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), name))
        return name


def densenet(
    blocks: tuple[int, ...] = (2, 2),
    growth: int = 8,
    size: int = 32,
    classes: int = 10,
    opset: int = 9,
    scale: float = 1.0,
    softmax: bool = True,
    seed: int = 0,
    initializers_as_inputs: bool = False,
) -> onnx.ModelProto:
    """A pre-activation DenseNet (DenseNet-121 is blocks=(6, 12, 24, 16), growth 32, size 224): each layer is
    BN-Mul-Add-Relu-Conv1x1-BN-Mul-Add-Relu-Conv3x3 concatenated to its input; transitions halve the channels
    and the size with a Conv1x1 and an AveragePool."""
    g = Caffe2Graph(opset, seed, scale)
    g.softmax = softmax
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])
    c = 2 * growth
    y = g.op("Relu", [g.bn(g.conv("data", 3, c, 7, stride=2), c)])
    y = g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    hw = size // 4
    for i, layers in enumerate(blocks):
        for _ in range(layers):
            h = g.conv(g.op("Relu", [g.bn(y, c)]), c, 4 * growth, 1)
            h = g.conv(g.op("Relu", [g.bn(h, 4 * growth)]), 4 * growth, growth, 3)
            y = g.op("Concat", [y, h], axis=1)
            c += growth
        if i < len(blocks) - 1:
            y = g.conv(g.op("Relu", [g.bn(y, c)]), c, c // 2, 1)
            c //= 2
            y = g.op("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2])
            hw //= 2
    y = g.op("Relu", [g.bn(y, c)])
    return g.model(x, g.classifier(y, c, classes, hw), initializers_as_inputs)


def inception_v2(
    modules: int = 2,
    width: int = 16,
    size: int = 32,
    classes: int = 10,
    opset: int = 9,
    scale: float = 1.0,
    softmax: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """BN-Inception: modules of four branches (1x1; 1x1-3x3; 1x1-3x3-3x3; AveragePool-1x1), each conv followed
    by BatchNormalization and Relu, concatenated along the channels."""
    g = Caffe2Graph(opset, seed, scale)
    g.softmax = softmax
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])

    def cbr(t: str, c_in: int, c_out: int, k: int, stride: int = 1) -> str:
        return g.op("Relu", [g.bn(g.conv(t, c_in, c_out, k, stride, bias=True), c_out, affine_after=False)])

    c = 2 * width
    y = cbr("data", 3, c, 3, stride=2)
    hw = size // 2
    for _ in range(modules):
        b1 = cbr(y, c, width, 1)
        b2 = cbr(cbr(y, c, width, 1), width, width, 3)
        b3 = cbr(cbr(cbr(y, c, width // 2, 1), width // 2, width, 3), width, width, 3)
        b4 = cbr(g.op("AveragePool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), c, width // 2, 1)
        y = g.op("Concat", [b1, b2, b3, b4], axis=1)
        c = 3 * width + width // 2
    return g.model(x, g.classifier(y, c, classes, hw), False)


def vgg(
    stages: tuple[int, ...] = (2, 2, 4, 4, 4),
    widths: tuple[int, ...] = (4, 8, 16, 16, 16),
    fc: int = 32,
    size: int = 32,
    classes: int = 10,
    opset: int = 9,
    scale: float = 1.0,
    seed: int = 0,
    initializers_as_inputs: bool = True,
) -> onnx.ModelProto:
    """VGG as the zoo's Caffe2 conversion wrote it (VGG-19 is stages=(2, 2, 4, 4, 4), widths (64, 128, 256, 512,
    512), fc 4096, size 224, 1000 classes): Conv3x3+bias-Relu stages each ending in a 2x2 MaxPool, Flatten,
    two Gemm-Relu-Dropout layers, a Gemm and Softmax; every initializer also a graph input (IR version 3)."""
    g = Caffe2Graph(opset, seed, scale)
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])
    y, c, hw = "data", 3, size
    for layers, width in zip(stages, widths):
        for _ in range(layers):
            y = g.op("Relu", [g.conv(y, c, width, 3, bias=True)])
            c = width
        y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        hw //= 2
    y = g.op("Flatten", [y], axis=1)
    n_in = c * hw * hw
    for _ in range(2):
        w = g.rng.standard_normal((fc, n_in)) * np.sqrt(2.0 / n_in) * scale
        y = g.op("Gemm", [y, g.const(w, "fc_w"), g.const(g.rng.standard_normal(fc) * 0.1, "fc_b")], transB=1)
        y = g.op("Dropout", [g.op("Relu", [y])], ratio=0.5)
        n_in = fc
    w = g.rng.standard_normal((classes, n_in)) * np.sqrt(1.0 / n_in) * scale
    y = g.op("Gemm", [y, g.const(w, "fc_w"), g.const(np.zeros(classes), "fc_b")], transB=1)
    return g.model(x, g.op("Softmax", [y]), initializers_as_inputs)


def inception_v1(
    modules: int = 2,
    width: int = 8,
    size: int = 32,
    classes: int = 10,
    opset: int = 9,
    scale: float = 1.0,
    seed: int = 0,
    initializers_as_inputs: bool = True,
) -> onnx.ModelProto:
    """GoogLeNet (Inception-v1) as the zoo's Caffe2 conversion wrote it: a 7x7/2 stem, MaxPool with the extra end
    padding Caffe's ceil rounding needs, LRN, a 1x1 and a 3x3 convolution, LRN, MaxPool; inception modules of four
    branches (1x1; 1x1-3x3; 1x1-5x5; MaxPool3x3/1-1x1, every conv with a bias and a Relu) concatenated; global
    AveragePool, Dropout(0.4), Reshape, Gemm, Softmax; every initializer also a graph input (IR version 3)."""
    g = Caffe2Graph(opset, seed, scale)
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])

    def conv_relu(t: str, c_in: int, c_out: int, k: int, stride: int = 1) -> str:
        return g.op("Relu", [g.conv(t, c_in, c_out, k, stride, bias=True)])

    def lrn(t: str) -> str:
        return g.op("LRN", [t], size=5, alpha=1e-4, beta=0.75, bias=1.0)

    c = 2 * width
    y = conv_relu("data", 3, c, 7, stride=2)
    y = lrn(g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]))
    y = conv_relu(conv_relu(y, c, c, 1), c, 3 * width, 3)
    c = 3 * width
    y = g.op("MaxPool", [lrn(y)], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])
    hw = size // 2
    for _ in range(2):  # the stem halves it twice more, rounding up
        hw = (hw + 1) // 2
    for _ in range(modules):
        b1 = conv_relu(y, c, width, 1)
        b2 = conv_relu(conv_relu(y, c, width, 1), width, 2 * width, 3)
        b3 = conv_relu(conv_relu(y, c, width // 2, 1), width // 2, width, 5)
        b4 = conv_relu(g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), c, width, 1)
        y = g.op("Concat", [b1, b2, b3, b4], axis=1)
        c = 4 * width + width
    y = g.op("AveragePool", [y], kernel_shape=[hw, hw], strides=[1, 1])
    y = g.op("Dropout", [y], ratio=0.4)
    y = g.op("Reshape", [y, g.name_shape([1, c])])
    w = g.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c) * scale
    y = g.op("Gemm", [y, g.const(w, "fc_w"), g.const(np.zeros(classes), "fc_b")], transB=1)
    return g.model(x, g.op("Softmax", [y]), initializers_as_inputs)
