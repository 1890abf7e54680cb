"""Receive buffers reused from one call to the next, to spare each large call the
first-touch cost of fresh memory (page faults and huge-page compaction: ~0.16 s per GiB
warm, up to 2 s).

:class:`BufferPool` is the server's: a call's buffers come back when its rpc ends.
:class:`LendingPool` is the client's: a result's buffers are the caller's arrays, and
come back once the caller has let go of them.

A buffer is reused only when nothing else refers to it: every numpy view, DataArray
or memoryview made from a buffer keeps it alive, so a function (or a caller) that kept
an array keeps its memory. A reused buffer is overwritten completely before anyone
sees it (the sink checks that chunks cover every byte). A pool holds at most
``max_bytes`` and lets everything go after ``idle_seconds``.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

MIN_BYTES = 16 << 20  # smaller buffers are cheap to allocate
PER_SIZE = 1  # buffers a server keeps of any one size


class BufferPool:
    def __init__(self, max_bytes: int = 2 << 30, idle_seconds: float = 30.0) -> None:
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._last_use = time.monotonic()
        self._timer: threading.Timer | None = None

    def take(self, nbytes: int) -> np.ndarray:
        if nbytes >= MIN_BYTES:
            with self._lock:
                self._last_use = time.monotonic()
                for i, buffer in enumerate(self._free):
                    if buffer.nbytes == nbytes:
                        return self._free.pop(i)
        return np.empty(nbytes, np.uint8)

    def give_back(self, buffers: list[np.ndarray]) -> None:
        """Keep the buffers no one else refers to (``buffers`` holds one reference, the
        loop variable and getrefcount's argument the two others)."""
        kept = False
        with self._lock:
            for buffer in buffers:
                if not MIN_BYTES <= buffer.nbytes <= self.max_bytes:
                    continue  # small, or alone over the cap: it would push out the others
                if sys.getrefcount(buffer) > 3:
                    continue
                if sum(b.nbytes == buffer.nbytes for b in self._free) >= PER_SIZE:
                    continue
                self._free.append(buffer)
                kept = True
            while sum(b.nbytes for b in self._free) > self.max_bytes:
                self._free.pop(0)  # the oldest first
            self._last_use = time.monotonic()
        buffers.clear()
        if kept:
            self._schedule_release()

    def _schedule_release(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.idle_seconds, self._release_if_idle)
            self._timer.daemon = True
            self._timer.start()

    def _release_if_idle(self) -> None:
        with self._lock:
            self._timer = None
            idle = time.monotonic() - self._last_use >= self.idle_seconds
            if idle:
                self._free.clear()
            pending = bool(self._free)
        if pending:
            self._schedule_release()

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(b.nbytes for b in self._free)


class LendingPool(BufferPool):
    """The buffers a client received results into, for its next calls: it holds on to
    each one it lent (up to ``max_bytes`` in all) and lends it again once nothing but
    the pool refers to it, that is once the caller dropped every array made from it.
    Held buffers go after ``idle_seconds`` without a call."""

    def take(self, nbytes: int) -> np.ndarray:
        if not MIN_BYTES <= nbytes <= self.max_bytes:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            self._last_use = time.monotonic()
            for buffer in self._free:  # here: every buffer lent, free again or not
                # referred to by the list, the loop variable and getrefcount's argument
                if buffer.nbytes == nbytes and sys.getrefcount(buffer) <= 3:
                    return buffer
            fresh = np.empty(nbytes, np.uint8)
            self._free.append(fresh)
            while sum(b.nbytes for b in self._free) > self.max_bytes:
                self._free.pop(0)  # the oldest first (its arrays, if alive, keep it)
        self._schedule_release()
        return fresh
