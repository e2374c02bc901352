"""The growth checks judge each output's error against that output's size (issue 13.2).

A DenseNet in the Caffe2-era form (opset 9; tests/onnx_graphs.py `caffe2_densenet`) with random weights whose
logits reach about 4e5: many logits are small differences of large partial sums. `widen --all x2` is exact
to float32 rounding (checked here with onnxruntime: the largest difference is below 1e-6 of the logits' size),
but zero-padded channels change the order of the sums, and an element-wise check (Polygraphy's atol/rtol per
element) refuses it. `widen`, `deepen` and `export --to mxnet` therefore check with rtol relative to each
output's largest |value| by default, and still catch a wrong growth; `--relative-to element` brings back the
element-wise check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

from onnx_graphs import caffe2_densenet, feeds_for, session

from onnxgrow.cli import main
from onnxgrow.errors import VerificationFailed
from onnxgrow.passes import widen as widen_pass
from onnxgrow.widen import inspect_model, widen_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def densenet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("densenet") / "densenet.onnx"
    onnx.save(caffe2_densenet(), str(path))
    return path


def _compare(original: Path, grown: Path, seeds=(0, 1, 2)) -> tuple[float, int, float]:
    """(worst max|a-b| / max|a|, elements outside Polygraphy's default atol=rtol=1e-5, max |logit|)."""
    a_sess, b_sess = session(onnx.load(str(original))), session(onnx.load(str(grown)))
    worst, outside, scale = 0.0, 0, 0.0
    for seed in seeds:
        feeds = feeds_for(a_sess, seed)
        a = a_sess.run(None, feeds)[0].astype(np.float64)
        b = b_sess.run(None, feeds)[0].astype(np.float64)
        diff = np.abs(a - b)
        worst = max(worst, float(diff.max() / np.abs(a).max()))
        outside += int(((diff > 1e-5) & (diff > 1e-5 * np.abs(a))).sum())
        scale = max(scale, float(np.abs(a).max()))
    return worst, outside, scale


def test_exact_widen_of_large_logits_passes_where_the_element_wise_check_refused_it(densenet, tmp_path, capsys):
    # today's element-wise check: the false refusal, nothing written
    refused = tmp_path / "refused.onnx"
    assert main(["widen", str(densenet), "-o", str(refused), "--all", "x2", "--relative-to", "element"]) == 1
    err = capsys.readouterr().err
    assert "verification failed" in err and "atol 1e-05" in err and not refused.exists()
    # the default judges the error against the logits' size: written
    out = tmp_path / "wide.onnx"
    assert main(["widen", str(densenet), "-o", str(out), "--all", "x2", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["exact"] is True and rep["verification"]["relative_to"] == "output"
    growable = [g for g in inspect_model(densenet).groups if g.constraint != "blocked"]
    assert len(rep["groups"]) == len(growable) >= 10
    assert all(g["new"] == 2 * g["old"] for g in rep["groups"])
    # independently: exact to float32 rounding, yet many logits fail an element-wise atol/rtol of 1e-5
    worst, outside, scale = _compare(densenet, out)
    assert scale > 1e4 and worst < 1e-6 and outside > 0, (scale, worst, outside)
    (o,) = rep["verification"]["outputs"]
    assert o["passed"] and o["normalised"] < 1e-6 and o["scale"] > 1e4


@pytest.mark.parametrize("size", [1e-1, 1e-4])
def test_a_wrong_growth_of_large_logits_is_still_caught(densenet, tmp_path, monkeypatch, size):
    """Planted bug: the consumers' new input columns get small random weights instead of zeros."""
    real = widen_pass._Rewriter._fill_fresh

    def planted(self, view, u, plan, scale_ref, gen):
        real(self, view, u, plan, scale_ref, gen)
        if u.role == "consumer" and view.dtype.kind == "f":
            view[...] = gen.standard_normal(view.shape).astype(view.dtype) * size * max(scale_ref, 1.0)

    monkeypatch.setattr(widen_pass._Rewriter, "_fill_fresh", planted)
    wrong = widen_model(str(densenet), all="x2", check=False, output=tmp_path / "wrong.onnx")
    assert wrong.report is None
    worst, _, _ = _compare(densenet, tmp_path / "wrong.onnx")
    assert worst > 2e-5  # the premise: wrong by more than rtol (and 20 x more than the rounding above)
    with pytest.raises(VerificationFailed, match="of its largest value") as info:
        widen_model(str(densenet), all="x2", output=tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()
    assert info.value.report.relative_to == "output" and not info.value.report.passed


def test_deepen_and_export_take_the_check_flags(tmp_path, capsys):
    cnn, mlp = ROOT / "models" / "cnn.onnx", ROOT / "models" / "mlp.onnx"
    for flags, mode in (([], "output"), (["--relative-to", "element"], "element")):
        out = tmp_path / f"deep-{mode}.onnx"
        assert (
            main(
                [
                    "deepen",
                    str(cnn),
                    "-o",
                    str(out),
                    "--after",
                    "/stem/stem.2/Relu",
                    "--block",
                    "residual",
                    "--json",
                    *flags,
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["verification"]["relative_to"] == mode
    out = tmp_path / "mx.onnx"
    assert (
        main(["export", str(mlp), "--to", "mxnet", "-o", str(out), "--relative-to", "element", "--atol", "1e-4"]) == 0
    )
    assert out.exists()
    assert main(["export", str(mlp), "--to", "torch", "-o", str(tmp_path / "m.pt"), "--atol", "1e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onnxgrow: error: --atol") and "--to torch" in err and "\n" not in err
