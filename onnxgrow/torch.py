"""`onnxgrow.torch`: the PyTorch exporter, kept at its user-facing path (it lives in onnxgrow/export/torch.py).

The name is this very module object, so `import onnxgrow.torch as ogt` and `from onnxgrow.torch import ...` see
(and patch) what the exporter itself uses."""

import sys

from .export import torch as _exporter

sys.modules[__name__] = _exporter
