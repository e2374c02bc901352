"""Op coverage of the axis-group analysis and the widen pass, on graphs built with onnx.helper.

Every growable case is grown with each strategy its group allows and checked here with onnxruntime
(graph optimisations off) on random inputs: the grown model must compute what the original computes
within 1e-5, normalised by the output's magnitude. Cases run at several opsets, from 7 to the newest
onnx knows, wherever the ops exist; combinations onnxruntime cannot run are skipped.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto

pytest.importorskip("onnxruntime")
from onnx_graphs import (
    LATEST,
    Graph,
    assert_same_outputs,
    attribute,
    conv_transpose,
    initializer,
    node_by_name,
    reference_error,
    runnable,
)

from onnxgrow.errors import OnnxGrowError, VerificationFailed
from onnxgrow.widen import inspect_model, widen_model

OPSETS = sorted({7, 9, 11, 13, 17, LATEST})


# -- helpers ------------------------------------------------------------------------------------------
def group_of(model: onnx.ModelProto, producer: str):
    groups = inspect_model(model).groups
    found = [g for g in groups if producer in g.producers]
    assert found, f"no group produced by {producer}: {[g.to_dict() for g in groups]}"
    return found[0]


def grow(model: onnx.ModelProto, layers=None, init: str = "noise", all=None, seed: int = 0, tol: float = 1e-5):
    """Widen without onnxgrow's own check, then check exactness and validity here."""
    why = runnable(model)
    if why:
        pytest.skip(f"onnxruntime cannot run the original: {why}")
    result = widen_model(model, layers, all=all, init=init, seed=seed, check=False)
    onnx.checker.check_model(result.model, full_check=True)
    assert_same_outputs(model, result.model, tol=tol)
    assert result.params_after > result.params_before
    return result


def grow_every_way(model: onnx.ModelProto, layer: str, sizes=("x2", "+3")) -> list:
    """Grow `layer` with each size and each strategy its group allows; at least one must be allowed."""
    group = group_of(model, layer)
    assert group.constraint != "blocked", f"{layer}: blocked: {group.reason}"
    results = []
    for size in sizes:
        from onnxgrow.widen import parse_size

        new = parse_size(size, group.size, "test")
        for init in ("noise", "zero", "net2net"):
            if group.allows(init, new) is None:
                results.append(grow(model, {layer: size}, init=init, seed=len(results)))
            else:
                with pytest.raises(OnnxGrowError) as info:
                    widen_model(model, {layer: size}, init=init, check=False)
                assert not isinstance(info.value, VerificationFailed)
    assert results, f"{layer}: no strategy allowed"
    return results


# -- the growable cases: fn(graph) -> (output, layer to grow) --------------------------------------
Case = Callable[[Graph], tuple[str, str]]
CASES: dict[str, tuple[Case, int, int]] = {}  # name -> (build, min opset, max opset)


def case(name: str, min_opset: int = 7, max_opset: int = LATEST):
    def register(fn: Case) -> Case:
        CASES[name] = (fn, min_opset, max_opset)
        return fn

    return register


def mlp(g: Graph, middle: Callable[[Graph, str], str], k: int = 4, n: int = 5, **fc1) -> tuple[str, str]:
    x = g.input([2, k])
    h = g.gemm(x, k, n, "fc1", **fc1)
    h = middle(g, h)
    return g.gemm(h, n, 3, "fc2"), "fc1"


def cnn(
    g: Graph,
    middle: Callable[[Graph, str], str],
    c: int = 4,
    dims: int = 2,
    size: int = 6,
    c_out: int = 3,
    after: int | None = None,
) -> tuple[str, str]:
    x = g.input([1, 3] + [size] * dims)
    h = g.conv(x, 3, c, dims=dims, name="c1")
    h = middle(g, h)
    return g.conv(h, after or c, c_out, dims=dims, name="c2"), "c1"


def relu(g: Graph, h: str) -> str:
    return g.op("Relu", [h])


# Gemm ---------------------------------------------------------------------------------------------------
case("gemm")(lambda g: mlp(g, relu))
case("gemm_transB")(lambda g: mlp(g, relu, trans_b=1))
case("gemm_alpha_beta")(lambda g: mlp(g, relu, alpha=0.7, beta=1.3))
case("gemm_no_bias", 11)(lambda g: mlp(g, relu, bias=False))


@case("gemm_transA")
def _gemm_transa(g):
    x = g.input([4, 2])
    h = g.op("Gemm", [x, g.weight(4, 5), g.const(g.rng.standard_normal(5))], name="fc1", transA=1, alpha=0.5)
    return g.gemm(g.op("Tanh", [h]), 5, 3, "fc2", trans_b=1), "fc1"


@case("gemm_bias_1xN")
def _gemm_bias_row(g):
    x = g.input([2, 4])
    h = g.op("Gemm", [x, g.weight(4, 5), g.const(g.rng.standard_normal((1, 5)))], name="fc1")
    return g.gemm(relu(g, h), 5, 3, "fc2"), "fc1"


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_gemm_scalar_bias(shape):
    g = Graph()
    x = g.input([2, 4])
    h = g.op("Gemm", [x, g.weight(4, 5), g.const(np.full(shape, 0.3))], name="fc1", beta=2.0)
    model = g.model(g.gemm(relu(g, h), 5, 3, "fc2"))
    grow_every_way(model, "fc1")


@case("gemm_weight_left")
def _gemm_left(g):
    x = g.input([2, 4])
    # y[M, B] = W[M, K] · xᵀ: the weight is A, the activation B (transposed)
    h = g.op("Gemm", [g.weight(5, 4), x, g.const(g.rng.standard_normal((5, 1)))], name="fc1", transB=1)
    h = g.op("Relu", [h])
    return g.op("Gemm", [g.weight(3, 5), h, g.const(g.rng.standard_normal((3, 1)))], name="fc2"), "fc1"


@case("gemm_weight_left_transA")
def _gemm_left_ta(g):
    x = g.input([4, 2])
    h = g.op("Gemm", [g.weight(4, 5), x, g.const(g.rng.standard_normal((5, 1)))], name="fc1", transA=1)
    h = g.op("Relu", [h])
    return g.op("Gemm", [g.weight(5, 3), h, g.const(g.rng.standard_normal((3, 1)))], name="fc2", transA=1), "fc1"


# MatMul --------------------------------------------------------------------------------------------------
def matmul_mlp(g: Graph, x_shape, middle=relu) -> tuple[str, str]:
    x = g.input(x_shape)
    h = g.op("MatMul", [x, g.weight(4, 5)], name="fc1")
    h = middle(g, g.op("Add", [h, g.const(g.rng.standard_normal(5))]))
    return g.op("MatMul", [h, g.weight(5, 3)], name="fc2"), "fc1"


case("matmul_2d")(lambda g: matmul_mlp(g, [2, 4]))
case("matmul_3d")(lambda g: matmul_mlp(g, [2, 3, 4]))
case("matmul_4d")(lambda g: matmul_mlp(g, [2, 2, 3, 4]))


def matmul_left(g: Graph, x_shape) -> tuple[str, str]:
    x = g.input(x_shape)  # [..., K, B]: the weight multiplies from the left
    h = g.op("MatMul", [g.weight(5, 4), x], name="fc1")
    h = g.op("Relu", [g.op("Add", [h, g.const(g.rng.standard_normal((5, 1)))])])
    return g.op("MatMul", [g.weight(3, 5), h], name="fc2"), "fc1"


case("matmul_left_2d")(lambda g: matmul_left(g, [4, 2]))
case("matmul_left_3d")(lambda g: matmul_left(g, [2, 4, 3]))


@case("matmul_right_then_left")
def _matmul_mixed(g):
    x = g.input([2, 3, 4])
    h = g.op("Relu", [g.op("MatMul", [x, g.weight(4, 5)], name="fc1")])  # [2, 3, 5]
    t = g.op("Transpose", [h], perm=[0, 2, 1])  # [2, 5, 3]
    return g.op("MatMul", [g.weight(6, 5), t], name="fc2"), "fc1"  # [2, 6, 3]


# Conv / ConvTranspose -----------------------------------------------------------------------------------
for _dims in (1, 2, 3):
    for _bias in (True, False):
        case(f"conv{_dims}d{'' if _bias else '_nobias'}")(
            lambda g, d=_dims, b=_bias: cnn(g, relu, dims=d, size=5 if d == 3 else 6) if b else _cnn_nobias(g, d)
        )

        case(f"convtranspose{_dims}d{'' if _bias else '_nobias'}")(lambda g, d=_dims, b=_bias: _convt(g, d, b))


def _cnn_nobias(g: Graph, dims: int):
    x = g.input([1, 3] + [5] * dims)
    h = g.conv(x, 3, 4, dims=dims, name="c1", bias=False)
    return g.conv(g.op("Relu", [h]), 4, 3, dims=dims, name="c2", bias=False), "c1"


def _convt(g: Graph, dims: int, bias: bool):
    x = g.input([1, 3] + [4] * dims)
    h = conv_transpose(g, x, 3, 4, dims=dims, name="c1", bias=bias, stride=2)
    h = g.op("Relu", [h])
    return conv_transpose(g, h, 4, 3, dims=dims, name="c2", bias=bias), "c1"


@case("conv_then_convtranspose")
def _conv_convt(g):
    x = g.input([1, 3, 5, 5])
    h = g.op("Relu", [g.conv(x, 3, 4, name="c1")])
    return conv_transpose(g, h, 4, 3, name="c2"), "c1"


@case("depthwise_conv")
def _depthwise(g):
    def middle(g, h):
        h = g.conv(g.op("Relu", [h]), 4, 4, name="dw", group=4)
        return g.op("Relu", [h])

    return cnn(g, middle)


