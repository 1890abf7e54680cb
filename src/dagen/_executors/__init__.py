"""Where calls run: executors, a family of interchangeable parts, picked by name.

* ``thread`` (default, :mod:`._thread`): threads of the server process; a cancelled
  function stops when it checks ``dagen.cancelled()``.
* ``process`` (:mod:`._process`, with :mod:`._worker` and :mod:`._shm`): worker
  processes, each terminated at once when its call is cancelled.
* ``dask`` (:mod:`._dask`, configured by :mod:`dagen._cluster`): each call is a task on
  a dask cluster (SLURM, PBS, ... through dask-jobqueue, or a scheduler already running).

Another executor is one new module here, whose class derives from :class:`Executor`
(:mod:`._base`), and one line in ``_REGISTRY``; its module is imported only when a
server picks it, so what it needs is needed only then.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from ._base import (
    CallState,
    Cancelled,
    Executor,
    ReportQueue,
    Slots,
    server_stopping,
    stopped,
    supervise,
)

# name (as --executor takes it) -> the module and the class, imported when picked
_REGISTRY: dict[str, tuple[str, str]] = {
    "thread": ("._thread", "ThreadExecutor"),
    "process": ("._process", "ProcessExecutor"),
    "dask": ("._dask", "DaskExecutor"),
}
EXECUTORS = tuple(_REGISTRY)  # the names, the default first


def executor_class(name: str) -> type[Executor]:
    """The executor called ``name``; a ValueError lists the names there are."""
    try:
        module, cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown executor {name!r}: expected one of {', '.join(EXECUTORS)}"
        ) from None
    found: type[Executor] = getattr(importlib.import_module(module, __name__), cls)
    return found


def make_executor(name: str, module: types.ModuleType, workers: int,
                  config: object = None) -> Executor:
    """The executor called ``name``, running the functions of ``module``, ``workers``
    calls at once; ``config`` is what that executor needs beyond that (for dask: the
    cluster or scheduler, a :class:`dagen._cluster.DaskTarget`)."""
    cls: Any = executor_class(name)  # an executor that needs a config takes it third
    made: Executor = cls(module, workers) if config is None else cls(module, workers, config)
    return made


__all__ = [
    "EXECUTORS",
    "CallState",
    "Cancelled",
    "Executor",
    "ReportQueue",
    "Slots",
    "executor_class",
    "make_executor",
    "server_stopping",
    "stopped",
    "supervise",
]
