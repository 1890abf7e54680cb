"""Executors are picked by name, and each says what the server needs to know about it."""

from __future__ import annotations

import types

import pytest
from conftest import SERVICES

from dagen._executors import EXECUTORS, Executor, executor_class, make_executor
from dagen._introspect import introspect_module, load_module


def test_every_registered_executor_is_found_by_its_name() -> None:
    assert EXECUTORS[0] == "thread"  # the default comes first
    assert set(EXECUTORS) >= {"thread", "process"}
    for name in EXECUTORS:
        cls = executor_class(name)
        assert issubclass(cls, Executor)
        assert cls.name == name


def test_an_unknown_executor_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(ValueError, match=r"unknown executor 'slurm': expected one of thread, process, dask"):
        executor_class("slurm")


def test_what_differs_between_executors_is_on_the_executor() -> None:
    module = types.ModuleType("empty_service")
    thread = make_executor("thread", module, 2)
    try:
        assert thread.inline_slots is not None  # unary calls may run in grpc's thread
        assert thread.arena() is None  # arrays stay in ordinary memory
        assert "dagen.cancelled()" in thread.after_cancel(None)
    finally:
        thread.shutdown()
    process = executor_class("process")
    assert process.inline_slots is None
    functions = introspect_module(load_module(str(SERVICES / "stream_service.py"))).rpcs
    generators = [fn for fn in functions if fn.generator]
    assert generators
    for fn in generators:
        assert process.refuses(fn) == "class methods and generators run only with --executor thread"
        assert executor_class("thread").refuses(fn) is None
