"""The server's handler thread pool (dagen._threads.LastIdlePool)."""

from __future__ import annotations

import threading
import time

import pytest
from guarded import wait_until

from dagen._threads import LastIdlePool


def test_sequential_calls_run_on_the_thread_that_went_idle_last(monkeypatch):
    import dagen._threads as threads_module

    monkeypatch.setattr(threads_module, "LONG_CALL_SECONDS", 10.0)  # no call counts as long
    pool = LastIdlePool(8, thread_name_prefix="test-last")
    try:
        names = [pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(50)]
        assert len(set(names)) == 1, names  # one warm thread, not eight taking turns
        # with two calls at once, two threads; after that the last one idle is reused
        gate = threading.Event()
        slow = pool.submit(gate.wait, 5)
        other = pool.submit(lambda: threading.current_thread().name).result(5)
        assert len({t.name for t in threading.enumerate() if t.name.startswith("test-last")}) == 2
        gate.set()
        slow.result(5)
        assert wait_until(lambda: len(pool._idle) == 2, 5)  # the slow call's thread went idle last
        after = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(20)}
        assert after == {names[0]}, (after, other)
    finally:
        pool.shutdown()


def test_it_grows_to_max_workers_and_queues_the_rest_in_order():
    pool = LastIdlePool(3, thread_name_prefix="test-grow")
    gate = threading.Event()
    running = []
    lock = threading.Lock()

    def job(k: int) -> int:
        with lock:
            running.append(k)
        gate.wait(5)
        return k

    try:
        futures = [pool.submit(job, k) for k in range(7)]
        assert wait_until(lambda: len(running) == 3, 5)
        assert len(pool._backlog) == 4  # three threads at most; the rest wait
        assert sorted(running) == [0, 1, 2]
        gate.set()
        assert [f.result(5) for f in futures] == list(range(7))
        assert running[3:] == [3, 4, 5, 6]  # waiting calls ran in the order they came
        assert len({t.name for t in threading.enumerate() if t.name.startswith("test-grow")}) == 3
    finally:
        pool.shutdown()


def test_errors_reach_the_future_and_the_thread_goes_on():
    pool = LastIdlePool(1)
    try:
        failed = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(5)
        assert pool.submit(lambda: 42).result(5) == 42
    finally:
        pool.shutdown()


def test_shutdown_ends_its_threads_and_refuses_new_work():
    pool = LastIdlePool(4, thread_name_prefix="test-shutdown")
    gate = threading.Event()
    busy = [pool.submit(gate.wait, 5) for _ in range(4)]
    queued = pool.submit(lambda: "late")
    threads = [t for t in threading.enumerate() if t.name.startswith("test-shutdown")]
    assert len(threads) == 4
    gate.set()
    pool.shutdown(wait=True)
    assert queued.result(1) == "late"  # work accepted before shutdown still runs
    assert all(f.done() for f in busy)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_shutdown_can_cancel_what_waits():
    pool = LastIdlePool(1)
    gate = threading.Event()
    busy = pool.submit(gate.wait, 5)
    waiting = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert busy.result(5) is True
    assert waiting.cancelled()


def test_a_thread_back_from_a_long_call_goes_to_the_back_of_the_line(monkeypatch):
    import dagen._threads as threads_module

    monkeypatch.setattr(threads_module, "LONG_CALL_SECONDS", 0.05)  # the call below takes 0.1 s
    pool = LastIdlePool(4, thread_name_prefix="test-long")
    try:
        name = lambda: threading.current_thread().name  # noqa: E731
        short = pool.submit(name).result(5)
        gate = threading.Event()
        long_call = pool.submit(lambda: (gate.wait(5), time.sleep(0.1), name())[2])
        other = pool.submit(name).result(5)  # the first thread is busy: a second one
        assert other != short
        gate.set()
        long_thread = long_call.result(5)
        assert wait_until(lambda: len(pool._idle) == 2, 5)  # both idle again
        # the thread of the long call went idle last, but a short call's thread is next
        assert pool.submit(name).result(5) != long_thread
    finally:
        pool.shutdown()
