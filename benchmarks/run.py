#!/usr/bin/env python
"""dagen side by side with raw grpcio, Arrow Flight and dask.distributed (issue 4).

Every system serves from its own subprocesses on 127.0.0.1 with mutual TLS; this
process is the client. Measured, one system after the other:

1. echo of a float64 xarray.DataArray per payload size: median of --runs timed calls
   after one warm-up call; throughput = 2 × payload / time;
2. extra peak RSS of client and server during the echo at --memory-size (the
   warm-up call of that size, so that no memory kept from an earlier call of the same
   size hides what the call needs), minus each one's RSS before the call;
3. a tiny call (two ints in, one out): p50/p99 over --tiny-calls sequential calls,
   and calls/s with --concurrency callers (threads);
4. paired rounds (--paired-rounds): dagen, raw grpcio and Flight all up, taking turns
   (the order reversed every round), each round one echo at --memory-size and a block
   of tiny calls per system (calls right after a large echo). The bars' throughput
   ratios come from these: measured one after the other, a change in the machine's
   load would pass for a difference between systems;
5. tiny rounds (--tiny-launches, --tiny-rounds): the same systems' servers launched
   afresh --tiny-launches times; each time, after a warm-up, they take turns in
   blocks of tiny calls, --tiny-calls per system in all. The bar's tiny-call ratio
   comes from these: a server's latency varies by tens of µs from one launch to
   the next (where its memory and threads land), as much as the bar's margin, so one
   launch per system would measure the launch as much as the system;
6. small rounds (--small-rounds): 8 KiB and 1 MiB echoes, dagen, grpc, Flight and dask
   up at once taking turns in blocks (issue 19's small-array bars);
7. many callers (--many-rounds, --many-seconds): tiny calls for a fixed time from 50
   threads, and from 4 client processes (many_callers.py) × 12 threads; calls/s, p50,
   p99; dagen's and grpc's servers with the same number of handler threads;
8. relay rounds (--relay-rounds): dagen direct and dagen through `dagen relay` (SSH
   reverse tunnel, routed by SNI; TLS end to end) up at once, taking turns as in 4:
   the relay's echo throughput and tiny-call p50 as ratios to the direct connection's.

Writes benchmarks/results/<timestamp>.json, .md (table and the issue's bars as
ratios) and .png (throughput vs payload, log axes); then exits with status 1 if a
system or a stage failed (a missing package is a skip, not a failure).

    python benchmarks/run.py                 # the full suite (make bench)
    python benchmarks/run.py --quick         # a smoke test: 1 MiB and 8 MiB, 1 run
    python benchmarks/run.py --sizes 1MiB,64MiB --runs 3 --systems dagen,grpc
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lazy_datasets  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from common import (  # noqa: E402
    CHUNK_BYTES,
    PeakRSS,
    Processes,
    available_memory,
    cpu_seconds,
    drop_free_memory,
    fmt_size,
    make_certs,
    parse_size,
)
from many_callers import hammer, soon  # noqa: E402
from report import write_reports  # noqa: E402
from systems import DIRECT, RELAYED, REUSING, SYSTEMS, Skip, System  # noqa: E402

DEFAULT_SIZES = "1MiB,64MiB,1GiB,3GiB"
QUICK_SIZES = "1MiB,8MiB"
SMALL_SIZES = "8KiB,1MiB"
# The many-callers stage: dagen serve's handler threads are max(--workers 8,
# --max-calls + 8); its callers all are "alice", so the per-identity limit (32 by
# default) is raised to --max-calls (64) to admit 50 callers at once, as a user with
# that many would. Raw grpcio's server gets the same number of threads.
MANY_MAX_CALLS = 64
MANY_SERVER_THREADS = MANY_MAX_CALLS + 8
MANY_SERVER_ARGS = {
    "dagen": ("--max-calls", str(MANY_MAX_CALLS),
              "--max-calls-per-identity", str(MANY_MAX_CALLS)),
    "grpc": ("--workers", str(MANY_SERVER_THREADS)),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- machine -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "hostname": platform.node(),
    }
    try:
        import psutil

        vm = psutil.virtual_memory()
        info["memory_total"] = vm.total
        info["memory_available_at_start"] = vm.available
    except ImportError:
        pass
    return info


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("dagen", "grpcio", "protobuf", "numpy", "xarray", "pyarrow", "dask",
                 "distributed", "psutil", "matplotlib"):
        try:
            out[dist] = version("dagen-grpc" if dist == "dagen" else dist)  # the distribution's name
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- measurements --------------------------------------------------------------------------------


def payload(size: int) -> xr.DataArray:
    n = max(1, size // 8)
    return xr.DataArray(np.arange(n, dtype=np.float64), dims=("x",), name="payload")


def check_echo(sent: xr.DataArray, got: xr.DataArray) -> None:
    if not isinstance(got, xr.DataArray):
        raise AssertionError(f"echo returned {type(got).__name__}, not a DataArray")
    if got.dims != sent.dims or got.shape != sent.shape or got.dtype != sent.dtype:
        raise AssertionError(f"echo returned {got.dims} {got.shape} {got.dtype}")
    a, b = sent.values, got.values
    if a.size <= 1 << 24:
        ok = np.array_equal(a, b)
    else:  # a strided sample and the last element: no big temporary arrays
        ok = np.array_equal(a[::4099], b[::4099]) and a[-1] == b[-1]
    if not ok:
        raise AssertionError("echo returned different values")


def echo_size(system: System, size: int, runs: int, memory: bool) -> dict[str, Any]:
    da = payload(size)
    nbytes = da.nbytes
    result: dict[str, Any] = {"bytes": nbytes}
    try:
        drop_free_memory()
        if memory:  # the warm-up call doubles as the memory measurement
            with PeakRSS(system.server_pids) as m:
                t0 = time.perf_counter()
                out = system.echo(da)
                warm = time.perf_counter() - t0
            result["memory"] = m.result
        else:
            t0 = time.perf_counter()
            out = system.echo(da)
            warm = time.perf_counter() - t0
        check_echo(da, out)
        del out
        result["warmup_s"] = warm
        times, cpu_client, cpu_server = [], [], []
        for _ in range(runs):
            drop_free_memory()
            c0, s0 = cpu_seconds(os.getpid()), _server_cpu(system)
            t0 = time.perf_counter()
            out = system.echo(da)
            times.append(time.perf_counter() - t0)
            c1, s1 = cpu_seconds(os.getpid()), _server_cpu(system)
            cpu_client.append(c1 - c0)
            cpu_server.append(None if s0 is None or s1 is None else s1 - s0)
            check_echo(da, out)
            del out
        median = statistics.median(times)
        result.update(
            times_s=times,
            median_s=median,
            min_s=min(times),
            max_s=max(times),
            throughput_Bps=2 * nbytes / median,
            cpu_client_s=statistics.median(cpu_client),
            cpu_server_s=(statistics.median(cpu_server)
                          if all(v is not None for v in cpu_server) else None),
        )
        return result
    finally:
        del da
        drop_free_memory()


def _server_cpu(system: System) -> float | None:
    try:
        return sum(cpu_seconds(p) for p in system.server_pids)
    except OSError:
        return None


def warm_up(system: System, calls: int) -> None:
    """Tiny calls before any is timed, each checked."""
    for i in range(calls):
        if system.add(i, 1) != i + 1:
            raise AssertionError(f"{system.name}: add returned a wrong sum")


@contextlib.contextmanager
def running(names: list[str], certs: Path, work: Path, procs: Processes,
            server_args: dict[str, tuple[str, ...]] | None = None,
            classes: dict[str, type[System]] | None = None) -> Iterator[list[System]]:
    """The systems' servers started, in order; closed (each by its pid) on the way out.
    ``classes``: the systems by name (default: every system of benchmarks/systems.py)."""
    classes = classes or {**SYSTEMS, **{c.name: c for c in REUSING.values()}, **RELAYED,
                          **DIRECT}
    systems: list[System] = []
    try:
        for name in names:
            system = classes[name](certs, work, procs, (server_args or {}).get(name, ()))
            systems.append(system)
            system.start()
        yield systems
    finally:
        for system in systems:
            try:
                system.close()
            except Exception as e:  # noqa: BLE001
                log(f"{system.name}: closing failed: {e}")


def tiny_calls(system: System, calls: int, concurrency: int, seconds: float,
               max_seconds: float) -> dict[str, Any]:
    warm_up(system, min(50, calls))
    latencies = []
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter_ns()
        system.add(i, 1)
        latencies.append(time.perf_counter_ns() - t0)
        if time.perf_counter() - started > max_seconds:
            break
    lat = np.array(latencies, dtype=np.float64) / 1e3  # µs
    out: dict[str, Any] = {
        "calls": len(latencies),
        "capped_by_time": len(latencies) < calls,
        "p50_us": float(np.percentile(lat, 50)),
        "p99_us": float(np.percentile(lat, 99)),
        "mean_us": float(lat.mean()),
        "sequential_calls_per_s": len(latencies) / (lat.sum() / 1e6),
    }
    # concurrency callers, each in its own thread, as many calls as fit in `seconds`
    counts = [0] * concurrency
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def caller(k: int) -> None:
        barrier.wait()
        n = 0
        try:
            while time.perf_counter() < deadline[0]:
                system.add(k, n)
                n += 1
        except Exception as e:  # noqa: BLE001 - recorded
            errors.append(f"{type(e).__name__}: {e}")
        counts[k] = n

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - t0
    out.update(
        concurrency=concurrency,
        concurrent_calls=sum(counts),
        concurrent_seconds=elapsed,
        concurrent_calls_per_s=sum(counts) / elapsed,
    )
    if errors:
        out["concurrent_errors"] = errors[:5]
    return out


PAIRED = ("dagen", "grpc", "flight")


def paired_rounds(names: list[str], certs: Path, work: Path, procs: Processes,
                  size: int, rounds: int, tiny: int, rec: dict[str, Any],
                  label: str = "paired round") -> None:
    """The numbers the bars compare, measured with the systems' servers all up and taking
    turns (the order reversed every round): on a shared machine, measuring one system
    after the other lets a change in the machine's load pass for a difference between
    systems. Each round: one echo of ``size`` and a block of tiny calls per system."""
    da = payload(size)
    try:
        with running(names, certs, work, procs) as systems:
            for system in systems:
                check_echo(da, system.echo(da))  # warm-up
                warm_up(system, 50)
            times: dict[str, list[float]] = {s.name: [] for s in systems}
            latencies: dict[str, list[int]] = {s.name: [] for s in systems}
            block = max(1, tiny // rounds)
            for r in range(rounds):
                for system in systems if r % 2 == 0 else systems[::-1]:
                    drop_free_memory()
                    t0 = time.perf_counter()
                    out = system.echo(da)
                    times[system.name].append(time.perf_counter() - t0)
                    check_echo(da, out)
                    del out
                    for i in range(block if tiny else 0):
                        t1 = time.perf_counter_ns()
                        system.add(i, 1)
                        latencies[system.name].append(time.perf_counter_ns() - t1)
                log(f"{label} {r + 1}/{rounds}: " + ", ".join(
                    f"{n} {2 * da.nbytes / t[-1] / 2**20:.0f} MiB/s" for n, t in times.items()))
        for name in times:
            lat = np.array(latencies[name], dtype=np.float64) / 1e3
            rec[name] = {
                "times_s": times[name],
                "throughput_Bps": 2 * da.nbytes / statistics.median(times[name]),
                "tiny_calls": len(lat),
                "tiny_p50_us": float(np.percentile(lat, 50)) if len(lat) else None,
            }
    finally:
        del da
        drop_free_memory()


TINY_WARMUP = 1000  # calls each server answers after its launch before any is timed
SLOW_WARMUP = {"dask": 100}  # ~10 ms a call: fewer warm-up calls


def _warm(system: System) -> None:
    warm_up(system, SLOW_WARMUP.get(system.name, TINY_WARMUP))


def tiny_rounds(names: list[str], certs: Path, work: Path, procs: Processes,
                launches: int, rounds: int, calls: int, rec: dict[str, Any]) -> None:
    """Tiny-call latency with the systems' servers launched ``launches`` times; each
    launch, ``rounds`` rounds in which every system answers a block of sequential calls
    (the order reversed every round). ``calls`` per system in all."""
    latencies: dict[str, list[int]] = {n: [] for n in names}
    per_launch: dict[str, list[float]] = {n: [] for n in names}
    block = max(1, calls // (launches * rounds))
    for launch in range(launches):
        mine: dict[str, list[int]] = {n: [] for n in names}
        with running(names, certs, work, procs) as systems:
            for system in systems:
                _warm(system)
            for r in range(rounds):
                for system in systems if r % 2 == 0 else systems[::-1]:
                    lat = mine[system.name]
                    for i in range(block):
                        t0 = time.perf_counter_ns()
                        system.add(i, 1)
                        lat.append(time.perf_counter_ns() - t0)
        for name, lat in mine.items():
            latencies[name] += lat
            per_launch[name].append(float(np.percentile(lat, 50)) / 1e3)
        log(f"tiny rounds, launch {launch + 1}/{launches}: p50 " + ", ".join(
            f"{n} {v[-1]:.0f} µs" for n, v in per_launch.items()))
    for name in names:
        lat = np.array(latencies[name], dtype=np.float64) / 1e3
        rec[name] = {
            "calls": len(lat),
            "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99)),
            "launch_p50_us": per_launch[name],
        }


def small_rounds(names: list[str], certs: Path, work: Path, procs: Processes,
                 sizes: list[int], rounds: int, calls: int, rec: dict[str, Any]) -> None:
    """Echoes of small arrays (8 KiB, 1 MiB), the systems' servers all up and taking
    turns: each round, for each size, a block of back-to-back echoes per system (the
    order reversed every round); ``calls`` echoes per size and system in all."""
    arrays = {size: payload(size) for size in sizes}
    block = max(1, calls // rounds)
    times: dict[str, dict[int, list[float]]] = {n: {s: [] for s in sizes} for n in names}
    with running(names, certs, work, procs) as systems:
        for system in systems:
            warm_up(system, 20)
            for da in arrays.values():
                for _ in range(3):
                    check_echo(da, system.echo(da))
        for r in range(rounds):
            for size, da in arrays.items():
                for system in systems if r % 2 == 0 else systems[::-1]:
                    mine = times[system.name][size]
                    for _ in range(block):
                        t0 = time.perf_counter()
                        out = system.echo(da)
                        mine.append(time.perf_counter() - t0)
                    check_echo(da, out)
                    del out
            log(f"small round {r + 1}/{rounds}: median ms " + "; ".join(
                f"{n} " + ", ".join(f"{statistics.median(t[s]) * 1e3:.2f}" for s in sizes)
                for n, t in times.items()))
    for name, per_size in times.items():
        rec[name] = {}
        for size, ts in per_size.items():
            median = statistics.median(ts)
            rec[name][str(size)] = {
                "bytes": arrays[size].nbytes, "calls": len(ts), "median_s": median,
                "p90_s": float(np.percentile(ts, 90)),
                "throughput_Bps": 2 * arrays[size].nbytes / median,
            }


MANY_LAYOUTS = {"threads": (1, 50), "processes": (4, 12)}  # client processes × threads each


def many_callers(names: list[str], certs: Path, work: Path, procs: Processes, rounds: int,
                 seconds: float, rec: dict[str, Any]) -> None:
    """Many callers making tiny calls for a fixed time: 50 threads of this process, and 4
    client processes (benchmarks/many_callers.py) × 12 threads; the servers all up,
    taking turns (the order reversed every round), ``rounds`` × ``seconds`` per system
    and layout. Calls/s over the whole time; p50 and p99 over every call."""
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {
        n: {layout: [] for layout in MANY_LAYOUTS} for n in names}
    with running(names, certs, work, procs, MANY_SERVER_ARGS) as systems:
        for system in systems:
            warm_up(system, SLOW_WARMUP.get(system.name, 200))
        for r in range(rounds):
            for layout, (n_procs, threads) in MANY_LAYOUTS.items():
                for system in systems if r % 2 == 0 else systems[::-1]:
                    if n_procs == 1:
                        got = hammer(system.add, threads, seconds, soon)
                    else:
                        got = _callers_in_processes(system, certs, work, procs, n_procs,
                                                    threads, seconds)
                    cells[system.name][layout].append(got)
                    if got["errors"]:
                        raise RuntimeError(f"{system.name}, {layout}: {got['errors'][0]}")
                log(f"many callers, round {r + 1}/{rounds}, {n_procs} × {threads}: " + ", ".join(
                    f"{n} {c[layout][-1]['calls'] / (c[layout][-1]['end'] - c[layout][-1]['start']):.0f}"
                    " calls/s" for n, c in cells.items()))
    for name, layouts in cells.items():
        rec[name] = {}
        for layout, runs in layouts.items():
            lat = np.array([v for run in runs for v in run["latencies_us"]])
            elapsed = sum(run["end"] - run["start"] for run in runs)
            n_procs, threads = MANY_LAYOUTS[layout]
            rec[name][layout] = {
                "processes": n_procs, "threads": threads, "calls": len(lat),
                "seconds": elapsed, "calls_per_s": len(lat) / elapsed,
                "each_round_calls_per_s": [run["calls"] / (run["end"] - run["start"])
                                           for run in runs],
                "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99)),
            }


def _callers_in_processes(system: System, certs: Path, work: Path, procs: Processes,
                          n_procs: int, threads: int, seconds: float) -> dict[str, Any]:
    """``n_procs`` client processes (benchmarks/many_callers.py) of ``threads`` callers
    each, started together once all are connected and warm; their samples merged."""
    import re

    from common import wait_for_line

    folder = Path(tempfile.mkdtemp(prefix=f"many-{system.name}-", dir=work))
    go = folder / "go"
    children = []
    try:
        for i in range(n_procs):
            proc, out = procs.start(f"many-callers-{system.name}-{i}", [
                sys.executable, str(HERE / "many_callers.py"), "--system", system.name,
                "--address", system.address, "--certs", str(certs), "--work", str(work),
                "--threads", str(threads), "--seconds", str(seconds), "--go", str(go),
                "--out", str(folder / f"{i}.json"),
            ])
            children.append((proc, out))
        for proc, out in children:
            wait_for_line(proc, out, re.compile(r"^ready$", re.M))
        start_at = time.time() + 0.2
        (folder / "go.tmp").write_text(f"{start_at!r}\n")
        (folder / "go.tmp").rename(go)
        for proc, out in children:
            code = proc.wait(timeout=seconds + 300)
            if code != 0:
                raise RuntimeError(f"a client process exited with {code}: "
                                   f"{out.read_text(errors='replace')[-1500:]}")
        parts = [json.loads((folder / f"{i}.json").read_text()) for i in range(n_procs)]
    finally:
        for proc, _ in children:
            procs.stop(proc)
    return {"latencies_us": [v for p in parts for v in p["latencies_us"]],
            "calls": sum(p["calls"] for p in parts), "start": start_at,
            "end": max(p["end"] for p in parts), "errors": [e for p in parts for e in p["errors"]]}


def memory_factor(echo: dict[str, Any]) -> float:
    """Bytes of RAM one byte of payload has needed so far (client + server, with the
    arrays themselves), from the largest size measured; 6.0 before anything is known."""
    best = None
    for r in echo.values():
        mem = r.get("memory")
        if mem and r["bytes"] >= 16 << 20:
            f = (r["bytes"] + mem["client_extra"] + mem["server_extra"]) / r["bytes"]
            if best is None or r["bytes"] > best[0]:
                best = (r["bytes"], f)
    return max(3.0, best[1]) if best else 6.0


def run_system(system: System, args: argparse.Namespace, sizes: list[int],
               memory_size: int, rec: dict[str, Any]) -> dict[str, Any]:
    """Measure one system into ``rec`` (filled in place, so that what was measured
    before a Ctrl-C is kept)."""
    rec.update({"label": system.label, "status": "ok", "echo": {}, "tiny": None})
    t_start = time.perf_counter()
    try:
        log(f"{system.name}: starting its server")
        system.start()
        rec["server_pids"] = list(system.server_pids)
        rec["versions"] = system.versions()
    except Skip as e:
        log(f"{system.name}: skipped: {e}")
        rec.update(status="skipped", reason=str(e))
        return rec
    except Exception as e:  # noqa: BLE001 - record it, run the others
        log(f"{system.name}: FAILED to start: {e}")
        rec.update(status="failed", reason=f"failed to start: {type(e).__name__}: {e}",
                   traceback=traceback.format_exc())
        return rec
    last_tp = None
    stop_reason = None
    for size in sizes:
        key = str(size)
        if stop_reason:
            rec["echo"][key] = {"bytes": size, "skipped": stop_reason}
            continue
        # Do not start what cannot finish in time or fit in memory.
        if last_tp:
            estimate = (args.runs + 1) * 2 * size / last_tp
            if estimate > args.max_size_seconds:
                rec["echo"][key] = {
                    "bytes": size,
                    "skipped": f"estimated {estimate:.0f} s at {last_tp / 2**20:.0f} MiB/s "
                               f"exceeds --max-size-seconds={args.max_size_seconds:.0f}",
                }
                log(f"{system.name} {fmt_size(size)}: {rec['echo'][key]['skipped']}")
                continue
        need = memory_factor(rec["echo"]) * size * 1.15
        avail = available_memory()
        if avail is not None and need > avail:
            rec["echo"][key] = {
                "bytes": size,
                "skipped": f"needs about {need / 2**30:.1f} GiB of RAM, "
                           f"{avail / 2**30:.1f} GiB available",
            }
            log(f"{system.name} {fmt_size(size)}: {rec['echo'][key]['skipped']}")
            continue
        log(f"{system.name}: echo {fmt_size(size)} × (1 + {args.runs})")
        try:
            r = echo_size(system, size, args.runs, memory=(size == memory_size))
        except Exception as e:  # noqa: BLE001 - record, skip the larger sizes
            log(f"{system.name} {fmt_size(size)}: FAILED {type(e).__name__}: {e}")
            rec["echo"][key] = {"bytes": size, "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()}
            stop_reason = f"skipped after the failure at {fmt_size(size)}"
            if not _alive(system):
                rec["status"] = "failed"
                rec["reason"] = f"its server exited during the {fmt_size(size)} echo"
                break
            continue
        rec["echo"][key] = r
        last_tp = r["throughput_Bps"]
        mem = r.get("memory")
        extra = (f", extra RSS client {mem['client_extra'] / 2**20:.0f} MiB, "
                 f"server {mem['server_extra'] / 2**20:.0f} MiB" if mem else "")
        log(f"{system.name} {fmt_size(size)}: median {r['median_s']:.3f} s, "
            f"{last_tp / 2**20:.0f} MiB/s{extra}")
    if args.tiny_calls > 0 and rec["status"] == "ok":
        log(f"{system.name}: {args.tiny_calls} tiny calls, then {args.concurrency} callers "
            f"for {args.concurrent_seconds:g} s")
        try:
            rec["tiny"] = tiny_calls(system, args.tiny_calls, args.concurrency,
                                     args.concurrent_seconds, args.tiny_max_seconds)
            t = rec["tiny"]
            log(f"{system.name}: tiny p50 {t['p50_us']:.0f} µs, p99 {t['p99_us']:.0f} µs "
                f"({t['calls']} calls), {t['concurrent_calls_per_s']:.0f} calls/s "
                f"with {args.concurrency} callers")
        except Exception as e:  # noqa: BLE001
            log(f"{system.name}: tiny calls FAILED {type(e).__name__}: {e}")
            rec["tiny"] = {"error": f"{type(e).__name__}: {e}"}
    rec["seconds"] = time.perf_counter() - t_start
    return rec


def _alive(system: System) -> bool:
    return all(os.path.exists(f"/proc/{p}") for p in system.server_pids)


# -- main ----------------------------------------------------------------------------------------


# Options left unset: their value without --quick and with it.
DEFAULTS: dict[str, tuple[float, float]] = {
    "runs": (3, 1), "tiny_calls": (2000, 200), "paired_rounds": (5, 1), "relay_rounds": (3, 1),
    "tiny_launches": (5, 1), "tiny_rounds": (4, 2), "small_rounds": (5, 1),
    "small_calls": (200, 20), "many_rounds": (2, 1), "many_seconds": (3.0, 1.0),
    "concurrent_seconds": (5.0, 1.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--sizes", default=None,
                   help=f"payload sizes, comma-separated (default {DEFAULT_SIZES})")
    p.add_argument("--runs", type=int, default=None, help="timed runs per size (default 3)")
    p.add_argument("--memory-size", default="1GiB",
                   help="payload size whose echo the peak RSS is measured on (default 1GiB; "
                        "the largest size up to it when it is not among --sizes)")
    p.add_argument("--tiny-calls", type=int, default=None,
                   help="sequential tiny calls (default 2000)")
    p.add_argument("--tiny-max-seconds", type=float, default=30.0,
                   help="stop the sequential tiny calls of a slow system after this long")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent tiny callers")
    p.add_argument("--concurrent-seconds", type=float, default=None,
                   help="how long the concurrent callers run (default 5)")
    p.add_argument("--paired-rounds", type=int, default=None,
                   help="rounds in which dagen, grpc and flight take turns, for the bars "
                        "(default 5, 1 with --quick; 0: none)")
    p.add_argument("--tiny-launches", type=int, default=None,
                   help="launches of dagen's, grpc's and flight's servers for the tiny-call "
                        "bar (default 5, 1 with --quick; 0: none)")
    p.add_argument("--tiny-rounds", type=int, default=None,
                   help="rounds of tiny-call blocks per launch (default 4, 2 with --quick)")
    p.add_argument("--small-sizes", default=SMALL_SIZES,
                   help=f"the small rounds' echo sizes (default {SMALL_SIZES})")
    p.add_argument("--small-rounds", type=int, default=None,
                   help="rounds in which dagen, grpc, flight and dask take turns echoing small "
                        "arrays (default 5, 1 with --quick; 0: none)")
    p.add_argument("--small-calls", type=int, default=None,
                   help="small echoes per size and system in all (default 200, 20 with --quick)")
    p.add_argument("--many-rounds", type=int, default=None,
                   help="rounds of the many-callers table (default 2, 1 with --quick; 0: none)")
    p.add_argument("--many-seconds", type=float, default=None,
                   help="seconds per system, layout and round of many callers "
                        "(default 3, 1 with --quick)")
    p.add_argument("--rss-baseline", default=None,
                   help="a results .json whose dagen peak RSS the bar compares with (default: "
                        "the newest run committed in benchmarks/results)")
    p.add_argument("--relay-rounds", type=int, default=None,
                   help="rounds in which dagen direct and dagen through a relay take turns "
                        "(default 3, 1 with --quick; 0: none)")
    p.add_argument("--relay-size", default=None,
                   help="the relay rounds' echo size (default: that of the memory measurement)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"which systems, comma-separated (default {','.join(SYSTEMS)})")
    p.add_argument("--max-size-seconds", type=float, default=240.0,
                   help="skip a size whose estimated time (from the previous size) exceeds this")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the temporary folder (certificates, build, server logs)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: sizes {QUICK_SIZES}, 1 run, 200 tiny calls, 1 s concurrent")
    lazy_datasets.add_arguments(p)  # the lazy-dataset section's options (--lazy-*)
    args = p.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)
    for option, (full, smoke) in DEFAULTS.items():  # (without --quick, with --quick)
        if getattr(args, option) is None:
            setattr(args, option, smoke if quick else full)
    if args.tiny_rounds < 1:
        p.error("--tiny-rounds must be at least 1")
    if args.concurrent_seconds is None:
        args.concurrent_seconds = 1.0 if quick else 5.0
    if quick:
        args.tiny_max_seconds = min(args.tiny_max_seconds, 5.0)
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {list(SYSTEMS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    wanted_memory = parse_size(args.memory_size)
    memory_size = max([s for s in sizes if s <= wanted_memory] or [sizes[0]])
    signal.signal(signal.SIGTERM, _terminate)
    # also when started with SIGINT ignored (a background job of a script): Ctrl-C and
    # kill -INT stop the run, end the servers and write what was measured
    signal.signal(signal.SIGINT, signal.default_int_handler)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "timestamp": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "sizes": sizes, "runs": args.runs, "warmup_calls": 1, "memory_size": memory_size,
            "tiny_calls": args.tiny_calls, "concurrency": args.concurrency,
            "concurrent_seconds": args.concurrent_seconds, "chunk_bytes": CHUNK_BYTES,
            "quick": args.quick, "systems": args.systems.split(","),
            "paired_rounds": args.paired_rounds, "relay_rounds": args.relay_rounds,
            "tiny_launches": args.tiny_launches, "tiny_rounds": args.tiny_rounds,
            "tiny_warmup_calls": TINY_WARMUP, "small_rounds": args.small_rounds,
            "many_rounds": args.many_rounds,
            "transport": "127.0.0.1, mutual TLS (ECDSA P-256 certificates from dagen._security)",
        },
        "machine": machine_info(),
        "versions": versions(),
        "load_before": load(),
        "rss_baseline": rss_baseline(args.rss_baseline, memory_size),
        "systems": {},
    }
    log(f"sizes {', '.join(fmt_size(s) for s in sizes)}; {args.runs} runs; memory at "
        f"{fmt_size(memory_size)}; load {results['load_before']}")
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="dagen-bench-"))
    procs = Processes(work)
    interrupted = False
    try:
        certs = make_certs(work / "certs")
        for name in args.systems.split(","):
            system = SYSTEMS[name](certs, work, procs)
            rec = results["systems"][name] = {}
            try:
                run_system(system, args, sizes, memory_size, rec)
            except KeyboardInterrupt:
                rec.update(status="interrupted", reason="Ctrl-C or SIGTERM during its run")
                raise
            finally:
                try:
                    system.close()
                except Exception as e:  # noqa: BLE001
                    log(f"{name}: closing failed: {e}")
                gc.collect()
        ok = [n for n in PAIRED if results["systems"].get(n, {}).get("status") == "ok"]
        together = "dagen" in ok and len(ok) > 1  # what the stages below compare
        dask_ok = results["systems"].get("dask", {}).get("status") == "ok"
        peers = ok + ["dask"] if dask_ok else ok  # dagen, grpc, flight and dask
        if args.small_rounds > 0 and args.small_calls > 0 and together:
            small = sorted({parse_size(s) for s in args.small_sizes.split(",") if s.strip()})
            log(f"small rounds: {', '.join(peers)} taking turns, {args.small_rounds} rounds, "
                f"{args.small_calls} echoes per size and system of "
                + ", ".join(fmt_size(s) for s in small))
            results["small"] = {"sizes": small, "rounds": args.small_rounds,
                                "calls": args.small_calls}
            run_stage("small rounds", results["small"], lambda rec: small_rounds(
                peers, certs, work, procs, small, args.small_rounds, args.small_calls, rec))
        if args.paired_rounds > 0 and together:
            names = (ok + [REUSING[n].name for n in ok if n in REUSING]
                     + (list(DIRECT) if dask_ok else []))
            log(f"paired rounds: {', '.join(names)} taking turns, {args.paired_rounds} rounds "
                f"of a {fmt_size(memory_size)} echo and {args.tiny_calls // args.paired_rounds} "
                "tiny calls each")
            results["paired"] = {"size": memory_size, "rounds": args.paired_rounds}
            run_stage("paired rounds", results["paired"], lambda rec: paired_rounds(
                names, certs, work, procs, memory_size, args.paired_rounds, args.tiny_calls,
                rec))
        if args.tiny_launches > 0 and args.tiny_calls > 0 and together:
            log(f"tiny rounds: {', '.join(peers)} launched {args.tiny_launches} times, "
                f"{args.tiny_rounds} rounds each, {args.tiny_calls} calls per system in all")
            results["tiny_rounds"] = {"launches": args.tiny_launches, "rounds": args.tiny_rounds}
            run_stage("tiny rounds", results["tiny_rounds"], lambda rec: tiny_rounds(
                peers, certs, work, procs, args.tiny_launches, args.tiny_rounds, args.tiny_calls,
                rec))
        if args.many_rounds > 0 and args.many_seconds > 0 and together:
            log(f"many callers: {', '.join(peers)} taking turns, {args.many_rounds} rounds of "
                f"{args.many_seconds:g} s per system and layout, "
                f"{MANY_SERVER_THREADS} server threads for dagen and raw grpcio")
            results["many"] = {"rounds": args.many_rounds, "seconds": args.many_seconds,
                               "server_threads": MANY_SERVER_THREADS,
                               "server_args": {k: list(v) for k, v in MANY_SERVER_ARGS.items()},
                               "layouts": {k: list(v) for k, v in MANY_LAYOUTS.items()}}
            run_stage("many callers", results["many"], lambda rec: many_callers(
                peers, certs, work, procs, args.many_rounds, args.many_seconds, rec))
        if args.relay_rounds > 0 and "dagen" in ok:
            relay_size = parse_size(args.relay_size) if args.relay_size else memory_size
            relay_stage(args, certs, work, procs, relay_size, results)
        lazy_datasets.stage(args, certs, work, procs, results, log)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping the servers, writing what was measured")
    finally:
        procs.stop_all()
    results["load_after"] = load()
    results["seconds"] = time.perf_counter() - t0
    results["interrupted"] = interrupted
    failed = failures(results)
    problems = interrupted or failed or any(
        r.get("status") != "ok" for r in results["systems"].values())
    if args.keep_work or problems:
        results["work_dir"] = str(work)
        log(f"server logs and certificates kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_reports(results, out / stamp)
    for path in paths:
        log(f"wrote {path}")
    print()
    print(Path(paths[1]).read_text())
    if interrupted:
        return 130
    for failure in failed:
        log(f"FAILED {failure}")
    return 1 if failed else 0


def rss_baseline(path: str | None, size: int) -> dict[str, Any] | None:
    """dagen's extra peak RSS at ``size`` in an earlier run: ``path``, else the newest
    run committed to git in benchmarks/results (the bar: this run within 5 % of it)."""
    import subprocess

    if path is None:
        try:
            listed = subprocess.run(["git", "-C", str(HERE), "ls-files", "results/*.json"],
                                    capture_output=True, text=True, check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            return None
        runs = sorted(f for f in listed if Path(f).stem[:1].isdigit())
        if not runs:
            return None
        path = str(HERE / runs[-1])
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return {"file": Path(path).name, "size": size, "missing": f"unreadable: {e}"}
    mem = ((old.get("systems", {}).get("dagen", {}).get("echo") or {}).get(str(size)) or {}).get(
        "memory")
    if not mem:
        return {"file": Path(path).name, "size": size,
                "missing": f"no peak RSS of dagen's {fmt_size(size)} echo there"}
    return {"file": Path(path).name, "size": size,
            "client_extra": mem["client_extra"], "server_extra": mem["server_extra"]}


def relay_stage(args: argparse.Namespace, certs: Path, work: Path, procs: Processes,
                size: int, results: dict[str, Any]) -> None:
    """dagen through the relay beside the direct connection (issue 17), taking turns; as
    ratios to the direct connection. Skipped, with the reason, without asyncssh."""
    names = ["dagen", *RELAYED]
    tiny = min(args.tiny_calls, 300 * args.relay_rounds)
    log(f"relay rounds: {', '.join(names)} taking turns, {args.relay_rounds} rounds of a "
        f"{fmt_size(size)} echo and {tiny // args.relay_rounds} tiny calls each")
    record = results["relay"] = {"size": size, "rounds": args.relay_rounds}
    try:
        run_stage("relay rounds", record, lambda rec: paired_rounds(
            names, certs, work, procs, size, args.relay_rounds, tiny, rec, "relay round"),
            reraise=Skip)
    except Skip as e:
        log(f"relay rounds skipped: {e}")
        record.update(skipped=str(e), systems={})
        return
    direct, relayed = (record["systems"].get(n) for n in names)
    if direct and relayed:
        record["throughput_ratio"] = relayed["throughput_Bps"] / direct["throughput_Bps"]
        if direct.get("tiny_p50_us") and relayed.get("tiny_p50_us"):
            record["tiny_p50_ratio"] = relayed["tiny_p50_us"] / direct["tiny_p50_us"]


def run_stage(name: str, record: dict[str, Any],
              measure: Callable[[dict[str, Any]], None],
              reraise: type[Exception] | tuple[()] = ()) -> None:
    """A stage that measures the systems together, into ``record["systems"]``. A failure
    leaves that empty and is recorded in ``record``; the run goes on, as the per-system
    results still stand. ``reraise``: exceptions that are not failures (a Skip)."""
    record["systems"] = {}
    try:
        measure(record["systems"])
    except reraise:
        raise
    except Exception as e:  # noqa: BLE001
        log(f"{name} FAILED {type(e).__name__}: {e}")
        record["error"] = f"{type(e).__name__}: {e}"
        record["systems"] = {}


def failures(results: dict[str, Any]) -> list[str]:
    """What went wrong in a run: a system that failed (to start, or its server exited), an
    echo that raised, paired or tiny rounds that raised. A system skipped because its
    package is missing, or a size skipped for time or memory, is not a failure."""
    found = []
    for name, rec in results["systems"].items():
        if rec.get("status") == "failed":
            found.append(f"{name}: {rec.get('reason', 'failed')}")
        found += [f"{name} {fmt_size(int(size))} echo: {r['error']}"
                  for size, r in rec.get("echo", {}).items() if "error" in r]
    found += [f"{stage}: {results[stage]['error']}"
              for stage in ("paired", "tiny_rounds", "relay", "small", "many")
              if "error" in results.get(stage, {})]
    return found + lazy_datasets.failures(results)


if __name__ == "__main__":
    sys.exit(main())
