"""Loading and saving models: external data, constant folding on load, atomic writes."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError, EncodeError

from . import stream
from .errors import OnnxGrowError
from .libc import glibc_function
from .progress import ProgressFn

ModelLike = Union[str, os.PathLike, onnx.ModelProto]

#: protobuf refuses to serialise a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1
#: tensors at least this big go to the external data file when external data is used.
EXTERNAL_THRESHOLD = 1024


class ModelRepaired(UserWarning):
    """`load` repaired what onnx.checker refuses in a model only for its form (the message says what and
    where); the model then loads. The file itself is never changed; a model onnxgrow writes is valid."""


def _read(
    path: Path, *, external_data: bool = True, check: bool = True, progress: ProgressFn | None = None
) -> onnx.ModelProto:
    """The model at `path`, with its external data unless `external_data` is False, checked by onnx.checker.

    The checker reads the file's bytes before Python parses them (parsed in C++, and not both parsed
    copies held at once); a model with external data is checked from its path, so that its data files
    are checked too. A file that does not parse is reported as such before any checker error."""
    if not path.exists():
        raise OnnxGrowError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxGrowError(f"{path}: is a folder, not an ONNX model file")
    if path.stat().st_size == 0:
        raise OnnxGrowError(f"{path}: empty file, not an ONNX model")
    size = path.stat().st_size
    if progress:
        progress("load", 0, size)
    raw = path.read_bytes()
    invalid: OnnxGrowError | None = None
    unchecked = False
    if check:
        try:
            check_model(raw, str(path))
        except OnnxGrowError as exc:
            invalid = exc
        except ValueError:  # bytes the checker cannot parse: Python's parse below says so in its words
            unchecked = True
        release_freed_memory()  # the checker's parsed copy, before Python parses a second one
    try:
        model = onnx.load_model_from_string(raw)
    except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
        raise OnnxGrowError(f"{path}: not a readable ONNX model (truncated or not ONNX: {_short(exc)})") from exc
    del raw
    if not model.graph.node and not model.graph.output:
        raise OnnxGrowError(f"{path}: not an ONNX model (no graph found in the file)")
    base = path.parent
    external = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        if not (base / loc).is_file():
            raise OnnxGrowError(
                f"{path}: external data file '{loc}' for tensor '{tensor.name}' is missing (looked in {base or '.'})"
            )
    if check and (external or unchecked):
        try:
            check_model(str(path), str(path))  # the bytes alone cannot tell whether the data files are right
            invalid = None
        except OnnxGrowError as exc:
            invalid = exc
    if invalid is not None:
        _repair_or_raise(model, invalid, str(path))
    if not external_data:
        if progress:
            progress("load", size, size)
        return model
    lengths = [_external_length(t) for t in external]
    total, done = size + sum(lengths), size
    if progress:
        progress("load", done, total)
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor, length in zip(external, lengths):
        try:
            load_external_data_for_tensor(tensor, str(base))
        except Exception as exc:  # onnx raises several kinds here
            raise OnnxGrowError(f"{path}: cannot read external data: {_short(exc)}") from exc
        done += length
        if progress:
            progress("load", done, total)
    return model


def release_freed_memory() -> None:
    """Hand memory that C++ code freed back to the system (glibc's malloc_trim; elsewhere nothing).

    onnx's checker parses a model into many small allocations (one per tensor) that glibc keeps in its heap
    once freed: without the trim they stay counted in the process's memory while Python parses its own copy,
    a tenth more peak memory on a model of many small weights."""
    trim = glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


def _external_length(tensor: onnx.TensorProto) -> int:
    """The byte length an external tensor declares (0 when it does not say; then it reads to the end)."""
    info = {e.key: e.value for e in tensor.external_data}
    try:
        return int(info.get("length", 0))
    except ValueError:
        return 0


def external_files(path: Path, max_bytes: int = 64 * 2**20) -> list[Path]:
    """The external data files a model file refers to that exist (read without the data; [] when the
    file is unreadable, or bigger than `max_bytes`: such a file keeps its weights inside)."""
    try:
        if path.stat().st_size > max_bytes:
            return []
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # an unreadable model is reported when it is loaded
        return []
    found = []
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if loc and (path.parent / loc).is_file() and path.parent / loc not in found:
                found.append(path.parent / loc)
    return found


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _all_tensors(model: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def load(
    model: ModelLike,
    *,
    fold: bool = True,
    check: bool = True,
    external_data: bool = True,
    progress: ProgressFn | None = None,
) -> onnx.ModelProto:
    """Read a model from a path or copy an in-memory one; optionally fold constant weights.

    The caller's ModelProto is never modified: a copy is returned. `external_data=False` leaves the
    tensors of a file's external data where they are (names, types and shapes only, for what needs no
    weights). `progress` is called with the step "load" (bytes read).
    """
    if isinstance(model, onnx.ModelProto):
        result = onnx.ModelProto()
        result.CopyFrom(model)
        if check:
            try:
                check_model(result)
            except OnnxGrowError as exc:
                _repair_or_raise(result, exc, "model")
    else:
        # a file is checked from the bytes read (parsed in C++), where a ModelProto would first be
        # serialised in Python (seconds on a large model)
        result = _read(Path(model), external_data=external_data, check=check, progress=progress)
    if fold:
        from .passes.fold import fold_constants

        fold_constants(result)
    from .naming import name_nodes

    name_nodes(result.graph)
    return result


def repair_form(model: onnx.ModelProto) -> list[str]:
    """Repair in place what onnx.checker refuses in models that onnxruntime runs, where only the form is wrong;
    returns what was repaired ([] for nothing).

    - IR version 3 (or lower) with initializers that are not listed as graph inputs, as exporters of that
      time wrote them: the IR version is raised to 4, from which initializers need not be inputs (the graph,
      and what it computes, do not change).
    - Graph outputs without a type or a shape: onnx shape inference gives them theirs. An output whose type
      inference cannot tell stays as it is (and the checker's refusal stands).
    """
    notes: list[str] = []
    g = model.graph
    listed = {i.name for i in g.input}
    unlisted = [t.name for t in g.initializer if t.name not in listed]
    if 0 < model.ir_version < 4 and unlisted:
        notes.append(
            f"IR version {model.ir_version} -> 4 ({len(unlisted)} initializer(s) not listed as graph inputs, "
            f"e.g. {unlisted[0]})"
        )
        model.ir_version = 4
    untyped = [o for o in g.output if not _typed(o)]
    if untyped:
        inferred = _inferred_outputs(model)
        fixed = []
        for out in untyped:
            found = inferred.get(out.name)
            if found is not None and _typed(found):
                out.type.CopyFrom(found.type)
                fixed.append(out.name)
        if fixed:
            notes.append(f"inferred the type and shape of output(s) {', '.join(fixed)}")
    return notes


def _typed(vi: onnx.ValueInfoProto) -> bool:
    """A graph input/output that onnx.checker accepts as typed: a tensor with an element type and a shape,
    or any other kind of type (sequence, map, optional), which this repair leaves alone."""
    kind = vi.type.WhichOneof("value")
    if kind is None:
        return False
    if kind != "tensor_type":
        return True
    return vi.type.tensor_type.elem_type != 0 and vi.type.tensor_type.HasField("shape")


def _inferred_outputs(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Graph outputs as onnx shape inference types them (on a copy without weight bytes)."""
    from .analysis.shapes import light_copy

    light = light_copy(model)
    try:
        light = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: what it cannot type stays untyped, and is refused
        return {}
    return {o.name: o for o in light.graph.output}


def _repair_or_raise(model: onnx.ModelProto, invalid: OnnxGrowError, where: str) -> None:
    """onnx.checker refused `model` (`invalid`): repair its form and check again; warn (ModelRepaired) with one
    line saying what was repaired, or raise the checker's refusal (of the repaired model, if it was repaired)."""
    notes = repair_form(model)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(model))
    untyped = [o.name for o in model.graph.output if not _typed(o)]
    if untyped:
        # a fault of substance (often why inference failed) is named first: checked with placeholder types
        probe = _without_external(model)
        for out in probe.graph.output:
            if not _typed(out):
                out.type.CopyFrom(onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, []))
        check_model(probe, where)
        raise OnnxGrowError(
            f"{where}: not a valid ONNX model: graph output(s) {', '.join(untyped)} have no type or "
            "shape, and onnx shape inference cannot tell them"
        ) from invalid
    if not notes:
        raise invalid
    check_model(_without_external(model) if external else model, where)  # data files are checked when read
    warnings.warn(
        ModelRepaired(
            f"{where}: repaired what onnx.checker refuses on form only: {'; '.join(notes)} (the file is not changed)"
        ),
        stacklevel=3,
    )


