"""Where calls run: a thread pool (the default), or worker processes that can be stopped.

The server hands each call to an executor and supervises it (:func:`supervise`):
it forwards the function's progress reports and, when the caller goes away
(cancelled, Ctrl-C, deadline passed), cancels the call.

* ``thread`` (default): ``--workers N`` threads. A thread cannot be stopped from
  outside: a cancelled function stops when it checks ``progress.cancelled`` or
  ``dagen.cancelled()``; one that never checks runs to its end, and its result
  is dropped. Unary calls run in grpc's own handler thread (as many as
  ``--workers``), to keep tiny calls fast; streaming ones in a pool of
  ``--workers`` threads, while the handler thread sends their progress frames.
* ``process``: up to ``--workers N`` worker processes, started on demand and kept
  for the next calls. The worker of a cancelled call is terminated at once (and
  reaped), whatever the function is doing; a new one replaces it. Arrays go to and
  from workers through memory-mapped files (:mod:`dagen._shm`), not through the pipe.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import contextvars
import ctypes
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import secrets
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from ._progress import Progress, ProgressState, cancellation_scope
from ._security import caller, set_caller
from ._shm import Arena, default_roots

log = logging.getLogger("dagen.server")

EXECUTORS = ("thread", "process")
_POLL = 0.05  # seconds between checks of a worker and of the caller
_DEADLINE_SLACK = 0.5  # seconds: a call that ends this close to its deadline timed out


class Cancelled(Exception):
    """The call was cancelled before its function returned; ``reason`` says why."""

    def __init__(self, reason: str, deadline: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.deadline = deadline


class WorkerDied(RuntimeError):
    """The worker process running a call ended without answering."""


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
    while True:
        item = call.reports.get(0.25, lambda: future.done() or call.is_cancelled())
        if item is not None:
            yield item
            continue
        if future.done():
            break
        gone = stopped(context)
        if gone is None and call.is_cancelled():
            gone = Cancelled("the caller cancelled it")
        if gone is not None:
            call.cancel(gone.reason)
            future.cancel()
            raise gone
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
    return Cancelled("its deadline passed" if deadline else "the caller cancelled it", deadline)


# -- executors --------------------------------------------------------------------------------------


class Executor:
    """Runs the functions of a served module."""

    kind = ""

    def open(self, context: grpc.ServicerContext) -> CallState:
        """The state of a new call; cancelled and cleaned up when the rpc ends."""
        call = CallState(self._arena())

        def ended() -> None:
            call.cancel("the rpc ended")
            if call.arena is not None:
                call.arena.remove()

        if not context.add_callback(ended):
            ended()
        return call

    def _arena(self) -> Arena | None:
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


class ThreadExecutor(Executor):
    """Calls run in a pool of ``workers`` threads of the server process."""

    kind = "thread"

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dagen-call")
        # grpc has a handler thread for every call the server admits (--max-calls), so
        # inline calls take one of --workers slots to run
        self._inline_slots = Slots(workers)

    @property
    def inline_slots(self) -> Slots:
        """Held while a call runs in grpc's handler thread (see Servicer's fast path)."""
        return self._inline_slots

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
            with self._inline_slots:
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
    with cancellation_scope(call.is_cancelled):
        return fn(*args, **kwargs)


# -- worker processes -------------------------------------------------------------------------------


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

    kind = "process"

    def __init__(self, module: types.ModuleType, workers: int) -> None:
        self._module = (module.__name__, getattr(module, "__file__", None))
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["dagen._executor", module.__name__])
        self._max = workers
        self._count = 0  # workers started or starting
        self._idle: list[_Worker] = []
        self._cond = threading.Condition()
        self._drivers = ThreadPoolExecutor(workers, thread_name_prefix="dagen-worker")
        self._name = f"dagen-{os.getpid()}-{secrets.token_hex(4)}"
        self._calls = itertools.count(1)
        self._roots = default_roots()
        self._closed = False
        self._spare()  # one warm worker, so that the first call does not wait for it

    def _arena(self) -> Arena:
        return Arena(f"{self._name}-{next(self._calls)}", self._roots)

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
                 [str(r) for r in self._roots], payload, caller())
            )
            while True:
                if call.is_cancelled():
                    raise Cancelled(call.reason)
                ready = multiprocessing.connection.wait(
                    [worker.conn, worker.process.sentinel], timeout=_POLL
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
                    raise _rebuild_exception(*message[1:])
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
                if self._count < self._max:
                    self._count += 1
                    break
                self._cond.wait(_POLL)
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
            target=_worker_main,
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
                if parent_conn.poll(_POLL):
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
            if self._closed or self._idle or self._count >= self._max:
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


def make_executor(kind: str, module: types.ModuleType, workers: int) -> Executor:
    if kind == "thread":
        return ThreadExecutor(workers)
    if kind == "process":
        return ProcessExecutor(module, workers)
    raise ValueError(f"unknown executor {kind!r}: expected one of {', '.join(EXECUTORS)}")


# -- errors across the pipe ---------------------------------------------------------------------------


def _describe_exception(exc: BaseException) -> tuple[bytes | None, str, str, str, str]:
    pickled: bytes | None = None
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)  # noqa: S301 - our own worker's bytes
        pickled = data
    except Exception:  # noqa: BLE001 - an exception that does not survive pickling: described
        pass
    cls = type(exc)
    message = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    tb = "".join(traceback.format_exception(exc))
    return pickled, cls.__qualname__, cls.__module__, message, tb


def _rebuild_exception(
    pickled: bytes | None, qualname: str, module: str, message: str, tb: str
) -> BaseException:
    exc: BaseException | None = None
    if pickled is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(pickled)  # noqa: S301 - our own worker's bytes
    if exc is None:
        cls: Any = getattr(builtins, qualname, None) if module == "builtins" else None
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = type(qualname.rsplit(".", 1)[-1], (Exception,), {})
            cls.__qualname__, cls.__module__ = qualname, module
        exc = cls(message)
    exc.add_note(f"Traceback in the worker process:\n{tb.rstrip()}")
    return exc


# -- the worker's side --------------------------------------------------------------------------------


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


def _die_with(server_pid: int) -> None:
    """End this worker, even in the middle of a call, when the server has gone (killed,
    crashed): its parent is the fork server, which lives as long as its children do."""
    with contextlib.suppress(Exception):  # and when the fork server ends (Linux)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while _alive(server_pid):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="dagen-watch-server", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended, but is still listed until its parent reaps it
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _load_module(name: str, file: str | None) -> types.ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if not file:
            raise
    from ._introspect import load_module

    return load_module(file)


def _worker_main(
    conn: multiprocessing.connection.Connection, name: str, file: str | None, server_pid: int
) -> None:
    """A worker process: load the module, then run calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at the server is the server's to handle
    _die_with(server_pid)
    try:
        module = _load_module(name, file)
    except BaseException:  # noqa: BLE001 - reported to the server, which reports it
        conn.send(("failed", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "call":
            return
        _, fn_name, progress_param, arena_name, roots, payload, identity = message
        set_caller(identity)
        arena = Arena(arena_name, [Path(r) for r in roots], prefix="r")
        try:
            args, kwargs = arena.loads(payload)
            if progress_param is not None:
                kwargs[progress_param] = Progress(lambda state: send(("progress", state)))
            result = getattr(module, fn_name)(*args, **kwargs)
            del args, kwargs
            data = arena.dumps(result)
            del result
            send(("result", data))
        except BaseException as e:  # noqa: BLE001 - the caller gets it, the worker goes on
            send(("error", *_describe_exception(e)))
        finally:
            arena = None  # type: ignore[assignment]

