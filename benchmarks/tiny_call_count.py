"""Python-level calls per tiny call, client and server, dagen against raw grpcio.

Latency on a small shared machine varies by tens of µs from one launch to the next;
the number of Python functions (and builtins called from Python) a call runs does
not. A tiny call's time is mostly Python run with cold caches, so this count is a
noise-free measure of what the call path costs, and of what a change to it saves.

Each server runs under a profile hook (``sys.setprofile`` in every thread) that
counts while switched on (SIGUSR1 on, SIGUSR1 again off and written out); the client
counts in this process around the same calls.

    python benchmarks/tiny_call_count.py [--calls 200] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

Counts = collections.Counter  # (file name, function) -> calls

_HOOK_ENV = "DAGEN_BENCH_CALL_COUNT_OUT"


def _counter(active: list[bool] | None = None) -> tuple[Counts[tuple[str, str]], Any]:
    """A profile function that counts calls (while ``active[0]``, when given)."""
    counts: Counts[tuple[str, str]] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if active is not None and not active[0]:
            return
        if event == "call":
            code = frame.f_code
            counts[(Path(code.co_filename).name, code.co_name)] += 1
        elif event == "c_call":
            counts[("builtin", getattr(arg, "__qualname__", repr(arg)))] += 1

    return counts, profile


def _serve_counted(argv: list[str]) -> None:
    """In the server process: profile every thread from the start (a hook set later
    reaches no thread already running), count while switched on by SIGUSR1, write the
    counts when switched off; run ``argv`` (``-m module args...`` or ``script args...``)."""
    import runpy

    active = [False]
    counts, profile = _counter(active)
    out = Path(os.environ[_HOOK_ENV])

    def toggle(signum: int, frame: Any) -> None:
        if not active[0]:
            counts.clear()
            active[0] = True
        else:
            active[0] = False
            out.write_text(json.dumps([[f, n, c] for (f, n), c in list(counts.items())]))

    signal.signal(signal.SIGUSR1, toggle)
    threading.setprofile(profile)
    sys.setprofile(profile)
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


def _counted(base: type, out: Path) -> type:
    """A benchmark system whose server runs under the counting hook."""

    class Counted(base):  # type: ignore[misc, valid-type]
        def _spawn(self, name: str, command: list[str], *args: Any, **kw: Any) -> Any:
            os.environ[_HOOK_ENV] = str(out)
            try:
                return super()._spawn(name, [command[0], __file__, "--serve-counted",
                                             *command[1:]], *args, **kw)
            finally:
                del os.environ[_HOOK_ENV]

    Counted.name = base.name
    return Counted


def count(system_cls: type, certs: Path, work: Path, procs: Any, calls: int) -> dict[str, Counts[tuple[str, str]]]:
    out = work / f"{system_cls.name}-server-counts.json"
    system = _counted(system_cls, out)(certs, work, procs)
    system.start()
    try:
        for i in range(300):  # warm-up: first calls import and create what later ones reuse
            system.add(i, 1)
        pid = system.server_pids[0]
        os.kill(pid, signal.SIGUSR1)
        time.sleep(0.3)
        client, profile = _counter()
        sys.setprofile(profile)
        for i in range(calls):
            system.add(i, 1)
        sys.setprofile(None)
        time.sleep(0.3)  # the server's last events (the rpcs' ends) are counted too
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server: Counts[tuple[str, str]] = collections.Counter(
            {(f, n): c for f, n, c in json.loads(out.read_text())})
    finally:
        system.close()
    client.pop(("builtin", "setprofile"), None)
    return {"client": client, "server": server}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-counted":
        _serve_counted(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=25, help="dagen's largest differences to list")
    args = p.parse_args()

    from common import Processes, make_certs
    from systems import SYSTEMS

    work = Path(tempfile.mkdtemp(prefix="dagen-count-"))
    procs = Processes(work)
    certs = make_certs(work / "certs")
    try:
        dagen = count(SYSTEMS["dagen"], certs, work, procs, args.calls)
        raw = count(SYSTEMS["grpc"], certs, work, procs, args.calls)
    finally:
        procs.stop_all()
    n = args.calls
    print(f"Python-level calls per tiny call (functions and builtins called from Python; "
          f"{n} calls after 300 warm-up calls)\n")
    print("| side | dagen | raw grpcio | dagen − raw |\n|---|---:|---:|---:|")
    for side in ("client", "server"):
        d, r = sum(dagen[side].values()) / n, sum(raw[side].values()) / n
        print(f"| {side} | {d:.1f} | {r:.1f} | {d - r:+.1f} |")
    for side in ("client", "server"):
        diff = {k: (dagen[side][k] - raw[side][k]) / n for k in dagen[side].keys() | raw[side].keys()}
        shown = sorted((kv for kv in diff.items() if abs(kv[1]) >= 0.5), key=lambda kv: -kv[1])
        print(f"\n{side}, per call, dagen − raw (largest {args.top}):")
        for (file, fn), d in shown[: args.top]:
            print(f"  {d:+5.1f}  {file}:{fn}")


if __name__ == "__main__":
    main()
