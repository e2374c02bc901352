"""Inputs for verification: shapes for dynamic dimensions, dtypes, ids inside embedding tables."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import ParameterError, closest
from .graph import consumers

#: size given to a dynamic dimension when the user did not name one: batch 2, everything else 16.
DEFAULT_BATCH = 2
DEFAULT_DIM = 16


@dataclass
class InputSpec:
    """A graph input as verification sees it."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    defaulted: bool  # some dynamic dimension got a default size
    high: int | None = None  # exclusive upper bound for integer ids (embedding tables)


def _embedding_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Integer graph inputs that index a Gather table (through Cast/Identity/Unsqueeze…) → table rows.

    The table may be an initializer, a `Constant` node, or either of them behind `Identity`/`Cast`
    (torch shares weights that way); models are verified unfolded, so all of these occur.
    """
    table_dims: dict[str, list[int]] = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                table_dims[node.output[0]] = list(attr.t.dims)
        elif node.op_type in ("Identity", "Cast") and node.input and node.input[0] in table_dims:
            table_dims[node.output[0]] = table_dims[node.input[0]]
    readers = consumers(model.graph)
    bounds: dict[str, int] = {}
    for inp in model.graph.input:
        frontier, seen = [inp.name], set()
        while frontier:
            t = frontier.pop()
            if t in seen:
                continue
            seen.add(t)
            for node in readers.get(t, []):
                if (
                    node.op_type == "Gather"
                    and len(node.input) > 1
                    and node.input[1] == t
                    and node.input[0] in table_dims
                ):
                    dims = table_dims[node.input[0]]
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if not -len(dims) <= axis < len(dims):
                        continue
                    rows = dims[axis]
                    bounds[inp.name] = min(bounds.get(inp.name, rows), rows)
                elif node.op_type in ("Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten"):
                    if node.input and node.input[0] == t:
                        frontier.extend(node.output)
    return bounds


def input_specs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> list[InputSpec]:
    """Describe every real graph input (not an initializer) with concrete shapes."""
    shapes = dict(shapes or {})
    inits = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in real]
    for name in shapes:
        if name not in names:
            raise ParameterError(
                "input_shapes",
                f"the model has no input named {name!r}{closest(name, names)}; inputs: {', '.join(names)}",
            )
    bounds = _embedding_bounds(model)
    specs = []
    for inp in real:
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise ParameterError(
                "",
                f"input {inp.name!r}: only tensor inputs can be generated; pass load_inputs",
                mentions=("load_inputs",),
            )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        if inp.name in shapes:
            shape = shapes[inp.name]
            if tt.HasField("shape") and len(shape) != len(dims):
                raise ParameterError(
                    "input_shapes", f"the input has {len(dims)} dimensions, got {len(shape)}", key=inp.name
                )
            for axis, (want, d) in enumerate(zip(shape, dims)):
                if d.HasField("dim_value") and d.dim_value != want:
                    raise ParameterError(
                        "input_shapes", f"dimension {axis} is fixed at {d.dim_value}, got {want}", key=inp.name
                    )
            specs.append(InputSpec(inp.name, dtype, tuple(shape), False, bounds.get(inp.name)))
            continue
        if not tt.HasField("shape"):
            raise ParameterError(
                "",
                f"input {inp.name!r} has no known rank; give it with input_shapes[{inp.name!r}]",
                mentions=(f"input_shapes[{inp.name!r}]",),
            )
        sizes: list[int] = []
        defaulted = False
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                sizes.append(d.dim_value)
            else:
                sizes.append(DEFAULT_BATCH if axis == 0 else DEFAULT_DIM)
                defaulted = True
        specs.append(InputSpec(inp.name, dtype, tuple(sizes), defaulted, bounds.get(inp.name)))
    return specs


def generate(specs: list[InputSpec], seed: int) -> dict[str, np.ndarray]:
    """Random inputs: normal floats, ids inside embedding tables, small non-negative ints, bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if spec.dtype == np.bool_:
            arr = np.asarray(rng.random(spec.shape) < 0.5)
        elif np.issubdtype(spec.dtype, np.integer):
            high = spec.high if spec.high else 10
            arr = rng.integers(0, max(high, 1), size=spec.shape).astype(spec.dtype)
        else:
            arr = rng.standard_normal(spec.shape).astype(spec.dtype)
        feeds[spec.name] = arr
    return feeds


