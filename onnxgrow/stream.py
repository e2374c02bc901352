"""Write a ModelProto whose big tensors are produced one at a time, never all held together.

A protobuf message's encoding is the concatenation of its fields' encodings, so a model is written as
the model's fields before `graph`, the graph's tag and length, the graph's fields before `initializer`,
each initializer (tag, length, tensor), the graph's remaining fields, then the model's remaining fields.
Every length is computed up front from tensor shapes, so a tensor's bytes are produced, written and
dropped in turn. Fields are written in field-number order, as protobuf does: the bytes are those of
`SerializeToString()`. With external data the tensors go to the data file instead and the (small) model
is serialised at the end.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Mapping, Union

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import numpy_helper

from .errors import OnnxGrowError
from .graph import nested_graphs
from .libc import glibc_function
from .progress import ProgressFn

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]

#: field numbers (onnx.proto): ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9
#: typed data fields of a TensorProto (cleared when a tensor's data moves to raw_data or external data)
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
#: element types stored two to a byte
_PACKED = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)}
#: big tensors are written in pieces of this many bytes (bounded copies, and progress between them)
CHUNK = 64 * 2**20


@dataclass
class Deferred:
    """The raw bytes of one initializer, produced only when it is written; the model holds a stub of it
    (every field but the data). `produce` returns the bytes, or an iterator of consecutive pieces of them
    (each piece is written before the next is asked for). `nbytes` must be exact: lengths are written
    before the data."""

    nbytes: int
    produce: Callable[[], Union[Buffer, Iterator[Buffer]]]


#: zeros are written from one buffer of at most this many bytes, however big the tensor
_ZERO_CHUNK = 4 * 2**20


def zeros(nbytes: int) -> Deferred:
    """`nbytes` zero bytes, produced in pieces from one small buffer (a zero tensor is never held whole)."""

    def produce() -> Iterator[memoryview]:
        block = memoryview(bytes(min(nbytes, _ZERO_CHUNK)))
        for start in range(0, nbytes, _ZERO_CHUNK):
            yield block[: min(_ZERO_CHUNK, nbytes - start)]

    return Deferred(nbytes, produce)


def raw_nbytes(data_type: int, dims) -> int | None:
    """Size of a tensor's raw_data from its type and shape (None for strings and unknown types)."""
    n = math.prod(dims)
    if data_type in _PACKED:
        return (n + 1) // 2
    width = _ITEMSIZE.get(data_type)
    if width is None:
        if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            return None
        try:
            width = _ITEMSIZE[data_type] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            return None
    return n * width


#: bytes per element, by ONNX element type (filled as types are met)
_ITEMSIZE: dict[int, int] = {}


def array_bytes(arr: np.ndarray, data_type: int) -> Buffer:
    """The raw_data of `arr` as ONNX stores it (little-endian, row-major), without a copy where possible."""
    if data_type in _PACKED or arr.dtype.byteorder == ">":
        return numpy_helper.from_array(arr).raw_data
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


#: (message type, skipped names) -> [(field name, 0 scalar | 1 repeated | 2 message)] of the fields copied
_FIELDS: dict[tuple[type[Message], tuple[str, ...]], list[tuple[str, int]]] = {}


def _fields(kind: type[Message], skip: tuple[str, ...]) -> list[tuple[str, int]]:
    found = _FIELDS.get((kind, skip))
    if found is None:
        found = []
        for field in kind.DESCRIPTOR.fields:
            if field.name in skip:
                continue
            repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            found.append((field.name, 1 if repeated else 2 if field.message_type is not None else 0))
        _FIELDS[(kind, skip)] = found
    return found


def _copy_into(src, dst, skip: tuple[str, ...]) -> None:
    """Copy the fields of protobuf message `src` not named in `skip` into `dst` (fields not set stay unset)."""
    for name, kind in _fields(type(src), skip):
        if kind == 1:
            values = getattr(src, name)
            if len(values):
                getattr(dst, name).extend(values)
        elif src.HasField(name):
            if kind == 2:
                getattr(dst, name).CopyFrom(getattr(src, name))
            else:
                setattr(dst, name, getattr(src, name))


def copy_except(msg, skip: tuple[str, ...]):
    """A copy of a protobuf message without the fields named in `skip` (never read, so never copied)."""
    out = type(msg)()
    _copy_into(msg, out, skip)
    return out


def read_raw(tensor: onnx.TensorProto) -> Callable[[], bytes]:
    """A producer of the tensor's raw bytes, read from the tensor when they are asked for."""
    return lambda: tensor.raw_data


