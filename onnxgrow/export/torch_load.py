"""Keep training in your own model class: the grown weights as a `state_dict` for a bigger instance of the
module the ONNX model was exported from (`state_dict_for`), and an optimiser's state carried over to it
(`grow_optimizer_state`).

Where each initializer goes: a state_dict key of the same name; else the module of the node that reads it
(the TorchScript exporter's node name `/fc1/MatMul`, the dynamo exporter's `name_scopes` metadata) and the
slot it fills (MatMul B -> `weight`, transposed back, ...); else that module's only free tensor of its
shape. What the model cannot supply may come from `base`, the small module the user still has. The growth
map (onnxgrow.growth_map) says which initializers growth changed: a constant the module computes itself
(rotary tables, masks, lookups of a position table the exporter folded) that did not grow is left out and
listed in `GrownStateDict.skipped`; one that grew must have a place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .. import growth_map
from ..errors import OnnxGrowError
from ..graph import input_slots, torch_name_scopes
from ..growth_map import AxisMap, Origin
from ..io import ModelLike, load

#: (op type, input index) -> (parameter name in the module that did it, transposed in ONNX).
_SLOT_PARAM: dict[tuple[str, int], tuple[str, bool]] = {
    ("MatMul", 1): ("weight", True),
    ("MatMul", 0): ("weight", False),
    ("Gemm", 1): ("weight", False),
    ("Gemm", 2): ("bias", False),
    ("Conv", 1): ("weight", False),
    ("Conv", 2): ("bias", False),
    ("ConvTranspose", 1): ("weight", False),
    ("ConvTranspose", 2): ("bias", False),
    ("BatchNormalization", 1): ("weight", False),
    ("BatchNormalization", 2): ("bias", False),
    ("BatchNormalization", 3): ("running_mean", False),
    ("BatchNormalization", 4): ("running_var", False),
    ("InstanceNormalization", 1): ("weight", False),
    ("InstanceNormalization", 2): ("bias", False),
    ("LayerNormalization", 1): ("weight", False),
    ("LayerNormalization", 2): ("bias", False),
    ("GroupNormalization", 1): ("weight", False),
    ("GroupNormalization", 2): ("bias", False),
    ("PRelu", 1): ("weight", False),
    ("Gather", 0): ("weight", False),
    ("Add", 0): ("bias", False),
    ("Add", 1): ("bias", False),
}


def _scopes(node: onnx.NodeProto) -> list[str]:
    """The module scopes a torch export recorded for a node: the dynamo exporter's
    `pkg.torch.onnx.name_scopes` metadata (['', 'fc1', 'linear']), else the TorchScript
    exporter's node name (`/layers/layers.0/MatMul`, `/blocks.1/lin/Add`, `/relu_1/Relu`)."""
    scopes = torch_name_scopes(node)
    if scopes is not None and all(isinstance(x, str) for x in scopes):
        return [x for x in scopes[1:-1] if x]
    return [p for p in node.name.split("/") if p][:-1]


def _module_path(node: onnx.NodeProto, modules: set[str]) -> str | None:
    """The module (path in the user's module tree) a node was made in; None if it does not resolve."""
    parts = _scopes(node)
    path = ""
    for seg in parts:
        found = None
        for cand_seg in (seg, re.sub(r"_\d+$", "", seg)):
            base = path
            while True:  # a segment is relative to the current module or to one of its ancestors
                cand = f"{base}.{cand_seg}" if base else cand_seg
                if cand in modules:
                    found = cand
                    break
                if not base:
                    break
                base = base.rpartition(".")[0]
            if found:
                break
        if found is None:
            return None
        path = found
    return path


