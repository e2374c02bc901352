"""MXNet 1.9 round trips: models made by MXNet are grown by onnxgrow and go back to Gluon to train.

The MXNet side runs in .venv-mxnet (tests/mxnet_driver.py, through subprocess; files carry the
models and arrays). Tests that need MXNet are skipped when .venv-mxnet/bin/python is missing
(`make .venv-mxnet/.installed` makes it; `make test` does so first). All MXNet work of this
file happens in two driver processes: `make` (module fixture `made`) and one `batch`
(module fixture `roundtrip`), to keep the file well under a minute and a half.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import readme_examples
from mxnet_zoo import CASES, REFUSED

from onnxgrow import OnnxGrowError, VerificationFailed, save
from onnxgrow.deepen import deepen_model
from onnxgrow.mxnet import RULES, TARGET_IR_VERSION, TARGET_OPSET, for_mxnet
from onnxgrow.widen import STRATEGIES, inspect_model, widen_model

ROOT = Path(__file__).resolve().parent.parent
MXPY = ROOT / ".venv-mxnet" / "bin" / "python"
DRIVER = ROOT / "tests" / "mxnet_driver.py"
TOL = 1e-5

needs_mxnet = pytest.mark.skipif(
    not MXPY.exists(),
    reason=".venv-mxnet/bin/python is missing: `make .venv-mxnet/.installed` creates the MXNet 1.9.1 environment",
)


def driver(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    res = subprocess.run([str(MXPY), str(DRIVER), *args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"mxnet_driver {' '.join(args)} failed:\n{res.stderr[-3000:]}"
    return res


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxgrow", *args], capture_output=True, text=True)


def ort_outputs(model, feeds: dict) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def normalised(ref: np.ndarray, got: np.ndarray) -> float:
    """Max abs difference over the output's magnitude (the measure `onnxgrow verify` reports)."""
    assert ref.shape == got.shape, f"shape {got.shape}, expected {ref.shape}"
    diff = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
    return diff / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-6)