def stub(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """The tensor without its data (name, type, shape, doc string ...)."""
    return copy_except(tensor, _DATA_FIELDS)


def has_data(tensor: onnx.TensorProto) -> bool:
    """Whether the tensor carries its data (any data field) or refers to external data."""
    return (
        tensor.HasField("raw_data")
        or tensor.data_location == onnx.TensorProto.EXTERNAL
        or len(tensor.float_data) > 0
        or len(tensor.int32_data) > 0
        or len(tensor.string_data) > 0
        or len(tensor.int64_data) > 0
        or len(tensor.double_data) > 0
        or len(tensor.uint64_data) > 0
    )


def skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Deferred]]:
    """A copy of `model` whose main-graph initializers stored as raw_data are stubs, with their bytes
    deferred (read from `model` when written): the copy costs no weight bytes."""
    out = copy_except(model, ("graph",))
    _copy_into(model.graph, out.graph, ("initializer",))
    deferred: dict[str, Deferred] = {}
    dup = {n for n, c in Counter(t.name for t in model.graph.initializer).items() if c > 1}
    for t in model.graph.initializer:
        nbytes = raw_nbytes(t.data_type, t.dims)
        if not t.HasField("raw_data") or t.name in dup or nbytes is None:
            out.graph.initializer.add().CopyFrom(t)
            continue
        _copy_into(t, out.graph.initializer.add(), _DATA_FIELDS)
        deferred[t.name] = Deferred(nbytes, read_raw(t))
    return out, deferred


def drop_weights(model: onnx.ModelProto) -> None:
    """Make every main-graph initializer that holds its bytes a stub, in place (what stays: names, types, shapes)."""
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL and has_data(t):
            for f in _DATA_FIELDS:
                t.ClearField(f)


@functools.lru_cache(maxsize=1 << 14)
def _varint(n: int) -> bytes:
    """Protobuf's varint encoding of `n` (cached: a deep model's lengths repeat layer after layer)."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, length: int) -> bytes:
    """Tag of a length-delimited field, then the length."""
    return _varint(number << 3 | 2) + _varint(length)


def _split(msg, number: int) -> tuple[bytes, bytes]:
    """Encodings of the fields of `msg` numbered below and above `number` (that field left out)."""
    skips = _SPLITS.get((type(msg), number))
    if skips is None:
        fields = msg.DESCRIPTOR.fields
        skips = _SPLITS[(type(msg), number)] = (
            tuple(f.name for f in fields if f.number >= number),
            tuple(f.name for f in fields if f.number <= number),
        )
    head, tail = type(msg)(), type(msg)()
    _copy_into(msg, head, skips[0])
    _copy_into(msg, tail, skips[1])
    return head.SerializeToString(), tail.SerializeToString()


#: (message type, field number) -> the fields left out of the head and of the tail by `_split`
_SPLITS: dict[tuple[type, int], tuple[tuple[str, ...], tuple[str, ...]]] = {}


#: fields of a TensorProto after raw_data that are not data (a stub without them encodes as its head alone)
_AFTER_RAW = tuple(
    (
        f.name,
        f.message_type is not None or (f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED),
    )
    for f in onnx.TensorProto.DESCRIPTOR.fields
    if f.number > _RAW_DATA and f.name not in _DATA_FIELDS
)


def _split_stub(t: onnx.TensorProto) -> tuple[bytes, bytes]:
    """`_split(t, raw_data)` for a stub, without copying it when no field follows raw_data (the usual case)."""
    if any(len(getattr(t, name)) if listed else t.HasField(name) for name, listed in _AFTER_RAW):
        return _split(t, _RAW_DATA)
    return t.SerializeToString(), b""


@dataclass
class _Piece:
    """One initializer of the written graph: complete bytes, or a stub's encoding around deferred data."""

    head: bytes
    data: Deferred | None = None
    tail: bytes = b""

    @functools.cached_property
    def size(self) -> int:
        """Bytes of the initializer's encoding (its tag and length included)."""
        body = len(self.head) + len(self.tail)
        if self.data is not None:
            body += len(_key(_RAW_DATA, self.data.nbytes)) + self.data.nbytes
        return len(_key(_INITIALIZER, body)) + body


def _pieces(model: onnx.ModelProto, deferred: Mapping[str, Deferred]) -> Iterator[_Piece]:
    for t in model.graph.initializer:
        d = deferred.get(t.name)
        if d is None or has_data(t):
            yield _Piece(t.SerializeToString())
        else:
            head, tail = _split_stub(t)
            yield _Piece(head, d, tail)


