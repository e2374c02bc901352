"""Run two models in onnxruntime on the same inputs and compare every output.

Two ways to apply `rtol` (`relative_to`): "element" (Polygraphy's meaning, `verify`'s default) takes each
element's own |reference| as the scale, so an element fails only when its error exceeds both atol and
rtol · |ref|; "output" (the growth checks' default) takes the output's largest |reference|, so an output
fails only when its largest error exceeds both atol and rtol · max |ref|. The second is what float32
rounding allows: an element that is a small difference of large partial sums carries the rounding of those
sums, which element-wise tolerances read as a mismatch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .errors import NOTHING, InternalError, OnnxGrowError, ParameterError, VerificationFailed, closest
from .inputs import InputSpec, check_save_path, generate, input_specs, load_npz, save_npz
from .io import ModelLike, load, needs_external_data
from .progress import ProgressFn
from .stream import skeleton

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
#: what rtol is relative to: each element's |reference| (Polygraphy), or the output's largest |reference|
RELATIVE_TO = ("element", "output")
#: onnxruntime execution providers `provider` may name
PROVIDERS = ("cpu", "cuda")


@dataclass(frozen=True)
class Tolerances:
    """atol and rtol of every output, with per-output values where given (output name -> tolerance).

    A check fails only where the error exceeds both atol and rtol (see `compare`). Every value must be a
    non-negative number; per-output names must be outputs of the model checked."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    atol_per_output: Mapping[str, float] = field(default_factory=dict)
    rtol_per_output: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _tolerance("tolerances.atol", self.atol)
        _tolerance("tolerances.rtol", self.rtol)
        for kind in ("atol_per_output", "rtol_per_output"):
            for name, value in getattr(self, kind).items():
                _tolerance(f"tolerances.{kind}", value, key=name)

    def of(self, output: str) -> tuple[float, float]:
        """(atol, rtol) of one output."""
        return self.atol_per_output.get(output, self.atol), self.rtol_per_output.get(output, self.rtol)

    def check_outputs(self, outputs: Sequence[str]) -> None:
        """Refuse a per-output tolerance for an output the model does not have."""
        for kind in ("atol_per_output", "rtol_per_output"):
            for name in getattr(self, kind):
                if name not in outputs:
                    raise ParameterError(
                        f"tolerances.{kind}",
                        f"the model has no output named {name!r}{closest(name, list(outputs))}",
                        key=name,
                    )


def _tolerance(param: str, value: object, key: str | None = None) -> float:
    """`value` as a tolerance: a non-negative number, else a ParameterError naming `param`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ParameterError(
            param,
            "expected a number (per-output values: tolerances=Tolerances(...))",
            value=value if key is None else NOTHING,
            key=key,
        )
    number = float(value)
    if number != number:
        raise ParameterError(
            param, "tolerance must be a number, not NaN", value=value if key is None else NOTHING, key=key
        )
    if number < 0:
        raise ParameterError(param, "tolerance must not be negative", value=value if key is None else NOTHING, key=key)
    return number


def tolerances_of(atol: float | None, rtol: float | None, tolerances: Tolerances | None) -> Tolerances:
    """The tolerances of a check: `tolerances`, or `atol`/`rtol` (each defaulting to 1e-5) for every output."""
    if tolerances is not None:
        if atol is not None or rtol is not None:
            raise ParameterError("tolerances", "give tolerances or atol/rtol, not both", mentions=("atol", "rtol"))
        if not isinstance(tolerances, Tolerances):
            raise ParameterError("tolerances", "expected a Tolerances value", value=tolerances)
        return tolerances
    return Tolerances(
        DEFAULT_ATOL if atol is None else _tolerance("atol", atol),
        DEFAULT_RTOL if rtol is None else _tolerance("rtol", rtol),
    )


@dataclass
class OutputResult:
    """How one output compared, worst case over all iterations."""

    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    passed: bool
    atol: float
    rtol: float
    reason: str | None = None
    scale: float = 0.0  # max |reference| of this output, to normalise errors
    relative_to: str = "element"  # how it was compared: integer and bool outputs always element-wise

    @property
    def normalised(self) -> float:
        """Max abs error relative to the output's magnitude (the max abs error itself when the output is all 0)."""
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs


