"""The worker process's side of the process executor: load the served module, then
run the calls the server sends through the pipe until told to stop.

Messages, server to worker: ``("call", function, progress parameter, arena name,
arena roots, payload, caller, deadline)`` (a ``time.time()``, or None) and ``("stop",)``; worker to server: ``("ready",
pid)`` or ``("failed", traceback)`` once, then per call any number of ``("progress",
state)`` and one ``("result", payload)`` or ``("error", *describe_exception(e))``
(the exception pickled, and described as a ``dagen.v1.RemoteError``).
Arrays do not go through the pipe: see :mod:`dagen._executors._shm`.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

from .._errors import instantiate, remote_error_details
from .._progress import Progress, deadline_clock, set_time_remaining
from .._security import set_caller
from ..v1 import errors_pb2
from ._base import served_function
from ._shm import Arena

# -- errors across the pipe ---------------------------------------------------------------------------


def describe_exception(exc: BaseException) -> tuple[bytes | None, bytes]:
    """The exception pickled (when it survives pickling) and described as a
    ``dagen.v1.RemoteError`` with its traceback, for :func:`rebuild_exception`."""
    pickled: bytes | None = None
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)  # noqa: S301 - our own worker's bytes
        pickled = data
    except Exception:  # noqa: BLE001 - an exception that does not survive pickling: described
        pass
    return pickled, remote_error_details(exc, "", debug=True).SerializeToString()


def _loaded_class(module: str, qualname: str) -> type[BaseException] | None:
    """The exception class ``module.qualname`` if the server has that module loaded
    (builtins, the served module): looked up, never imported."""
    obj: Any = sys.modules.get(module)
    for attr in qualname.split("."):
        obj = getattr(obj, attr, None)
    return obj if isinstance(obj, type) and issubclass(obj, Exception) else None


def rebuild_exception(pickled: bytes | None, described: bytes) -> BaseException:
    """The worker's exception in the server: unpickled, else of the same class (or of
    a stand-in with the same name and nearest built-in base) with the same arguments."""
    details = errors_pb2.RemoteError.FromString(described)
    exc: BaseException | None = None
    if pickled is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(pickled)  # noqa: S301 - our own worker's bytes
    if exc is None:
        cls = _loaded_class(details.module, details.type)
        if cls is None:
            base = next(
                filter(None, (_loaded_class(*b.rsplit(".", 1)) for b in details.bases
                              if b.startswith("builtins."))),
                Exception,
            )
            cls = type(details.type.rsplit(".", 1)[-1], (base,), {})
            cls.__qualname__, cls.__module__ = details.type, details.module
        exc = instantiate(cls, details)
    exc.add_note(f"Traceback in the worker process:\n{details.traceback.rstrip()}")
    return exc


# -- the worker process --------------------------------------------------------------------------------


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


def import_served(name: str, file: str | None) -> types.ModuleType:
    """The served module where a call runs (a worker process, a dask worker): by name,
    else from the folder of its file (the server's, or a shared file system)."""
    import importlib
    from pathlib import Path

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if not file or not Path(file).is_file() or e.name != name:
            raise
    folder = str(Path(file).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def worker_main(
    conn: multiprocessing.connection.Connection, name: str, file: str | None, server_pid: int
) -> None:
    """A worker process: load the module, then run calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at the server is the server's to handle
    _die_with(server_pid)
    try:
        module = import_served(name, file)
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
        _, fn_name, progress_param, arena_name, roots, payload, identity, deadline = message
        set_caller(identity)
        set_time_remaining(deadline_clock(deadline))
        arena = Arena(arena_name, [Path(r) for r in roots], prefix="r")
        try:
            args, kwargs = arena.loads(payload)
            if progress_param is not None:
                kwargs[progress_param] = Progress(lambda state: send(("progress", state)))
            result = served_function(module, fn_name)(*args, **kwargs)
            del args, kwargs
            data = arena.dumps(result)
            del result
            send(("result", data))
        except BaseException as e:  # noqa: BLE001 - the caller gets it, the worker goes on
            send(("error", *describe_exception(e)))
        finally:
            arena = None  # type: ignore[assignment]