@case("depthwise_multiplier")
def _depthwise_mult(g):
    return cnn(g, lambda g, h: g.op("Relu", [g.conv(h, 4, 8, name="dw", group=4)]), after=8)


@case("depthwise_convtranspose")
def _depthwise_t(g):
    return cnn(g, lambda g, h: conv_transpose(g, h, 4, 4, name="dw", group=4))


@case("grouped_conv")
def _grouped(g):
    x = g.input([1, 3, 6, 6])
    h = g.op("Relu", [g.conv(x, 3, 8, name="c1")])
    h = g.op("Relu", [g.conv(h, 8, 8, name="gc", group=2)])
    return g.conv(h, 8, 3, name="c2"), "c1"


@case("grouped_conv_unequal")
def _grouped_unequal(g):
    x = g.input([1, 3, 6, 6])
    h = g.op("Relu", [g.conv(x, 3, 8, name="c1")])
    h = g.op("Relu", [g.conv(h, 8, 6, name="gc", group=2)])  # 4 inputs, 3 outputs per group
    return g.conv(h, 6, 3, name="c2"), "c1"


case("grouped_conv_unequal_output")(lambda g: (_grouped_unequal(g)[0], "gc"))


@case("grouped_convtranspose_unequal")
def _grouped_t_unequal(g):
    x = g.input([1, 3, 4, 4])
    h = g.op("Relu", [g.conv(x, 3, 6, name="c1")])
    h = g.op("Relu", [conv_transpose(g, h, 6, 4, name="gt", group=2, stride=2)])  # 3 inputs, 2 outputs per group
    return g.conv(h, 4, 3, name="c2"), "c1"


case("grouped_convtranspose_unequal_output")(lambda g: (_grouped_t_unequal(g)[0], "gt"))


