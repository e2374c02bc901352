"""The README's examples are real: run every `$ command` and compare its output and exit status."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _console_examples() -> list[tuple[str, list[str], int]]:
    examples = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.S):
        for chunk in re.split(r"(?m)^(?=\$ )", block):
            if not chunk.strip():
                continue
            first, *rest = chunk.rstrip("\n").split("\n")
            status = 0
            if rest and re.fullmatch(r"\[exit (\d+)\]", rest[-1]):
                status = int(rest.pop()[6:-1])
            examples.append((first[2:], rest, status))
    return examples


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "models", work / "models")
    (work / "out").mkdir()
    return work


EXAMPLES = _console_examples()


def test_readme_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("command, expected, status", EXAMPLES, ids=[e[0][:60] for e in EXAMPLES])
def test_readme_example(workdir, command, expected, status):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("COLUMNS", None)
    res = subprocess.run(command, shell=True, cwd=workdir, capture_output=True, text=True, env=env)
    assert res.returncode == status, res.stdout + res.stderr
    actual = [line.rstrip() for line in (res.stdout + res.stderr).splitlines()]
    for line in expected:
        assert line.rstrip() in actual, f"README line not printed by `{command}`:\n{line}\n--- got:\n" + "\n".join(actual)


def test_readme_python_api(workdir):
    code = re.search(r"```python\n(.*?)```", README, flags=re.S).group(1)
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert (workdir / "out" / "grown.onnx").exists()
