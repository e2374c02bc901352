"""Train a grown model in PyTorch: an onnx2torch module whose every weight is a Parameter, or
the grown weights as a `state_dict` for a bigger instance of the user's own module.

Two paths, one for each kind of user:

- `to_module(model)`: the grown ONNX as a `torch.fx.GraphModule` (onnx2torch). onnx2torch makes
  `nn.Conv*`, `nn.Linear` (a Gemm whose B and C are initializers and `transA == 0`), `nn.BatchNorm*`,
  `nn.LayerNorm` and `nn.InstanceNorm*` with trainable parameters, but keeps every other initializer
  as a *buffer* of its `initializers` submodule (`initializers.onnx_initializer_<k>`): the weights of
  every MatMul, of a Gemm with `transA` or a computed B, the biases added after a MatMul, embedding
  tables, PRelu slopes, weights of the layers onnxgrow inserts, ... An optimiser never sees buffers,
  so those weights would silently stay frozen. `to_module` re-registers each such buffer *in place*
  (same owner, same name, so the fx graph's `get_attr` nodes keep working) as an `nn.Parameter`.
- `state_dict_for(module, model, base=None)`: the grown initializers mapped onto the user's own, bigger
  module by name, every shape checked; `module.load_state_dict(sd, strict=True)` takes the result, and
  `grow_optimizer_state` carries an optimiser's state over to it (both in onnxgrow.torch_load).

Which initializers are weights (`WEIGHT_INPUTS`, one entry per op family) is decided by where they
are read: weight and bias inputs of MatMul, Gemm, Conv, normalisations, PRelu, the table of a
Gather, operands of Add/Sub/Mul/Div/Concat/Einsum. Kept as buffers: BatchNorm running mean and
variance (statistics, not trained by gradients), integer tensors (shapes, indices), inputs that
configure an op rather than weigh it (Resize scales, Clip bounds, Pow exponents, Pad values, Where
operands, ...), and, among elementwise operands, single numbers with exporter-made names (`1/sqrt(d)`,
GELU's 0.5, a LayerNorm epsilon: `onnx::Mul_12`, `/Constant_output_0`) or tensors with inf/NaN
(attention masks). A single number with a parameter's name (`scale`, `head.bias` of one unit)
is a weight.

An initializer read by several nodes (tied weights) becomes one Parameter shared by every reader
that holds it unchanged. onnx2torch's `nn.Linear` for a Gemm with `transB == 0` or `alpha != 1`
holds a transformed copy, which PyTorch then trains on its own (a warning says so).

Training starts with a fresh optimiser by default: optimiser state (moments, step counts) is not part of
ONNX. `grow_optimizer_state` carries it over from the growth map the grown model records.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from ..errors import OnnxGrowError
from ..graph import input_slots, reads
from ..graph import opset as graph_opset
from ..io import ModelLike, load

#: op type -> the inputs that hold trainable weights when they are initializers (None: every input).
WEIGHT_INPUTS: dict[str, tuple[int, ...] | None] = {
    "MatMul": (0, 1),
    "Gemm": (0, 1, 2),
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
    "PRelu": (1,),
    "Gather": (0,),
    "Einsum": None,
    "Add": None,
    "Sub": None,
    "Mul": None,
    "Div": None,
    "Concat": None,
}
#: ops whose constant operands are weights only when they do not look like an exporter's constant.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Concat", "Einsum"}
#: ops that pass a weight through unchanged in meaning (a weight read through them is still a weight).
_PASS_THROUGH = {"Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Expand"}
#: BatchNormalization inputs that are statistics: they stay buffers (and map to running_mean/var).
_STATISTICS = {("BatchNormalization", 3), ("BatchNormalization", 4)}

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


# -- which initializers are weights ---------------------------------------------------------------


def _generated(name: str) -> bool:
    """A name an exporter made up for a constant, not a parameter's name."""
    return name.startswith(("onnx::", "/", "_v_")) or "Constant" in name or name.startswith("val_")