def _shuffle(g: Graph, h: str, c: int, hw: int, groups: int = 2) -> str:
    """ShuffleNet's channel shuffle: [N, C] -> [N, g, C/g] -> transpose -> [N, C]."""
    h = g.op("Reshape", [h, g.ints([1, groups, c // groups, hw, hw])])
    h = g.op("Transpose", [h], perm=[0, 2, 1, 3, 4])
    return g.op("Reshape", [h, g.ints([1, c, hw, hw])])


@case("channel_shuffle_of_concat")
def _shuffle_concat(g):
    """ShuffleNetV2's stride-2 unit: two branches concatenated and shuffled: they grow together."""
    x = g.input([1, 3, 4, 4])
    a = g.op("Relu", [g.conv(x, 3, 4, name="ba")])
    b = g.op("Relu", [g.conv(x, 3, 4, name="bb")])
    h = _shuffle(g, g.op("Concat", [a, b], axis=1), 8, 4)
    return g.conv(h, 8, 3, name="c2"), "ba"


@case("chunk_then_shuffle")
def _chunk_shuffle(g):
    """ShuffleNetV2's stride-1 unit: the first half passes, the second goes through a branch, both shuffled."""
    x = g.input([1, 3, 4, 4])
    h = g.op("Relu", [g.conv(x, 3, 8, name="c1")])
    x1, x2 = g.slice(h, [0], [4], [1]), g.slice(h, [4], [8], [1])
    z = g.op("Relu", [g.conv(x2, 4, 4, name="b2")])
    h = _shuffle(g, g.op("Concat", [x1, z], axis=1), 8, 4)
    x1, x2 = g.split(h, [4, 4], axis=1)
    z = g.op("Relu", [g.conv(x2, 4, 4, name="b3")])
    h = _shuffle(g, g.op("Concat", [x1, z], axis=1), 8, 4)
    return g.conv(h, 8, 3, name="c2"), "c1"


# normalisations ------------------------------------------------------------------------------------------
def _bn(g: Graph, h: str, c: int, rank: int = 4) -> str:
    scale = g.const(g.rng.uniform(0.5, 1.5, c))
    bias = g.const(g.rng.standard_normal(c) * 0.1)
    mean = g.const(g.rng.standard_normal(c) * 0.1)
    var = g.const(g.rng.uniform(0.5, 1.5, c))
    return g.op("BatchNormalization", [h, scale, bias, mean, var], epsilon=1e-5)


case("batchnorm")(lambda g: cnn(g, lambda g, h: g.op("Relu", [_bn(g, h, 4)])))
case("batchnorm_1d_after_gemm")(lambda g: mlp(g, lambda g, h: g.op("Relu", [_bn(g, h, 5, 2)])))
case("instancenorm")(
    lambda g: cnn(
        g,
        lambda g, h: g.op(
            "Relu",
            [
                g.op(
                    "InstanceNormalization", [h, g.const(g.rng.uniform(0.5, 1.5, 4)), g.const(g.rng.standard_normal(4))]
                )
            ],
        ),
    )
)

# activations ------------------------------------------------------------------------------------------------
ACTIVATIONS: dict[str, tuple[Callable[[Graph, str], str], int]] = {
    "Relu": (lambda g, h: g.op("Relu", [h]), 7),
    "LeakyRelu": (lambda g, h: g.op("LeakyRelu", [h], alpha=0.1), 7),
    "PRelu": (lambda g, h: g.op("PRelu", [h, g.const(g.rng.uniform(0.05, 0.3, 5))]), 7),
    "Sigmoid": (lambda g, h: g.op("Sigmoid", [h]), 7),
    "Tanh": (lambda g, h: g.op("Tanh", [h]), 7),
    "HardSigmoid": (lambda g, h: g.op("HardSigmoid", [h], alpha=0.3, beta=0.4), 7),
    "HardSwish": (lambda g, h: g.op("HardSwish", [h]), 14),
    "Elu": (lambda g, h: g.op("Elu", [h], alpha=0.8), 7),
    "Selu": (lambda g, h: g.op("Selu", [h]), 7),
    "Celu": (lambda g, h: g.op("Celu", [h], alpha=1.2), 12),
    "Softplus": (lambda g, h: g.op("Softplus", [h]), 7),
    "Softsign": (lambda g, h: g.op("Softsign", [h]), 7),
    "Mish": (lambda g, h: g.op("Mish", [h]), 18),
    "Gelu": (lambda g, h: g.op("Gelu", [h]), 20),
    "Gelu_tanh": (lambda g, h: g.op("Gelu", [h], approximate="tanh"), 20),
    "ThresholdedRelu": (lambda g, h: g.op("ThresholdedRelu", [h], alpha=0.2), 10),
    "Shrink": (lambda g, h: g.op("Shrink", [h], lambd=0.3, bias=0.1), 9),
    "Abs": (lambda g, h: g.op("Abs", [h]), 7),
    "Neg": (lambda g, h: g.op("Neg", [h]), 7),
    "Exp": (lambda g, h: g.op("Exp", [h]), 7),
    "Sin": (lambda g, h: g.op("Sin", [h]), 7),
    "Cos": (lambda g, h: g.op("Cos", [h]), 7),
    "Clip": (lambda g, h: g.clip(h, -0.5, 0.7), 7),
    "Clip_min_only": (lambda g, h: g.clip(h, 0.1, None), 7),
    "Clip_max_only": (lambda g, h: g.clip(h, None, 0.2), 7),
    "Relu6_as_Clip": (lambda g, h: g.clip(h, 0.0, 6.0), 7),
    "Erf_GELU": (lambda g, h: _erf_gelu(g, h), 9),
    "Swish_as_Mul_Sigmoid": (lambda g, h: g.op("Mul", [h, g.op("Sigmoid", [h])]), 7),
}


def _erf_gelu(g: Graph, h: str) -> str:
    """GELU as torch exports it: x * 0.5 * (1 + erf(x / sqrt 2))."""
    e = g.op("Erf", [g.op("Div", [h, g.const(np.array(1.4142135, np.float32))])])
    e = g.op("Add", [e, g.const(np.array(1.0, np.float32))])
    return g.op("Mul", [g.op("Mul", [h, e]), g.const(np.array(0.5, np.float32))])


for _name, (_fn, _min) in ACTIVATIONS.items():
    case(f"act_{_name}", _min)(lambda g, f=_fn: mlp(g, f))


@case("act_PRelu_conv")
def _prelu_conv(g):
    return cnn(g, lambda g, h: g.op("PRelu", [h, g.const(g.rng.uniform(0.05, 0.3, (4, 1, 1)))]))


# elementwise with constants ------------------------------------------------------------------------------
def _binary(op: str, per_channel: bool, const_first: bool = False, positive: bool = False):
    def middle(g: Graph, h: str) -> str:
        value = g.rng.uniform(0.5, 2.0, 5) if per_channel else np.array(g.rng.uniform(0.5, 2.0))
        if op == "Pow":
            value = np.round(value) + 1.0  # integer exponents keep negative bases real
        c = g.const(value)
        h = g.op("Relu", [h]) if positive else h
        return g.op(op, [c, h] if const_first else [h, c])

    return middle


for _op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"):
    for _pc in (False, True):
        case(f"{_op.lower()}_{'per_channel' if _pc else 'scalar'}", 8 if _op in ("Max", "Min") else 7)(
            lambda g, o=_op, p=_pc: mlp(g, _binary(o, p))
        )
case("sub_const_first")(lambda g: mlp(g, _binary("Sub", True, const_first=True)))
case("mul_const_first")(lambda g: mlp(g, _binary("Mul", True, const_first=True)))
case("div_const_by_sigmoid")(
    lambda g: mlp(g, lambda g, h: g.op("Div", [g.const(g.rng.uniform(0.5, 2.0, 5)), g.op("Sigmoid", [h])]))
)
case("add_per_channel_conv")(lambda g: cnn(g, lambda g, h: g.op("Add", [h, g.const(g.rng.standard_normal((4, 1, 1)))])))
case("mul_per_channel_conv_4d")(
    lambda g: cnn(g, lambda g, h: g.op("Mul", [h, g.const(g.rng.standard_normal((1, 4, 1, 1)))]))
)


# joins -----------------------------------------------------------------------------------------------------
@case("residual_add")
def _residual(g):
    return mlp(
        g, lambda g, h: g.op("Relu", [g.op("Add", [g.op("Relu", [h]), g.gemm(g.op("Relu", [h]), 5, 5, "fc_res")])])
    )


@case("sum_of_two")
def _sum2(g):
    x = g.input([2, 4])
    s = g.op("Sum", [g.gemm(x, 4, 5, "fc1"), g.gemm(x, 4, 5, "fc1b")])
    return g.gemm(g.op("Relu", [s]), 5, 3, "fc2"), "fc1"


@case("sum_of_three")
def _sum3(g):
    x = g.input([2, 4])
    s = g.op("Sum", [g.gemm(x, 4, 5, "fc1"), g.gemm(x, 4, 5, "fc1b"), g.gemm(x, 4, 5, "fc1c")])
    return g.gemm(g.op("Tanh", [s]), 5, 3, "fc2"), "fc1"


@case("residual_conv")
def _residual_conv(g):
    def middle(g, h):
        r = g.op("Relu", [h])
        return g.op("Relu", [g.op("Add", [r, g.conv(r, 4, 4, name="c_res")])])

    return cnn(g, middle)


@case("se_gate")
def _se(g):
    def middle(g, h):
        r = g.op("Relu", [h])
        s = g.op("GlobalAveragePool", [r])
        s = g.op("Relu", [g.conv(s, 4, 2, k=1, name="se_reduce")])
        s = g.op("Sigmoid", [g.conv(s, 2, 4, k=1, name="se_expand")])
        return g.op("Mul", [r, s])

    return cnn(g, middle)


@case("concat_gemm")
def _concat(g):
    x = g.input([2, 4])
    a = g.op("Relu", [g.gemm(x, 4, 5, "fc1")])
    b = g.op("Relu", [g.gemm(x, 4, 3, "fc1b")])
    return g.gemm(g.op("Concat", [a, b], axis=1), 8, 3, "fc2"), "fc1"


@case("concat_conv_second")
def _concat_conv(g):
    x = g.input([1, 3, 5, 5])
    a = g.conv(x, 3, 2, name="c0")
    b = g.conv(x, 3, 4, name="c1")
    return g.conv(g.op("Concat", [a, b], axis=1), 6, 3, name="c2"), "c1"


@case("concat_then_split", 7)
def _concat_split(g):
    x = g.input([2, 4])
    a = g.gemm(x, 4, 5, "fc1")
    b = g.gemm(x, 4, 3, "fc1b")
    p, q = g.split(g.op("Concat", [a, b], axis=1), [5, 3], axis=1)
    return g.op("Add", [g.gemm(g.op("Relu", [p]), 5, 3, "fc2"), g.gemm(g.op("Relu", [q]), 3, 3, "fc2b")]), "fc1"


@case("slice_spatial")
def _slice_spatial(g):
    return cnn(g, lambda g, h: g.slice(h, [1], [5], [2]))


@case("slice_channels_whole")
def _slice_all(g):
    return cnn(g, lambda g, h: g.slice(h, [0], [2**31 - 1], [1]))


# pooling, reductions, shapes -----------------------------------------------------------------------------
case("maxpool")(lambda g: cnn(g, lambda g, h: g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])))
case("maxpool_1d")(lambda g: cnn(g, lambda g, h: g.op("MaxPool", [h], kernel_shape=[3], pads=[1, 1]), dims=1))
case("averagepool")(lambda g: cnn(g, lambda g, h: g.op("AveragePool", [h], kernel_shape=[3, 3], pads=[1] * 4)))
case("averagepool_3d")(lambda g: cnn(g, lambda g, h: g.op("AveragePool", [h], kernel_shape=[2] * 3), dims=3, size=4))


def cnn_head(g: Graph, pool: Callable[[Graph, str], str], c: int = 4, dims: int = 2, flat: int | None = None):
    x = g.input([1, 3] + [6] * dims)
    h = g.op("Relu", [g.conv(x, 3, c, dims=dims, name="c1")])
    return g.gemm(pool(g, h), flat or c, 3, "fc"), "c1"


case("globalaveragepool_flatten")(lambda g: cnn_head(g, lambda g, h: g.op("Flatten", [g.op("GlobalAveragePool", [h])])))
case("globalmaxpool_flatten")(lambda g: cnn_head(g, lambda g, h: g.op("Flatten", [g.op("GlobalMaxPool", [h])])))
case("reducemean_keepdims0")(lambda g: cnn_head(g, lambda g, h: g.reduce("ReduceMean", h, [2, 3], keepdims=0)))
case("reducemean_keepdims1")(lambda g: cnn_head(g, lambda g, h: g.op("Flatten", [g.reduce("ReduceMean", h, [2, 3])])))
case("reducemax_neg_axes")(lambda g: cnn_head(g, lambda g, h: g.reduce("ReduceMax", h, [-1, -2], keepdims=0)))
case("reducesum_spatial")(lambda g: cnn_head(g, lambda g, h: g.reduce("ReduceSum", h, [2, 3], keepdims=0)))
case("flatten")(lambda g: cnn_head(g, lambda g, h: g.op("Flatten", [h]), flat=4 * 36))
case("flatten_1d")(lambda g: cnn_head(g, lambda g, h: g.op("Flatten", [h]), dims=1, flat=4 * 6))
case("reshape_const")(lambda g: cnn_head(g, lambda g, h: g.op("Reshape", [h, g.ints([1, 4 * 36])]), flat=4 * 36))
case("reshape_minus1", 7)(lambda g: cnn_head(g, lambda g, h: g.op("Reshape", [h, g.ints([1, -1])]), flat=4 * 36))
case("reshape_zero_minus1", 7)(lambda g: cnn_head(g, lambda g, h: g.op("Reshape", [h, g.ints([0, -1])]), flat=4 * 36))


@case("reshape_dynamic_batch")
def _reshape_dyn(g):
    x = g.input(["N", 3, 6, 6])
    h = g.op("Relu", [g.conv(x, 3, 4, name="c1")])
    return g.gemm(g.op("Reshape", [h, g.ints([-1, 4 * 36])]), 4 * 36, 3, "fc"), "c1"


@case("reshape_target_shared")
def _reshape_shared(g):
    x = g.input([1, 3, 6, 6])
    target = g.ints([1, 4 * 36], name="target")
    a = g.op("Reshape", [g.op("Relu", [g.conv(x, 3, 4, name="c1")]), target], name="reshape_a")
    b = g.op("Reshape", [g.op("Relu", [g.conv(x, 3, 4, name="c1b")]), target], name="reshape_b")
    return g.op("Add", [g.gemm(a, 4 * 36, 3, "fc"), g.gemm(b, 4 * 36, 3, "fcb")]), "c1"


@case("transpose_nhwc_matmul")
def _nhwc(g):
    x = g.input([1, 3, 5, 5])
    h = g.op("Relu", [g.conv(x, 3, 4, name="c1")])
    t = g.op("Transpose", [h], perm=[0, 2, 3, 1])
    return g.op("MatMul", [t, g.weight(4, 3)], name="fc"), "c1"


@case("unsqueeze_conv_squeeze")
def _unsq(g):
    def middle(g, h):
        u = g.unsqueeze(g.op("Relu", [h]), [2, 3])
        c = g.op("Relu", [g.conv(u, 5, 6, k=1, name="c_mid")])
        return g.squeeze(c, [2, 3])

    x = g.input([2, 4])
    return g.gemm(middle(g, g.gemm(x, 4, 5, "fc1")), 6, 3, "fc2"), "fc1"


@case("shifted_windows")
def _shifted_windows(g):
    """Swin's shifted windows: the spatial axes rolled by Slice + Concat, then cut into windows by a Reshape that
    splits the rolled axis away from its concatenation's parts (those positions never grow: they are regrouped)."""
    x = g.input([1, 4, 4, 3])
    h = g.op("MatMul", [x, g.weight(3, 6)], name="fc1")
    h = g.op("Concat", [g.slice(h, [3], [4], [1]), g.slice(h, [0], [3], [1])], axis=1)
    h = g.op("Concat", [g.slice(h, [3], [4], [2]), g.slice(h, [0], [3], [2])], axis=2)
    h = g.op("Transpose", [g.op("Reshape", [h, g.ints([1, 2, 2, 2, 2, 6])])], perm=[0, 1, 3, 2, 4, 5])
    h = g.op("Reshape", [h, g.ints([4, 4, 6])])
    return g.op("MatMul", [g.op("Relu", [h]), g.weight(6, 3)], name="fc2"), "fc1"


@case("gather_of_every_position")
def _gather_arange(g):
    """torch's as_strided in the dynamo export: Reshape(x, [-1]) then Gather of the arange shaped [1, C, 1, 1]."""
    x = g.input([1, 3, 4, 4])
    h = g.reduce("ReduceMean", g.op("Relu", [g.conv(x, 3, 4, name="c1")]), [2, 3])
    flat = g.op("Reshape", [h, g.ints([-1])])
    h = g.op("Gather", [flat, g.ints(np.arange(4).reshape(1, 4, 1, 1))], axis=0)
    return g.conv(h, 4, 3, k=1, name="c2"), "c1"


@case("einsum_product", 12)
def _einsum_product(g):
    """Einsum as an elementwise gate (ellipsis, explicit output): both factors' units grow together."""
    x = g.input([2, 4])
    h = g.op("Einsum", [g.op("Relu", [g.gemm(x, 4, 5, "fc1")]), g.gemm(x, 4, 5, "fc1b")], equation="...i,...i->...i")
    return g.gemm(h, 5, 3, "fc2"), "fc1"


case("dropout_identity")(lambda g: mlp(g, lambda g, h: g.op("Relu", [g.op("Identity", [g.op("Dropout", [h])])])))
case("cast_roundtrip")(
    lambda g: mlp(
        g, lambda g, h: g.op("Cast", [g.op("Relu", [g.op("Cast", [h], to=TensorProto.DOUBLE)])], to=TensorProto.FLOAT)
    )
)
for _mode in ("constant", "reflect", "edge"):
    case(f"pad_spatial_{_mode}")(lambda g, m=_mode: cnn(g, lambda g, h: g.pad(h, [0, 0, 1, 2, 0, 0, 2, 1], m)))
case("pad_spatial_value")(lambda g: cnn(g, lambda g, h: g.pad(h, [0, 0, 1, 1, 0, 0, 1, 1], "constant", 0.5)))
case("resize_scales")(lambda g: cnn(g, lambda g, h: g.resize(h, [1.0, 1.0, 2.0, 2.0])))
case("resize_scales_linear", 10)(lambda g: cnn(g, lambda g, h: g.resize(h, [1.0, 1.0, 2.0, 2.0], mode="linear")))
case("lrn_zero_init_only", 7)(lambda g: cnn(g, lambda g, h: g.op("LRN", [g.op("Relu", [h])], size=3)))


# -- the parametrised test over cases and opsets ----------------------------------------------------------
def _params():
    for name, (_, lo, hi) in CASES.items():
        for opset in OPSETS:
            if lo <= opset <= hi:
                yield pytest.param(name, opset, id=f"{name}-op{opset}")


def pytest_generate_tests(metafunc):
    """Parametrise test_growable once the whole module (every case) is loaded."""
    if metafunc.function.__name__ == "test_growable":
        metafunc.parametrize("name,opset", list(_params()))


def test_growable(name, opset):
    fn, _, _ = CASES[name]
    g = Graph(opset, seed=zlib.crc32(name.encode()) % 1000)
    out, layer = fn(g)
    model = g.model(out)
    onnx.checker.check_model(model, full_check=True)
    group = group_of(model, layer)
    if name.startswith("lrn"):
        assert group.constraint == "zero", group.to_dict()
    else:
        assert group.constraint == "free", group.to_dict()
    sizes = ("x2", "+3") if group.granularity == 1 else ("x2", f"+{group.granularity}")
    grow_every_way(model, layer, sizes)


# -- specific structure checks -----------------------------------------------------------------------------
def test_gemm_grown_weights_have_expected_shapes():
    g = Graph()
    out, _ = mlp(g, relu, trans_b=1)
    model = g.model(out)
    res = grow(model, {"fc1": 8})
    assert initializer(res.model, "fc1.weight").shape == (8, 4)  # transB: [N, K]
    assert initializer(res.model, "fc1.bias").shape == (8,)
    w2 = initializer(res.model, "fc2.weight")
    assert w2.shape == (8, 3)
    assert np.all(w2[5:] == 0)
    np.testing.assert_array_equal(w2[:5], initializer(model, "fc2.weight"))


@pytest.mark.parametrize("opset", [7, 11, LATEST])
def test_depthwise_group_attribute_grows(opset):
    g = Graph(opset)
    out, layer = _depthwise(g)
    model = g.model(out)
    res = grow(model, {layer: "x2"})
    assert attribute(node_by_name(res.model, "dw"), "group") == 8
    assert initializer(res.model, "dw.weight").shape == (8, 1, 3, 3)
    res = grow(model, {layer: "+3"}, init="net2net")
    assert attribute(node_by_name(res.model, "dw"), "group") == 7


def test_depthwise_multiplier_grows_outputs():
    g = Graph()
    out, layer = _depthwise_mult(g)
    model = g.model(out)
    res = grow(model, {layer: "+2"})
    assert attribute(node_by_name(res.model, "dw"), "group") == 6
    assert initializer(res.model, "dw.weight").shape == (12, 1, 3, 3)
    assert initializer(res.model, "c2.weight").shape == (3, 12, 3, 3)


def test_grouped_conv_grows_in_whole_groups():
    g = Graph()
    out, layer = _grouped(g)
    model = g.model(out)
    group = group_of(model, layer)
    assert group.granularity == 4
    with pytest.raises(OnnxGrowError, match="multiple"):
        widen_model(model, {layer: "+3"}, check=False)
    res = grow(model, {layer: "+4"})
    assert attribute(node_by_name(res.model, "gc"), "group") == 3
    res = grow(model, {layer: "x2"}, init="net2net")
    assert attribute(node_by_name(res.model, "gc"), "group") == 4


def test_grouped_conv_unequal_widths_grow_inside_each_group():
    """group=2 with 4 inputs and 3 outputs per group: the group count stays; c1 and gc grow by whole
    multiples of 2, their new units at the end of each group, gc's (and c2's) columns for them zero."""
    g = Graph()
    out, _ = _grouped_unequal(g)
    model = g.model(out)
    c1, gc = group_of(model, "c1"), group_of(model, "gc")
    assert (c1.size, c1.granularity, c1.blocks, gc.size, gc.granularity) == (8, 2, 2, 6, 2)
    with pytest.raises(OnnxGrowError, match="multiples of 2"):
        widen_model(model, {"gc": "+1"}, check=False)
    res = grow(model, {"c1": "+2", "gc": "+4"})
    assert attribute(node_by_name(res.model, "gc"), "group") == 2
    w1, wg, w2 = (initializer(res.model, f"{n}.weight") for n in ("c1", "gc", "c2"))
    assert w1.shape == (10, 3, 3, 3) and wg.shape == (10, 5, 3, 3) and w2.shape == (3, 10, 3, 3)
    old = [initializer(model, f"{n}.weight") for n in ("c1", "gc", "c2")]
    np.testing.assert_array_equal(w1[[0, 1, 2, 3, 5, 6, 7, 8]], old[0])
    np.testing.assert_array_equal(wg[[0, 1, 2, 5, 6, 7], :4], old[1])
    assert np.all(wg[[0, 1, 2, 5, 6, 7], 4] == 0)
    np.testing.assert_array_equal(w2[:, [0, 1, 2, 5, 6, 7]], old[2])
    assert np.all(w2[:, [3, 4, 8, 9]] == 0)


def test_equal_width_groups_after_a_shuffle_stay_whole():
    """An equal-width grouped Conv (3 groups of 4) reading 12 channels shuffled into [4 units x 3 copies]: the
    4-unit factor adds whole groups at the end, the 3-copy factor inside every group must not grow."""
    g = Graph()
    x = g.input([1, 3, 4, 4])
    h = g.op("Relu", [g.conv(x, 3, 12, name="stem")])
    h = g.op("Transpose", [g.op("Reshape", [h, g.ints([1, 3, 4, 4, 4])])], perm=[0, 2, 1, 3, 4])
    h = g.op("Relu", [g.conv(g.op("Reshape", [h, g.ints([1, 12, 4, 4])]), 12, 12, name="gc", group=3)])
    model = g.model(g.conv(h, 12, 2, name="head"))
    groups = [gr for gr in inspect_model(model).groups if "stem" in gr.producers]
    assert [(gr.size, gr.constraint, gr.granularity) for gr in groups] == [(3, "blocked", 1), (4, "free", 4)]
    assert "gc" in groups[0].reason and "groups of 4" in groups[0].reason
    res = grow(model, {groups[1].id: "+4"}, init="net2net")
    assert attribute(node_by_name(res.model, "gc"), "group") == 6


def test_concat_inserts_consumer_columns_at_the_offset():
    g = Graph()
    out, layer = _concat(g)
    model = g.model(out)
    res = grow(model, {"fc1": "+3"})
    old, new = initializer(model, "fc2.weight"), initializer(res.model, "fc2.weight")  # [K, N]: rows read units
    assert new.shape == (11, 3)
    np.testing.assert_array_equal(new[:5], old[:5])
    assert np.all(new[5:8] == 0)
    np.testing.assert_array_equal(new[8:], old[5:])
    res = grow(model, {"fc1b": "+2"}, init="net2net")  # the second input: columns at the end
    assert initializer(res.model, "fc2.weight").shape == (10, 3)


def test_concat_then_split_updates_split_sizes():
    g = Graph(LATEST)
    out, _ = _concat_split(g)
    model = g.model(out)
    res = grow(model, {"fc1": "+3"})
    split = node_by_name(res.model, next(n.name for n in res.model.graph.node if n.op_type == "Split"))
    assert initializer(res.model, split.input[1]).tolist() == [8, 3]


def test_split_of_one_group_into_equal_chunks_grows_inside_each():
    """Equal chunks of one layer: its units repeat in 2 blocks; +2 adds one to each, the sizes follow."""
    g = Graph()
    x = g.input([2, 4])
    p, q = g.split(g.gemm(x, 4, 6, "fc1"), [3, 3], axis=1)
    model = g.model(g.op("Add", [g.gemm(p, 3, 3, "fa"), g.gemm(q, 3, 3, "fb")]))
    group = group_of(model, "fc1")
    assert (group.size, group.blocks, group.granularity, group.constraint) == (6, 2, 2, "free")
    res = grow(model, {"fc1": "+2"})
    split = next(n for n in res.model.graph.node if n.op_type == "Split")
    assert (attribute(split, "split") or initializer(res.model, split.input[1]).tolist()) == [4, 4]


def test_split_of_one_group_into_unequal_parts_is_blocked():
    g = Graph()
    x = g.input([2, 4])
    p, q = g.split(g.gemm(x, 4, 6, "fc1"), [2, 4], axis=1)
    model = g.model(g.op("Add", [g.gemm(p, 2, 3, "fa"), g.gemm(q, 4, 3, "fb")]))
    group = group_of(model, "fc1")
    assert group.constraint == "blocked" and "Split" in group.reason


def test_flatten_maps_one_channel_to_hw_columns():
    g = Graph()
    out, layer = cnn_head(g, lambda g, h: g.op("Flatten", [h]), flat=4 * 36)
    model = g.model(out)
    res = grow(model, {layer: "+1"})
    old, new = initializer(model, "fc.weight"), initializer(res.model, "fc.weight")
    assert new.shape == (5 * 36, 3)
    np.testing.assert_array_equal(new[: 4 * 36], old)
    assert np.all(new[4 * 36 :] == 0)


@pytest.mark.parametrize("opset", [7, 13, LATEST])
def test_reshape_constant_target_is_updated(opset):
    g = Graph(opset)
    out, layer = CASES["reshape_const"][0](g)
    model = g.model(out)
    res = grow(model, {layer: "x2"})
    reshape = next(n for n in res.model.graph.node if n.op_type == "Reshape")
    assert initializer(res.model, reshape.input[1]).tolist() == [1, 8 * 36]
    assert initializer(res.model, "fc.weight").shape == (8 * 36, 3)


def test_reshape_target_shared_by_two_reshapes():
    g = Graph()
    out, layer = _reshape_shared(g)
    model = g.model(out)
    res = grow(model, {layer: "+2"})
    a, b = node_by_name(res.model, "reshape_a"), node_by_name(res.model, "reshape_b")
    assert initializer(res.model, a.input[1]).tolist() == [1, 6 * 36]
    assert initializer(res.model, b.input[1]).tolist() == [1, 4 * 36]
    res = grow(model, {"c1": "+2", "c1b": "+1"})
    a, b = node_by_name(res.model, "reshape_a"), node_by_name(res.model, "reshape_b")
    assert initializer(res.model, a.input[1]).tolist() == [1, 6 * 36]
    assert initializer(res.model, b.input[1]).tolist() == [1, 5 * 36]


def test_reshape_splitting_a_group_makes_a_group_of_each_part():
    """[2, 6] → [2, 2, 3]: fc1's 6 units are 2 blocks of 3; each factor grows on its own, exactly."""
    g = Graph()
    x = g.input([2, 4])
    h = g.op("Reshape", [g.gemm(x, 4, 6, "fc1"), g.ints([2, 2, 3])])
    model = g.model(g.op("MatMul", [h, g.weight(3, 3)], name="fc2"))
    groups = [gr for gr in inspect_model(model).groups if "fc1" in gr.producers]
    assert [(gr.size, gr.constraint) for gr in groups] == [(2, "blocked"), (3, "free")]
    assert "graph output" in groups[0].reason
    res = grow(model, {groups[1].id: "+2"})
    assert initializer(res.model, "fc1.weight").size == 4 * 2 * 5
    reshape = next(n for n in res.model.graph.node if n.op_type == "Reshape")
    assert initializer(res.model, reshape.input[1]).tolist() == [2, 2, 5]


# -- mixers: constraints ------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [7, 13, LATEST])
def test_lrn_needs_zero_init(opset):
    g = Graph(opset)
    out, layer = CASES["lrn_zero_init_only"][0](g)
    model = g.model(out)
    group = group_of(model, layer)
    assert group.constraint == "zero" and "LRN" in group.reason
    for init in ("noise", "net2net"):
        with pytest.raises(OnnxGrowError, match="zero"):
            widen_model(model, {layer: "x2"}, init=init, check=False)
    grow(model, {layer: "x2"}, init="zero")
    res = grow(model, all="x2", init="noise")  # --all falls back to a strategy the group allows
    assert any(p.init == "zero" for p in res.plans)


def test_lrn_after_sigmoid_is_blocked():
    g = Graph()
    out, layer = cnn(g, lambda g, h: g.op("LRN", [g.op("Sigmoid", [h])], size=3))
    group = group_of(g.model(out), layer)
    assert group.constraint == "blocked" and "Sigmoid" in group.reason


@pytest.mark.parametrize("opset", [17, 18, LATEST])
def test_layernorm_needs_replication(opset):
    g = Graph(opset)

    def middle(g, h):
        return g.op(
            "LayerNormalization",
            [h, g.const(g.rng.uniform(0.5, 1.5, 5)), g.const(g.rng.standard_normal(5))],
            axis=-1,
            epsilon=1e-5,
        )

    out, layer = mlp(g, middle)
    model = g.model(out)
    group = group_of(model, layer)
    assert group.constraint == "replicate" and "LayerNormalization" in group.reason
    with pytest.raises(OnnxGrowError, match="net2net"):
        widen_model(model, {layer: "x2"}, init="noise", check=False)
    with pytest.raises(OnnxGrowError, match="multiple"):
        widen_model(model, {layer: "+3"}, init="net2net", check=False)
    grow(model, {layer: "x2"}, init="net2net")
    grow(model, {layer: "x3"}, init="net2net")
    grow(model, {layer: 15}, init="net2net")


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [9, 13, LATEST])
def test_softmax_over_grown_axis_is_blocked(op, opset):
    g = Graph(opset)
    out, layer = mlp(g, lambda g, h: g.op(op, [h], axis=1))
    model = g.model(out)
    group = group_of(model, layer)
    assert group.constraint == "blocked" and op in group.reason
    with pytest.raises(OnnxGrowError, match=op):
        widen_model(model, {layer: "x2"}, check=False)


@pytest.mark.parametrize("opset", [13, LATEST])
def test_softmax_over_other_axis_is_free(opset):
    g = Graph(opset)
    x = g.input([1, 3, 5, 5])
    h = g.conv(x, 3, 4, name="c1")
    h = g.op("Softmax", [h], axis=3)
    model = g.model(g.conv(h, 4, 3, name="c2"))
    grow_every_way(model, "c1")


def test_reducemean_over_grown_axis_needs_replication():
    g = Graph(13)
    x = g.input([2, 4])
    h = g.gemm(x, 4, 5, "fc1")
    m = g.reduce("ReduceMean", h, [1], keepdims=1)
    model = g.model(g.gemm(g.op("Sub", [h, m]), 5, 3, "fc2"))
    group = group_of(model, "fc1")
    assert group.constraint == "replicate" and "ReduceMean" in group.reason
    grow(model, {"fc1": "x2"}, init="net2net")


def test_graph_output_is_blocked():
    g = Graph()
    x = g.input([2, 4])
    h = g.gemm(x, 4, 5, "fc1")
    model = g.model(h)
    group = group_of(model, "fc1")
    assert group.constraint == "blocked" and "graph output" in group.reason
    with pytest.raises(OnnxGrowError, match="graph output"):
        widen_model(model, {"fc1": "x2"}, check=False)


def test_intermediate_graph_output_is_blocked():
    g = Graph()
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 5, "fc1")])
    model = g.model(g.gemm(h, 5, 3, "fc2"), h)
    assert group_of(model, "fc1").constraint == "blocked"


