"""The thread executor (the default): calls run in threads of the server process.

A thread cannot be stopped from outside: a cancelled function stops when it checks
``progress.cancelled`` or ``dagen.cancelled()``; one that never checks runs to its
end, and its result is dropped. Unary calls run in grpc's own handler thread (as many
as ``--workers``), to keep tiny calls fast; streaming ones in a pool of ``--workers``
threads, while the handler thread sends their progress frames.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .._progress import Progress, cancellation_scope
from ._base import CallState, Cancelled, Executor, Slots


class ThreadExecutor(Executor):
    """Calls run in a pool of ``workers`` threads of the server process."""

    name = "thread"

    def __init__(self, module: types.ModuleType, workers: int) -> None:
        super().__init__(module, workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dagen-call")
        # grpc has a handler thread for every call the server admits (--max-calls), so
        # inline calls take one of --workers slots to run
        self._slots = self.inline_slots = Slots(workers)

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
        if inline:  # a unary call: no reports to forward, so no need for another thread
            future: Future[Any] = Future()
            with self._slots:
                try:
                    future.set_result(_call_here(call, fn, progress_param, args, kwargs))
                except BaseException as e:  # noqa: BLE001 - delivered through the future
                    future.set_exception(e)
            return future
        # in the caller's context: dagen.caller() and other context variables go along
        context = contextvars.copy_context()
        return self._pool.submit(context.run, _call_here, call, fn, progress_param, args, kwargs)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call_here(
    call: CallState,
    fn: Callable[..., Any],
    progress_param: str | None,
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> Any:
    if call.is_cancelled():
        raise Cancelled(call.reason)
    if progress_param is not None:
        kwargs[progress_param] = Progress(call.reports.put, cancelled=call.is_cancelled)
    with cancellation_scope(call.is_cancelled, call.time_remaining):
        return fn(*args, **kwargs)