def _weight_slots(name: str, readers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> list[tuple[onnx.NodeProto, int]]:
    """The (node, input index) weight slots `name` reaches, directly or through pass-through ops."""
    found, seen, frontier = [], {name}, [name]
    while frontier:
        for node, k in readers.get(frontier.pop(), []):
            slots = WEIGHT_INPUTS.get(node.op_type, ())
            if slots is None or k in slots:
                found.append((node, k))
            elif node.op_type in _PASS_THROUGH and k == 0:
                for out in node.output:
                    if out and out not in seen:
                        seen.add(out)
                        frontier.append(out)
    return found


def weight_initializers(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX initializer name -> 'weight' or 'statistic' for every float initializer a network learns
    or tracks (see the module docstring); constants are left out."""
    g = model.graph
    readers = input_slots(g)
    kinds: dict[str, str] = {}
    for t in g.initializer:
        if t.data_type not in _FLOAT:
            continue
        uses = readers.get(t.name, [])
        if any((n.op_type, k) in _STATISTICS for n, k in uses):
            kinds[t.name] = "statistic"
            continue
        slots = _weight_slots(t.name, readers)
        if not slots:
            continue
        if all(n.op_type in _ELEMENTWISE for n, _ in slots):
            value = numpy_helper.to_array(t)
            if value.size == 1 and _generated(t.name):
                continue
            if not np.all(np.isfinite(value.astype(np.float64))):
                continue
        kinds[t.name] = "weight"
    return kinds


# -- to_module --------------------------------------------------------------------------------

#: onnx2torch module attribute -> ONNX input index, for the modules it builds from initializers.
_MODULE_INPUTS: dict[str, dict[str, int]] = {
    "Conv": {"weight": 1, "bias": 2},
    "ConvTranspose": {"weight": 1, "bias": 2},
    "Gemm": {"weight": 1, "bias": 2},
    "BatchNormalization": {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4},
    "LayerNormalization": {"weight": 1, "bias": 2},
    "InstanceNormalization": {"weight": 1, "bias": 2},
}


def to_module(model: ModelLike) -> torch.fx.GraphModule:
    """The model as an onnx2torch `torch.fx.GraphModule` whose every weight is a trainable Parameter.

    The module is returned in eval mode, where it computes what the ONNX model computes; call
    `.train()` before training (BatchNorm then normalises with batch statistics and updates its
    running statistics, which stay buffers). Its attribute `onnx_names` maps each state_dict key
    that came from an initializer to that initializer's name (a `nn.Linear` made from a Gemm with
    `transB == 0` holds the transpose), and `growth_map` the model's growth map (onnxgrow.growth_map; None
    when the model has none), saved with the module. See the module docstring for which tensors are weights.
    """
    try:
        from onnx2torch import convert
        from onnx2torch.onnx_graph import OnnxGraph, ValueType
    except ImportError as exc:  # pragma: no cover - the torch extra pulls it in
        raise OnnxGrowError(f"exporting to PyTorch needs onnx2torch: pip install 'onnxgrow[torch]' ({exc})") from None
    m = load(model)
    from ..growth_map import as_dict

    recorded = as_dict(m)
    # onnx2torch infers shapes itself; a recorded shape that disagrees (a stale entry) would stop it
    del m.graph.value_info[:]
    m = _down_to_known_opset(m)
    m = _up_to_known_opset(m)
    _drop_dropout(m)
    _drop_idle_allowzero(m)
    _check_convertible(m)
    try:
        gm = convert(m, attach_onnx_mapping=True)
    except Exception as exc:  # onnx2torch and onnx's shape inference raise many kinds
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise OnnxGrowError(f"onnx2torch cannot convert this model: {first}") from exc

    kinds = weight_initializers(m)
    inits = {t.name: t for t in m.graph.initializer}
    onnx_graph = OnnxGraph(m.graph)
    # fx drops the container when no node reads an initializer through it
    container = gm.initializers if hasattr(gm, "initializers") else nn.Module()
    onnx_names: dict[str, str] = {}
    # Replay onnx2torch's numbering: it adds one buffer `onnx_initializer_<k>` per initializer input
    # of each node's mapping, in node order (converter.convert).
    k = 0
    for unique_name, node in onnx_graph.nodes.items():
        try:
            sub = gm.get_submodule(unique_name)
        except AttributeError:
            raise OnnxGrowError(
                f"onnx2torch made no module for node {node.name!r}: this onnx2torch version is not supported"
            ) from None
        mapping = getattr(sub, "onnx_mapping", None)
        if mapping is not None:
            for value in mapping.inputs:
                if onnx_graph.value_type(value) == ValueType.GRAPH_INITIALIZER:
                    onnx_names[f"initializers.onnx_initializer_{k}"] = value
                    k += 1
            del sub.onnx_mapping
        # torch layers (nn.Conv2d, nn.Linear, nn.BatchNorm2d, ...) onnx2torch filled from initializers;
        # its own Onnx* modules read initializers through the container instead
        native = not type(sub).__module__.startswith("onnx2torch")
        for attr, index in _MODULE_INPUTS.get(node.operation_type, {}).items():
            t = getattr(sub, attr, None) if native else None
            if isinstance(t, torch.Tensor) and index < len(node.input_values) and node.input_values[index] in inits:
                onnx_names[f"{unique_name}.{attr}"] = node.input_values[index]
    buffers = dict(container.named_buffers())
    replayed = {key.split(".", 1)[1]: name for key, name in onnx_names.items() if key.startswith("initializers.")}
    if buffers.keys() != replayed.keys() or not all(
        _holds(buffers[leaf], inits[name]) for leaf, name in replayed.items()
    ):
        raise OnnxGrowError(
            "onnx2torch's initializer buffers are not the ones onnxgrow expects: this onnx2torch "
            "version is not supported"
        )

    # buffers that hold weights -> Parameters, re-registered on their owner under the same name
    shared: dict[str, nn.Parameter] = {}
    for key, name in list(onnx_names.items()):
        if not key.startswith("initializers.") or kinds.get(name) != "weight":
            continue
        leaf = key.split(".", 1)[1]
        buf = container._buffers.pop(leaf)
        if buf is None:  # registered as None: nothing to train
            continue
        param = shared.get(name)
        if param is None:
            param = shared[name] = nn.Parameter(buf.detach().clone(), requires_grad=True)
        container.register_parameter(leaf, param)
    _tie(gm, onnx_names, inits, shared)
    gm.onnx_names = onnx_names
    gm.growth_map = recorded
    gm.eval()
    return gm


def _holds(tensor: torch.Tensor, init: onnx.TensorProto) -> bool:
    """Whether `tensor` is the initializer's value (bit for bit; shape only where numpy cannot compare)."""
    if tuple(tensor.shape) != tuple(init.dims):
        return False
    try:
        return bytes(tensor.detach().contiguous().numpy().tobytes()) == numpy_helper.to_array(init).tobytes()
    except (TypeError, RuntimeError):  # bfloat16 and other dtypes numpy lacks
        return True


