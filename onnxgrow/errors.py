"""Errors a user can cause. The CLI prints them as one line and exits with `exit_code`."""
from __future__ import annotations


class OnnxGrowError(Exception):
    """Bad input, a refused plan or an unreadable model: exit status 2."""

    exit_code = 2


class VerificationFailed(OnnxGrowError):
    """The candidate model does not compute what the reference does: exit status 1."""

    exit_code = 1

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


def closest(name: str, candidates: list[str], n: int = 3) -> str:
    """A ' (did you mean ...?)' suffix naming the candidates closest to `name`."""
    import difflib

    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:
        return ""
    return " (did you mean " + ", ".join(repr(f) for f in found) + "?)"
