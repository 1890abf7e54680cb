#!/usr/bin/env python
"""How fast a side path for bulk bytes would echo large arrays (issue 19): a prototype
measurement for a proposal, not a dagen feature.

The side path is a second TLS connection with dagen's certificates (mutual TLS, the
same CA, server and client certificates as `common.make_certs` makes), carrying only
the array's bytes: an 8-byte length, then the bytes, sent from the numpy buffer
(``sendall(memoryview)``) and received straight into a preallocated numpy array
(``recv_into`` on the ssl socket), as dask's comm does with memoryview frames. The
server holds the whole array (as dagen's server and the other echo servers do), then
sends it back the same way. There is no gRPC on it: in a real design, the gRPC call
would carry the header (dtype, shape, a token naming the side transfer) and fall back
to chunks in the stream for clients without the side path, so the .proto stays the
whole truth.

Measured in one run, the systems all up and taking turns (the order reversed every
round): the side path, dagen's echo as it is, and dask (scatter and gather direct to
the worker, dask's fastest path; `--systems` adds `dask`, client.submit). Throughput
= 2 × payload / time (median over the rounds); CPU seconds of client and server per
echo. Writes benchmarks/results/bulk-side-path-<timestamp>.{md,json}.

    python benchmarks/bulk_side_path.py                      # 1 GiB and 3 GiB, 3 rounds
    python benchmarks/bulk_side_path.py --sizes 64MiB --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from common import (  # noqa: E402
    HOST,
    Processes,
    available_memory,
    cpu_seconds,
    drop_free_memory,
    fmt_size,
    make_certs,
    parse_size,
)
from systems import DIRECT, SYSTEMS, System  # noqa: E402

_LENGTH = struct.Struct("<Q")
RECV_BYTES = 1 << 20  # asked of each recv_into (ssl hands out at most a TLS record's worth)


def recv_exactly(sock: ssl.SSLSocket, view: memoryview) -> None:
    """Fill ``view`` from the socket: ``recv_into`` straight into the array's memory."""
    pos, n = 0, len(view)
    while pos < n:
        got = sock.recv_into(view[pos : pos + RECV_BYTES])
        if not got:
            raise ConnectionError(f"the peer closed the side path after {pos} of {n} bytes")
        pos += got


