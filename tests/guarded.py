"""Helpers of the security, hostile-input, fault and load tests: `dagen serve` of
tests/services/guarded_service.py in a subprocess (on TCP or a Unix socket, with its
own environment), its memory as /proc shows it, and raw gRPC channels."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from conftest import DAGEN, SERVICES, stop_process

GUARDED = SERVICES / "guarded_service.py"
SERVICE = "/guarded_service.GuardedService/"
MiB = 1 << 20


def proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status memory figure (VmRSS, VmHWM...) of a process, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, f"no {key} in /proc/{pid}/status"
    return int(match.group(1)) * 1024


def reset_peak(pid: int) -> None:
    """VmHWM := the process's RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Served:
    process: subprocess.Popen[str]
    target: str  # "localhost:PORT" or "unix:/path"
    log: Path | None = None
    record: Path | None = None
    banner: str = ""
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.target.rsplit(":", 1)[1])

    def status(self, key: str) -> int:
        """A /proc/<pid>/status memory figure (VmRSS, VmHWM...) in bytes."""
        return proc_status(self.pid, key)

    def rss(self) -> int:
        return self.status("VmRSS")

    def peak(self) -> int:
        """Peak RSS since the last :meth:`reset_peak` (VmHWM)."""
        return self.status("VmHWM")

    def reset_peak(self) -> None:
        reset_peak(self.pid)

    def records(self) -> list[str]:
        """What the served functions recorded ($DAGEN_TEST_RECORD)."""
        assert self.record is not None
        return self.record.read_text().splitlines() if self.record.exists() else []

    def alive(self) -> bool:
        return self.process.poll() is None

    def logged(self) -> str:
        return self.log.read_text() if self.log is not None else ""

    def stop(self) -> int | None:
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def serve(
    *args: str,
    tmp: Path,
    module: Path = GUARDED,
    env: dict[str, str] | None = None,
    name: str = "server",
) -> Served:
    """`dagen serve MODULE ARGS` (on 127.0.0.1, a free port, unless ARGS has --socket);
    its log goes to tmp/NAME.log, what its functions run to tmp/NAME.record."""
    log, record = tmp / f"{name}.log", tmp / f"{name}.record"
    listen = [] if "--socket" in args else ["--host", "127.0.0.1", "--port", "0"]
    environment = {**os.environ, "DAGEN_TEST_RECORD": str(record), **(env or {})}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*DAGEN, "serve", str(module), *listen, *args],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=environment,
        )
    assert process.stdout is not None
    banner = process.stdout.readline()
    match = re.search(r" on (\S+) \(", banner)
    if not match:
        process.kill()
        process.wait()
        raise RuntimeError(f"dagen serve did not start: {banner!r}\n{log.read_text()}")
    address = match.group(1)
    target = address if address.startswith("unix:") else "localhost:" + address.rsplit(":", 1)[1]
    return Served(process, target, log, record, banner)


def credentials(certs: Path, identity: str | None = "alice") -> grpc.ChannelCredentials:
    ca = (certs / "ca.crt").read_bytes()
    if identity is None:
        return grpc.ssl_channel_credentials(ca)
    return grpc.ssl_channel_credentials(
        ca, (certs / f"{identity}.key").read_bytes(), (certs / f"{identity}.crt").read_bytes()
    )


def raw_channel(target: str, certs: Path, identity: str | None = "alice") -> grpc.Channel:
    """A plain gRPC channel with no dagen code between the test and the wire."""
    options = [("grpc.ssl_target_name_override", "localhost")] if target.startswith("unix:") else []
    return grpc.secure_channel(target, credentials(certs, identity), options=options)


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()
