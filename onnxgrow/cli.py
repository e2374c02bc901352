"""The `onnxgrow` command: a thin layer over the Python API (argument parsing and printing only)."""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
from typing import Iterator, Sequence

from . import __version__
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
        g.add_argument("--load-outputs", metavar="FILE.npz",
                       help="compare MODEL with outputs saved earlier instead of a second model: an .npz keyed by "
                            "output name (e.g. written by the framework the model came from, or by --save-outputs), "
                            "computed from the inputs given with --load-inputs (or the same --seed)")
        g.add_argument("--save-outputs", metavar="FILE.npz",
                       help="save the first model's outputs to an .npz file keyed by output name, only when the "
                            "check passes (with one model and no --load-outputs: only run it and save them)")
        g.add_argument("--candidate-runtime", choices=["onnxruntime", "torch", "mxnet"], default=None,
                       help="how the candidate runs: onnxruntime, torch (a .pt module written by export --to torch; "
                            "the default for .pt files) or mxnet (an .onnx written by export --to mxnet, imported "
                            "by MXNet 1.9's Gluon importer in its own Python)")
        g.add_argument("--mxnet-python", metavar="PATH",
                       help="the Python of an MXNet 1.9 environment for --candidate-runtime mxnet (default: "
                            "$ONNXGROW_MXNET_PYTHON, else .venv-mxnet/bin/python)")
    if json_flag:
        g.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    if full:
        g.add_argument("--junit", metavar="FILE.xml",
                       help="also write a JUnit XML report (one test case per output) for CI systems to display; "
                            "written on failures and errors too")


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
    parser.add_argument("--version", action="version", version=f"onnxgrow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("verify", help="compare the outputs of two models in onnxruntime",
                       description="Run REFERENCE and CANDIDATE on the same inputs and compare every output. "
                                   "CANDIDATE may be the PyTorch module `export --to torch` wrote (.pt) or, with "
                                   "--candidate-runtime mxnet, the file `export --to mxnet` wrote, run by MXNet. With "
                                   "--load-outputs, the one model given is compared with outputs saved earlier (by "
                                   "the framework it came from, or by --save-outputs).")
    p.add_argument("reference", help="the reference model (.onnx); with --load-outputs, the model to check")
    p.add_argument("candidate", nargs="?", default=None,
                   help="the model to check (.onnx, or .pt from export --to torch)")
    _add_verify_flags(p, full=True, title="verification (Polygraphy's meaning of the flags)")
    p.set_defaults(func=_cmd_verify)

    from . import cli_grow

    cli_grow.add_commands(sub, _add_verify_flags)
    return parser


def _cmd_verify(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from .inputs import check_save_path
    from .progress_bars import on_stderr
    from .report import console, verify_table, write_junit
    from .verify import verify

    if args.junit:
        check_save_path(args.junit, "--junit")
        _never_overwrite(args.junit, "--junit", args.reference, args.candidate, args.load_inputs, args.load_outputs)
    try:
        with on_stderr() as progress:
            report = verify(
                args.reference, args.candidate, atol=args.atol, rtol=args.rtol, seed=args.seed,
                iterations=args.iterations, input_shapes=args.input_shapes, load_inputs=args.load_inputs,
                save_inputs=args.save_inputs, provider=args.provider, relative_to=args.relative_to, progress=progress,
                load_outputs=args.load_outputs, save_outputs=args.save_outputs,
                candidate_runtime=args.candidate_runtime, mxnet_python=args.mxnet_python,
            )
    except Exception as exc:
        if args.junit:  # CI shows the error where it shows the results
            write_junit(args.junit, None, args.reference, args.candidate or args.load_outputs, error=exc)
        raise
    if args.junit:
        write_junit(args.junit, report, args.reference, args.candidate or args.load_outputs)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        out = console()
        for name in report.defaulted_inputs:
            out.print(escape(f"input {name}: dynamic dimensions set to {'x'.join(map(str, report.inputs[name]))} "
                             f"(use --input-shapes {name}:DIMS to choose)"))
        if report.compared:
            out.print(verify_table(report))
        else:
            out.print(f"saved the outputs of {args.reference} to {args.save_outputs} ({report.iterations} run(s)); "
                      "nothing was compared", markup=False)
    if not report.passed:
        sys.stdout.flush()
        raise VerificationFailed(f"verification failed: {report.summary()}", report)
    return 0


def _never_overwrite(path: str, flag: str, *inputs: str | None) -> None:
    """Refuse a report path that is one of the command's input files."""
    import os

    for given in inputs:
        if given and os.path.exists(path) and os.path.exists(given) and os.path.samefile(path, given):
            raise OnnxGrowError(f"{flag} {path}: is the input {given}; onnxgrow never overwrites its input")


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

    with warnings.catch_warnings(), fewer_collections():
        warnings.simplefilter("once", ModelRepaired)  # a file loaded twice is reported once
        warnings.showwarning = show
        return int(args.func(args) or 0)


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector, run less often: a graph of many thousand nodes makes that many
    small objects that live to the end of the command, and collecting every 700 allocations rescans them
    (a third of the time of deepen on a 768-layer model). Nothing onnxgrow makes relies on it to be freed."""
    before = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


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
