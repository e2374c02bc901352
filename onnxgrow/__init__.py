"""onnxgrow: grow trained ONNX models (wider, deeper) without changing what they compute."""

from __future__ import annotations

from .deepen import deepen
from .errors import OnnxGrowError, VerificationFailed
from .io import ModelRepaired, load, save
from .verify import Report, Tolerances, verify
from .widen import inspect_model as inspect
from .widen import widen, widen_model

__all__ = [
    "OnnxGrowError",
    "VerificationFailed",
    "ModelRepaired",
    "Report",
    "Tolerances",
    "load",
    "save",
    "verify",
    "inspect",
    "widen",
    "widen_model",
    "deepen",
]


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source); a source tree run without
    installing says so."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxgrow")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
