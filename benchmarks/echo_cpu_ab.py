"""Small echoes and tiny calls of dagen, raw grpcio and Arrow Flight, in alternating
blocks of one run: the median wall time and the CPU time per call of the client (this
process) and of the server (its process and children, from /proc), which the load of a
shared machine disturbs less than wall times.

    python benchmarks/echo_cpu_ab.py [--rounds 3] [--calls 1000] [--sizes 8KiB,1MiB]
        [--systems dagen,grpc,flight] [--pin]

Run it with PYTHONPATH pointing at another dagen source (``git archive COMMIT src codegen
protos | tar -x -C DIR``) to compare two versions; ``DAGEN_INLINE_BYTES`` sets the inline
cut-off of dagen's client and server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Processes, make_certs, parse_size  # noqa: E402
from common import cpu_seconds as process_cpu_seconds  # noqa: E402
from run import payload, running  # noqa: E402
from tiny_ab import block, pin_apart  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (every thread they ran, ended ones too:
    a sum over the threads alive now went backwards when a server's threads ended)."""
    total = 0.0
    for pid in pids:
        try:
            total += process_cpu_seconds(pid)
        except OSError:  # a worker process that ended
            continue
    return total


def server_pids(system: Any) -> list[int]:
    import psutil

    pids = []
    for pid in system.server_pids:
        pids.append(pid)
        try:
            pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            pass
    return pids


def measure(system: Any, call: Any, n: int) -> tuple[float, float, float]:
    """Median µs of ``n`` calls, and client and server CPU µs per call."""
    pids = server_pids(system)
    c0, s0 = time.process_time(), cpu_seconds(pids)
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    client = (time.process_time() - c0) / n * 1e6
    server = (cpu_seconds(pids) - s0) / n * 1e6
    return statistics.median(times) / 1e3, client, server


def report(what: str, results: dict[str, list[tuple[float, float, float]]]) -> None:
    first = next(iter(results))
    ref = statistics.median(r[0] for r in results[first])
    for name, rows in results.items():
        med = statistics.median(r[0] for r in rows)
        client = statistics.median(r[1] for r in rows)
        server = statistics.median(r[2] for r in rows)
        print(f"{what:10s} {name:8s} median {med:8.0f} µs ({med / ref:.2f}x {first}), "
              f"CPU client {client:6.0f} + server {server:6.0f} µs", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--sizes", default="8KiB,1MiB")
    p.add_argument("--systems", default="dagen,grpc,flight")
    p.add_argument("--no-tiny", action="store_true")
    p.add_argument("--pin", action="store_true", help="this process on CPU 0, servers on CPU 1")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dagen-echo-ab-"))
    procs = Processes(work)
    certs = make_certs(work / "certs")
    with running(args.systems.split(","), certs, work, procs) as systems:
        if args.pin:
            pin_apart(systems)
        for size in (parse_size(x) for x in args.sizes.split(",")):
            da = payload(size)
            n = max(20, min(args.calls, args.calls * 8192 // size * 8))
            results: dict[str, list[tuple[float, float, float]]] = {s.name: [] for s in systems}
            for _ in range(args.rounds):
                for s in systems:
                    for _ in range(10):
                        s.echo(da)
                    results[s.name].append(measure(s, lambda s=s, da=da: s.echo(da), n))
            report(f"{size >> 10} KiB", results)
        if not args.no_tiny:
            results = {s.name: [] for s in systems}
            for _ in range(args.rounds):
                for s in systems:
                    block(s, 50)
                    results[s.name].append(measure(s, lambda s=s: s.add(1, 2), args.calls))
            report("tiny", results)


if __name__ == "__main__":
    main()