def data_inputs(model) -> list[str]:
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    inits = {t.name for t in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


def new_unit_mask(old_shape: tuple[int, ...], new_shape: tuple[int, ...]) -> np.ndarray:
    """True where a grown weight holds a new unit (outside the original weight's box)."""
    mask = np.ones(new_shape, dtype=bool)
    mask[tuple(slice(0, s) for s in old_shape)] = False
    return mask


def static_encoder() -> onnx.ModelProto:
    """models/encoder.onnx with its dynamic batch fixed at 2 (MXNet's importer needs constant shapes)."""
    model = onnx.load(str(ROOT / "models" / "encoder.onnx"))
    for dim in model.graph.input[0].type.tensor_type.shape.dim:
        if dim.HasField("dim_param"):
            dim.ClearField("dim_param")
            dim.dim_value = 2
    return model


# ------------------------------------------------------------------------------ models made by MXNet


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """A Gluon MLP and CNN, trained 5 steps in MXNet and exported with mx.onnx.export_model."""
    if not MXPY.exists():
        pytest.skip("needs .venv-mxnet")
    out = tmp_path_factory.mktemp("mxnet_made")
    driver("make", str(out), "--steps", "5")
    return json.loads((out / "make.json").read_text())


@needs_mxnet
def test_mxnet_trained_and_exported(made):
    assert set(made) == {"mx_mlp", "mx_cnn"}
    for name, info in made.items():
        losses = info["train_losses"]
        assert losses[-1] < losses[0], f"{name}: training in MXNet did not lower the loss: {losses}"
        data = np.load(info["data"])
        model = onnx.load(info["onnx"])
        inits = {t.name for t in model.graph.initializer}
        assert inits <= {i.name for i in model.graph.input}, "MXNet lists its weights as graph inputs"
        got = ort_outputs(model, {data_inputs(model)[0]: data["x"]})
        assert normalised(data["gluon"], next(iter(got.values()))) <= TOL


@needs_mxnet
@pytest.mark.parametrize("name", ["mx_mlp", "mx_cnn"])
def test_inspect_accepts_mxnet_models(made, name):
    res = run_cli("inspect", made[name]["onnx"], "--json")
    assert res.returncode == 0, res.stderr
    groups = json.loads(res.stdout)["groups"]
    free = [g for g in groups if g["constraint"] != "blocked"]
    blocked = [g for g in groups if g["constraint"] == "blocked"]
    assert len(free) == {"mx_mlp": 2, "mx_cnn": 3}[name]
    assert len(blocked) == 1 and "graph output" in blocked[0]["reason"]
    table = run_cli("inspect", made[name]["onnx"])
    assert table.returncode == 0 and "g0" in table.stdout, table.stderr


@needs_mxnet
@pytest.mark.parametrize("name", ["mx_mlp", "mx_cnn"])
def test_widen_every_group_with_every_allowed_strategy(made, name):
    src = made[name]["onnx"]
    analysis = inspect_model(src)
    tried = 0
    for group in analysis.groups:
        if group.constraint == "blocked":
            continue
        for init in STRATEGIES:
            if group.allows(init, 2 * group.size) is not None:
                continue
            result = widen_model(src, {group.id: "x2"}, init=init)
            assert result.exact and result.report.passed, f"{group.id} --init {init}: {result.report.summary()}"
            assert result.report.worst_normalised <= TOL
            assert [(p.group.id, p.new_size, p.init) for p in result.plans] == [(group.id, 2 * group.size, init)]
            assert result.params_after > result.params_before
            tried += 1
    assert tried >= 2 * len(STRATEGIES)


@needs_mxnet
@pytest.mark.parametrize("name", ["mx_mlp", "mx_cnn"])
@pytest.mark.parametrize("block", ["identity", "residual"])
def test_deepen_after_every_relu(made, name, block):
    src = made[name]["onnx"]
    relus = [n.name for n in onnx.load(src).graph.node if n.op_type == "Relu"]
    assert relus
    for after in relus:
        result = deepen_model(src, after, block=block)
        assert result.exact and result.report.passed, f"after {after}: {result.report.summary()}"
        assert result.params_after > result.params_before


@needs_mxnet
def test_cli_widen_and_deepen_mxnet_model(made, tmp_path):
    src = made["mx_cnn"]["onnx"]
    wide, deep = tmp_path / "wide.onnx", tmp_path / "deep.onnx"
    res = run_cli("widen", src, "-o", str(wide), "--all", "x2", "--init", "net2net")
    assert res.returncode == 0 and "(exact)" in res.stdout, res.stdout + res.stderr
    relu = [n.name for n in onnx.load(str(wide)).graph.node if n.op_type == "Relu"][0]
    res = run_cli("deepen", str(wide), "-o", str(deep), "--after", relu, "--block", "residual")
    assert res.returncode == 0 and "(exact)" in res.stdout, res.stdout + res.stderr


# -------------------------------------------------------------- the round trip, in one MXNet process


@pytest.fixture(scope="module")
def roundtrip(made, tmp_path_factory) -> dict:
    """Grow each MXNet-made net with each strategy (widen all x2, deepen identity + residual),
    convert with for_mxnet, and have MXNet import, run and train them; also the CLI export and
    every zoo model. Returns what each test needs, with the driver's results."""
    work = tmp_path_factory.mktemp("mxnet_roundtrip")
    jobs: list[dict] = []
    cases: dict = {}

    def add(kind: str, key, job: dict) -> None:
        cases.setdefault(kind, {})[key] = len(jobs)
        jobs.append(job)

    for net, info in made.items():
        x = np.load(info["data"])["x"]
        feeds = {data_inputs(info["onnx"])[0]: x}
        np.savez(work / f"{net}_inputs.npz", **feeds)
        for init in STRATEGIES:
            wide = widen_model(info["onnx"], all="x2", init=init)
            relus = [n.name for n in wide.model.graph.node if n.op_type == "Relu"]
            deep = deepen_model(wide.model, relus[0], block="identity").model
            deep = deepen_model(deep, relus[-1], block="residual").model
            grown, converted = work / f"{net}_{init}.onnx", work / f"{net}_{init}_mx.onnx"
            save(deep, grown)
            save(for_mxnet(deep), converted)
            key = (net, init)
            cases.setdefault("paths", {})[key] = {
                "grown": grown,
                "feeds": feeds,
                "src": info["onnx"],
                "grads": work / f"{net}_{init}_grads.npz",
            }
            add(
                "run",
                key,
                {
                    "cmd": "run",
                    "args": {
                        "model": str(converted),
                        "inputs": str(work / f"{net}_inputs.npz"),
                        "out": str(work / f"{net}_{init}_out.npz"),
                    },
                },
            )
            add(
                "train",
                key,
                {
                    "cmd": "train",
                    "args": {
                        "model": str(converted),
                        "data": info["data"],
                        "steps": 10,
                        "lr": 0.05,
                        "grads": str(work / f"{net}_{init}_grads.npz"),
                    },
                },
            )

    # a transformer encoder (torch export): with static input sizes its shape arithmetic folds away
    # and its LayerNorms become plain arithmetic; widen the feed-forward layer, add a residual block
    enc = static_encoder()
    grown = widen_model(enc, {"/layer/linear1/MatMul": "x2"}, init="noise").model
    grown = deepen_model(grown, "/layer/Relu", block="residual").model
    save(grown, work / "enc.onnx")
    save(for_mxnet(grown), work / "enc_mx.onnx")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (2, 8)).astype(np.int64)
    np.savez(work / "enc_inputs.npz", ids=ids)
    np.savez(work / "enc_data.npz", x=ids, y=rng.standard_normal((2, 2)).astype(np.float32))
    cases["encoder"] = {"grown": work / "enc.onnx", "feeds": {"ids": ids}}
    add(
        "run",
        "encoder",
        {
            "cmd": "run",
            "args": {
                "model": str(work / "enc_mx.onnx"),
                "inputs": str(work / "enc_inputs.npz"),
                "out": str(work / "enc_out.npz"),
            },
        },
    )
    add(
        "train",
        "encoder",
        {
            "cmd": "train",
            "args": {"model": str(work / "enc_mx.onnx"), "data": str(work / "enc_data.npz"), "steps": 10, "lr": 0.05},
        },
    )

    # the command line: export --to mxnet of a grown model
    grown = cases["paths"][("mx_cnn", "net2net")]["grown"]
    cli_out = work / "cli_mx.onnx"
    cli = run_cli("export", str(grown), "--to", "mxnet", "-o", str(cli_out))
    cases["cli"] = cli
    if cli.returncode == 0:
        add(
            "run",
            "cli",
            {
                "cmd": "run",
                "args": {
                    "model": str(cli_out),
                    "inputs": str(work / "mx_cnn_inputs.npz"),
                    "out": str(work / "cli_out.npz"),
                },
            },
        )

    # one small model per op family
    cases["zoo_cases"] = {}
    for i, (name, build) in enumerate(CASES.items()):
        model, feeds = build()
        try:
            converted = for_mxnet(model)
        except Exception as exc:  # reported by the zoo test
            cases["zoo_cases"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        path, inputs = work / f"zoo{i}.onnx", work / f"zoo{i}_in.npz"
        save(converted, path)
        np.savez(inputs, **feeds)
        cases["zoo_cases"][name] = {
            "model": model,
            "converted": converted,
            "feeds": feeds,
            "out": work / f"zoo{i}_out.npz",
        }
        add(
            "zoo",
            name,
            {"cmd": "run", "args": {"model": str(path), "inputs": str(inputs), "out": str(work / f"zoo{i}_out.npz")}},
        )

    (work / "jobs.json").write_text(json.dumps(jobs))
    driver("batch", str(work / "jobs.json"), str(work / "results.json"), timeout=240)
    results = json.loads((work / "results.json").read_text())
    cases["results"] = results
    cases["work"] = work
    return cases


def _result(roundtrip: dict, kind: str, key) -> dict:
    res = roundtrip["results"][roundtrip[kind][key]]
    assert res["ok"], f"MXNet failed on {kind} {key}: {res['error']}\n{res.get('traceback', '')}"
    return res["result"]


NET_INITS = [(net, init) for net in ("mx_mlp", "mx_cnn") for init in STRATEGIES]


@needs_mxnet
@pytest.mark.parametrize("net, init", NET_INITS)
def test_gluon_block_matches_onnxruntime(roundtrip, net, init):
    """Gluon net -> ONNX -> widened and deepened -> for_mxnet -> Gluon: same outputs as onnxruntime."""
    _result(roundtrip, "run", (net, init))
    paths = roundtrip["paths"][(net, init)]
    want = ort_outputs(paths["grown"], paths["feeds"])
    got = np.load(roundtrip["work"] / f"{net}_{init}_out.npz")
    for name, ref in want.items():
        assert normalised(ref, got[name]) <= TOL, name


@needs_mxnet
@pytest.mark.parametrize("net, init", NET_INITS)
def test_training_in_mxnet_lowers_the_loss(roundtrip, net, init):
    res = _result(roundtrip, "train", (net, init))
    assert res["loss_after"] < res["loss_before"], res
    losses = res["train_losses"]
    assert losses[-1] < losses[0], losses


@needs_mxnet
@pytest.mark.parametrize("net, init", NET_INITS)
def test_gradients_of_new_units(roundtrip, net, init):
    """noise and net2net: the new units learn; zero with Relu: every new weight's gradient is 0."""
    _result(roundtrip, "train", (net, init))
    paths = roundtrip["paths"][(net, init)]
    grads = np.load(paths["grads"])
    old = {t.name: tuple(t.dims) for t in onnx.load(paths["src"]).graph.initializer}
    new_total, old_total, grown = 0.0, 0.0, 0
    for name, shape in old.items():
        if name not in grads.files:
            continue
        g = grads[name]
        if g.shape == shape:
            old_total += float(np.abs(g).sum())
            continue
        grown += 1
        mask = new_unit_mask(shape, g.shape)
        new_total += float(np.abs(g[mask]).sum())
        old_total += float(np.abs(g[~mask]).sum())
    assert grown >= 3, "widening should have grown several weights"
    assert old_total > 0
    if init == "zero":
        assert new_total == 0.0, f"zero-initialised new units got gradient {new_total}"
    else:
        assert new_total > 1e-6, f"{init}: new units got no gradient"


@needs_mxnet
def test_grown_transformer_encoder_in_mxnet(roundtrip):
    """A torch transformer encoder, widened and deepened, runs in Gluon as in onnxruntime and trains."""
    _result(roundtrip, "run", "encoder")
    want = ort_outputs(roundtrip["encoder"]["grown"], roundtrip["encoder"]["feeds"])
    got = np.load(roundtrip["work"] / "enc_out.npz")
    for name, ref in want.items():
        assert normalised(ref, got[name]) <= TOL, name
    res = _result(roundtrip, "train", "encoder")
    assert res["loss_after"] < res["loss_before"], res


@needs_mxnet
def test_cli_export_to_mxnet_imports(roundtrip):
    cli = roundtrip["cli"]
    assert cli.returncode == 0, cli.stderr
    out = roundtrip["work"] / "cli_mx.onnx"
    assert cli.stdout.strip() == f"wrote {out}"
    _result(roundtrip, "run", "cli")
    paths = roundtrip["paths"][("mx_cnn", "net2net")]
    want = ort_outputs(paths["grown"], paths["feeds"])
    got = np.load(roundtrip["work"] / "cli_out.npz")
    for name, ref in want.items():
        assert normalised(ref, got[name]) <= TOL


@needs_mxnet
@pytest.mark.parametrize("case", list(CASES))
def test_zoo_op_imports_into_mxnet(roundtrip, case):
    """Each op for_mxnet converts: MXNet computes what onnxruntime computes on the original model."""
    entry = roundtrip["zoo_cases"][case]
    assert "error" not in entry, entry.get("error")
    _result(roundtrip, "zoo", case)
    want = ort_outputs(entry["model"], entry["feeds"])
    got = np.load(entry["out"])
    for name, ref in want.items():
        assert normalised(ref, got[name]) <= TOL, name


# ----------------------------------------------------------------- for_mxnet without MXNet itself


def test_for_mxnet_structure():
    model, _ = CASES["Conv SAME_UPPER stride 2"]()
    before = model.SerializeToString()
    out = for_mxnet(model)
    assert model.SerializeToString() == before, "the caller's model must not change"
    assert [(o.domain, o.version) for o in out.opset_import] == [("", TARGET_OPSET)]
    assert out.ir_version == TARGET_IR_VERSION
    inputs = [i.name for i in out.graph.input]
    inits = [t.name for t in out.graph.initializer]
    assert inputs[0] == "x" and set(inits) <= set(inputs), "every initializer is a graph input, data first"
    names = [n.name for n in out.graph.node]
    assert all(names) and len(set(names)) == len(names)
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert "auto_pad" not in attrs and attrs["kernel_shape"] == [3, 3] and attrs["pads"] == [1, 1, 1, 1]
    onnx.checker.check_model(out, full_check=True)
    again = for_mxnet(out)  # already in MXNet's dialect: converts to itself
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in out.graph.node]


