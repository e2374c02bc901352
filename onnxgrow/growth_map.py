"""The growth map: what `widen` and `deepen` did to each weight, kept in the grown model's metadata.

It is a JSON document in `model.metadata_props` under the key `onnxgrow.growth_map`:

    {"version": 1, "steps": [STEP, ...]}        one STEP per widen/deepen call, oldest first

A widen STEP:

    {"op": "widen",
     "expansions": [{"old": 32, "src": [[0, 32], [0, 32]], "scale": [[0.5, 64]]}, ...],
     "weights": {NAME: {"source": NAME_BEFORE, "old_shape": [32, 64], "shape": [64, 128],
                        "axes": [{"axis": 0, "expansion": 0, "role": "consumer"}, ...]}}}

`expansions` lists how the units of a grown axis came to be (one per distinct expansion, shared by the
weights of a group): `src` gives, for each new unit in order, the old unit it holds (`-1`: a fresh unit),
run-length encoded as `[first, count]` runs (`[5, 3]` stands for 5, 6, 7; `[-1, 4]` for four fresh units);
`scale` (absent when every unit's is 1) gives 1/(number of copies of the unit's source), as `[value, count]`
runs. On an axis whose `role` is `consumer` (a weight reading the grown units: the outgoing weights of
Net2Net) the old values were multiplied by `scale`; on `producer` and `param` axes (incoming weights,
biases, norm scales) they were copied unchanged. Fresh units hold new values (noise, zero, or the op's
neutral value), not old ones. Only grown weights are listed; `source` is the weight's name before the step.

A deepen STEP:

    {"op": "deepen", "block": "copy", "order": "interleave", "count": 1, "layer_scopes": ["model.layers"],
     "layers": [{"from": 0, "copy": 0}, {"from": 0, "copy": 1}, {"from": 1, "copy": 0}, ...],
     "weights": {NAME: {"source": NAME_BEFORE}                          renamed (values unchanged)
                       | {"source": NAME_BEFORE, "copy": true, "zeroed": false}   a copy of a weight
                       | {"new": "zero" | "identity" | "random"}}}               a new weight

`layers` (copies of whole transformer layers only, else null) lists the layers of the deeper model in
order: which layer of the model before the step each one is (`from`) and whether it is that layer
(`copy` 0) or its k-th copy. `layer_scopes` lists the module paths of the layer lists whose numbers the
exporter wrote into names (`model.layers`, `bert.encoder.layer`, `transformer.h`, ...; [] when none was
found): weight names, node names and the exporter's module scopes then carry the new layer numbers. `zeroed`: the copy's projection into the residual Add was set to zero.

Steps compose in order: a weight of the final model is traced back step by step (`trace`) to the weight of
the first model it comes from, with the per-axis maps composed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx

KEY = "onnxgrow.growth_map"
VERSION = 1


# -- compact encodings ------------------------------------------------------------------------------


def encode_src(src: np.ndarray) -> list[list[int]]:
    """[first, count] runs of consecutive source units (`[-1, n]`: n fresh units)."""
    runs: list[list[int]] = []
    for s in np.asarray(src, dtype=np.int64).tolist():
        if runs:
            first, count = runs[-1]
            if (s < 0 and first < 0) or (s >= 0 and first >= 0 and s == first + count):
                runs[-1][1] += 1
                continue
        runs.append([s if s >= 0 else -1, 1])
    return runs


def decode_src(runs: list[list[int]]) -> np.ndarray:
    parts = [
        np.full(n, -1, dtype=np.int64) if first < 0 else np.arange(first, first + n, dtype=np.int64)
        for first, n in runs
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def encode_scale(scale: np.ndarray) -> list[list[float]] | None:
    """[value, count] runs; None when every value is 1."""
    values = np.asarray(scale, dtype=np.float64)
    if np.all(values == 1.0):
        return None
    runs: list[list[float]] = []
    for v in values.tolist():
        if runs and runs[-1][0] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return runs


def decode_scale(runs: list[list[float]] | None, n: int) -> np.ndarray:
    if runs is None:
        return np.ones(n)
    return np.concatenate([np.full(int(c), v) for v, c in runs]) if runs else np.ones(0)


# -- reading and writing ------------------------------------------------------------------------------


def steps(model: onnx.ModelProto) -> list[dict]:
    """The recorded steps of `model` ([] when it has no growth map)."""
    for p in model.metadata_props:
        if p.key == KEY:
            try:
                doc = json.loads(p.value)
            except ValueError:
                return []
            return list(doc.get("steps", [])) if isinstance(doc, dict) else []
    return []


def set_steps(model: onnx.ModelProto, recorded: list[dict]) -> None:
    """Write `recorded` as the model's growth map (replacing any)."""
    text = json.dumps({"version": VERSION, "steps": recorded}, separators=(",", ":"))
    for p in model.metadata_props:
        if p.key == KEY:
            p.value = text
            return
    model.metadata_props.add(key=KEY, value=text)