@dataclass
class _Layout:
    """The encoding of a model written inline, all but the deferred bytes: computed once per write."""

    m_head: bytes
    m_tail: bytes
    g_head: bytes
    g_tail: bytes
    parts: list[_Piece]

    @property
    def graph_size(self) -> int:
        return len(self.g_head) + len(self.g_tail) + sum(p.size for p in self.parts)

    @property
    def size(self) -> int:
        graph = self.graph_size
        return len(self.m_head) + len(_key(_GRAPH, graph)) + graph + len(self.m_tail)


def layout(model: onnx.ModelProto, deferred: Mapping[str, Deferred]) -> _Layout:
    """What `write_inline` writes around the deferred bytes (pass it to `write_inline` to reuse it)."""
    g_head, g_tail = _split(model.graph, _INITIALIZER)
    m_head, m_tail = _split(model, _GRAPH)
    return _Layout(m_head, m_tail, g_head, g_tail, list(_pieces(model, deferred)))


def encoded_size(model: onnx.ModelProto, deferred: Mapping[str, Deferred], plan: _Layout | None = None) -> int:
    """Exact size of the model written inline, computed without producing any deferred tensor."""
    return (plan or layout(model, deferred)).size


class _Writer:
    """Writes buffers to a file in bounded pieces, reporting bytes done through `progress`.

    Small buffers (tags, lengths, stubs, small tensors: most of a deep model's pieces) are gathered and written
    together, and progress is reported about every `_REPORT` bytes, so a model of many small weights costs one
    file write per batch, not several per weight. `flush` writes what is gathered (call it at the end)."""

    def __init__(self, fh: BinaryIO, total: int, progress: ProgressFn | None, step: str) -> None:
        self.fh, self.total, self.progress, self.step, self.done = fh, total, progress, step, 0
        self.pending = bytearray()
        self.reported = 0
        self.unsynced = 0  # bytes written since the kernel was last asked to start writing them to disk
        if progress:
            progress(step, 0, total)

    def write(self, data: Buffer) -> None:
        view = data if type(data) is bytes else _view(data)  # most pieces are bytes: gathered without a view
        if len(view) < _BATCH:
            self.pending += view
            self.done += len(view)
            if len(self.pending) >= _BATCH:
                self._flush_pending()
            return
        self._flush_pending()
        view = memoryview(view)  # big bytes are cut in pieces without copies
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            self.fh.write(piece)
            self.done += len(piece)
            self._written(len(piece))

    def _flush_pending(self) -> None:
        if self.pending:
            self.fh.write(self.pending)
            self._written(len(self.pending))
            self.pending = bytearray()

    def _written(self, nbytes: int) -> None:
        """Report progress and, every `_WRITEBACK` bytes, start the disk writes of what is written so far."""
        self._report()
        self.unsynced += nbytes
        if self.unsynced >= _WRITEBACK:
            self.unsynced = 0
            start_writeback(self.fh)

    def _report(self) -> None:
        if self.progress and (self.done - self.reported >= _REPORT or self.done == self.total):
            self.reported = self.done
            self.progress(self.step, self.done, self.total)

    def flush(self) -> None:
        """Write what is gathered, and report the bytes done."""
        self._flush_pending()
        if self.progress and self.reported != self.done:
            self.reported = self.done
            self.progress(self.step, self.done, self.total)


#: the kernel is asked to start writing the file to disk after about this many bytes (see `start_writeback`)
_WRITEBACK = 32 << 20
#: buffers shorter than this are gathered and written together
_BATCH = 1 << 20
#: progress is reported after about this many bytes (and at the end)
_REPORT = 4 << 20


def _view(data: Buffer) -> memoryview:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    return memoryview(data).cast("B")


def pieces(name: str, d: Deferred, data: Buffer | Iterator[Buffer] | None = None) -> Iterator[memoryview]:
    """The deferred bytes of tensor `name` (`data`: what `d.produce()` returned, when already asked), piece by
    piece; an error if they are not `d.nbytes` long."""
    if data is None:
        data = d.produce()
    seen = 0
    for piece in [data] if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) else data:
        view = _view(piece)
        seen += len(view)
        if seen > d.nbytes:
            break
        yield view
    if seen != d.nbytes:
        raise OnnxGrowError(f"tensor {name}: {seen} bytes of data where its type and shape need {d.nbytes}")


