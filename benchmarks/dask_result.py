"""A 1 GiB result computed on dask workers: delivered to the visitor through dagen
(`dagen serve --executor dask`, mutual TLS, streamed in batches of blocks) vs gathered
by a plain dask client connected to the same scheduler, on this machine (issue 16).

    PYTHONPATH=src python benchmarks/dask_result.py [--mib 1024] [--repeat 2]

One `dask scheduler` and one `dask worker` (2 threads) on 127.0.0.1, plain TCP between
them and their clients (both paths alike); the dagen server connects with
--scheduler-file. Prints the wall time of each way, its throughput, and the peak RSS
growth of the process that holds the result on its way: the dagen server (which
should hold a batch of blocks, not the result) and the plain dask client (which holds
all of it, as it must; a fresh process each time, so that memory a previous result
left behind cannot hide it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import make_certs  # noqa: E402

from dagen._build import build  # noqa: E402

PY = sys.executable
SERVICE = HERE / "dask_result_service.py"
CHUNK = 1 << 21  # elements per block: 16 MiB


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def peak_growth(pid: int, run) -> tuple[float, int, object]:
    """Run ``run()``; its wall time, ``pid``'s peak RSS growth in KiB meanwhile, its result."""
    before = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the RSS now
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, status_kib(pid, "VmHWM") - before, out


def check(values: np.ndarray, n: int) -> None:
    assert values.shape == (n,)
    for start in range(0, n, CHUNK):
        assert np.array_equal(values[start:start + CHUNK], np.arange(start, start + CHUNK,
                                                                        dtype="f8"))


def plain_client(scheduler_file: str, n: int) -> None:
    """In a process of its own: gather the result with a plain dask client; print the
    seconds and the peak RSS growth in KiB."""
    import dask.array as da
    from distributed import Client

    with Client(scheduler_file=scheduler_file) as client:
        array = da.arange(n, chunks=CHUNK, dtype="f8")
        seconds, grown, out = peak_growth(os.getpid(),
                                          lambda: client.compute(array).result())
        check(out, n)  # type: ignore[arg-type]
    print(seconds, grown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--plain", metavar="SCHEDULER_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.mib * (1 << 20) // 8
    if args.plain:
        return plain_client(args.plain, n)
    work = Path(tempfile.mkdtemp(prefix="dagen-dask-result-"))
    certs = make_certs(work / "certs")
    sched = work / "scheduler.json"
    procs: list[subprocess.Popen] = []

    def spawn(name: str, *command: str) -> subprocess.Popen:
        proc = subprocess.Popen(command, stdout=(work / f"{name}.log").open("w"),
                                stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    try:
        spawn("scheduler", PY, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
              "--port", "0", "--no-dashboard", "--scheduler-file", str(sched))
        while not sched.exists():
            time.sleep(0.1)
        spawn("worker", PY, "-m", "distributed.cli.dask_worker", "--scheduler-file",
              str(sched), "--nthreads", "2", "--nworkers", "1", "--no-dashboard",
              "--host", "127.0.0.1", "--memory-limit", "0")
        server = spawn("server", PY, "-m", "dagen._cli", "serve", str(SERVICE), "--certs",
                       str(certs), "--host", "127.0.0.1", "--port", "0", "--executor", "dask",
                       "--scheduler-file", str(sched))
        log = work / "server.log"
        deadline = time.monotonic() + 120
        while not (match := re.search(r"on 127\.0\.0\.1:(\d+)", log.read_text())):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dagen serve did not start: see {log}")
            time.sleep(0.2)
        project = build(str(SERVICE), work / "build").client
        sys.path.insert(0, str(project))
        import dask_result_service_client as m  # noqa: PLC0415

        visitor = m.Client(f"127.0.0.1:{match.group(1)}", certs=certs, identity="alice",
                           timeout=1800, progress_bar=False)

        print(f"{args.mib} MiB float64 result in blocks of {CHUNK * 8 >> 20} MiB, computed on "
              f"the dask worker; load {os.getloadavg()[0]:.1f}")
        visitor.ramp(1000, 100)  # warm up: the worker imports the module
        for _ in range(args.repeat):
            seconds, grown, out = peak_growth(server.pid, lambda: visitor.ramp(n, CHUNK))
            check(out.values, n)
            del out
            print(f"dagen (server streams, visitor gets it)  {seconds:6.2f} s "
                  f"{args.mib / seconds:7.1f} MiB/s; dagen server peak RSS "
                  f"{grown / 1024:+.0f} MiB", flush=True)
            done = subprocess.run([PY, __file__, "--mib", str(args.mib), "--plain", str(sched)],
                                  capture_output=True, text=True, check=True)
            seconds, grown = (float(v) for v in done.stdout.split()[-2:])
            print(f"plain dask client gathers it             {seconds:6.2f} s "
                  f"{args.mib / seconds:7.1f} MiB/s; client peak RSS "
                  f"{grown / 1024:+.0f} MiB", flush=True)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
