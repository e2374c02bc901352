"""What a growth returns: `GrowResult`, the base of `WidenResult` and `DeepenResult`, and parameter counts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import onnx

from .verify import Report

_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of elements in all floating-point initializers."""
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in _FLOATS)


@dataclass(kw_only=True)
class GrowResult:
    """The grown model (weights stubbed when it was written to a file), whether it computes what the original
    did (`exact`), the verification report (None when not checked) and the parameter counts before and after."""

    model: onnx.ModelProto
    report: Report | None = None
    exact: bool = True
    params_before: int = 0
    params_after: int = 0

    def _counts(self) -> dict[str, Any]:
        return {"params_before": self.params_before, "params_after": self.params_after}

    def _verification(self) -> dict[str, Any]:
        return {"verification": self.report.to_dict() if self.report else None}

    def to_dict(self) -> dict[str, Any]:
        """What the CLI's --json prints of the result (after "written")."""
        return {**self._counts(), "exact": self.exact, **self._verification()}
