"""Several calls at once: dagen.submit gives a concurrent.futures.Future, dagen.acall an
awaitable; results, errors, progress, timeouts as for a blocking call, and cancelling
either cancels the rpc and the server's work. Real server, real TLS."""

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path

import pytest
from guarded import wait_until

import dagen


@pytest.fixture(scope="module")
def remote(progress_client_module, progress_server, certs):
    with progress_client_module.Client(progress_server.target, certs=certs.folder, identity="alice",
                                       timeout=60) as client:
        yield client


def test_submit_gives_a_future_of_the_result_or_the_error(remote):
    future = dagen.submit(remote.add, 2, b=3)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(10) == 5
    failed = dagen.submit(remote.refuse, "value")
    assert isinstance(failed.exception(10), ValueError) and "bad value" in str(failed.exception())
    with pytest.raises(TypeError, match="remote.anomaly"):
        dagen.submit("add", 1, 2)


def test_progress_and_timeouts_are_those_where_it_was_submitted(remote, tmp_path):
    reports = []
    with dagen.call_options(on_progress=reports.append):
        future = dagen.submit(remote.count, 5)
    assert future.result(10) == 5
    assert [r.message for r in reports] == [f"step {i} of 5" for i in range(1, 6)]
    with dagen.call_options(timeout=0.5):
        late = dagen.submit(remote.patient, 30.0, str(tmp_path / "late"))
    error = late.exception(10)
    assert isinstance(error, TimeoutError) and "patient()" in str(error), error


@pytest.mark.parametrize("fn", ["patient", "cooperative"])  # a unary rpc; a streaming one
def test_cancelling_a_running_future_stops_the_work_on_the_server(remote, tmp_path, fn):
    marker = tmp_path / fn
    future = dagen.submit(getattr(remote, fn), 60.0, str(marker))
    assert wait_until(Path(f"{marker}.started").exists, 10)
    assert future.running()
    done = []
    future.add_done_callback(done.append)
    assert future.cancel() and future.cancelled() and done == [future]
    cancelled_at = time.time()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()
    stopped = Path(f"{marker}.stopped")
    assert wait_until(stopped.exists, 10), "the function on the server never stopped"
    latency = float(stopped.read_text()) - cancelled_at
    print(f"\nfuture.cancel() -> {fn}() stopped on the server: {latency:.3f} s")
    assert latency < 1.0
    assert not future.cancel() or future.cancelled()  # cancelling again changes nothing
    assert remote.add(1, 1) == 2


def test_ten_calls_at_once_take_about_as_long_as_the_slowest(remote, tmp_path):
    remote.add(0, 0)  # the channel is up
    started = time.perf_counter()
    futures = [dagen.submit(remote.patient, 1.0, str(tmp_path / f"p{i}")) for i in range(10)]
    done, _ = concurrent.futures.wait(futures, timeout=30)
    elapsed = time.perf_counter() - started
    assert len(done) == 10 and all(f.result() == 1.0 for f in futures)
    print(f"\nten 1.0 s calls submitted at once (server --workers 12): all done in {elapsed:.2f} s")
    assert elapsed < 2.0, elapsed


def test_acall_awaits_results_errors_and_timeouts(remote, tmp_path):
    async def main():
        results = await asyncio.gather(*(dagen.acall(remote.add, i, i) for i in range(5)))
        with pytest.raises(ValueError, match="bad value"):
            await dagen.acall(remote.refuse, "value")
        with dagen.call_options(timeout=0.5), pytest.raises(TimeoutError):
            await dagen.acall(remote.patient, 30.0, str(tmp_path / "late"))
        return results

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert asyncio.run(main()) == [0, 2, 4, 6, 8]  # another loop, the same client


def test_cancelling_the_awaiting_task_stops_the_work_on_the_server(remote, tmp_path):
    marker = tmp_path / "task"

    async def main():
        task = asyncio.ensure_future(dagen.acall(remote.patient, 60.0, str(marker)))
        while not Path(f"{marker}.started").exists():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.time()

    cancelled_at = asyncio.run(main())
    stopped = Path(f"{marker}.stopped")
    assert wait_until(stopped.exists, 10), "the function on the server never stopped"
    assert float(stopped.read_text()) - cancelled_at < 1.0


def test_event_loops_in_several_threads_share_the_client(remote):
    results: dict[int, list[int]] = {}

    def in_own_loop(k):
        async def main():
            return await asyncio.gather(*(dagen.acall(remote.add, k, i) for i in range(5)))
        results[k] = asyncio.run(main())

    threads = [threading.Thread(target=in_own_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: [k + i for i in range(5)] for k in range(4)}
