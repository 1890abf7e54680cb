"""Which elements of a receiving array have arrived, to refuse overlapping chunks.

Checking a chunk against a list of the blocks received before it costs time in the
number of those blocks: a peer sending many tiny chunks around one tall block makes
that quadratic (8,000 one-element chunks took a minute of CPU, with the GIL held).
Here the cost of a chunk is proportional to its own size, which its payload pays for,
never to what came before:

* while every chunk is whole rows (a slab along axis 0, as dagen sends a numpy
  array), the runs of rows received, merged as they touch: one run for chunks sent in
  order, and never more runs than chunks received, so its memory is proportional to
  what the peer sent, not to what it declared (past ``MAX_RUNS`` runs, which only
  chunks sent out of order make, one bit per row, charged as below);
* from the first chunk that is not (a block of a dask or zarr array), one bit per
  element, packed along the last axis; the rows received so far are marked in it.
  Its bytes (an eighth of the array's elements) are passed to ``charge`` first: the
  server counts them in its memory budget (``max_memory``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

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



MAX_RUNS = 1024  # runs of rows kept as a list (inserting into it costs its length)


class Runs:
    """Disjoint [start, stop) runs of rows, sorted; touching runs are merged."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.stops: list[int] = []

    def claim(self, a: int, n: int) -> bool:
        starts, stops = self.starts, self.stops
        i = bisect.bisect_right(starts, a)  # runs before i start at or before a
        if i and stops[i - 1] > a:
            return False
        if i < len(starts) and starts[i] < a + n:
            return False
        joins_before = bool(i) and stops[i - 1] == a
        joins_after = i < len(starts) and starts[i] == a + n
        if joins_before and joins_after:
            stops[i - 1] = stops[i]
            del starts[i], stops[i]
        elif joins_before:
            stops[i - 1] = a + n
        elif joins_after:
            starts[i] = a
        else:
            starts.insert(i, a)
            stops.insert(i, a + n)
        return True


class Coverage:
    """The elements of an array of ``shape`` received so far."""

    def __init__(self, shape: tuple[int, ...], charge: Callable[[int], None] | None = None) -> None:
        self.shape = shape
        self._charge = charge
        self._scalar_done = False
        self._rows: Runs | None = Runs() if shape and shape[0] else None
        self._row_bits: PackedBits | None = None  # the rows, once they are too many runs
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
                return self._claim_rows(start[0], size[0])
            self._elements = self._bitmap(self.shape)
            for r0, r1 in self._row_runs():
                self._elements.claim((r0, *(0,) * (len(self.shape) - 1)),
                                     (r1 - r0, *self.shape[1:]))
            self._rows = self._row_bits = None
        return self._elements.claim(start, size)

    def _claim_rows(self, a: int, n: int) -> bool:
        if self._row_bits is not None:
            return self._row_bits.claim((a,), (n,))
        assert self._rows is not None
        claimed = self._rows.claim(a, n)
        if len(self._rows.starts) > MAX_RUNS:
            bits = self._bitmap((self.shape[0],))
            for r0, r1 in self._row_runs():
                bits.claim((r0,), (r1 - r0,))
            self._row_bits, self._rows = bits, None
        return claimed

    def _row_runs(self) -> list[tuple[int, int]]:
        """The [start, stop) runs of rows received so far."""
        if self._row_bits is not None:
            return self._row_bits.runs(self.shape[0])
        if self._rows is not None:
            return list(zip(self._rows.starts, self._rows.stops, strict=True))
        return []

    def _bitmap(self, shape: tuple[int, ...]) -> PackedBits:
        if self._charge is not None:
            *lead, last = shape
            self._charge(math.prod(lead) * ((last + 7) // 8))
        return PackedBits(shape)
