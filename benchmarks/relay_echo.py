"""One echo of a large array, direct and through a dagen relay, on this machine.

    PYTHONPATH=src python benchmarks/relay_echo.py [--size 256MiB] [--repeat 1]

Starts `dagen relay`, `dagen serve --relay` (Unix socket, no TCP port) and a direct
`dagen serve --port` of benchmarks/echo_service.py on 127.0.0.1, and times
`echo(da)` of a float64 DataArray of SIZE through each, and tiny calls. MiB/s is the array's size
over the round trip (every byte goes there and back). Beside each echo, the CPU seconds
the server process (with its tunnel thread, when relayed) and the relay spent on it:
steadier than the wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from dagen._build import build
from dagen._relay import asyncssh_module
from dagen._security import init_ca, issue_client, issue_server

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import cpu_seconds  # noqa: E402

DAGEN = [sys.executable, "-m", "dagen._cli"]
NAME = "echo.relay.bench"


def start(command: list[str], pattern: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not re.search(pattern, line):
        proc.kill()
        raise SystemExit(f"{command[3]} did not start: {line!r} (see {log})")
    return proc, line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tiny", type=int, default=200, help="tiny calls (add) to time")
    args = parser.parse_args()
    size = int(args.size.removesuffix("MiB")) << 20
    tmp = Path(tempfile.mkdtemp(prefix="dagen-relay-bench-"))
    certs = tmp / "certs"
    init_ca(certs)
    issue_server(certs, hosts=[NAME, "localhost"], ips=["127.0.0.1"])
    issue_client(certs, "alice")
    key = asyncssh_module().generate_private_key("ssh-ed25519")
    (tmp / "server_key").write_bytes(key.export_private_key())
    (tmp / "server_key").chmod(0o600)
    (tmp / "services.toml").write_text(
        f'[services."{NAME}"]\nkeys = ["{key.export_public_key().decode().strip()}"]\n')
    procs = []
    try:
        relay, line = start([*DAGEN, "relay", "--listen", "127.0.0.1:0", "--tunnels",
                             "127.0.0.1:0", "--services", str(tmp / "services.toml")],
                            r"visitors on", tmp / "relay.log")
        procs.append(relay)
        visitors, tunnels = re.search(r":(\d+), tunnels on [\d.]+:(\d+)", line).groups()
        host_pub = (tmp / "relay_host_key.pub").read_text().split()[:2]
        (certs / "relay_known_hosts").write_text(f"[127.0.0.1]:{tunnels} {' '.join(host_pub)}\n")
        service = str(HERE / "echo_service.py")
        relayed, _ = start([*DAGEN, "serve", service, "--certs", str(certs), "--relay",
                            f"ssh://bench@127.0.0.1:{tunnels}", "--relay-key",
                            str(tmp / "server_key")], r"published as", tmp / "relayed.log")
        procs.append(relayed)
        direct, line = start([*DAGEN, "serve", service, "--certs", str(certs), "--port", "0"],
                             r"on 127\.0\.0\.1:\d+", tmp / "direct.log")
        procs.append(direct)
        port = re.search(r"on 127\.0\.0\.1:(\d+)", line).group(1)
        client_dir = build(service, tmp / "build").client
        sys.path.insert(0, str(client_dir))
        import echo_service_client as m  # noqa: PLC0415

        da = xr.DataArray(np.random.default_rng(0).random(size // 8), dims="x", name="x")
        for label, client, pids in [
            ("direct", m.Client(f"127.0.0.1:{port}", certs=certs, identity="alice",
                                server_name="localhost"), {"server": direct.pid}),
            ("relay", m.Client(f"127.0.0.1:{visitors}", certs=certs, identity="alice",
                               server_name=NAME), {"server": relayed.pid, "relay": relay.pid}),
        ]:
            client.echo(da[:1000])  # connect
            times = []
            for _ in range(args.tiny):
                t = time.perf_counter()
                client.add(1, 2)
                times.append(time.perf_counter() - t)
            if times:
                print(f"{label:7s} tiny call (add): median {np.median(times) * 1e3:.2f} ms "
                      f"over {len(times)}", flush=True)
            for _ in range(args.repeat):
                cpu = {k: cpu_seconds(pid) for k, pid in pids.items()}
                t = time.perf_counter()
                out = client.echo(da)
                seconds = time.perf_counter() - t
                cpu = {k: cpu_seconds(pid) - cpu[k] for k, pid in pids.items()}
                assert out.equals(da)
                del out
                print(f"{label:7s} {size >> 20} MiB echo: {seconds:6.2f} s, "
                      f"{(size >> 20) / seconds:7.1f} MiB/s; CPU s: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()), flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
