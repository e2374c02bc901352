"""Loading and saving models: external data, constant folding on load, atomic writes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import onnx
from google.protobuf.message import DecodeError, EncodeError

from .errors import OnnxGrowError

ModelLike = Union[str, os.PathLike, onnx.ModelProto]

#: protobuf refuses to serialise a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1
#: tensors at least this big go to the external data file when external data is used.
EXTERNAL_THRESHOLD = 1024


def _read(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise OnnxGrowError(f"{path}: no such file")
    if path.is_dir():
        raise OnnxGrowError(f"{path}: is a folder, not an ONNX model file")
    if path.stat().st_size == 0:
        raise OnnxGrowError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
        raise OnnxGrowError(f"{path}: not a readable ONNX model (truncated or not ONNX: {_short(exc)})") from exc
    if not model.graph.node and not model.graph.output:
        raise OnnxGrowError(f"{path}: not an ONNX model (no graph found in the file)")
    base = path.parent
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            loc = info.get("location", "")
            if not (base / loc).is_file():
                raise OnnxGrowError(
                    f"{path}: external data file '{loc}' for tensor '{tensor.name}' is missing "
                    f"(looked in {base or '.'})"
                )
    try:
        onnx.load_external_data_for_model(model, str(base))
    except Exception as exc:  # onnx raises several kinds here
        raise OnnxGrowError(f"{path}: cannot read external data: {_short(exc)}") from exc
    return model


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


def load(model: ModelLike, *, fold: bool = True, check: bool = True) -> onnx.ModelProto:
    """Read a model from a path or copy an in-memory one; optionally fold constant weights.

    The caller's ModelProto is never modified: a copy is returned.
    """
    if isinstance(model, onnx.ModelProto):
        result = onnx.ModelProto()
        result.CopyFrom(model)
        where = "model"
    else:
        path = Path(model)
        result = _read(path)
        where = str(path)
    if check:
        # a file is checked from its path: onnx.checker parses it in C++, where a ModelProto would first be
        # serialised in Python (seconds on a large model), and a model with external data is checked too
        check_model(str(path) if where != "model" else result, where)
    if fold:
        from .passes.fold import fold_constants

        fold_constants(result)
    from .naming import name_nodes

    name_nodes(result.graph)
    return result


def check_model(model: onnx.ModelProto | str, where: str = "model") -> None:
    """Run onnx.checker on a ModelProto or a file path; a failure is a one-line OnnxGrowError naming `where`."""
    try:
        if isinstance(model, str) or not needs_external_data(model):
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
    return (len(t.raw_data) + 4 * len(t.float_data) + 8 * len(t.double_data)
            + 10 * (len(t.int32_data) + len(t.int64_data) + len(t.uint64_data) + len(t.dims))
            + sum(len(x) + 11 for x in t.string_data)
            + sum(len(e.key) + len(e.value) + 32 for e in t.external_data)
            + len(t.name.encode()) + len(t.doc_string.encode()) + t.segment.ByteSize() + 128)


def _size_upper_bound(model: onnx.ModelProto) -> int:
    """Main-graph initializers by `_tensor_size_bound`; every other field of the graph and the model (nodes
    with their attributes and subgraphs, inputs/outputs, functions, metadata) by its exact size; plus slack."""
    size = sum(_tensor_size_bound(t) for t in model.graph.initializer)
    for msg, skip in ((model, "graph"), (model.graph, "initializer")):
        for field, value in msg.ListFields():
            if field.name == skip:
                continue
            repeated = not isinstance(value, (str, bytes, int, float)) and not hasattr(value, "ByteSize")
            for item in (value if repeated else [value]):
                size += (item.ByteSize() if hasattr(item, "ByteSize") else len(str(item).encode())) + 16
    return size + 4096


def save(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write `model` to `path` atomically: a temporary file in the same folder, renamed at the end.

    `external_data=None` switches to an external data file (`<name>.data`) only when the
    model would pass protobuf's 2 GB limit (`PROTOBUF_LIMIT`, read at call time); then tensors
    of `EXTERNAL_THRESHOLD` bytes or more go to the data file. `external_data=True` puts every
    initializer in `<name>.data`; `False` never writes one. The model object is not changed.

    A process killed while writing leaves the previous file (or nothing) at `path`, never part of a model;
    a SIGKILL can leave the hidden temporary folder `.<name>.<random>.tmp` behind, which may be deleted.
    With external data the model and `<name>.data` are renamed one after the other (two files: not atomic).
    """
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
    explicit = external_data is True
    if external_data is None:
        external_data = needs_external_data(model)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder))
    try:
        tmp_model = tmpdir / out.name
        data_name = out.name + ".data"
        if external_data:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            # asked for explicitly: every initializer goes to the data file, so `<name>.data`
            # always exists; switched on for size: only tensors of EXTERNAL_THRESHOLD bytes or more.
            threshold = 0 if explicit else EXTERNAL_THRESHOLD
            _to_raw_data(copy, threshold)
            onnx.save_model(
                copy,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=threshold,
                convert_attribute=False,
            )
        else:
            with open(tmp_model, "wb") as fh:
                fh.write(model.SerializeToString())
                fh.flush()
                os.fsync(fh.fileno())
        if (tmpdir / data_name).exists():
            os.replace(tmpdir / data_name, folder / data_name)
        os.replace(tmp_model, out)
    finally:
        for leftover in tmpdir.iterdir() if tmpdir.exists() else []:
            leftover.unlink()
        if tmpdir.exists():
            tmpdir.rmdir()
    return out


def new_file_mode() -> int:
    """The permissions `open()` gives a new file (0o666 less the umask): temporary files made with
    tempfile.mkstemp are 0o600, and a renamed temporary file must not end up readable by its owner only."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _to_raw_data(model: onnx.ModelProto, threshold: int) -> None:
    """onnx only moves tensors stored as `raw_data` to external data; convert typed fields
    (`float_data`, `int64_data` ... as onnx.helper.make_tensor writes them) of big tensors first."""
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data") or tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            continue
        arr = numpy_helper.to_array(tensor)
        if arr.nbytes < threshold:
            continue
        raw = numpy_helper.from_array(arr, tensor.name).raw_data
        for typed in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            tensor.ClearField(typed)
        tensor.raw_data = raw


def model_bytes(model: onnx.ModelProto) -> bytes:
    """Serialised model for onnxruntime; raises a clear error past the 2 GB limit."""
    return model.SerializeToString()
