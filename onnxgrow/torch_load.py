"""`onnxgrow.torch_load`: `state_dict_for` and `grow_optimizer_state`, kept at their old path (they live in
onnxgrow/export/torch_load.py; `onnxgrow.torch` re-exports both)."""

import sys

from .export import torch_load as _loader

sys.modules[__name__] = _loader
