"""Limits of `dagen serve`: calls in progress, calls per identity, memory held by
received arrays, and the sizes a caller may declare -- each refused at once with
RESOURCE_EXHAUSTED naming the limit and its value, before anything is allocated."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from guarded import SERVICE, MiB, raw_channel, serve, wait_until

import dagen
from dagen._security import Admission, CallLimits
from dagen._wire import LimitExceeded
from dagen.v1 import array_pb2


@pytest.fixture(scope="module")
def limited(certs, tmp_path_factory, guarded_build):
    served = serve("--certs", str(certs.folder), "--max-calls", "3",
                   "--max-calls-per-identity", "2", "--max-array-bytes", "1MiB",
                   "--workers", "4", tmp=tmp_path_factory.mktemp("limited"))
    yield served
    served.stop()


def client(module, served, certs, who: str):
    return module.Client(served.target, certs=certs.folder, identity=who, timeout=30)


def sleeping(served, n: int) -> bool:
    """Wait until ``n`` calls of sleep() have started on ``served``, ever."""
    return wait_until(lambda: served.records().count("sleep") >= n, 15)


def background(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    return thread


def test_calls_in_progress_are_limited_per_identity_and_in_all(
    limited, guarded_client_module, certs
):
    with client(guarded_client_module, limited, certs, "alice") as alice, \
         client(guarded_client_module, limited, certs, "bob") as bob:
        assert alice.add(0, 0) == 0 and bob.add(0, 0) == 0  # connected
        before = limited.records().count("sleep")
        running = [background(alice.sleep, 1.5), background(alice.sleep, 1.5)]
        assert sleeping(limited, before + 2)
        started = time.perf_counter()
        with pytest.raises(dagen.CallError) as refused:
            alice.add(1, 1)
        assert time.perf_counter() - started < 1.0  # refused at once, not queued
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("alice has 2 calls in progress, the limit per identity "
                "(max_calls_per_identity=2)") in str(refused.value)
        print(refused.value)
        assert bob.add(2, 2) == 4  # another identity gets in
        running.append(background(bob.sleep, 1.0))
        assert sleeping(limited, before + 3)
        with pytest.raises(dagen.CallError) as full:
            bob.add(3, 3)
        assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the server has 3 calls in progress, its limit (max_calls=3)" in str(full.value)
        print(full.value)
        for thread in running:
            thread.join(15)
        assert alice.add(1, 1) == 2 and bob.add(3, 3) == 6  # the limits are given back
    assert "max_calls_per_identity=2" in limited.logged()


def test_declared_sizes_over_the_limit_are_refused_naming_it(
    limited, guarded_client_module, certs
):
    with client(guarded_client_module, limited, certs, "alice") as alice:
        with pytest.raises(dagen.CallError) as refused:
            alice.total(np.ones(MiB // 8 + 1))
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1048584 bytes exceed max_array_bytes=1048576" in str(refused.value)
        assert alice.total(np.ones(MiB // 8)) == MiB // 8


def test_memory_held_by_calls_in_progress_is_limited(certs, tmp_path, guarded_client_module):
    """One call holds 32 MiB of a 48 MiB budget while it uploads: a second call that
    would need 24 MiB more is refused naming max_memory; once the first ends, it fits."""
    served = serve("--certs", str(certs.folder), "--max-memory", "48MiB", tmp=tmp_path)
    release = threading.Event()
    try:
        sys_pb2 = guarded_client_module.Client.__dagen_spec__.pb2
        header = array_pb2.NDArray(id=1, dtype="|u1", shape=[32 * MiB], nbytes=32 * MiB)

        def frames():
            yield sys_pb2.TotalInput(request=sys_pb2.TotalRequest(a=header)).SerializeToString()
            release.wait(30)  # holds its buffer, sends nothing

        def refusal(alice) -> dagen.CallError | None:
            """The refusal of a 24 MiB call, or None if it ran."""
            try:
                alice.total(np.ones(3 * MiB))
            except dagen.CallError as e:
                return e
            return None

        with raw_channel(served.target, certs.folder, "bob") as channel:
            holding = channel.stream_stream(SERVICE + "Total")(frames(), timeout=60)
            with client(guarded_client_module, served, certs, "alice") as alice:
                # until the server has read the header of the holding call, a call fits
                refused: list[dagen.CallError | None] = []
                assert wait_until(lambda: refused.append(refusal(alice)) or refused[-1], 15)
                assert refused[-1].code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert served.records().count("total ") == len(refused) - 1
                message = str(refused[-1])
                print(message)
                assert "25165824 bytes would take the arrays held by calls in progress to " \
                       "58720256 bytes, over max_memory=50331648 (48 MiB)" in message
                holding.cancel()
                release.set()
                assert wait_until(lambda: refusal(alice) is None, 15)  # the budget is back
                assert served.records()[-1] == "total "
    finally:
        release.set()
        served.stop()


def test_admission_gives_everything_back():
    admission = Admission(CallLimits(max_calls=2, max_calls_per_identity=1, max_memory=100))
    leave = admission.enter("a")
    with pytest.raises(LimitExceeded, match="max_calls_per_identity=1"):
        admission.enter("a")
    leave2 = admission.enter("b")
    with pytest.raises(LimitExceeded, match="max_calls=2"):
        admission.enter("c")
    leave()
    leave()  # idempotent
    leave2()
    assert admission.calls == 0 and admission.by_identity == {}

    class Context:
        callbacks: list = []

        def add_callback(self, fn):
            self.callbacks.append(fn)
            return True

    context = Context()
    alloc = admission.alloc(context)
    assert alloc(60).nbytes == 60
    with pytest.raises(LimitExceeded, match="max_memory=100"):
        alloc(41)
    assert admission.memory == 60
    for callback in context.callbacks:
        callback()
    assert admission.memory == 0


def test_bookkeeping_is_charged_beside_the_reserve_not_from_it():
    """The map of a first array's received elements is charged on its own: the reserve
    stays whole for the arrays still to be allocated, which are then not charged again."""

    class Context:
        def add_callback(self, fn):
            return True

    admission = Admission(CallLimits(max_memory=10**9))
    alloc = admission.alloc(Context())
    alloc.reserve(2000)  # two arrays of 1000 bytes announced by their headers
    alloc(1000)
    alloc.bookkeeping(100)
    alloc(1000)
    assert admission.memory == 2100


@pytest.mark.parametrize("args, message", [
    (["--max-memory", "12XB"], "is not a size like"),
    (["--max-calls", "0"], "0 is not in the range"),
])
def test_bad_limit_options_are_usage_errors(args, message):
    import subprocess

    from conftest import DAGEN
    from guarded import GUARDED

    done = subprocess.run([*DAGEN, "serve", str(GUARDED), "--insecure", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_callers_are_named_only_once_their_limit_is_in_reach():
    lookups = []

    def who(name):
        def lookup():
            lookups.append(name)
            return name
        return lookup

    admission = Admission(CallLimits(max_calls=10, max_calls_per_identity=2, max_memory=100))
    first, second = admission.enter(who("a")), admission.enter(who("b"))
    assert lookups == []  # two calls in progress cannot make any identity exceed 2
    with pytest.raises(LimitExceeded):
        admission.enter(who("a")) and admission.enter(who("a"))
    assert sorted(lookups) == ["a", "a", "a", "b"]  # now every call in progress is named
    assert admission.by_identity == {"a": 2, "b": 1}
    first()
    second()
    assert admission.calls == 1 and admission.by_identity == {"a": 1}


def test_a_caller_that_cannot_be_named_leaves_the_counts_right():
    admission = Admission(CallLimits(max_calls=10, max_calls_per_identity=1, max_memory=100))

    def broken():
        raise RuntimeError("no auth context")

    leave = admission.enter(broken)  # below the limit: not named, admitted
    with pytest.raises(RuntimeError):
        admission.enter("b")  # naming the calls in progress fails
    leave()
    assert admission.calls == 0 and admission.by_identity == {}


def test_a_flood_of_calls_on_one_connection_is_refused_and_others_are_served(
    certs, tmp_path, guarded_client_module
):
    """More calls at once than the server has threads (2 + 8): what the guard does not
    admit is refused with RESOURCE_EXHAUSTED (those beyond the threads as soon as a
    thread is free), none waits for its deadline or sees a broken connection, and
    another caller gets in meanwhile. (grpc's maximum_concurrent_rpcs, which the server
    no longer sets, would pass this too; HTTP/2's max_concurrent_streams would not.)"""
    served = serve("--certs", str(certs.folder), "--max-calls", "2",
                   "--max-calls-per-identity", "1", "--workers", "2", tmp=tmp_path)
    outcomes: list[str] = []
    try:
        with client(guarded_client_module, served, certs, "alice") as alice, \
             client(guarded_client_module, served, certs, "bob") as bob:
            assert alice.add(0, 0) == 0 and bob.add(0, 0) == 0  # connected

            def call() -> None:
                try:
                    alice.sleep(1.0)
                    outcomes.append("ran")
                except Exception as e:  # noqa: BLE001 - each outcome is recorded
                    outcomes.append(getattr(getattr(e, "code", None), "name", repr(e)))

            started = time.perf_counter()
            flood = [background(call) for _ in range(24)]
            assert sleeping(served, 1)  # the flood is on
            assert bob.add(2, 2) == 4  # the other identity's slot is free
            for thread in flood:
                thread.join(30)
            elapsed = time.perf_counter() - started
    finally:
        served.stop()
    assert sorted(set(outcomes)) == ["RESOURCE_EXHAUSTED", "ran"], outcomes
    assert len(outcomes) == 24 and 1 <= outcomes.count("ran") <= 3
    assert elapsed < 10  # refused as threads free, not at the 30 s deadline