@pytest.mark.parametrize("op,domain", [("CumSum", ""), ("MyActivation", "com.example")])
def test_unknown_op_is_blocked(op, domain):
    g = Graph(13)
    x = g.input([2, 4])
    h = g.gemm(x, 4, 5, "fc1")
    if op == "CumSum":
        h = g.op("CumSum", [h, g.ints(1)])
    else:
        h = g.op(op, [h], domain=domain)
    model = g.model(g.gemm(h, 5, 3, "fc2"))
    if not domain:
        onnx.checker.check_model(model)
    group = inspect_model(model).groups[0]
    assert group.constraint == "blocked" and op in group.reason, group.to_dict()
    with pytest.raises(OnnxGrowError, match=op):
        widen_model(model, {"fc1": "x2"}, check=False)


def test_resize_of_channels_is_blocked():
    g = Graph(13)
    out, layer = cnn(g, lambda g, h: g.resize(h, [1.0, 2.0, 1.0, 1.0]), after=8)
    model = g.model(out)
    assert group_of(model, layer).constraint == "blocked"


@pytest.mark.parametrize("opset", [11, 13, LATEST])
def test_resize_with_sizes(opset):
    """Resize given output sizes: the channel size in `sizes` must follow the growth."""
    g = Graph(opset)
    out, layer = cnn(g, lambda g, h: g.resize(h, sizes=[1, 4, 12, 12]))
    model = g.model(out)
    res = grow_every_way(model, layer)[0]
    node = next(n for n in res.model.graph.node if n.op_type == "Resize")
    assert initializer(res.model, node.input[3]).tolist() == [1, 8, 12, 12]


