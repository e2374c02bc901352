"""Run the README's ```console examples: every `$ command` with its printed lines and exit status."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def section(marker: str) -> str:
    """The README section (from its `## ` heading to the next) that contains `marker`."""
    text = (ROOT / "README.md").read_text()
    at = text.index(marker)
    start = text.rfind("\n## ", 0, at)
    end = text.find("\n## ", at)
    return text[start if start >= 0 else 0 : end if end >= 0 else len(text)]


def console_examples(text: str) -> list[tuple[str, list[str], int]]:
    """(command, expected lines, exit status) for each `$ ` line of each ```console block."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for chunk in re.split(r"(?m)^(?=\$ )", block):
            if not chunk.strip():
                continue
            first, *rest = chunk.rstrip("\n").split("\n")
            status = 0
            if rest and re.fullmatch(r"\[exit (\d+)\]", rest[-1]):
                status = int(rest.pop()[6:-1])
            examples.append((first[2:], rest, status))
    return examples


def env() -> dict[str, str]:
    """The environment of the examples: this venv's `onnxgrow` first on PATH, default console width."""
    e = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    e.pop("COLUMNS", None)
    return e


def check(command: str, expected: list[str], status: int, cwd: Path) -> None:
    """Run one example in `cwd`; it must exit with `status` and print every expected line."""
    res = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, env=env())
    assert res.returncode == status, res.stdout + res.stderr
    printed = [line.rstrip() for line in (res.stdout + res.stderr).splitlines()]
    for line in expected:
        assert line.rstrip() in printed, f"`{command}` did not print:\n{line}\n--- got:\n" + "\n".join(printed)


def run_all(text: str, cwd: Path) -> None:
    """Run every console example of `text` in order."""
    for command, expected, status in console_examples(text):
        check(command, expected, status, cwd)
