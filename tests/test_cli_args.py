"""The CLI's argument groups (onnxgrow/cli_args.py): flags become typed values before the API sees them, a bad
flag is one line naming the flag (exit 2), and the API's own errors name its parameters, which the CLI words
back with the flags the user typed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow.cli import build_parser, main
from onnxgrow.cli_args import ComparisonArgs, InputArgs, VerificationArgs, WidenArgs, flag_message
from onnxgrow.errors import OnnxGrowError, ParameterError
from onnxgrow.verify import Tolerances


@pytest.fixture()
def mlp(tmp_path) -> str:
    """x[N, 3] -> Gemm(3 -> 4) -> Relu -> y: a dynamic batch, so input shapes matter."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w],
    )
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def parsed(argv: list[str]) -> dict[type, object]:
    """The command's argument groups after parsing `argv`, by class."""
    args = build_parser().parse_args(argv)
    for group in args.groups:
        group.parse(args)
    return {type(g): g for g in args.groups}


def run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_flags_become_typed_values(mlp, tmp_path):
    groups = parsed(
        [
            "verify",
            mlp,
            mlp,
            "--atol",
            "1e-4",
            "--atol",
            "y:1e-3",
            "--rtol",
            "2e-3",
            "--relative-to",
            "output",
            "--input-shapes",
            "x:5x3",
            "--iterations",
            "2",
            "--seed",
            "7",
            "--candidate-runtime",
            "onnxruntime",
        ]
    )
    check = groups[VerificationArgs]
    assert check.tolerances == Tolerances(atol=1e-4, rtol=2e-3, atol_per_output={"y": 1e-3})
    assert check.tolerances.of("y") == (1e-3, 2e-3) and check.tolerances.of("other") == (1e-4, 2e-3)
    assert check.kwargs() == {"tolerances": check.tolerances, "relative_to": "output", "provider": "cpu"}
    assert groups[InputArgs].kwargs() == {
        "input_shapes": {"x": (5, 3)},
        "iterations": 2,
        "seed": 7,
        "load_inputs": None,
        "save_inputs": None,
    }
    assert groups[ComparisonArgs].kwargs()["candidate_runtime"] == "onnxruntime"
    # no tolerance flag: the API's defaults apply
    assert parsed(["verify", mlp, mlp])[VerificationArgs].tolerances is None
    widen = parsed(
        ["widen", mlp, "-o", str(tmp_path / "w.onnx"), "--layer", "fc=x2", "--layer", "g0=+3", "--no-verify"]
    )[WidenArgs]
    assert widen.kwargs()["layers"] == {"fc": "x2", "g0": "+3"} and widen.kwargs()["check"] is False


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--atol", "abc"], "--atol 'abc': expected a number or NAME:NUMBER"),
        (["--rtol", "y:-1"], "--rtol 'y:-1': tolerance must not be negative"),
        (["--atol", "nan"], "--atol 'nan': tolerance must be a number, not NaN"),
        (["--input-shapes", "x:5xa"], "--input-shapes 'x:5xa': dimensions must be integers"),
        (["--input-shapes", "5x3"], "--input-shapes '5x3': expected NAME:DIMS"),
        (["--iterations", "0"], "--iterations 0: must be at least 1"),
        (["--seed", "-2"], "--seed -2: must not be negative"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(capsys, mlp, argv, words):
    code, err = run(capsys, ["verify", mlp, mlp, *argv])
    assert code == 2 and err.startswith(f"onnxgrow: error: {words}") and "\n" not in err, err


def test_a_bad_growth_flag_is_one_line_naming_it(capsys, mlp, tmp_path):
    out = str(tmp_path / "w.onnx")
    assert run(capsys, ["widen", mlp, "-o", out, "--layer", "fc"]) == (
        2,
        "onnxgrow: error: --layer 'fc': expected NAME=SIZE, NAME=xF or NAME=+N",
    )
    assert run(capsys, ["widen", mlp, "-o", out, "--all", "2"]) == (
        2,
        "onnxgrow: error: --all '2': expected a factor such as x2",
    )


def test_api_errors_name_the_parameter_and_the_cli_names_the_flag(capsys, mlp):
    """The same mistakes through the API (parameter names, the value as Python wrote it) and the CLI (flags, the
    value as typed)."""
    cases = [
        (
            dict(iterations=0),
            "iterations=0: must be at least 1",
            ["--iterations", "0"],
            "--iterations 0: must be at least 1",
        ),
        (
            dict(tolerances=Tolerances(atol_per_output={"yy": 1e-3})),
            "tolerances.atol_per_output['yy']: the model has no output named 'yy' (did you mean 'y'?)",
            ["--atol", "yy:1e-3"],
            "--atol yy:0.001: the model has no output named 'yy' (did you mean 'y'?)",
        ),
        (
            dict(input_shapes={"xs": (2, 3)}),
            "input_shapes: the model has no input named 'xs'",
            ["--input-shapes", "xs:2x3"],
            "--input-shapes: the model has no input named 'xs'",
        ),
        (
            dict(input_shapes={"x": (2, 3, 4)}),
            "input_shapes['x']: the input has 2 dimensions, got 3",
            ["--input-shapes", "x:2x3x4"],
            "--input-shapes x: the input has 2 dimensions, got 3",
        ),
        (
            dict(load_inputs=mlp),
            f"load_inputs={mlp!r}: not an .npz file (not a zip archive of arrays; save_inputs writes one)",
            ["--load-inputs", mlp],
            f"--load-inputs {mlp}: not an .npz file (not a zip archive of arrays; --save-inputs writes one)",
        ),
    ]
    for kwargs, api, flags, cli in cases:
        with pytest.raises(ParameterError) as info:
            onnxgrow.verify(mlp, mlp, **kwargs)
        assert str(info.value).startswith(api) and "--" not in str(info.value), str(info.value)
        code, err = run(capsys, ["verify", mlp, mlp, *flags])
        assert code == 2 and err.startswith(f"onnxgrow: error: {cli}") and "\n" not in err, err


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(atol=["1e-3"]), "atol=['1e-3']: expected a number"),
        (dict(atol=-1.0), "atol=-1.0: tolerance must not be negative"),
        (dict(atol=1e-3, tolerances=Tolerances()), "tolerances: give tolerances or atol/rtol, not both"),
        (dict(seed=-1), "seed=-1: must not be negative"),
        (dict(provider="tpu"), "provider='tpu': expected cpu or cuda"),
        (dict(relative_to="each"), "relative_to='each': expected element or output"),
        (dict(candidate_runtime="jax"), "candidate_runtime='jax': expected onnxruntime, torch, mxnet"),
        (dict(input_shapes={"x": "2x3"}), "input_shapes['x']: dimensions must be a sequence of integers"),
    ],
)
def test_api_refuses_bad_parameters_by_name(mlp, kwargs, words):
    with pytest.raises(ParameterError) as info:
        onnxgrow.verify(mlp, mlp, **kwargs)
    assert str(info.value).startswith(words) and "--" not in str(info.value), str(info.value)
    assert info.value.exit_code == 2 and isinstance(info.value, OnnxGrowError)


def test_flag_message_names_the_flags_of_parameters_a_message_mentions():
    args = build_parser().parse_args(["verify", "a.onnx", "b.onnx", "--input-shapes", "x:1x2"])
    for group in args.groups:
        group.parse(args)
    err = ParameterError(
        "provider", "torch sees no CUDA device; use provider='cpu'", value="cuda", mentions=("provider='cpu'",)
    )
    assert flag_message(err, args.groups) == "--provider cuda: torch sees no CUDA device; use --provider cpu"
    err = ParameterError(
        "", "input 'x' has no known rank; give it with input_shapes['x']", mentions=("input_shapes['x']",)
    )
    assert flag_message(err, args.groups) == "input 'x' has no known rank; give it with --input-shapes x:DIMS"
    # a parameter no flag of the command sets keeps the API's words
    err = ParameterError("layers", "expected a mapping", value=3)
    assert flag_message(err, args.groups) == "layers=3: expected a mapping"
