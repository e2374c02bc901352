"""onnxgrow: grow trained ONNX models (wider, deeper) without changing what they compute."""
from __future__ import annotations

from .errors import OnnxGrowError, VerificationFailed
from .io import ModelRepaired, load, save
from .verify import Report, verify
from .widen import inspect_model as inspect
from .widen import widen, widen_model
from .deepen import deepen

__all__ = ["OnnxGrowError", "VerificationFailed", "ModelRepaired", "Report", "load", "save", "verify", "inspect",
           "widen", "widen_model", "deepen"]
__version__ = "0.1.0"