def test_for_mxnet_rewrites_opset13_forms():
    model, _ = CASES["ReduceSum axes input, keepdims 0"]()
    node = for_mxnet(model).graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert list(node.input) == ["x"] and attrs == {"axes": [0, 2], "keepdims": 0}
    model, _ = CASES["Gemm without C"]()
    gemm = for_mxnet(model).graph.node[0]
    assert len(gemm.input) == 3
    model, _ = CASES["ReduceMean default keepdims"]()
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in for_mxnet(model).graph.node[0].attribute}
    assert attrs["keepdims"] == 1, "MXNet defaults to keepdims=0: it must be written"


@pytest.mark.parametrize("case", list(REFUSED))
def test_for_mxnet_refuses_with_one_line(case):
    build, words = REFUSED[case]
    model, _ = build()
    with pytest.raises(OnnxGrowError) as info:
        for_mxnet(model)
    text = str(info.value)
    assert "\n" not in text and not isinstance(info.value, VerificationFailed)
    node = next(n for n in model.graph.node if n.op_type.lower() == words[0])
    assert f"node {node.name!r} ({node.op_type})" in text, text
    for word in words[1:]:
        assert word in text, text


def test_for_mxnet_refuses_dynamic_shapes_of_the_encoder():
    with pytest.raises(OnnxGrowError) as info:
        for_mxnet(ROOT / "models" / "encoder.onnx")
    text = str(info.value)
    assert "\n" not in text and "(Shape)" in text and "constant shapes" in text and "more node(s)" in text
    out = for_mxnet(static_encoder())  # with a static batch it converts
    ops = {n.op_type for n in out.graph.node}
    assert not ops & {"Shape", "Slice", "LayerNormalization", "Constant"}


