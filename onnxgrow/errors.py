"""Errors a user can cause. The CLI prints them as one line and exits with `exit_code`.

Exit statuses (the contract CI jobs rely on): 0 success, 1 a failed check (`VerificationFailed`), 2 bad usage
or a bad model (`OnnxGrowError`), 3 an internal error (a bug in onnxgrow or a library it calls: anything else).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .verify import Report

#: exit status of an error that is not the user's: an unexpected exception (a bug), not a bad model or flag
INTERNAL_ERROR_EXIT = 3


class OnnxGrowError(Exception):
    """Bad input, a refused plan or an unreadable model: exit status 2."""

    exit_code = 2


class VerificationFailed(OnnxGrowError):
    """The candidate model does not compute what the reference does: exit status 1."""

    exit_code = 1

    def __init__(self, message: str, report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


class _Nothing:
    """The value of a ParameterError that is about a parameter as a whole, not a value of it."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING = _Nothing()


class ParameterError(OnnxGrowError):
    """A bad value of a Python API parameter (exit status 2). The message names the parameter (`iterations=0:
    must be at least 1`, `input_shapes['x']: ...`); the CLI, which knows the flag behind each parameter, words
    it with the flag instead (onnxgrow.cli_args). `mentions` lists the other parameters named in `detail`, as
    written there (`load_inputs`, `check=False`), so that the CLI can name their flags too."""

    def __init__(
        self,
        param: str,
        detail: str,
        *,
        value: object = NOTHING,
        key: str | None = None,
        mentions: tuple[str, ...] = (),
    ) -> None:
        self.param, self.detail, self.value, self.key, self.mentions = param, detail, value, key, mentions
        super().__init__(f"{self.subject()}: {detail}" if param else detail)

    def subject(self) -> str:
        """`param`, `param=value` or `param['key']`: what the message is about, in the API's words."""
        if self.key is not None:
            return f"{self.param}[{self.key!r}]"
        if self.value is not NOTHING:
            return f"{self.param}={self.value!r}"
        return self.param


def closest(name: str, candidates: list[str], n: int = 3) -> str:
    """A ' (did you mean ...?)' suffix naming the candidates closest to `name`."""
    import difflib

    candidates = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:
        # exporters decorate names (/fc1/Gemm, fc1.weight, onnx::Conv_35): compare the letters and digits only
        def norm(text: str) -> str:
            return "".join(ch for ch in text.lower() if ch.isalnum())

        key = norm(name)
        by_norm: dict[str, str] = {}
        for c in candidates:
            by_norm.setdefault(norm(c), c)
        found = [by_norm[k] for k in difflib.get_close_matches(key, list(by_norm), n=n, cutoff=0.6)] if key else []
        if not found and len(key) >= 2:
            found = [c for k, c in by_norm.items() if key in k][:n]
    if not found:
        return ""
    return " (did you mean " + ", ".join(repr(f) for f in found) + "?)"


class InternalError(RuntimeError):
    """onnxgrow produced something wrong (a bug, not the user's input): exit status 3 like any other bug."""

    exit_code = INTERNAL_ERROR_EXIT
