"""What a server takes on at once: calls in progress, calls per identity, and memory.

The sizes one call may declare (bytes per array, per call, arrays per call,
dimensions) are :class:`dagen._wire.Limits`, checked by the receiving sink
(dagen._sink) before it allocates. :class:`CallLimits` bounds the server as a whole:

* ``max_calls``: calls in progress at once (receiving, running or sending);
* ``max_calls_per_identity``: of those, how many one identity may have;
* ``max_memory``: bytes of received arrays held by all calls in progress (reserved
  when their headers arrive), and of the maps of which of their elements arrived;
* ``upload_idle_timeout``: seconds an upload may send nothing (dagen._security._idle).

A call beyond any of them is refused at once with RESOURCE_EXHAUSTED naming the
limit and its value; it is never queued behind the others, and nothing of it is
allocated. The server's peak memory is thus about ``max_memory`` plus, per call in
progress, one chunk and the function's own needs, plus the receive buffers it keeps
for the next calls (at most ``max_memory`` / 4, see dagen._buffers).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._buffers import BufferPool
from .._wire import LimitExceeded, Limits
from ._idle import DEFAULT_UPLOAD_IDLE_TIMEOUT


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def default_max_memory() -> int:
    """Half the machine's memory (a login node is shared), at least 1 GiB."""
    return max(1 << 30, physical_memory() // 2)


DEFAULT_MAX_CALLS = 64
DEFAULT_MAX_CALLS_PER_IDENTITY = 32
TRIM_AFTER = 16 << 20  # a call that received this much gives freed memory back to the OS


def _malloc_trim() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_trim = _malloc_trim()
_trim_lock = threading.Lock()


def give_back_memory() -> None:
    """Return freed memory to the OS (glibc keeps what the chunk frames of a large
    call used, in each thread's arena). Skipped while another thread does it."""
    if _trim is not None and _trim_lock.acquire(blocking=False):
        try:
            _trim()
        finally:
            _trim_lock.release()


@dataclass(frozen=True)
class CallLimits:
    max_calls: int = DEFAULT_MAX_CALLS
    max_calls_per_identity: int = DEFAULT_MAX_CALLS_PER_IDENTITY
    max_memory: int = field(default_factory=default_max_memory)
    upload_idle_timeout: float = DEFAULT_UPLOAD_IDLE_TIMEOUT  # seconds: see dagen._security._idle

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_calls_per_identity", "max_memory"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.upload_idle_timeout > 0:
            raise ValueError("upload_idle_timeout must be more than 0 seconds")


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


class CallAllocator:
    """A call's ``alloc``; ``reserve(nbytes)`` charges bytes to the memory budget ahead
    (an allocation of them later is not charged again); ``completed()`` says its
    buffers may be reused afterwards."""

    def __init__(self, allocate: Callable[[int], np.ndarray],
                 reserve: Callable[[int], None], bookkeeping: Callable[[int], None]) -> None:
        self._allocate = allocate
        self.reserve = reserve
        self.bookkeeping = bookkeeping  # charges bytes that keep track of the arrays
        self.succeeded = False

    def __call__(self, nbytes: int) -> np.ndarray:
        return self._allocate(nbytes)

    def completed(self) -> None:
        self.succeeded = True


class Admission:
    """Counts the calls in progress, by identity, and the bytes their arrays hold."""

    def __init__(self, limits: CallLimits | None = None) -> None:
        self.limits = limits or CallLimits()
        self._lock = threading.Lock()
        # The calls in progress, by a number of their own: who made each (a name, or what
        # names it) and the name it is counted under in by_identity, once named.
        self._in_progress: dict[int, tuple[str | Callable[[], str], str | None]] = {}
        self._unnamed: set[int] = set()  # the numbers of those not named yet
        self._numbers = itertools.count()
        self.by_identity: dict[str, int] = {}  # calls in progress of named callers
        self.memory = 0
        # Buffers of completed calls, for the next ones: a quarter of the memory budget at
        # most, held outside it (so the server's peak is max_memory plus this pool).
        self.buffers = BufferPool(max_bytes=self.limits.max_memory // 4)

    @property
    def calls(self) -> int:
        """The calls in progress."""
        return len(self._in_progress)

    def enter(self, who: str | Callable[[], str]) -> Callable[[], None]:
        """Admit a call of ``who`` or raise LimitExceeded; return what ends it (idempotent).

        ``who`` may be a function that names the caller: it is called only once calls
        of one identity could reach ``max_calls_per_identity``, that is while at least
        that many calls are in progress (naming the calls in progress then too)."""
        lim = self.limits
        number = next(self._numbers)
        with self._lock:
            calls = len(self._in_progress)
            if calls >= lim.max_calls:
                raise LimitExceeded(
                    f"the server has {calls} calls in progress, its limit "
                    f"(max_calls={lim.max_calls}); try again later"
                )
            if calls < lim.max_calls_per_identity:
                self._in_progress[number] = (who, None)
                self._unnamed.add(number)
            else:
                self._name_calls_in_progress()
                name = who if isinstance(who, str) else who()
                mine = self.by_identity.get(name, 0)
                if mine >= lim.max_calls_per_identity:
                    raise LimitExceeded(
                        f"{name} has {mine} calls in progress, the limit per identity "
                        f"(max_calls_per_identity={lim.max_calls_per_identity}); "
                        "try again later"
                    )
                self.by_identity[name] = mine + 1
                self._in_progress[number] = (who, name)
        return functools.partial(self._leave, number)  # no Python frame but _leave's

    def _name_calls_in_progress(self) -> None:
        """Count the calls admitted without a name by their caller (under the lock)."""
        while self._unnamed:  # one at a time: a failing lookup leaves the rest as they were
            number = next(iter(self._unnamed))
            who, _ = self._in_progress[number]
            name = who if isinstance(who, str) else who()
            self._in_progress[number] = (who, name)
            self._unnamed.discard(number)
            self.by_identity[name] = self.by_identity.get(name, 0) + 1

    def _leave(self, number: int) -> None:
        with self._lock:
            _, name = self._in_progress.pop(number, (None, None))
            if name is None:  # left already, or never named
                self._unnamed.discard(number)
                return
            left = self.by_identity[name] - 1
            if left:
                self.by_identity[name] = left
            else:
                del self.by_identity[name]

    def alloc(
        self,
        context: object,
        inner: Callable[[int], np.ndarray] | None = None,
    ) -> CallAllocator:
        """An ``alloc`` for the receiving sink of one call: charges each array to
        ``max_memory`` before allocating it (with ``inner``, or from the buffer pool),
        and gives the bytes back when the rpc ends (``context.add_callback``). Buffers
        go back to the pool only if the server marked the call ``completed()``."""
        lock = self._lock
        charged = 0
        reserved = 0  # of those charged, bytes not allocated yet
        ended = False
        taken: list[np.ndarray] = []  # this call's buffers from the pool

        def release() -> None:
            nonlocal charged, reserved, ended
            with lock:
                large = charged - reserved >= TRIM_AFTER
                self.memory -= charged
                charged = reserved = 0
                ended = True
            if allocate.succeeded:
                self.buffers.give_back(taken)
            taken.clear()
            if large:
                give_back_memory()

        def charge(nbytes: int, ahead: bool, what: str = "an array of",
                   from_reserve: bool = True) -> int:
            """Charge bytes to the budget (an array's allocation takes them from the reserve
            when it can): what it charged."""
            nonlocal charged, reserved
            limit = self.limits.max_memory
            with lock:
                if ended:
                    raise LimitExceeded("the call has ended")
                if not ahead and from_reserve and reserved >= nbytes:
                    reserved -= nbytes
                    return 0
                if self.memory + nbytes > limit:
                    raise LimitExceeded(
                        f"{what} {nbytes} bytes would take the arrays held by calls in "
                        f"progress to {self.memory + nbytes} bytes, over "
                        f"max_memory={limit} ({format_bytes(limit)})"
                    )
                self.memory += nbytes
                charged += nbytes
                if ahead:
                    reserved += nbytes
                return nbytes

        def reserve(nbytes: int) -> None:
            charge(nbytes, ahead=True, what="arrays of")

        def bookkeeping(nbytes: int) -> None:
            # not from the reserve, which the headers' arrays are still to be allocated from
            charge(nbytes, ahead=False, what="a map of the elements received, of",
                   from_reserve=False)

        def allocate_bytes(nbytes: int) -> np.ndarray:
            nonlocal charged
            fresh = charge(nbytes, ahead=False)
            try:
                if inner is not None:
                    return inner(nbytes)
                buffer = self.buffers.take(nbytes)
                taken.append(buffer)
                return buffer
            except BaseException:
                with lock:
                    if not ended:
                        self.memory -= fresh
                        charged -= fresh
                raise

        allocate = CallAllocator(allocate_bytes, reserve, bookkeeping)
        add_callback = getattr(context, "add_callback", None)
        if add_callback is None or not add_callback(release):
            release()  # no rpc whose end gives the bytes back, or it has ended already
        return allocate


def server_limits(
    max_array_bytes: int | None = None,
    max_call_bytes: int | None = None,
    max_arrays: int | None = None,
    max_ndim: int | None = None,
    max_values: int | None = None,
    max_value_bytes: int | None = None,
) -> Limits:
    """The sink's limits (and the decode budget) with the given ones replaced."""
    given = {"max_array_bytes": max_array_bytes, "max_call_bytes": max_call_bytes,
             "max_arrays": max_arrays, "max_ndim": max_ndim, "max_values": max_values,
             "max_value_bytes": max_value_bytes}
    return dataclasses.replace(Limits(), **{k: v for k, v in given.items() if v is not None})
