"""Load: 50 concurrent clients x 200 small calls, and at the same time 8 concurrent
64 MiB round trips, against one `dagen serve` over mutual TLS on 127.0.0.1. Zero
errors, every result checked, latency percentiles and the server's memory printed;
the server's peak RSS stays within its memory limit (--max-memory) and a margin.

Scaled to finish in about half a minute on two cores. Reproduce the figures with
``.venv/bin/python -m pytest tests/test_load.py -s``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from guarded import MiB, serve

from dagen._security import init_ca, issue_client, issue_server

CLIENTS, CALLS = 50, 200
TRANSFERS, TRANSFER_BYTES = 8, 64 * MiB
IDENTITIES = 5  # the small calls come from 5 identities, 10 clients each
MAX_MEMORY = 640 * MiB  # room for the 8 uploads (512 MiB) at once
# per transfer in progress: chunks in flight both ways, in grpc's and TLS's buffers
MARGIN = TRANSFERS * 32 * MiB + 64 * MiB


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load-certs")
    init_ca(folder)
    issue_server(folder, hosts=["localhost"], ips=["127.0.0.1"])
    for i in range(IDENTITIES):
        issue_client(folder, f"user{i}")
    issue_client(folder, "bulk")
    return folder


def test_50_clients_and_8_large_transfers_at_once(team, tmp_path, guarded_client_module):
    served = serve("--certs", str(team), "--max-memory", f"{MAX_MEMORY // MiB}MiB",
                   tmp=tmp_path, name="load")
    Client = guarded_client_module.Client
    errors: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + TRANSFERS + 1)
    transfer_seconds: list[float] = []

    def small(i: int) -> None:
        rng = np.random.default_rng(i)
        mine: list[float] = []
        try:
            with Client(served.target, certs=team, identity=f"user{i % IDENTITIES}",
                        timeout=120) as client:
                assert client.add(0, 0) == 0  # connected before the clock starts
                start.wait()
                for a, b in rng.integers(-(2**40), 2**40, size=(CALLS, 2)).tolist():
                    t = time.perf_counter()
                    result = client.add(a, b)
                    mine.append(time.perf_counter() - t)
                    if result != a + b:
                        raise AssertionError(f"add({a}, {b}) returned {result}")
        except BaseException as e:  # noqa: BLE001 - counted and shown below
            with lock:
                errors.append(f"client {i}: {e!r}")
        with lock:
            latencies.extend(mine)

    def large(i: int) -> None:
        data = np.random.default_rng(1000 + i).standard_normal(TRANSFER_BYTES // 8)
        try:
            with Client(served.target, certs=team, identity="bulk", timeout=300) as client:
                assert client.add(0, 0) == 0
                start.wait()
                t = time.perf_counter()
                back = client.echo_array(data)
                elapsed = time.perf_counter() - t
                if not np.array_equal(back, data):
                    raise AssertionError(f"transfer {i} came back different")
            with lock:
                transfer_seconds.append(elapsed)
        except BaseException as e:  # noqa: BLE001 - counted and shown below
            with lock:
                errors.append(f"transfer {i}: {e!r}")

    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], served.rss())
            time.sleep(0.02)

    try:
        time.sleep(0.5)
        baseline = served.rss()
        served.reset_peak()
        threads = [threading.Thread(target=small, args=(i,)) for i in range(CLIENTS)]
        threads += [threading.Thread(target=large, args=(i,)) for i in range(TRANSFERS)]
        for thread in threads:
            thread.start()
        sampler = threading.Thread(target=sample)
        sampler.start()
        start.wait(timeout=120)
        began = time.perf_counter()
        for thread in threads:
            thread.join(timeout=300)
        wall = time.perf_counter() - began
        sampling.set()
        sampler.join()
        time.sleep(1.0)
        after = served.rss()
        hwm = served.peak()
    finally:
        served.stop()

    lat = np.sort(np.array(latencies)) * 1000
    p50, p99, worst = (np.percentile(lat, 50), np.percentile(lat, 99), lat[-1]) if lat.size else (
        float("nan"),) * 3
    moved = 2 * TRANSFERS * TRANSFER_BYTES
    print(
        f"\nload: {CLIENTS} clients x {CALLS} calls + {TRANSFERS} x {TRANSFER_BYTES // MiB} MiB "
        f"round trips in {wall:.1f} s, errors: {len(errors)}\n"
        f"  small calls: {lat.size} done, {lat.size / wall:.0f}/s, "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.1f} ms\n"
        f"  transfers: {len(transfer_seconds)} done, "
        f"{moved / MiB / max(transfer_seconds, default=1):.0f} MiB/s in all, slowest "
        f"{max(transfer_seconds, default=float('nan')):.1f} s\n"
        f"  server RSS: baseline {baseline / MiB:.0f} MiB, peak {max(peak[0], hwm) / MiB:.0f} MiB "
        f"(+{(max(peak[0], hwm) - baseline) / MiB:.0f} MiB; --max-memory "
        f"{MAX_MEMORY // MiB} MiB), after {after / MiB:.0f} MiB"
    )
    assert errors == [], errors[:5]
    assert lat.size == CLIENTS * CALLS
    assert len(transfer_seconds) == TRANSFERS
    assert max(peak[0], hwm) - baseline < MAX_MEMORY + MARGIN
    assert after - baseline < 128 * MiB