def test_resize_with_sizes_of_spatial_axes_only():
    g = Graph(LATEST)
    out, layer = cnn(g, lambda g, h: g.op("Resize", [h, "", "", g.ints([9, 9])], axes=[2, 3], mode="linear"))
    grow_every_way(g.model(out), layer)


def test_resize_with_computed_sizes_is_blocked():
    """Sizes computed from a dynamic shape (batch) stay computed: the channel entry cannot be followed."""
    g = Graph(LATEST)
    x = g.input(["n", 3, 6, 6])
    h = g.conv(x, 3, 4, name="c1")
    sizes = g.op("Mul", [g.op("Shape", [h]), g.ints([1, 1, 2, 2])])
    model = g.model(g.conv(g.op("Resize", [h, "", "", sizes]), 4, 3, name="c2"))
    group = group_of(model, "c1")
    assert group.constraint == "blocked" and "Resize" in group.reason


def test_pad_with_computed_axes_is_a_boundary():
    """Pad (opset 18) whose axes are computed: the padded layer cannot grow, and analysis says why (it raised a
    TypeError before)."""
    g = Graph(18)
    x = g.input([1, 3, 6, 6])
    h = g.conv(x, 3, 4, name="c1")
    axes = g.input([2], name="axes", dtype=np.int64)
    padded = g.op("Pad", [h, g.ints([1, 1, 1, 1]), g.const(np.array(0.0, np.float32)), axes])
    model = g.model(g.conv(padded, 4, 3, name="c2"))
    # the padded shape, as an exporter that knows it declares it (inference cannot work it out)
    model.graph.value_info.append(onnx.helper.make_tensor_value_info(padded, TensorProto.FLOAT, [1, 4, 8, 8]))
    group = group_of(model, "c1")
    assert group.constraint == "blocked" and "axes are computed" in group.reason