def _without_external(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose external tensors are graph inputs of their type and shape (no data to find)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    listed = {i.name for i in g.input}
    kept = [t for t in g.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL and t.name not in listed:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del g.initializer[:]
    g.initializer.extend(kept)
    return out


def check_model(model: onnx.ModelProto | str | bytes, where: str = "model") -> None:
    """Run onnx.checker on a ModelProto, a file path or a file's bytes; a failure is a one-line
    OnnxGrowError naming `where`."""
    try:
        if isinstance(model, (str, bytes)) or not needs_external_data(model):
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxGrowError(f"{where}: not a valid ONNX model: {_checker_line(exc)}") from exc


def _checker_line(exc: BaseException) -> str:
    """onnx.checker's message on one line: it names the node at fault on a later line (`Name: ... OpType: ...`)."""
    text = " ".join(str(exc).replace("==> Context:", ";").split())
    text = text.replace(" ;", ";").replace("node: name:", "node").replace(". Name:", ":")
    return text[:400] if text else type(exc).__name__


def needs_external_data(model: onnx.ModelProto) -> bool:
    """True when the model cannot be written as one protobuf file.

    ModelProto.ByteSize() costs a full serialisation with protobuf's upb backend (seconds on a
    400 MB model), so an upper bound on the size, read without touching tensor bytes, settles
    the common case; only a model near the limit pays for the exact size."""
    if isinstance(model, onnx.ModelProto):
        if _size_upper_bound(model) < PROTOBUF_LIMIT:
            return False
        if sum(len(t.raw_data) for t in model.graph.initializer) >= PROTOBUF_LIMIT:
            return True
    try:
        return model.ByteSize() >= PROTOBUF_LIMIT
    except EncodeError:  # upb computes the size by serialising, which fails past the limit
        return True


def _tensor_size_bound(t: onnx.TensorProto) -> int:
    """An upper bound on the encoded size of a TensorProto (varints counted at their 10-byte maximum)."""
    return (
        len(t.raw_data)
        + 4 * len(t.float_data)
        + 8 * len(t.double_data)
        + 10 * (len(t.int32_data) + len(t.int64_data) + len(t.uint64_data) + len(t.dims))
        + sum(len(x) + 11 for x in t.string_data)
        + sum(len(e.key) + len(e.value) + 32 for e in t.external_data)
        + len(t.name.encode())
        + len(t.doc_string.encode())
        + t.segment.ByteSize()
        + 128
    )


def _size_upper_bound(model: onnx.ModelProto) -> int:
    """Main-graph initializers by `_tensor_size_bound`; every other field of the graph and the model (nodes
    with their attributes and subgraphs, inputs/outputs, functions, metadata) by its exact size; plus slack."""
    size = sum(_tensor_size_bound(t) for t in model.graph.initializer)
    for msg, skip in ((model, "graph"), (model.graph, "initializer")):
        for field, value in msg.ListFields():
            if field.name == skip:
                continue
            repeated = not isinstance(value, (str, bytes, int, float)) and not hasattr(value, "ByteSize")
            for item in value if repeated else [value]:
                size += (item.ByteSize() if hasattr(item, "ByteSize") else len(str(item).encode())) + 16
    return size + 4096


def save(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Write `model` to `path` atomically: a temporary file in the same folder, renamed at the end.

    `external_data=None` switches to an external data file (`<name>.data`) only when the
    model would pass protobuf's 2 GB limit (`PROTOBUF_LIMIT`, read at call time); then tensors
    of `EXTERNAL_THRESHOLD` bytes or more go to the data file. `external_data=True` puts every
    initializer in `<name>.data`; `False` never writes one. The model object is not changed, and no
    copy of its weights is made: each tensor's bytes are written in turn (onnxgrow.stream).
    `progress` is called with the step "write" (bytes written).

    A process killed while writing leaves the previous file (or nothing) at `path`, never part of a model;
    a SIGKILL can leave the hidden temporary folder `.<name>.<random>.tmp` behind, which may be deleted.
    With external data the model and `<name>.data` are renamed one after the other (two files: not atomic).
    """
    out = output_path(path)
    skel, deferred = stream.skeleton(model)
    with PendingWrite(out) as pending:
        pending.write(skel, deferred, external_data, progress)
        pending.commit()
    return out


def output_path(path: str | os.PathLike) -> Path:
    """`path` as a Path, refused with a one-line error when its folder cannot take a new file."""
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OnnxGrowError(f"{out}: '{folder}' is a file, not an output folder")
    if not folder.is_dir():
        raise OnnxGrowError(f"{out}: output folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK):
        raise OnnxGrowError(f"{out}: output folder '{folder}' is not writable")
    if out.is_dir():
        raise OnnxGrowError(f"{out}: is a folder; give a file name for the output model")
    return out


class PendingWrite:
    """A model written into a hidden temporary folder beside `out` (`.<name>.<random>.tmp/`), renamed into
    place by `commit()`; leaving the `with` block deletes whatever was not committed. The files can be
    checked (onnxruntime reads `model_path`) before they replace anything."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out.parent if str(out.parent) else Path(".")
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=self.folder))
        self.model_path = self.tmpdir / out.name
        self.data_name = out.name + ".data"

    def __enter__(self) -> "PendingWrite":
        return self

    def __exit__(self, *exc: object) -> None:
        for leftover in self.tmpdir.iterdir() if self.tmpdir.exists() else []:
            leftover.unlink()
        if self.tmpdir.exists():
            self.tmpdir.rmdir()

    def write(
        self,
        model: onnx.ModelProto,
        deferred: dict[str, stream.Deferred],
        external_data: bool | None,
        progress: ProgressFn | None = None,
    ) -> bool:
        """Write `model` (whose stubs' bytes are `deferred`) to the temporary folder; returns whether it used
        external data (see `save` for `external_data`). Stubs in `model` may be filled in."""
        explicit = external_data is True
        plan = None
        if external_data is None:
            plan = stream.layout(model, deferred)
            external_data = plan.size >= PROTOBUF_LIMIT
        with open(self.model_path, "wb") as fh:
            if external_data:
                # asked for explicitly: every initializer goes to the data file, so `<name>.data`
                # always exists; switched on for size: only tensors of EXTERNAL_THRESHOLD bytes or more.
                with open(self.tmpdir / self.data_name, "wb") as data_fh:
                    stream.write_external(
                        model, deferred, fh, data_fh, self.data_name, 0 if explicit else EXTERNAL_THRESHOLD, progress
                    )
                    stream.fsync(data_fh)
            else:
                stream.write_inline(model, deferred, fh, progress, plan)
            stream.fsync(fh)
        return bool(external_data)

    def commit(self) -> None:
        """Rename the written files into place: the data file first, then the model."""
        if (self.tmpdir / self.data_name).exists():
            os.replace(self.tmpdir / self.data_name, self.folder / self.data_name)
        os.replace(self.model_path, self.out)


def new_file_mode() -> int:
    """The permissions `open()` gives a new file (0o666 less the umask): temporary files made with
    tempfile.mkstemp are 0o600, and a renamed temporary file must not end up readable by its owner only."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