#: the newest ai.onnx opset onnx2torch 1.5 converts every common op at (ReduceMean 18, Reshape 19, Gelu 20 are not)
_ONNX2TORCH_OPSET = 17


def _convertible(node: onnx.NodeProto, opsets: dict[str, int]) -> bool:
    """Whether onnx2torch has a converter for `node` at the model's opset of its domain."""
    from onnx2torch.node_converters import get_converter

    try:
        get_converter(domain=node.domain, operation_type=node.op_type, version=opsets.get(node.domain, 1))
    except NotImplementedError:
        return False
    return True


def _unconvertible(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    opsets = {o.domain: o.version for o in m.opset_import}
    return [node for node in m.graph.node if not _convertible(node, opsets)]


def _down_to_known_opset(m: onnx.ModelProto) -> onnx.ModelProto:
    """A model of a newer opset (torch's dynamo exporter writes 18+) converted to opset 17 for onnx2torch.

    Gelu (opset 20, no earlier version) is first written out as x·(1 + erf(x/√2))/2 or its tanh form.
    Returns the model unchanged when nothing needs it or when onnx's version converter cannot do it.
    """
    opset = graph_opset(m)
    bad = len(_unconvertible(m)) if opset > _ONNX2TORCH_OPSET else 0
    if not bad:
        return m
    from onnx import version_converter

    work = onnx.ModelProto()
    work.CopyFrom(m)
    _write_out_gelu(work.graph)
    hidden = _hide_splits(work)
    try:
        converted = version_converter.convert_version(work, _ONNX2TORCH_OPSET)
    except Exception:  # the converter has no adapter for some op: report the ops as they are
        return m
    for n in converted.graph.node:
        if n.domain == _HIDDEN and n.name in hidden:
            n.domain = ""
    kept = [o for o in converted.opset_import if o.domain != _HIDDEN]
    del converted.opset_import[:]
    converted.opset_import.extend(kept)
    return converted if len(_unconvertible(converted)) < bad else m


#: opsets an old model is converted up to, lowest first: onnx2torch has no converter for some ops in the forms
#: of opsets 7-9 (Dropout-7, Upsample-9, ...), but has one for each at 10, 11 or 13
_UP_TARGETS = (10, 11, 13, _ONNX2TORCH_OPSET)


def _up_to_known_opset(m: onnx.ModelProto) -> onnx.ModelProto:
    """A model of an old opset (the Caffe2-era zoo files: 7-9) converted up for onnx2torch, to the lowest opset
    of `_UP_TARGETS` at which onnx2torch converts every node (onnx's version converter, IR version raised to
    what that opset needs). Dropout-7 becomes Dropout-10, which onnx2torch makes an `nn.Dropout`: the identity
    in eval mode, as in the ONNX model, and dropout again once the module is trained, as in the network the
    model came from. Returns the model unchanged when nothing needs it or no target helps.
    """
    opset = graph_opset(m)
    bad = len(_unconvertible(m)) if opset < _ONNX2TORCH_OPSET else 0
    if not bad:
        return m
    from onnx import version_converter

    best, fewest = m, bad
    for target in _UP_TARGETS:
        if target <= opset:
            continue
        try:
            converted = version_converter.convert_version(m, target)
        except Exception:  # no adapter for some op on the way: try the next target, or report the ops as they are
            continue
        converted.ir_version = max(
            converted.ir_version,
            onnx.helper.find_min_ir_version_for([o for o in converted.opset_import if o.domain in ("", "ai.onnx")]),
        )
        left = len(_unconvertible(converted))
        if left < fewest:
            best, fewest = converted, left
        if not left:
            break
    return best


def _drop_dropout(m: onnx.ModelProto) -> None:
    """Each Dropout onnx2torch cannot convert (still Dropout-7 where no converter went up; a `seed` at 12+) that
    is the identity when the model runs (inference mode, no mask read) replaced by an Identity, in place."""
    from onnx import helper

    opsets = {o.domain: o.version for o in m.opset_import}
    consts = {t.name: t for t in m.graph.initializer}
    read = reads(m.graph)
    for k, n in enumerate(m.graph.node):
        if n.op_type != "Dropout" or n.domain not in ("", "ai.onnx"):
            continue
        if _convertible(n, opsets) and not any(a.name == "seed" for a in n.attribute):  # onnx2torch refuses seeds
            continue
        if any(o and o in read for o in n.output[1:]):
            continue  # its mask is read: not the identity
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("is_test", 1) == 0:
            continue  # opset < 7 in training mode
        if len(n.input) > 2 and n.input[2]:
            mode = consts.get(n.input[2])
            if mode is None or bool(numpy_helper.to_array(mode).reshape(-1)[0]):
                continue  # training_mode computed, or true
        m.graph.node[k].CopyFrom(helper.make_node("Identity", [n.input[0]], [n.output[0]], name=n.name))


_HIDDEN = "onnxgrow.opset17"


def _hide_splits(m: onnx.ModelProto) -> set[str]:
    """Split-18 nodes rewritten as Split-13 (sizes as an input instead of num_outputs) and hidden from onnx's
    version converter, which has no Split 18 → 17 adapter; the caller puts them back in the default domain."""
    from ..analysis.shapes import infer

    shapes = infer(m)
    hidden: set[str] = set()
    for k, n in enumerate(m.graph.node):
        if n.op_type != "Split" or n.domain not in ("", "ai.onnx"):
            continue
        n.name = n.name or f"onnxgrow_split_{k}"
        parts = next((a.i for a in n.attribute if a.name == "num_outputs"), None)
        if parts is not None:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            shape = shapes.get(n.input[0])
            size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
            if size is None or size % parts:
                continue  # uneven or unknown: leave it to the converter (which will refuse)
            sizes = f"{n.name}/split"
            m.graph.initializer.append(numpy_helper.from_array(np.full(parts, size // parts, np.int64), sizes))
            del n.input[1:]
            n.input.append(sizes)
            keep = [a for a in n.attribute if a.name != "num_outputs"]
            del n.attribute[:]
            n.attribute.extend(keep)
        n.domain = _HIDDEN
        hidden.add(n.name)
    if hidden:
        m.opset_import.append(onnx.helper.make_opsetid(_HIDDEN, 1))
    return hidden


def _drop_idle_allowzero(m: onnx.ModelProto) -> None:
    """Reshape allowzero=1 (torch's dynamo exporter) only matters for a 0 in the target: drop it when none is."""
    consts = {t.name: t for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] not in consts:
            continue
        keep = [a for a in n.attribute if not (a.name == "allowzero" and a.i == 1)]
        if len(keep) != len(n.attribute) and 0 not in numpy_helper.to_array(consts[n.input[1]]).reshape(-1).tolist():
            del n.attribute[:]
            n.attribute.extend(keep)


def _write_out_gelu(graph: onnx.GraphProto) -> None:
    from onnx import helper

    nodes = []
    consts: dict[str, float] = {}

    def const(value: float) -> str:
        name = f"onnxgrow_gelu_const_{len(consts)}"
        for k, v in consts.items():
            if v == value:
                return k
        consts[name] = value
        graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [value]))
        return name

    for n in graph.node:
        if n.op_type != "Gelu" or n.domain not in ("", "ai.onnx"):
            nodes.append(n)
            continue
        x, y, p = n.input[0], n.output[0], f"{n.name or n.output[0]}/gelu"
        tanh = any(a.name == "approximate" and a.s == b"tanh" for a in n.attribute)
        if tanh:  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            nodes += [
                helper.make_node("Mul", [x, x], [f"{p}/x2"]),
                helper.make_node("Mul", [f"{p}/x2", x], [f"{p}/x3"]),
                helper.make_node("Mul", [f"{p}/x3", const(0.044715)], [f"{p}/c"]),
                helper.make_node("Add", [x, f"{p}/c"], [f"{p}/s"]),
                helper.make_node("Mul", [f"{p}/s", const(float(np.sqrt(2 / np.pi)))], [f"{p}/t"]),
                helper.make_node("Tanh", [f"{p}/t"], [f"{p}/e"]),
            ]
        else:  # 0.5·x·(1 + erf(x/√2))
            nodes += [
                helper.make_node("Mul", [x, const(float(1 / np.sqrt(2)))], [f"{p}/t"]),
                helper.make_node("Erf", [f"{p}/t"], [f"{p}/e"]),
            ]
        nodes += [
            helper.make_node("Add", [f"{p}/e", const(1.0)], [f"{p}/1e"]),
            helper.make_node("Mul", [x, f"{p}/1e"], [f"{p}/x1e"]),
            helper.make_node("Mul", [f"{p}/x1e", const(0.5)], [y], name=n.name),
        ]
    del graph.node[:]
    graph.node.extend(nodes)


def _check_convertible(m: onnx.ModelProto) -> None:
    """Every node onnx2torch has no converter for, in one OnnxGrowError."""
    bad = [f"'{node.name}' ({node.op_type})" for node in _unconvertible(m)]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise OnnxGrowError(
            f"onnx2torch cannot convert node {', '.join(bad[:5])}{more}: it has no converter for "
            f"{'this op' if len(bad) == 1 else 'these ops'} at this opset"
        )


def _tie(
    gm: nn.Module, onnx_names: dict[str, str], inits: dict[str, onnx.TensorProto], shared: dict[str, nn.Parameter]
) -> None:
    """Make the module parameters that hold the same initializer unchanged one shared Parameter."""
    by_init: dict[str, list[str]] = {}
    for key, name in onnx_names.items():
        by_init.setdefault(name, []).append(key)
    for name, keys in by_init.items():
        if len(keys) < 2:
            continue
        value = torch.from_numpy(numpy_helper.to_array(inits[name]).copy())
        untied = []
        for key in keys:
            owner_name, _, leaf = key.rpartition(".")
            owner = gm.get_submodule(owner_name)
            current = getattr(owner, leaf)
            if not isinstance(current, nn.Parameter):
                continue
            if tuple(current.shape) != tuple(value.shape) or not torch.equal(current.detach(), value.to(current.dtype)):
                untied.append(key)
                continue
            param = shared.setdefault(name, current)
            if current is not param:
                setattr(owner, leaf, param)
        if untied:
            warnings.warn(
                f"initializer {name} is read by {len(keys)} layers; {', '.join(untied)} hold(s) a "
                f"transformed copy that PyTorch trains separately",
                stacklevel=3,
            )


# -- saving -----------------------------------------------------------------------------------


def save_module(module: nn.Module, path: str | os.PathLike) -> Path:
    """`torch.save` the whole module (atomically: a temporary file in the same folder, then
    `os.replace`); `torch.load(path, weights_only=False)` or `load_module(path)` gives it back
    (onnx2torch must be importable there, its layer classes are pickled by reference)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OnnxGrowError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(module, f)
        from ..io import new_file_mode

        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


def load_module(path: str | os.PathLike) -> nn.Module:
    """The module `save_module` wrote (unpickled: load only files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxGrowError(f"{path}: no such file")
    try:
        module = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # torch raises many kinds for a bad file
        raise OnnxGrowError(f"{path}: not a saved torch module ({str(exc).strip().splitlines()[0][:200]})") from exc
    if not isinstance(module, nn.Module):
        raise OnnxGrowError(f"{path}: holds a {type(module).__name__}, not a torch module")
    return module


# -- the user's own module (onnxgrow.torch_load) ------------------------------------------------------

from .torch_load import GrownStateDict, grow_optimizer_state, state_dict_for  # noqa: E402

__all__ = [
    "to_module",
    "save_module",
    "load_module",
    "weight_initializers",
    "state_dict_for",
    "GrownStateDict",
    "grow_optimizer_state",
]
