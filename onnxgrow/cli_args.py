"""The CLI's argument groups (as Polygraphy's `tools/args`): each adds its flags to a parser and turns their
strings into the typed values the Python API takes, so the API never sees flag syntax.

A bad flag value is refused here with a one-line `OnnxGrowError` naming the flag (exit status 2). An API error
about a parameter (`ParameterError`) is worded back with the flag that set the parameter (`flag_message`), so the
user reads `--iterations 0: must be at least 1` where the API says `iterations=0: must be at least 1`.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from .errors import NOTHING, OnnxGrowError, ParameterError
from .runners import RUNTIMES
from .verify import PROVIDERS, RELATIVE_TO, Tolerances

#: what flags are added to: a parser or one of its argument groups
Container = Union[argparse.ArgumentParser, "argparse._ArgumentGroup"]


class ArgGroup:
    """One group of flags: `add` puts them on a parser, `parse` turns the parsed strings into typed values,
    `kwargs` gives those values as the API's keyword arguments."""

    #: API parameter (or a literal such as `check=False`) -> the flag that sets it, for the flags added
    flags: Mapping[str, str] = {}

    def __init__(self) -> None:
        #: what `parse` made of the flags, as the API's keyword arguments
        self.values: dict[str, Any] = {}

    def add(self, parser: Container) -> None:
        raise NotImplementedError

    def parse(self, args: argparse.Namespace) -> None:
        """Check and convert the group's flags; raise OnnxGrowError naming the flag of a bad value."""

    def kwargs(self) -> dict[str, Any]:
        return dict(self.values)

    def text(self, param: str, value: object, key: str | None) -> str:
        """How a value (or an item `key`) of `param` reads after its flag."""
        if key is not None:
            return key
        return "" if value is NOTHING else str(value)

    def mention(self, param: str, key: str) -> str:
        """How an item `key` of `param` reads after its flag where a message asks for it."""
        return key


# ------------------------------------------------------------------------------------------- verification


def parse_tolerance(values: Sequence[str] | None, default: float, flag: str) -> tuple[float, dict[str, float]]:
    """`--atol 1e-4` and/or `--atol out:1e-3` (per output, repeatable) -> (value for every output, per output)."""
    per: dict[str, float] = {}
    base = default
    for v in values or []:
        name, sep, num = v.rpartition(":")
        try:
            val = float(num)
        except ValueError:
            raise OnnxGrowError(f"{flag} {v!r}: expected a number or NAME:NUMBER") from None
        if val != val:
            raise OnnxGrowError(f"{flag} {v!r}: tolerance must be a number, not NaN")
        if val < 0:
            raise OnnxGrowError(f"{flag} {v!r}: tolerance must not be negative")
        if sep:
            per[name] = val
        else:
            base = val
    return base, per


class VerificationArgs(ArgGroup):
    """--atol/--rtol (`[NAME:]F`, repeatable) -> `Tolerances`; --relative-to; --provider."""

    flags = {
        "atol": "--atol",
        "rtol": "--rtol",
        "tolerances": "--atol",
        "tolerances.atol": "--atol",
        "tolerances.rtol": "--rtol",
        "tolerances.atol_per_output": "--atol",
        "tolerances.rtol_per_output": "--rtol",
        "relative_to": "--relative-to",
        "provider": "--provider",
    }

    def __init__(self, relative_to_default: str) -> None:
        super().__init__()
        self.relative_to_default = relative_to_default
        self.tolerances: Tolerances | None = None
        self.relative_to: str | None = None
        self.provider = PROVIDERS[0]

    def add(self, parser: Container) -> None:
        parser.add_argument(
            "--atol",
            action="append",
            metavar="[NAME:]F",
            help="absolute tolerance, default 1e-5; NAME:F sets it for one output (repeatable)",
        )
        parser.add_argument(
            "--rtol",
            action="append",
            metavar="[NAME:]F",
            help="relative tolerance, default 1e-5; a check fails only when the error exceeds both",
        )
        parser.add_argument(
            "--relative-to",
            choices=list(RELATIVE_TO),
            default=None,
            help=f"what --rtol is relative to (default {self.relative_to_default}): element = each "
            "element's |reference| (Polygraphy's meaning: an element fails when its error exceeds "
            "atol and rtol x |its reference|); output = the output's largest |reference| (an "
            "output fails when its largest error exceeds atol and rtol x max |reference|: "
            "float32 rounding of large sums passes)",
        )
        parser.add_argument(
            "--provider",
            choices=list(PROVIDERS),
            default=PROVIDERS[0],
            help=f"onnxruntime execution provider (default {PROVIDERS[0]})",
        )

    def parse(self, args: argparse.Namespace) -> None:
        from .verify import DEFAULT_ATOL, DEFAULT_RTOL

        if args.atol is not None or args.rtol is not None:
            atol, atol_per = parse_tolerance(args.atol, DEFAULT_ATOL, "--atol")
            rtol, rtol_per = parse_tolerance(args.rtol, DEFAULT_RTOL, "--rtol")
            self.tolerances = Tolerances(atol, rtol, atol_per, rtol_per)
        self.relative_to = args.relative_to
        self.provider = args.provider

    def kwargs(self) -> dict[str, Any]:
        return {"tolerances": self.tolerances, "relative_to": self.relative_to, "provider": self.provider}

    def text(self, param: str, value: object, key: str | None) -> str:
        if key is not None and param.endswith("_per_output") and self.tolerances is not None:
            given = getattr(self.tolerances, param.split(".")[1])
            if key in given:
                return f"{key}:{given[key]:g}"
        return super().text(param, value, key)


