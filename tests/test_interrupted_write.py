"""Interrupted writes: a process killed (SIGKILL) while it writes a big model never leaves a partial model.

`onnxgrow.save` writes into a hidden temporary folder next to the output (`.<name>.<random>.tmp/`) and renames
the finished file onto the output path (`os.replace`, atomic on one file system). So after a kill at any
moment the output path holds either the previous file, byte for byte, or the complete new model. What a
SIGKILL can leave behind is the hidden `.<name>.*.tmp` folder with a partial file inside: it is never at
the output path, never named like the output in the output folder, and a later successful write is not
disturbed by it (it may be deleted by hand).

Not covered (documented limitation): with external data (`--save-external-data`, or models past 2 GB) the
model and its `<name>.data` are two files renamed one after the other; a kill between the two renames can
leave a new data file next to the previous model file.

The model has ~200 MB of weights, built once with numpy; the whole file takes well under 30 s.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

MODELS = Path(__file__).resolve().parent.parent / "models"
IN, HIDDEN, OUT = 1024, 24576, 1024  # two weights of 1024 x 24576 float32: 2 x 100 MB
SAVE_SCRIPT = """
import sys, onnx, onnxgrow
model = onnx.load(sys.argv[1])
print("loaded", flush=True)
onnxgrow.save(model, sys.argv[2])
"""

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """x[1, 1024] -> MatMul fc1 (1024 x 24576) -> Relu -> MatMul fc2 (24576 x 1024) -> y: ~200 MB of weights."""
    rng = np.random.default_rng(0)
    block = (rng.standard_normal((64, HIDDEN)) / np.sqrt(IN)).astype(np.float32)
    w1 = np.tile(block, (IN // 64, 1))
    w2 = np.ascontiguousarray(np.tile(block, (OUT // 64, 1)).T)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["a"], name="act"),
            helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2"),
        ],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OUT])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("big") / "big.onnx"
    onnx.save(model, str(path))
    assert path.stat().st_size > 180e6
    return path


def _temporary(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if re.fullmatch(rf"\.{re.escape(name)}\..+\.tmp", p.name)]


def _kill_when_writing(argv: list[str], folder: Path, name: str, delay: float, timeout: float = 120) -> bool:
    """Start `argv`; SIGKILL it `delay` s after its temporary folder appears (or when it ends).

    Returns whether the kill landed while the temporary folder existed (that is, during the write)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    try:
        while proc.poll() is None and not _temporary(folder, name):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{argv} did not start writing in {timeout} s")
            time.sleep(0.0005)
        if proc.poll() is not None:  # finished before it was killed: it must have succeeded
            assert proc.returncode == 0, f"{argv[3:5]} failed: {proc.stderr.read().decode()[-2000:]}"
            return False
        time.sleep(delay)
        writing = bool(_temporary(folder, name)) and proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return writing
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _check_folder(folder: Path, name: str, expected: set[str]) -> None:
    """Only the expected files and hidden temporary folders of `name` are there; none is named like the output."""
    visible = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert visible == expected, visible
    hidden = {p.name for p in folder.iterdir() if p.name.startswith(".")}
    assert {p.name for p in _temporary(folder, name)} == hidden, hidden


def test_killed_save_leaves_the_previous_file_or_the_complete_new_one(big, tmp_path):
    script = tmp_path / "save.py"
    script.write_text(SAVE_SCRIPT)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    new = _digest(big)  # a complete save writes the loaded model back byte for byte (checked at the end)
    old_bytes = (MODELS / "mlp.onnx").read_bytes()
    old = hashlib.sha256(old_bytes).hexdigest()
    during = 0
    for delay in (0.0, 0.002, 0.01, 0.03, 0.08, 0.2):
        out.write_bytes(old_bytes)
        during += _kill_when_writing([sys.executable, str(script), str(big), str(out)], out_dir, out.name, delay)
        now = _digest(out)
        assert now in (old, new), f"killed {delay} s into the write: {out} is neither the old nor the new model"
        onnx.checker.check_model(str(out))  # whichever it is, it is a whole model
        _check_folder(out_dir, out.name, {out.name})
    assert during >= 3, "the kills did not land while the model was being written (machine too fast?)"
    # no previous file: after a kill the output is absent or complete
    out.unlink()
    _kill_when_writing([sys.executable, str(script), str(big), str(out)], out_dir, out.name, 0.01)
    assert not out.exists() or _digest(out) == new
    _check_folder(out_dir, out.name, {out.name} if out.exists() else set())
    # leftovers of killed writes do not disturb the next one
    subprocess.run([sys.executable, str(script), str(big), str(out)], check=True, timeout=120)
    assert _digest(out) == new
    assert [p.name for p in out_dir.iterdir() if not p.name.startswith(".")] == [out.name]


def test_killed_widen_keeps_the_previous_output(big, tmp_path):
    """The real command: killed while it verifies (nothing written yet) and while it writes."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "wide.onnx"
    old_bytes = (MODELS / "mlp.onnx").read_bytes()
    out.write_bytes(old_bytes)
    big_before = _digest(big)
    argv = [sys.executable, "-m", "onnxgrow", "widen", str(big), "-o", str(out), "--layer", "fc1=+8", "--init", "zero"]
    during = _kill_when_writing(argv, out_dir, out.name, 0.02, timeout=240)
    if out.read_bytes() != old_bytes:  # the kill came after the rename: then it is the whole grown model
        grown = onnx.load(str(out))
        assert [list(t.dims) for t in grown.graph.initializer] == [[IN, HIDDEN + 8], [HIDDEN + 8, OUT]]
    else:
        assert during
    _check_folder(out_dir, out.name, {out.name})
    # killed early, before anything is written: the old file is untouched and no temporary folder appears
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert out.read_bytes() == old_bytes or onnx.load(str(out), load_external_data=False).graph.node
    assert _digest(big) == big_before, "the input model changed"
