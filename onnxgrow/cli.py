"""The `onnxgrow` command: a thin layer over the Python API (argument parsing and printing only)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
from typing import Iterator, Sequence

from . import __version__
from .cli_args import ArgGroup, add_check_groups, check_kwargs, flag_message
from .errors import INTERNAL_ERROR_EXIT, OnnxGrowError, ParameterError, VerificationFailed


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

    p = sub.add_parser(
        "verify",
        help="compare the outputs of two models in onnxruntime",
        description="Run REFERENCE and CANDIDATE on the same inputs and compare every output. "
        "CANDIDATE may be the PyTorch module `export --to torch` wrote (.pt) or, with "
        "--candidate-runtime mxnet, the file `export --to mxnet` wrote, run by MXNet. With "
        "--load-outputs, the one model given is compared with outputs saved earlier (by "
        "the framework it came from, or by --save-outputs).",
    )
    p.add_argument("reference", help="the reference model (.onnx); with --load-outputs, the model to check")
    p.add_argument(
        "candidate", nargs="?", default=None, help="the model to check (.onnx, or .pt from export --to torch)"
    )
    groups = add_check_groups(p, full=True, title="verification (Polygraphy's meaning of the flags)")
    p.set_defaults(func=_cmd_verify, groups=groups)

    from . import cli_grow

    cli_grow.add_commands(sub)
    return parser


def _cmd_verify(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from .inputs import check_save_path
    from .junit import write_junit
    from .progress_bars import on_stderr
    from .report import console, verify_table
    from .verify import verify

    if args.junit:
        check_save_path(args.junit, "junit")
        _never_overwrite(args.junit, "--junit", args.reference, args.candidate, args.load_inputs, args.load_outputs)
    try:
        with on_stderr() as progress:
            report = verify(args.reference, args.candidate, progress=progress, **check_kwargs(args.groups))
    except Exception as exc:
        if args.junit:  # CI shows the error where it shows the results, worded as on stderr
            said = flag_message(exc, args.groups) if isinstance(exc, ParameterError) else None
            write_junit(args.junit, None, args.reference, args.candidate or args.load_outputs, error=exc, message=said)
        raise
    if args.junit:
        write_junit(args.junit, report, args.reference, args.candidate or args.load_outputs)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        out = console()
        for name in report.defaulted_inputs:
            out.print(
                escape(
                    f"input {name}: dynamic dimensions set to {'x'.join(map(str, report.inputs[name]))} "
                    f"(use --input-shapes {name}:DIMS to choose)"
                )
            )
        if report.compared:
            out.print(verify_table(report))
        else:
            out.print(
                f"saved the outputs of {args.reference} to {args.save_outputs} ({report.iterations} run(s)); "
                "nothing was compared",
                markup=False,
            )
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

    for group in _groups(args):  # flag strings -> typed values, before any work
        group.parse(args)
    with warnings.catch_warnings(), fewer_collections():
        warnings.simplefilter("once", ModelRepaired)  # a file loaded twice is reported once
        warnings.showwarning = show
        return int(args.func(args) or 0)


def _groups(args: argparse.Namespace) -> list[ArgGroup]:
    """The argument groups of the command that runs."""
    return list(getattr(args, "groups", []))


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
        # the API names its parameters; the user gave flags: name those
        message = flag_message(exc, _groups(args)) if isinstance(exc, ParameterError) else str(exc)
        print(f"onnxgrow: error: {message}", file=sys.stderr)
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
        print(
            f"onnxgrow: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(a bug, not a problem with your model: rerun with --debug for a traceback and report it)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
