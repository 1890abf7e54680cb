"""Progress and cancellation: as a running function reports them, and as its caller receives them.

A served function that declares a parameter annotated :class:`Progress` gets one
from the server; the parameter is not part of the remote signature, the request
message or the client's signature::

    def regrid(da: xr.DataArray, progress: dagen.Progress = dagen.NO_PROGRESS) -> xr.DataArray:
        with progress.step("regridding", total=12):
            for month in range(12):
                if progress.cancelled:      # or dagen.cancelled(), anywhere in the call
                    raise RuntimeError("stopped")
                ...
                progress.advance(message=f"month {month + 1} of 12")

The default, ``NO_PROGRESS``, reports nowhere, so the function still runs locally.
Each report reaches the caller as a ``dagen.v1.Progress`` frame and then as a
:class:`ProgressReport` (its callback, or a progress bar in a terminal).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# -- what travels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressStep:
    """An open step: ``done`` units of ``total`` (None when unknown)."""

    name: str
    done: float = 0.0
    total: float | None = None


@dataclass(frozen=True)
class ProgressState:
    """One report of a function: what it had done when it reported."""

    fraction: float | None
    message: str = ""
    steps: tuple[ProgressStep, ...] = ()


@dataclass(frozen=True)
class ProgressReport:
    """What an ``on_progress`` callback receives during a call.

    ``phase`` is ``"upload"`` (the arguments' arrays going out), ``"run"`` (a report
    of the function) or ``"download"`` (the result's arrays coming back). Transfers
    fill ``bytes_done`` / ``bytes_total``; ``fraction`` is None when unknown.
    """

    function: str
    phase: str
    fraction: float | None
    message: str = ""
    steps: tuple[ProgressStep, ...] = ()
    bytes_done: int = 0
    bytes_total: int = 0
    elapsed: float = 0.0  # seconds since the phase started (for transfers) or the call did


# -- the function's side -------------------------------------------------------------------------

_cancelled_check: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "dagen_cancelled_check", default=None
)


def cancelled() -> bool:
    """Whether the caller of the running remote call has gone (cancelled, timed out).

    A function that checks it now and then (``if dagen.cancelled(): return``) stops
    soon after its caller does. False outside a served call, and under
    ``--executor process``, where a cancelled call's worker process is terminated.
    """
    check = _cancelled_check.get()
    return bool(check is not None and check())


_remaining: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar(
    "dagen_time_remaining", default=None
)
UNBOUNDED_SECONDS = 1e9  # seconds: more than this left is no deadline (grpc says "infinity")


def time_remaining() -> float | None:
    """Seconds left before the running remote call's deadline (its caller's timeout):
    0.0 once it has passed, None outside a served call or when the caller set no
    timeout. Under every executor; on another machine (a dask worker), as well as
    the clocks of the two machines agree.

    A function that can stop early with a partial answer asks it::

        while dagen.time_remaining() is None or dagen.time_remaining() > 5.0:
            ...  # one more iteration
    """
    remaining = _remaining.get()
    if remaining is None:
        return None
    left = remaining()
    return None if left > UNBOUNDED_SECONDS else max(0.0, left)


def deadline_clock(deadline: float | None) -> Callable[[], float] | None:
    """The seconds left before ``deadline`` (a ``time.time()``), as :func:`time_remaining`
    asks them: how a deadline that crossed to another process is made visible there."""
    if deadline is None:
        return None
    return lambda: deadline - time.time()


# For the paths that run for every tiny call: each one call into C, no Python frame.
set_cancellation_check = _cancelled_check.set
reset_cancellation_check = _cancelled_check.reset
set_time_remaining = _remaining.set
reset_time_remaining = _remaining.reset


class cancellation_scope:  # noqa: N801 - used like a function, as contextlib's are
    """Make :func:`cancelled` answer with ``check`` (and :func:`time_remaining` with
    ``remaining``: seconds left, or None for no deadline) in this thread for a call's
    duration."""

    __slots__ = ("_check", "_remaining", "_token", "_remaining_token")

    def __init__(self, check: Callable[[], bool],
                 remaining: Callable[[], float] | None = None) -> None:
        self._check = check
        self._remaining = remaining

    def __enter__(self) -> None:
        self._token = _cancelled_check.set(self._check)
        self._remaining_token = _remaining.set(self._remaining)

    def __exit__(self, *exc: object) -> None:
        _remaining.reset(self._remaining_token)
        _cancelled_check.reset(self._token)


class _Level:
    __slots__ = ("name", "done", "total", "fraction")

    def __init__(self, name: str, total: float | None) -> None:
        self.name = name
        self.done = 0.0
        self.total = total
        self.fraction: float | None = None  # set directly, when there is no total


class Progress:
    """Reports a running call's progress to its caller.

    Declare a parameter annotated ``dagen.Progress`` (default ``dagen.NO_PROGRESS``,
    which reports nowhere) and the server passes one in. Every call of
    :meth:`update`, :meth:`advance` and :meth:`step` sends a report.

    Parameters
    ----------
    on_report
        Called with a :class:`ProgressState` for each report; None reports nowhere.
    cancelled
        Tells whether the call was cancelled; None: never.
    """

    def __init__(
        self,
        on_report: Callable[[ProgressState], None] | None = None,
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self._on_report = on_report
        self._cancelled = cancelled
        self._lock = threading.RLock()  # reports leave in the order they were made
        self._levels = [_Level("", None)]
        self._message = ""

    @property
    def cancelled(self) -> bool:
        """True once the caller has cancelled the call or its deadline has passed."""
        return bool(self._cancelled is not None and self._cancelled())

    def update(
        self,
        fraction: float | None = None,
        message: str | None = None,
        *,
        done: float | None = None,
        total: float | None = None,
    ) -> None:
        """Report progress of the innermost open step (of the whole call if none is open).

        ``fraction`` (0 to 1) says how much of it is done; or ``done`` (and ``total``)
        say it in units. ``message`` replaces the message shown.
        """
        with self._lock:
            level = self._levels[-1]
            if total is not None:
                level.total = _units(total, "total")
            if done is not None:
                level.done = _units(done, "done")
            if fraction is not None:
                f = _fraction(fraction)
                if level.total:
                    level.done = f * level.total
                else:
                    level.fraction = f
            if message is not None:
                self._message = str(message)
            self._emit(self._state())

    def advance(self, n: float = 1, message: str | None = None) -> None:
        """Count ``n`` more units of the innermost open step done, and report."""
        with self._lock:
            level = self._levels[-1]
            level.done += _units(n, "n")
            if message is not None:
                self._message = str(message)
            self._emit(self._state())

    @contextmanager
    def step(self, name: str, total: float | None = None) -> Iterator[Progress]:
        """A named part of the work, with ``total`` units when known; steps nest.

        While it is open, :meth:`update` and :meth:`advance` apply to it, and the part
        of it done counts toward the step around it. Closing it counts one unit done of
        the step around it (when that has a ``total``), so nested loops need no
        ``advance()`` of the outer step::

            with progress.step("years", total=10):
                for year in years:
                    with progress.step(f"year {year}", total=12):
                        for month in range(12):
                            ...
                            progress.advance()
        """
        level = _Level(str(name), None if total is None else _units(total, "total"))
        with self._lock:
            self._levels.append(level)
            self._emit(self._state())
        try:
            yield self
        finally:
            with self._lock:
                if level in self._levels[1:]:
                    i = self._levels.index(level)
                    parent = self._levels[i - 1]
                    if parent.total:
                        parent.done += 1
                    elif i == len(self._levels) - 1:  # the parent says nothing: keep the fraction
                        parent.fraction = self._state().fraction
                    del self._levels[i]
                self._emit(self._state())

    def _state(self) -> ProgressState:
        child: float | None = None
        for level in reversed(self._levels):
            if level.total:
                child = min(1.0, (level.done + (child or 0.0)) / level.total)
            elif child is None:
                child = level.fraction
            # else: a level without a total passes its open child's fraction up
        steps = tuple(ProgressStep(lv.name, lv.done, lv.total) for lv in self._levels[1:])
        return ProgressState(child, self._message, steps)

    def _emit(self, state: ProgressState) -> None:
        if self._on_report is not None:
            self._on_report(state)

    def __repr__(self) -> str:
        return f"<dagen.Progress {self._state()}>"


NO_PROGRESS = Progress()
"""Reports nowhere: the default of a progress parameter, for calls outside a server."""


def _fraction(value: float) -> float:
    f = float(value)
    if math.isnan(f):
        raise ValueError("progress fraction is NaN")
    return min(1.0, max(0.0, f))


def _units(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"progress {what} must be a finite number >= 0, not {value!r}")
    return v


def is_progress_annotation(annotation: Any) -> bool:
    """``Progress``, or ``Progress | None``: the parameter the server fills in."""
    if annotation is Progress:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = set(typing.get_args(annotation))
        return members == {Progress, type(None)}
    return False


# -- on the wire -----------------------------------------------------------------------------------


def state_to_proto(state: ProgressState, sequence: int) -> Any:
    from .v1 import progress_pb2

    msg = progress_pb2.Progress(message=state.message, sequence=sequence)
    if state.fraction is not None:
        msg.fraction = state.fraction
    for s in state.steps:
        step = msg.steps.add(name=s.name, done=s.done)
        if s.total is not None:
            step.total = s.total
    return msg


def report_from_proto(msg: Any, function: str, elapsed: float) -> ProgressReport:
    return ProgressReport(
        function=function,
        phase="run",
        fraction=msg.fraction if msg.HasField("fraction") else None,
        message=msg.message,
        steps=tuple(
            ProgressStep(s.name, s.done, s.total if s.HasField("total") else None)
            for s in msg.steps
        ),
        elapsed=elapsed,
    )
