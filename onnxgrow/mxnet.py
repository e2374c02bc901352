"""`onnxgrow.mxnet`: the MXNet exporter (`for_mxnet`, `RULES`, ...), kept at its user-facing path (it lives in
onnxgrow/export/mxnet/: registry, rules, driver)."""

import sys

from .export import mxnet as _exporter

sys.modules[__name__] = _exporter
