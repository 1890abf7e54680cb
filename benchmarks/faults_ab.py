#!/usr/bin/env python
"""Page faults and CPU per echo: how much fresh memory each call touches.

On a VM a minor page fault costs ~2 µs (on this project's CI machine a fresh MiB costs
~0.6 ms to touch, a reused one ~0.05 ms), so the memory a call allocates anew matters
more than the copies it makes. For each system and size: minor faults per call of the
client process and of the server's processes, and the CPU µs per call.

    python benchmarks/faults_ab.py --sizes 8KiB,1MiB --systems dagen,grpc,flight
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Processes, make_certs, parse_size  # noqa: E402
from echo_cpu_ab import measure, server_pids  # noqa: E402
from run import payload, running  # noqa: E402


def minor_faults(pids: list[int]) -> int:
    """Minor page faults of these processes so far."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
        except OSError:
            continue
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--sizes", default="1MiB")
    p.add_argument("--systems", default="dagen,grpc,flight")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dagen-faults-ab-"))
    procs = Processes(work)
    certs = make_certs(work / "certs")
    try:
        with running(args.systems.split(","), certs, work, procs) as systems:
            _compare(systems, args)
    finally:
        if os.environ.get("KEEP_WORK") is None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _compare(systems: list, args: argparse.Namespace) -> None:
    """Median time, CPU and minor page faults per echo, each size, the systems taking turns."""
    for size in (parse_size(x) for x in args.sizes.split(",")):
        da = payload(size)
        rows: dict[str, list[tuple[float, ...]]] = {s.name: [] for s in systems}
        for _ in range(args.rounds):
            for s in systems:
                for _ in range(10):
                    s.echo(da)
                pids = server_pids(s)
                c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                s0 = minor_faults(pids)
                med, cpu_c, cpu_s = measure(s, lambda s=s, da=da: s.echo(da), args.calls)
                c1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                rows[s.name].append((med, cpu_c, cpu_s, (c1 - c0) / args.calls,
                                     (minor_faults(pids) - s0) / args.calls))
        for name, r in rows.items():
            med, cc, cs, fc, fs = (statistics.median(x[i] for x in r) for i in range(5))
            print(f"{size >> 10:6d} KiB {name:8s} median {med:7.0f} µs, CPU client {cc:5.0f} + "
                  f"server {cs:5.0f} µs, faults per call client {fc:6.0f} + server {fs:6.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