def test_for_mxnet_verifies_what_it_converts(monkeypatch):
    """A wrong rule is caught by the onnxruntime check: VerificationFailed (exit status 1)."""

    def wrong(node, ctx):
        return [onnx.helper.make_node("Sigmoid", list(node.input), list(node.output), name=node.name)]

    monkeypatch.setitem(RULES, "Relu", wrong)
    model, _ = CASES["Relu"]()
    with pytest.raises(VerificationFailed, match="nothing was written"):
        for_mxnet(model)
    assert for_mxnet(model, check=False).graph.node[0].op_type == "Sigmoid"


def test_cli_export_refuses_an_op_mxnet_cannot_take(tmp_path):
    """A residual block with GELU (Erf below opset 20) cannot go to MXNet: exit 2, one line, no file."""
    deep = tmp_path / "deep.onnx"
    res = run_cli(
        "deepen",
        str(ROOT / "models" / "mlp.onnx"),
        "-o",
        str(deep),
        "--after",
        "/Relu",
        "--block",
        "residual",
        "--activation",
        "gelu",
    )
    assert res.returncode == 0, res.stderr
    erf = next(n for n in onnx.load(str(deep)).graph.node if n.op_type == "Erf")
    out = tmp_path / "deep_mx.onnx"
    res = run_cli("export", str(deep), "--to", "mxnet", "-o", str(out))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"node {erf.name!r} (Erf)" in lines[0] and "no translation" in lines[0], lines
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["deep.onnx"]