@dataclass
class Report:
    """The outcome of a verification; `passed` is True when every output matched."""

    outputs: list[OutputResult] = field(default_factory=list)
    provider: str = "cpu"
    iterations: int = 1
    seed: int = 1
    inputs: dict[str, list[int]] = field(default_factory=dict)
    defaulted_inputs: list[str] = field(default_factory=list)
    relative_to: str = "element"  # what rtol was relative to (see RELATIVE_TO)
    reference: str | None = None  # what the reference outputs came from: "PATH (onnxruntime)", "outputs FILE.npz"
    candidate: str | None = None  # what was checked against them, "PATH (torch)", ...; None when only recorded

    @property
    def compared(self) -> bool:
        """Whether a candidate was compared (False when the run only recorded the reference's outputs)."""
        return self.candidate is not None or bool(self.outputs)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def worst_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def worst_normalised(self) -> float:
        """Worst max-abs error divided by the magnitude of that output (recorded per output)."""
        return max((o.normalised for o in self.outputs), default=0.0)

    def to_dict(self) -> dict:
        """Plain JSON-safe values: NaN and ±Inf errors become None (`reason` says why)."""
        return {
            "passed": self.passed,
            "provider": self.provider,
            "iterations": self.iterations,
            "seed": self.seed,
            "inputs": self.inputs,
            "defaulted_inputs": self.defaulted_inputs,
            "relative_to": self.relative_to,
            "reference": self.reference,
            "candidate": self.candidate,
            "outputs": [_json_safe({**asdict(o), "normalised": o.normalised}) for o in self.outputs],
        }

    def summary(self) -> str:
        """One line naming the outputs that failed and by how much (or that all passed)."""
        failed = [o for o in self.outputs if not o.passed]
        if not failed:
            return f"all {len(self.outputs)} output(s) match"
        parts = [f"{o.name} ({o.reason or 'mismatch'}; {_error_text(o)})" for o in failed[:3]]
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        return f"{len(failed)} of {len(self.outputs)} output(s) differ: " + ", ".join(parts) + more


def _error_text(o: OutputResult) -> str:
    """`max abs error E, atol A, rtol R`, with the error and rtol relative to the output when it was so compared."""
    if o.relative_to == "output" and o.scale > 0 and o.max_abs == o.max_abs:
        return (
            f"max abs error {o.max_abs:.3g} = {o.normalised:.3g} of the output's largest value {o.scale:.3g}; "
            f"atol {o.atol:g}, rtol {o.rtol:g} of that value"
        )
    return f"max abs error {o.max_abs:.3g}, atol {o.atol:g}, rtol {o.rtol:g}"


