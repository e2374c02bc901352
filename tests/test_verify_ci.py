"""`verify` in CI: against outputs the framework saved (--load-outputs, --save-outputs), against the module
`export --to torch` writes (.pt) and MXNet's Gluon import, a JUnit report (--junit), exit statuses that tell a
bad model (2) from a bug in onnxgrow (3), and the README's CI job (examples/ci/validate_model.sh), run here.

Numbers are checked against the framework's own outputs (PyTorch's, computed here) and onnxruntime's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import readme_examples

from onnxgrow import save, verify
from onnxgrow.cli import main

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MXPY = ROOT / ".venv-mxnet" / "bin" / "python"
torch.set_num_threads(2)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxgrow", *args], capture_output=True, text=True, cwd=cwd, env=readme_examples.env()
    )


def ort_run(model: Path | str, feeds: dict) -> dict[str, np.ndarray]:
    """onnxruntime as verify runs it (graph optimisations and weight pre-packing off: bit for bit the same)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return root


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.fc1(x))
        return self.fc2(h), h.sum(dim=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A torch module with two outputs exported to ONNX, its inputs and PyTorch's own outputs saved by name."""
    work = tmp_path_factory.mktemp("ci")
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            str(work / "net.onnx"),
            dynamo=False,
            input_names=["x"],
            output_names=["logits", "energy"],
            dynamic_axes={"x": {0: "batch"}},
        )
    with torch.no_grad():
        logits, energy = net(x)
    np.savez(work / "inputs.npz", x=x.numpy())
    np.savez(work / "torch.npz", logits=logits.numpy(), energy=energy.numpy())
    return {"work": work, "net": net, "x": x.numpy(), "logits": logits.numpy(), "energy": energy.numpy()}


# ------------------------------------------------------------------------- --load-outputs, --save-outputs


def test_model_against_the_frameworks_outputs(exported):
    """The ONNX file against PyTorch's outputs: each output's error is |onnxruntime - PyTorch|."""
    w = exported["work"]
    rep = verify(w / "net.onnx", load_outputs=str(w / "torch.npz"), load_inputs=str(w / "inputs.npz"))
    assert rep.passed and rep.reference == f"outputs {w / 'torch.npz'}"
    got = ort_run(w / "net.onnx", {"x": exported["x"]})
    for o in rep.outputs:
        want = np.abs(got[o.name].astype(np.float64) - exported[o.name]).max()
        assert o.max_abs == pytest.approx(want, abs=1e-12)
    assert {o.name for o in rep.outputs} == {"logits", "energy"}


def test_drift_from_the_frameworks_outputs_fails_with_exit_1(exported, tmp_path):
    """The ONNX file changed (one weight by 1e-3): it no longer computes what PyTorch computed."""
    w = exported["work"]
    model = onnx.load(str(w / "net.onnx"))
    weight = next(t for t in model.graph.initializer if t.name == "fc2.weight")
    arr = onnx.numpy_helper.to_array(weight).copy()
    arr[0, 0] += 1e-3
    weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
    save(model, tmp_path / "drifted.onnx")
    res = cli(
        "verify",
        str(tmp_path / "drifted.onnx"),
        "--load-outputs",
        str(w / "torch.npz"),
        "--load-inputs",
        str(w / "inputs.npz"),
        "--json",
        "--junit",
        str(tmp_path / "report.xml"),
    )
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    by_name = {o["name"]: o for o in report["outputs"]}
    assert by_name["logits"]["passed"] is False and by_name["energy"]["passed"] is True
    want = np.abs(
        ort_run(tmp_path / "drifted.onnx", {"x": exported["x"]})["logits"].astype(np.float64) - exported["logits"]
    ).max()
    assert by_name["logits"]["max_abs"] == pytest.approx(want, rel=1e-9)
    suite = junit(tmp_path / "report.xml").find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1" and suite.get("errors") == "0"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["output logits"]
    assert "exceeds tolerance" in failed[0].find("failure").get("message")
    assert f"{want:.3g}" in failed[0].find("failure").text


