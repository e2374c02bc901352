"""`onnxgrow verify`: every flag, the exit statuses and the one-line errors, and the Python API.

Expected numbers come from running the models in onnxruntime or numpy in the test, never from
values copied out of onnxgrow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow.cli import main
from onnxgrow.errors import OnnxGrowError

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- model builders


def _save(m: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def linear(bias: np.ndarray | None = None, weight: np.ndarray | None = None, *, dims=("n", 3)) -> onnx.ModelProto:
    """y = x @ W.T + b with x[n,3]: W defaults to the identity, so y == x exactly when b == 0."""
    W = np.eye(3, dtype=np.float32) if weight is None else weight.astype(np.float32)
    b = np.zeros(3, np.float32) if bias is None else np.asarray(bias, np.float32)
    return _model(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1, name="fc")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )


def two_outputs(b1, b2) -> onnx.ModelProto:
    """y1 = x + b1, y2 = x + b2 (via Gemm with identity weights)."""
    eye = numpy_helper.from_array(np.eye(3, dtype=np.float32), "I")
    return _model(
        [
            helper.make_node("Gemm", ["x", "I", "b1"], ["y1"], name="g1"),
            helper.make_node("Gemm", ["x", "I", "b2"], ["y2"], name="g2"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [
            helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["n", 3]),
        ],
        [
            eye,
            numpy_helper.from_array(np.asarray(b1, np.float32), "b1"),
            numpy_helper.from_array(np.asarray(b2, np.float32), "b2"),
        ],
    )


def unary(op: str) -> onnx.ModelProto:
    """y = op(x) for x[n,3]."""
    return _model(
        [helper.make_node(op, ["x"], ["y"], name="f")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [],
    )


def embedding(rows: int, table_as: str = "initializer", ids_type=TensorProto.INT64) -> onnx.ModelProto:
    """ids[n,4] -> Gather on a rows x 3 table -> y[n,4,3]; the table as initializer, Constant or Identity."""
    table = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    nodes, inits = [], []
    src = "table"
    if table_as == "initializer":
        inits.append(numpy_helper.from_array(table, "table"))
    elif table_as == "constant":
        nodes.append(helper.make_node("Constant", [], ["table"], value=numpy_helper.from_array(table, "t")))
    elif table_as == "identity":
        inits.append(numpy_helper.from_array(table, "table0"))
        nodes.append(helper.make_node("Identity", ["table0"], ["table"]))
    ids = "ids"
    if ids_type != TensorProto.INT64:
        nodes.append(helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64))
        ids = "ids64"
    nodes.append(helper.make_node("Gather", [src, ids], ["y"], axis=0))
    return _model(
        nodes,
        [helper.make_tensor_value_info("ids", ids_type, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 3])],
        inits,
    )


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


# ---------------------------------------------------------------------------- CLI helpers


def cli(capsys, *argv: str | os.PathLike) -> tuple[int, str, str]:
    code = main(["verify", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxgrow")
    return lines[0]


def cli_json(capsys, *argv) -> tuple[int, dict]:
    code, out, err = cli(capsys, *argv, "--json")

    def strict(token: str):
        raise AssertionError(f"not valid JSON: {token}")

    return code, json.loads(out, parse_constant=strict)


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.keys()}


@pytest.fixture
def ref(tmp_path) -> Path:
    return _save(linear(weight=np.random.default_rng(0).standard_normal((3, 3))), tmp_path / "ref.onnx")


def _perturbed(tmp_path, delta: float) -> Path:
    w = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    w[0, 0] += np.float32(delta)
    return _save(linear(weight=w), tmp_path / "cand.onnx")


# ---------------------------------------------------------------------------- pass / fail


def test_model_against_itself_passes(capsys, ref):
    code, out, err = cli(capsys, ref, ref)
    assert code == 0 and err == ""
    assert "PASS" in out


def test_one_weight_changed_by_1e_3_fails_with_exit_1(capsys, tmp_path, ref):
    cand = _perturbed(tmp_path, 1e-3)
    code, out, err = cli(capsys, ref, cand)
    assert code == 1
    assert "FAIL" in out
    line = one_line(err)
    assert "y" in line and "fail" in line.lower()


def test_default_tolerance_accepts_float_noise(capsys, tmp_path, ref):
    # a change far below 1e-5 relative to the outputs still passes
    cand = _perturbed(tmp_path, 1e-7)
    assert cli(capsys, ref, cand)[0] == 0


# ---------------------------------------------------------------------------- tolerances


@pytest.fixture
def shifted(tmp_path):
    """ref: y = x; cand: y = x + [0.01, 0.01, 0]; the inputs are chosen by the test."""
    r = _save(linear(), tmp_path / "r.onnx")
    c = _save(linear(bias=[0.01, 0.01, 0.0]), tmp_path / "c.onnx")
    return r, c


def _inputs(tmp_path, x) -> Path:
    p = tmp_path / "x.npz"
    np.savez(p, x=np.asarray(x, np.float32))
    return p


@pytest.mark.parametrize(
    "x, atol, rtol, expected",
    [
        # y = 1 -> abs 0.01, rel 0.01;  y = 100 -> abs 0.01, rel 1e-4
        ([[1.0, 100.0, 0.5]], "0.005", "0.005", 1),  # element 0 exceeds both
        ([[1.0, 100.0, 0.5]], "0.02", "0", 0),  # every abs error within atol
        ([[1.0, 100.0, 0.5]], "0", "0.02", 0),  # every rel error within rtol
        ([[1.0, 100.0, 0.5]], "0.005", "0.001", 1),  # element 0: rel 0.01 > 0.001 and abs > atol
        ([[100.0, 200.0, 0.5]], "0.005", "0.001", 0),  # abs > atol everywhere, but rel <= rtol: pass
        ([[100.0, 200.0, 0.5]], "0.005", "1e-5", 1),  # both exceeded
    ],
)
def test_element_fails_only_when_it_exceeds_both_tolerances(capsys, tmp_path, shifted, x, atol, rtol, expected):
    r, c = shifted
    inputs = _inputs(tmp_path, x)
    # the premise, from onnxruntime: how far apart the outputs really are
    want, got = ort_run(r, {"x": np.asarray(x, np.float32)})["y"], ort_run(c, {"x": np.asarray(x, np.float32)})["y"]
    diff = np.abs(want.astype(np.float64) - got)
    rel = diff / np.abs(want)
    assert bool(((diff > float(atol)) & (rel > float(rtol))).any()) == bool(expected)
    code, report = cli_json(capsys, r, c, "--load-inputs", inputs, "--atol", atol, "--rtol", rtol)
    assert code == expected
    (o,) = report["outputs"]
    assert o["passed"] is (expected == 0)
    assert o["max_abs"] == pytest.approx(diff.max(), rel=1e-6)
    assert o["max_rel"] == pytest.approx(rel.max(), rel=1e-6)
    assert (o["atol"], o["rtol"]) == (float(atol), float(rtol))


@pytest.mark.parametrize(
    "x, atol, rtol, relative_to, expected",
    [
        # y = x + [0.01, 0.01, 0]: max abs error 0.01; the output's largest |value| is 100 (or 200)
        ([[1.0, 100.0, 0.5]], "0", "1e-3", "element", 1),  # element 0: 0.01 of its value 1
        ([[1.0, 100.0, 0.5]], "0", "1e-3", "output", 0),  # 0.01 <= 1e-3 x 100
        ([[1.0, 100.0, 0.5]], "0", "5e-5", "output", 1),  # 0.01 > 5e-5 x 100 = 0.005
        ([[1.0, 200.0, 0.5]], "0", "5e-5", "output", 0),  # 0.01 <= 5e-5 x 200
        ([[1.0, 100.0, 0.5]], "0.02", "0", "output", 0),  # within atol
        ([[1.0, 100.0, 0.5]], "0.005", "1e-5", "output", 1),  # exceeds both
    ],
)
def test_relative_to_output_judges_the_largest_error_against_the_largest_value(
    capsys, tmp_path, shifted, x, atol, rtol, relative_to, expected
):
    r, c = shifted
    inputs = _inputs(tmp_path, x)
    feeds = {"x": np.asarray(x, np.float32)}
    want, got = ort_run(r, feeds)["y"].astype(np.float64), ort_run(c, feeds)["y"].astype(np.float64)
    err, scale = float(np.abs(want - got).max()), float(np.abs(want).max())
    if relative_to == "output":  # the premise, from onnxruntime's outputs
        assert (err > float(atol) and err > float(rtol) * scale) == bool(expected)
    code, report = cli_json(
        capsys, r, c, "--load-inputs", inputs, "--atol", atol, "--rtol", rtol, "--relative-to", relative_to
    )
    assert code == expected and report["relative_to"] == relative_to
    (o,) = report["outputs"]
    assert o["passed"] is (expected == 0)
    assert o["scale"] == pytest.approx(scale) and o["normalised"] == pytest.approx(err / scale, rel=1e-6)


def test_relative_to_output_on_an_all_zero_output_needs_atol(capsys, tmp_path):
    """An output that is all 0 has no scale: only atol can forgive a difference there."""
    r = _save(linear(weight=np.zeros((3, 3))), tmp_path / "r.onnx")
    near = _save(linear(weight=np.zeros((3, 3)), bias=[1e-6, 0, 0]), tmp_path / "near.onnx")
    far = _save(linear(weight=np.zeros((3, 3)), bias=[1e-3, 0, 0]), tmp_path / "far.onnx")
    assert not ort_run(r, {"x": np.ones((2, 3), np.float32)})["y"].any()
    assert cli(capsys, r, near, "--relative-to", "output")[0] == 0
    code, rep = cli_json(capsys, r, far, "--relative-to", "output", "--rtol", "1e9")
    assert code == 1 and rep["outputs"][0]["scale"] == 0.0 and rep["outputs"][0]["normalised"] == pytest.approx(1e-3)
    assert cli(capsys, r, far, "--relative-to", "output", "--atol", "2e-3")[0] == 0


def test_relative_to_output_still_fails_on_nan_and_compares_integers_exactly(capsys, tmp_path):
    nan = _model(
        [helper.make_node("Div", ["x", "zero"], ["q"]), helper.make_node("Sub", ["q", "q"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.zeros(3, np.float32), "zero")],
    )
    cand = _save(nan, tmp_path / "nan.onnx")
    assert np.isnan(ort_run(cand, {"x": np.ones((2, 3), np.float32)})["y"]).all()
    code, _, err = cli(capsys, cand, cand, "--relative-to", "output", "--atol", "1e30")
    assert code == 1 and "NaN" in one_line(err)

    def counts(extra: float) -> onnx.ModelProto:  # y = int64(x * 1e6 + extra)
        return _model(
            [
                helper.make_node("Mul", ["x", "k"], ["s"]),
                helper.make_node("Add", ["s", "e"], ["t"]),
                helper.make_node("Cast", ["t"], ["y"], to=TensorProto.INT64),
            ],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
            [helper.make_tensor_value_info("y", TensorProto.INT64, ["n", 3])],
            [numpy_helper.from_array(np.float32(1e6), "k"), numpy_helper.from_array(np.float32(extra), "e")],
        )

    r, c = _save(counts(0.0), tmp_path / "r.onnx"), _save(counts(1.0), tmp_path / "c.onnx")
    inputs = _inputs(tmp_path, [[1.0, 0.001, 0.5]])
    a, b = ort_run(r, {"x": npz(inputs)["x"]})["y"], ort_run(c, {"x": npz(inputs)["x"]})["y"]
    assert np.abs(a - b).max() == 1 and np.abs(a).max() >= 1e6  # 1e-6 of the largest value, 1e-3 of another
    code, rep = cli_json(capsys, r, c, "--load-inputs", inputs, "--relative-to", "output")
    assert code == 1 and rep["relative_to"] == "output" and rep["outputs"][0]["relative_to"] == "element"


def test_relative_to_output_table_and_bad_value(capsys, tmp_path, shifted):
    r, c = shifted
    inputs = _inputs(tmp_path, [[1.0, 100.0, 0.5]])
    code, out, _ = cli(capsys, r, c, "--load-inputs", inputs, "--rtol", "1e-3", "--relative-to", "output")
    assert code == 0
    assert "relative to each output's largest |value|" in out and "err / max|ref|" in out and "0.0001" in out
    with pytest.raises(SystemExit) as info:
        main(["verify", str(r), str(c), "--relative-to", "elements"])
    assert info.value.code == 2 and "--relative-to" in one_line(capsys.readouterr().err)
    with pytest.raises(OnnxGrowError, match=r"^relative_to='scaled': expected element or output$"):
        onnxgrow.verify(r, c, relative_to="scaled")
    # the default is Polygraphy's element-wise meaning
    assert onnxgrow.verify(r, c, load_inputs=str(inputs), rtol=1e-3).relative_to == "element"
    assert not onnxgrow.verify(r, c, load_inputs=str(inputs), rtol=1e-3).passed


def test_per_output_tolerances(capsys, tmp_path):
    r = _save(two_outputs([0, 0, 0], [0, 0, 0]), tmp_path / "r.onnx")
    c = _save(two_outputs([0, 0, 0], [0.01, 0.01, 0.01]), tmp_path / "c.onnx")  # only y2 differs
    assert cli(capsys, r, c)[0] == 1
    code, rep = cli_json(capsys, r, c, "--atol", "y2:0.1")
    assert code == 0
    tol = {o["name"]: (o["atol"], o["rtol"]) for o in rep["outputs"]}
    assert tol == {"y1": (1e-5, 1e-5), "y2": (0.1, 1e-5)}
    # a tolerance for the wrong output does not help the one that differs
    code, rep = cli_json(capsys, r, c, "--atol", "y1:0.1")
    assert code == 1
    assert {o["name"]: o["passed"] for o in rep["outputs"]} == {"y1": True, "y2": False}
    # a default plus a per-output value; and --rtol per output
    assert cli(capsys, r, c, "--atol", "0", "--atol", "y2:0.1")[0] == 0
    assert cli(capsys, r, c, "--rtol", "y2:1e9")[0] == 0
    assert cli(capsys, r, c, "--rtol", "y1:1e9")[0] == 1


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--atol", "nosuch:0.1"], ["nosuch"]),
        (["--rtol", "y:abc"], ["--rtol"]),
        (["--atol", "-1"], ["negative"]),
        (["--atol", "nan"], ["--atol"]),
    ],
)
def test_bad_tolerances_are_usage_errors(capsys, ref, flags, words):
    code, _, err = cli(capsys, ref, ref, *flags)
    assert code == 2
    line = one_line(err)
    assert all(w in line for w in words)


# ---------------------------------------------------------------------------- inputs: seed, iterations, shapes


def test_seed_chooses_the_inputs(capsys, tmp_path, ref):
    a, b, c, d = (tmp_path / f"{n}.npz" for n in "abcd")
    assert cli(capsys, ref, ref, "--seed", "3", "--save-inputs", a)[0] == 0
    assert cli(capsys, ref, ref, "--seed", "3", "--save-inputs", b)[0] == 0
    assert cli(capsys, ref, ref, "--seed", "4", "--save-inputs", c)[0] == 0
    assert cli(capsys, ref, ref, "--save-inputs", d)[0] == 0  # default seed
    assert list(npz(a)) == ["x"]
    np.testing.assert_array_equal(npz(a)["x"], npz(b)["x"])
    assert not np.array_equal(npz(a)["x"], npz(c)["x"])
    code, rep = cli_json(capsys, ref, ref, "--seed", "3")
    assert rep["seed"] == 3
    code, rep = cli_json(capsys, ref, ref)
    assert rep["seed"] == 1
    code, _, err = cli(capsys, ref, ref, "--seed", "-1")
    assert code == 2 and "--seed" in one_line(err)


def test_iterations_run_several_input_sets(capsys, tmp_path, ref):
    saved = tmp_path / "three.npz"
    code, rep = cli_json(capsys, ref, ref, "--iterations", "3", "--save-inputs", saved)
    assert code == 0 and rep["iterations"] == 3
    sets = npz(saved)
    assert sorted(sets) == ["0/x", "1/x", "2/x"]
    assert not np.array_equal(sets["0/x"], sets["1/x"]) and not np.array_equal(sets["1/x"], sets["2/x"])
    code, rep = cli_json(capsys, ref, ref, "--load-inputs", saved)
    assert code == 0 and rep["iterations"] == 3
    for bad in ("0", "-2"):
        code, _, err = cli(capsys, ref, ref, "--iterations", bad)
        assert code == 2 and "--iterations" in one_line(err)


def test_iterations_find_a_difference_that_one_input_set_misses(capsys, tmp_path):
    # Relu and Abs agree on non-negative inputs; a saved set of such inputs passes,
    # while random sets (with negative entries) fail
    r = _save(unary("Relu"), tmp_path / "relu.onnx")
    c = _save(unary("Abs"), tmp_path / "abs.onnx")
    positive = tmp_path / "pos.npz"
    np.savez(positive, x=np.abs(np.random.default_rng(0).standard_normal((2, 3))).astype(np.float32))
    assert cli(capsys, r, c, "--load-inputs", positive)[0] == 0
    assert cli(capsys, r, c, "--iterations", "2")[0] == 1


def test_dynamic_dimensions_default_and_input_shapes(capsys, ref):
    code, out, _ = cli(capsys, ref, ref)
    assert code == 0
    assert "input x: dynamic dimensions set to 2x3 (use --input-shapes x:DIMS to choose)" in out
    code, out, _ = cli(capsys, ref, ref, "--input-shapes", "x:5x3")
    assert code == 0 and "dynamic dimensions set to" not in out
    for spec in ("x:5x3", "x:[5,3]"):
        code, rep = cli_json(capsys, ref, ref, "--input-shapes", spec)
        assert code == 0
        assert rep["inputs"] == {"x": [5, 3]} and rep["outputs"][0]["shape"] == [5, 3]
        assert rep["defaulted_inputs"] == []
    code, rep = cli_json(capsys, ref, ref)
    assert rep["defaulted_inputs"] == ["x"] and rep["inputs"] == {"x": [2, 3]}


@pytest.mark.parametrize(
    "spec, words",
    [
        ("x:5", ["x", "dimensions"]),  # wrong rank
        ("x:5x4", ["dimension 1", "fixed", "3"]),  # the second dimension is fixed at 3
        ("z:5x3", ["'z'", "x"]),  # unknown input name, listing the real one
        ("x:5xa", ["integers"]),
        ("5x3", ["NAME:DIMS"]),
    ],
)
def test_bad_input_shapes_are_one_line_usage_errors(capsys, ref, spec, words):
    code, out, err = cli(capsys, ref, ref, "--input-shapes", spec)
    assert code == 2
    line = one_line(err)
    assert all(w in line for w in words), line


# ---------------------------------------------------------------------------- load / save inputs


def test_save_and_load_inputs_round_trip(capsys, tmp_path, ref):
    cand = _perturbed(tmp_path, 1e-3)
    saved = tmp_path / "in.npz"
    code, first = cli_json(capsys, ref, cand, "--seed", "7", "--save-inputs", saved)
    assert code == 1
    x = npz(saved)["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3)
    code, second = cli_json(capsys, ref, cand, "--load-inputs", saved)
    assert code == 1
    assert second["outputs"] == first["outputs"]
    # and the report's numbers are what onnxruntime gives on exactly those inputs
    diff = np.abs(ort_run(ref, {"x": x})["y"].astype(np.float64) - ort_run(cand, {"x": x})["y"])
    assert first["outputs"][0]["max_abs"] == pytest.approx(diff.max(), rel=1e-6)


def test_save_inputs_writes_exactly_the_given_path(capsys, tmp_path, ref):
    target = tmp_path / "inputs.bin"  # no .npz suffix: numpy would add one
    assert cli(capsys, ref, ref, "--save-inputs", target)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["inputs.bin", "ref.onnx"]
    assert cli(capsys, ref, ref, "--load-inputs", target)[0] == 0


def test_save_inputs_into_a_missing_folder_fails_before_running(capsys, tmp_path, ref):
    code, _, err = cli(capsys, ref, ref, "--save-inputs", tmp_path / "no" / "in.npz")
    assert code == 2 and "--save-inputs" in one_line(err)
    assert sorted(os.listdir(tmp_path)) == ["ref.onnx"]


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"input": np.zeros((2, 3), np.float32)}, ["missing x", "unknown input"]),
        ({"x": np.zeros((2, 3), np.float32), "extra": np.zeros(1)}, ["unknown extra"]),
        ({}, ["missing x"]),
        ({"x": np.zeros((2, 3, 1), np.float32)}, ["'x'", "dimensions"]),
    ],
)
def test_load_inputs_that_do_not_match_the_model(capsys, tmp_path, ref, arrays, words):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    code, _, err = cli(capsys, ref, ref, "--load-inputs", bad)
    assert code == 2
    line = one_line(err)
    assert "bad.npz" in line and all(w in line for w in words), line


@pytest.mark.parametrize("kind", ["missing", "garbage", "npy", "folder"])
def test_unreadable_load_inputs(capsys, tmp_path, ref, kind):
    path = tmp_path / "in.npz"
    if kind == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((2, 3), np.float32))
    elif kind == "folder":
        path.mkdir()
    code, _, err = cli(capsys, ref, ref, "--load-inputs", path)
    assert code == 2 and "in.npz" in one_line(err)


def test_loaded_integer_inputs_are_cast_to_the_model_dtype(capsys, tmp_path, ref):
    # .npz written by other tools often holds float64: accepted and cast to the input's dtype
    p = tmp_path / "f64.npz"
    np.savez(p, x=np.ones((4, 3), np.float64))
    code, rep = cli_json(capsys, ref, ref, "--load-inputs", p)
    assert code == 0 and rep["inputs"] == {"x": [4, 3]}


# ---------------------------------------------------------------------------- providers


def test_provider_cpu(capsys, ref):
    code, rep = cli_json(capsys, ref, ref, "--provider", "cpu")
    assert code == 0 and rep["provider"] == "cpu"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_provider_cuda_without_cuda_is_one_clear_line(capsys, ref):
    code, _, err = cli(capsys, ref, ref, "--provider", "cuda")
    assert code == 2
    line = one_line(err)
    assert "cuda" in line.lower() and "--provider cpu" in line


def test_unknown_provider_is_a_usage_error(capsys, ref):
    with pytest.raises(SystemExit) as info:
        main(["verify", str(ref), str(ref), "--provider", "tpu"])
    assert info.value.code == 2
    one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- --json


def test_json_report_fields(capsys, tmp_path, ref):
    code, rep = cli_json(capsys, ref, ref)
    assert code == 0 and rep["passed"] is True
    assert rep["iterations"] == 1 and rep["provider"] == "cpu" and rep["relative_to"] == "element"
    (o,) = rep["outputs"]
    assert o["name"] == "y" and o["passed"] is True and o["max_abs"] == 0.0 and o["shape"] == [2, 3]
    code, rep = cli_json(capsys, ref, _perturbed(tmp_path, 1e-3))
    assert code == 1 and rep["passed"] is False
    assert rep["outputs"][0]["passed"] is False and rep["outputs"][0]["max_abs"] > 1e-5


# ---------------------------------------------------------------------------- integer inputs


@pytest.mark.parametrize("table_as", ["initializer", "constant", "identity"])
@pytest.mark.parametrize("ids_type", [TensorProto.INT64, TensorProto.INT32])
def test_integer_ids_stay_inside_a_small_embedding_table(capsys, tmp_path, table_as, ids_type):
    m = _save(embedding(5, table_as, ids_type), tmp_path / "emb.onnx")
    saved = tmp_path / "ids.npz"
    code, out, err = cli(capsys, m, m, "--iterations", "5", "--input-shapes", "ids:8x4", "--save-inputs", saved)
    assert code == 0, err
    ids = np.stack(list(npz(saved).values()))
    assert ids.min() >= 0 and ids.max() < 5


def test_encoder_model_with_token_ids_verifies():
    report = onnxgrow.verify(ROOT / "models" / "encoder.onnx", ROOT / "models" / "encoder.onnx", iterations=2)
    assert report.passed


# ---------------------------------------------------------------------------- NaN / Inf


def test_nan_in_candidate_fails(capsys, tmp_path, ref):
    # candidate: Log of a negative number -> NaN
    nan = _model(
        [
            helper.make_node("Abs", ["x"], ["a"]),
            helper.make_node("Neg", ["a"], ["n"]),
            helper.make_node("Sub", ["n", "one"], ["m"]),
            helper.make_node("Log", ["m"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.float32(1.0), "one")],
    )
    cand = _save(nan, tmp_path / "nan.onnx")
    assert np.isnan(ort_run(cand, {"x": np.ones((2, 3), np.float32)})["y"]).all()
    code, out, err = cli(capsys, ref, cand, "--atol", "1e30", "--rtol", "1e30")
    assert code == 1
    assert "NaN" in one_line(err)
    code, rep = cli_json(capsys, ref, cand)
    assert code == 1 and rep["outputs"][0]["passed"] is False


def test_inf_in_candidate_fails(capsys, tmp_path, ref):
    div = _model(
        [helper.make_node("Div", ["x", "zero"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.zeros(3, np.float32), "zero")],
    )
    cand = _save(div, tmp_path / "inf.onnx")
    assert np.isinf(ort_run(cand, {"x": np.ones((2, 3), np.float32)})["y"]).all()
    code, _, err = cli(capsys, ref, cand, "--atol", "1e30")
    assert code == 1 and "Inf" in one_line(err)
    # the model against itself: a model that produces NaN/Inf never passes
    assert cli(capsys, cand, cand)[0] == 1


def test_nan_in_reference_is_not_matched_by_a_finite_candidate(capsys, tmp_path):
    div = _model(
        [helper.make_node("Div", ["x", "zero"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.zeros(3, np.float32), "zero")],
    )
    r = _save(div, tmp_path / "inf.onnx")
    c = _save(linear(), tmp_path / "finite.onnx")
    code, rep = cli_json(capsys, r, c, "--atol", "1e30")
    assert code == 1 and rep["passed"] is False


# ---------------------------------------------------------------------------- unreadable models


def _unreadable(tmp_path: Path, kind: str) -> Path:
    good = linear().SerializeToString()
    path = tmp_path / f"{kind}.onnx"
    if kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(3000))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) * 2 // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("<html>not a model</html>\n")
    return path


UNREADABLE = ["random", "truncated", "missing", "empty", "folder", "text"]


@pytest.mark.parametrize("side", ["reference", "candidate"])
@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_model_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, ref, kind, side):
    bad = _unreadable(tmp_path, kind)
    before = sorted(os.listdir(tmp_path))
    target = tmp_path / "inputs.npz"
    pair = (bad, ref) if side == "reference" else (ref, bad)
    code, out, err = cli(capsys, *pair, "--save-inputs", target)
    assert code == 2
    assert bad.name in one_line(err)
    assert sorted(os.listdir(tmp_path)) == before and not target.exists()


def test_candidate_with_other_inputs_is_a_usage_error(capsys, tmp_path, ref):
    other = linear()
    other.graph.input[0].name = "features"
    other.graph.node[0].input[0] = "features"
    cand = _save(other, tmp_path / "other.onnx")
    code, _, err = cli(capsys, ref, cand)
    assert code == 2 and "x" in one_line(err)


def test_candidate_missing_an_output_fails(capsys, tmp_path):
    r = _save(two_outputs([0, 0, 0], [0, 0, 0]), tmp_path / "r.onnx")
    c = _save(linear(), tmp_path / "c.onnx")  # has y only
    code, rep = cli_json(capsys, r, c)
    assert code == 1 and rep["passed"] is False


# ---------------------------------------------------------------------------- real processes


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "onnxgrow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "onnxgrow"]


@pytest.mark.parametrize("launcher", ["script", "module"])
def test_real_exit_codes_and_stderr(tmp_path, ref, launcher):
    cmd = _console_script() if launcher == "script" else [sys.executable, "-m", "onnxgrow"]
    cand = _perturbed(tmp_path, 1e-3)
    bad = _unreadable(tmp_path, "truncated")

    def run(*args):
        return subprocess.run([*cmd, "verify", *map(str, args)], capture_output=True, text=True, timeout=120)

    ok = run(ref, ref)
    assert ok.returncode == 0 and ok.stderr == "" and "PASS" in ok.stdout
    fail = run(ref, cand, "--json")
    assert fail.returncode == 1
    assert json.loads(fail.stdout)["passed"] is False
    one_line(fail.stderr)
    unreadable = run(ref, bad)
    assert unreadable.returncode == 2 and bad.name in one_line(unreadable.stderr)
    usage = run(ref)
    assert usage.returncode == 2
    one_line(usage.stderr)


def test_help_documents_every_verify_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "onnxgrow", "verify", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for flag in (
        "--atol",
        "--rtol",
        "--relative-to",
        "--seed",
        "--iterations",
        "--input-shapes",
        "--load-inputs",
        "--save-inputs",
        "--provider",
        "--json",
    ):
        assert flag in proc.stdout


# ---------------------------------------------------------------------------- Python API


def test_python_api_returns_a_report(tmp_path, ref):
    cand = _perturbed(tmp_path, 1e-3)
    saved = tmp_path / "in.npz"
    report = onnxgrow.verify(ref, onnx.load(str(cand)), save_inputs=str(saved))
    assert isinstance(report, onnxgrow.Report)
    assert report.passed is False
    (o,) = report.outputs
    assert o.name == "y" and o.passed is False
    x = npz(saved)["x"]
    diff = np.abs(ort_run(ref, {"x": x})["y"].astype(np.float64) - ort_run(cand, {"x": x})["y"])
    assert o.max_abs == pytest.approx(diff.max(), rel=1e-6)
    assert report.worst_abs == o.max_abs
    # looser tolerances, given as numbers, pass
    assert onnxgrow.verify(str(ref), str(cand), atol=1e-2, rtol=1e-2).passed
    # shapes as a mapping; the CLI's NAME:DIMS strings are the CLI's (the API names its parameter when given them)
    assert onnxgrow.verify(ref, ref, input_shapes={"x": (4, 3)}).inputs == {"x": [4, 3]}
    with pytest.raises(OnnxGrowError, match=r"^input_shapes=\['x:4x3'\]: expected a mapping"):
        onnxgrow.verify(ref, ref, input_shapes=["x:4x3"])
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["passed"] is False and d["outputs"][0]["name"] == "y"


def test_python_api_raises_onnxgrow_error_on_bad_usage(ref, tmp_path):
    with pytest.raises(OnnxGrowError):
        onnxgrow.verify(ref, ref, iterations=0)
    with pytest.raises(OnnxGrowError, match="nothere"):
        onnxgrow.verify(ref, tmp_path / "nothere.onnx")
    with pytest.raises(OnnxGrowError):
        onnxgrow.verify(ref, ref, atol=float("nan"))


def test_verify_does_not_change_the_callers_models(ref):
    m = onnx.load(str(ref))
    m.graph.node[0].name = ""
    before = m.SerializeToString()
    onnxgrow.verify(m, m)
    assert m.SerializeToString() == before
