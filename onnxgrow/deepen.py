"""`deepen`: insert layers that compute the identity (or add zero) after a tensor, then verify."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from . import io
from .analysis.groups import refuse_quantised
from .analysis.shapes import infer
from .errors import OnnxGrowError, closest
from .graph import consumers, opset
from .growth_map import append_step
from .io import ModelLike, load
from .passes.deepen import ACTIVATIONS, Site, apply_splice, free_index, identity_layer, residual_block, taken_names
from .progress import ProgressFn
from .stream import drop_weights, skeleton
from .verify import Report, check_growth

BLOCKS = ("identity", "residual", "copy")
_WALK_THROUGH = {"Relu", "LeakyRelu", "Clip", "BatchNormalization", "Add", "Mul", "Sigmoid", "Tanh", "Gelu",
                 "Dropout", "Identity", "MaxPool", "AveragePool", "Elu", "Selu", "HardSwish", "InstanceNormalization",
                 "LayerNormalization", "Erf", "Div", "Cast"}


_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization",
             "InstanceNormalization", "PRelu"}


@dataclass
class DeepenResult:
    """The deeper model, what was inserted, and how well it matched the original."""

    model: onnx.ModelProto
    inserted: list[str] = field(default_factory=list)  # new node names
    notes: list[str] = field(default_factory=list)
    exact: bool = True
    report: Report | None = None
    params_before: int = 0
    params_after: int = 0


def find_site(model: onnx.ModelProto, name: str, shapes: dict[str, list[int | None]]) -> Site:
    """The tensor named `name`, or the first output of the node named `name`."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    nodes = {n.name: n for n in g.node}
    graph_inputs = {i.name for i in g.input}
    if name in nodes and (name in producers or name in graph_inputs) and nodes[name].output[0] != name:
        # a node and another tensor share the name: inserting after the wrong one silently would be worse
        raise OnnxGrowError(
            f"--after {name}: ambiguous: node {name} ({nodes[name].op_type}) writes tensor {nodes[name].output[0]!r}, "
            f"and another tensor is also called {name!r}; give --after {nodes[name].output[0]} for the node's output")
    tensor = nodes[name].output[0] if name in nodes else name
    if tensor not in producers and tensor not in {i.name for i in g.input}:
        # a weight name (fc1.weight): after the layer that owns it
        owners = [n for n in g.node if name in n.input[1:] and n.op_type in _WEIGHTED]
        if len({n.name for n in owners}) == 1:
            tensor = owners[0].output[0]
    if tensor not in producers and tensor not in {i.name for i in g.input}:
        names = list(nodes) + list(producers)
        raise OnnxGrowError(f"--after {name}: no node or tensor of that name{closest(name, names)}")
    if tensor in {o.name for o in g.output}:
        raise OnnxGrowError(f"--after {name}: {tensor} is a graph output; new layers go inside the network")
    shape = shapes.get(tensor)
    if not shape or len(shape) < 2:
        raise OnnxGrowError(f"--after {name}: the shape of {tensor} is unknown or has fewer than 2 dimensions")
    elem = _elem_type(model, tensor)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise OnnxGrowError(f"--after {name}: {tensor} is not a floating-point tensor ({dtype})")
    conv, std = _kind(model, tensor, producers, len(shape))
    return Site(tensor, shape, dtype, conv, producers.get(tensor), std)


def _elem_type(model: onnx.ModelProto, tensor: str) -> int | None:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == tensor and vi.type.HasField("tensor_type"):
            return vi.type.tensor_type.elem_type
    from .analysis.shapes import light_copy

    light = onnx.shape_inference.infer_shapes(light_copy(model), strict_mode=False)
    for vi in light.graph.value_info:
        if vi.name == tensor:
            return vi.type.tensor_type.elem_type
    return None


def _kind(model: onnx.ModelProto, tensor: str, producers: dict, rank: int) -> tuple[bool, float | None]:
    """Walk back to the layer that made the tensor: conv or dense, and the std of its weight."""
    inits = {t.name: t for t in model.graph.initializer}
    seen, frontier = set(), [tensor]
    while frontier:
        t = frontier.pop(0)
        node = producers.get(t)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"):
            weight = next((inits[i] for i in node.input if i in inits and len(inits[i].dims) >= 2), None)
            std = float(np.std(numpy_helper.to_array(weight).astype(np.float64))) if weight is not None else None
            return node.op_type.startswith("Conv") and rank >= 3, std or None
        if node.op_type in _WALK_THROUGH:
            frontier.extend(i for i in node.input if i and i not in inits)
    return _kind_from_readers(model, tensor, inits, rank)