# ------------------------------------------------------------------------------------------------- inputs


def parse_shapes(specs: Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    """`name:2x16` (Polygraphy's form, also `name:[2,16]`) -> {name: (2, 16)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        if not sep or not name:
            raise OnnxGrowError(f"--input-shapes {spec!r}: expected NAME:DIMS such as x:1x3x224x224")
        dims = dims.strip().strip("[]()")
        parts = [p for p in dims.replace(",", "x").split("x") if p.strip()] if dims else []
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise OnnxGrowError(f"--input-shapes {spec!r}: dimensions must be integers such as 1x3x224x224") from None
        if any(d < 0 for d in shape):
            raise OnnxGrowError(f"--input-shapes {spec!r}: dimensions must not be negative")
        shapes[name] = shape
    return shapes


class InputArgs(ArgGroup):
    """--input-shapes NAME:DIMS -> {name: dims}; --iterations; with `full` (verify) --seed and input files."""

    def __init__(self, full: bool) -> None:
        self.full = full
        self.flags = {"input_shapes": "--input-shapes", "iterations": "--iterations"}
        if full:
            self.flags.update(seed="--seed", load_inputs="--load-inputs", save_inputs="--save-inputs")
        super().__init__()

    def add(self, parser: Container) -> None:
        parser.add_argument(
            "--input-shapes",
            nargs="+",
            metavar="NAME:DIMS",
            default=None,
            help="shapes for dynamic inputs, e.g. x:2x3x32x32 (default: batch 2, other dynamic dims 16)",
        )
        parser.add_argument("--iterations", type=int, default=1, help="number of random input sets (default 1)")
        if self.full:
            parser.add_argument("--seed", type=int, default=1, help="seed of the random inputs (default 1)")
            parser.add_argument(
                "--load-inputs", metavar="FILE.npz", help="use inputs from an .npz file (keys: input names)"
            )
            parser.add_argument("--save-inputs", metavar="FILE.npz", help="save the inputs used to an .npz file")

    def parse(self, args: argparse.Namespace) -> None:
        shapes = parse_shapes(args.input_shapes) if args.input_shapes is not None else None
        if args.iterations < 1:
            raise OnnxGrowError(f"--iterations {args.iterations}: must be at least 1")
        self.values = {"input_shapes": shapes, "iterations": args.iterations}
        if self.full:
            if args.seed < 0:
                raise OnnxGrowError(f"--seed {args.seed}: must not be negative")
            self.values.update(seed=args.seed, load_inputs=args.load_inputs, save_inputs=args.save_inputs)

    def mention(self, param: str, key: str) -> str:
        """`--input-shapes x:DIMS` where a message asks for an input's shape."""
        return f"{key}:DIMS" if param == "input_shapes" else key


class ComparisonArgs(ArgGroup):
    """What the model is compared with and how the candidate runs (verify): saved outputs, runtimes."""

    flags = {
        "load_outputs": "--load-outputs",
        "save_outputs": "--save-outputs",
        "candidate_runtime": "--candidate-runtime",
        "mxnet_python": "--mxnet-python",
    }

    def add(self, parser: Container) -> None:
        parser.add_argument(
            "--load-outputs",
            metavar="FILE.npz",
            help="compare MODEL with outputs saved earlier instead of a second model: an .npz keyed "
            "by output name (e.g. written by the framework the model came from, or by "
            "--save-outputs), computed from the inputs given with --load-inputs (or the same "
            "--seed)",
        )
        parser.add_argument(
            "--save-outputs",
            metavar="FILE.npz",
            help="save the first model's outputs to an .npz file keyed by output name, only when the "
            "check passes (with one model and no --load-outputs: only run it and save them)",
        )
        parser.add_argument(
            "--candidate-runtime",
            choices=list(RUNTIMES),
            default=None,
            help="how the candidate runs: onnxruntime, torch (a .pt module written by export --to "
            "torch; the default for .pt files) or mxnet (an .onnx written by export --to mxnet, "
            "imported by MXNet 1.9's Gluon importer in its own Python)",
        )
        parser.add_argument(
            "--mxnet-python",
            metavar="PATH",
            help="the Python of an MXNet 1.9 environment for --candidate-runtime mxnet (default: "
            "$ONNXGROW_MXNET_PYTHON, else .venv-mxnet/bin/python)",
        )

    def parse(self, args: argparse.Namespace) -> None:
        self.values = {
            "load_outputs": args.load_outputs,
            "save_outputs": args.save_outputs,
            "candidate_runtime": args.candidate_runtime,
            "mxnet_python": args.mxnet_python,
        }


class ReportArgs(ArgGroup):
    """--json (a machine-readable report on stdout) and, for verify, --junit FILE.xml."""

    def __init__(self, json_flag: bool = True, junit: bool = False) -> None:
        super().__init__()
        self.json_flag, self.junit = json_flag, junit
        self.flags = {"junit": "--junit"} if junit else {}

    def add(self, parser: Container) -> None:
        if self.json_flag:
            parser.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
        if self.junit:
            parser.add_argument(
                "--junit",
                metavar="FILE.xml",
                help="also write a JUnit XML report (one test case per output) for CI systems to "
                "display; written on failures and errors too",
            )


def add_check_groups(
    parser: argparse.ArgumentParser, *, full: bool, json_flag: bool = True, title: str = "verification"
) -> list[ArgGroup]:
    """The flags of the onnxruntime check in one help section: `full` (verify) adds seeds, input and output files,
    runtimes and --junit; the growth commands and export share the rest. verify's --relative-to defaults to
    element (Polygraphy's meaning); the growth commands' to output. Returns the groups, in order."""
    section = parser.add_argument_group(title)
    groups: list[ArgGroup] = [VerificationArgs("element" if full else "output"), InputArgs(full)]
    if full:
        groups.append(ComparisonArgs())
    groups.append(ReportArgs(json_flag=json_flag, junit=full))
    for group in groups:
        group.add(section)
    return groups


def check_kwargs(groups: Iterable[ArgGroup]) -> dict[str, Any]:
    """The API keyword arguments of every group, merged."""
    out: dict[str, Any] = {}
    for group in groups:
        out.update(group.kwargs())
    return out


# ------------------------------------------------------------------------------------------------- growth


def _layers(specs: Sequence[str]) -> dict[str, str]:
    """`--layer NAME=SIZE` (repeatable) -> {name: size}."""
    layers: dict[str, str] = {}
    for spec in specs:
        name, sep, size = spec.rpartition("=")
        if not sep or not name or not size:
            raise OnnxGrowError(f"--layer {spec!r}: expected NAME=SIZE, NAME=xF or NAME=+N")
        if name in layers:
            raise OnnxGrowError(f"--layer {name}: requested twice")
        layers[name] = size
    return layers


class OutputArgs(ArgGroup):
    """-o/--output (required) and, for growth, --save-external-data -> `output`, `external_data`."""

    def __init__(self, help: str, external_data: bool = True) -> None:
        self.help, self.external_data = help, external_data
        self.flags = {"output": "-o"} | ({"external_data": "--save-external-data"} if external_data else {})
        super().__init__()

    def add(self, parser: Container) -> None:
        parser.add_argument("-o", "--output", required=True, help=self.help)
        if self.external_data:
            parser.add_argument(
                "--save-external-data",
                action="store_true",
                help="write weights to OUTPUT.data (automatic past protobuf's 2 GB limit)",
            )

    def parse(self, args: argparse.Namespace) -> None:
        self.values = {"output": args.output}
        if self.external_data:
            self.values["external_data"] = True if args.save_external_data else None


#: the API parameters behind --approximate and --no-verify (as `_growth_switches` adds them)
_GROWTH_SWITCH_FLAGS = {
    "approximate": "--approximate",
    "approximate=True": "--approximate",
    "check=False": "--no-verify",
    "check": "--no-verify",
}


def _growth_switches(parser: Container, approximate_help: str) -> None:
    """--approximate and --no-verify, which widen and deepen share (each says what --approximate lets through)."""
    parser.add_argument("--approximate", action="store_true", help=approximate_help)
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check (not recommended)")


class WidenArgs(ArgGroup):
    """What `widen` grows and how: --layer NAME=SIZE -> {name: size}, --all xF, the transformer sizes, the
    strategy of new units, and the shared growth switches (--approximate, --no-verify)."""

    flags = {
        "layers": "--layer",
        "all": "--all",
        "heads": "--heads",
        "ffn": "--ffn",
        "hidden": "--hidden",
        "init": "--init",
        "noise_std": "--noise-std",
        "seed": "--seed",
        "keep_outputs": "--keep-outputs",
        "keep_ties": "--keep-ties",
        **_GROWTH_SWITCH_FLAGS,
    }

    def add(self, parser: Container) -> None:
        from .widen import STRATEGIES

        parser.add_argument(
            "--layer",
            action="append",
            default=[],
            metavar="NAME=SIZE",
            help="grow the group of NAME (node, weight or group id) to SIZE, xF (factor) or +N (repeatable)",
        )
        parser.add_argument("--all", metavar="xF", help="grow every group that is not blocked by a factor F (e.g. x2)")
        parser.add_argument(
            "--heads", metavar="SIZE", help="transformers: attention heads of every layer (e.g. +2, x2)"
        )
        parser.add_argument("--ffn", metavar="SIZE", help="transformers: feed-forward width of every layer (e.g. x2)")
        parser.add_argument(
            "--hidden",
            metavar="xF",
            help="transformers: hidden size (whole copies under LayerNorm/RMSNorm: x2, x3, ...; net2net)",
        )
        parser.add_argument(
            "--keep-outputs",
            action="store_true",
            help="let groups that reach a graph output grow; the output is sliced back to its "
            "original units, so the model's interface does not change",
        )
        parser.add_argument(
            "--keep-ties",
            action="store_true",
            help="refuse to grow a weight shared by nodes that would grow it differently (default: "
            "give each such reader its own copy; exporters merge equal initializers of "
            "unrelated layers)",
        )
        parser.add_argument(
            "--init",
            choices=list(STRATEGIES),
            default=STRATEGIES[0],
            help=f"how new units start (default {STRATEGIES[0]}: small random incoming weights, zero outgoing)",
        )
        parser.add_argument(
            "--noise-std",
            type=float,
            default=0.1,
            help="std of new incoming weights relative to the std of the layer's weights (default 0.1)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed for new weights and Net2Net choices (default 0)")
        _growth_switches(parser, "grow groups even where no strategy is exact; report the error instead of failing")

    def parse(self, args: argparse.Namespace) -> None:
        layers = _layers(args.layer)
        if args.all is not None and not args.all.startswith(("x", "*")):
            raise OnnxGrowError(f"--all {args.all!r}: expected a factor such as x2")
        self.values = {
            "layers": layers,
            "all": args.all,
            "heads": args.heads,
            "ffn": args.ffn,
            "hidden": args.hidden,
            "init": args.init,
            "noise_std": args.noise_std,
            "seed": args.seed,
            "keep_outputs": args.keep_outputs,
            "keep_ties": args.keep_ties,
            "approximate": args.approximate,
            "check": not args.no_verify,
        }


class DeepenArgs(ArgGroup):
    """Where `deepen` inserts what: --after, --block, --count, --order, the inserted block's shape, and the shared
    growth switches (--approximate, --no-verify)."""

    flags = {
        "after": "--after",
        "block": "--block",
        "count": "--count",
        "order": "--order",
        "hidden": "--hidden",
        "activation": "--activation",
        "kernel": "--kernel",
        "noise_std": "--noise-std",
        "seed": "--seed",
        **_GROWTH_SWITCH_FLAGS,
    }

    def add(self, parser: Container) -> None:
        from .deepen import ACTIVATIONS, BLOCKS, KERNELS, ORDERS

        parser.add_argument(
            "--after",
            required=True,
            metavar="NAME",
            help="node or tensor name (identity, residual); for copy: a block id from `inspect`, a "
            "chain bA-bB (a transformer layer), a comma-separated list of them, or `layers` "
            "(every transformer layer: doubles the depth)",
        )
        parser.add_argument(
            "--block",
            choices=list(BLOCKS),
            default=BLOCKS[0],
            help="identity: linear identity layer (+ the same idempotent activation); residual: x + "
            "0·f(x) block; copy: duplicate a residual block with its output projection zeroed "
            f"(default {BLOCKS[0]})",
        )
        parser.add_argument("--count", type=int, default=1, help="how many layers or blocks to insert (default 1)")
        parser.add_argument(
            "--order",
            choices=list(ORDERS),
            default=ORDERS[0],
            help="copy: interleave puts each copy right after its block or layer (L0 L0' L1 L1', "
            "default); stack repeats the whole sequence after the last one (L0 L1 L0' L1')",
        )
        parser.add_argument("--hidden", type=int, help="hidden size of a residual block (default: the tensor's size)")
        parser.add_argument(
            "--activation",
            choices=list(ACTIVATIONS),
            default=ACTIVATIONS[0],
            help=f"activation inside a residual block (default {ACTIVATIONS[0]})",
        )
        parser.add_argument(
            "--kernel",
            type=int,
            choices=list(KERNELS),
            default=KERNELS[-1],
            help="kernel size of inserted convolutions (default 3, same padding, stride 1)",
        )
        parser.add_argument(
            "--noise-std",
            type=float,
            default=0.0,
            help="noise on identity weights to break symmetry (makes the result approximate)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed for new weights (default 0)")
        _growth_switches(parser, "copy post-norm blocks even though the copy changes the outputs; report the error")

    def parse(self, args: argparse.Namespace) -> None:
        self.values = {
            "after": args.after,
            "block": args.block,
            "count": args.count,
            "order": args.order,
            "hidden": args.hidden,
            "activation": args.activation,
            "kernel": args.kernel,
            "noise_std": args.noise_std,
            "seed": args.seed,
            "approximate": args.approximate,
            "check": not args.no_verify,
        }


#: what `export --to` writes for
EXPORT_TARGETS = ("torch", "mxnet")


class ExportArgs(ArgGroup):
    """--to torch|mxnet; the check flags are for --to mxnet only (--to torch runs no onnxruntime check): refused
    with --to torch before any other flag is read."""

    flags = {"to": "--to"}

    def add(self, parser: Container) -> None:
        parser.add_argument("--to", required=True, choices=list(EXPORT_TARGETS), help="target framework")

    def parse(self, args: argparse.Namespace) -> None:
        self.to = args.to
        if args.to != "torch":
            return
        given = (
            [
                flag
                for flag, value in (
                    ("--atol", args.atol),
                    ("--rtol", args.rtol),
                    ("--relative-to", args.relative_to),
                    ("--input-shapes", args.input_shapes),
                )
                if value is not None
            ]
            + (["--iterations"] if args.iterations != 1 else [])
            + (["--provider"] if args.provider != PROVIDERS[0] else [])
        )
        if given:
            raise OnnxGrowError(f"{given[0]}: export --to torch runs no onnxruntime check (the flag is for --to mxnet)")

    def kwargs(self) -> dict[str, Any]:
        return {"to": self.to}


# ------------------------------------------------------------------------------------------ error wording

_MENTION = re.compile(r"^(?P<param>[\w.]+)(?:=(?P<value>.*)|\[(?P<key>.*)\])?$")


def _literal(text: str) -> str:
    """A value as written in a mention (`'cpu'`, `PATH`) -> the text a flag takes (`cpu`, `PATH`)."""
    try:
        return str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def flag_message(exc: ParameterError, groups: Iterable[ArgGroup]) -> str:
    """`exc` worded for the command line: each parameter a flag set is named by that flag, with the value as the
    user typed it; parameters no flag sets keep the API's words."""
    owner: dict[str, tuple[ArgGroup, str]] = {}
    for group in groups:
        for param, flag in group.flags.items():
            owner.setdefault(param, (group, flag))
    detail = exc.detail

    def replace(mention: str, words: str) -> None:  # the mention as a whole word only (not `seed` in `seeds`)
        nonlocal detail
        detail = re.sub(rf"(?<![\w-]){re.escape(mention)}(?![\w])", lambda _: words, detail)

    for mention in exc.mentions:
        if mention in owner:
            replace(mention, owner[mention][1])
            continue
        m = _MENTION.match(mention)
        if m is None or m["param"] not in owner:
            continue
        group, flag = owner[m["param"]]
        if m["value"] is not None:
            words = f"{flag} {_literal(m['value'])}"
        elif m["key"] is not None:
            key = _literal(m["key"])
            words = f"{flag} {group.mention(m['param'], key)}"
        else:
            words = flag
        replace(mention, words)
    if not exc.param:
        return detail
    if exc.param not in owner:
        return f"{exc.subject()}: {detail}"
    group, flag = owner[exc.param]
    text = group.text(exc.param, exc.value, exc.key)
    return f"{flag} {text}: {detail}" if text else f"{flag}: {detail}"
