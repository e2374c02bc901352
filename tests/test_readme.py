"""The README's examples are real: run every `$ command` and compare its output and exit status."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from readme_examples import check, console_examples
from readme_examples import env as readme_examples_env

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "models", work / "models")
    (work / "out").mkdir()
    return work


EXAMPLES = console_examples(README)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("command, expected, status", EXAMPLES, ids=[e[0][:60] for e in EXAMPLES])
def test_readme_example(workdir, command, expected, status):
    check(command, expected, status, workdir)


def test_readme_python_api(workdir):
    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, env=readme_examples_env()
    )
    assert res.returncode == 0, res.stderr
    assert (workdir / "out" / "grown.onnx").exists()