def check_relative_to(relative_to: str | None, default: str) -> str:
    """`relative_to`, or `default` when None; anything else than RELATIVE_TO is a usage error."""
    value = default if relative_to is None else relative_to
    if value not in RELATIVE_TO:
        raise ParameterError("relative_to", f"expected {' or '.join(RELATIVE_TO)}", value=value)
    return value


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def providers_for(provider: str) -> list[str]:
    """onnxruntime provider list for `cpu` or `cuda`; a clear error when CUDA is not available."""
    import onnxruntime as ort

    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ParameterError(
                "provider",
                "this onnxruntime has no CUDA execution provider (available: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use "
                "provider='cpu'",
                value=provider,
                mentions=("provider='cpu'",),
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ParameterError("provider", f"expected {' or '.join(PROVIDERS)}", value=provider)


class Runner:
    """An onnxruntime session with graph optimisations off (so fusion cannot hide a difference)."""

    def __init__(self, model: onnx.ModelProto | str, providers: list[str], label: str) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # no pre-packed copies of Gemm/MatMul/Conv weights: a session runs a few times, and pre-packing
        # costs a second copy of the weights and most of the session's start-up on large models
        opts.add_session_config_entry("session.disable_prepacking", "1")
        opts.log_severity_level = 3
        self.label = label
        self._tmp: tempfile.TemporaryDirectory | None = None
        try:
            if isinstance(model, str):  # a file (already loaded and checked): onnxruntime reads it itself
                self.session = ort.InferenceSession(model, opts, providers=providers)
            elif needs_external_data(model):
                self._tmp = tempfile.TemporaryDirectory(prefix="onnxgrow-")
                path = os.path.join(self._tmp.name, "model.onnx")
                from .io import save

                save(model, path, external_data=True)
                self.session = ort.InferenceSession(path, opts, providers=providers)
            else:
                self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OnnxGrowError(f"{label}: onnxruntime cannot load the model: {_first_line(exc)}") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, feeds)
        except Exception as exc:
            raise OnnxGrowError(f"{self.label}: onnxruntime failed to run the model: {_first_line(exc)}") from exc
        return dict(zip(self.output_names, outs))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def compare(
    ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float, relative_to: str = "element"
) -> tuple[float, float, bool, str | None]:
    """Max abs / rel error, and whether they are within the tolerances.

    "element" (Polygraphy): an element fails only when it exceeds both atol and rtol · |its reference|.
    "output": the output fails only when its max abs error exceeds both atol and rtol · max |reference|.
    Integer and bool outputs are compared element-wise either way (no rounding to forgive), and NaN or Inf
    in either output fails either way (random inputs that drive a model there show nothing).
    """
    if ref.shape != cand.shape:
        return float("inf"), float("inf"), False, f"shape {list(cand.shape)} != reference {list(ref.shape)}"
    integer = ref.dtype.kind in "biu" and cand.dtype.kind in "biu"
    if integer:
        diff = np.abs(ref.astype(np.int64) - cand.astype(np.int64)).astype(np.float64)
        r = np.abs(ref.astype(np.float64))
    else:
        c64 = cand.astype(np.float64)
        if not np.all(np.isfinite(c64)):
            return float("nan"), float("nan"), False, "NaN or Inf in candidate"
        r = ref.astype(np.float64)
        if not np.all(np.isfinite(r)):
            # nothing finite can match it, and NaN compares false with every tolerance
            return float("nan"), float("nan"), False, "NaN or Inf in reference"
        diff = np.abs(r - c64)
        r = np.abs(r)
    if diff.size == 0:
        return 0.0, 0.0, True, None
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(r > 0, diff / r, np.where(diff > 0, np.inf, 0.0))
    max_abs = float(diff.max())
    if relative_to == "output" and not integer:
        ok = not (max_abs > atol and max_abs > rtol * float(r.max()))
    else:
        ok = not bool(((diff > atol) & (rel > rtol)).any())
    return max_abs, float(rel.max()), ok, None if ok else "exceeds tolerance"


