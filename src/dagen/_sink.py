"""The receiving sink: allocates each received array once, from its header, and puts
every received chunk in place (copied, or decompressed with :mod:`dagen._codecs`),
checking the sizes the peer declares against :class:`~dagen._wire.Limits` before
anything is allocated and that the chunks cover every array exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ._codecs import check_decodable, decompress_into
from ._coverage import Coverage
from ._wire import MAX_CHUNK_BYTES, ChunkIn, LimitExceeded, Limits, WireError, wire_dtype


class _Target:
    __slots__ = ("aid", "dtype", "shape", "nbytes", "array", "raw", "row_bytes", "remaining",
                 "coverage", "codec", "inline")

    def __init__(self, aid: int, dtype: np.dtype, shape: tuple[int, ...], codec: str = "") -> None:
        self.aid = aid
        self.dtype = dtype
        self.shape = shape
        self.nbytes = math.prod(shape) * dtype.itemsize
        self.codec = codec  # "" (raw bytes) or a codec of dagen._codecs
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self.remaining = math.prod(shape)
        # allocated when the first chunk arrives (headers alone take no memory):
        self.array: np.ndarray | None = None
        self.raw: np.ndarray | None = None
        self.coverage: Coverage | None = None  # what has arrived: see dagen._coverage
        self.inline: bytes = b""  # the whole array's bytes, when they came in its header


class ArraySink:
    """Allocates each array once from its header and copies chunks into place,
    checking that they cover every array exactly once.

    The headers of a message are all checked first (:meth:`declare`), then their bytes
    are reserved (``alloc.reserve``, the server's memory budget, when ``alloc`` has
    one); an array is allocated when its first chunk arrives, so a peer that declares
    arrays and sends nothing holds no memory but their headers' bookkeeping."""

    def __init__(
        self,
        limits: Limits | None = None,
        alloc: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.alloc = alloc  # nbytes -> a uint8 array to receive into (memory-mapped for workers)
        self._reserve: Callable[[int], None] | None = getattr(alloc, "reserve", None)
        self._bookkeeping: Callable[[int], None] | None = getattr(alloc, "bookkeeping", None)
        self._targets: dict[int, _Target] = {}
        self.total = 0  # bytes of the arrays declared
        self.done = 0  # of those, bytes in place: inline arrays once declared, chunks as written
        self._incomplete = 0  # arrays declared whose chunks have not all arrived

    @property
    def complete(self) -> bool:
        """Whether every array declared so far has all its chunks (true with none)."""
        return not self._incomplete

    @property
    def arrays(self) -> dict[int, np.ndarray]:
        """The arrays, by id (allocating those no chunk has reached yet)."""
        return {aid: self._array(t) for aid, t in self._targets.items()}

    def allocate(self, header: Any) -> None:
        """Declare one array (see :meth:`declare`)."""
        self.declare([header])

    def declare(self, headers: Iterable[Any]) -> None:
        """Check every header against the limits, then reserve their bytes: a refusal
        comes before anything of any of them is allocated."""
        lim = self.limits
        targets: dict[int, _Target] = {}
        total = self.total
        for header in headers:
            aid = header.id
            if aid in self._targets or aid in targets:
                raise WireError(f"array id {aid} is declared twice")
            if len(self._targets) + len(targets) >= lim.max_arrays:
                raise LimitExceeded(
                    f"more than {lim.max_arrays} arrays in one call (max_arrays={lim.max_arrays})")
            target = self._check(header)
            if total + target.nbytes > lim.max_call_bytes:
                raise LimitExceeded(
                    f"arrays of {total + target.nbytes} bytes exceed "
                    f"max_call_bytes={lim.max_call_bytes}"
                )
            total += target.nbytes
            targets[aid] = target
        if self._reserve is not None and total > self.total:
            # the server's memory budget, before any allocation: one charge for the message
            self._reserve(total - self.total)
        for target in targets.values():
            if not target.nbytes:  # nothing to receive: no chunk will allocate it
                self._array(target)
            elif target.inline:
                self._fill(target)
                self.done += target.nbytes
            elif target.remaining:
                self._incomplete += 1
        self._targets.update(targets)
        self.total = total

    def _check(self, header: Any) -> _Target:
        lim = self.limits
        aid = header.id
        dtype = wire_dtype(header.dtype)
        if header.codec:
            try:
                check_decodable(header.codec)
            except WireError as e:
                raise WireError(f"array {aid}: {e}") from None
        shape = tuple(header.shape)
        if len(shape) > lim.max_ndim:
            raise LimitExceeded(
                f"array {aid}: {len(shape)} dimensions exceed max_ndim={lim.max_ndim}"
            )
        if any(n < 0 for n in shape):
            raise WireError(f"array {aid}: negative extent in shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != header.nbytes:
            raise WireError(
                f"array {aid}: shape {shape} of {dtype.str} is {nbytes} bytes, "
                f"but the header declares {header.nbytes}"
            )
        if nbytes > lim.max_array_bytes:
            raise LimitExceeded(
                f"array {aid}: {nbytes} bytes exceed max_array_bytes={lim.max_array_bytes}"
            )
        if not nbytes:  # numpy must be able to index it: shape (0, 2**62) it cannot
            try:
                np.empty(0, dtype).reshape(shape)
            except (ValueError, MemoryError) as e:
                raise WireError(
                    f"array {aid}: cannot allocate shape {shape} of {dtype.str}: {e}") from None
        target = _Target(aid, dtype, shape, header.codec)
        data = header.data
        if data:  # the array came inside its header: no chunks follow
            if not nbytes:
                raise WireError(f"array {aid}: {len(data)} inline bytes for an empty array")
            if not header.codec and len(data) != nbytes:
                raise WireError(f"array {aid}: {len(data)} inline bytes, but shape {shape} of "
                                f"{dtype.str} is {nbytes} bytes")
            if header.codec and nbytes > MAX_CHUNK_BYTES:
                raise WireError(f"array {aid}: a compressed block holds at most "
                                f"{MAX_CHUNK_BYTES} bytes; the inline array has {nbytes}")
            target.inline = data
        return target

    def _array(self, t: _Target, track: bool = True) -> np.ndarray:
        """The target's array, allocated on first use (its bytes were reserved); with
        ``track``, with the coverage its chunks are checked against."""
        if t.array is None:
            try:
                raw = np.empty(t.nbytes, np.uint8) if self.alloc is None else self.alloc(t.nbytes)
                t.array = raw.view(t.dtype).reshape(t.shape)
            except LimitExceeded:  # from alloc: e.g. the server's memory budget
                raise
            except (ValueError, MemoryError) as e:
                raise WireError(f"array {t.aid}: cannot allocate shape {t.shape} of "
                                f"{t.dtype.str}: {e}") from None
            t.raw = raw
            if track:
                t.coverage = Coverage(t.shape, self._bookkeeping)
        return t.array

    def _fill(self, t: _Target) -> None:
        """Put an array that came inside its header in place (no coverage to track)."""
        data, t.inline = t.inline, b""
        self._array(t, track=False)
        assert t.raw is not None
        if t.codec:
            try:
                decompress_into(t.codec, data, t.raw, t.dtype.itemsize)
            except WireError as e:
                raise WireError(f"array {t.aid}: inline bytes ({t.codec}): {e}") from None
        else:
            t.raw[:] = np.frombuffer(data, np.uint8)
        t.remaining = 0

    def write(self, chunk: ChunkIn) -> int:
        """Copy (or decompress) a chunk into place; the number of bytes of its block."""
        target = self._targets.get(chunk.array_id)
        if target is None:
            raise WireError(f"chunk for undeclared array id {chunk.array_id}")
        if target.coverage is None and target.array is not None:
            raise WireError(f"chunk for array id {chunk.array_id}, which came whole in its header")
        full_shape, dtype = target.shape, target.dtype
        ndim = len(full_shape)
        start, shape = chunk.start, chunk.shape
        if len(start) != ndim or len(shape) != ndim:
            raise WireError(
                f"array {chunk.array_id}: chunk start {start} / shape {shape} "
                f"do not match the array's {ndim} dimensions"
            )
        if any(n <= 0 for n in shape):
            raise WireError(f"array {chunk.array_id}: empty chunk of shape {shape}")
        for a, n, full in zip(start, shape, full_shape, strict=True):
            if a < 0 or a + n > full:
                raise WireError(
                    f"array {chunk.array_id}: chunk at {start} of shape {shape} "
                    f"lies outside the array's shape {full_shape}"
                )
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if not target.codec and chunk.data.nbytes != nbytes:
            raise WireError(
                f"array {chunk.array_id}: chunk of shape {shape} carries {chunk.data.nbytes} "
                f"bytes, expected {nbytes}"
            )
        array = target.array if target.array is not None else self._array(target)
        self._claim(target, start, shape)
        if target.codec:
            if nbytes > MAX_CHUNK_BYTES:  # its buffer must stay small, whatever the array
                raise WireError(
                    f"array {chunk.array_id}: a compressed chunk holds at most "
                    f"{MAX_CHUNK_BYTES} bytes; the block at {start} of shape {shape} has {nbytes}"
                )
            self._decompress(target, chunk, nbytes)
        elif ndim == 0 or shape[1:] == full_shape[1:]:  # whole rows: one flat copy
            offset = start[0] * target.row_bytes if ndim else 0
            assert target.raw is not None
            target.raw[offset : offset + nbytes] = np.frombuffer(chunk.data, np.uint8)
        else:
            index = tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))
            block = np.frombuffer(chunk.data, dtype=array.dtype).reshape(shape)
            array[index] = block
        target.remaining -= count
        if not target.remaining:
            self._incomplete -= 1
        self.done += nbytes
        return nbytes

    @staticmethod
    def _decompress(target: _Target, chunk: ChunkIn, nbytes: int) -> None:
        """Decompress a chunk straight into its place (bytes of its block, as uint8)."""
        array, start, shape = target.array, chunk.start, chunk.shape
        assert array is not None and target.raw is not None
        itemsize = array.dtype.itemsize
        if array.ndim == 0 or shape[1:] == array.shape[1:]:  # whole rows: a flat range
            offset = start[0] * target.row_bytes if array.ndim else 0
            dest = target.raw[offset : offset + nbytes]
        else:  # the block's bytes inside the array: shape + (itemsize,), last axes strided
            index = tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))
            dest = array[index].view(np.uint8).reshape(*shape, itemsize)
        try:
            decompress_into(target.codec, chunk.data, dest, itemsize)
        except WireError as e:
            raise WireError(
                f"array {chunk.array_id}: chunk at {start} of shape {shape} ({target.codec}): {e}"
            ) from None

    @staticmethod
    def _claim(t: _Target, start: tuple[int, ...], shape: tuple[int, ...]) -> None:
        """Refuse a chunk that overlaps one already received (in time proportional to
        the chunk's size, whatever came before it)."""
        assert t.coverage is not None
        if not t.coverage.claim(start, shape):
            raise WireError(f"array {t.aid}: chunk at {start} overlaps one already received")

    def finish(self) -> None:
        """Check that every array was covered completely."""
        for aid, t in self._targets.items():
            if t.remaining:
                raise WireError(
                    f"array {aid}: the stream ended with {t.remaining} of "
                    f"{math.prod(t.shape)} elements missing"
                )