# ---------------------------------------------------------------------------------- the README


def _mxnet_section() -> str:
    """The README's mxnet section."""
    return readme_examples.section("```python mxnet")


@needs_mxnet
def test_readme_mxnet_section_runs(tmp_path):
    section = _mxnet_section()
    shutil.copytree(ROOT / "models", tmp_path / "models")
    (tmp_path / "out").mkdir()
    readme_examples.run_all(section, tmp_path)
    for code in re.findall(r"```python mxnet\n(.*?)```", section, flags=re.S):
        res = subprocess.run([str(MXPY), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "gluon_mlp.onnx").exists()
    res = run_cli(
        "widen",
        str(tmp_path / "out" / "gluon_mlp.onnx"),
        "-o",
        str(tmp_path / "out" / "gluon_wide.onnx"),
        "--all",
        "x2",
    )
    assert res.returncode == 0 and "16 -> 32" in res.stdout and "(exact)" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("exponent, ops", [(2.0, ["Mul"]), (3.0, ["Mul", "Mul"]), (0.5, ["Sqrt"]), (4.0, ["Pow"])])
def test_for_mxnet_writes_small_powers_without_an_exponent_to_train(exponent, ops):
    """MXNet trains every constant input: Pow's exponent would get the gradient x**p * ln(x), NaN for x < 0."""
    model, _ = CASES["Pow 2 -> Mul"]()
    model.graph.initializer[0].CopyFrom(
        onnx.numpy_helper.from_array(np.array(exponent, np.float32), model.graph.initializer[0].name)
    )
    assert [n.op_type for n in for_mxnet(model, check=False).graph.node] == ops  # zoo cases check the values


# ---------------------------------------------------------------------- models past protobuf's 2 GB limit


def test_export_past_the_protobuf_limit_writes_external_data_that_mxnet_reads(tmp_path, monkeypatch, capsys):
    """A converted model past the 2 GB limit is written with external data (OUT.data), as `save` does for every
    command; MXNet's importer loads the file with onnx.load, which reads the data file next to it. The limit is
    lowered so that a small grown model is past it (a real 2 GB model would need about 8 GB of memory here)."""
    from onnxgrow import io as onnxgrow_io
    from onnxgrow.cli import main

    grown, mx = tmp_path / "grown.onnx", tmp_path / "grown_mx.onnx"
    save(widen_model(ROOT / "models" / "cnn.onnx", all="x2").model, grown)
    size = grown.stat().st_size
    monkeypatch.setattr(onnxgrow_io, "PROTOBUF_LIMIT", size // 2)
    assert main(["export", str(grown), "--to", "mxnet", "-o", str(mx)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {mx}"
    data = tmp_path / "grown_mx.onnx.data"
    assert data.exists() and data.stat().st_size > size // 2 and mx.stat().st_size < size // 4
    header = onnx.load(str(mx), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in header.graph.initializer)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    want = ort_outputs(grown, feeds)
    got = ort_outputs(mx, feeds)
    for name, ref in want.items():
        assert normalised(ref, got[name]) <= TOL
    if not MXPY.exists():
        pytest.skip("needs .venv-mxnet for the import")
    np.savez(tmp_path / "in.npz", **feeds)
    driver("run", str(mx), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"))
    got = np.load(tmp_path / "out.npz")
    for name, ref in want.items():
        assert normalised(ref, got[name]) <= TOL, name


def test_an_invalid_converted_model_is_an_internal_error(tmp_path, monkeypatch):
    """A rule that writes invalid ONNX is onnxgrow's bug, not the user's: exit status 3, one line."""
    from onnxgrow.cli import main

    def broken(node, ctx):
        return [onnx.helper.make_node("Relu", list(node.input), list(node.output), name=node.name, alpha=1.0)]

    monkeypatch.setitem(RULES, "Relu", broken)
    model, _ = CASES["Relu"]()
    src, out = tmp_path / "relu.onnx", tmp_path / "relu_mx.onnx"
    save(model, src)
    assert main(["export", str(src), "--to", "mxnet", "-o", str(out)]) == 3
    assert not out.exists()
