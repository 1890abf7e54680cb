"""Several calls at once: ``dagen.submit`` (a :class:`concurrent.futures.Future`) and
``await dagen.acall(...)`` (asyncio), both free functions, so that they never
collide with the names of a user's functions.

Each call runs as the blocking call it would be, in a thread of its own, on the
client's channel (a synchronous grpc channel, which any thread and any event loop may
use: no ``grpc.aio`` channel, which is tied to the loop that made it, grpc#32480).
The call's ``call_options`` are those in force where it was submitted. Cancelling
the future cancels the rpc, and the server stops the work as after Ctrl-C.
"""

from __future__ import annotations

import contextvars
import threading
import types
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, TypeVar

T = TypeVar("T")

_handle: contextvars.ContextVar[_RpcHandle | None] = contextvars.ContextVar(
    "dagen_rpc_handle", default=None
)

# The handle of the call running in this context (None outside a submitted call):
# the client hands it each rpc it starts. One call into C, for the path of tiny calls.
current_handle = _handle.get


def track(rpc: Any) -> None:
    """Hand ``rpc`` (a grpc call object) to the submitted call running in this
    context, if any, so that cancelling its future cancels the rpc."""
    handle = _handle.get()
    if handle is not None:
        handle.attach(rpc)


class _RpcHandle:
    """The rpc of one submitted call, to cancel it from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rpcs: list[Any] = []
        self.cancelled = False

    def attach(self, rpc: Any) -> None:
        """The call started ``rpc`` (anything with ``cancel()``); cancelled at once if
        the future was cancelled meanwhile."""
        with self._lock:
            self._rpcs.append(rpc)
            cancelled = self.cancelled
        if cancelled:
            rpc.cancel()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            rpcs = list(self._rpcs)
        for rpc in rpcs:
            rpc.cancel()


class CallFuture(Future):  # type: ignore[type-arg]
    """A :class:`concurrent.futures.Future` whose :meth:`cancel` also cancels a running
    call: the rpc ends, and the server stops the function (a pool's futures cannot
    cancel what has started)."""

    def __init__(self, handle: _RpcHandle) -> None:
        super().__init__()
        self._dagen_handle = handle

    def cancel(self) -> bool:
        """Cancel the call, running or not; False once it has finished."""
        with self._condition:  # type: ignore[attr-defined]
            state = self._state  # type: ignore[has-type]
            if state == FINISHED:
                return False
            if state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            if state == PENDING:  # not started: its thread will see it (and notify)
                return super().cancel()
            # Future.cancel() would refuse a running future: this one stops its rpc
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:  # type: ignore[attr-defined]
                waiter.add_cancelled(self)
            self._condition.notify_all()  # type: ignore[attr-defined]
        self._dagen_handle.cancel()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


def submit(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """Start ``fn(*args, **kwargs)`` (a function of a dagen client: ``remote.anomaly``,
    a client package's module-level function, a remote object's method) and return a
    :class:`concurrent.futures.Future` of its result at once.

    ``future.result()`` returns or raises what the blocking call would (the items of a
    generator come as a list); ``future.cancel()`` cancels the call, running or not,
    and the server stops its work. Progress, timeouts and the other settings of
    ``dagen.call_options`` are those in force where ``submit`` is called."""
    if not callable(fn):
        raise TypeError(
            f"dagen.submit() takes a function of a dagen client (such as remote.anomaly) "
            f"and its arguments, not {type(fn).__name__!r}"
        )
    handle = _RpcHandle()
    future: CallFuture = CallFuture(handle)
    context = contextvars.copy_context()  # call_options, and the handle set inside only
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    threading.Thread(target=_run, args=(future, context, handle, fn, args, kwargs),
                     name=f"dagen-submit-{name}", daemon=True).start()
    return future


def _run(future: CallFuture, context: contextvars.Context, handle: _RpcHandle,
         fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The thread of a submitted call."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = context.run(_call, handle, fn, args, kwargs)
    except BaseException as e:  # noqa: BLE001 - delivered through the future
        if not future.cancelled():
            _settle(future.set_exception, e)
    else:
        _settle(future.set_result, result)


def _call(handle: _RpcHandle, fn: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    _handle.set(handle)
    result = fn(*args, **kwargs)
    if isinstance(result, types.GeneratorType):  # a remote generator's items, as they come
        return list(result)
    return result


def _settle(setter: Callable[[Any], None], value: Any) -> None:
    try:
        setter(value)
    except InvalidStateError:  # cancelled meanwhile: nobody waits for it
        pass


async def acall(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``await dagen.acall(remote.anomaly, sst)``: the call, awaited in an event loop
    (Jupyter's included) without blocking it. Cancelling the awaiting task cancels the
    call and the server's work; results, errors, progress and timeouts are as for
    :func:`submit`. Calls from several loops, one after another or at once, share the
    client's channel safely."""
    import asyncio  # (loaded when used: a client that never awaits does not need it)

    future = submit(fn, *args, **kwargs)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise
