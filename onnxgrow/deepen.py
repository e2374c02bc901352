"""`deepen`: load, find where the new layers go (onnxgrow.plan.deepen, onnxgrow.analysis.blocks), insert them
(onnxgrow.passes.insert_layers, onnxgrow.passes.copy_blocks), verify, write."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import onnx

from . import io
from .analysis.blocks import find_blocks, layer_units
from .analysis.groups import refuse_quantised
from .analysis.shapes import infer
from .collector import free_cycles, with_cycle_collector_paused
from .errors import OnnxGrowError, ParameterError
from .grow_result import GrowResult, parameter_count
from .io import ModelLike, load
from .passes.copy_blocks import ORDERS, CopyBlocks
from .passes.insert_layers import ACTIVATIONS, InsertLayers
from .plan.deepen import find_site
from .progress import ProgressFn
from .stream import Deferred, drop_weights, skeleton
from .verify import check_growth

__all__ = ["ACTIVATIONS", "BLOCKS", "KERNELS", "ORDERS", "DeepenResult", "deepen", "deepen_model"]

BLOCKS = ("identity", "residual", "copy")
#: kernel sizes of inserted convolutions
KERNELS = (1, 3)


@dataclass(kw_only=True)
class DeepenResult(GrowResult):
    """The deeper model with the names of the new nodes and notes for the user (what was inserted, why it is
    exact or not)."""

    inserted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What `onnxgrow deepen --json` prints (after "written")."""
        return {
            "inserted": self.inserted,
            "notes": self.notes,
            "exact": self.exact,
            **self._counts(),
            **self._verification(),
        }


@with_cycle_collector_paused
def deepen_model(
    model: ModelLike,
    after: str,
    *,
    block: str = "identity",
    count: int = 1,
    hidden: int | None = None,
    activation: str = "relu",
    kernel: int = 3,
    noise_std: float = 0.0,
    seed: int = 0,
    check: bool = True,
    approximate: bool = False,
    order: str = "interleave",
    output: str | os.PathLike | None = None,
    external_data: bool | None = None,
    progress: ProgressFn | None = None,
    **verify_args,
) -> DeepenResult:
    """Insert `count` new layers after `after`; verify (raises VerificationFailed on an unexpected mismatch).

    `order` (block copy): "interleave" puts each unit's copies right after it (L0 L0' L1 L1'), "stack" after
    the last unit, the sequence of units repeated (L0 L1 L0' L1'). Copied transformer layers are renumbered
    in their new order where the exporter's names number them (see onnxgrow.passes.copy_blocks.CopyBlocks); the
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
    if block not in BLOCKS:
        raise ParameterError("block", f"expected one of {', '.join(BLOCKS)}", value=block)
    if count < 1:
        raise ParameterError("count", "must be at least 1", value=count)
    if activation not in ACTIVATIONS:
        raise ParameterError("activation", f"expected one of {', '.join(ACTIVATIONS)}", value=activation)
    if hidden is not None and hidden < 1:
        raise ParameterError("hidden", "must be at least 1", value=hidden)
    if kernel not in KERNELS:
        raise ParameterError("kernel", f"expected one of {', '.join(map(str, KERNELS))}", value=kernel)
    if not noise_std >= 0:
        raise ParameterError("noise_std", "must not be negative", value=noise_std)
    if seed < 0:
        raise ParameterError("seed", "must not be negative", value=seed)
    out = io.output_path(output) if output is not None else None
    # load returns onnxgrow's own copy (of a file or of the caller's ModelProto), which is never changed
    original = load(model, progress=progress)
    refuse_quantised(original, "deepen")
    ref_iface = None  # the original's interface for the check of a written file (stubs: no weight bytes)
    deferred: dict[str, Deferred] | None = None
    if out is None or block != "copy":
        # deepened in place (and verified against `model` itself), so the weights are held once, not twice
        grown = original
        if out is not None and check:
            ref_iface = skeleton(original)[0]
    else:
        # a stub of every weight, its bytes read from `original` as the file is written (onnxgrow.stream)
        grown, deferred = skeleton(original)
        if check:
            ref_iface = onnx.ModelProto()
            ref_iface.CopyFrom(grown)
    result = DeepenResult(model=grown, params_before=parameter_count(grown))
    if block == "copy":
        blocks = find_blocks(grown)
        units = [u.strip() for u in after.split(",")] if after != "layers" else layer_units(blocks)
        if not units or not all(units):
            raise OnnxGrowError(
                f"--after {after}: no transformer layer found (see `onnxgrow inspect`)"
                if after == "layers"
                else f"--after {after!r}: expected block ids such as b0,b2-b3"
            )
        copied = CopyBlocks(units, count, order, blocks=blocks, deferred=deferred)(grown)
        result.inserted, result.notes, result.exact = copied.inserted, copied.notes, copied.exact
        if deferred is not None:
            deferred = copied.deferred
        del copied  # it holds the deferred bytes' sources, dropped before the check
    else:
        if order != "interleave":
            raise OnnxGrowError(
                f"--order {order}: only --block copy places copies; identity and residual layers go after --after"
            )
        site = find_site(grown, after, infer(grown))
        inserted = InsertLayers(
            site,
            block,
            count,
            label=after,
            hidden=hidden,
            activation=activation,
            kernel=kernel,
            noise_std=noise_std,
            seed=seed,
        )(grown)
        result.inserted, result.notes, result.exact = inserted.inserted, inserted.notes, inserted.exact
        del inserted, site  # they hold the original model, dropped before the check
    result.params_after = parameter_count(grown)
    if not result.exact and not approximate and not noise_std > 0:
        why = (
            "a normalisation follows the residual Add (post-norm), so a copy changes the outputs"
            if any("normalisation follows" in n for n in result.notes)
            else "the new layers change the outputs"
        )
        raise ParameterError(
            "after",
            f"{why}; pass approximate=True to write it anyway and see the error",
            value=after,
            mentions=("approximate=True",),
        )
    if out is None:
        if check:
            result.report = check_growth(
                model, grown, model, seed=seed, strict=result.exact, progress=progress, **verify_args
            )
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
            free_cycles()
            drop_weights(grown)
            result.report = check_growth(
                reference,
                pending.model_path,
                model,
                seed=seed,
                strict=result.exact,
                interfaces=(ref_iface, grown),
                progress=progress,
                **verify_args,
            )
        pending.commit()
    return result


def deepen(model: ModelLike, after: str, **kwargs) -> onnx.ModelProto:
    """Deepen `model` after the node or tensor `after` and return the verified ModelProto."""
    return deepen_model(model, after, **kwargs).model
