"""Helpers shared by the benchmark driver and its server scripts: sizes, certificates,
subprocesses (always ended by their pid), and peak-RSS measurement."""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dagen._wire import DEFAULT_CHUNK_BYTES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
CHUNK_BYTES = DEFAULT_CHUNK_BYTES  # every system sends chunks of dagen's size
PORT_LINE = re.compile(r"on 127\.0\.0\.1:(\d+)")

# -- sizes -------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (clock ticks: ~10 ms)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available_memory() -> int | None:
    """Bytes of RAM available now (psutil), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size like 1MiB, 64MiB or 3GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# -- certificates ------------------------------------------------------------------------------


def make_certs(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and the client "alice", made
    with dagen's own API; plus "node" (server+client usage) for dask's scheduler and
    worker, which both listen and connect."""
    from dagen._security import init_ca, issue_client, issue_server

    folder.mkdir(parents=True, exist_ok=True)
    init_ca(folder, name="dagen benchmark CA")
    issue_server(folder, hosts=["localhost"], ips=["127.0.0.1"])
    issue_client(folder, "alice")
    try:
        _issue_node(folder)
    except Exception as e:  # noqa: BLE001 - only dask needs it; it is skipped without
        print(f"[bench] could not issue the dask node certificate: {e}", file=sys.stderr)
    return folder


def _issue_node(folder: Path) -> None:
    """A certificate usable both as TLS server and TLS client (dask's scheduler and
    worker connect to each other in both directions), signed by the same CA. dagen's
    issue_server/issue_client give one usage each, so this uses its helpers directly."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from dagen._security._certs import load_ca

    ca_cert, ca_key = load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "node.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    os.chmod(folder / "node.key", 0o600)
    (folder / "node.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# -- subprocesses ------------------------------------------------------------------------------


# Run in the child instead of the command, which it then becomes (same pid): SIGTERM
# when the benchmark process dies (even by SIGKILL). Not a preexec_fn: Python code
# between fork and exec, in a process whose grpc threads are running, crashed the child
# now and then (SIGSEGV); without one, subprocess uses vfork and runs nothing there.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except OSError:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("the benchmark process is gone")
os.execvp(sys.argv[2], sys.argv[2:])
"""


@dataclass
class Processes:
    """Every subprocess the benchmark started; ``stop_all`` ends each by its pid."""

    log_dir: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc, log

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in list(reversed(self.procs)):
            self.stop(proc, grace=5.0)


def wait_for_line(proc: subprocess.Popen, log: Path, pattern: re.Pattern[str],
                  timeout: float = 120.0) -> re.Match[str]:
    """Poll a subprocess's log for a line (its listening address)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        m = pattern.search(text)
        if m:
            return m
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"no line matching {pattern.pattern!r} within {timeout:.0f} s")


# -- memory ------------------------------------------------------------------------------------


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_readers(pids: list[int]) -> list:
    """Per pid, a function returning its RSS: psutil's when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        return [lambda p=p: rss(p) for p in pids]
    return [psutil.Process(p).memory_info for p in pids]


def hwm(pid: int) -> int | None:
    """Peak RSS since the last reset (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak RSS of this process and of the server's processes during a block, minus
    their RSS before it: sampled from a thread every ``interval`` s (psutil-style,
    through /proc/<pid>/statm), and also read from the kernel's exact high-water mark
    (VmHWM, reset through /proc/<pid>/clear_refs) where that is allowed. The larger
    of the two is reported. The server's figure sums its processes."""

    def __init__(self, server_pids: list[int], interval: float = 0.01) -> None:
        self.me = os.getpid()
        self.server_pids = server_pids
        self.interval = interval
        self._stop = threading.Event()
        self.result: dict[str, float | int | bool] = {}

    def _server_rss(self) -> int:
        return sum(_value(read()) for read in self._servers)

    def __enter__(self) -> PeakRSS:
        self._me, *self._servers = _rss_readers([self.me, *self.server_pids])
        self.client_before = _value(self._me())
        self.server_before = self._server_rss()
        self.hwm_ok = all(reset_hwm(p) for p in [self.me, *self.server_pids])
        self.client_peak = self.client_before
        self.server_peak = self.server_before
        self.samples = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client_peak = max(self.client_peak, _value(self._me()))
                self.server_peak = max(self.server_peak, self._server_rss())
                self.samples += 1
            except Exception:  # noqa: BLE001 - a server that exited: stop sampling
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        client_sampled, server_sampled = self.client_peak, self.server_peak
        client_hwm = server_hwm = None
        if self.hwm_ok:
            client_hwm = hwm(self.me)
            values = [hwm(p) for p in self.server_pids]
            server_hwm = sum(values) if all(v is not None for v in values) else None  # type: ignore[misc]
        self.result = {
            "client_before": self.client_before,
            "server_before": self.server_before,
            "client_extra_sampled": client_sampled - self.client_before,
            "server_extra_sampled": server_sampled - self.server_before,
            "client_extra_hwm": None if client_hwm is None else client_hwm - self.client_before,
            "server_extra_hwm": None if server_hwm is None else server_hwm - self.server_before,
            "samples": self.samples,
        }
        self.result["client_extra"] = max(
            v for v in (self.result["client_extra_sampled"], self.result["client_extra_hwm"])
            if v is not None
        )
        self.result["server_extra"] = max(
            v for v in (self.result["server_extra_sampled"], self.result["server_extra_hwm"])
            if v is not None
        )


def _value(info) -> int:
    return info if isinstance(info, int) else info.rss


def drop_free_memory() -> None:
    """Give freed heap back to the OS so the next "before" RSS is not inflated."""
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
