"""The process executor: calls run in worker processes that can be stopped.

Up to ``--workers N`` worker processes, started on demand and kept for the next calls.
The worker of a cancelled call is terminated at once (and reaped), whatever the
function is doing; a new one replaces it. Arrays go to and from workers through
memory-mapped files (:mod:`dagen._executors._shm`), not through the pipe; the
worker's side is :mod:`dagen._executors._worker`.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._security import caller
from ._base import POLL, CallState, Cancelled, Executor
from ._shm import Arena, default_roots
from ._worker import rebuild_exception, worker_main

if TYPE_CHECKING:
    from .._model import Function

log = logging.getLogger("dagen.server")


class WorkerDied(RuntimeError):
    """The worker process running a call ended without answering."""


class _Worker:
    def __init__(self, process: Any, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn

    @property
    def pid(self) -> int:
        return int(self.process.pid)


class ProcessExecutor(Executor):
    """Calls run in up to ``workers`` worker processes, each terminated when its call is
    cancelled. Workers are forked from a fork server that has imported the served module."""

    name = "process"

    def __init__(self, module: types.ModuleType, workers: int) -> None:
        super().__init__(module, workers)
        self._module = (module.__name__, getattr(module, "__file__", None))
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([worker_main.__module__, module.__name__])
        self._count = 0  # workers started or starting
        self._idle: list[_Worker] = []
        self._cond = threading.Condition()
        self._drivers = ThreadPoolExecutor(workers, thread_name_prefix="dagen-worker")
        self._name = f"dagen-{os.getpid()}-{secrets.token_hex(4)}"
        self._calls = itertools.count(1)
        self._roots = default_roots()
        self._closed = False
        self._spare()  # one warm worker, so that the first call does not wait for it

    @classmethod
    def refuses(cls, fn: Function) -> str | None:
        if fn.owner or fn.generator:  # a worker finds functions by name, and sends one result
            return "class methods and generators run only with --executor thread"
        return None

    def arena(self) -> Arena:
        return Arena(f"{self._name}-{next(self._calls)}", self._roots)

    def after_cancel(self, call: CallState | None) -> str:
        if call is None:
            return super().after_cancel(call)
        if call.worker_pid:
            return f"its worker process {call.worker_pid} was terminated"
        return "it had not started"

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
        context = contextvars.copy_context()  # dagen.caller(), sent on to the worker
        return self._drivers.submit(
            context.run, self._drive, call, name, progress_param, args, kwargs
        )

    # -- one call in a worker -------------------------------------------------------------------

    def _drive(
        self,
        call: CallState,
        name: str,
        progress_param: str | None,
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        arena = call.arena
        assert arena is not None
        payload = arena.dumps((args, kwargs))
        del args, kwargs
        worker = self._acquire(call)
        call.worker_pid = worker.pid
        reusable = False
        try:
            worker.conn.send(
                ("call", name, progress_param, arena.folders[0].name,
                 [str(r) for r in self._roots], payload, caller(), call.deadline())
            )
            while True:
                if call.is_cancelled():
                    raise Cancelled(call.reason)
                ready = multiprocessing.connection.wait(
                    [worker.conn, worker.process.sentinel], timeout=POLL
                )
                if not ready:
                    continue
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join(1.0)
                    raise WorkerDied(
                        f"the worker process running {name}() ended with exit code "
                        f"{worker.process.exitcode}"
                    ) from None
                kind = message[0]
                if kind == "progress":
                    call.reports.put(message[1])
                elif kind == "result":
                    reusable = True
                    return arena.loads(message[1])
                elif kind == "error":
                    reusable = True
                    raise rebuild_exception(*message[1:])
        finally:
            if reusable:
                self._release(worker)
            else:  # cancelled, died, or failed here: never reuse it
                self._terminate(worker)

    # -- the pool -------------------------------------------------------------------------------

    def _acquire(self, call: CallState) -> _Worker:
        with self._cond:
            while True:
                if call.is_cancelled() or self._closed:
                    raise Cancelled(call.reason or "the server is stopping")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.process.is_alive():
                        return worker
                    self._count -= 1
                if self._count < self.workers:
                    self._count += 1
                    break
                self._cond.wait(POLL)
        try:
            return self._start(call)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _start(self, call: CallState | None) -> _Worker:
        """A new worker, once it has imported the served module."""
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_conn, *self._module, os.getpid()),
            name="dagen-worker",
            daemon=True,
        )
        with _main_hidden():
            process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn)
        try:
            while True:
                if call is not None and call.is_cancelled():
                    raise Cancelled(call.reason)
                if parent_conn.poll(POLL):
                    message = parent_conn.recv()
                    if message[0] == "ready":
                        log.debug("worker process %d ready", worker.pid)
                        return worker
                    raise RuntimeError(f"a worker process could not start:\n{message[1]}")
        except EOFError:
            raise RuntimeError(
                f"a worker process ended while starting (exit code {process.exitcode})"
            ) from None
        except BaseException:
            self._terminate(worker, replace=False)
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                worker.conn.close()
            else:
                self._idle.append(worker)
            self._cond.notify()

    def _terminate(self, worker: _Worker, replace: bool = True) -> int | None:
        """Stop a worker at once and reap it; start a spare in its place."""
        process = worker.process
        process.terminate()
        process.join(1.0)
        if process.exitcode is None:
            process.kill()
            process.join(5.0)
        worker.conn.close()
        with self._cond:
            self._count -= 1
            self._cond.notify()
        if replace:
            self._spare()
        return process.exitcode  # type: ignore[no-any-return]

    def _spare(self) -> None:
        """Start a worker in the background if none is idle and there is room."""
        with self._cond:
            if self._closed or self._idle or self._count >= self.workers:
                return
            self._count += 1

        def start() -> None:
            try:
                worker = self._start(None)
            except Exception as e:  # noqa: BLE001 - the next call starts one and reports why
                log.warning("could not start a spare worker process: %s", e)
                with self._cond:
                    self._count -= 1
                    self._cond.notify()
                return
            self._release(worker)

        threading.Thread(target=start, name="dagen-spare-worker", daemon=True).start()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
            worker.process.join(1.0)
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join(1.0)
            worker.conn.close()
        self._drivers.shutdown(wait=False, cancel_futures=True)


_main_lock = threading.Lock()


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start a worker without making it import the server's ``__main__`` again (as
    multiprocessing does, so that a script that starts a server without an
    ``if __name__ == "__main__"`` guard would start another one in each worker):
    workers need only the served module."""
    main = sys.modules.get("__main__")
    with _main_lock:
        if main is None:
            yield
            return
        saved: dict[str, Any] = {
            k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
        }
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)
