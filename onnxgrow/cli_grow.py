"""Sub-commands that grow and export models: inspect, widen, deepen, export (thin wrappers over the API)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from .cli_args import ArgGroup, DeepenArgs, ExportArgs, OutputArgs, WidenArgs, add_check_groups, check_kwargs
from .collector import with_cycle_collector_paused
from .errors import OnnxGrowError
from .progress import ProgressFn

if TYPE_CHECKING:
    from .verify import Report


class _Grown(Protocol):
    """What a growth command's result has: WidenResult, DeepenResult."""

    @property
    def report(self) -> Report | None: ...


R = TypeVar("R", bound=_Grown)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the growth sub-commands on the top-level parser, each with its argument groups (onnxgrow.cli_args)."""
    p = sub.add_parser(
        "inspect",
        help="list the axis groups of a model and what may grow",
        description="Print every axis group: size, constraint and why, producers, consumers, weights.",
    )
    p.add_argument("model", help="the model (.onnx)")
    p.add_argument("--json", action="store_true", help="print the groups as JSON on stdout")
    p.add_argument(
        "--keep-outputs",
        action="store_true",
        help="show groups as `widen --keep-outputs` sees them (graph outputs do not block growth)",
    )
    p.add_argument(
        "--layers",
        action="store_true",
        help="print only the transformer layers (heads, head size, hidden, feed-forward, blocks)",
    )
    p.set_defaults(func=_cmd_inspect, groups=[])

    p = sub.add_parser(
        "widen",
        help="add units to layers without changing what the model computes",
        description="Widen axis groups, verify the result against the original in onnxruntime, "
        "and write it only when every output matches.",
    )
    p.add_argument("model", help="the model to grow (.onnx); it is never modified")
    groups: list[ArgGroup] = [OutputArgs("where to write the grown model"), WidenArgs()]
    for group in groups:
        group.add(p)
    p.set_defaults(func=_cmd_widen, groups=groups + add_check_groups(p, full=False))

    p = sub.add_parser(
        "deepen",
        help="insert layers that do not change what the model computes",
        description="Insert identity layers, zero-initialised residual blocks or copies of residual "
        "blocks after a node or tensor; verify; write only when the check passes.",
    )
    p.add_argument("model", help="the model to grow (.onnx); it is never modified")
    groups = [OutputArgs("where to write the deeper model"), DeepenArgs()]
    for group in groups:
        group.add(p)
    p.set_defaults(func=_cmd_deepen, groups=groups + add_check_groups(p, full=False))

    p = sub.add_parser(
        "export",
        help="write a grown model for a training framework",
        description="torch: a torch.fx GraphModule (onnx2torch) whose every weight is a trainable "
        "nn.Parameter, saved with torch.save. mxnet: an ONNX file that MXNet 1.9's "
        "importer (mxnet.contrib.onnx.import_to_gluon) accepts. Training restarts with a "
        "fresh optimiser: optimiser state is not part of ONNX (to keep it, load the grown "
        "weights into your own PyTorch module: onnxgrow.torch.state_dict_for and "
        "grow_optimizer_state). The model's growth map goes with it.",
    )
    p.add_argument("model", help="the model (.onnx)")
    groups = [ExportArgs(), OutputArgs("output file (.pt for torch, .onnx for mxnet)", external_data=False)]
    for group in groups:
        group.add(p)
    p.set_defaults(
        func=_cmd_export,
        groups=groups
        + add_check_groups(
            p,
            full=False,
            json_flag=False,
            title="verification (--to mxnet: the converted model is run next to the original)",
        ),
    )


@with_cycle_collector_paused
def _cmd_inspect(args: argparse.Namespace) -> int:
    from .analysis.blocks import find_blocks
    from .analysis.transformer import layers as transformer_layers
    from .report import blocks_table, console, groups_table, transformer_table
    from .widen import inspect_model

    analysis = inspect_model(args.model, keep_outputs=args.keep_outputs)
    blocks = find_blocks(analysis.model)
    layers = transformer_layers(analysis)
    if args.json:
        print(
            json.dumps(
                {
                    "groups": [g.to_dict() for g in analysis.groups],
                    "blocks": [b.to_dict() for b in blocks],
                    "transformer_layers": [layer.to_dict() for layer in layers],
                },
                indent=2,
            )
        )
    else:
        out = console()
        if args.layers and not layers:
            raise OnnxGrowError(f"{args.model}: no attention layer found (inspect without --layers lists its groups)")
        if not args.layers:
            out.print(groups_table(analysis, args.model))
            if blocks:
                out.print(blocks_table(blocks))
        if layers:
            from .analysis.blocks import layer_units, resolve_chain

            # each layer's block unit, found from the units' nodes (linear in the graph, not units x layers)
            scores = {layer.scores for layer in layers}
            units = {}
            for unit in layer_units(blocks):
                for b in resolve_chain(blocks, unit):
                    for n in scores.intersection(b.nodes):
                        units[n] = unit
            out.print(transformer_table(layers, units))
    return 0


def check_output_path(model: str, output: str) -> None:
    """Refuse to overwrite the input, and folders that do not exist, before any work is done."""
    src, dst = Path(model), Path(output)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OnnxGrowError(f"-o {output}: is the input model; onnxgrow never overwrites its input")
    data = dst.with_name(dst.name + ".data")  # written beside the output with external data
    if src.is_file() and (dst.exists() or data.exists()):
        from .io import external_files

        for ext in external_files(src):
            for target in (dst, data):
                if target.exists() and os.path.samefile(target, ext):
                    raise OnnxGrowError(
                        f"-o {output}: {target} holds the external data of the input model; "
                        "onnxgrow never overwrites its input"
                    )
    folder = dst.parent if str(dst.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OnnxGrowError(f"-o {output}: '{folder}' is a file, not a folder")
    if not folder.is_dir():
        raise OnnxGrowError(f"-o {output}: folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxGrowError(f"-o {output}: folder '{folder}' is not writable")
    if dst.is_dir():
        raise OnnxGrowError(f"-o {output}: is a folder; give a file name")


def _grow(
    args: argparse.Namespace,
    run: Callable[[ProgressFn | None], R],
    fields: Callable[[R], dict[str, Any]],
    show: Callable[[R], None],
) -> int:
    """Run a growth command (widen, deepen): refuse a bad output path first, run it with progress bars, then
    print its result: `fields` (between "written" and "verification") as JSON with --json, else `show`. A failed
    check prints its report as JSON too (nothing written) before the failure is raised."""
    from .errors import VerificationFailed
    from .progress_bars import on_stderr

    check_output_path(args.model, args.output)
    try:
        with on_stderr() as progress:
            result = run(progress)
    except VerificationFailed as exc:
        if args.json and exc.report is not None:
            print(json.dumps({"written": None, "verification": exc.report.to_dict()}, indent=2))
        raise
    if args.json:
        report = result.report
        print(
            json.dumps(
                {"written": args.output, **fields(result), "verification": report.to_dict() if report else None},
                indent=2,
            )
        )
    else:
        show(result)
    return 0


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The API keyword arguments of every argument group of the command."""
    return check_kwargs(args.groups)


