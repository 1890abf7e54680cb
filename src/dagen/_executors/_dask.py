"""``--executor dask``: each call is one task on a dask cluster (dagen._cluster says which).

* A call is ``Client.submit(run_call, ..., pure=False, key="<function>-<n>-<token>")``:
  the worker imports the served module (by name, or from its file's path on a shared
  file system, or from the file ``upload: true`` sent), runs the function and returns
  its result to the server. The import is checked on the workers before the first call.
* Progress: the function's ``Progress`` reports go out with ``distributed.log_event``
  on a topic of the call, which the server subscribes to (``Client.subscribe_topic``);
  they reach the caller in order, all of them before the result.
* Cancellation (the caller went, or its deadline passed): the server sets a
  ``distributed.Event`` of the call, which ``dagen.cancelled()`` and
  ``progress.cancelled`` read on the worker (at most every 0.25 s). A function that
  has not returned 3 s later is stopped by ending its worker's process (its nanny
  starts a new one: keep ``nanny: true``, the default), when that worker runs one task
  at a time (one thread: ``processes`` equal to ``cores``); otherwise it runs to its end
  and its result is dropped (dask cannot stop a running task: dask/distributed#4694).
* ``dagen.caller()`` on the worker is the caller's identity, sent with the task.
* Arguments: without ``--spool`` they travel inside the task (a pickle). With
  ``--spool DIR``, arrays a caller uploads are received straight into ``.npy`` files of
  the call in DIR (:mod:`._shm`), which the worker opens memory-mapped: they cross the
  login node once, and only their references and the small arguments travel in the
  task. The call's files are removed when its rpc ends, whatever way it ends.
* No worker within ``wait_for_workers`` seconds: the call fails with
  :class:`~dagen.ClusterUnavailable` (UNAVAILABLE), saying so.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import pickle
import secrets
import shutil
import threading
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._cluster import DaskTarget, connect
from .._exceptions import ClusterUnavailable
from .._progress import (
    Progress,
    ProgressState,
    ProgressStep,
    cancellation_scope,
    deadline_clock,
)
from .._security import caller, reset_caller, set_caller
from ._base import CallState, Cancelled, Executor, served_function
from ._shm import Arena, load_spooled, npy_header
from ._worker import import_served

log = logging.getLogger("dagen.server")

_POLL = 0.1  # seconds between looks at a running task and at the caller
_CHECK_EVERY = 0.25  # seconds: how often dagen.cancelled() asks the scheduler, at most
_GRACE = 3.0  # seconds a cancelled function has to notice before its worker is restarted
_LATE_REPORTS = 5.0  # seconds to wait for reports still on their way after the result


class DaskExecutor(Executor):
    """Calls run as tasks on a dask cluster, at most ``workers`` at once from this server."""

    name = "dask"

    def __init__(self, module: types.ModuleType, workers: int,
                 target: DaskTarget | None = None) -> None:
        if target is None:
            raise ValueError("--executor dask needs --cluster, --scheduler or --scheduler-file")
        super().__init__(module, workers)
        self._module = module.__name__
        self._file = getattr(module, "__file__", None)
        self._target = target
        self._client, self._cluster = connect(target)
        self._drivers = ThreadPoolExecutor(workers, thread_name_prefix="dagen-dask")
        self._calls = itertools.count(1)
        self._token = secrets.token_hex(4)
        self._spooled = itertools.count(1)
        self._ready = False  # the module imports on the workers that were checked
        self._ready_lock = threading.Lock()
        self._closed = False
        if target.cluster is not None and target.cluster.upload:
            if not self._file:
                raise ClusterUnavailable(f"upload: true needs a module file; {self._module} has none")
            self._client.upload_file(self._file)  # and to every worker that joins later
        self._check_at_start()

    def _check_at_start(self) -> None:
        """Check the served module on the workers: at once for a local cluster (a module
        that does not import there stops the server), in the background for batch jobs,
        which may wait in the queue (the first call then says what is wrong)."""
        target = self._target
        if target.cluster is not None and target.cluster.kind == "local":
            try:
                self.check_workers(target.wait_for_workers)
            except BaseException:
                self.shutdown()
                raise
            return

        def check() -> None:
            try:
                self.check_workers(target.wait_for_workers)
            except ClusterUnavailable as e:
                log.error("%s", e)
            except Exception:  # noqa: BLE001 - stopping, or the scheduler went: calls will say
                return
            else:
                log.info("dask workers ready on %s", target.describe())

        threading.Thread(target=check, name="dagen-dask-check", daemon=True).start()

    def arena(self) -> Arena | None:
        spool = self._target.spool
        if spool is None:
            return None
        return Arena(f"dagen-{self._token}-{next(self._spooled)}", [Path(spool)],
                     header=npy_header, suffix=".npy", small_in_memory=True)

    def after_cancel(self, call: CallState | None) -> str:
        return ("its task sees dagen.cancelled(); one that does not stop within a few "
                "seconds has its worker restarted, if that worker runs one task at a time")

    @property
    def client(self) -> Any:
        return self._client

    def check_workers(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a worker, then check that the served module imports
        on every worker; raise :class:`ClusterUnavailable` saying what is wrong."""
        self._ensure_ready(None, timeout)

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
        return self._drivers.submit(context.run, self._drive, call, name, progress_param,
                                    args, kwargs)

    # -- one call ---------------------------------------------------------------------------

    def _drive(
        self,
        call: CallState,
        name: str,
        progress_param: str | None,
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        from distributed import Event

        spec = self._target.cluster
        from_zero = spec is not None and spec.adapt is not None and spec.adapt[0] == 0
        if not from_zero:  # (an adaptive cluster starts its jobs once tasks wait)
            self._ensure_ready(call, self._target.wait_for_workers)
        key = f"{name}-{next(self._calls)}-{self._token}"
        topic, event_name = f"dagen-progress-{key}", f"dagen-cancel-{key}"
        received = [0]

        def report(event: tuple[float, Any]) -> None:
            received[0] += 1
            call.reports.put(_state_from_plain(event[1]))

        self._client.subscribe_topic(topic, report)
        spooled = call.arena is not None
        if call.arena is not None:  # its large arrays: references to files in the spool
            payload = call.arena.dumps((args, kwargs))
        else:
            payload = pickle.dumps((args, kwargs), protocol=5)
        del args, kwargs
        future = self._client.submit(
            run_call, self._module, self._file, name, progress_param, payload, spooled,
            caller(), event_name, topic, call.deadline(), key=key, pure=False,
        )
        event = Event(event_name, client=self._client)
        alone_since = time.monotonic()  # (adaptive from zero: since there was no worker)
        # Waited for here, not with future.result(timeout=...): a timeout that ends while
        # a large result is being gathered breaks distributed's sync ("UnboundLocalError:
        # ... 'result'"), so the result is fetched once the task is done, without one.
        finished = threading.Event()
        future.add_done_callback(lambda _: finished.set())
        try:
            while True:
                if call.is_cancelled():
                    event.set()
                    self._stop(future, key, call)
                    raise Cancelled(call.reason)
                if finished.wait(_POLL):
                    result, reports = future.result()
                else:
                    if from_zero and not self._ready:
                        if self._client.nthreads():
                            self._ensure_ready(call, 0.0)
                        elif time.monotonic() - alone_since > self._target.wait_for_workers:
                            self._client.cancel(future, force=True)
                            self._ensure_ready(call, 0.0)  # raises ClusterUnavailable
                    continue
                # reports travel apart from the result: wait for those still on their way
                until = time.monotonic() + _LATE_REPORTS
                while received[0] < reports and time.monotonic() < until:
                    time.sleep(0.01)
                return result
        finally:
            self._client.unsubscribe_topic(topic)
            if event.is_set():
                event.clear()  # and the scheduler forgets it
            future.release()

    def _stop(self, future: Any, key: str, call: CallState) -> None:
        """Give a cancelled function ``_GRACE`` s to notice; then restart its worker."""
        until = time.monotonic() + _GRACE
        while not future.done() and time.monotonic() < until:
            time.sleep(_POLL)
        if future.done():
            return
        worker = next((w for w, keys in self._client.processing().items() if key in keys), None)
        if worker is None:  # still waiting for a worker: cancelling it is enough
            self._client.cancel(future, force=True)
            return
        threads = self._client.nthreads().get(worker, 0)
        if threads != 1:
            log.warning("%s was cancelled but goes on: its worker %s runs %d tasks at once, so "
                        "it is not restarted (one thread per worker lets dagen stop such calls)",
                        key, worker, threads)
            self._client.cancel(future, force=True)
            return
        log.info("%s did not stop within %.0f s of its cancellation: restarting worker %s",
                 key, _GRACE, worker)
        # forgotten first, or the scheduler would run it again on the next worker
        self._client.cancel(future, force=True)
        try:  # the worker's process ends at once; its nanny starts a new one
            self._client.run(end_worker_process, workers=[worker], on_error="return")
        except Exception as e:  # noqa: BLE001 - it may end before it answers
            log.debug("worker %s ended: %s", worker, e)

    # -- the cluster ------------------------------------------------------------------------

    def _ensure_ready(self, call: CallState | None, timeout: float) -> None:
        until = time.monotonic() + timeout
        while not self._client.nthreads():
            if call is not None and call.is_cancelled():
                raise Cancelled(call.reason)
            if self._closed:
                raise Cancelled("the server is stopping")
            if time.monotonic() >= until:
                raise ClusterUnavailable(
                    f"no dask worker joined {self._target.describe()} within {timeout:g} s, so "
                    "the call cannot run: check that the cluster's jobs start (squeue, qstat, "
                    "their logs) or raise wait_for_workers"
                )
            time.sleep(_POLL)
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            answers = self._client.run(check_import, self._module, self._file)
            failed = {w: e for w, e in answers.items() if e}
            if failed:
                worker, error = next(iter(failed.items()))
                raise ClusterUnavailable(
                    f"the served module {self._module!r} cannot be imported on the dask "
                    f"worker {worker} ({error}): the workers need the module and its "
                    "dependencies (a shared environment through job_script_prologue, the "
                    "module's folder on a shared file system), or 'upload: true' in the "
                    "cluster file for a module that is one file"
                )
            self._ready = True

    def unready(self) -> str | None:
        if self._closed:
            return "the executor is shut down"
        try:
            if not self._client.nthreads():
                return f"no dask worker in {self._target.describe()}"
        except Exception as e:  # noqa: BLE001 - the scheduler went away, or cannot answer
            return f"the dask scheduler does not answer: {e}"
        return None

    def shutdown(self) -> None:
        self._closed = True
        self._drivers.shutdown(wait=False, cancel_futures=True)
        try:
            self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()
            if self._target.spool is not None:  # calls still in the spool as the server stops
                for folder in Path(self._target.spool).glob(f"dagen-{self._token}-*"):
                    shutil.rmtree(folder, ignore_errors=True)


# -- the worker's side ----------------------------------------------------------------------------


def end_worker_process() -> None:
    """Run on a worker (in its event loop, which a running task does not block): end its
    process now. Its nanny starts a new worker, as after any crash."""
    os._exit(1)


def check_import(name: str, file: str | None) -> str:
    """Run on every worker: "" when the served module imports there, else why not."""
    try:
        import_served(name, file)
    except BaseException as e:  # noqa: BLE001 - reported to the server
        return f"{type(e).__name__}: {e}"
    return ""


class _EventCheck:
    """``dagen.cancelled()`` on a worker: the call's Event, asked at most every 0.25 s."""

    def __init__(self, name: str) -> None:
        from distributed import Event

        self._event = Event(name)
        self._next = 0.0
        self._set = False

    def __call__(self) -> bool:
        if not self._set and time.monotonic() >= self._next:
            self._next = time.monotonic() + _CHECK_EVERY
            self._set = bool(self._event.is_set())
        return self._set


def run_call(
    module_name: str,
    file: str | None,
    fn_name: str,
    progress_param: str | None,
    payload: bytes,
    spooled: bool,
    identity: Any,
    event_name: str,
    topic: str,
    deadline: float | None = None,
) -> tuple[Any, int]:
    """One call, as a task on a worker: its result and the number of reports it sent.
    ``spooled``: the payload refers to the call's arrays in files of the spool."""
    from distributed import get_worker

    module = import_served(module_name, file)
    if spooled:
        args, kwargs = load_spooled(payload)
    else:
        args, kwargs = pickle.loads(payload)  # noqa: S301 - our own server's bytes
    del payload
    check = _EventCheck(event_name)
    worker = get_worker()
    sent = [0]

    def send(state: ProgressState) -> None:
        sent[0] += 1
        worker.log_event(topic, _state_to_plain(state))

    if progress_param is not None:
        kwargs[progress_param] = Progress(send, cancelled=check)
    token = set_caller(identity)
    try:
        with cancellation_scope(check, deadline_clock(deadline)):
            result = served_function(module, fn_name)(*args, **kwargs)
    finally:
        reset_caller(token)
    return result, sent[0]


def _state_to_plain(state: ProgressState) -> dict[str, Any]:
    return {"fraction": state.fraction, "message": state.message,
            "steps": [[s.name, s.done, s.total] for s in state.steps]}


def _state_from_plain(plain: dict[str, Any]) -> ProgressState:
    return ProgressState(plain["fraction"], plain["message"],
                         tuple(ProgressStep(n, d, t) for n, d, t in plain["steps"]))
