"""Which elements of a receiving array have arrived, to refuse overlapping chunks.

Checking a chunk against a list of the blocks received before it costs time in the
number of those blocks: a peer sending many tiny chunks around one tall block makes
that quadratic (8,000 one-element chunks took a minute of CPU, with the GIL held).
Here the cost of a chunk is proportional to its own size, which its payload pays for,
never to what came before:

* while every chunk is whole rows (a slab along axis 0, as dagen sends a numpy
  array), one bit per row;
* from the first chunk that is not (a block of a dask or zarr array), one bit per
  element, packed along the last axis; the rows received so far are marked in it.
"""

from __future__ import annotations

import math

import numpy as np


class PackedBits:
    """An n-dimensional bitmap packed along its last axis (big-endian bits)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        *lead, last = shape
        self.bits = np.zeros((*lead, (last + 7) // 8), np.uint8)

    def claim(self, start: tuple[int, ...], size: tuple[int, ...]) -> bool:
        """Mark the block [start, start + size) and return True, or return False (and
        mark nothing) if any of its elements is marked already."""
        *lead_start, a = start
        *lead_size, n = size
        lo, hi = a // 8, (a + n - 1) // 8 + 1  # the bytes the block's bits are in
        first = 0xFF >> (a % 8)
        last = (0xFF << (7 - (a + n - 1) % 8)) & 0xFF
        lead = tuple(slice(s, s + k) for s, k in zip(lead_start, lead_size, strict=True))
        region = self.bits[(*lead, slice(lo, hi))]  # a view: marking it marks the bitmap
        # no temporary as large as the block: the whole bytes inside, then the two ends
        if hi - lo == 1:
            edges = [(0, first & last)]
        else:
            edges = [(0, first), (hi - lo - 1, last)]
            if region[..., 1:-1].any():
                return False
        if any(np.bitwise_and(region[..., i], m).any() for i, m in edges):
            return False
        if hi - lo > 2:
            region[..., 1:-1] = 0xFF
        for i, m in edges:
            region[..., i] |= np.uint8(m)
        return True

    def runs(self, length: int) -> list[tuple[int, int]]:
        """The [start, stop) runs of marked bits of a one-dimensional bitmap."""
        flags = np.unpackbits(self.bits, count=length).astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], flags, [0]))))
        return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


class Coverage:
    """The elements of an array of ``shape`` received so far."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self._scalar_done = False
        self._rows: PackedBits | None = PackedBits((shape[0],)) if shape and shape[0] else None
        self._elements: PackedBits | None = None

    def claim(self, start: tuple[int, ...], size: tuple[int, ...]) -> bool:
        """Mark a block that lies inside the array (the caller checked); False if it
        overlaps one marked before."""
        if not self.shape:
            done, self._scalar_done = self._scalar_done, True
            return not done
        if math.prod(self.shape) == 0:
            return True  # nothing to receive; the sink refuses empty chunks anyway
        if self._elements is None:
            if size[1:] == self.shape[1:]:  # whole rows
                assert self._rows is not None
                return self._rows.claim(start[:1], size[:1])
            self._elements = PackedBits(self.shape)
            if self._rows is not None:
                for r0, r1 in self._rows.runs(self.shape[0]):
                    self._elements.claim((r0, *(0,) * (len(self.shape) - 1)),
                                         (r1 - r0, *self.shape[1:]))
                self._rows = None
        return self._elements.claim(start, size)
