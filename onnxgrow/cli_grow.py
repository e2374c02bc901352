"""Sub-commands that grow models: inspect and widen (thin wrappers over the API)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Callable

from .errors import OnnxGrowError


def add_commands(sub: argparse._SubParsersAction, add_verify_flags: Callable) -> None:
    """Register the growth sub-commands on the top-level parser."""
    p = sub.add_parser("inspect", help="list the axis groups of a model and what may grow",
                       description="Print every axis group: size, constraint and why, producers, consumers, weights.")
    p.add_argument("model", help="the model (.onnx)")
    p.add_argument("--json", action="store_true", help="print the groups as JSON on stdout")
    p.add_argument("--keep-outputs", action="store_true",
                   help="show groups as `widen --keep-outputs` sees them (graph outputs do not block growth)")
    p.add_argument("--layers", action="store_true",
                   help="print only the transformer layers (heads, head size, hidden, feed-forward, blocks)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("widen", help="add units to layers without changing what the model computes",
                       description="Widen axis groups, verify the result against the original in onnxruntime, "
                                   "and write it only when every output matches.")
    p.add_argument("model", help="the model to grow (.onnx); it is never modified")
    p.add_argument("-o", "--output", required=True, help="where to write the grown model")
    p.add_argument("--layer", action="append", default=[], metavar="NAME=SIZE",
                   help="grow the group of NAME (node, weight or group id) to SIZE, xF (factor) or +N (repeatable)")
    p.add_argument("--all", metavar="xF", help="grow every group that is not blocked by a factor F (e.g. x2)")
    p.add_argument("--heads", metavar="SIZE", help="transformers: attention heads of every layer (e.g. +2, x2)")
    p.add_argument("--ffn", metavar="SIZE", help="transformers: feed-forward width of every layer (e.g. x2)")
    p.add_argument("--hidden", metavar="xF",
                   help="transformers: hidden size (whole copies under LayerNorm/RMSNorm: x2, x3, ...; net2net)")
    p.add_argument("--keep-outputs", action="store_true",
                   help="let groups that reach a graph output grow; the output is sliced back to its original "
                        "units, so the model's interface does not change")
    p.add_argument("--keep-ties", action="store_true",
                   help="refuse to grow a weight shared by nodes that would grow it differently (default: give each "
                        "such reader its own copy; exporters merge equal initializers of unrelated layers)")
    p.add_argument("--init", choices=["noise", "zero", "net2net"], default="noise",
                   help="how new units start (default noise: small random incoming weights, zero outgoing)")
    p.add_argument("--noise-std", type=float, default=0.1,
                   help="std of new incoming weights relative to the std of the layer's weights (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed for new weights and Net2Net choices (default 0)")
    p.add_argument("--approximate", action="store_true",
                   help="grow groups even where no strategy is exact; report the error instead of failing")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check (not recommended)")
    p.add_argument("--save-external-data", action="store_true",
                   help="write weights to OUTPUT.data (automatic past protobuf's 2 GB limit)")
    add_verify_flags(p, full=False)
    p.set_defaults(func=_cmd_widen)

    p = sub.add_parser("deepen", help="insert layers that do not change what the model computes",
                       description="Insert identity layers, zero-initialised residual blocks or copies of residual "
                                   "blocks after a node or tensor; verify; write only when the check passes.")
    p.add_argument("model", help="the model to grow (.onnx); it is never modified")
    p.add_argument("-o", "--output", required=True, help="where to write the deeper model")
    p.add_argument("--after", required=True, metavar="NAME",
                   help="node or tensor name (identity, residual); for copy: a block id from `inspect`, a chain "
                        "bA-bB (a transformer layer), a comma-separated list of them, or `layers` (every "
                        "transformer layer: doubles the depth)")
    p.add_argument("--block", choices=["identity", "residual", "copy"], default="identity",
                   help="identity: linear identity layer (+ the same idempotent activation); residual: x + 0·f(x) "
                        "block; copy: duplicate a residual block with its output projection zeroed (default identity)")
    p.add_argument("--count", type=int, default=1, help="how many layers or blocks to insert (default 1)")
    p.add_argument("--order", choices=["interleave", "stack"], default="interleave",
                   help="copy: interleave puts each copy right after its block or layer (L0 L0' L1 L1', default); "
                        "stack repeats the whole sequence after the last one (L0 L1 L0' L1')")
    p.add_argument("--hidden", type=int, help="hidden size of a residual block (default: the tensor's size)")
    p.add_argument("--activation", choices=["relu", "gelu", "silu", "tanh"], default="relu",
                   help="activation inside a residual block (default relu)")
    p.add_argument("--kernel", type=int, choices=[1, 3], default=3,
                   help="kernel size of inserted convolutions (default 3, same padding, stride 1)")
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="noise on identity weights to break symmetry (makes the result approximate)")
    p.add_argument("--seed", type=int, default=0, help="seed for new weights (default 0)")
    p.add_argument("--approximate", action="store_true",
                   help="copy post-norm blocks even though the copy changes the outputs; report the error")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check (not recommended)")
    p.add_argument("--save-external-data", action="store_true", help="write weights to OUTPUT.data")
    add_verify_flags(p, full=False)
    p.set_defaults(func=_cmd_deepen)

    p = sub.add_parser("export", help="write a grown model for a training framework",
                       description="torch: a torch.fx GraphModule (onnx2torch) whose every weight is a trainable "
                                   "nn.Parameter, saved with torch.save. mxnet: an ONNX file that MXNet 1.9's "
                                   "importer (mxnet.contrib.onnx.import_to_gluon) accepts. Training restarts with a "
                                   "fresh optimiser: optimiser state is not part of ONNX (to keep it, load the grown "
                                   "weights into your own PyTorch module: onnxgrow.torch.state_dict_for and "
                                   "grow_optimizer_state). The model's growth map goes with it.")
    p.add_argument("model", help="the model (.onnx)")
    p.add_argument("--to", required=True, choices=["torch", "mxnet"], help="target framework")
    p.add_argument("-o", "--output", required=True, help="output file (.pt for torch, .onnx for mxnet)")
    add_verify_flags(p, full=False, json_flag=False, title="verification (--to mxnet: the converted model is run "
                                                           "next to the original)")
    p.set_defaults(func=_cmd_export)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .analysis.transformer import layers as transformer_layers
    from .passes.blocks import find_blocks
    from .report import blocks_table, console, groups_table, transformer_table
    from .widen import inspect_model

    analysis = inspect_model(args.model, keep_outputs=args.keep_outputs)
    blocks = find_blocks(analysis.model)
    layers = transformer_layers(analysis)
    if args.json:
        print(json.dumps({"groups": [g.to_dict() for g in analysis.groups],
                          "blocks": [b.to_dict() for b in blocks],
                          "transformer_layers": [layer.to_dict() for layer in layers]}, indent=2))
    else:
        out = console()
        if args.layers and not layers:
            raise OnnxGrowError(f"{args.model}: no attention layer found (inspect without --layers lists its groups)")
        if not args.layers:
            out.print(groups_table(analysis, args.model))
            if blocks:
                out.print(blocks_table(blocks))
        if layers:
            from .passes.blocks import layer_units, resolve_chain

            units = {}
            for unit in layer_units(blocks):
                nodes = {n for b in resolve_chain(blocks, unit) for n in b.nodes}
                for layer in layers:
                    if layer.scores in nodes:
                        units[layer.scores] = unit
            out.print(transformer_table(layers, units))
    return 0


def _layers(specs: list[str]) -> dict[str, str]:
    layers: dict[str, str] = {}
    for spec in specs:
        name, sep, size = spec.rpartition("=")
        if not sep or not name or not size:
            raise OnnxGrowError(f"--layer {spec!r}: expected NAME=SIZE, NAME=xF or NAME=+N")
        if name in layers:
            raise OnnxGrowError(f"--layer {name}: requested twice")
        layers[name] = size
    return layers


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
                    raise OnnxGrowError(f"-o {output}: {target} holds the external data of the input model; "
                                        "onnxgrow never overwrites its input")
    folder = dst.parent if str(dst.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OnnxGrowError(f"-o {output}: '{folder}' is a file, not a folder")
    if not folder.is_dir():
        raise OnnxGrowError(f"-o {output}: folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxGrowError(f"-o {output}: folder '{folder}' is not writable")
    if dst.is_dir():
        raise OnnxGrowError(f"-o {output}: is a folder; give a file name")


def _cmd_widen(args: argparse.Namespace) -> int:
    from .errors import VerificationFailed
    from .progress_bars import on_stderr
    from .report import console, widen_table
    from .widen import widen_model

    check_output_path(args.model, args.output)
    layers = _layers(args.layer)
    if args.all is not None and not args.all.startswith(("x", "*")):
        raise OnnxGrowError(f"--all {args.all!r}: expected a factor such as x2")
    out = console()
    try:
        with on_stderr() as progress:
            result = widen_model(
                args.model, layers, all=args.all, init=args.init, noise_std=args.noise_std, seed=args.seed,
                check=not args.no_verify, approximate=args.approximate, atol=args.atol, rtol=args.rtol,
                relative_to=args.relative_to, provider=args.provider, input_shapes=args.input_shapes,
                iterations=args.iterations, heads=args.heads, ffn=args.ffn, hidden=args.hidden,
                keep_outputs=args.keep_outputs, keep_ties=args.keep_ties,
                output=args.output, external_data=True if args.save_external_data else None, progress=progress,
            )
    except VerificationFailed as exc:
        if args.json and exc.report is not None:
            print(json.dumps({"written": None, "verification": exc.report.to_dict()}, indent=2))
        raise
    if args.json:
        print(json.dumps({
            "written": args.output,
            "groups": [{"id": p.group.id, "old": p.group.size, "new": p.new_size, "init": p.init, "note": p.note}
                       for p in result.plans],
            "skipped": [{"id": g.id, "reason": why} for g, why in result.skipped],
            "untied": [u.to_dict() for u in result.untied],
            "params_before": result.params_before, "params_after": result.params_after,
            "exact": result.exact,
            "verification": result.report.to_dict() if result.report else None,
        }, indent=2))
    else:
        out.print(widen_table(result))
        out.print(f"wrote {args.output}", markup=False)
    return 0


def _cmd_deepen(args: argparse.Namespace) -> int:
    from .deepen import deepen_model
    from .errors import VerificationFailed
    from .progress_bars import on_stderr
    from .report import console, fmt

    check_output_path(args.model, args.output)
    try:
        with on_stderr() as progress:
            result = deepen_model(
                args.model, args.after, block=args.block, count=args.count, hidden=args.hidden,
                activation=args.activation, kernel=args.kernel, noise_std=args.noise_std, seed=args.seed,
                check=not args.no_verify, approximate=args.approximate, order=args.order, atol=args.atol,
                rtol=args.rtol, relative_to=args.relative_to, provider=args.provider,
                input_shapes=args.input_shapes, iterations=args.iterations, output=args.output,
                external_data=True if args.save_external_data else None, progress=progress,
            )
    except VerificationFailed as exc:
        if args.json and exc.report is not None:
            print(json.dumps({"written": None, "verification": exc.report.to_dict()}, indent=2))
        raise
    rep = result.report
    if args.json:
        print(json.dumps({
            "written": args.output, "inserted": result.inserted, "notes": result.notes, "exact": result.exact,
            "params_before": result.params_before, "params_after": result.params_after,
            "verification": rep.to_dict() if rep else None,
        }, indent=2))
        return 0
    out = console()
    status = "exact" if result.exact else "APPROXIMATE"
    err = "not verified" if rep is None else f"max abs error {fmt(rep.worst_abs)}, normalised {fmt(rep.worst_normalised)}"
    out.print(f"deepen --block {args.block} after {args.after}: {len(result.inserted)} new nodes, "
              f"parameters {result.params_before:,} -> {result.params_after:,}; {err} ({status})", markup=False)
    for note in result.notes:
        out.print(f"  {note}", markup=False)
    out.print(f"wrote {args.output}", markup=False)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .io import load

    check_output_path(args.model, args.output)
    if args.to == "torch":
        given = [flag for flag, value in (("--atol", args.atol), ("--rtol", args.rtol),
                                          ("--relative-to", args.relative_to), ("--input-shapes", args.input_shapes))
                 if value is not None] + (["--iterations"] if args.iterations != 1 else []) + \
                (["--provider"] if args.provider != "cpu" else [])
        if given:
            raise OnnxGrowError(f"{given[0]}: export --to torch runs no onnxruntime check (the flag is for --to mxnet)")
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

        save(for_mxnet(model, atol=args.atol, rtol=args.rtol, relative_to=args.relative_to, provider=args.provider,
                       input_shapes=args.input_shapes, iterations=args.iterations), args.output)
    print(f"wrote {args.output}")
    return 0
