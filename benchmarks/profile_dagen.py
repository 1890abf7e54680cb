#!/usr/bin/env python
"""Where the time of a dagen echo goes: py-spy profiles of the client and the server.

Starts ``dagen serve benchmarks/echo_service.py`` (mutual TLS, 127.0.0.1) under
``py-spy record``, runs a client doing --calls echoes of --size under py-spy too, and
prints, for each side, the share of samples per function (self time, with native
frames) and per thread, from py-spy's collapsed stacks. The raw profiles (and
speedscope files, with --speedscope) stay in --out.

    pip install py-spy
    python benchmarks/profile_dagen.py --size 64MiB --calls 20
    python benchmarks/profile_dagen.py --system grpc      # the raw grpcio echo, for contrast
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import PORT_LINE, Processes, make_certs, parse_size, wait_for_line  # noqa: E402


def client_main(system: str, target_port: int, certs: Path, work: Path, size: int,
                calls: int, tiny: int) -> None:
    """The client side (runs under py-spy): ``calls`` echoes of ``size``, or ``tiny``
    calls of add()."""
    import numpy as np
    import xarray as xr
    from systems import Dagen, RawGrpc

    procs = Processes(work)
    s = (Dagen if system == "dagen" else RawGrpc)(certs, work, procs)
    # connect to the already running server instead of starting one
    if system == "dagen":
        import importlib

        sys.path.insert(0, str(work / "dagen-build" / "echo_service_client"))
        mod = importlib.import_module("echo_service_client")
        s.client = mod.Client(f"127.0.0.1:{target_port}", certs=certs, identity="alice")
    else:
        import grpc

        from dagen._security import CHANNEL_OPTIONS, channel_credentials

        s.channel = grpc.secure_channel(f"127.0.0.1:{target_port}",
                                        channel_credentials(certs, "alice"),
                                        options=CHANNEL_OPTIONS)
        s._echo = s.channel.stream_stream("/bench.Raw/Echo", request_serializer=bytes)
        s._add = s.channel.unary_unary("/bench.Raw/Add")
    if tiny:
        for i in range(50):
            s.add(i, 1)
        t0 = time.perf_counter()
        for i in range(tiny):
            s.add(i, 1)
        dt = time.perf_counter() - t0
        print(f"client: {tiny} tiny calls in {dt:.2f} s, {dt / tiny * 1e6:.0f} µs each",
              flush=True)
        return
    da = xr.DataArray(np.arange(size // 8, dtype=np.float64), dims=("x",), name="payload")
    s.echo(da)
    t0 = time.perf_counter()
    for _ in range(calls):
        out = s.echo(da)
        del out
    dt = time.perf_counter() - t0
    print(f"client: {calls} echoes of {size >> 20} MiB in {dt:.2f} s, "
          f"{2 * size * calls / dt / 2**20:.0f} MiB/s", flush=True)


def summarize(raw: Path, title: str, top: int) -> str:
    """Self-time shares per function and per thread from py-spy's raw output."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        leaf = frames[-1]
        leaf = re.sub(r"\s*\((?:[^()]*/)?([^()/]+):\d+\)$", r" (\1)", leaf)
        self_time[leaf] += n
        seen = set()
        for frame in frames[1:]:
            if "dagen/" in frame or "grpc/" in frame or "benchmarks/" in frame:
                name = re.sub(r"\s*\((?:[^()]*/)?([^()/]+):\d+\)$", r" (\1)", frame)
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += n
    out = [f"== {title}: {total} samples", "-- by thread (first frame)"]
    for name, n in threads.most_common(8):
        out.append(f"  {100 * n / total:5.1f}%  {name[:110]}")
    out.append("-- self time by function")
    for name, n in self_time.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {name[:110]}")
    out.append("-- inclusive time of dagen, grpc and benchmark functions")
    for name, n in inclusive.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {name[:110]}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", choices=["dagen", "grpc"], default="dagen")
    p.add_argument("--size", default="64MiB")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--tiny", type=int, default=0,
                   help="profile this many tiny add() calls instead of echoes")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=None, help="folder for the profiles (default: a temp dir)")
    p.add_argument("--no-native", action="store_true", help="Python frames only")
    p.add_argument("--idle", action="store_true",
                   help="also sample waiting threads (wall-clock view of where a call waits)")
    p.add_argument("--client", nargs=3, metavar=("PORT", "CERTS", "WORK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    size = parse_size(args.size)
    if args.client:
        port, certs, work = args.client
        client_main(args.system, int(port), Path(certs), Path(work), size, args.calls,
                    args.tiny)
        return

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    work = Path(args.out or tempfile.mkdtemp(prefix="dagen-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    certs = make_certs(work / "certs")
    procs = Processes(work)
    spy = [pyspy, "record", "-r", str(args.rate), "--threads", "-f", "raw"]
    if not args.no_native:
        spy.append("--native")
    if args.idle:
        spy.append("--idle")
    try:
        if args.system == "dagen":
            module = HERE / "echo_service.py"
            subprocess.run([sys.executable, "-m", "dagen._cli", "build", str(module), "-o",
                            str(work / "dagen-build")], check=True, capture_output=True)
            server_cmd = [sys.executable, "-m", "dagen._cli", "serve", str(module),
                          "--certs", str(certs), "--host", "127.0.0.1", "--port", "0"]
        else:
            server_cmd = [sys.executable, str(HERE / "raw_grpc_server.py"), "--certs",
                          str(certs), "--port", "0"]
        server_raw = work / f"{args.system}-server.txt"
        server, log = procs.start("server", [*spy, "-o", str(server_raw), "--", *server_cmd])
        port = int(wait_for_line(server, log, PORT_LINE).group(1))
        client_raw = work / f"{args.system}-client.txt"
        done = subprocess.run(
            [*spy, "-o", str(client_raw), "--", sys.executable, __file__, "--system",
             args.system, "--size", args.size, "--calls", str(args.calls),
             "--tiny", str(args.tiny),
             "--client", str(port), str(certs), str(work)],
            capture_output=True, text=True, check=False,
        )
        print("\n".join(line for line in done.stdout.splitlines() if line.startswith("client")))
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
        # end the server (py-spy's child) by its pid; py-spy then writes its profile
        import psutil

        for child in psutil.Process(server.pid).children():
            os.kill(child.pid, signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        procs.stop_all()
    print(summarize(client_raw, f"{args.system} client", args.top))
    print()
    print(summarize(server_raw, f"{args.system} server", args.top))
    print(f"\nraw profiles in {work}")


if __name__ == "__main__":
    main()