def test_static_shape_slice_of_opset_9_in_a_reshape_target():
    """A Reshape target computed as Concat(Slice(Shape(h)) ...) with the attribute Slice of opset 9: analysis
    follows or blocks it, it does not fail (it raised a TypeError reading the Slice's missing inputs)."""
    g = Graph(9)
    x = g.input(["n", 4])
    h = g.gemm(x, 4, 6, name="fc1")
    lead = g.slice(g.op("Shape", [h]), [0], [1], [0])
    target = g.op("Concat", [lead, g.ints([6])], axis=0)
    reshaped = g.op("Reshape", [g.op("Relu", [h]), target])
    model = g.model(g.gemm(reshaped, 6, 3, name="fc2"))
    model.graph.value_info.append(onnx.helper.make_tensor_value_info(reshaped, TensorProto.FLOAT, ["n", 6]))
    inspect_model(model)  # the group of fc1 may or may not grow; analysing must not fail


def test_resize_with_sizes_from_a_static_shape_grows():
    """Shape of a static tensor folds to a constant at load, so the channel entry of `sizes` is rewritten."""
    g = Graph(LATEST)

    def middle(g, h):
        sizes = g.op("Mul", [g.op("Shape", [h]), g.ints([1, 1, 2, 2])])
        return g.op("Resize", [h, "", "", sizes])

    out, layer = cnn(g, middle)
    grow(g.model(out), {layer: "+3"})


@pytest.mark.parametrize("opset", [9, 13, LATEST])
def test_slice_channels_to_exact_end(opset):
    """Slice with ends = C on the channel axis: after growth `ends` must follow (attribute or input)."""
    g = Graph(opset)
    out, layer = cnn(g, lambda g, h: g.slice(h, [0, 1], [4, 5], [1, 2]))
    model = g.model(out)
    res = grow_every_way(model, layer)[0]
    node = next(n for n in res.model.graph.node if n.op_type == "Slice")
    ends = attribute(node, "ends") if opset < 10 else initializer(res.model, node.input[2]).tolist()
    assert ends == [8, 5]


@pytest.mark.parametrize("starts,ends,steps", [([-1], [-(2**40)], [-1]), ([-4], [4], [1]), ([0], [4], [2])])
def test_slice_reversing_or_offset_channels_is_blocked(starts, ends, steps):
    g = Graph(13)

    def middle(g, h):
        return g.op("Slice", [h, g.ints(starts), g.ints(ends), g.ints([1]), g.ints(steps)])

    out, layer = cnn(g, middle, after=2 if steps == [2] else 4)
    model = g.model(out)
    group = group_of(model, layer)
    assert group.constraint == "blocked" and "Slice" in group.reason


def test_split_into_equal_parts_grows_them_together():
    g = Graph(LATEST)
    x = g.input([2, 4])
    a, b = g.gemm(x, 4, 5, "fc1"), g.gemm(x, 4, 5, "fc1b")
    p, q = g.op("Split", [g.op("Concat", [a, b], axis=1)], n_out=2, axis=1, num_outputs=2)
    model = g.model(g.op("Add", [g.gemm(g.op("Relu", [p]), 5, 3, "fc2"), g.gemm(g.op("Relu", [q]), 5, 3, "fc2b")]))
    group = group_of(model, "fc1")
    assert group.constraint == "free" and "fc1b" in group.producers
    grow_every_way(model, "fc1")


def test_slice_channels_cut_is_blocked():
    g = Graph(13)
    out, layer = cnn(g, lambda g, h: g.slice(h, [1], [4], [1]), after=3)
    group = group_of(g.model(out), layer)
    assert group.constraint == "blocked" and "Slice" in group.reason


def _grown_or_refused(model: onnx.ModelProto, layer: str) -> None:
    group = group_of(model, layer)
    if group.constraint == "blocked":
        with pytest.raises(OnnxGrowError):
            widen_model(model, {layer: "x2"}, check=False)
        return
    for init in ("noise", "net2net"):
        grow(model, {layer: "x2"}, init=init)


# -- dtypes ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("arch", ["matmul", "gemm", "conv"])
def test_dtypes_keep_their_type(dtype, arch):
    g = Graph(LATEST, dtype=dtype)
    if arch == "matmul":
        out, layer = matmul_mlp(g, [2, 3, 4])
    elif arch == "gemm":
        out, layer = mlp(g, relu)
    else:
        out, layer = cnn(g, relu)
    model = g.model(out)
    if runnable(model):  # onnxruntime's CPU provider has no float64 Conv: onnx's reference evaluator checks it
        for init in ("noise", "net2net"):
            res = widen_model(model, {layer: "x2"}, init=init, check=False)
            assert reference_error(model, res.model) <= 1e-12
            assert {t.data_type for t in res.model.graph.initializer} == {t.data_type for t in model.graph.initializer}
        return
    for init in ("noise", "net2net"):
        # float16 keeps ~3 decimal digits: a different summation order alone moves the output by ~1e-4
        res = grow(model, {layer: "x2"}, init=init, tol=2e-3 if dtype == np.float16 else 1e-5)
        for t in res.model.graph.initializer:
            orig = next(o for o in model.graph.initializer if o.name == t.name)
            assert t.data_type == orig.data_type, t.name


def test_bfloat16_weights_keep_their_type():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g = Graph(LATEST, dtype=ml_dtypes.bfloat16)
    x = g.input([2, 4])
    h = g.op("Relu", [g.op("MatMul", [x, g.weight(4, 5, name="w1")], name="fc1")])
    model = g.model(g.op("MatMul", [h, g.weight(5, 3, name="w2")], name="fc2"))
    assert model.graph.initializer[0].data_type == TensorProto.BFLOAT16
    if runnable(model) is None:
        grow(model, {"fc1": "x2"})
    res = widen_model(model, {"fc1": "x2"}, check=False)
    for name, shape in (("w1", (4, 10)), ("w2", (10, 3))):
        t = next(t for t in res.model.graph.initializer if t.name == name)
        assert t.data_type == TensorProto.BFLOAT16
        new, old = initializer(res.model, name), initializer(model, name)
        assert new.shape == shape
        if name == "w1":
            np.testing.assert_array_equal(new[:, :5].astype(np.float32), old.astype(np.float32))
        else:
            np.testing.assert_array_equal(new[:5].astype(np.float32), old.astype(np.float32))
            assert np.all(new[5:].astype(np.float32) == 0)


# -- tied weights, names, value_info ------------------------------------------------------------------------
def _tied(op: str = "MatMul"):
    g = Graph()
    x = g.input([2, 4])
    w = g.weight(4, 4, name="shared")
    if op == "MatMul":
        a = g.op("Relu", [g.op("MatMul", [x, w], name="fa")])
        b = g.op("Tanh", [g.op("MatMul", [x, w], name="fb")])
    else:
        a = g.op("Relu", [g.op("Gemm", [x, w, g.const(np.zeros(4))], name="fa", transB=1)])
        b = g.op("Tanh", [g.op("Gemm", [x, w, g.const(np.ones(4))], name="fb", transB=1)])
    return g.model(g.op("Add", [g.gemm(a, 4, 3, "ha"), g.gemm(b, 4, 3, "hb")]))


def _dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in model.graph.initializer}


def _readers_of(model: onnx.ModelProto, name: str) -> list[str]:
    return [n.name for n in model.graph.node if name in n.input]


def test_tied_consumer_weight_grown_differently_is_untied():
    """Readers of one weight that grow it differently each get a copy: exact, and said in the result."""
    g = Graph()
    x = g.input([2, 4])
    w = g.weight(5, 3, name="shared_out")
    a = g.op("Relu", [g.gemm(x, 4, 5, "fa")])
    b = g.op("Relu", [g.gemm(x, 4, 5, "fb")])
    model = g.model(g.op("Add", [g.op("MatMul", [a, w], name="ha"), g.op("MatMul", [b, w], name="hb")]))
    res = grow(model, {"fa": "x2"})
    dims = _dims(res.model)
    assert dims["shared_out"] == [10, 3] and dims["shared_out/hb"] == [5, 3]
    assert _readers_of(res.model, "shared_out") == ["ha"] and _readers_of(res.model, "shared_out/hb") == ["hb"]
    assert [(u.weight, u.copies) for u in res.untied] == [
        ("shared_out", {"shared_out": ["ha"], "shared_out/hb": ["hb"]})
    ]
    with pytest.raises(OnnxGrowError, match="shared_out.*keep-ties"):
        widen_model(model, {"fa": "x2"}, keep_ties=True, check=False)
    same = grow(model, {"fa": "x2", "fb": "x2"}, init="noise")  # the same growth: still one tensor
    assert not same.untied and _dims(same.model)["shared_out"] == [10, 3]
    assert _readers_of(same.model, "shared_out") == ["ha", "hb"]
    # net2net draws its copies per group, so the two readers grow the weight differently: untied
    drawn = grow(model, {"fa": "x2", "fb": "x2"}, init="net2net")
    assert [u.weight for u in drawn.untied] == ["shared_out"]


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_tied_weight_grown_differently_is_untied(op):
    model = _tied(op)
    for layers in ({"fa": "x2"}, {"fa": "x2", "fb": "+3"}):
        res = grow(model, layers)
        assert [u.weight for u in res.untied] == ["shared"]
        assert len([t for t in res.model.graph.initializer if t.name.startswith("shared")]) == 2
        with pytest.raises(OnnxGrowError, match="shared") as info:
            widen_model(model, layers, check=False, keep_ties=True)
        assert not isinstance(info.value, VerificationFailed)


