"""Progress reports: the API calls the callback for each long step; the CLI draws bars only on a terminal."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from rich.console import Console

import onnxgrow
from onnxgrow.progress import STEPS
from onnxgrow.progress_bars import ProgressBars, on_stderr
from onnxgrow.widen import widen_model

MODELS = Path(__file__).resolve().parent.parent / "models"


class Recorder:
    """A progress callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, step: str, done: int, total: int) -> None:
        self.calls.append((step, done, total))

    def steps(self) -> list[str]:
        """Steps in the order they started."""
        seen: list[str] = []
        for step, _, _ in self.calls:
            if step not in seen:
                seen.append(step)
        return seen

    def check(self) -> None:
        """Each step starts at 0, never goes back, and ends with done == total."""
        for step in self.steps():
            calls = [(d, t) for s, d, t in self.calls if s == step]
            assert calls[0][0] == 0, (step, calls)
            assert calls[-1][0] == calls[-1][1] > 0, (step, calls)
            assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:])), (step, calls)
            assert step in STEPS


def test_widen_to_a_file_reports_load_analyse_write_verify(tmp_path):
    rec = Recorder()
    widen_model(MODELS / "cnn.onnx", all="x2", output=tmp_path / "w.onnx", progress=rec)
    assert rec.steps() == ["load", "analyse", "write", "verify"]
    rec.check()
    written = [d for s, d, _ in rec.calls if s == "write"][-1]
    assert written >= (tmp_path / "w.onnx").stat().st_size - 4096  # bytes of weights written


def test_widen_in_memory_reports_grow_and_external_data_is_counted_in_bytes(tmp_path):
    src = onnxgrow.save(onnx.load(str(MODELS / "mlp.onnx")), tmp_path / "ext.onnx", external_data=True)
    rec = Recorder()
    widen_model(src, all="x2", progress=rec)
    assert rec.steps() == ["load", "analyse", "grow", "verify"]
    rec.check()
    loaded = [t for s, _, t in rec.calls if s == "load"][-1]
    assert loaded >= (tmp_path / "ext.onnx.data").stat().st_size


def test_verify_and_save_report_their_steps(tmp_path):
    rec = Recorder()
    onnxgrow.verify(str(MODELS / "mlp.onnx"), str(MODELS / "mlp.onnx"), iterations=3, progress=rec)
    assert rec.steps() == ["verify"] and rec.calls[-1][1:] == (8, 8)  # 2 sessions + 2 x 3 runs
    rec.check()
    rec = Recorder()
    onnxgrow.save(onnx.load(str(MODELS / "mlp.onnx")), tmp_path / "m.onnx", progress=rec)
    assert rec.steps() == ["write"] and rec.calls[-1][1] == (tmp_path / "m.onnx").stat().st_size
    rec.check()


def test_deepen_reports_load_and_verify():
    rec = Recorder()
    onnxgrow.deepen(str(MODELS / "mlp.onnx"), "/Relu", block="residual", progress=rec)
    assert rec.steps() == ["load", "verify"]
    rec.check()


def _bars(delay: float) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with ProgressBars(console, delay=delay) as bars:
        bars("load", 0, 100)
        bars("load", 100, 100)
        bars("write", 0, 10)
        bars("write", 10, 10)
    return out.getvalue()


def test_bars_show_a_step_once_it_has_run_for_the_delay():
    assert "load model" in _bars(0.0) and STEPS["write"] in _bars(0.0)
    assert "load model" not in _bars(60.0)  # quick steps draw nothing


def test_no_bars_when_stderr_is_not_a_terminal(monkeypatch):
    with on_stderr() as progress:
        assert progress is None  # pytest captures stderr: not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with on_stderr() as progress:
        assert isinstance(progress, ProgressBars)


@pytest.mark.parametrize("argv", [["widen", "{m}", "-o", "{out}", "--all", "x2"], ["verify", "{m}", "{m}"]])
def test_cli_output_to_pipes_has_no_progress_bars(argv, tmp_path):
    args = [a.format(m=MODELS / "cnn.onnx", out=tmp_path / "w.onnx") for a in argv]
    res = subprocess.run([sys.executable, "-m", "onnxgrow", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "\r" not in res.stdout and "\x1b" not in res.stdout
    assert not any(label in res.stdout for label in STEPS.values())