def append_step(model: onnx.ModelProto, step: dict) -> None:
    """Add one step to the model's growth map."""
    set_steps(model, steps(model) + [step])


def as_dict(model: onnx.ModelProto) -> dict | None:
    """The growth map as a JSON-ready dict, or None when the model has none."""
    recorded = steps(model)
    return {"version": VERSION, "steps": recorded} if recorded else None


# -- tracing a weight back through the steps ------------------------------------------------------------


@dataclass
class AxisMap:
    """How one axis of a weight came from the same axis of its origin: for each new unit its old unit (-1:
    fresh), the factor its old values were multiplied by (`value`) and the factor by which its gradient is
    the old unit's (`grad`: 1/copies on producer and param axes, where copies share the unit's downstream
    weight; 1 on consumer axes, whose copies read equal inputs)."""

    src: np.ndarray
    value: np.ndarray
    grad: np.ndarray

    def then(self, later: "AxisMap") -> "AxisMap":
        """This map followed by `later` (which indexes this map's new units)."""
        ok = later.src >= 0
        idx = np.where(ok, later.src, 0)
        src = np.where(ok, self.src[idx], -1)
        src = np.where(src >= 0, src, -1)
        return AxisMap(
            src, np.where(ok, self.value[idx], 1.0) * later.value, np.where(ok, self.grad[idx], 1.0) * later.grad
        )


@dataclass
class Origin:
    """Where a weight of the grown model comes from.

    kind: `old` (a weight of the first model, maybe grown: `axes`), `copy` (a deepen copy of one: a new
    parameter that starts with the same values, `zeroed` when its values were set to zero), or `new`
    (made by deepen: `new` says how). `root` is the first model's weight name (None for `new`)."""

    kind: str
    root: str | None
    axes: dict[int, AxisMap] = field(default_factory=dict)
    old_shape: list[int] | None = None
    zeroed: bool = False
    new: str | None = None

    @property
    def grown(self) -> bool:
        """Whether a widen step changed its shape or values."""
        return bool(self.axes)


def _expansions(step: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for e in step.get("expansions", []):
        src = decode_src(e["src"])
        out.append((src, decode_scale(e.get("scale"), len(src))))
    return out


def trace(recorded: list[dict], name: str) -> Origin:
    """Follow `name` back through every step to the first model's weight it comes from."""
    cur = name
    axes: dict[int, AxisMap] = {}
    kind, zeroed, old_shape = "old", False, None
    cache: dict[int, list] = {}
    for k in range(len(recorded) - 1, -1, -1):
        step = recorded[k]
        entry = step.get("weights", {}).get(cur)
        if entry is None:
            continue
        if "new" in entry:
            return Origin("new", None, new=str(entry["new"]))
        if step.get("op") == "widen":
            table = cache.setdefault(k, _expansions(step))
            for a in entry.get("axes", []):
                src, scale = table[int(a["expansion"])]
                consumer = a.get("role") == "consumer"
                m = AxisMap(src, scale if consumer else np.ones(len(src)), np.ones(len(src)) if consumer else scale)
                axis = int(a["axis"])
                axes[axis] = m.then(axes[axis]) if axis in axes else m
            old_shape = list(entry.get("old_shape", old_shape or []))
        if entry.get("copy"):
            kind = "copy"
            zeroed = zeroed or bool(entry.get("zeroed"))
        cur = entry.get("source", cur)
    return Origin(kind, cur, axes, old_shape, zeroed)


def layer_table(recorded: list[dict]) -> list[tuple[int, int]] | None:
    """For each layer of the final model: (layer of the first model it comes from, 0 if it is that layer
    itself, else 1), composed over every deepen step; None when no step recorded layers."""
    table: list[tuple[int, int]] | None = None
    for step in recorded:
        layers = step.get("layers") if step.get("op") == "deepen" else None
        if not layers:
            continue
        if table is None:
            table = [(i, 0) for i in range(max(int(x["from"]) for x in layers) + 1)]
        table = [(table[int(x["from"])][0], 1 if x["copy"] or table[int(x["from"])][1] else 0) for x in layers]
    return table
