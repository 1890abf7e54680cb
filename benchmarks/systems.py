"""The systems under comparison, as the benchmark process (the client) sees them.

Each one starts its server in subprocesses on 127.0.0.1 with mutual TLS, and offers
``echo(da) -> da`` (a float64 xarray.DataArray there and back), ``add(a, b) -> int``
(the tiny call) and the pids of its server processes (for peak RSS).
"""

from __future__ import annotations

import importlib
import inspect
import re
import struct
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from common import CHUNK_BYTES, HERE, HOST, PORT_LINE, Processes, wait_for_line

CALL_TIMEOUT = 1800.0  # seconds; a 3 GiB echo on a loaded 2-core machine is slow
_ADD_IN = struct.Struct("<qq")
_ADD_OUT = struct.Struct("<q")


class Skip(Exception):
    """The system cannot run here (package missing, …): recorded with the reason."""


class System:
    name = "?"
    label = "?"
    server_pids: list[int]

    def __init__(self, certs: Path, work: Path, procs: Processes | None,
                 server_args: tuple[str, ...] = ()) -> None:
        self.certs = certs
        self.work = work
        self.procs = procs  # None in a client-only process (benchmarks/many_callers.py)
        self.server_args = list(server_args)  # appended to the server's command line
        self.server_pids = []
        self.address = ""  # what connect() takes: the server's address, once started
        self._started: list[Any] = []

    # The memory a result is received into: fresh for each call, as a hand-written
    # client would do; with reuse_output, memory the caller has dropped is lent again,
    # as dagen's client does (dagen._buffers.LendingPool), to compare transports alone.
    reuse_output = False
    _lending: Any = None

    def _output(self, n: int, dtype: np.dtype) -> np.ndarray:
        if not self.reuse_output:
            return np.empty(n, dtype)
        if self._lending is None:
            from dagen._buffers import LendingPool
            from dagen._security import physical_memory

            self._lending = LendingPool(max_bytes=physical_memory() // 4)
        return self._lending.take(n * dtype.itemsize).view(dtype)

    def start(self) -> None:
        """Start the server, then connect() to it."""
        raise NotImplementedError

    def connect(self, address: str) -> None:
        """The client, for a server already running at ``address`` (also in another
        process: benchmarks/many_callers.py)."""
        raise NotImplementedError

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        raise NotImplementedError

    def add(self, a: int, b: int) -> int:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        for proc in reversed(self._started):
            self.procs.stop(proc)
        self._started.clear()

    def _spawn(self, name: str, command: list[str], pattern: re.Pattern[str] = PORT_LINE,
               **kw: Any) -> re.Match[str]:
        assert self.procs is not None, "a client-only System starts no server"
        proc, log = self.procs.start(name, command, **kw)
        self._started.append(proc)
        self.server_pids.append(proc.pid)
        try:
            return wait_for_line(proc, log, pattern)
        except RuntimeError as e:
            raise RuntimeError(f"{name} did not start: {e}") from None


def _flat_bytes(da: xr.DataArray) -> tuple[np.ndarray, memoryview]:
    a = np.ascontiguousarray(da.values)
    return a, memoryview(a.reshape(-1).view(np.uint8))


# -- dagen ---------------------------------------------------------------------------------------


class Dagen(System):
    name = "dagen"
    label = "dagen (generated client → dagen serve)"

    module = HERE / "echo_service.py"

    def start(self) -> None:
        m = self._spawn("dagen-serve", [
            sys.executable, "-m", "dagen._cli", "serve", str(self.module), "--certs",
            str(self.certs), "--host", HOST, "--port", "0", *self.server_args,
        ])
        self.connect(f"{HOST}:{int(m.group(1))}")

    def connect(self, address: str) -> None:
        self.address = address
        self.client = self._client(address)

    def _client(self, target: str, **options: Any) -> Any:
        """The generated client of echo_service (built once per run) for ``target``."""
        import subprocess

        out = self.work / "dagen-build"
        if not out.exists():
            done = subprocess.run(
                [sys.executable, "-m", "dagen._cli", "build", str(self.module), "-o", str(out)],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"dagen build failed: {done.stderr.strip()[-2000:]}")
        project = out / "echo_service_client"
        sys.path.insert(0, str(project))
        try:
            for name in [m for m in sys.modules if m.startswith("echo_service_client")]:
                del sys.modules[name]
            module_ = importlib.import_module("echo_service_client")
        finally:
            sys.path.remove(str(project))
        options["timeout"] = CALL_TIMEOUT
        if "progress_bar" in inspect.signature(module_.Client).parameters:
            # no progress bar on a terminal (make bench): measure the transport, not the bar
            options["progress_bar"] = False
        return module_.Client(target, certs=self.certs, identity="alice", **options)

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        return self.client.echo(da)

    def add(self, a: int, b: int) -> int:
        return self.client.add(a, b)

    def versions(self) -> dict[str, str]:
        import dagen

        return {"dagen": getattr(dagen, "__version__", "?")}

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.__dagen__.close()
        super().close()


class DagenRelay(Dagen):
    """dagen through a dagen relay on 127.0.0.1: `dagen relay`, `dagen serve --relay`
    (its own Unix socket, no TCP port) and the same client, its target the relay."""

    name = "dagen-relay"
    label = "dagen through `dagen relay` (SSH tunnel, SNI routing)"
    published = "echo.relay.bench"

    def start(self) -> None:
        try:
            from dagen._relay import asyncssh_module

            asyncssh = asyncssh_module()
        except Exception as e:  # noqa: BLE001 - the relay extra is missing
            raise Skip(f"the relay needs asyncssh (pip install 'dagen-grpc[relay]'): {e}") from None
        import shutil

        from dagen._security import issue_server

        folder = self.work / "relay"
        certs = folder / "certs"  # the same CA and client; a server certificate for the name
        certs.mkdir(parents=True, exist_ok=True)
        for file in ("ca.crt", "ca.key", "alice.crt", "alice.key"):
            shutil.copy(self.certs / file, certs / file)
        issue_server(certs, hosts=[self.published], ips=[])
        key = asyncssh.generate_private_key("ssh-ed25519")
        (folder / "server_key").write_bytes(key.export_private_key())
        (folder / "server_key").chmod(0o600)
        pub = key.export_public_key().decode().strip()
        (folder / "services.toml").write_text(f'[services."{self.published}"]\nkeys = ["{pub}"]\n')
        m = self._spawn("dagen-relay", [
            sys.executable, "-m", "dagen._cli", "relay", "--listen", f"{HOST}:0", "--tunnels",
            f"{HOST}:0", "--services", str(folder / "services.toml"),
        ], re.compile(r"visitors on 127\.0\.0\.1:(\d+), tunnels on 127\.0\.0\.1:(\d+)"))
        visitors, tunnels = m.group(1), m.group(2)
        host_pub = (folder / "relay_host_key.pub").read_text().split()[:2]
        (certs / "relay_known_hosts").write_text(f"[{HOST}]:{tunnels} {' '.join(host_pub)}\n")
        self._spawn("dagen-serve-relayed", [
            sys.executable, "-m", "dagen._cli", "serve", str(self.module), "--certs", str(certs),
            "--relay", f"ssh://bench@{HOST}:{tunnels}", "--relay-key", str(folder / "server_key"),
        ], re.compile(r"published as (\S+)"))
        self.client = self._client(f"{HOST}:{visitors}", server_name=self.published)


# -- raw grpcio ----------------------------------------------------------------------------------


class RawGrpc(System):
    name = "grpc"
    label = "raw grpcio (bytes chunks, identity serializers)"

    def start(self) -> None:
        m = self._spawn("raw-grpc-server", [
            sys.executable, str(HERE / "raw_grpc_server.py"), "--certs", str(self.certs),
            "--host", HOST, "--port", "0", *self.server_args,
        ])
        self.connect(f"{HOST}:{m.group(1)}")

    def connect(self, address: str) -> None:
        import grpc

        from dagen._security import CHANNEL_OPTIONS, channel_credentials

        self.address = target = address
        self.channel = grpc.secure_channel(
            target, channel_credentials(self.certs, "alice"), options=CHANNEL_OPTIONS
        )
        # grpcio sends only ``bytes`` (a memoryview raises TypeError inside its request
        # thread), so the request "serializer" is bytes(): the one copy of each chunk that
        # grpc needs anyway. Responses arrive as bytes (no deserializer).
        self._echo = self.channel.stream_stream("/bench.Raw/Echo", request_serializer=bytes)
        self._add = self.channel.unary_unary("/bench.Raw/Add")
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        a, flat = _flat_bytes(da)
        n = flat.nbytes
        requests = (flat[i : i + CHUNK_BYTES] for i in range(0, n, CHUNK_BYTES))
        out = self._output(n, np.dtype(np.uint8))
        pos = 0
        for chunk in self._echo(requests, timeout=CALL_TIMEOUT):
            k = len(chunk)
            out[pos : pos + k] = np.frombuffer(chunk, np.uint8)
            pos += k
        if pos != n:
            raise RuntimeError(f"raw grpc echo returned {pos} of {n} bytes")
        return xr.DataArray(out.view(a.dtype).reshape(a.shape), dims=da.dims, name=da.name)

    def add(self, a: int, b: int) -> int:
        return _ADD_OUT.unpack(self._add(_ADD_IN.pack(a, b), timeout=60))[0]

    def versions(self) -> dict[str, str]:
        import grpc

        return {"grpcio": grpc.__version__}

    def close(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()
        super().close()


# -- Arrow Flight --------------------------------------------------------------------------------


class Flight(System):
    name = "flight"
    label = "Arrow Flight (do_exchange / do_action)"

    def _import(self) -> Any:
        try:
            import pyarrow as pa
            import pyarrow.flight as flight
        except ImportError as e:
            raise Skip(f"pyarrow.flight is not installed ({e}); pip install pyarrow") from None
        self.pa, self.flight = pa, flight
        return flight

    def start(self) -> None:
        self._import()
        m = self._spawn("flight-server", [
            sys.executable, str(HERE / "flight_server.py"), "--certs", str(self.certs),
            "--host", HOST, "--port", "0",
        ])
        self.connect(f"{HOST}:{m.group(1)}")

    def connect(self, address: str) -> None:
        flight = self._import()
        self.address = address
        c = self.certs
        self.client = flight.FlightClient(
            f"grpc+tls://{address}",
            tls_root_certs=(c / "ca.crt").read_bytes(),
            cert_chain=(c / "alice.crt").read_bytes(),
            private_key=(c / "alice.key").read_bytes(),
        )
        self.client.wait_for_available(timeout=30)
        self.options = flight.FlightCallOptions(timeout=CALL_TIMEOUT)
        self.descriptor = flight.FlightDescriptor.for_command(b"echo")

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        pa = self.pa
        a = np.ascontiguousarray(da.values)
        flat = a.reshape(-1)
        column = pa.array(flat)  # zero-copy view of the numpy buffer
        schema = pa.schema([("data", column.type)],
                           metadata={"dims": ",".join(map(str, da.dims)),
                                     "shape": ",".join(map(str, a.shape))})
        rows = max(1, CHUNK_BYTES // a.dtype.itemsize)
        writer, reader = self.client.do_exchange(self.descriptor, self.options)
        try:
            writer.begin(schema)
            for off in range(0, len(flat), rows):
                writer.write_batch(pa.record_batch([column.slice(off, rows)], schema=schema))
            writer.done_writing()
            out = self._output(len(flat), a.dtype)
            pos = 0
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                part = chunk.data.column(0).to_numpy()  # zero-copy view of the received batch
                out[pos : pos + len(part)] = part
                pos += len(part)
        finally:
            writer.close()
        if pos != len(flat):
            raise RuntimeError(f"flight echo returned {pos} of {len(flat)} values")
        return xr.DataArray(out.reshape(a.shape), dims=da.dims, name=da.name)

    def add(self, a: int, b: int) -> int:
        action = self.flight.Action("add", _ADD_IN.pack(a, b))
        results = list(self.client.do_action(action, self.options))
        return _ADD_OUT.unpack(results[0].body.to_pybytes())[0]

    def versions(self) -> dict[str, str]:
        return {"pyarrow": self.pa.__version__}

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        super().close()


# -- dask.distributed ----------------------------------------------------------------------------


class Dask(System):
    name = "dask"
    label = "dask.distributed (client.submit, TLS)"

    def _import(self) -> Any:
        try:
            import distributed
        except ImportError as e:
            raise Skip(f"dask.distributed is not installed ({e}); "
                       "pip install 'dask[distributed]'") from None
        self.distributed = distributed
        return distributed

    def start(self) -> None:
        self._import()
        c = self.certs
        if not (c / "node.crt").exists():
            raise Skip("no certificate for dask's scheduler and worker (node.crt)")
        dask_cli = str(Path(sys.executable).parent / "dask")
        tls = ["--tls-ca-file", str(c / "ca.crt"), "--tls-cert", str(c / "node.crt"),
               "--tls-key", str(c / "node.key")]
        import os

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
        m = self._spawn("dask-scheduler", [
            dask_cli, "scheduler", "--host", HOST, "--port", "0", "--protocol", "tls",
            *tls, "--no-dashboard", "--no-show",
        ], pattern=re.compile(r"Scheduler at:\s+(tls://127\.0\.0\.1:\d+)"), env=env)
        address = m.group(1)
        self._spawn("dask-worker", [
            dask_cli, "worker", address, *tls, "--no-nanny", "--nthreads", "2",
            "--memory-limit", "0", "--no-dashboard", "--host", HOST, "--protocol", "tls",
            "--name", "bench-worker",
        ], pattern=re.compile(r"Registered to:\s+tls://"), env=env)
        self.connect(address)

    direct = False  # DaskDirect: the data goes straight to and from the worker

    def connect(self, address: str) -> None:
        distributed = self._import()
        from distributed.security import Security

        c = self.certs
        security = Security(
            tls_ca_file=str(c / "ca.crt"), tls_client_cert=str(c / "alice.crt"),
            tls_client_key=str(c / "alice.key"), require_encryption=True,
        )
        self.address = address
        self.client = distributed.Client(address, security=security, timeout=60,
                                         direct_to_workers=self.direct)
        self.client.wait_for_workers(1, timeout=60)
        import echo_service

        self._echo_fn, self._add_fn = echo_service.echo, echo_service.add

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Sending large graph of size …"
            future = self.client.submit(self._echo_fn, da, pure=False)
            try:
                return future.result(timeout=CALL_TIMEOUT)
            finally:
                future.release()

    def add(self, a: int, b: int) -> int:
        future = self.client.submit(self._add_fn, a, b, pure=False)
        try:
            return future.result(timeout=60)
        finally:
            future.release()

    def versions(self) -> dict[str, str]:
        import dask

        return {"dask": dask.__version__, "distributed": self.distributed.__version__}

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - the processes are ended by pid anyway
                pass
        super().close()


class DaskDirect(Dask):
    """dask's fastest way to move an array to a worker and back: scattered straight to
    the worker (``client.scatter(da, direct=True)``), the task run on it, the result
    gathered straight from it (``direct_to_workers=True``): the data never passes
    through the scheduler, only dask's TLS comm (Python ssl sockets, memoryview frames)."""

    name = "dask-direct"
    label = "dask.distributed, scatter and gather direct to the worker (TLS)"
    direct = True

    def echo(self, da: xr.DataArray) -> xr.DataArray:
        data = self.client.scatter(da, direct=True)
        future = self.client.submit(self._echo_fn, data, pure=False)
        try:
            return future.result(timeout=CALL_TIMEOUT)
        finally:
            future.release()
            data.release()


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (Dagen, RawGrpc, Flight, Dask)}


class RawGrpcReusing(RawGrpc):
    name = "grpc-reusing"
    label = "raw grpcio, its client reusing result memory as dagen's does"
    reuse_output = True


class FlightReusing(Flight):
    name = "flight-reusing"
    label = "Arrow Flight, its client reusing result memory as dagen's does"
    reuse_output = True


# Only in the paired rounds, for information: the transports without the cost of
# touching fresh memory on the client side.
REUSING: dict[str, type[System]] = {"grpc": RawGrpcReusing, "flight": FlightReusing}
# Only in the paired rounds, beside dask.distributed's client.submit: dask's fastest path.
DIRECT: dict[str, type[System]] = {DaskDirect.name: DaskDirect}
# Only in the relay rounds, beside dagen's direct connection.
RELAYED: dict[str, type[System]] = {DagenRelay.name: DagenRelay}
