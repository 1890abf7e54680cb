#!/usr/bin/env python
"""Many callers making tiny calls (``add(a, b)``) for a fixed time, for the many-callers
table of `make bench` (issue 19).

``hammer`` runs the callers as threads of the calling process (run.py uses it for the
50 threads of one process); run as a script, this file is one client process of the
"4 processes × 12 threads" row: it connects to a server run.py started, warms up,
prints ``ready``, waits for run.py to write the start time (a wall-clock time, shared
by all the client processes) into ``--go``, calls from then for ``--seconds`` and
writes its latencies to ``--out`` (JSON), which run.py merges.

    python benchmarks/many_callers.py --system dagen --address 127.0.0.1:PORT \\
        --certs DIR --work DIR --threads 12 --seconds 5 --go FILE --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WARMUP = 20  # calls per client before the start


def hammer(add: Callable[[int, int], int], threads: int, seconds: float,
           start: Callable[[], float]) -> dict[str, Any]:
    """``threads`` threads, each calling ``add`` back to back for ``seconds`` from the
    time (a time.time()) that ``start()`` returns, called once every thread is ready.
    Returns every call's latency (µs), how many calls, when the calls started and when
    the last caller stopped (time.time()), and the first errors."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    ready = threading.Barrier(threads + 1)
    when = [0.0]

    def caller(k: int) -> None:
        mine = latencies[k]
        ready.wait()  # twice: all threads up; then the start time is known
        ready.wait()
        start_at = when[0]
        time.sleep(max(0.0, start_at - time.time()))
        stop_at = start_at + seconds
        n = 0
        try:
            while time.time() < stop_at:
                t0 = time.perf_counter_ns()
                got = add(k, n)
                mine.append((time.perf_counter_ns() - t0) / 1e3)
                if got != k + n:
                    raise AssertionError(f"add({k}, {n}) returned {got}")
                n += 1
        except Exception as e:  # noqa: BLE001 - recorded, counted as a failure by run.py
            errors.append(f"{type(e).__name__}: {e}")

    workers = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(threads)]
    for t in workers:
        t.start()
    ready.wait()
    when[0] = start()
    ready.wait()
    for t in workers:
        t.join(timeout=seconds + (when[0] - time.time()) + 300)
    merged = [v for mine in latencies for v in mine]
    return {"latencies_us": merged, "calls": len(merged), "start": when[0],
            "end": time.time(), "threads": threads, "errors": errors[:5]}


def soon() -> float:
    """The start time of callers in this process alone: right away."""
    return time.time() + 0.01


def wait_for_go(go: Path) -> float:
    """Say this process is ready, then wait for run.py to write the start time."""
    print("ready", flush=True)
    deadline = time.monotonic() + 300
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no start time from run.py within 300 s")
        time.sleep(0.005)
    return float(go.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--certs", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path, help="run.py's work folder (dagen's build)")
    p.add_argument("--threads", type=int, default=12)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--go", required=True, type=Path,
                   help="file run.py writes the start time to (renamed into place)")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    from systems import SYSTEMS

    system = SYSTEMS[args.system](args.certs, args.work, None)
    system.connect(args.address)
    for i in range(WARMUP):
        system.add(i, 1)
    result = hammer(system.add, args.threads, args.seconds, lambda: wait_for_go(args.go))
    args.out.write_text(json.dumps(result))
    try:
        system.close()
    except Exception:  # noqa: BLE001 - the process exits anyway
        pass


if __name__ == "__main__":
    main()
