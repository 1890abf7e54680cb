"""The receiving sink: allocates each received array once, from its header, and puts
every received chunk in place (copied, or decompressed with :mod:`dagen._codecs`),
checking the sizes the peer declares against :class:`~dagen._wire.Limits` before
anything is allocated and that the chunks cover every array exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._codecs import check_decodable, decompress_into
from ._coverage import Coverage
from ._wire import MAX_CHUNK_BYTES, ChunkIn, LimitExceeded, Limits, WireError, wire_dtype


class _Target:
    __slots__ = ("array", "raw", "row_bytes", "remaining", "coverage", "codec")

    def __init__(self, array: np.ndarray, raw: np.ndarray, codec: str = "") -> None:
        self.array = array
        self.raw = raw
        self.codec = codec  # "" (raw bytes) or a codec of dagen._codecs
        self.row_bytes = math.prod(array.shape[1:]) * array.dtype.itemsize
        self.remaining = array.size
        self.coverage = Coverage(array.shape)  # what has arrived: see dagen._coverage


class ArraySink:
    """Allocates each array once from its header and copies chunks into place,
    checking that they cover every array exactly once."""

    def __init__(
        self,
        limits: Limits | None = None,
        alloc: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.alloc = alloc  # nbytes -> a uint8 array to receive into (memory-mapped for workers)
        self.arrays: dict[int, np.ndarray] = {}
        self._targets: dict[int, _Target] = {}
        self._total = 0
        self._incomplete = 0  # arrays declared whose chunks have not all arrived

    @property
    def complete(self) -> bool:
        """Whether every array declared so far has all its chunks (true with none)."""
        return not self._incomplete

    def allocate(self, header: Any) -> None:
        lim = self.limits
        aid = header.id
        if aid in self._targets:
            raise WireError(f"array id {aid} is declared twice")
        if len(self._targets) >= lim.max_arrays:
            raise LimitExceeded(f"more than {lim.max_arrays} arrays in one call (max_arrays)")
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
        if self._total + nbytes > lim.max_call_bytes:
            raise LimitExceeded(
                f"arrays of {self._total + nbytes} bytes exceed max_call_bytes={lim.max_call_bytes}"
            )
        try:
            raw = np.empty(nbytes, np.uint8) if self.alloc is None else self.alloc(nbytes)
            array = raw.view(dtype).reshape(shape)
        except LimitExceeded:  # from alloc: e.g. the server's memory budget
            raise
        except (ValueError, MemoryError) as e:  # e.g. shape (0, 2**62): numpy cannot index it
            raise WireError(f"array {aid}: cannot allocate shape {shape} of {dtype.str}: {e}") from None
        self._total += nbytes
        self._targets[aid] = _Target(array, raw, header.codec)
        if array.size:
            self._incomplete += 1
        self.arrays[aid] = array

    def write(self, chunk: ChunkIn) -> int:
        """Copy (or decompress) a chunk into place; the number of bytes of its block."""
        target = self._targets.get(chunk.array_id)
        if target is None:
            raise WireError(f"chunk for undeclared array id {chunk.array_id}")
        array = target.array
        ndim = array.ndim
        start, shape = chunk.start, chunk.shape
        if len(start) != ndim or len(shape) != ndim:
            raise WireError(
                f"array {chunk.array_id}: chunk start {start} / shape {shape} "
                f"do not match the array's {ndim} dimensions"
            )
        if any(n <= 0 for n in shape):
            raise WireError(f"array {chunk.array_id}: empty chunk of shape {shape}")
        for a, n, full in zip(start, shape, array.shape, strict=True):
            if a < 0 or a + n > full:
                raise WireError(
                    f"array {chunk.array_id}: chunk at {start} of shape {shape} "
                    f"lies outside the array's shape {array.shape}"
                )
        count = math.prod(shape)
        nbytes = count * array.dtype.itemsize
        if not target.codec and chunk.data.nbytes != nbytes:
            raise WireError(
                f"array {chunk.array_id}: chunk of shape {shape} carries {chunk.data.nbytes} "
                f"bytes, expected {nbytes}"
            )
        self._claim(target, chunk.array_id, start, shape)
        if target.codec:
            if nbytes > MAX_CHUNK_BYTES:  # its buffer must stay small, whatever the array
                raise WireError(
                    f"array {chunk.array_id}: a compressed chunk holds at most "
                    f"{MAX_CHUNK_BYTES} bytes; the block at {start} of shape {shape} has {nbytes}"
                )
            self._decompress(target, chunk, nbytes)
        elif ndim == 0 or shape[1:] == array.shape[1:]:  # whole rows: one flat copy
            offset = start[0] * target.row_bytes if ndim else 0
            target.raw[offset : offset + nbytes] = np.frombuffer(chunk.data, np.uint8)
        else:
            index = tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))
            block = np.frombuffer(chunk.data, dtype=array.dtype).reshape(shape)
            array[index] = block
        target.remaining -= count
        if not target.remaining:
            self._incomplete -= 1
        return nbytes

    @staticmethod
    def _decompress(target: _Target, chunk: ChunkIn, nbytes: int) -> None:
        """Decompress a chunk straight into its place (bytes of its block, as uint8)."""
        array, start, shape = target.array, chunk.start, chunk.shape
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
    def _claim(t: _Target, aid: int, start: tuple[int, ...], shape: tuple[int, ...]) -> None:
        """Refuse a chunk that overlaps one already received (in time proportional to
        the chunk's size, whatever came before it)."""
        if not t.coverage.claim(start, shape):
            raise WireError(f"array {aid}: chunk at {start} overlaps one already received")

    def finish(self) -> None:
        """Check that every array was covered completely."""
        for aid, t in self._targets.items():
            if t.remaining:
                raise WireError(
                    f"array {aid}: the stream ended with {t.remaining} of "
                    f"{t.array.size} elements missing"
                )