def _cmd_widen(args: argparse.Namespace) -> int:
    from .report import console, widen_table
    from .widen import WidenResult, widen_model

    def fields(result: WidenResult) -> dict[str, Any]:
        return {
            "groups": [
                {"id": p.group.id, "old": p.group.size, "new": p.new_size, "init": p.init, "note": p.note}
                for p in result.plans
            ],
            "skipped": [{"id": g.id, "reason": why} for g, why in result.skipped],
            "untied": [u.to_dict() for u in result.untied],
            "params_before": result.params_before,
            "params_after": result.params_after,
            "exact": result.exact,
        }

    def show(result: WidenResult) -> None:
        out = console()
        out.print(widen_table(result))
        out.print(f"wrote {args.output}", markup=False)

    kwargs = _kwargs(args)
    return _grow(
        args, lambda progress: widen_model(args.model, kwargs.pop("layers"), progress=progress, **kwargs), fields, show
    )


def _cmd_deepen(args: argparse.Namespace) -> int:
    from .deepen import DeepenResult, deepen_model
    from .report import console, fmt

    def fields(result: DeepenResult) -> dict[str, Any]:
        return {
            "inserted": result.inserted,
            "notes": result.notes,
            "exact": result.exact,
            "params_before": result.params_before,
            "params_after": result.params_after,
        }

    def show(result: DeepenResult) -> None:
        out = console()
        rep = result.report
        status = "exact" if result.exact else "APPROXIMATE"
        err = (
            "not verified"
            if rep is None
            else f"max abs error {fmt(rep.worst_abs)}, normalised {fmt(rep.worst_normalised)}"
        )
        out.print(
            f"deepen --block {args.block} after {args.after}: {len(result.inserted)} new nodes, "
            f"parameters {result.params_before:,} -> {result.params_after:,}; {err} ({status})",
            markup=False,
        )
        for note in result.notes:
            out.print(f"  {note}", markup=False)
        out.print(f"wrote {args.output}", markup=False)

    kwargs = _kwargs(args)
    return _grow(
        args, lambda progress: deepen_model(args.model, kwargs.pop("after"), progress=progress, **kwargs), fields, show
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from .io import load

    check_output_path(args.model, args.output)
    model = load(args.model)
    if args.to == "torch":
        try:
            from .export.torch import save_module, to_module
        except ImportError as exc:
            raise OnnxGrowError(f"--to torch needs the torch extra: pip install 'onnxgrow[torch]' ({exc})") from None
        save_module(to_module(model), args.output)
    else:
        from .export.mxnet import for_mxnet
        from .io import save

        kwargs = _kwargs(args)
        del kwargs["output"], kwargs["to"]
        save(for_mxnet(model, **kwargs), args.output)
    print(f"wrote {args.output}")
    return 0
