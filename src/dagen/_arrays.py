"""Arrays inside messages: NDArray headers on the way out, filled arrays on the way in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._cftime import Calendar, cftime_array, cftime_offsets, is_cftime
from ._sink import ArraySink
from ._wire import (
    DEFAULT_CHUNK_BYTES,
    NDARRAY_MESSAGE,
    WIRE_KINDS,
    ChunkOut,
    WireError,
    iter_chunks,
    iter_dask_chunks,
)

# The array bytes one message may carry inline, at most: one chunk, so that the message
# stays under gRPC's default 4 MiB limit (a 1 MiB echo is one message each way);
# $DAGEN_INLINE_BYTES sets it for a process (0: nothing inline), to measure the cut-off.
INLINE_BYTES = DEFAULT_CHUNK_BYTES
ENV_INLINE_BYTES = "DAGEN_INLINE_BYTES"


def inline_bytes_from_env() -> int:
    value = os.environ.get(ENV_INLINE_BYTES, "")
    try:
        return max(0, int(value)) if value else INLINE_BYTES
    except ValueError:
        raise ValueError(f"${ENV_INLINE_BYTES}={value!r}: expected a number of bytes") from None


_INLINE_BYTES = inline_bytes_from_env()


class EncodeContext:
    """Collects the arrays a message refers to, to stream them after it; with ``codecs``
    (those the peer accepts, in its order: see dagen._codecs) their chunks are compressed.

    With ``inline`` (the peer reads inline arrays: see dagen._protocol), arrays go inside
    their headers (``NDArray.data``) while their bytes add up to at most ``inline_bytes``
    for the message, and no chunks follow for them."""

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES, codecs: tuple[str, ...] = (),
                 inline: bool = False, inline_bytes: int | None = None) -> None:
        self.chunk_bytes = chunk_bytes
        self.codecs = codecs
        self.arrays: list[Any] = []  # numpy arrays, or dask arrays sent block by block
        self.array_codecs: list[str] = []  # each array's NDArray.codec
        self.inlined: list[bool] = []  # whether each array went inside its header
        # what may still go inline in this message (0: nothing goes inline)
        if inline_bytes is None:
            inline_bytes = _INLINE_BYTES
        self.inline_left = min(inline_bytes, chunk_bytes) if inline else 0

    def add(self, array: Any) -> int:
        self.arrays.append(array)
        codec = ""
        if self.codecs:
            from ._codecs import choose

            codec = choose(array, self.codecs, dask=is_dask(array))
        self.array_codecs.append(codec)
        self.inlined.append(False)
        return len(self.arrays)  # ids start at 1

    def inline(self, array_id: int) -> bytes | None:
        """The bytes for an array's header (encoded by its codec) if it goes inline, else
        None (its chunks follow the message)."""
        array = self.arrays[array_id - 1]
        nbytes = array.nbytes
        if not 0 < nbytes <= self.inline_left or is_dask(array):
            return None
        self.inline_left -= nbytes
        self.inlined[array_id - 1] = True
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        codec = self.array_codecs[array_id - 1]
        if codec:
            from ._codecs import compress

            return compress(codec, raw, array.dtype.itemsize)
        return raw.tobytes()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    @property
    def inline_nbytes(self) -> int:
        """Bytes of the arrays that went inside their headers (sent with the message)."""
        return sum(a.nbytes for a, done in zip(self.arrays, self.inlined, strict=True) if done)

    @property
    def whole(self) -> bool:
        """Whether the message is all there is (every array inline, or of no bytes)."""
        return all(done or a.nbytes == 0 for a, done in zip(self.arrays, self.inlined, strict=True))

    def chunks(self) -> Iterator[ChunkOut]:
        for array_id, array in enumerate(self.arrays, start=1):
            if self.inlined[array_id - 1]:
                continue
            if is_dask(array):  # computed block by block, never whole
                chunks = iter_dask_chunks(array_id, array, self.chunk_bytes)
            else:
                chunks = iter_chunks(array_id, array, self.chunk_bytes)
            codec = self.array_codecs[array_id - 1]
            if codec:  # one block at a time, as it is sent
                from ._codecs import compress_chunks

                chunks = compress_chunks(codec, chunks, array.dtype.itemsize)
            yield from chunks


class DecodeContext:
    """The arrays received for a message, by id."""

    def __init__(self, arrays: dict[int, np.ndarray]) -> None:
        self.arrays = arrays


# The decode context of a message that carries no arrays (those of unary rpcs).
NO_ARRAYS = DecodeContext({})


def is_dask(array: Any) -> bool:
    return hasattr(array, "dask") and hasattr(array, "numblocks")


def wire_array(array: Any) -> tuple[np.ndarray, bool, Calendar | None]:
    """The array as it goes on the wire, whether it was an object array of str, and the
    calendar of one of cftime dates.

    Object arrays never travel as such (that would need pickle); one that holds only
    str goes as fixed-width unicode and is turned back into objects on arrival, one of
    cftime dates as int64 offsets (see dagen._cftime).
    """
    if is_dask(array):
        if array.dtype.kind not in WIRE_KINDS or array.dtype.fields or array.dtype.subdtype:
            raise TypeError(f"dask arrays of dtype {array.dtype} cannot be sent")
        return array, False, None
    if array.dtype.kind == "O":
        flat = array.reshape(-1)
        if flat.size and is_cftime(flat[0]):
            offsets, calendar = cftime_offsets(array)
            return offsets, False, calendar
        bad = next((v for v in flat if not isinstance(v, str)), None)
        if bad is not None:
            raise TypeError(
                f"object arrays cannot be sent: only numeric, bool, datetime64, timedelta64, "
                f"str and cftime data can (found {type(bad).__name__} {bad!r:.40})"
            )
        if any(v.endswith("\x00") for v in flat):
            raise TypeError("object arrays of str ending in NUL characters cannot be sent "
                            "(numpy's fixed-width strings would drop them)")
        return (np.array(array.tolist(), dtype=str) if array.size else array.astype("U1")), True, None
    if array.dtype.kind not in WIRE_KINDS or array.dtype.fields or array.dtype.subdtype:
        raise TypeError(f"arrays of dtype {array.dtype} cannot be sent")
    return array, False, None


def attach_array(array: Any, header: Any, ctx: EncodeContext) -> None:
    """Fill an NDArray header and register the array's bytes to follow as chunks."""
    data, object_strings, calendar = wire_array(array)
    if data.shape != array.shape:  # np.array(list of str) of a 0-d object array
        data = data.reshape(array.shape)
    header.id = ctx.add(data)
    header.codec = ctx.array_codecs[header.id - 1]
    header.dtype = data.dtype.str
    header.shape.extend(data.shape)
    header.nbytes = int(np.prod(data.shape, dtype=object)) * data.dtype.itemsize
    header.object_strings = object_strings
    inline = ctx.inline(header.id) if ctx.inline_left else None
    if inline is not None:
        header.data = inline
    if calendar is not None:
        header.cftime.calendar = calendar.calendar
        header.cftime.units = calendar.units
        header.cftime.has_year_zero = calendar.has_year_zero


def read_array(header: Any, ctx: DecodeContext) -> np.ndarray:
    array = ctx.arrays.get(header.id)
    if array is None:
        raise WireError(f"an array header with id {header.id} that was never declared")
    if header.HasField("cftime"):
        return cftime_array(array, header)
    return array.astype(object) if header.object_strings else array


def array_headers(msg: Any) -> Iterator[Any]:
    """Every NDArray header inside a message, at any depth."""
    for field, value in msg.ListFields():
        mtype = field.message_type
        if mtype is None:
            continue
        if mtype.GetOptions().map_entry:
            value_field = mtype.fields_by_name["value"]
            items = value.values() if value_field.message_type is not None else ()
        elif field.is_repeated:
            items = value
        else:
            items = (value,)
        for item in items:
            if item.DESCRIPTOR.full_name == NDARRAY_MESSAGE:
                yield item
            else:
                yield from array_headers(item)


def allocate_arrays(msg: Any, sink: ArraySink) -> None:
    """Declare every array a received message declares to the sink: all their headers
    are checked against the limits before anything is allocated."""
    sink.declare(array_headers(msg))
