"""Export for MXNet 1.9 (`for_mxnet`): the rule registry (`registry.py`), one rule per op family (`rules.py`) and
the driver that walks the graph, rewrites it for MXNet's importer and checks the result (`driver.py`).
`gluon_run.py` beside them runs a written file in MXNet's own Python (see onnxgrow.runners)."""

from __future__ import annotations

from .driver import REFUSED, convert, drop_nan_guards, fold_static_shapes, for_mxnet
from .registry import (
    MIN_SOURCE_OPSET,
    MXNET_IMPORTER_OPS,
    RULES,
    TARGET_IR_VERSION,
    TARGET_OPSET,
    Context,
    Rule,
    Unsupported,
    rule,
)
from .rules import MAX_SPLIT_PARTS

__all__ = [
    "REFUSED",
    "convert",
    "drop_nan_guards",
    "fold_static_shapes",
    "for_mxnet",
    "MAX_SPLIT_PARTS",
    "MIN_SOURCE_OPSET",
    "MXNET_IMPORTER_OPS",
    "RULES",
    "TARGET_IR_VERSION",
    "TARGET_OPSET",
    "Context",
    "Rule",
    "Unsupported",
    "rule",
]