def verify(
    reference: ModelLike,
    candidate: ModelLike | str | os.PathLike | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    tolerances: Tolerances | None = None,
    seed: int = 1,
    iterations: int = 1,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    load_inputs: str | None = None,
    save_inputs: str | None = None,
    provider: str = "cpu",
    relative_to: str | None = None,
    progress: ProgressFn | None = None,
    interfaces: tuple[onnx.ModelProto, onnx.ModelProto] | None = None,
    load_outputs: str | None = None,
    save_outputs: str | None = None,
    candidate_runtime: str | None = None,
    mxnet_python: str | None = None,
) -> Report:
    """Compare every output of `candidate` with `reference` on shared random (or loaded) inputs.

    `atol` and `rtol` (default 1e-5 each) hold for every output; `tolerances` gives them per output instead
    (`Tolerances(atol=..., atol_per_output={"logits": 1e-3})`). `relative_to` is what `rtol` multiplies:
    "element" (default; each element's |reference|, Polygraphy's meaning) or "output" (the output's largest
    |reference|; see `compare`). `input_shapes` gives the shapes of dynamic inputs (input name -> dims).
    A bad value raises a ParameterError naming the parameter.

    Other references and candidates (Polygraphy's flags, where they exist):
    - `load_outputs`: the reference outputs come from an .npz file (keyed by output name, e.g. saved by the
      framework the model came from, or by `save_outputs`) and `reference` is the model checked against them
      (no `candidate`); the inputs must be the ones they were computed from (`load_inputs`, or the seed and
      shapes of the run that saved them).
    - `save_outputs`: the outputs of the model that onnxruntime runs first (`reference`) are written to an .npz
      file, only when the check passes (a record later runs are checked against); without a candidate or loaded
      outputs, `reference` only runs and they are written (the report compares nothing).
    - `candidate_runtime` ("onnxruntime", "torch", "mxnet"; by default torch for a .pt file): a module saved by
      `export --to torch`, or an ONNX file written by `export --to mxnet` run as MXNet's Gluon import (in the
      Python `mxnet_python`, $ONNXGROW_MXNET_PYTHON or .venv-mxnet).

    A model given as a file goes to onnxruntime as that file; Python reads it only for its inputs and
    outputs (not its external data), and not at all when `interfaces` gives models with the same inputs,
    outputs and initializer names and shapes (weights not needed: stubs will do) for both.
    `progress` gets the step "verify", counted in onnxruntime sessions and runs.
    """
    from .inputs import load_outputs_npz
    from .runners import MXNetRunner, TorchRunner, runtime_for

    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ParameterError("iterations", "must be at least 1", value=iterations)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError("seed", "must not be negative", value=seed)
    if provider not in PROVIDERS:
        raise ParameterError("provider", f"expected {' or '.join(PROVIDERS)}", value=provider)
    if load_outputs is not None and candidate is not None:
        raise ParameterError(
            "load_outputs",
            "the loaded outputs are the reference; give the one model to check against them, not two",
            value=load_outputs,
        )
    if candidate is None and load_outputs is None and save_outputs is None:
        raise ParameterError(
            "",
            "give a candidate model to compare with, or load_outputs (compare with saved "
            "outputs) or save_outputs (only record the model's outputs)",
            mentions=("load_outputs", "save_outputs"),
        )
    # the model under test: the candidate, or with loaded outputs the one model given
    tested = reference if load_outputs is not None else candidate
    runtime = runtime_for(tested, candidate_runtime) if tested is not None else "onnxruntime"
    if runtime != "onnxruntime" and isinstance(tested, onnx.ModelProto):
        raise ParameterError("candidate_runtime", "give the candidate as a file", value=runtime)
    for param, path in (("save_inputs", save_inputs), ("save_outputs", save_outputs)):
        if not path:
            continue
        check_save_path(path, param)
        for side, model, mention in (
            ("reference model", reference, ()),
            ("candidate model", candidate, ()),
            ("load_inputs file", load_inputs, ("load_inputs",)),
            ("load_outputs file", load_outputs, ("load_outputs",)),
        ):
            if (
                model is not None
                and not isinstance(model, onnx.ModelProto)
                and Path(path).exists()
                and Path(model).exists()
                and os.path.samefile(path, model)
            ):
                raise ParameterError(
                    param, f"is the {side}; onnxgrow never overwrites its input", value=path, mentions=mention
                )
    if save_inputs and save_outputs and os.path.abspath(save_inputs) == os.path.abspath(save_outputs):
        raise ParameterError(
            "save_outputs",
            "is also the save_inputs file; give two files",
            value=save_outputs,
            mentions=("save_inputs",),
        )
    if load_outputs is not None and runtime == "torch":
        raise ParameterError(
            "load_outputs",
            f"checks an ONNX model ({reference} is a PyTorch module); check the "
            f"module against the ONNX file it was exported from: verify MODEL.onnx {reference}",
            value=load_outputs,
        )
    if tested is not None and runtime != "onnxruntime" and not Path(tested).is_file():
        raise OnnxGrowError(f"{tested}: no such file")
    relative_to = check_relative_to(relative_to, "element")
    tol = tolerances_of(atol, rtol, tolerances)
    providers = providers_for(provider)
    ref_iface, cand_iface = interfaces or (None, None)
    # files are read without external data, and the reference's weights are dropped before the candidate
    # is read: only inputs, outputs, initializer names and shapes are needed here
    if ref_iface is None and isinstance(reference, onnx.ModelProto):
        ref_iface = reference
    elif ref_iface is None:
        ref_iface = skeleton(load(reference, fold=False, external_data=False))[0]  # weights dropped at once
    onnx_candidate = candidate is not None and runtime in ("onnxruntime", "mxnet")
    if cand_iface is None and onnx_candidate and candidate is not None:
        cand_iface = (
            candidate if isinstance(candidate, onnx.ModelProto) else load(candidate, fold=False, external_data=False)
        )
    specs = input_specs(ref_iface, _shapes(input_shapes))
    if onnx_candidate and cand_iface is not None:
        _check_same_interface(ref_iface, cand_iface, specs)
    outs = [o.name for o in ref_iface.graph.output]
    tol.check_outputs(outs)
    # the loaded copies are not needed any more: onnxruntime reads files itself
    del ref_iface, cand_iface
    if load_inputs:
        feeds_list = load_npz(load_inputs, specs)
    else:
        feeds_list = [generate(specs, seed + i) for i in range(iterations)]
    stages, done = 2 * (1 + len(feeds_list)), 0

    def advance() -> None:
        nonlocal done
        if progress:
            progress("verify", done, stages)
        done += 1

    def label(model: object, side: str) -> str:
        return side if isinstance(model, onnx.ModelProto) else f"{side} {model}"

    advance()
    if load_outputs is not None:
        wants = load_outputs_npz(load_outputs, outs, len(feeds_list))
        advance()
        for _ in feeds_list:
            advance()
    else:
        # The two sessions live one after the other, so peak memory holds one model's weights in onnxruntime.
        ref_run = Runner(
            reference if isinstance(reference, onnx.ModelProto) else str(reference),
            providers,
            label(reference, "reference"),
        )
        advance()
        wants = []
        for feeds in feeds_list:
            wants.append(ref_run.run(feeds))
            advance()
        del ref_run
    if tested is None:  # only recording the outputs
        if save_outputs:
            save_npz(save_outputs, wants, "save_outputs")
        if save_inputs:
            save_npz(save_inputs, feeds_list)
        return Report(
            outputs=[],
            provider=provider,
            iterations=len(feeds_list),
            seed=seed,
            inputs={s.name: list(feeds_list[0][s.name].shape) for s in specs},
            defaulted_inputs=[s.name for s in specs if s.defaulted and not load_inputs],
            relative_to=relative_to,
            reference=_describe(reference, "onnxruntime"),
            candidate=None,
        )
    cand_run: Runner | TorchRunner | None = None
    gots: list[dict[str, np.ndarray]] | None = None
    if runtime == "torch":
        cand_run = TorchRunner(str(tested), [s.name for s in specs], outs, provider)
    elif runtime == "mxnet":
        gots = MXNetRunner(str(tested), outs, mxnet_python).run_all(feeds_list)
    else:
        cand_run = Runner(
            tested if isinstance(tested, onnx.ModelProto) else str(tested),
            providers,
            "candidate" if isinstance(tested, onnx.ModelProto) or interfaces else f"candidate {tested}",
        )
    advance()
    results: dict[str, OutputResult] = {}
    tested_outputs = []
    for i, (feeds, want) in enumerate(zip(feeds_list, wants)):
        if gots is not None:
            got = gots[i]
        elif cand_run is not None:
            got = cand_run.run(feeds)
        else:  # every runtime sets one of the two
            raise InternalError("verify: no runner for the candidate")
        if save_outputs and load_outputs is not None:
            tested_outputs.append(got)
        for name, ref in want.items():
            a, r = tol.of(name)
            mode = "element" if ref.dtype.kind in "biu" else relative_to  # no rounding to forgive in integers
            if name not in got:
                res = OutputResult(
                    name, list(ref.shape), float("inf"), float("inf"), False, a, r, "missing in candidate"
                )
            else:
                mabs, mrel, ok, why = compare(ref, got[name], a, r, mode)
                res = OutputResult(name, list(ref.shape), mabs, mrel, ok, a, r, why)
            res.relative_to = mode
            res.scale = float(np.max(np.abs(ref.astype(np.float64)))) if ref.size else 0.0
            prev = results.get(name)
            if prev is not None and mode == "element":
                res.scale = max(res.scale, prev.scale)  # compared with its own scale otherwise: keep that one
            if prev is None or _worse(res, prev):
                results[name] = res
        advance()
    cand_run = None  # its session's memory goes now, not at return
    if save_inputs:  # on a failure too: they reproduce it
        save_npz(save_inputs, feeds_list)
    report = Report(
        outputs=list(results.values()),
        provider=provider,
        iterations=len(feeds_list),
        seed=seed,
        inputs={s.name: list(feeds_list[0][s.name].shape) for s in specs},
        defaulted_inputs=[s.name for s in specs if s.defaulted and not load_inputs],
        relative_to=relative_to,
        reference=f"outputs {load_outputs}" if load_outputs is not None else _describe(reference, "onnxruntime"),
        candidate=_describe(tested, runtime),
    )
    # outputs are a record to check later runs against: written only when the check passed. Against loaded
    # outputs they are the model's own (what Polygraphy saves: the outputs of the runner that ran)
    if save_outputs and report.passed:
        save_npz(save_outputs, tested_outputs if load_outputs is not None else wants, "save_outputs")
    return report


