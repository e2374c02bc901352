"""Bad input for every command: one clear line, exit 2, nothing written, the user's files untouched.

Each case of the table runs one command line (in process, through `onnxgrow.cli.main`) against a corpus of
broken and awkward files, and checks: exit status 2; exactly one line on stderr, which names the file, node,
flag or op at fault (the WORDS of the case); no traceback and no "internal error"; every file of the input
folder byte-identical afterwards; nothing left in the output folder. `test_real_process` runs a sample of the
table as real `python -m onnxgrow` processes (library warnings would break the one-line rule there).

Already covered elsewhere and not repeated here: unreadable models as verify's reference or candidate
(tests/test_verify.py), bad tolerances, --input-shapes and .npz files in depth (tests/test_verify.py),
checker and external-data errors of the Python API (tests/test_io.py), widen's request parsing
(tests/test_cli_grow.py), deepen's API errors (tests/test_deepen.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrow.cli import main

MODELS = Path(__file__).resolve().parent.parent / "models"


# ---------------------------------------------------------------------------------------------- the corpus
def _mlp_with(op: str, domain: str) -> onnx.ModelProto:
    """x -> fc1 (MatMul) -> `domain`::`op` -> fc2 -> Relu -> fc3 -> y: a node of a domain onnxgrow does not know."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("W1", (4, 6)), ("W2", (6, 5)), ("W3", (5, 3)))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node(op, ["h"], ["a"], name="act", domain=domain),
        helper.make_node("MatMul", ["a", "W2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("MatMul", ["a2", "W3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
    model.ir_version = 8
    return model


def _qdq() -> onnx.ModelProto:
    """A QDQ-quantised MLP: QuantizeLinear/DequantizeLinear around the input, float layers after it."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.uint8), "z"),
        numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dequant"),
        helper.make_node("MatMul", ["dq", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    good = (MODELS / "mlp.onnx").read_bytes()
    (d / "mlp.onnx").write_bytes(good)
    (d / "empty.onnx").write_bytes(b"")
    (d / "random.onnx").write_bytes(np.random.default_rng(5).bytes(4000))
    (d / "truncated.onnx").write_bytes(good[: len(good) // 2])
    bad = onnx.load_from_string(good)
    bad.graph.node[0].input[1] = "no_such_weight"
    (d / "invalid.onnx").write_bytes(bad.SerializeToString())
    # old form (IR version 3, initializers not graph inputs, output without type), which load repairs, and
    # still a node reading a weight that does not exist: refused for that
    old = onnx.load_from_string(bad.SerializeToString())
    old.ir_version = 3
    old.opset_import[0].version = 8
    del old.graph.input[1:]
    old.graph.output[0].ClearField("type")
    (d / "old_invalid.onnx").write_bytes(old.SerializeToString())
    # an output without a type that shape inference cannot tell (made by an op of an unknown domain)
    untyped = _mlp_with("Foo", "com.example")
    untyped.graph.output[0].ClearField("type")
    untyped.graph.node[-1].op_type, untyped.graph.node[-1].domain = "Bar", "com.example"
    onnx.save(untyped, str(d / "untyped.onnx"))
    onnx.save(
        onnx.load_from_string(good), str(d / "external.onnx"), save_as_external_data=True, location="external.onnx.data"
    )
    (d / "external.onnx.data").unlink()
    onnx.save(
        onnx.load_from_string(good),
        str(d / "split.onnx"),
        save_as_external_data=True,
        location="shared.onnx.data",
        size_threshold=0,
    )
    onnx.save(_mlp_with("Foo", "com.example"), str(d / "custom.onnx"))
    onnx.save(_mlp_with("Gelu", "com.microsoft"), str(d / "msgelu.onnx"))  # onnxruntime runs this one
    onnx.save(_qdq(), str(d / "quant.onnx"))
    (d / "notes.txt").write_text("a regular file, not a folder\n")
    np.savez(d / "wrong_names.npz", y=np.zeros((2, 784), np.float32))
    np.savez(d / "wrong_rank.npz", x=np.zeros((784,), np.float32))
    (d / "link.onnx").symlink_to(d / "mlp.onnx")
    return d


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in sorted(folder.iterdir())
    }


# ---------------------------------------------------------------------------------------------- the table
# {i}: the corpus folder, {o}: an empty output folder of the case
BAD_FILES = {  # file -> words its message must contain
    "empty.onnx": ["empty.onnx", "empty file"],
    "random.onnx": ["random.onnx", "not a readable ONNX model"],
    "truncated.onnx": ["truncated.onnx", "not a readable ONNX model", "truncated"],
    "invalid.onnx": ["invalid.onnx", "not a valid ONNX model", "no_such_weight", "/fc1/Gemm"],
    "external.onnx": ["external.onnx", "external data file 'external.onnx.data'", "missing"],
    "old_invalid.onnx": ["old_invalid.onnx", "not a valid ONNX model", "no_such_weight"],
    "untyped.onnx": ["untyped.onnx", "graph output(s) y have no type or shape"],
}
COMMANDS = {  # command line with BAD standing for the model
    "verify-reference": ["verify", "BAD", "{i}/mlp.onnx"],
    "verify-candidate": ["verify", "{i}/mlp.onnx", "BAD"],
    "inspect": ["inspect", "BAD"],
    "widen": ["widen", "BAD", "-o", "{o}/out.onnx", "--all", "x2"],
    "deepen": ["deepen", "BAD", "-o", "{o}/out.onnx", "--after", "/fc1/Gemm"],
    "export-mxnet": ["export", "BAD", "--to", "mxnet", "-o", "{o}/out.onnx"],
    "export-torch": ["export", "BAD", "--to", "torch", "-o", "{o}/out.pt"],
}
CASES = [
    pytest.param([a.replace("BAD", "{i}/" + f) for a in argv], words, id=f"{cmd}-{f}")
    for f, words in BAD_FILES.items()
    for cmd, argv in COMMANDS.items()
]
MLP = "{i}/mlp.onnx"
WIDEN = ["widen", MLP, "-o", "{o}/out.onnx"]
DEEPEN = ["deepen", MLP, "-o", "{o}/out.onnx"]
CASES += [
    # an op domain onnxgrow does not know: the group that reaches it is refused naming the op
    pytest.param(
        ["widen", "{i}/custom.onnx", "-o", "{o}/out.onnx", "--layer", "fc1=x2"],
        ["--layer fc1", "act", "Foo", "com.example", "does not know"],
        id="widen-unknown-domain",
    ),
    pytest.param(
        ["widen", "{i}/msgelu.onnx", "-o", "{o}/out.onnx", "--layer", "W1=+2"],
        ["--layer W1", "Gelu", "com.microsoft", "does not know"],
        id="widen-com.microsoft-op",
    ),
    pytest.param(
        ["widen", "{i}/custom.onnx", "-o", "{o}/out.onnx", "--layer", "fc2=x2"],
        ["fc2", "unknown operand shapes"],
        id="widen-after-unknown-domain",
    ),
    pytest.param(
        ["widen", "{i}/custom.onnx", "-o", "{o}/out.onnx", "--all", "x2"],
        ["--all", "no group", "onnxgrow inspect"],
        id="widen-all-unknown-domain",
    ),
    pytest.param(
        ["deepen", "{i}/custom.onnx", "-o", "{o}/out.onnx", "--after", "a2"],
        ["--after a2", "shape of a2 is unknown"],
        id="deepen-after-unknown-domain",
    ),
    pytest.param(
        ["verify", "{i}/custom.onnx", "{i}/custom.onnx"],
        ["reference", "custom.onnx", "onnxruntime cannot load", "Foo", "com.example"],
        id="verify-unknown-domain",
    ),
    pytest.param(
        ["export", "{i}/custom.onnx", "--to", "mxnet", "-o", "{o}/out.onnx"],
        ["act", "Foo", "com.example"],
        id="export-mxnet-unknown-domain",
    ),
    # quantised models
    pytest.param(
        ["widen", "{i}/quant.onnx", "-o", "{o}/out.onnx", "--layer", "fc1=x2"],
        ["quant", "QuantizeLinear", "quantised models are not supported yet"],
        id="widen-quantised",
    ),
    pytest.param(
        ["deepen", "{i}/quant.onnx", "-o", "{o}/out.onnx", "--after", "a"],
        ["quant", "QuantizeLinear", "quantised models are not supported yet"],
        id="deepen-quantised",
    ),
    # sizes: shrinking, factors <= 1, nonsense
    pytest.param(
        WIDEN + ["--layer", "g0=10"],
        ["--layer g0=10", "smaller than the current size 64", "shrinking is not supported"],
        id="shrink-absolute",
    ),
    pytest.param(
        WIDEN + ["--layer", "/fc1/Gemm=+-3"],
        ["--layer /fc1/Gemm=+-3", "shrinking is not supported"],
        id="shrink-negative-added",
    ),
    pytest.param(WIDEN + ["--layer", "g0=x1"], ["--layer g0=x1", "factor x1", "greater than 1"], id="factor-1"),
    pytest.param(WIDEN + ["--layer", "g0=x0.5"], ["factor x0.5", "greater than 1", "shrinking"], id="factor-half"),
    pytest.param(WIDEN + ["--layer", "g0=x0"], ["factor x0", "greater than 1"], id="factor-0"),
    pytest.param(WIDEN + ["--layer", "g0=x-2"], ["factor x-2", "greater than 1"], id="factor-negative"),
    pytest.param(WIDEN + ["--layer", "g0=xinf"], ["factor xinf", "finite"], id="factor-inf"),
    pytest.param(WIDEN + ["--layer", "g0=xnan"], ["factor xnan"], id="factor-nan"),
    pytest.param(WIDEN + ["--all", "x1"], ["--all x1", "greater than 1"], id="all-factor-1"),
    pytest.param(WIDEN + ["--layer", "g0=+0"], ["--layer g0=+0", "already has 64 units"], id="same-size"),
    pytest.param(WIDEN + ["--layer", "g0=many"], ["--layer g0=many", "expected a size"], id="size-not-a-number"),
    # two requests for one group
    pytest.param(
        WIDEN + ["--layer", "g0=x2", "--layer", "/fc1/Gemm=x3"],
        ["--layer /fc1/Gemm", "group g0", "already requested by --layer g0"],
        id="same-group-two-names",
    ),
    pytest.param(
        WIDEN + ["--layer", "fc2.weight=x2", "--layer", "g1=+1"],
        ["--layer g1", "already requested by --layer fc2.weight"],
        id="same-group-weight-and-id",
    ),
    pytest.param(
        WIDEN + ["--layer", "g0=x2", "--layer", "g0=x3"], ["--layer g0", "requested twice"], id="same-name-twice"
    ),
    # unknown names: the closest are suggested
    pytest.param(WIDEN + ["--layer", "fc_1=x2"], ["'fc_1'", "did you mean", "/fc1/Gemm"], id="widen-unknown-name"),
    pytest.param(
        WIDEN + ["--layer", "fc1.wieght=x2"], ["'fc1.wieght'", "did you mean", "fc1.weight"], id="widen-misspelt-weight"
    ),
    pytest.param(WIDEN + ["--layer", "zzz=x2"], ["'zzz'", "onnxgrow inspect"], id="widen-nothing-close"),
    pytest.param(
        DEEPEN + ["--after", "/fc2/gemm"], ["--after /fc2/gemm", "did you mean", "/fc2/Gemm"], id="deepen-unknown-name"
    ),
    pytest.param(
        DEEPEN + ["--after", "b7", "--block", "copy"], ["--after b7", "no residual block"], id="deepen-copy-no-block"
    ),
    pytest.param(
        ["verify", MLP, MLP, "--atol", "logit:1e-3"],
        ["--atol logit", "did you mean 'logits'"],
        id="verify-unknown-output",
    ),
    pytest.param(
        ["verify", MLP, MLP, "--input-shapes", "xs:2x784"],
        ["--input-shapes", "'xs'", "did you mean 'x'"],
        id="verify-unknown-input",
    ),
    # flags out of range
    pytest.param(WIDEN + ["--layer", "g0=x2", "--seed", "-1"], ["--seed -1", "must not be negative"], id="widen-seed"),
    pytest.param(
        DEEPEN + ["--after", "/fc1/Gemm", "--seed", "-3"], ["--seed -3", "must not be negative"], id="deepen-seed"
    ),
    pytest.param(WIDEN + ["--layer", "g0=x2", "--noise-std", "-0.1"], ["--noise-std", "negative"], id="noise-std"),
    pytest.param(DEEPEN + ["--after", "/fc1/Gemm", "--count", "0"], ["--count 0", "at least 1"], id="deepen-count"),
    pytest.param(
        WIDEN + ["--layer", "g0=x2", "--iterations", "0"], ["--iterations 0", "at least 1"], id="widen-iterations"
    ),
    # output paths: the input itself (also through a symlink and another spelling), missing folder, a file as folder
    pytest.param(
        ["widen", MLP, "-o", MLP, "--all", "x2"],
        ["-o", "mlp.onnx", "never overwrites its input"],
        id="widen-output-is-input",
    ),
    pytest.param(
        ["widen", MLP, "-o", "{i}/link.onnx", "--all", "x2"],
        ["link.onnx", "never overwrites its input"],
        id="widen-output-is-input-symlink",
    ),
    pytest.param(
        ["deepen", MLP, "-o", "{i}/../{I}/mlp.onnx", "--after", "/fc1/Gemm"],
        ["never overwrites its input"],
        id="deepen-output-is-input-respelt",
    ),
    pytest.param(
        ["export", MLP, "--to", "mxnet", "-o", MLP], ["never overwrites its input"], id="export-mxnet-output-is-input"
    ),
    pytest.param(
        ["export", MLP, "--to", "torch", "-o", MLP], ["never overwrites its input"], id="export-torch-output-is-input"
    ),
    pytest.param(
        ["widen", "{i}/split.onnx", "-o", "{i}/shared.onnx.data", "--all", "x2"],
        ["shared.onnx.data", "holds the external data of the input model"],
        id="widen-output-is-input-data",
    ),
    pytest.param(
        ["deepen", "{i}/split.onnx", "-o", "{i}/shared.onnx", "--after", "/fc1/Gemm", "--save-external-data"],
        ["shared.onnx.data", "holds the external data of the input model"],
        id="deepen-output-data-is-input-data",
    ),
    pytest.param(
        ["verify", MLP, "{i}/link.onnx", "--save-inputs", MLP],
        ["--save-inputs", "mlp.onnx", "never overwrites"],
        id="save-inputs-is-model",
    ),
    pytest.param(
        WIDEN[:3] + ["{o}/missing/out.onnx", "--all", "x2"],
        ["-o", "folder", "missing", "does not exist"],
        id="widen-missing-folder",
    ),
    pytest.param(
        DEEPEN[:3] + ["{o}/missing/out.onnx", "--after", "/fc1/Gemm"],
        ["folder", "missing", "does not exist"],
        id="deepen-missing-folder",
    ),
    pytest.param(
        ["export", MLP, "--to", "mxnet", "-o", "{o}/missing/out.onnx"],
        ["missing", "does not exist"],
        id="export-mxnet-missing-folder",
    ),
    pytest.param(
        ["export", MLP, "--to", "torch", "-o", "{o}/missing/out.pt"],
        ["missing", "does not exist"],
        id="export-torch-missing-folder",
    ),
    pytest.param(
        ["verify", MLP, MLP, "--save-inputs", "{o}/missing/in.npz"],
        ["--save-inputs", "missing", "does not exist"],
        id="save-inputs-missing-folder",
    ),
    pytest.param(
        WIDEN[:3] + ["{i}/notes.txt/out.onnx", "--all", "x2"],
        ["-o", "notes.txt", "is a file, not a folder"],
        id="widen-folder-is-a-file",
    ),
    pytest.param(
        DEEPEN[:3] + ["{i}/notes.txt/out.onnx", "--after", "/fc1/Gemm"],
        ["notes.txt", "is a file"],
        id="deepen-folder-is-a-file",
    ),
    pytest.param(
        ["export", MLP, "--to", "torch", "-o", "{i}/notes.txt/m.pt"],
        ["notes.txt", "is a file"],
        id="export-torch-folder-is-a-file",
    ),
    pytest.param(
        ["verify", MLP, MLP, "--save-inputs", "{i}/notes.txt/in.npz"],
        ["--save-inputs", "notes.txt", "is a file"],
        id="save-inputs-folder-is-a-file",
    ),
    pytest.param(WIDEN[:3] + ["{o}", "--all", "x2"], ["-o", "is a folder"], id="widen-output-is-a-folder"),
    # .npz files that do not fit the model
    pytest.param(
        ["verify", MLP, MLP, "--load-inputs", "{i}/wrong_names.npz"],
        ["--load-inputs", "wrong_names.npz", "do not match the model's inputs", "missing x", "unknown y"],
        id="npz-wrong-names",
    ),
    pytest.param(
        ["verify", MLP, MLP, "--load-inputs", "{i}/wrong_rank.npz"],
        ["--load-inputs", "wrong_rank.npz", "'x' has 1 dimensions", "input has 2"],
        id="npz-wrong-rank",
    ),
    pytest.param(
        ["verify", MLP, MLP, "--load-inputs", "{i}/mlp.onnx"],
        ["--load-inputs", "mlp.onnx", "not an .npz file"],
        id="npz-not-npz",
    ),
    # argparse's own errors follow the same rule (one line, exit 2)
    pytest.param(["widen", MLP, "--all", "x2"], ["-o/--output", "required"], id="widen-no-output"),
    pytest.param(
        WIDEN + ["--layer", "g0=x2", "--init", "random"], ["--init", "invalid choice: 'random'"], id="widen-bad-init"
    ),
    pytest.param(
        DEEPEN + ["--after", "/fc1/Gemm", "--kernel", "5"], ["--kernel", "invalid choice"], id="deepen-bad-kernel"
    ),
    pytest.param(["export", MLP, "--to", "tensorflow", "-o", "{o}/x"], ["--to", "invalid choice"], id="export-bad-to"),
]


def _argv(argv: list[str], corpus: Path, out: Path) -> list[str]:
    return [a.format(i=corpus, o=out, I=corpus.name) for a in argv]


def _run_main(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("argv, words", CASES)
def test_bad_input(corpus, tmp_path, capsys, argv, words):
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(corpus)
    rc, _, err = _run_main(_argv(argv, corpus, out), capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("onnxgrow"), line
    assert "Traceback" not in err and "internal error" not in err, line
    for word in words:
        assert word in line, f"{word!r} not in: {line}"
    assert _snapshot(corpus) == before, "an input file changed"
    assert _snapshot(out) == {}, "something was written"


# a real process per command: exit status and stderr as a user sees them (no warnings from libraries)
REAL = [
    "verify-reference-truncated.onnx",
    "inspect-empty.onnx",
    "widen-invalid.onnx",
    "deepen-external.onnx",
    "export-mxnet-random.onnx",
    "export-torch-truncated.onnx",
    "widen-unknown-domain",
    "widen-quantised",
    "same-group-two-names",
    "widen-unknown-name",
    "export-torch-output-is-input",
    "widen-folder-is-a-file",
    "npz-wrong-names",
    "widen-no-output",
]


@pytest.mark.parametrize(
    "argv, words", [c for c in CASES if c.id in REAL], ids=lambda v: "" if isinstance(v, list) else None
)
def test_real_process(corpus, tmp_path, argv, words):
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(corpus)
    res = subprocess.run(
        [sys.executable, "-m", "onnxgrow", *_argv(argv, corpus, out)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in lines[0]
    assert _snapshot(corpus) == before and _snapshot(out) == {}


def test_all_real_cases_exist():
    assert set(REAL) <= {c.id for c in CASES}


# ---------------------------------------------------------------------------------------------- not writable
def test_output_folder_not_writable(tmp_path, capsys):
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root (as in CI containers) writes anyway: the check cannot be shown
            pytest.skip(
                "running as root: a 0o555 folder is still writable (the 'file as a folder' cases cover "
                "an output folder that cannot be written)"
            )
        src = MODELS / "mlp.onnx"
        for argv in (
            ["widen", str(src), "-o", str(ro / "o.onnx"), "--all", "x2"],
            ["deepen", str(src), "-o", str(ro / "o.onnx"), "--after", "/fc1/Gemm"],
            ["export", str(src), "--to", "mxnet", "-o", str(ro / "o.onnx")],
            ["verify", str(src), str(src), "--save-inputs", str(ro / "in.npz")],
        ):
            rc, _, err = _run_main(argv, capsys)
            assert rc == 2 and len(err.strip().splitlines()) == 1, err
            assert "not writable" in err or "Permission denied" in err, err
            assert str(ro) in err, err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------------------------------------- ok cases nearby
def test_inspect_of_odd_models_is_not_an_error(corpus, capsys):
    """Reading is always allowed: inspect shows why groups cannot grow instead of failing."""
    for name, why in (("custom.onnx", "does not know"), ("quant.onnx", "quantised models are not supported yet")):
        rc, out, err = _run_main(["inspect", str(corpus / name), "--json"], capsys)
        assert rc == 0 and err == "", err
        assert why in out, out
