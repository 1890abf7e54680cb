"""The server's pool of handler threads.

gRPC runs each call's handler on a thread of the pool it is given. The standard
``ThreadPoolExecutor`` lets its idle threads take turns, so sequential calls land on
different threads, each with caches gone cold; a tiny call's time is mostly Python
running with cold caches. :class:`LastIdlePool` gives work to the thread that went
idle last: under light load one thread serves every call, under load the pool grows to
``max_workers`` threads, and past that calls wait in order.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

# A thread that has just served a long call (a large transfer) serves the next tiny
# calls ~75 µs slower than one that served tiny calls (measured; its caches, and glibc's
# arena of that thread, hold the large call's leftovers): it goes to the back of the line.
LONG_CALL_SECONDS = 0.05

_WorkItem = tuple["futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Worker:
    __slots__ = ("item", "wake")

    def __init__(self) -> None:
        self.item: _WorkItem | None = None
        self.wake = threading.Lock()  # held while the worker has nothing to do
        self.wake.acquire()


class LastIdlePool(futures.Executor):
    def __init__(self, max_workers: int, thread_name_prefix: str = "dagen-handler") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last one idle is the first one used
        self._backlog: collections.deque[_WorkItem] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        item: _WorkItem = (future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if self._idle:
                worker = self._idle.pop()
                worker.item = item
                worker.wake.release()
            elif len(self._threads) < self.max_workers:
                worker = _Worker()
                worker.item = item
                thread = threading.Thread(
                    target=self._work, args=(worker,), daemon=True,
                    name=f"{self._prefix}-{len(self._threads)}",
                )
                self._threads.append(thread)
                thread.start()
                worker.wake.release()
            else:
                self._backlog.append(item)
        return future

    def _work(self, worker: _Worker) -> None:
        while True:
            worker.wake.acquire()
            item = worker.item
            worker.item = None
            while item is not None:
                started = time.monotonic()
                _run(item)
                del item  # the call's state (its arrays) must not wait for the next call
                long = time.monotonic() - started > LONG_CALL_SECONDS
                with self._lock:
                    if self._backlog:
                        item = self._backlog.popleft()
                        continue
                    if self._shutdown:
                        return
                    if long:  # last in line: the thread of short calls stays first
                        self._idle.insert(0, worker)
                    else:
                        self._idle.append(worker)
                    item = None
            if self._shutdown:
                return

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._backlog:
                    self._backlog.popleft()[0].cancel()
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for worker in idle:
            worker.wake.release()  # with no item: the thread ends
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


def _run(item: _WorkItem) -> None:
    future, fn, args, kwargs = item
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - delivered through the future
        future.set_exception(e)
        del e
    else:
        future.set_result(result)