def test_save_outputs_then_load_them(tmp_path):
    """--save-outputs with one model only records (keyed by output name, with the inputs); a later run checks
    the model (or a copy of it, perturbed) against them, as Polygraphy's --save-outputs/--load-outputs do."""
    ins, outs = tmp_path / "in.npz", tmp_path / "out.npz"
    res = cli("verify", str(MODELS / "mlp.onnx"), "--save-inputs", str(ins), "--save-outputs", str(outs))
    assert res.returncode == 0 and "nothing was compared" in res.stdout, res.stderr
    saved = np.load(outs)
    assert saved.files == ["logits"]
    assert np.array_equal(saved["logits"], ort_run(MODELS / "mlp.onnx", {"x": np.load(ins)["x"]})["logits"])
    res = cli("verify", str(MODELS / "mlp.onnx"), "--load-outputs", str(outs), "--load-inputs", str(ins))
    assert res.returncode == 0 and "PASS" in res.stdout, res.stderr
    # the same --seed gives the same inputs: --load-inputs may be left out
    res = cli("verify", str(MODELS / "mlp.onnx"), "--load-outputs", str(outs))
    assert res.returncode == 0, res.stderr
    res = cli("verify", str(MODELS / "mlp.onnx"), "--load-outputs", str(outs), "--seed", "2")
    assert res.returncode == 1, res.stderr


def test_save_outputs_of_several_iterations(tmp_path):
    ins, outs = tmp_path / "in.npz", tmp_path / "out.npz"
    res = cli(
        "verify",
        str(MODELS / "cnn.onnx"),
        str(MODELS / "cnn.onnx"),
        "--iterations",
        "3",
        "--save-inputs",
        str(ins),
        "--save-outputs",
        str(outs),
    )
    assert res.returncode == 0, res.stderr
    saved, feeds = np.load(outs), np.load(ins)
    assert sorted(saved.files) == ["0/logits", "1/logits", "2/logits"]
    for k in range(3):
        want = ort_run(MODELS / "cnn.onnx", {"x": feeds[f"{k}/x"]})["logits"]
        assert np.array_equal(saved[f"{k}/logits"], want)
    rep = verify(MODELS / "cnn.onnx", load_outputs=str(outs), load_inputs=str(ins))
    assert rep.passed and rep.iterations == 3