def serve(certs: Path, host: str, port: int) -> None:
    """The side path's server: mutual TLS with dagen's server certificate; per echo,
    a length, the bytes into a fresh array, then the same bytes back."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "server.crt"), str(certs / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server((host, port))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"side path: serving on {host}:{listener.getsockname()[1]}", flush=True)
    while True:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            head = bytearray(_LENGTH.size)
            while True:
                try:
                    recv_exactly(conn, memoryview(head))
                except ConnectionError:
                    break
                (n,) = _LENGTH.unpack(head)
                held = np.empty(n, np.uint8)  # fresh memory, as every other server's call
                recv_exactly(conn, memoryview(held))
                conn.sendall(memoryview(held))
                del held


class SidePath(System):
    name = "side-path"
    label = "a second TLS connection carrying only the bytes (prototype)"

    def start(self) -> None:
        m = self._spawn("side-path-server", [
            sys.executable, str(Path(__file__).resolve()), "--serve", "--certs", str(self.certs),
        ])
        self.connect(f"{HOST}:{m.group(1)}")

    def connect(self, address: str) -> None:
        c = self.certs
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(c / "ca.crt"))
        context.load_cert_chain(str(c / "alice.crt"), str(c / "alice.key"))
        host, port = address.rsplit(":", 1)
        self.address = address
        self.sock = context.wrap_socket(socket.create_connection((host, int(port))),
                                        server_hostname=host)

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        a = np.ascontiguousarray(da.values)
        data = memoryview(a.reshape(-1).view(np.uint8))
        self.sock.sendall(_LENGTH.pack(data.nbytes))
        self.sock.sendall(data)
        out = np.empty(a.shape, a.dtype)  # preallocated: the header says dtype and shape
        recv_exactly(self.sock, memoryview(out.reshape(-1).view(np.uint8)))
        return xr.DataArray(out, dims=da.dims, name=da.name)

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()
        super().close()


CLASSES: dict[str, type[System]] = {SidePath.name: SidePath, "dagen": SYSTEMS["dagen"],
                                    "dask": SYSTEMS["dask"], **DIRECT}


def log(msg: str) -> None:
    print(f"[side path {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def measure(args: argparse.Namespace, work: Path, procs: Processes) -> dict[str, Any]:
    from run import check_echo, payload, running

    certs = make_certs(work / "certs")
    names = args.systems.split(",")
    record: dict[str, Any] = {}
    log(f"starting the servers of {', '.join(names)}")
    with running(names, certs, work, procs, classes=CLASSES) as systems:
        for size in sorted(parse_size(s) for s in args.sizes.split(",")):
            key = fmt_size(size)
            avail = available_memory()
            if avail is not None and avail < args.memory_factor * size:
                record[key] = {"skipped": f"{avail / 2**30:.1f} GiB of RAM available, "
                                          f"{args.memory_factor:g} × the payload needed"}
                log(f"{key}: skipped: {record[key]['skipped']}")
                continue
            da = payload(size)
            rows: dict[str, dict[str, list[float]]] = {
                s.name: {"times_s": [], "cpu_client_s": [], "cpu_server_s": []} for s in systems}
            for system in systems:  # warm-up, checked
                check_echo(da, system.echo(da))
                drop_free_memory()
            for r in range(args.rounds):
                for system in systems if r % 2 == 0 else systems[::-1]:
                    drop_free_memory()
                    row = rows[system.name]
                    c0 = cpu_seconds(os.getpid())
                    s0 = sum(cpu_seconds(p) for p in system.server_pids)
                    t0 = time.perf_counter()
                    out = system.echo(da)
                    row["times_s"].append(time.perf_counter() - t0)
                    row["cpu_client_s"].append(cpu_seconds(os.getpid()) - c0)
                    row["cpu_server_s"].append(sum(cpu_seconds(p) for p in system.server_pids) - s0)
                    check_echo(da, out)
                    del out
                log(f"{key}, round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{n} {2 * size / row['times_s'][-1] / 2**20:.0f} MiB/s"
                    for n, row in rows.items()))
            record[key] = {"bytes": size, "systems": {
                n: {**row, "throughput_Bps": 2 * size / statistics.median(row["times_s"]),
                    "cpu_s": statistics.median(
                        c + s for c, s in zip(row["cpu_client_s"], row["cpu_server_s"],
                                              strict=True))}
                for n, row in rows.items()}}
            del da
            drop_free_memory()
    return record


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Bulk side path: prototype measurement {results['timestamp']}", "",
             f"`{results['command']}`; load average before {results['load_before']}, "
             f"after {results['load_after']}; {results['machine']['cores']} cores.", "",
             "Echo of a float64 DataArray over mutual TLS on 127.0.0.1, the systems all up "
             f"and taking turns ({results['rounds']} rounds, the order reversed every round); "
             "MiB/s = 2 × payload / median time; CPU = client + server seconds per echo "
             "(median). `side-path`: a second TLS connection with dagen's certificates "
             "carrying only the bytes, recv_into preallocated numpy arrays "
             "(benchmarks/bulk_side_path.py).", ""]
    for key, rec in results["sizes"].items():
        if "skipped" in rec:
            lines += [f"## {key}", "", f"Skipped: {rec['skipped']}", ""]
            continue
        systems = rec["systems"]
        lines += [f"## {key}", "", "| system | MiB/s (median) | each round | CPU s per echo | "
                  "/ dagen |", "| --- | ---: | --- | ---: | ---: |"]
        dagen = (systems.get("dagen") or {}).get("throughput_Bps")
        for name, row in systems.items():
            each = ", ".join(f"{2 * rec['bytes'] / t / 2**20:.0f}" for t in row["times_s"])
            ratio = f"{row['throughput_Bps'] / dagen:.2f}" if dagen else "–"
            lines.append(f"| {name} | {row['throughput_Bps'] / 2**20:.0f} | {each} | "
                         f"{row['cpu_s']:.2f} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--sizes", default="1GiB,3GiB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--systems", default="side-path,dagen,dask-direct",
                   help=f"comma-separated, from {','.join(CLASSES)}")
    p.add_argument("--memory-factor", type=float, default=5.0,
                   help="skip a size unless this many times it is available in RAM")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.certs, HOST, args.port)
        return 0
    unknown = set(args.systems.split(",")) - set(CLASSES)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {list(CLASSES)}")
    from run import load, machine_info

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"timestamp": stamp,
                               "command": " ".join([Path(sys.executable).name, *sys.argv]),
                               "machine": machine_info(), "rounds": args.rounds,
                               "load_before": load()}
    work = Path(tempfile.mkdtemp(prefix="dagen-side-path-"))
    procs = Processes(work)
    try:
        results["sizes"] = measure(args, work, procs)
    finally:
        procs.stop_all()
    results["load_after"] = load()
    shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bulk-side-path-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    stem.with_suffix(".md").write_text(text)
    print(text)
    log(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