def test_tied_weight_grown_the_same_way():
    model = _tied()
    res = grow(model, {"fa": "x2", "fb": "x2"}, init="zero")
    assert initializer(res.model, "shared").shape == (4, 8) and not res.untied


def test_shared_vector_read_as_scale_and_as_bias_is_untied():
    """One tensor of ones used as a Mul scale and as an Add bias of the same units: new units need 1 in one
    place and 0 in the other, so even inside one group the two readers grow it differently."""
    g = Graph()
    x = g.input([2, 4])
    ones = g.const(np.ones(6), "ones")
    h = g.op("Mul", [g.gemm(x, 4, 6, "fc"), ones], name="scale")
    h = g.op("Relu", [g.op("Add", [h, ones], name="shift")])
    model = g.model(g.gemm(h, 6, 3, "head"))
    res = grow(model, {"fc": "x2"}, init="noise")
    assert [u.weight for u in res.untied] == ["ones"]
    assert sorted(_dims(res.model)[n] for n in ("ones", "ones/shift")) == [[12], [12]]


def test_unnamed_nodes_get_names_widen_accepts():
    g = Graph(names=False)
    out, _ = mlp(g, relu)
    model = g.model(out)
    assert not any(n.name for n in model.graph.node)
    producers = [p for grp in inspect_model(model).groups for p in grp.producers]
    assert producers and all(producers)
    res = grow(model, {producers[0]: "x2"})
    assert all(n.name for n in res.model.graph.node)
    grow(model, all="x2")


def test_value_info_is_refreshed(tmp_path):
    g = Graph()
    out, layer = cnn_head(g, lambda g, h: g.op("Reshape", [h, g.ints([1, 4 * 36])]), flat=4 * 36)
    model = onnx.shape_inference.infer_shapes(g.model(out))
    assert len(model.graph.value_info) >= 3
    res = grow(model, {layer: "x2"})
    path = tmp_path / "grown.onnx"
    onnx.save(res.model, path)
    onnx.checker.check_model(str(path), full_check=True)
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in res.model.graph.value_info}
    conv_out = node_by_name(res.model, "c1").output[0]
    assert dims[conv_out][1] == 8


def test_widen_with_own_verification():
    g = Graph()
    out, layer = cnn(g, relu)
    model = g.model(out)
    res = widen_model(model, {layer: "x2"})
    assert res.report is not None and res.report.passed


# -- more layouts -------------------------------------------------------------------------------------------
@case("transpose_nhwc_flatten_gemm")
def _nhwc_flatten(g):
    # channels become the innermost factor of the flattened axis: new columns interleave
    return cnn_head(g, lambda g, h: g.op("Flatten", [g.op("Transpose", [h], perm=[0, 2, 3, 1])]), flat=36 * 4)


@case("reshape_merge_channels_height_conv1d")
def _merge_ch(g):
    x = g.input([1, 3, 6, 6])
    h = g.op("Relu", [g.conv(x, 3, 4, name="c1")])
    m = g.op("Reshape", [h, g.ints([1, 4 * 6, 6])])  # [N, C*H, W]
    return g.conv(m, 24, 3, dims=1, name="c2"), "c1"


@case("gather_embedding")
def _embedding(g):
    ids = g.input([2, 5], name="ids", dtype=np.int64)
    e = g.op("Gather", [g.weight(3, 6, name="table"), ids], name="embed")
    return g.op("MatMul", [g.op("Tanh", [e]), g.weight(6, 4)], name="fc"), "embed"


@case("pad_channels_with_zeros", 11)
def _pad_channels(g):
    return cnn(g, lambda g, h: g.pad(h, [0, 1, 0, 0, 0, 2, 0, 0]), after=7)


@case("branch_two_consumers")
def _branch(g):
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 5, "fc1")])
    return g.op("Add", [g.gemm(h, 5, 3, "fc2"), g.gemm(h, 5, 3, "fc2b")]), "fc1"


def test_reducesum_over_grown_axis_needs_zero():
    g = Graph(13)
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 5, "fc1")])
    s = g.reduce("ReduceSum", h, [1], keepdims=1)
    model = g.model(g.gemm(g.op("Add", [h, s]), 5, 3, "fc2"))
    group = group_of(model, "fc1")
    assert group.constraint == "zero" and "ReduceSum" in group.reason
    grow(model, {"fc1": "x2"}, init="zero")


@pytest.mark.parametrize("op", ["Sqrt", "Pow"])
def test_sqrt_of_a_positive_activation(op):
    """Weights that keep an activation positive make Sqrt safe in the original; noise units must not be NaN."""
    g = Graph(13)
    x = g.input([2, 4])
    h = g.op("Sigmoid", [x])
    h = g.op("Gemm", [h, g.weight(4, 5, positive=True), g.const(np.full(5, 0.1))], name="fc1")
    h = g.op("Sqrt", [h]) if op == "Sqrt" else g.op("Pow", [h, g.const(np.array(0.5, np.float32))])
    model = g.model(g.gemm(h, 5, 3, "fc2"))
    group = group_of(model, "fc1")
    assert group.constraint == "zero" and op in group.reason
    grow_every_way(model, "fc1")


@pytest.mark.parametrize("exponent", [0.5, -1.0, -0.5, 2.0, 3.0])
@pytest.mark.parametrize("base", ["relu", "relu_plus", "tanh_plus"])
def test_pow_of_an_activation(exponent, base):
    g = Graph(13)
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 5, "fc1")])
    if base == "relu_plus":
        h = g.op("Add", [h, g.const(np.array(0.5))])  # known positive
    elif base == "tanh_plus":
        h = g.op("Add", [g.op("Tanh", [h]), g.const(np.array(2.0))])  # positive, but not known to be
    elif exponent < 0:
        return  # the original is inf already
    model = g.model(g.gemm(g.op("Pow", [h, g.const(np.array(exponent))]), 5, 3, "fc2"))
    group = group_of(model, "fc1")
    if base == "tanh_plus" and exponent < 0:
        assert group.constraint == "blocked" and "Pow" in group.reason
    elif base == "tanh_plus" and exponent % 1:
        assert group.constraint == "blocked" and "Pow" in group.reason  # zero needed, but +2 moves 0
    else:
        assert group.constraint == "free", group.reason
        grow_every_way(model, "fc1")


def test_lrn_over_a_concatenation_grows_only_its_last_part():
    """LRN's window slides over channels: units inserted before the end of a Concat would change it."""
    g = Graph(13)
    x = g.input([1, 3, 5, 5])
    h = g.op("Concat", [g.op("Relu", [g.conv(x, 3, 2, name="c0")]), g.op("Relu", [g.conv(x, 3, 3, name="c1")])], axis=1)
    h = g.op("LRN", [h], size=3, alpha=0.5)  # a large alpha makes a wrong window visible
    model = g.model(g.conv(h, 5, 3, name="c2"))
    first, last = group_of(model, "c0"), group_of(model, "c1")
    assert first.constraint == "blocked" and "LRN" in first.reason
    assert last.constraint == "zero"
    grow(model, {"c1": "x2"}, init="zero")


@pytest.mark.parametrize("op", ["LayerNormalization", "ReduceMean"])
def test_mean_over_a_concatenation_needs_the_same_factor(op):
    g = Graph(LATEST)
    x = g.input([2, 4])
    h = g.op("Concat", [g.gemm(x, 4, 3, "fa"), g.gemm(x, 4, 2, "fb")], axis=1)
    if op == "LayerNormalization":
        h = g.op(op, [h, g.const(g.rng.uniform(0.5, 1.5, 5)), g.const(np.zeros(5))], axis=-1)
    else:
        h = g.op("Sub", [h, g.reduce(op, h, [1])])
    model = g.model(g.gemm(h, 5, 3, "fc2"))
    with pytest.raises(OnnxGrowError, match="same whole factor"):
        widen_model(model, {"fa": "x2"}, init="net2net", check=False)
    with pytest.raises(OnnxGrowError, match="same whole factor"):
        widen_model(model, {"fa": "x2", "fb": "x3"}, init="net2net", check=False)
    grow(model, {"fa": "x2", "fb": "x2"}, init="net2net")
    grow(model, all="x3", init="net2net")


def test_all_skips_a_concatenation_a_mean_reads_unevenly():
    g = Graph(LATEST)
    x = g.input([2, 4])
    h = g.op("Concat", [g.gemm(x, 4, 2, "fa"), g.gemm(x, 4, 4, "fb")], axis=1)
    h = g.op("LayerNormalization", [h, g.const(g.rng.uniform(0.5, 1.5, 6)), g.const(np.zeros(6))], axis=-1)
    model = g.model(g.gemm(g.op("Relu", [g.gemm(h, 6, 3, "fc2")]), 3, 2, "fc3"))
    res = grow(model, all="+2", init="net2net")  # fa: 2 -> 4 (x2) and fb: 4 -> 6 (x1.5, not whole): both skipped
    assert [p.group.producers for p in res.plans] == [["fc2"]]
    assert any("different factors" in why or "multiple" in why for _, why in res.skipped)


@case("concat_same_tensor_twice")
def _concat_twice(g):
    x = g.input([2, 4])
    h = g.op("Relu", [g.gemm(x, 4, 5, "fc1")])
    return g.gemm(g.op("Concat", [h, h], axis=1), 10, 3, "fc2"), "fc1"


@case("matmul_weight_with_batch_1")
def _matmul_w3d(g):
    x = g.input([2, 3, 4])
    h = g.op("Relu", [g.op("MatMul", [x, g.weight(1, 4, 5, fan_in=4)], name="fc1")])
    return g.op("MatMul", [h, g.weight(1, 5, 3, fan_in=5)], name="fc2"), "fc1"