def test_save_outputs_is_not_written_when_the_check_fails(exported, tmp_path):
    """A record later runs are checked against must not come from a failed check: a drifted model against
    PyTorch's outputs (exit 1) leaves no --save-outputs file; the inputs are saved (they reproduce the failure)."""
    w = exported["work"]
    model = onnx.load(str(w / "net.onnx"))
    bias = next(t for t in model.graph.initializer if t.name == "fc2.bias")
    arr = onnx.numpy_helper.to_array(bias).copy()
    arr[1] += 1e-2
    bias.CopyFrom(onnx.numpy_helper.from_array(arr, bias.name))
    save(model, tmp_path / "drifted.onnx")
    res = cli(
        "verify",
        str(w / "net.onnx"),
        str(tmp_path / "drifted.onnx"),
        "--load-inputs",
        str(w / "inputs.npz"),
        "--save-outputs",
        str(tmp_path / "ref.npz"),
        "--save-inputs",
        str(tmp_path / "in.npz"),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert not (tmp_path / "ref.npz").exists() and (tmp_path / "in.npz").exists()
    res = cli(
        "verify",
        str(tmp_path / "drifted.onnx"),
        "--load-outputs",
        str(w / "torch.npz"),
        "--load-inputs",
        str(w / "inputs.npz"),
        "--save-outputs",
        str(tmp_path / "ref.npz"),
    )
    assert res.returncode == 1 and not (tmp_path / "ref.npz").exists(), res.stdout + res.stderr


def test_save_outputs_against_loaded_outputs_records_the_model(exported, tmp_path):
    """Against PyTorch's outputs, --save-outputs records what the checked model computes (onnxruntime's numbers,
    not a copy of the loaded file), as Polygraphy saves the outputs of the runner it ran."""
    w = exported["work"]
    rep = verify(
        w / "net.onnx",
        load_outputs=str(w / "torch.npz"),
        load_inputs=str(w / "inputs.npz"),
        save_outputs=str(tmp_path / "onnx.npz"),
        atol=1e-4,
    )
    assert rep.passed
    saved = np.load(tmp_path / "onnx.npz")
    got = ort_run(w / "net.onnx", {"x": exported["x"]})
    assert sorted(saved.files) == ["energy", "logits"]
    for name in saved.files:
        assert np.array_equal(saved[name], got[name])


def test_saving_over_an_input_file_is_refused(exported, tmp_path):
    w = exported["work"]
    shutil.copy(w / "inputs.npz", tmp_path / "in.npz")
    before = (tmp_path / "in.npz").read_bytes()
    res = cli(
        "verify",
        str(w / "net.onnx"),
        "--load-inputs",
        str(tmp_path / "in.npz"),
        "--save-outputs",
        str(tmp_path / "in.npz"),
    )
    assert res.returncode == 2 and "never overwrites" in res.stderr, res.stderr
    res = cli(
        "verify",
        str(w / "net.onnx"),
        str(w / "net.onnx"),
        "--load-inputs",
        str(tmp_path / "in.npz"),
        "--junit",
        str(tmp_path / "in.npz"),
    )
    assert res.returncode == 2 and "never overwrites" in res.stderr, res.stderr
    assert (tmp_path / "in.npz").read_bytes() == before


@pytest.mark.parametrize(
    "case, words",
    [
        ("two models", ["--load-outputs", "not two"]),
        ("wrong names", ["--load-outputs", "missing logits", "unknown y"]),
        ("too few runs", ["--load-outputs", "1 run(s)", "2 set(s)"]),
        ("no model to compare", ["--load-outputs", "--save-outputs"]),
        ("not an npz", ["--load-outputs", "not an .npz file", "--save-outputs writes one"]),
    ],
)
def test_load_outputs_refusals_are_one_line_exit_2(tmp_path, case, words):
    mlp = str(MODELS / "mlp.onnx")
    np.savez(tmp_path / "y.npz", y=np.zeros((2, 10), np.float32))
    np.savez(tmp_path / "one.npz", logits=np.zeros((2, 10), np.float32))
    (tmp_path / "bad.npz").write_text("not a zip")
    argv = {
        "two models": [mlp, mlp, "--load-outputs", str(tmp_path / "one.npz")],
        "wrong names": [mlp, "--load-outputs", str(tmp_path / "y.npz")],
        "too few runs": [mlp, "--load-outputs", str(tmp_path / "one.npz"), "--iterations", "2"],
        "no model to compare": [mlp],
        "not an npz": [mlp, "--load-outputs", str(tmp_path / "bad.npz")],
    }[case]
    res = cli("verify", *argv)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in lines[0], lines[0]


# --------------------------------------------------------------------------- .pt and MXNet candidates


def test_model_against_its_exported_torch_module(tmp_path):
    """`verify MODEL MODEL.pt`: the module export --to torch wrote runs in PyTorch on the same inputs."""
    grown, pt = tmp_path / "wide.onnx", tmp_path / "wide.pt"
    assert main(["widen", str(MODELS / "cnn.onnx"), "-o", str(grown), "--all", "x2"]) == 0
    assert main(["export", str(grown), "--to", "torch", "-o", str(pt)]) == 0
    rep = verify(grown, pt, save_inputs=str(tmp_path / "in.npz"))
    assert rep.passed and rep.candidate == f"{pt} (torch)"
    from onnxgrow.torch import load_module

    x = np.load(tmp_path / "in.npz")["x"]
    with torch.no_grad():
        mine = load_module(pt)(torch.from_numpy(x)).numpy()
    want = np.abs(ort_run(grown, {"x": x})["logits"].astype(np.float64) - mine).max()
    assert rep.outputs[0].max_abs == pytest.approx(want, abs=1e-12)


def test_a_module_that_computes_something_else_fails(tmp_path):
    """A .pt whose weights changed after export (training went on, a wrong file): exit 1, the output named."""
    from onnxgrow.torch import load_module, save_module

    pt = tmp_path / "cnn.pt"
    assert main(["export", str(MODELS / "cnn.onnx"), "--to", "torch", "-o", str(pt)]) == 0
    module = load_module(pt)
    with torch.no_grad():
        next(module.parameters()).add_(0.05)
    save_module(module, tmp_path / "changed.pt")
    res = cli("verify", str(MODELS / "cnn.onnx"), str(tmp_path / "changed.pt"), "--junit", str(tmp_path / "j.xml"))
    assert res.returncode == 1 and "FAIL" in res.stdout and "(torch)" in res.stdout, res.stdout + res.stderr
    assert junit(tmp_path / "j.xml").find("testsuite").get("failures") == "1"


def test_a_pt_against_saved_outputs_is_refused_with_the_command_to_use(exported, tmp_path):
    """Saved outputs check an ONNX file; a .pt is checked against the ONNX file it was exported from."""
    w = exported["work"]
    torch.save(exported["net"], tmp_path / "net.pt")
    res = cli("verify", str(tmp_path / "net.pt"), "--load-outputs", str(w / "torch.npz"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--load-outputs" in res.stderr and "verify MODEL.onnx" in res.stderr


def test_a_pt_that_is_not_a_module_is_bad_input(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "state.pt")
    res = cli("verify", str(MODELS / "cnn.onnx"), str(tmp_path / "state.pt"))
    assert res.returncode == 2 and "holds a dict, not a torch module" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not MXPY.exists(), reason=".venv-mxnet is missing (make .venv-mxnet/.installed)")
def test_model_against_its_mxnet_gluon_import(tmp_path):
    """`verify MODEL MODEL_mx.onnx --candidate-runtime mxnet`: the file export --to mxnet wrote, imported by
    MXNet's Gluon importer in .venv-mxnet, on the same inputs; a file with a changed weight fails."""
    grown, mx = tmp_path / "wide.onnx", tmp_path / "wide_mx.onnx"
    assert main(["widen", str(MODELS / "cnn.onnx"), "-o", str(grown), "--all", "x2"]) == 0
    assert main(["export", str(grown), "--to", "mxnet", "-o", str(mx)]) == 0
    changed = onnx.load(str(mx))
    w = changed.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.reshape(-1)[0] += 0.5
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    save(changed, tmp_path / "changed_mx.onnx")
    res = cli("verify", str(grown), str(mx), "--candidate-runtime", "mxnet", "--json", "--iterations", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["candidate"] == f"{mx} (mxnet)" and report["iterations"] == 2 and report["passed"]
    assert 0 < report["outputs"][0]["max_abs"] < 1e-4  # MXNet's kernels round differently: not bit for bit
    res = cli("verify", str(grown), str(tmp_path / "changed_mx.onnx"), "--candidate-runtime", "mxnet")
    assert res.returncode == 1, res.stdout + res.stderr


def test_mxnet_candidate_without_mxnet_is_one_line(tmp_path):
    res = cli(
        "verify",
        str(MODELS / "cnn.onnx"),
        str(MODELS / "cnn.onnx"),
        "--candidate-runtime",
        "mxnet",
        "--mxnet-python",
        str(tmp_path / "nope" / "python"),
    )
    assert res.returncode == 2 and "--mxnet-python" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ JUnit, exit 3


def test_junit_of_a_passing_run_lists_every_output(exported, tmp_path):
    w = exported["work"]
    res = cli("verify", str(w / "net.onnx"), str(w / "net.onnx"), "--junit", str(tmp_path / "ok.xml"))
    assert res.returncode == 0, res.stderr
    root = junit(tmp_path / "ok.xml")
    suite = root.find("testsuite")
    assert root.get("tests") == suite.get("tests") == "2" and suite.get("failures") == "0"
    assert sorted(c.get("name") for c in suite.iter("testcase")) == ["output energy", "output logits"]
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["provider"] == "cpu" and props["candidate"].endswith("(onnxruntime)")


def test_junit_of_bad_input_is_an_error(tmp_path):
    res = cli("verify", str(MODELS / "mlp.onnx"), str(tmp_path / "missing.onnx"), "--junit", str(tmp_path / "e.xml"))
    assert res.returncode == 2, res.stderr
    suite = junit(tmp_path / "e.xml").find("testsuite")
    assert suite.get("errors") == "1" and suite.get("tests") == "1"
    error = suite.find("testcase").find("error")
    assert "no such file" in error.get("message") and error.get("type") == "OnnxGrowError"


def test_an_internal_error_exits_3_not_2(tmp_path, monkeypatch, capsys):
    """A bug (an unexpected exception) is not the user's bad input: exit status 3, one line, and the JUnit report
    calls it an internal error."""
    import importlib

    v = importlib.import_module("onnxgrow.verify")  # the module (the package's `verify` is the function)

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(v, "compare", broken)
    rc = main(["verify", str(MODELS / "mlp.onnx"), str(MODELS / "mlp.onnx"), "--junit", str(tmp_path / "bug.xml")])
    err = capsys.readouterr().err
    assert rc == 3 and err.startswith("onnxgrow: internal error: KeyError") and len(err.strip().splitlines()) == 1
    error = junit(tmp_path / "bug.xml").find("testsuite").find("testcase").find("error")
    assert error.get("message").startswith("internal error") and error.get("type") == "KeyError"


def test_help_documents_the_exit_statuses():
    text = " ".join(cli("--help").stdout.split())  # argparse wraps lines
    assert "2 bad usage or a bad model" in text and "3 an internal error" in text


# ------------------------------------------------------------------------------ the README's CI job


def _ci_section() -> str:
    return readme_examples.section("## Validate models in CI")


def _ci_job() -> dict:
    """The README's GitHub Actions job (which must be examples/ci/github-actions.yml, byte for byte)."""
    yaml = pytest.importorskip("yaml")
    block = re.search(r"```yaml\n(.*?)```", _ci_section(), flags=re.S).group(1)
    assert block == (ROOT / "examples" / "ci" / "github-actions.yml").read_text()
    workflow = yaml.safe_load(block)
    assert workflow.get("on", workflow.get(True)) == ["push", "pull_request"]  # YAML 1.1 reads `on` as true
    (job,) = workflow["jobs"].values()
    return job


def _run_job(job: dict, checkout: Path, **env: str) -> tuple[int, str]:
    """Run the job's `run:` steps in order in `checkout` as GitHub Actions runs them (bash -e, the job's env), up to
    the first that fails; the install step is checked, not run (this environment has onnxgrow and torch). `uses:`
    steps are actions of GitHub's own: the report step's files must exist whatever happened (`if: always()`)."""
    environ = {**readme_examples.env(), **{k: str(v) for k, v in job.get("env", {}).items()}, **env}
    status, log = 0, ""
    for step in job["steps"]:
        if "run" in step:
            if step["run"].startswith("pip install"):
                assert step["run"] == "pip install '.[torch]'"
                continue
            if status != 0 and step.get("if") != "always()":
                continue
            res = subprocess.run(
                ["bash", "-e", "-c", step["run"]], cwd=checkout, capture_output=True, text=True, env=environ
            )
            log += res.stdout + res.stderr
            status = status or res.returncode
        elif "junit" in step["uses"]:
            assert step.get("if") == "always()"
            assert list(checkout.glob(step["with"]["report_paths"])), "no JUnit report for the CI system to show"
    return status, log


@pytest.fixture
def checkout(tmp_path) -> Path:
    """What actions/checkout gives the job: the repository's examples/ (the rest is not needed by the steps)."""
    (tmp_path / "repo").mkdir()
    shutil.copytree(ROOT / "examples", tmp_path / "repo" / "examples")
    return tmp_path / "repo"


def test_readme_ci_job_passes_then_fails_when_the_committed_onnx_file_drifts(checkout):
    """The README's job as it is: PyTorch's outputs recorded, the fresh ONNX file and the exported .pt checked
    against them (exit 0, a JUnit report each). Then with ONNX_MODEL naming a committed file that drifted (one
    weight of the classifier changed by 0.01) the job fails with exit 1, the output named in the JUnit report,
    and the check after it does not run."""
    job = _ci_job()
    status, log = _run_job(job, checkout)
    assert status == 0, log
    for report in ("junit-onnx.xml", "junit-torch.xml"):
        suite = junit(checkout / "ci-out" / report).find("testsuite")
        assert suite.get("tests") == "1" and suite.get("failures") == "0" and suite.get("errors") == "0"
    fresh = onnx.load(str(checkout / "ci-out" / "model.onnx"))
    gemm = next(n for n in fresh.graph.node if n.op_type == "Gemm")
    weight = next(t for t in fresh.graph.initializer if t.name == gemm.input[1])
    arr = onnx.numpy_helper.to_array(weight).copy()
    arr[0, 0] += 0.01
    weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
    (checkout / "models").mkdir()
    save(fresh, checkout / "models" / "classifier.onnx")
    shutil.rmtree(checkout / "ci-out")
    status, log = _run_job(job, checkout, ONNX_MODEL="models/classifier.onnx")
    assert status == 1, log
    suite = junit(checkout / "ci-out" / "junit-onnx.xml").find("testsuite")
    assert suite.get("failures") == "1"
    assert suite.find("testcase").get("name") == "output logits" and suite.find("testcase").find("failure") is not None
    assert not (checkout / "ci-out" / "junit-torch.xml").exists(), "the job stops at the first failed check"


def test_ci_script_refuses_a_missing_committed_file_with_exit_2(checkout):
    res = subprocess.run(
        ["examples/ci/validate_model.sh", "ci-out", "models/none.onnx"],
        cwd=checkout,
        capture_output=True,
        text=True,
        env=readme_examples.env(),
    )
    assert res.returncode == 2 and "models/none.onnx" in res.stderr, res.stdout + res.stderr
    error = junit(checkout / "ci-out" / "junit-onnx.xml").find("testsuite").find("testcase").find("error")
    assert "no such file" in error.get("message") or "does not exist" in error.get("message")