def write_inline(
    model: onnx.ModelProto,
    deferred: Mapping[str, Deferred],
    fh: BinaryIO,
    progress: ProgressFn | None = None,
    plan: _Layout | None = None,
) -> int:
    """Write `model` as one protobuf file, producing each deferred tensor in turn; returns the bytes written.
    `plan` is the model's `layout` when already computed (the model unchanged since)."""
    plan = plan or layout(model, deferred)
    graph = plan.graph_size
    total = len(plan.m_head) + len(_key(_GRAPH, graph)) + graph + len(plan.m_tail)
    w = _Writer(fh, total, progress, "write")
    w.write(plan.m_head + _key(_GRAPH, graph) + plan.g_head)
    for t, p in zip(model.graph.initializer, plan.parts):
        if p.data is None:
            w.write(_key(_INITIALIZER, len(p.head)) + p.head)
            continue
        body = len(p.head) + len(p.tail) + len(_key(_RAW_DATA, p.data.nbytes)) + p.data.nbytes
        w.write(_key(_INITIALIZER, body) + p.head + _key(_RAW_DATA, p.data.nbytes))
        data = p.data.produce()
        if type(data) is bytes and len(data) == p.data.nbytes:  # an unchanged weight's bytes, as they are
            w.write(data)
        else:
            for piece in pieces(t.name, p.data, data):
                w.write(piece)
        if p.tail:
            w.write(p.tail)
    w.write(plan.g_tail + plan.m_tail)
    w.flush()
    return total


def _subgraph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers of the subgraphs (If/Loop/Scan bodies) under `graph`'s nodes."""
    for g in nested_graphs(graph):
        yield from g.initializer


#: small integer tensors stay in the model even when every initializer is asked to go outside: they are shape
#: constants (Reshape targets, Slice bounds) that onnxruntime's shape inference must read at load time
_SHAPE_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
SMALL_INTEGERS = 1024


def write_external(
    model: onnx.ModelProto,
    deferred: Mapping[str, Deferred],
    fh: BinaryIO,
    data_fh: BinaryIO,
    location: str,
    threshold: int,
    progress: ProgressFn | None = None,
) -> None:
    """Write initializers of `threshold` bytes or more (main graph and subgraphs; strings and small integer
    shape constants stay inline) to
    `data_fh`, recorded as external data at `location`, and the rest of `model` to `fh`.

    `model` is changed: its stubs get their data or external-data entries (it is the caller's copy)."""
    tensors = list(model.graph.initializer) + list(_subgraph_tensors(model.graph))
    main = len(model.graph.initializer)
    sizes = []
    for i, t in enumerate(tensors):
        d = deferred.get(t.name) if i < main else None
        sizes.append(d.nbytes if d is not None and not has_data(t) else raw_nbytes(t.data_type, list(t.dims)) or 0)
    inline = [
        nbytes < threshold or (t.data_type in _SHAPE_TYPES and nbytes < SMALL_INTEGERS)
        for t, nbytes in zip(tensors, sizes)
    ]
    w = _Writer(data_fh, sum(s for s, keep in zip(sizes, inline) if not keep), progress, "write")
    for i, (t, nbytes, keep) in enumerate(zip(tensors, sizes, inline)):
        d = deferred.get(t.name) if i < main else None
        if d is not None and not has_data(t):
            data: Iterator[Buffer] = pieces(t.name, d)
        elif t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING or keep:
            continue
        elif t.HasField("raw_data"):
            data = iter([t.raw_data])
        else:  # typed fields (float_data ...): onnx keeps only raw_data outside the model
            data = iter([array_bytes(numpy_helper.to_array(t), t.data_type)])
        if keep:
            t.raw_data = b"".join(_view(piece) for piece in data)
            continue
        offset = data_fh.tell()
        for piece in data:
            w.write(piece)
        w.flush()  # before the next tensor's offset is read
        for f in _DATA_FIELDS:
            t.ClearField(f)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        for key, value in (("location", location), ("offset", offset), ("length", nbytes)):
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
    fh.write(model.SerializeToString())


def fsync(fh: BinaryIO) -> None:
    """Flush a file to disk (before it is renamed into place)."""
    fh.flush()
    os.fsync(fh.fileno())


def start_writeback(fh: BinaryIO) -> None:
    """Ask the kernel to start writing the file's dirty pages to disk now, without waiting for them (Linux's
    sync_file_range; elsewhere nothing): the disk then works while the rest of the model is produced, and the
    `fsync` before the rename waits for the last pieces only, not for the whole file. The pages stay cached."""
    import ctypes

    call = glibc_function(
        "sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint), ctypes.c_int
    )
    if call is None:
        return
    try:
        fd = fh.fileno()
    except (AttributeError, OSError, ValueError):  # not a file of the system (io.BytesIO): nothing to write back
        return
    fh.flush()
    call(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # the whole file; pages already being written are skipped (a pipe: -1)


#: sync_file_range's flag: start writing the range's dirty pages, do not wait
_SYNC_FILE_RANGE_WRITE = 2