def test_weights_listed_as_graph_inputs():
    """IR 3 style: every initializer is also a graph input; the grown model must stay consistent."""
    g = Graph(9)
    out, layer = mlp(g, relu)
    model = g.model(out)
    model.ir_version = 3
    for t in model.graph.initializer:
        model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    res = grow(model, {layer: "x2"})
    declared = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in res.model.graph.input}
    for t in res.model.graph.initializer:
        if t.name in declared:
            assert declared[t.name] == list(t.dims), t.name


@pytest.mark.parametrize("opset", [9, LATEST])
@pytest.mark.parametrize("lo,hi", [(0.1, 6.0), (-1.0, -0.2), (0.0, 6.0), (None, 1.0)])
def test_clip_before_lrn(opset, lo, hi):
    """Clip keeps 0 only when 0 lies within [min, max]; otherwise zero-initialised units move before LRN."""
    g = Graph(opset)
    out, layer = cnn(g, lambda g, h: g.op("LRN", [g.clip(h, lo, hi)], size=3, alpha=0.5))
    model = g.model(out)
    group = group_of(model, layer)
    keeps_zero = (lo is None or lo <= 0) and (hi is None or hi >= 0)
    if keeps_zero:
        assert group.constraint == "zero"
        grow(model, {layer: "x2"}, init="zero")
    else:
        assert group.constraint == "blocked" and "Clip" in group.reason


@case("conv_strides_dilations_autopad")
def _conv_fancy(g):
    x = g.input([1, 3, 9, 9])
    w = g.weight(4, 3, 3, 3)
    h = g.op(
        "Conv",
        [x, w, g.const(g.rng.standard_normal(4))],
        name="c1",
        kernel_shape=[3, 3],
        strides=[2, 2],
        dilations=[1, 1],
        auto_pad="SAME_UPPER",
    )
    h = g.op("Relu", [h])
    w2 = g.weight(3, 4, 3, 3)
    return g.op("Conv", [h, w2], name="c2", kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]), "c1"


# -- attention and index patterns of vision transformers (Swin, MaxViT, ConvNeXt dynamo) ---------------------
def _attention(g: Graph, x: str, hidden: int, heads: int, packed: bool, einsum: bool) -> str:
    """Multi-head self-attention over x [B, N, hidden]: q, k, v from one packed projection picked by Gather of a
    scalar index (Swin) or from three projections, scores by MatMul or Einsum (MaxViT), heads merged by proj."""
    b, n = 2, 5
    d = hidden // heads
    if packed:
        qkv = g.op(
            "Add",
            [
                g.op("MatMul", [x, g.weight(hidden, 3 * hidden)], name="qkv"),
                g.const(g.rng.standard_normal(3 * hidden) * 0.1),
            ],
        )
        qkv = g.op("Transpose", [g.op("Reshape", [qkv, g.ints([b, n, 3, heads, d])])], perm=[2, 0, 3, 1, 4])
        q, k, v = (g.op("Gather", [qkv, g.const(np.array(i, dtype=np.int64))], axis=0) for i in range(3))
    else:

        def proj(name):
            h = g.op("Reshape", [g.op("MatMul", [x, g.weight(hidden, hidden)], name=name), g.ints([b, n, heads, d])])
            return g.op("Transpose", [h], perm=[0, 2, 1, 3])

        q, k, v = proj("q"), proj("k"), proj("v")
    q = g.op("Mul", [q, g.const(np.array(d**-0.5))])
    if einsum:
        scores = g.op("Einsum", [q, k], equation="b h i d, b h j d -> b h i j")
    else:
        scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    scores = g.op("Add", [scores, g.const(g.rng.standard_normal((1, heads, n, n)))])  # relative position bias
    att = g.op("Softmax", [scores], axis=-1 if g.opset >= 13 else 3)
    out = g.op("Einsum", [att, v], equation="bhij,bhjd->bhid") if einsum else g.op("MatMul", [att, v])
    out = g.op("Reshape", [g.op("Transpose", [out], perm=[0, 2, 1, 3]), g.ints([b, n, hidden])])
    return g.op("MatMul", [out, g.weight(hidden, hidden)], name="proj")


@pytest.mark.parametrize(
    "packed,einsum,opset",
    [(True, False, 11), (True, False, LATEST), (False, True, 12), (False, True, LATEST), (True, True, LATEST)],
)
def test_attention_heads_grow(packed, einsum, opset):
    """The head count grows (every strategy, exact); the head size, contracted between q and k, is blocked; the
    count of q, k, v picked by Gather is not a group a user grows."""
    g = Graph(opset)
    x = g.input([2, 5, 6])
    h = g.op("MatMul", [g.op("Relu", [g.op("MatMul", [x, g.weight(6, 8)], name="fc0")]), g.weight(8, 8)], name="fc1")
    model = g.model(
        g.op("MatMul", [_attention(g, g.op("Relu", [h]), 8, 2, packed, einsum), g.weight(8, 3)], name="head")
    )
    producer = "qkv" if packed else "q"
    groups = {gr.size: gr for gr in inspect_model(model).groups if producer in gr.producers and gr.size != 3}
    heads, size = groups[2], groups[4]
    assert heads.constraint == "free", heads.to_dict()
    assert size.constraint == "blocked" and "contracts this axis between two activations" in size.reason
    for init in ("noise", "zero", "net2net"):
        res = grow(model, {heads.id: "x2"}, init=init)
    proj = initializer(res.model, next(n.input[1] for n in res.model.graph.node if n.name == "proj"))
    assert proj.shape == (16, 8)
    grow(model, all="x2")


def test_einsum_sum_over_one_operand_needs_zero():
    """Einsum summing an axis of one operand (`bi->b`) is a ReduceSum: only zero new units keep the sum."""
    g = Graph(LATEST)
    x = g.input([2, 4])
    h = g.gemm(x, 4, 5, "fc1")
    s = g.op("Einsum", [g.op("Relu", [h])], equation="bi->b")
    model = g.model(g.op("Add", [g.gemm(h, 5, 3, "fc2"), g.op("Unsqueeze", [s, g.ints([1])])]))
    group = group_of(model, "fc1")
    assert group.constraint == "zero" and "Einsum" in group.reason
    grow(model, {"fc1": "x2"}, init="zero")
    with pytest.raises(OnnxGrowError, match="zero"):
        widen_model(model, {"fc1": "x2"}, init="noise", check=False)


def test_einsum_with_a_weight_is_a_boundary():
    g = Graph(LATEST)
    x = g.input([2, 4])
    h = g.op("Einsum", [g.op("Relu", [g.gemm(x, 4, 5, "fc1")]), g.weight(5, 3)], equation="bi,ij->bj")
    group = group_of(g.model(h), "fc1")
    assert group.constraint == "blocked" and "constant operand" in group.reason


@pytest.mark.parametrize("opset", [7, 13, LATEST])
def test_gather_of_every_position_rewrites_its_indices(opset):
    """The arange read by Gather (torch's as_strided) becomes the arange of the grown axis, in its grown shape."""
    g = Graph(opset)
    out, layer = _gather_arange(g)
    model = g.model(out)
    res = grow(model, {layer: "+3"})
    gather = next(n for n in res.model.graph.node if n.op_type == "Gather")
    np.testing.assert_array_equal(initializer(res.model, gather.input[1]), np.arange(7).reshape(1, 7, 1, 1))
    grow(model, {layer: "x2"}, init="net2net")


def test_gather_of_other_positions_is_blocked():
    """A constant index that is not every position in order (a permutation) moves units: blocked."""
    g = Graph()
    x = g.input([1, 3, 4, 4])
    h = g.reduce("ReduceMean", g.op("Relu", [g.conv(x, 3, 4, name="c1")]), [2, 3])
    h = g.op("Gather", [g.op("Reshape", [h, g.ints([-1])]), g.ints(np.array([1, 0, 2, 3]).reshape(1, 4, 1, 1))])
    group = group_of(g.model(g.conv(h, 4, 3, k=1, name="c2")), "c1")
    assert group.constraint == "blocked" and "picks positions" in group.reason


def test_reshape_regroups_fixed_positions_only():
    """A Reshape may regroup rolled spatial positions (they never grow), but not the units of a layer: channels
    concatenated from two layers and cut across their boundary stay blocked."""
    g = Graph()
    x = g.input([2, 4])
    h = g.op("Concat", [g.gemm(x, 4, 3, "fa"), g.gemm(x, 4, 5, "fb")], axis=1)
    model = g.model(g.op("MatMul", [g.op("Reshape", [h, g.ints([2, 2, 4])]), g.weight(4, 3)], name="fc2"))
    assert group_of(model, "fa").constraint == "blocked"


@pytest.mark.parametrize("op", ["Add", "Mul", "Where"])
def test_axis_of_size_one_broadcast_is_blocked(op):
    """A layer of one unit whose output is broadcast against a wider activation (a gate or a per-row shift, or the
    identity layer deepen puts after a sum): grown, it would stop being broadcast, so its group is blocked."""
    g = Graph(LATEST)
    x = g.input([2, 4])
    one = g.op("Relu", [g.gemm(x, 4, 1, "fc1")])
    wide = g.op("Relu", [g.gemm(x, 4, 3, "fc0")])
    if op == "Where":
        h = g.op("Where", [g.const(np.array([True, False, True])), wide, one])
    else:
        h = g.op(op, [wide, one])
    model = g.model(g.gemm(h, 3, 2, "fc2"))
    group = group_of(model, "fc1")
    assert group.constraint == "blocked" and "broadcasts this axis of size 1" in group.reason, group.to_dict()
    with pytest.raises(OnnxGrowError, match="broadcasts"):
        widen_model(model, {"fc1": "x2"}, check=False)
    grow(model, {"fc0": "x2"})
