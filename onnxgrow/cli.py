"""The `onnxgrow` command: a thin layer over the Python API (argument parsing and printing only)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .errors import INTERNAL_ERROR_EXIT, OnnxGrowError, VerificationFailed


def _add_verify_flags(p: argparse.ArgumentParser, *, full: bool, json_flag: bool = True,
                      title: str = "verification") -> None:
    """The flags of the onnxruntime check; `full` (verify) adds seeds and input files, growth commands share the rest.

    verify's --relative-to defaults to element (Polygraphy's meaning); the growth commands' to output."""
    g = p.add_argument_group(title)
    g.add_argument("--atol", action="append", metavar="[NAME:]F",
                   help="absolute tolerance, default 1e-5; NAME:F sets it for one output (repeatable)")
    g.add_argument("--rtol", action="append", metavar="[NAME:]F",
                   help="relative tolerance, default 1e-5; a check fails only when the error exceeds both")
    default = "element" if full else "output"
    g.add_argument("--relative-to", choices=["element", "output"], default=None,
                   help=f"what --rtol is relative to (default {default}): element = each element's |reference| "
                        "(Polygraphy's meaning: an element fails when its error exceeds atol and rtol x |its "
                        "reference|); output = the output's largest |reference| (an output fails when its largest "
                        "error exceeds atol and rtol x max |reference|: float32 rounding of large sums passes)")
    g.add_argument("--provider", choices=["cpu", "cuda"], default="cpu",
                   help="onnxruntime execution provider (default cpu)")
    g.add_argument("--input-shapes", nargs="+", metavar="NAME:DIMS", default=None,
                   help="shapes for dynamic inputs, e.g. x:2x3x32x32 (default: batch 2, other dynamic dims 16)")
    g.add_argument("--iterations", type=int, default=1, help="number of random input sets (default 1)")
    if full:
        g.add_argument("--seed", type=int, default=1, help="seed of the random inputs (default 1)")
        g.add_argument("--load-inputs", metavar="FILE.npz", help="use inputs from an .npz file (keys: input names)")
        g.add_argument("--save-inputs", metavar="FILE.npz", help="save the inputs used to an .npz file")
    if json_flag:
        g.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (exit 2), as for every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="onnxgrow",
        description="Grow trained ONNX models (wider layers, more layers) without changing what they compute.",
        epilog="Exit status: 0 success, 1 a failed check, 2 bad usage or a bad model, 3 an internal error (a bug in "
               "onnxgrow or a library it calls: please report it; --debug shows the traceback).",
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--version", action="version", version="onnxgrow 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("verify", help="compare the outputs of two models in onnxruntime",
                       description="Run REFERENCE and CANDIDATE on the same inputs and compare every output.")
    p.add_argument("reference", help="the reference model (.onnx)")
    p.add_argument("candidate", help="the model to check (.onnx)")
    _add_verify_flags(p, full=True, title="verification (Polygraphy's meaning of the flags)")
    p.set_defaults(func=_cmd_verify)

    from . import cli_grow

    cli_grow.add_commands(sub, _add_verify_flags)
    return parser


def _cmd_verify(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from .progress_bars import on_stderr
    from .report import console, verify_table
    from .verify import verify

    with on_stderr() as progress:
        report = verify(
            args.reference, args.candidate, atol=args.atol, rtol=args.rtol, seed=args.seed,
            iterations=args.iterations, input_shapes=args.input_shapes, load_inputs=args.load_inputs,
            save_inputs=args.save_inputs, provider=args.provider, relative_to=args.relative_to, progress=progress,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        out = console()
        for name in report.defaulted_inputs:
            out.print(escape(f"input {name}: dynamic dimensions set to {'x'.join(map(str, report.inputs[name]))} "
                             f"(use --input-shapes {name}:DIMS to choose)"))
        out.print(verify_table(report))
    if not report.passed:
        sys.stdout.flush()
        raise VerificationFailed(f"verification failed: {report.summary()}", report)
    return 0


def _run(args: argparse.Namespace) -> int:
    """The command, with each ModelRepaired warning (`load` repaired a file's form) as one line on stderr."""
    import warnings

    from .io import ModelRepaired

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, ModelRepaired):
            print(f"onnxgrow: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("once", ModelRepaired)  # a file loaded twice is reported once
        warnings.showwarning = show
        return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except VerificationFailed as exc:
        if args.debug:
            raise
        print(f"onnxgrow: {exc}", file=sys.stderr)
        return exc.exit_code
    except OnnxGrowError as exc:
        if args.debug:
            raise
        print(f"onnxgrow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onnxgrow: interrupted; nothing was written", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `onnxgrow inspect --json | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("onnxgrow: error: out of memory", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in onnxgrow: one line, its own exit status (not the user's fault)
        if args.debug:
            raise
        print(f"onnxgrow: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(a bug, not a problem with your model: rerun with --debug for a traceback and report it)",
              file=sys.stderr)
        return INTERNAL_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