def _open_npz(path: str, param: str, keyed_by: str) -> np.lib.npyio.NpzFile:
    """An .npz file given as `param` (load_inputs, load_outputs), or one line saying what is wrong with it."""
    import zipfile
    from pathlib import Path

    if Path(path).is_dir():
        raise ParameterError(param, "is a folder, not an .npz file", value=path)
    if Path(path).is_file():
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            writer = param.replace("load", "save")
            raise ParameterError(
                param,
                f"not an .npz file (not a zip archive of arrays; {writer} writes one)",
                value=path,
                mentions=(writer,),
            )
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ParameterError(param, "no such file", value=path) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ParameterError(param, f"not a readable .npz file ({_one_line(exc)})", value=path) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ParameterError(param, f"a single .npy array, not an .npz file keyed by {keyed_by}", value=path)
    return data


def load_npz(path: str, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Inputs saved by `save_inputs` (or any .npz keyed by input name); checked against the model."""
    import zipfile

    data = _open_npz(path, "load_inputs", "input name")
    keys = list(data.keys())
    if not keys:
        keys_data: dict[str, np.ndarray] = {}
    else:
        try:
            keys_data = {key: data[key] for key in keys}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ParameterError("load_inputs", f"cannot read its arrays ({_one_line(exc)})", value=path) from None
    names = [s.name for s in specs]
    # one iteration: keys are input names; several: keys are "<iteration>/<name>"
    iterations: dict[int, dict[str, np.ndarray]] = {}
    for key in keys:
        idx, sep, name = key.partition("/")
        if sep and idx.isdigit() and key not in names:
            iterations.setdefault(int(idx), {})[name] = keys_data[key]
        else:
            iterations.setdefault(0, {})[key] = keys_data[key]
    if not iterations:
        iterations[0] = {}
    result = []
    for i in sorted(iterations):
        feeds = iterations[i]
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if extra:
                parts.append("unknown " + ", ".join(extra))
            raise ParameterError(
                "load_inputs", f"arrays do not match the model's inputs ({'; '.join(parts)})", value=path
            )
        for spec in specs:
            arr = feeds[spec.name]
            if arr.ndim != len(spec.shape):
                raise ParameterError(
                    "load_inputs",
                    f"array {spec.name!r} has {arr.ndim} dimensions, the input has {len(spec.shape)}",
                    value=path,
                )
            if arr.dtype != spec.dtype:
                feeds[spec.name] = arr.astype(spec.dtype)
        result.append(feeds)
    return result


def save_npz(path: str, iterations: list[dict[str, np.ndarray]], param: str = "save_inputs") -> None:
    """Write the inputs used so a run can be repeated with `load_inputs` (or outputs, for `load_outputs`): keyed
    by name for one run, by "<run>/<name>" for several. `param` is the parameter that named `path`."""
    arrays = {}
    if len(iterations) == 1:
        arrays = dict(iterations[0])
    else:
        for i, feeds in enumerate(iterations):
            for name, arr in feeds.items():
                arrays[f"{i}/{name}"] = arr
    check_save_path(path, param)
    out = Path(path)
    # np.savez(path) would append ".npz" to a name without it; write to exactly `path`, atomically
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keyword arrays as bool
        from .io import new_file_mode

        os.chmod(tmp, new_file_mode())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_save_path(path: str, param: str = "save_inputs") -> None:
    """Fail early (before any model runs) when the file `param` names (save_inputs, ...) cannot be written."""
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise ParameterError(param, f"'{folder}' is a file, not a folder", value=path)
    if not folder.is_dir():
        raise ParameterError(param, f"folder '{folder}' does not exist", value=path)
    if out.is_dir():
        raise ParameterError(
            param,
            f"is a folder; give a file name such as {'outputs' if 'output' in param else 'inputs'}.npz",
            value=path,
        )


def load_outputs_npz(path: str, names: list[str], runs: int) -> list[dict[str, np.ndarray]]:
    """Outputs saved by `save_outputs`, or by the framework the model came from: an .npz keyed by output name
    (one run) or by "<run>/<output name>" (several, as many as there are input sets)."""
    import zipfile

    param = "load_outputs"
    data = _open_npz(path, param, "output name")
    try:
        arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ParameterError(param, f"cannot read its arrays ({_one_line(exc)})", value=path) from None
    result: dict[int, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        idx, sep, name = key.partition("/")
        if sep and idx.isdigit() and key not in names:
            result.setdefault(int(idx), {})[name] = arr
        else:
            result.setdefault(0, {})[key] = arr
    if sorted(result) != list(range(runs)):
        raise ParameterError(
            param,
            f"holds outputs of {len(result)} run(s), but there are {runs} set(s) of inputs "
            "(give the inputs they were computed from with load_inputs)",
            value=path,
            mentions=("load_inputs",),
        )
    for run in result.values():
        missing = [n for n in names if n not in run]
        extra = [n for n in run if n not in names]
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(extra)}"] if extra else []
            )
            raise ParameterError(
                param,
                f"arrays do not match the model's outputs ({'; '.join(parts)}); keys are output names",
                value=path,
            )
    return [result[i] for i in range(runs)]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