def _shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class GrownStateDict(dict):
    """`state_dict_for`'s result: a state_dict (key -> tensor, in the module's order) that also says where
    each tensor came from.

    - `sources`: key -> the initializer it was read from, or "base" / "module" (kept from the module itself:
      integer buffers such as BatchNorm's `num_batches_tracked`);
    - `from_base`: keys taken from `base` unchanged (the model has no tensor for them and growth did not
      change their shape);
    - `regrown`: keys rebuilt from `base` grown like the model's constant that reads them (a position table
      whose lookup the exporter folded into a constant, after `--hidden`);
    - `skipped`: initializers left out, `name [shape]: why` (constants the module computes itself).
    """

    sources: dict[str, str]
    from_base: list[str]
    regrown: list[str]
    skipped: list[str]


@dataclass
class _Placement:
    """Which initializer (transposed or not) fills each key, and what was done with the rest."""

    placed: dict[str, tuple[str, bool]] = field(default_factory=dict)
    from_base: list[str] = field(default_factory=list)
    regrown: dict[str, tuple[np.ndarray, AxisMap, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    count: int = 0


def _value(init: onnx.TensorProto, transposed: bool) -> np.ndarray:
    value = numpy_helper.to_array(init)
    return value.T if transposed and value.ndim == 2 else value


def _dims(init: onnx.TensorProto, transposed: bool) -> tuple[int, ...]:
    """The shape `_value` gives, without decoding the tensor."""
    dims = tuple(int(d) for d in init.dims)
    return dims[::-1] if transposed and len(dims) == 2 else dims


def _weight_slot(node: onnx.NodeProto, k: int) -> bool:
    """Whether input `k` of `node` is the weight of a layer (not an operand of an elementwise op)."""
    from .torch import _ELEMENTWISE, WEIGHT_INPUTS

    slots = WEIGHT_INPUTS.get(node.op_type, ())
    return node.op_type not in _ELEMENTWISE and (slots is None or k in slots)


def _named_like_a_key(name: str) -> bool:
    """A name like a state_dict key (`model.layers.3.mlp.up_proj.weight`): a parameter the exporter kept,
    unlike the names exporters give constants (`where`, `unsqueeze_14`, `/bert/.../Gather_output_0`,
    `onnx::Mul_12`, `val_3`)."""
    return "." in name and "/" not in name and "::" not in name and not name.startswith(("val_", "_v_"))


def _tie_groups(module: nn.Module, keys: set[str]) -> list[list[str]]:
    """Keys of the state_dict that are one tensor in the module (tied weights), each group of two or more."""
    by_tensor: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, t in named:
        if name in keys and t is not None:
            by_tensor.setdefault((id(t), tuple(t.shape)), []).append(name)
    return [sorted(set(v)) for v in by_tensor.values() if len(set(v)) > 1]


def _place(module: nn.Module, m: onnx.ModelProto, base: nn.Module | None) -> _Placement:
    """Map the model's weights onto `module`'s state_dict keys (see `state_dict_for`)."""
    from .torch import _weight_slots, weight_initializers

    target = module.state_dict()
    modules = {name for name, _ in module.named_modules() if name}
    own = {
        name: dict(sub.named_parameters(recurse=False)) | dict(sub.named_buffers(recurse=False))
        for name, sub in module.named_modules()
    }
    inits = {t.name: t for t in m.graph.initializer}
    kinds = weight_initializers(m)
    readers = input_slots(m.graph)
    recorded = growth_map.steps(m)
    out = _Placement()
    wrong: list[str] = []

    # proposals: key -> [(init, transposed, how)]; by name first, then through the node that reads it
    proposals: dict[str, list[tuple[str, bool, str]]] = {}

    def propose(key: str, name: str, transposed: bool, how: str) -> None:
        if (name, transposed, how) not in proposals.setdefault(key, []):
            proposals[key].append((name, transposed, how))

    guesses: list[tuple[str, str, bool]] = []
    for name in kinds:
        if name in target:
            propose(name, name, False, "name")
        for node, k in readers.get(name, []):
            slot = _SLOT_PARAM.get((node.op_type, k))
            scope = _module_path(node, modules)
            if slot is None or scope is None:
                continue
            param, transposed = slot
            if node.op_type == "Gemm" and k == 1:
                transposed = {a.name: a.i for a in node.attribute}.get("transB", 0) == 0
            elif node.op_type == "MatMul" and k == 1:
                # x @ W.T for a Linear: the exporter folds the transpose into a renamed tensor
                # (onnx::MatMul_12, dynamo's t or val_0); a parameter read as it is (x @ self.w)
                # keeps its own name
                transposed = name not in target
            key = f"{scope}.{param}" if scope else param
            if key == name:
                continue  # its own name says where it goes, untransposed (Conv1D reads [in, out] with a Gemm)
            if key in target:
                propose(key, name, transposed, "reader")
            else:
                guesses.append((name, scope, transposed))
    # the module's only free tensor of the right shape (a parameter not called weight/bias)
    named_keys = {name for name in kinds if name in target}
    for name, scope, transposed in guesses:
        if any(name == n for ps in proposals.values() for n, _, _ in ps):
            continue
        dims = tuple(inits[name].dims)
        want = dims[::-1] if transposed else dims
        cands = [
            f"{scope}.{leaf}" if scope else leaf for leaf, t in own.get(scope, {}).items() if tuple(t.shape) == want
        ]
        cands = [c for c in cands if c in target and c not in proposals and c not in named_keys]
        if len(cands) == 1:
            propose(cands[0], name, transposed, "guess")

    # choose per key: every proposal must agree; where the name and the readers disagree, the readers win
    # (a tied weight exported under one of its names, the two grown apart by --hidden)
    used: set[str] = set()
    refused: set[str] = set()  # keys with a tensor that does not fit: reported once, under "shape differs"
    for key, props in proposals.items():
        want = tuple(target[key].shape)
        fits = [(n, t, h) for n, t, h in props if _dims(inits[n], t) == want]
        if not fits:
            n, t, _ = props[0]
            how = " (transposed)" if t else ""
            wrong.append(f"{key}: module {_shape(want)}, model {n}{how} {_shape(_dims(inits[n], t))}")
            used.add(n)
            refused.add(key)
            continue
        values = [_value(inits[n], t) for n, t, _ in fits] if len(fits) > 1 else []
        if not all(np.array_equal(values[0], v) for v in values[1:]):
            structural = [(n, t, h) for n, t, h in fits if h != "name"]
            svals = [_value(inits[n], t) for n, t, _ in structural]
            if not structural or not all(np.array_equal(svals[0], v) for v in svals[1:]):
                names = ", ".join(dict.fromkeys(n for n, _, _ in fits))
                wrong.append(f"{key}: the model gives it different tensors ({names})")
                used.update(n for n, _, _ in fits)
                refused.add(key)
                continue
            fits = structural
        out.placed[key] = (fits[0][0], fits[0][1])
        used.update(n for n, _, _ in fits)

    # tied keys of the module: one tensor, so the model must give them one value
    for group in _tie_groups(module, set(target)):
        have = [k for k in group if k in out.placed]
        if not have:
            continue
        first = _value(inits[out.placed[have[0]][0]], out.placed[have[0]][1])
        differ = [k for k in have[1:] if not np.array_equal(first, _value(inits[out.placed[k][0]], out.placed[k][1]))]
        if differ:
            wrong.append(
                f"{', '.join(group)} are one tied tensor in {type(module).__name__}, but the model holds "
                f"different tensors for them ({out.placed[have[0]][0]}, {out.placed[differ[0]][0]}; growth "
                f"splits an output head reading copied units): build the module with the tie undone "
                f"(transformers: tie_word_embeddings=False)"
            )
            continue
        for tied in group:
            out.placed.setdefault(tied, out.placed[have[0]])

    # initializers without a place: an error when they are weights or grew, else constants left out
    unplaced: list[tuple[str, Origin]] = []
    no_place: list[str] = []
    origins = {name: growth_map.trace(recorded, name) for name in kinds}
    hidden_buffers = {n for n, _ in module.named_buffers()} - set(target)  # non-persistent: the module makes them
    # the first model's weights that are parameters here: a copy of one is a parameter too
    placed_roots = {origins[n].root for n in used if origins[n].kind == "old"}
    for name in kinds:
        if name in used:
            continue
        origin = origins[name]
        slots = _weight_slots(name, readers)
        users = sorted({n.name for n, _ in readers.get(name, [])})
        where = f"{name} {_shape(inits[name].dims)} (read by {', '.join(users) or 'nothing'})"
        parameter = (
            any(_weight_slot(n, k) for n, k in slots)
            or (origin.kind == "new" and origin.new != "constant")
            or origin.root in placed_roots
            or (_named_like_a_key(name) and name not in hidden_buffers)
        )
        if parameter:
            no_place.append(where)
        elif origin.grown:
            unplaced.append((name, origin))
        else:
            how = "a copy of a constant" if origin.kind == "copy" else "a constant"
            out.skipped.append(
                f"{name} {_shape(inits[name].dims)}: {how} the module computes itself "
                f"(read by {', '.join(users) or 'nothing'}; not grown)"
            )

    # keys the model gives no tensor for: from `base` when growth left their shape alone, or grown like
    # a grown constant that is a lookup of them
    base_sd = base.state_dict() if base is not None else {}
    missing: list[str] = []
    consumed: set[str] = set()
    for key, value in target.items():
        if key in out.placed or key in refused:
            continue
        if not value.is_floating_point():
            continue
        if key in base_sd and tuple(base_sd[key].shape) == tuple(value.shape):
            out.from_base.append(key)
            continue
        if key in base_sd:
            regrown = _regrow(
                base_sd[key].detach().cpu().numpy(),
                tuple(value.shape),
                [(n, o) for n, o in unplaced if n not in consumed],
                inits,
            )
            if regrown is not None:
                out.regrown[key] = regrown
                consumed.add(regrown[2])
                continue
        missing.append(f"{key} {_shape(value.shape)}")
    for name, _ in unplaced:
        if name not in consumed:
            users = sorted({n.name for n, _ in readers.get(name, [])})
            no_place.append(
                f"{name} {_shape(inits[name].dims)} (read by {', '.join(users) or 'nothing'}; grown"
                + (
                    "; pass base= the module it was exported from, if it is a lookup of one of its tables"
                    if base is None
                    else ""
                )
                + ")"
            )
    if missing:
        hint = (
            ""
            if base is not None
            else " (pass base=, the module the model was exported from, for what growth did not change)"
        )
        out.problems.append(f"not in the model: {', '.join(missing)}{hint}")
    if no_place:
        out.problems.append(f"no place in the module: {', '.join(no_place)}")
    if wrong:
        out.problems.append(f"shape differs: {'; '.join(wrong)}")
    out.count = len(missing) + len(no_place) + len(wrong)
    return out


def _regrow(
    table: np.ndarray, want: tuple[int, ...], constants: list[tuple[str, Origin]], inits: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, AxisMap, str] | None:
    """`table` (a parameter of the small module) grown like the one grown constant that is a lookup of it.

    A constant qualifies when only its last axis grew, and every vector along that axis, ungrown, is one of
    the table's rows (a folded `embedding(position_ids)`, an expanded class token): the table is then grown
    along its last axis the same way (copies of its units; fresh units as the constant has them, 0 in rows it
    never reads), and the constant must read exactly the grown rows."""
    if table.ndim < 1 or tuple(table.shape[:-1]) != tuple(want[:-1]):
        return None
    old = table.shape[-1]
    rows = table.reshape(-1, old)
    where = {rows[r].tobytes(): r for r in range(rows.shape[0] - 1, -1, -1)}
    for name, origin in constants:
        value = numpy_helper.to_array(inits[name])
        last = value.ndim - 1
        if set(origin.axes) != {last} or value.shape[-1] != want[-1]:
            continue
        amap = origin.axes[last]
        first: dict[int, int] = {}
        for i, s in enumerate(amap.src.tolist()):
            if s >= 0:
                first.setdefault(s, i)
        if sorted(first) != list(range(old)):
            continue
        idx = np.array([first[j] for j in range(old)])
        flat = value.reshape(-1, value.shape[-1])
        ungrown = (flat[:, idx] / amap.value[idx]).astype(table.dtype)
        looked_up = [where.get(r.tobytes()) for r in ungrown]
        found = [f for f in looked_up if f is not None]
        if len(found) != len(looked_up):
            continue
        ok = amap.src >= 0
        grown = np.take(rows, np.where(ok, amap.src, 0), axis=1) * amap.value.astype(table.dtype)
        grown[:, ~ok] = 0
        fresh_seen: dict[int, np.ndarray] = {}
        consistent = True
        for r, row in zip(found, flat):
            if r in fresh_seen and not np.array_equal(fresh_seen[r], row[~ok]):
                consistent = False
            fresh_seen[r] = row[~ok]
            grown[r, ~ok] = row[~ok]
            if not np.allclose(grown[r], row, rtol=1e-6, atol=0):
                consistent = False
        if consistent:
            return grown.reshape(want).astype(table.dtype), amap, name
    return None


def state_dict_for(module: nn.Module, model: ModelLike, base: nn.Module | None = None) -> GrownStateDict:
    """The grown model's weights as a state_dict for `module`, a bigger instance of the network
    the ONNX file was exported from (`torch.onnx.export`), for `module.load_state_dict(sd, strict=True)`.

    Initializers named like a state_dict key (`fc1.weight`, `bn1.running_mean`) go to that key. The
    ones the exporter renamed (`onnx::MatMul_12`, or dynamo's `val_0`/`t`: a Linear's weight stored
    transposed for a MatMul) are placed through the module scope of the node that reads them (the
    TorchScript exporter's node name `/fc1/MatMul`, the dynamo exporter's `name_scopes` metadata,
    resolved against `module`'s own tree) and the input they feed (MatMul B -> `weight`, transposed
    back; Gemm B -> `weight`, transposed when `transB == 0`; Add -> `bias`; BatchNormalization ->
    `weight`, `bias`, `running_mean`, `running_var`, ...); otherwise the scope's module takes it if it
    has exactly one free tensor of that shape (a parameter not called `weight`, read as `x @ w.t()`).
    Layers `deepen --block copy` copied carry their new layer numbers (`layers.3`), so a model deepened
    from 2 to 4 layers loads into the 4-layer module. Keys tied in the module (an output head sharing the
    token embedding) must get one value.

    What the model cannot supply: keys that are not floating point (BatchNorm's `num_batches_tracked`)
    keep the module's own value; with `base` (the small module the model was exported from), a float key
    the model lacks is taken from `base` when its shape there is the target's (growth did not change it:
    a position table whose lookup the exporter folded into a constant, a class token), or, when the model
    holds such a folded lookup grown by `widen --hidden`, rebuilt from `base` grown the same way.
    Initializers without a place that are not layer weights and did not grow (constants the module
    computes itself: rotary tables, causal masks, folded lookups) are left out and listed in the result's
    `skipped`. Everything else that does not fit (a key nobody supplies, a weight or a grown tensor with
    no place, a shape that differs) is listed in one OnnxGrowError.
    """
    m = load(model)
    target = module.state_dict()
    placement = _place(module, m, base)
    if placement.problems:
        count = placement.count
        raise OnnxGrowError(
            f"{type(module).__name__} does not fit the model ({count} mismatch"
            f"{'es' if count != 1 else ''}): " + " | ".join(placement.problems)
        )
    inits = {t.name: t for t in m.graph.initializer}
    base_sd = base.state_dict() if base is not None else {}
    result = GrownStateDict()
    result.sources, result.from_base, result.regrown, result.skipped = {}, [], [], list(placement.skipped)
    for key, value in target.items():
        if key in placement.placed:
            name, transposed = placement.placed[key]
            result[key] = torch.from_numpy(np.array(_value(inits[name], transposed), copy=True)).to(value.dtype)
            result.sources[key] = name
        elif key in placement.regrown:
            grown, _, name = placement.regrown[key]
            result[key] = torch.from_numpy(np.array(grown, copy=True)).to(value.dtype)
            result.sources[key] = "base"
            result.regrown.append(key)
        elif key in placement.from_base:
            result[key] = base_sd[key].detach().clone().to(value.dtype)
            result.sources[key] = "base"
            result.from_base.append(key)
        else:
            result[key] = value.detach().clone()
            result.sources[key] = "module"
    return result


# -- optimiser state ------------------------------------------------------------------------------------


def grow_optimizer_state(
    optimizer: torch.optim.Optimizer, old_module: nn.Module, new_module: nn.Module, model: ModelLike
) -> torch.optim.Optimizer:
    """A new optimiser of `optimizer`'s class over `new_module`'s parameters, carrying `optimizer`'s state
    (kept on `old_module`'s parameters) over to them through the grown model's growth map.

    `new_module` holds `model`'s weights (`state_dict_for`); `old_module` is the module `optimizer` trained,
    the one the first model of the growth was exported from. Per parameter of `new_module`:

    - grown from an old parameter: the state is grown like the weight. Old units keep their moments; on the
      axes where Net2Net copied a unit whose downstream weights were split between its copies (the incoming
      side), each copy's gradient is the old gradient divided by the number of copies, so `exp_avg` (and
      SGD's `momentum_buffer`) is divided by it and `exp_avg_sq` by its square; on the axes whose weights
      were split (the outgoing side) each copy's gradient is the old one, so the moments are copied as they
      are. Fresh units start at zero. The step count stays the parameter's own.
    - new (a layer deepen copied or inserted, or no state in `optimizer`): no state, so the optimiser starts it
      as a fresh one does: step 0 and zero moments, and its first update is no larger than a fresh
      optimiser's (torch's Adam keeps `step` per parameter, so the old parameters' bias correction is not
      affected).

    A parameter tied in `old_module` (an output head sharing the token embedding) hands its state, the moments
    of the summed gradient, to each of the parameters it became in an untied `new_module`.
    Hyper-parameters come from the param group of the parameter's source (the first group for new ones).
    `optimizer` itself is left unchanged. Fresh units inside a grown parameter share its (large) step count
    with zero moments: Adam's bias correction is then about 1, and with a steady gradient their k-th update is
    (1 - beta1^k) / sqrt(1 - beta2^k) times a fresh optimiser's (3.2 at the first, up to 6.6 around the twelfth
    with the default betas).
    """
    m = load(model)
    placement = _place(new_module, m, old_module)
    if placement.problems:
        raise OnnxGrowError(
            f"{type(new_module).__name__} does not fit the model ({placement.count} mismatch"
            f"{'es' if placement.count != 1 else ''}): " + " | ".join(placement.problems)
        )
    recorded = growth_map.steps(m)
    table = growth_map.layer_table(recorded)
    scopes = [w for s in recorded for w in s.get("layer_scopes") or []]
    old_params = dict(old_module.named_parameters(remove_duplicate=False))  # a tied parameter under each name
    group_of = {id(p): k for k, g in enumerate(optimizer.param_groups) for p in g["params"]}
    groups: list[list[nn.Parameter]] = [[] for _ in optimizer.param_groups]
    states: dict[int, dict] = {}
    for key, param in new_module.named_parameters():
        source, axes, transposed = _source(key, placement, recorded, table, scopes)
        old = old_params.get(source) if source is not None else None
        k = group_of.get(id(old), 0) if old is not None else 0
        groups[k].append(param)
        state = optimizer.state.get(old) if old is not None else None
        if state is None or axes is None or old is None:
            continue
        states[id(param)] = _grow_state(state, old, param, axes, transposed)
    param_groups = []
    for k, params in enumerate(groups):
        if params:
            hyper = {n: v for n, v in optimizer.param_groups[k].items() if n != "params"}
            param_groups.append({"params": params, **hyper})
    make: Callable[..., torch.optim.Optimizer] = type(optimizer)  # SGD, Adam, ...: hyper-parameters as keywords
    new = make(param_groups)  # each group carries every hyper-parameter of its source group
    new.defaults = dict(optimizer.defaults)
    for g in new.param_groups:
        for p in g["params"]:
            if id(p) in states:
                new.state[p] = states[id(p)]
    return new


def _old_key(key: str, table: list[tuple[int, int]] | None, scopes: list[str]) -> tuple[str | None, bool]:
    """The key `key` had before deepen renumbered the layers (`layers.2` -> `layers.1`), and whether it is a
    copied layer's; None when its layer is not in the table."""
    if table is None or not scopes:
        return key, False
    alt = "|".join(re.escape(s.rpartition(".")[2]) for s in scopes)
    m = re.search(rf"(?<![\w])(?:{alt})\.(\d+)(?![\w])", key)
    if m is None:
        return key, False
    q = int(m.group(1))
    if q >= len(table):
        return None, False
    p, copy = table[q]
    return key[: m.start(1)] + str(p) + key[m.end(1) :], bool(copy)


def _source(
    key: str, placement: _Placement, recorded: list[dict], table, scopes: list[str]
) -> tuple[str | None, dict | None, bool]:
    """(old module key, per-axis maps in the key's own axes or None for a new parameter, transposed)."""
    if key in placement.from_base:
        return key, {}, False
    if key in placement.regrown:
        grown, amap, _ = placement.regrown[key]
        return key, {grown.ndim - 1: amap}, False
    if key not in placement.placed:
        return None, None, False
    name, transposed = placement.placed[key]
    origin = growth_map.trace(recorded, name)
    if origin.kind != "old":
        return None, None, False
    old_key, copied = _old_key(key, table, scopes)
    if copied:
        return old_key, None, False
    return old_key, origin.axes, transposed


def _grow_state(state: dict, old: torch.Tensor, new: torch.Tensor, axes: dict[int, AxisMap], transposed: bool) -> dict:
    """One parameter's optimiser state grown like the parameter (see grow_optimizer_state)."""
    if transposed:
        axes = {1 - a: m for a, m in axes.items()}
    grown: dict = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(old.shape) or value.ndim == 0:
            grown[name] = value.clone() if isinstance(value, torch.Tensor) else value
            continue
        power = 2 if "sq" in name else 1  # exp_avg_sq, max_exp_avg_sq: second moments
        work = value.detach().clone()
        for axis, amap in sorted(axes.items()):
            src = torch.from_numpy(np.where(amap.src >= 0, amap.src, 0)).to(work.device)
            work = torch.index_select(work, axis, src)
            shape = [1] * work.ndim
            shape[axis] = -1
            factor = torch.from_numpy(np.where(amap.src >= 0, amap.grad**power, 0.0)).to(work.dtype).reshape(shape)
            work = work * factor.to(work.device)
        if tuple(work.shape) != tuple(new.shape):
            raise OnnxGrowError(
                f"optimizer state {name!r} grows to {_shape(work.shape)}, the parameter is "
                f"{_shape(new.shape)}: the growth map does not describe this parameter"
            )
        grown[name] = work.to(value.dtype)
    return grown
