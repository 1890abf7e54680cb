"""Stopping: Ctrl-C and deadlines cancel the call on the server, which stops the work --
by terminating the worker process (--executor process), or, under the thread pool,
when the function checks for cancellation. Timings are measured, not assumed."""

import _thread
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import SERVICES, start_server
from guarded import wait_until

import dagen
from dagen._executors._shm import Arena, default_roots

MODULE = SERVICES / "progress_service.py"


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("cancel-logs")


@pytest.fixture(scope="module")
def process_server(certs, logs):
    server = start_server(MODULE, "--certs", str(certs.folder), "--executor", "process",
                          "--workers", "2", log=logs / "process.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def thread_server(certs, logs):
    server = start_server(MODULE, "--certs", str(certs.folder), "--workers", "4",
                          log=logs / "thread.log")
    yield server
    server.stop()


def _client(module, server, certs):
    return module.Client(server.target, certs=certs.folder, identity="alice", timeout=60)


@pytest.fixture(scope="module")
def in_process(progress_client_module, process_server, certs):
    with _client(progress_client_module, process_server, certs) as client:
        yield client


@pytest.fixture(scope="module")
def in_thread(progress_client_module, thread_server, certs):
    with _client(progress_client_module, thread_server, certs) as client:
        yield client


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def press_ctrl_c_when(condition, stamp: dict) -> threading.Thread:
    """Ctrl-C for the main thread (where the call blocks) once ``condition`` holds."""
    # A test run started in the background (`make test &`) inherits SIGINT ignored, and
    # then Python installs no handler and interrupt_main() does nothing: install it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def run():
        assert wait_until(condition, 60), "the call never started"
        time.sleep(0.2)  # well inside the function
        stamp["wall"], stamp["mono"] = time.time(), time.monotonic()
        _thread.interrupt_main()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_terminates_the_worker_of_a_function_that_never_checks(
    in_process, process_server, tmp_path
):
    pidfile = tmp_path / "spin.pid"
    stamp: dict = {}
    helper = press_ctrl_c_when(lambda: pidfile.exists() and pidfile.read_text(), stamp)
    with pytest.raises(KeyboardInterrupt):
        in_process.spin(120.0, str(pidfile))
    helper.join()
    pid = int(pidfile.read_text())
    assert pid != process_server.process.pid  # it ran in a worker process
    wait_until(lambda: not alive(pid), 10)
    latency = time.monotonic() - stamp["mono"]
    print(f"\nCtrl-C -> worker {pid} gone: {latency:.3f} s")
    assert not alive(pid)
    assert latency < 2.0, f"the worker was gone only {latency:.3f} s after Ctrl-C"
    # The server goes on serving, from a new worker.
    assert process_server.process.poll() is None
    assert in_process.add(2, 3) == 5
    assert in_process.whoami() not in (pid, process_server.process.pid)


def test_timeout_raises_timeout_error_and_terminates_the_worker(in_process, tmp_path, logs):
    pidfile = tmp_path / "spin.pid"
    with in_process.__dagen__.options(timeout=1.5), pytest.raises(TimeoutError) as raised:
        in_process.spin(120.0, str(pidfile))
    raised_at = time.monotonic()
    assert "spin()" in str(raised.value) and "1.5 s" in str(raised.value)
    pid = int(pidfile.read_text())
    wait_until(lambda: not alive(pid), 10)
    latency = time.monotonic() - raised_at
    print(f"\ntimeout -> worker {pid} gone: {latency:.3f} s after TimeoutError")
    assert latency < 2.0 and not alive(pid)
    assert wait_until(lambda: "spin() cancelled" in (logs / "process.log").read_text(), 5)
    assert "because its deadline passed" in (logs / "process.log").read_text()
    assert in_process.add(1, 1) == 2


def test_cooperative_function_under_the_thread_pool_stops_within_a_second(in_thread, tmp_path):
    marker = str(tmp_path / "coop")
    stamp: dict = {}
    helper = press_ctrl_c_when(lambda: Path(marker + ".started").exists(), stamp)
    with pytest.raises(KeyboardInterrupt):
        in_thread.cooperative(120.0, marker)
    helper.join()
    stopped = Path(marker + ".stopped")
    assert wait_until(stopped.exists, 10), "the function never stopped"
    latency = float(stopped.read_text()) - stamp["wall"]
    print(f"\nCtrl-C -> cooperative function stopped: {latency:.3f} s")
    assert latency < 1.0, f"the function stopped only {latency:.3f} s after Ctrl-C"
    assert in_thread.add(2, 2) == 4


def test_timed_out_call_leaves_no_work_running(in_thread, tmp_path, logs):
    """patient() is a unary rpc that checks dagen.cancelled(): the server sees the
    deadline and the function stops."""
    marker = str(tmp_path / "patient")
    with in_thread.__dagen__.options(timeout=1.0), pytest.raises(TimeoutError) as raised:
        in_thread.patient(120.0, marker)
    raised_at = time.time()
    assert "patient()" in str(raised.value) and "1.0 s" in str(raised.value)
    stopped = Path(marker + ".stopped")
    assert wait_until(stopped.exists, 10), "the function never stopped"
    latency = float(stopped.read_text()) - raised_at
    print(f"\ntimeout -> cooperative function stopped: {latency:+.3f} s after TimeoutError")
    assert latency < 1.0
    assert wait_until(lambda: "patient() cancelled" in (logs / "thread.log").read_text(), 5)


def test_progress_and_errors_cross_the_worker_process(in_process):
    reports = []
    with in_process.__dagen__.options(on_progress=reports.append):
        assert in_process.count(10) == 10
    assert [r.message for r in reports] == [f"step {i} of 10" for i in range(1, 11)]
    with pytest.raises(ValueError, match="bad value"):
        in_process.refuse("value")
    mirror = sys.modules[type(in_process).__module__].Refused  # the client package's
    with pytest.raises(mirror) as raised:
        in_process.refuse("it")
    assert raised.value.args == ("refused it",)


def test_arrays_reach_the_worker_through_shared_memory(in_process, process_server):
    rng = np.random.default_rng(3)
    da = xr.DataArray(rng.standard_normal((300, 400)), dims=("y", "x"),
                      coords={"y": np.arange(300.0)}, name="t", attrs={"units": "K"})
    doubled, same = in_process.double(da, da)
    xr.testing.assert_identical(doubled, da * 2)
    xr.testing.assert_identical(same, da)
    # The call's files are gone once it has ended.
    prefix = f"dagen-{process_server.process.pid}-"
    roots = default_roots()
    assert wait_until(lambda: not [p for r in roots for p in r.glob(prefix + "*")], 5)


def test_arena_refers_to_arrays_instead_of_copying_them(tmp_path):
    sender = Arena("call", [tmp_path])
    raw = sender.allocate(8 * 200_000)
    big = raw.view("f8").reshape(400, 500)
    big[:] = np.arange(big.size).reshape(big.shape)
    payload = sender.dumps({"view": big[::-2, 10:], "small": np.arange(3), "text": "x"})
    assert len(payload) < 1000  # no array bytes in the pickle
    receiver = Arena("call", [tmp_path], prefix="r")
    got = receiver.loads(payload)
    np.testing.assert_array_equal(got["view"], big[::-2, 10:])
    got["view"][0, 0] = -1.0  # the same memory, not a copy
    assert big[-1, 10] == -1.0
    back = sender.loads(receiver.dumps([got["view"], got["view"] * 2]))
    assert np.shares_memory(back[0], big)  # a view of an argument is referred to
    assert len(list((tmp_path / "call").iterdir())) == 2  # ...the new array was written once
    sender.remove()
    assert not (tmp_path / "call").exists()
    np.testing.assert_array_equal(back[1], big[::-2, 10:] * 2)  # still mapped


def test_a_call_that_waited_for_a_worker_past_its_deadline_never_runs(
    progress_client_module, certs, tmp_path, logs
):
    """With every --workers slot taken, a unary call waits; when its caller has given up
    by the time a slot frees, its function must not start."""
    server = start_server(MODULE, "--certs", str(certs.folder), "--workers", "1",
                          log=logs / "one-worker.log")
    try:
        with _client(progress_client_module, server, certs) as client:
            first, late = str(tmp_path / "first"), str(tmp_path / "late")
            busy = threading.Thread(target=client.patient, args=(1.5, first), daemon=True)
            busy.start()
            assert wait_until(lambda: Path(first + ".started").exists(), 10)
            with client.__dagen__.options(timeout=0.5), pytest.raises(TimeoutError):
                client.patient(5.0, late)
            busy.join(10)
            assert Path(first + ".stopped").exists()  # the slot is free again
            time.sleep(0.5)
            assert not Path(late + ".started").exists(), "the late call ran after all"
            assert client.add(2, 3) == 5  # the server goes on
    finally:
        server.stop()


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_every_cancellation_of_a_tight_reporting_loop_is_logged_once(
    progress_client_module, certs, tmp_path, executor
):
    """The stop races the report being sent: every one of 20 timeouts is logged, once,
    with its reason."""
    log = tmp_path / "server.log"
    server = start_server(MODULE, "--certs", str(certs.folder), "--executor", executor,
                          "--workers", "2", log=log)
    try:
        with _client(progress_client_module, server, certs) as client:
            for _ in range(20):
                with client.__dagen__.options(timeout=0.3), pytest.raises(TimeoutError):
                    client.busy(30.0)

            def lines():
                return [line for line in log.read_text().splitlines() if "busy() cancelled" in line]

            wait_until(lambda: len(lines()) >= 20, 10)
            time.sleep(0.5)  # a second line for a call would come now
            logged = lines()
            print(f"\n{executor}: {len(logged)} of 20 timeouts logged as cancelled")
            assert len(logged) == 20, logged
            assert all("because its deadline passed" in line for line in logged), logged
    finally:
        server.stop()


@pytest.mark.parametrize("where", ["in_thread", "in_process"])
def test_a_function_sees_the_seconds_left_before_its_deadline(where, request):
    client = request.getfixturevalue(where)
    for fn in (client.remaining, client.remaining_reporting):
        with client.__dagen__.options(timeout=30.0):
            left = fn()
        assert 25.0 < left <= 30.5, (fn, left)  # (grpc carries the deadline to ~0.1 s)
        with client.__dagen__.options(timeout=None):
            assert fn() is None  # no timeout, no deadline
    assert dagen.time_remaining() is None  # outside a served call
