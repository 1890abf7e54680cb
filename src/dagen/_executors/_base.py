"""The executor base class, and the supervision of a call wherever it runs.

The server hands each call to an executor (:func:`dagen._executors.make_executor`
picks one by name) and supervises it (:func:`supervise`): it forwards the
function's progress reports and, when the caller goes away (cancelled, Ctrl-C,
deadline passed), cancels the call. An executor says, through the attributes and
methods of :class:`Executor`, all that the server needs to know about it: the server
never asks which executor it has.
"""

from __future__ import annotations

import collections
import functools
import queue
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar

import grpc
import numpy as np

from .._progress import UNBOUNDED_SECONDS
from ._shm import Arena

if TYPE_CHECKING:
    from .._model import Function
    from .._progress import ProgressState

POLL = 0.05  # seconds between checks of a worker and of the caller
_CHECK_EVERY = 0.25  # seconds between checks of the caller while the function reports
_DEADLINE_SLACK = 0.5  # seconds: a call that ends this close to its deadline timed out


class Cancelled(Exception):
    """The call was cancelled before its function returned; ``reason`` says why."""

    def __init__(self, reason: str, deadline: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.deadline = deadline


# -- one call --------------------------------------------------------------------------------------


class ReportQueue:
    """The reports of one call, in order, numbered from 1. Never blocks the function:
    past ``maxlen`` pending reports, the newest replaces the last pending one."""

    def __init__(self, maxlen: int = 256) -> None:
        self._items: collections.deque[tuple[int, ProgressState]] = collections.deque()
        self._maxlen = maxlen
        self._sequence = 0
        self._cond = threading.Condition()

    def put(self, state: ProgressState) -> None:
        with self._cond:
            self._sequence += 1
            if len(self._items) >= self._maxlen:
                self._items.pop()  # merged into this newer report
            self._items.append((self._sequence, state))
            self._cond.notify_all()

    def get(self, timeout: float, until: Callable[[], bool]) -> tuple[int, ProgressState] | None:
        """The next report; None after ``timeout`` or once ``until()`` holds (checked
        whenever :meth:`wake` is called)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or until(), timeout)
            return self._items.popleft() if self._items else None

    def drain(self) -> list[tuple[int, ProgressState]]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class CallState:
    """A call as its executor and its supervisor share it."""

    def __init__(self, arena: Arena | None = None) -> None:
        self.reports = ReportQueue()
        self.arena = arena
        self.worker_pid: int | None = None
        self.reason = ""
        self._cancelled = threading.Event()
        # seconds left before the rpc's deadline (grpc's clock: "infinity" for none)
        self.time_remaining: Callable[[], float] | None = None

    def deadline(self) -> float | None:
        """The call's deadline as a ``time.time()``, to send to another process; None: none."""
        left = self.time_remaining() if self.time_remaining is not None else None
        return None if left is None or left > UNBOUNDED_SECONDS else time.time() + left

    def cancel(self, reason: str) -> None:
        if not self._cancelled.is_set():
            self.reason = reason
            self._cancelled.set()
        self.reports.wake()

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def alloc(self) -> Callable[[int], np.ndarray] | None:
        """How the call's received arrays are allocated (None: ordinary memory)."""
        return self.arena.allocate if self.arena is not None else None


def supervise(
    call: CallState, future: Future[Any], context: grpc.ServicerContext
) -> Iterator[tuple[int, ProgressState]]:
    """Yield the call's reports while its function runs and return its result; cancel
    the call (raising :class:`Cancelled`) when the caller goes or the deadline passes."""
    future.add_done_callback(lambda _: call.reports.wake())
    check_at = time.monotonic() + _CHECK_EVERY
    while True:
        item = call.reports.get(_CHECK_EVERY, lambda: future.done() or call.is_cancelled())
        # a function that reports without pause is asked after too (every _CHECK_EVERY s)
        if item is not None and (time.monotonic() < check_at or future.done()):
            yield item
            continue
        check_at = time.monotonic() + _CHECK_EVERY
        if item is None and future.done():
            break
        gone = stopped(context)
        if gone is None and call.is_cancelled():
            gone = Cancelled("the caller cancelled it")
        if gone is not None:
            call.cancel(gone.reason)
            future.cancel()
            raise gone
        if item is not None:
            yield item
    yield from call.reports.drain()
    gone = stopped(context)
    if gone is not None:  # the function returned, but nobody waits for its result
        raise gone
    return future.result()


def stopped(context: grpc.ServicerContext) -> Cancelled | None:
    """Why the rpc is over for its function, or None while it goes on: its deadline
    passed (or nearly: the caller's own timer ends the rpc a moment before the
    server's), or the caller went away."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return Cancelled("its deadline passed", deadline=True)
    if context.is_active():
        return None
    deadline = remaining is not None and remaining < _DEADLINE_SLACK
    if deadline:
        return Cancelled("its deadline passed", deadline)
    ends = _server_stop["ends"]
    if ends is not None and time.monotonic() >= ends - _DEADLINE_SLACK:
        return Cancelled(
            f"the server stopped: its grace period of {_server_stop['grace']:g} s for calls "
            "in progress ran out"
        )
    return Cancelled("the caller cancelled it")


_server_stop: dict[str, float | None] = {"ends": None, "grace": None}


def server_stopping(grace: float) -> None:
    """The server is stopping: calls still running ``grace`` seconds from now end
    because of it, not because their callers cancelled them (what their log says)."""
    _server_stop.update(ends=time.monotonic() + grace, grace=grace)


# -- dataset blocks ---------------------------------------------------------------------------------

# The name under which a block's computation travels to where functions run (no
# function of a served module can have it: it is no identifier).
COMPUTE_BLOCK = "<dagen: compute a dataset block>"


def compute_block_here(block: Any) -> np.ndarray:
    """A block of a dataset, computed in this thread (dask's synchronous scheduler)."""
    return np.asarray(block.compute(scheduler="sync"))


def served_function(module: types.ModuleType, name: str) -> Callable[..., Any]:
    """What a call names: a function of the served module, or dagen's block computation."""
    if name == COMPUTE_BLOCK:
        return compute_block_here
    return getattr(module, name)  # type: ignore[no-any-return]


# -- executors --------------------------------------------------------------------------------------


class Executor:
    """Runs the functions of a served module; subclasses are made with
    ``(module, workers)``: the served module, and how many calls run at once."""

    name: ClassVar[str] = ""  # as --executor names it
    # Held while a unary call runs right in grpc's handler thread (see the Servicer's
    # fast path); None: every call goes through submit().
    inline_slots: Slots | None = None

    def __init__(self, module: types.ModuleType, workers: int) -> None:
        self.module = module
        self.workers = workers

    @classmethod
    def refuses(cls, fn: Function) -> str | None:
        """Why this executor cannot run ``fn``, or None if it can (asked before the
        server starts, for every function it serves)."""
        return None

    def open(self, context: grpc.ServicerContext) -> CallState:
        """The state of a new call; cancelled and cleaned up when the rpc ends."""
        call = CallState(self.arena())
        call.time_remaining = context.time_remaining

        def ended() -> None:
            call.cancel("the rpc ended")
            if call.arena is not None:
                call.arena.remove()

        if not context.add_callback(ended):
            ended()
        return call

    def arena(self) -> Arena | None:
        """Where a new call's received arrays go (None: ordinary memory)."""
        return None

    def submit(
        self,
        call: CallState,
        name: str,
        fn: Callable[..., Any],
        progress_param: str | None,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        inline: bool = False,
    ) -> Future[Any]:
        """Start the call; ``inline`` allows running it in the calling thread."""
        raise NotImplementedError

    def compute_block(self, call: CallState, block: Any) -> Future[Any]:
        """Compute one block of a lazily opened dataset (a dask array: its graph reads
        the block from its files or store) into a numpy array, where this executor runs
        functions: the block is read there (a worker process, a dask worker), not
        necessarily in the server's process."""
        return self.submit(call, COMPUTE_BLOCK, compute_block_here, None, (block,), {},
                           inline=True)

    def after_cancel(self, call: CallState | None) -> str:
        """What became of a cancelled call's function, for the server's log."""
        return "it stops when it checks progress.cancelled or dagen.cancelled(), or returns"

    def unready(self) -> str | None:
        """Why calls cannot run now (the health service then answers NOT_SERVING), or
        None when they can. Asked every few seconds while the server runs."""
        return None

    def shutdown(self) -> None:
        pass


class Slots:
    """At most ``n`` holders at once: a semaphore whose acquire and release are each one
    call into C (a tiny call takes one)."""

    def __init__(self, n: int) -> None:
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            self._free.put(None)
        # give(): hand a slot back (a call into C, no Python frame)
        self.give: Callable[[], None] = functools.partial(self._free.put, None)

    def take(self) -> bool:
        """Take a slot, waiting for one if need be; whether it had to wait."""
        try:
            self._free.get_nowait()
            return False
        except queue.Empty:
            self._free.get()
            return True

    def __enter__(self) -> None:
        self.take()

    def __exit__(self, *exc: object) -> None:
        self.give()