def _kind_from_readers(model: onnx.ModelProto, tensor: str, inits: dict, rank: int) -> tuple[bool, float | None]:
    """No layer made the tensor (a graph input, say): a Conv that reads it, maybe through pooling or a
    normalisation, makes it convolutional; the std of that Conv's weight sizes new weights."""
    readers = consumers(model.graph)
    reached, frontier = {tensor}, [tensor]
    while frontier:
        for node in readers.get(frontier.pop(0), []):
            if node.op_type == "Conv" and rank >= 3 and node.input[0] in reached:
                weight = inits.get(node.input[1]) if len(node.input) > 1 else None
                std = float(np.std(numpy_helper.to_array(weight).astype(np.float64))) if weight is not None else None
                return True, std or None
            if node.op_type in _WALK_THROUGH and node.op_type not in ("Add", "Mul", "Div"):
                new = [o for o in node.output if o and o not in reached]
                reached.update(new)
                frontier.extend(new)
    return False, None


def deepen_model(model: ModelLike, after: str, *, block: str = "identity", count: int = 1, hidden: int | None = None,
                 activation: str = "relu", kernel: int = 3, noise_std: float = 0.0, seed: int = 0,
                 check: bool = True, approximate: bool = False, order: str = "interleave",
                 output: str | os.PathLike | None = None, external_data: bool | None = None,
                 progress: ProgressFn | None = None, **verify_args) -> DeepenResult:
    """Insert `count` new layers after `after`; verify (raises VerificationFailed on an unexpected mismatch).

    `order` (block copy): "interleave" puts each unit's copies right after it (L0 L0' L1 L1'), "stack" after
    the last unit, the sequence of units repeated (L0 L1 L0' L1'). Copied transformer layers are renumbered
    in their new order where the exporter's names number them (see onnxgrow.passes.blocks.copy_units); the
    model's growth map (onnxgrow.growth_map) records every copy and new weight.

    A copy of a post-norm block changes the outputs (the norm after the Add sees another input): refused
    unless `approximate` (as widen refuses an inexact plan), then written with the error reported.
    `noise_std` > 0 asks for an inexact identity itself.

    With `output`, the deeper model is written there (`external_data` as in `onnxgrow.save`) and
    `result.model` holds it without weights (stubs: names, types and shapes), as `widen_model` does: copied
    weights are read from the original's bytes and zeroed projections written as zeros while the file is
    written, so no second copy of the weights is held, and onnxruntime verifies the written file before it
    is renamed into place (a failed check writes nothing). `progress` is called with the steps "load",
    "write" (with `output`) and "verify" (see onnxgrow.progress). `verify_args` (atol, rtol, relative_to, provider, input_shapes,
    iterations) go to the check, whose rtol is relative to each output's largest value unless
    relative_to="element" (see onnxgrow.verify.check_growth)."""
    from .widen import parameter_count

    if block not in BLOCKS:
        raise OnnxGrowError(f"--block {block!r}: expected one of {', '.join(BLOCKS)}")
    if count < 1:
        raise OnnxGrowError(f"--count {count}: must be at least 1")
    if activation not in ACTIVATIONS:
        raise OnnxGrowError(f"--activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    if hidden is not None and hidden < 1:
        raise OnnxGrowError(f"--hidden {hidden}: must be at least 1")
    if kernel not in (1, 3):
        raise OnnxGrowError(f"--kernel {kernel}: expected 1 or 3")
    if not noise_std >= 0:
        raise OnnxGrowError(f"--noise-std {noise_std}: must not be negative")
    if seed < 0:
        raise OnnxGrowError(f"--seed {seed}: must not be negative")
    out = io.output_path(output) if output is not None else None
    # load returns onnxgrow's own copy (of a file or of the caller's ModelProto), which is never changed
    original = load(model, progress=progress)
    refuse_quantised(original, "deepen")
    ref_iface = None  # the original's interface for the check of a written file (stubs: no weight bytes)
    if out is None or block != "copy":
        # deepened in place (and verified against `model` itself), so the weights are held once, not twice
        grown, deferred = original, None
        if out is not None and check:
            ref_iface = skeleton(original)[0]
    else:
        # a stub of every weight, its bytes read from `original` as the file is written (onnxgrow.stream)
        grown, deferred = skeleton(original)
        if check:
            ref_iface = onnx.ModelProto()
            ref_iface.CopyFrom(grown)
    result = DeepenResult(grown, params_before=parameter_count(grown))
    if block == "copy":
        from .passes.blocks import copy_units, find_blocks, layer_units

        blocks = find_blocks(grown)
        units = [u.strip() for u in after.split(",")] if after != "layers" else layer_units(blocks)
        if not units or not all(units):
            raise OnnxGrowError(f"--after {after}: no transformer layer found (see `onnxgrow inspect`)"
                                if after == "layers" else f"--after {after!r}: expected block ids such as b0,b2-b3")
        append_step(grown, copy_units(grown, units, count, result, order=order, blocks=blocks, deferred=deferred))
    else:
        if order != "interleave":
            raise OnnxGrowError(f"--order {order}: only --block copy places copies; identity and residual layers "
                                "go after --after")
        rng = np.random.default_rng(seed)
        shapes = infer(grown)
        site = find_site(grown, after, shapes)
        taken = taken_names(grown)
        index = 0
        new_inits: list[onnx.TensorProto] = []
        for _ in range(count):
            # deepening the same site again (a grown model) continues the numbering: no name is reused
            index = free_index(taken, f"{after}/deepen", index)
            prefix = f"{after}/deepen{index}"
            index += 1
            if block == "identity":
                splice = identity_layer(site, prefix, opset(grown), kernel=kernel, noise_std=noise_std, rng=rng)
            else:
                splice = residual_block(site, prefix, opset(grown), hidden=hidden, activation=activation,
                                        kernel=kernel, rng=rng)
            apply_splice(grown, site, splice)
            new_inits += splice.inits
            result.inserted += [n.name for n in splice.nodes]
            result.notes += [n for n in splice.notes if n not in result.notes]
            result.exact &= splice.exact
            producer = splice.nodes[-1]
            site = Site(splice.output, site.shape, site.dtype, site.conv, producer, site.weight_std)
        append_step(grown, {"op": "deepen", "block": block, "after": after, "count": count, "layers": None,
                            "weights": {t.name: {"new": _new_kind(t)} for t in new_inits}})
    result.params_after = parameter_count(grown)
    if not result.exact and not approximate and not noise_std > 0:
        why = ("a normalisation follows the residual Add (post-norm), so a copy changes the outputs"
               if any("normalisation follows" in n for n in result.notes) else "the new layers change the outputs")
        raise OnnxGrowError(f"--after {after}: {why}; pass --approximate to write it anyway and see the error")
    if out is None:
        if check:
            result.report = check_growth(model, grown, model, seed=seed, strict=result.exact, progress=progress,
                                         **verify_args)
        return result
    if deferred is None:  # deepened in place: written from a skeleton, so no tensor is serialised whole
        grown, deferred = skeleton(grown)
        result.model = grown
    with io.PendingWrite(out) as pending:
        pending.write(grown, deferred, external_data, progress)
        if check:
            # the original's weights are dropped before onnxruntime loads the two models (from their files
            # where there are files)
            reference: ModelLike = model if isinstance(model, onnx.ModelProto) else str(model)
            del original, deferred
            drop_weights(grown)
            result.report = check_growth(reference, pending.model_path, model, seed=seed, strict=result.exact,
                                         interfaces=(ref_iface, grown), progress=progress, **verify_args)
        pending.commit()
    return result


def _new_kind(t: onnx.TensorProto) -> str:
    """How a weight deepen made starts: zero, identity (a Dirac/eye matrix), constant (one number), random."""
    value = numpy_helper.to_array(t)
    if value.size == 1:
        return "constant"
    if not np.any(value):
        return "zero"
    if value.ndim >= 2 and np.count_nonzero(value) == min(value.shape[:2]) and np.all(value[value != 0] == 1):
        return "identity"
    return "random"


def deepen(model: ModelLike, after: str, **kwargs) -> onnx.ModelProto:
    """Deepen `model` after the node or tensor `after` and return the verified ModelProto."""
    return deepen_model(model, after, **kwargs).model
