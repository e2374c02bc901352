"""`widen`: load, analyse, plan (onnxgrow.plan.widen), rewrite (onnxgrow.passes.widen), verify, write."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import onnx

from . import io
from .analysis import Analysis, Group, analyse
from .analysis.groups import refuse_quantised
from .collector import free_cycles, with_cycle_collector_paused
from .errors import ParameterError
from .grow_result import GrowResult, parameter_count
from .io import ModelLike, load
from .passes.widen import Untied, WidenPass
from .plan.widen import STRATEGIES, TRANSFORMER_PARTS, GroupPlan, parse_size, plan
from .progress import ProgressFn, step
from .stream import skeleton
from .verify import check_growth

__all__ = [
    "STRATEGIES",
    "TRANSFORMER_PARTS",
    "GroupPlan",
    "WidenResult",
    "inspect_model",
    "parameter_count",
    "parse_size",
    "plan",
    "widen",
    "widen_model",
]


@dataclass(kw_only=True)
class WidenResult(GrowResult):
    """The grown model with the plans that grew it, the groups `--all` skipped (with why) and the shared weights
    given a copy per class of readers because those grow them differently (`untied`)."""

    plans: list[GroupPlan] = field(default_factory=list)
    skipped: list[tuple[Group, str]] = field(default_factory=list)
    untied: list[Untied] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What `onnxgrow widen --json` prints (after "written")."""
        return {
            "groups": [
                {"id": p.group.id, "old": p.group.size, "new": p.new_size, "init": p.init, "note": p.note}
                for p in self.plans
            ],
            "skipped": [{"id": g.id, "reason": why} for g, why in self.skipped],
            "untied": [u.to_dict() for u in self.untied],
            **self._counts(),
            "exact": self.exact,
            **self._verification(),
        }


@with_cycle_collector_paused
def widen_model(
    model: ModelLike,
    layers: Mapping[str, str | int] | None = None,
    *,
    all: str | float | None = None,
    init: str = "noise",
    noise_std: float = 0.1,
    seed: int = 0,
    check: bool = True,
    approximate: bool = False,
    heads: str | int | None = None,
    ffn: str | int | None = None,
    hidden: str | int | None = None,
    keep_outputs: bool = False,
    keep_ties: bool = False,
    output: str | os.PathLike | None = None,
    external_data: bool | None = None,
    progress: ProgressFn | None = None,
    **verify_args,
) -> WidenResult:
    """Widen and (by default) verify; raises VerificationFailed when outputs differ (unless approximate).

    heads / ffn / hidden grow that group of every transformer layer (e.g. heads="+2", hidden="x2");
    keep_outputs lets groups that reach a graph output grow, slicing the output back to its old size.
    A weight shared by nodes that grow it differently (exporters merge equal initializers) gets a copy per
    reader class (`result.untied`); keep_ties refuses such a plan instead.

    With `output`, the grown model is written there (`external_data` as in `onnxgrow.save`) and
    `result.model` holds it without weights (stubs: names, types and grown shapes): each weight is grown
    while it is written, so no second copy of the model is held, and onnxruntime verifies the written
    file before it is renamed into place (a failed check writes nothing). `progress` is called with the
    steps "load", "analyse", "grow" (in memory) or "write" (with `output`), and "verify". `verify_args`
    (atol, rtol, relative_to, provider, input_shapes, iterations) go to the check, whose rtol is relative to
    each output's largest value unless relative_to="element" (see onnxgrow.verify.check_growth).
    """
    if not noise_std >= 0:
        raise ParameterError("noise_std", "must not be negative", value=noise_std)
    if seed < 0:
        raise ParameterError("seed", "must not be negative", value=seed)
    out = io.output_path(output) if output is not None else None
    original = load(model, progress=progress)
    refuse_quantised(original, "widen")
    with step(progress, "analyse"):
        analysis = analyse(original, keep_outputs=keep_outputs)
    parts = {k: v for k, v in (("heads", heads), ("ffn", ffn), ("hidden", hidden)) if v is not None}
    plans, skipped = plan(analysis, layers, all=all, init=init, approximate=approximate, transformer=parts)
    exact = not any(p.note and p.note.startswith("approximate") for p in plans)
    rewrite = WidenPass(
        analysis, plans, noise_std=noise_std, seed=seed, keep_ties=keep_ties, stream=out is not None, progress=progress
    )
    done = rewrite(original)
    grown = done.model
    result = WidenResult(
        model=grown,
        plans=plans,
        params_before=parameter_count(original),
        params_after=parameter_count(grown),
        skipped=skipped,
        exact=exact,
        untied=done.untied,
    )
    if out is None:
        if check:
            result.report = check_growth(
                original, grown, model, seed=seed, strict=not approximate, progress=progress, **verify_args
            )
            if not result.report.passed:
                result.exact = False
        return result
    deferred = done.deferred
    with io.PendingWrite(out) as pending:
        pending.write(grown, deferred, external_data, progress)
        if check:
            # the original's weights and the grown bytes' sources are dropped before onnxruntime loads
            # the two models (from their files where there are files)
            reference: ModelLike = model if isinstance(model, onnx.ModelProto) else str(model)
            ref_iface = skeleton(original)[0]
            del original, analysis, deferred, done, rewrite
            free_cycles()
            result.report = check_growth(
                reference,
                pending.model_path,
                model,
                seed=seed,
                strict=not approximate,
                interfaces=(ref_iface, grown),
                progress=progress,
                **verify_args,
            )
            if not result.report.passed:
                result.exact = False
        pending.commit()
    return result


def widen(
    model: ModelLike, layers: Mapping[str, str | int] | None = None, *, init: str = "noise", **kwargs
) -> onnx.ModelProto:
    """Widen `model` and return the grown, verified ModelProto (see `widen_model` for the details)."""
    return widen_model(model, layers, init=init, **kwargs).model


def inspect_model(model: ModelLike, keep_outputs: bool = False) -> Analysis:
    """The axis groups of a model (what `onnxgrow inspect` prints)."""
    return analyse(load(model), keep_outputs=keep_outputs)