def _shapes(input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """`input_shapes` as input name -> dims, each dim a non-negative int; anything else names the parameter."""
    if input_shapes is None:
        return {}
    if not isinstance(input_shapes, Mapping):
        raise ParameterError(
            "input_shapes",
            "expected a mapping of input name to dimensions, such as {'x': (1, 3, 224, 224)}",
            value=input_shapes,
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in input_shapes.items():
        if (
            isinstance(dims, (str, bytes))
            or not isinstance(dims, Sequence)
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims)
        ):
            raise ParameterError(
                "input_shapes", "dimensions must be a sequence of integers such as (1, 3, 224, 224)", key=str(name)
            )
        if any(d < 0 for d in dims):
            raise ParameterError("input_shapes", "dimensions must not be negative", key=str(name))
        shapes[str(name)] = tuple(int(d) for d in dims)
    return shapes


def _describe(model: object, runtime: str) -> str:
    """`path (runtime)` for a report, `model (runtime)` for an in-memory model."""
    return f"{'model' if isinstance(model, onnx.ModelProto) else model} ({runtime})"


def cannot_verify(exc: OnnxGrowError, model: object) -> OnnxGrowError:
    """The error widen/deepen raise when verification cannot even start: onnxruntime does not run the
    original model (a bfloat16 Gemm on CPU, a custom op ...). Other errors are returned unchanged."""
    msg = str(exc)
    if isinstance(exc, VerificationFailed) or not msg.startswith("reference"):
        return exc
    where = "model" if isinstance(model, onnx.ModelProto) else str(model)
    detail = msg.split(": ", 1)[1] if ": " in msg else msg
    return ParameterError(
        "", f"{where}: cannot verify the growth: {detail} (check=False writes it unverified)", mentions=("check=False",)
    )


def _worse(a: OutputResult, b: OutputResult) -> bool:
    """Whether iteration result `a` is worse than `b` (the report keeps the worst of each output)."""
    if a.passed != b.passed:
        return not a.passed
    if a.relative_to == "output":
        return a.normalised > b.normalised or a.max_abs != a.max_abs
    return (a.max_abs, a.max_rel) > (b.max_abs, b.max_rel) or a.max_abs != a.max_abs


def _check_same_interface(ref: onnx.ModelProto, cand: onnx.ModelProto, specs: list[InputSpec]) -> None:
    inits = {t.name for t in cand.graph.initializer}
    cand_inputs = {i.name for i in cand.graph.input if i.name not in inits}
    missing = [s.name for s in specs if s.name not in cand_inputs]
    if missing:
        raise OnnxGrowError(f"candidate: has no input named {', '.join(repr(m) for m in missing)} (the reference has)")
    extra = sorted(cand_inputs - {s.name for s in specs})
    if extra:
        raise OnnxGrowError(f"candidate: needs inputs the reference does not have: {', '.join(extra)}")


def check_growth(
    original: ModelLike,
    grown: ModelLike,
    source: object,
    *,
    seed: int,
    strict: bool,
    relative_to: str | None = None,
    **verify_args,
) -> Report:
    """Verify a grown model against its original (seed + 1); with `strict`, a mismatch raises VerificationFailed.

    Shared by widen and deepen so both refuse, and word the refusal, the same way. `relative_to` defaults to
    "output": a grown model sums its layers in another order (zero-padded channels, other kernels), and the
    rounding of large partial sums is judged against the size of the output, not of each element.
    """
    from .errors import VerificationFailed

    relative_to = check_relative_to(relative_to, "output")
    try:
        report = verify(original, grown, seed=seed + 1, relative_to=relative_to, **verify_args)
    except OnnxGrowError as exc:
        raise cannot_verify(exc, source) from exc
    if strict and not report.passed:
        raise VerificationFailed(f"verification failed: {failure_text(report)}; nothing was written", report)
    return report


def failure_text(report: Report) -> str:
    """`output NAME differs by up to ...` for the worst failed output of a report."""
    failed = [o for o in report.outputs if not o.passed] or report.outputs
    worst = max(
        failed, key=lambda o: (o.max_abs != o.max_abs, o.normalised if o.relative_to == "output" else o.max_abs)
    )
    if worst.reason and not worst.reason.startswith("exceeds"):
        return f"output {worst.name}: {worst.reason}"
    if worst.relative_to == "output" and worst.scale > 0:
        return (
            f"output {worst.name} differs by up to {worst.max_abs:.3g}, {worst.normalised:.3g} of its largest "
            f"value {worst.scale:.3g} (atol {worst.atol:g}, rtol {worst.rtol:g} of the largest value)"
        )
    return f"output {worst.name} differs by up to {worst.max_abs:.3g} (atol {worst.atol:g}, rtol {worst.rtol:g})"
