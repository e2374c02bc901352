"""Op rules: how each op moves, grows or constrains the axes of its tensors, and what is known of its values.

One rule per op type in `RULES` (`registry.py`), each in the file of its op family; a new op is one new rule.
Roles follow DESIGN.md: producer, pass-through, coupling, mixer, boundary.

- `registry.py`: `Rule` (role, layout function, value facts), `RULES`, the `@rule` decorator, `rule_for`
- `common.py`: helpers of every family (attributes, pass-through and boundary layouts)
- `elementwise.py`, `linalg.py`, `shape_ops.py`, `normalisation.py`, `reduce.py`, `spatial.py`,
  `control.py`: the rules, by op family
- `shape_trace.py`: Reshape's axis mapping and the tracing of computed target shapes
- `values.py`: value tracking after each rule (new units that stay 0, signs)
"""

from . import control, elementwise, linalg, normalisation, reduce, shape_ops, spatial  # noqa: F401  (registers)
from .common import attr, block_everything
from .registry import RULES, Rule, rule, rule_for
from .values import track_values

__all__ = ["RULES", "Rule", "attr", "block_everything", "rule", "rule_for", "track_values"]
