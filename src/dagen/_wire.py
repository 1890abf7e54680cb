"""The wire format of a streaming call: frames and chunks (the receiving sink, which
puts received chunks in place, is dagen._sink).

A streaming rpc carries frames of one per-function message type, in this order:
the typed request (or response) message first, in which every array is an
``dagen.v1.NDArray`` header, then ``dagen.v1.Chunk`` frames with the bytes.
Every frame message puts its chunk in field 2::

    message <Fn>Input  { oneof frame { <Fn>Request  request  = 1; dagen.v1.Chunk chunk = 2; } }
    message <Fn>Output { oneof frame { <Fn>Response response = 1; dagen.v1.Chunk chunk = 2; } }

Chunk frames are encoded and parsed by hand here, because they are nearly all of
the bytes of a large call: encoding writes the frame's few header bytes and joins
them with the array's own memory (one copy, which grpc needs anyway, into the
``bytes`` it sends); parsing returns a memoryview of the payload inside the
received buffer, which the sink copies once, straight into the allocated array.
The bytes are exactly those protobuf would produce; any other valid encoding of
a frame (from another language's client) falls back to the generated parser.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Just under 4 MiB: every frame (with its header, or compressed and a little larger)
# stays under gRPC's default 4 MiB message limit, so stock clients need no option.
# Chunks this large cost ~10% less CPU per GiB than 1 MiB ones (fewer messages).
DEFAULT_CHUNK_BYTES = (4 << 20) - (64 << 10)
MAX_CHUNK_BYTES = 32 << 20

# The array header message's full name (dagen/v1/array.proto)
NDARRAY_MESSAGE = "dagen.v1.NDArray"

# The frame field numbers every generated frame message uses (see module docstring).
FRAME_FIELD_MESSAGE = 1
FRAME_FIELD_CHUNK = 2
_CHUNK_FRAME_TAG = (FRAME_FIELD_CHUNK << 3) | 2  # field 2, length-delimited
_CHUNK_FRAME_TAG_BYTE = bytes((_CHUNK_FRAME_TAG,))


class WireError(ValueError):
    """Malformed frames, headers or chunks from the peer (INVALID_ARGUMENT)."""


class LimitExceeded(WireError):
    """The peer declared more than a configured limit allows (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class Limits:
    """Sizes a peer may declare; checked before anything is allocated. The decode
    budget of a message (``max_values``, ``max_value_bytes``): see dagen._budget."""

    max_array_bytes: int = 64 << 30
    max_call_bytes: int = 128 << 30
    max_arrays: int = 100_000
    max_ndim: int = 32
    max_values: int = 1_000_000
    max_value_bytes: int = 64 << 20


# -- dtypes ------------------------------------------------------------------------------------

WIRE_KINDS = "biufcmMUS"
_DTYPE_RE = re.compile(r"[<>|=][biufcmMUS][1-9][0-9]{0,8}(\[[0-9]{0,4}[a-zA-Z]{1,3}\])?")


def wire_dtype(text: str) -> np.dtype:
    """The numpy dtype a header names, refusing anything but plain numeric, bool,
    datetime, timedelta and fixed-width string types (never object, void or records)."""
    if not _DTYPE_RE.fullmatch(text):
        raise WireError(f"unsupported dtype {text!r}: expected a numpy dtype string like '<f8'")
    try:
        dtype = np.dtype(text)
    except TypeError as e:
        raise WireError(f"unsupported dtype {text!r}: {e}") from None
    if dtype.kind not in WIRE_KINDS or dtype.hasobject or dtype.fields or dtype.subdtype:
        raise WireError(f"unsupported dtype {text!r}")
    return dtype


# -- chunks out --------------------------------------------------------------------------------


@dataclass(slots=True)
class ChunkOut:
    """A chunk to send; ``data`` is a contiguous buffer of the block's bytes, or their
    compressed form (see dagen._codecs), whose block holds ``nbytes`` bytes."""

    array_id: int
    start: tuple[int, ...]
    shape: tuple[int, ...]
    data: Any
    nbytes: int = -1  # the block's size when ``data`` is compressed

    @property
    def block_nbytes(self) -> int:
        return self.nbytes if self.nbytes >= 0 else memoryview(self.data).nbytes


def block_shape(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
    """The largest C-order block of at most ``chunk_bytes`` (or one element) that
    starts with whole slabs along the first axes: slabs along axis 0 when a row fits."""
    block = list(shape)
    for axis in range(len(shape)):
        trailing = math.prod(shape[axis + 1 :]) * itemsize
        if trailing <= chunk_bytes:
            block[axis] = max(1, min(shape[axis], chunk_bytes // max(trailing, 1)))
            break
        block[axis] = 1
    return tuple(block)


def iter_chunks(array_id: int, array: np.ndarray, chunk_bytes: int) -> Iterator[ChunkOut]:
    """Cut an array into chunks without copying when it is C-contiguous."""
    if array.size == 0:
        return
    block = block_shape(array.shape, array.dtype.itemsize, chunk_bytes)
    steps = [range(0, n, b) for n, b in zip(array.shape, block, strict=True)]
    for start in itertools.product(*steps):
        stop = tuple(min(s + b, n) for s, b, n in zip(start, block, array.shape, strict=True))
        sub = (
            array[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]
            if start
            else array[...]
        )
        if not sub.flags.c_contiguous:  # a strided view: copy one block, never the whole array
            sub = np.ascontiguousarray(sub)
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        yield ChunkOut(array_id, start, shape, sub.reshape(-1).view(np.uint8))


# Blocks of a dask array computed at once and held by the sender, at most (in bytes).
DASK_IN_FLIGHT_BYTES = 128 << 20
_MAX_BLOCKS_IN_FLIGHT = 32


def iter_dask_chunks(
    array_id: int, array: Any, chunk_bytes: int, in_flight_bytes: int = DASK_IN_FLIGHT_BYTES
) -> Iterator[ChunkOut]:
    """Compute a dask array in batches of blocks and send each block's chunks as it
    is computed; each block is let go once sent, so at most ``in_flight_bytes`` (and
    at least one block) are held at once, never the whole array.

    A batch is one computation: the work its blocks share (a reduction over the whole
    array, say) runs once per batch, not once per block as ``array.blocks[i].compute()``
    did (dask/dask#9888). With a distributed client as dask's scheduler, a batch runs
    on the cluster and its blocks are sent in the order they finish."""
    offsets = [list(itertools.accumulate(sizes, initial=0)) for sizes in array.chunks]
    indices = list(itertools.product(*(range(n) for n in array.numblocks)))
    largest = math.prod(max(sizes, default=0) for sizes in array.chunks) * array.dtype.itemsize
    per_batch = max(1, min(_MAX_BLOCKS_IN_FLIGHT, in_flight_bytes // max(largest, 1)))
    client = _distributed_client()
    for first in range(0, len(indices), per_batch):
        batch = indices[first : first + per_batch]
        for index, block in _computed_blocks(array, batch, client):
            origin = tuple(offsets[axis][i] for axis, i in enumerate(index))
            for chunk in iter_chunks(array_id, np.asarray(block), chunk_bytes):
                chunk.start = tuple(a + o for a, o in zip(chunk.start, origin, strict=True))
                yield chunk
            del block


def _distributed_client() -> Any:
    """The distributed client dask computes with now, or None (dask's own schedulers)."""
    if "distributed" not in sys.modules:
        return None
    import dask.base

    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    from distributed import Client

    return owner if isinstance(owner, Client) else None


def _computed_blocks(
    array: Any, batch: list[tuple[int, ...]], client: Any
) -> Iterator[tuple[tuple[int, ...], Any]]:
    """The blocks of one batch, computed together: in completion order on a cluster,
    in order otherwise; each handed over and forgotten here."""
    blocks = [array.blocks[index] for index in batch]
    if client is None:
        import dask

        results = list(dask.compute(*blocks))
        del blocks
        for k, index in enumerate(batch):
            block, results[k] = results[k], None
            yield index, block
        return
    from distributed import as_completed

    futures = client.compute(blocks)
    del blocks
    where = {future.key: index for future, index in zip(futures, batch, strict=True)}
    try:
        for future in as_completed(futures):
            block = future.result()
            future.release()
            yield where[future.key], block
    finally:
        client.cancel(futures)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _packed(tag: int, values: tuple[int, ...]) -> bytes:
    if not values:
        return b""
    body = b"".join(_varint(v) for v in values)
    return bytes((tag,)) + _varint(len(body)) + body


def encode_chunk_frame(chunk: ChunkOut) -> bytes:
    """The serialized frame ``{chunk: Chunk{array_id, start, shape, data}}``."""
    n = memoryview(chunk.data).nbytes
    head = (
        b"\x08"
        + _varint(chunk.array_id)
        + _packed(0x12, chunk.start)
        + _packed(0x1A, chunk.shape)
        + b"\x22"
        + _varint(n)
    )
    return b"".join((_CHUNK_FRAME_TAG_BYTE, _varint(len(head) + n), head, chunk.data))


# -- chunks in ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ChunkIn:
    """A received chunk; ``data`` is a view into the received buffer."""

    array_id: int
    start: tuple[int, ...]
    shape: tuple[int, ...]
    data: memoryview


@dataclass(slots=True)
class BadFrame:
    """A frame that does not parse; the call handler turns it into INVALID_ARGUMENT
    (a deserializer that raised would give the caller only a generic INTERNAL)."""

    error: str
    limit: bool = False  # a limit was exceeded (RESOURCE_EXHAUSTED), not a malformed frame

    def exception(self) -> WireError:
        return LimitExceeded(self.error) if self.limit else WireError(self.error)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varint at ``buf[pos]``: its value and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_chunk(buf: bytes, pos: int, end: int) -> ChunkIn:
    array_id = 0
    start: list[int] = []
    shape: list[int] = []
    data = memoryview(b"")
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
            if field == 1:
                array_id = value & 0xFFFFFFFF
            elif field == 2:
                start.append(_signed64(value))
            elif field == 3:
                shape.append(_signed64(value))
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise WireError("chunk field runs past the end of its frame")
            if field == 4:
                data = memoryview(buf)[pos : pos + length]
            elif field in (2, 3):
                target = start if field == 2 else shape
                p = pos
                while p < pos + length:
                    value, p = read_varint(buf, p)
                    target.append(_signed64(value))
                if p != pos + length:
                    raise WireError("a packed field's last varint runs past the field")
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire_type} in chunk frame")
    if pos != end:
        raise WireError("chunk frame is truncated")
    return ChunkIn(array_id, tuple(start), tuple(shape), data)


def frame_deserializer(
    frame_cls: Any, check: Callable[[bytes], None] | None = None
) -> Callable[[bytes], Any]:
    """A grpc deserializer returning ChunkIn for chunk frames, the frame message for
    the others, and BadFrame for bytes that do not parse or that ``check`` (a decode
    budget: dagen._budget.budget_check) refuses before they are parsed."""

    def deserialize(buf: bytes) -> Any:
        try:
            if buf[:1] == _CHUNK_FRAME_TAG_BYTE:
                length, pos = read_varint(buf, 1)
                if pos + length == len(buf):
                    return _parse_chunk(buf, pos, pos + length)
            if check is not None:
                check(buf)
            frame = frame_cls.FromString(buf)
        except LimitExceeded as e:
            return BadFrame(str(e), limit=True)
        except Exception as e:  # noqa: BLE001 - any parse failure is the peer's fault
            return BadFrame(f"malformed frame: {e}")
        if frame.WhichOneof("frame") == "chunk":
            c = frame.chunk
            return ChunkIn(c.array_id, tuple(c.start), tuple(c.shape), memoryview(c.data))
        return frame

    return deserialize


def frame_serializer(item: Any) -> bytes:
    if type(item) is ChunkOut:
        return encode_chunk_frame(item)
    return item.SerializeToString()
