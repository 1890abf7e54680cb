"""Reaching a server on an HPC login node: a Unix socket (mode 0600), an SSH tunnel
(simulated by a byte-for-byte TCP forwarder, as `ssh -L` is) with the TLS server name
given to the client, and keepalive settings that both ends agree on."""

from __future__ import annotations

import importlib
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import DAGEN
from forwarding import Forwarder
from guarded import GUARDED, serve

import dagen
import dagen._last
import dagen._security._tls
import dagen._serve
from dagen._arrays import EncodeContext
from dagen._introspect import load_module
from dagen._protocol import INLINE_HEADER, ONE_FRAME_HEADER
from dagen._security import Policy, init_ca, issue_client, issue_server
from dagen._security._tls import (
    CHANNEL_OPTIONS,
    KEEPALIVE_TIME_MS,
    MIN_PING_INTERVAL_MS,
    SERVER_OPTIONS,
)
from dagen._serve import create_server
from dagen._server import ServerOptions, Servicer


@pytest.fixture(scope="module")
def login_node(tmp_path_factory) -> Path:
    """Certificates of a server known only as login1.hpc.example.org (no localhost)."""
    folder = tmp_path_factory.mktemp("login-node-certs")
    init_ca(folder)
    issue_server(folder, hosts=["login1.hpc.example.org"], ips=[])
    issue_client(folder, "alice")
    return folder


# -- a Unix socket ---------------------------------------------------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder for socket files (their paths are limited to ~108 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dagen-") as folder:
        yield Path(folder)


def test_serve_on_a_unix_socket_with_mode_0600(sock_dir, certs, tmp_path, guarded_client_module):
    path = sock_dir / "guarded.sock"
    served = serve("--socket", str(path), "--certs", str(certs.folder), tmp=tmp_path)
    try:
        assert served.target == f"unix:{path.resolve()}"
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with guarded_client_module.Client(served.target, certs=certs.folder, identity="alice",
                                          timeout=30) as client:
            assert client.add(2, 3) == 5
            assert client.total(np.ones(1000)) == 1000.0
            assert client.whoami()[0] == "alice"  # mutual TLS over the socket
        # a second server on the same socket is refused, the first goes on
        done = subprocess.run([*DAGEN, "serve", str(GUARDED), "--socket", str(path), "--certs",
                               str(certs.folder)], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "a server is listening on it already" in done.stderr
        assert served.alive()
    finally:
        served.stop()


def test_a_stale_socket_file_is_replaced(sock_dir, tmp_path, guarded_client_module):
    path = sock_dir / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening, closed: what a killed server leaves
    stale.close()
    served = serve("--socket", str(path), "--insecure", tmp=tmp_path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with guarded_client_module.Client(served.target, insecure=True, timeout=30) as client:
            assert client.add(1, 1) == 2
    finally:
        served.stop()


def test_a_file_that_is_not_a_socket_is_left_alone(sock_dir):
    path = sock_dir / "precious.txt"
    path.write_text("data")
    done = subprocess.run([*DAGEN, "serve", str(GUARDED), "--socket", str(path), "--insecure"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "exists and is not a socket" in done.stderr
    assert path.read_text() == "data"


# -- an SSH tunnel ---------------------------------------------------------------------------------


def test_through_a_tunnel_with_the_server_name(login_node, tmp_path, guarded_client_module):
    """`ssh -L PORT:localhost:50051 login1`: the client connects to localhost:PORT and
    checks the certificate against the login node's name."""
    served = serve("--certs", str(login_node), tmp=tmp_path)
    tunnel = Forwarder(("127.0.0.1", served.port))
    target = f"localhost:{tunnel.port}"
    Client = guarded_client_module.Client
    try:
        with Client(target, certs=login_node, identity="alice", timeout=10) as wrong:
            with pytest.raises(dagen.ServerUnavailable, match="TLS handshake failed"):
                wrong.add(1, 1)  # the certificate does not name localhost
        with Client(target, certs=login_node, identity="alice", timeout=30,
                    server_name="login1.hpc.example.org") as client:
            assert client.add(20, 22) == 42
            data = np.random.default_rng(0).standard_normal(300_000)  # chunks, through it
            assert client.total(data) == pytest.approx(data.sum())
        assert tunnel.connections >= 2
    finally:
        tunnel.close()
        served.stop()


def test_server_name_from_the_environment(login_node, tmp_path, guarded_client_module,
                                          clean_env):
    served = serve("--certs", str(login_node), tmp=tmp_path)
    tunnel = Forwarder(("127.0.0.1", served.port))
    try:
        clean_env.setenv("DAGEN_SERVER_NAME", "login1.hpc.example.org")
        with guarded_client_module.Client(f"localhost:{tunnel.port}", certs=login_node,
                                          identity="alice", timeout=30) as client:
            assert client.add(1, 2) == 3
    finally:
        tunnel.close()
        served.stop()


def test_through_a_tunnel_to_a_unix_socket(login_node, sock_dir, tmp_path,
                                           guarded_client_module):
    """`ssh -L PORT:/path/to/dagen.sock login1`: the socket on the login node, mode 0600,
    reached from the visitor's laptop."""
    path = sock_dir / "login.sock"
    served = serve("--socket", str(path), "--certs", str(login_node), tmp=tmp_path)
    tunnel = Forwarder(str(path))
    try:
        with guarded_client_module.Client(f"localhost:{tunnel.port}", certs=login_node,
                                          identity="alice", timeout=30,
                                          server_name="login1.hpc.example.org") as client:
            assert client.whoami()[0] == "alice"
        # on the login node itself, the socket with the same name
        with guarded_client_module.Client(served.target, certs=login_node, identity="alice",
                                          timeout=30,
                                          server_name="login1.hpc.example.org") as client:
            assert client.add(1, 1) == 2
    finally:
        tunnel.close()
        served.stop()


# -- keepalive -------------------------------------------------------------------------------------


def test_keepalive_settings_agree():
    client, server = dict(CHANNEL_OPTIONS), dict(SERVER_OPTIONS)
    # the client pings no more often than the server accepts, with a margin for jitter
    assert client["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS
    assert server["grpc.http2.min_ping_interval_without_data_ms"] == MIN_PING_INTERVAL_MS
    assert KEEPALIVE_TIME_MS >= 2 * MIN_PING_INTERVAL_MS
    # often enough for firewalls that drop connections idle for 4 minutes or more
    assert KEEPALIVE_TIME_MS <= 180_000
    # pings go on during a silent call of hours (gRPC's default stops after 2) ...
    assert client["grpc.http2.max_pings_without_data"] == 0
    # ... and between calls, which the server allows
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.keepalive_permit_without_calls"] == 1
    # the server finds callers that vanished without closing their connection
    assert server["grpc.keepalive_time_ms"] <= 300_000


@pytest.fixture(scope="module")
def guarded_servicer(guarded_build):
    sys.path.insert(0, str(guarded_build.out))
    try:
        pb2 = importlib.import_module("guarded_service_pb2")
    finally:
        sys.path.remove(str(guarded_build.out))
    return type("GuardedServicer", (Servicer,), {}, module=load_module(str(GUARDED)), pb2=pb2)


@pytest.mark.parametrize("server_interval_ms, agree", [
    pytest.param(500, True, id="production-ratio"),
    pytest.param(5000, False, id="server-stricter-than-client"),
])
def test_keepalive_scaled_down_never_draws_too_many_pings(
    guarded_servicer, guarded_client_module, certs, monkeypatch, server_interval_ms, agree
):
    """The production settings scaled from minutes to a second: an idle connection and
    a silent call keep their connection. The control, a server stricter than its
    clients, answers them with GOAWAY too_many_pings (and the connection drops)."""
    def scaled(options, **values):
        return list({**dict(options), **values}.items())

    client_ms = 1000  # the production ratio: the server accepts twice as often
    monkeypatch.setattr(dagen._security._tls, "CHANNEL_OPTIONS", scaled(
        CHANNEL_OPTIONS, **{"grpc.keepalive_time_ms": client_ms}))
    monkeypatch.setattr(dagen._serve, "SERVER_OPTIONS", scaled(
        SERVER_OPTIONS, **{"grpc.http2.min_ping_interval_without_data_ms": server_interval_ms,
                           "grpc.keepalive_time_ms": 100_000}))
    server, port = create_server(guarded_servicer(), host="127.0.0.1", port=0,
                                 certs=str(certs.folder))
    server.start()
    states: list[str] = []
    try:
        with guarded_client_module.Client(f"localhost:{port}", certs=certs.folder,
                                          identity="alice", timeout=30) as client:
            assert client.add(1, 1) == 2
            client.__dagen__.channel.subscribe(lambda s: states.append(s.name), try_to_connect=False)
            time.sleep(3.5)  # idle: three pings
            assert client.sleep(1.0) == 1.0  # a silent call
        dropped = "IDLE" in states or "TRANSIENT_FAILURE" in states
        print(f"server accepts a ping every {server_interval_ms} ms, client pings every "
              f"{client_ms} ms: connection states {states}")
        assert dropped is not agree
    finally:
        server.stop(None)


# -- a request of one frame ------------------------------------------------------------------------


def test_a_request_of_one_frame_takes_the_unary_stream_path_both_ends(
    guarded_servicer, guarded_client_module, certs, monkeypatch, tmp_path
):
    """A dagen client whose request is one frame (its arrays inline) sends it with the
    single-frame stub and the dagen-frames header; the server serves it with the
    one-frame handler and sends the response with the call's status. A caller the policy
    refuses is refused there too, before the function runs."""
    record = tmp_path / "record"
    monkeypatch.setenv("DAGEN_TEST_RECORD", str(record))  # the function runs in this process
    sent_with_status: list[bool] = []
    original = dagen._last.send_with_status

    def spy_status(context, frame):
        sent = original(context, frame)
        sent_with_status.append(sent)
        return sent

    monkeypatch.setattr(dagen._last, "send_with_status", spy_status)
    policy = Policy.from_toml({"allow": {"total": ["alice"], "add": ["*"]}}, "test")
    servicer = guarded_servicer(ServerOptions(policy=policy))
    served_last: list[bool] = []  # per call that reached the servicer: its one-frame path?
    stream = servicer._stream

    def spy_stream(method, context, call, frames, started, last=False):
        served_last.append(last)
        return stream(method, context, call, frames, started, last)

    servicer._stream = spy_stream
    server, port = create_server(servicer, host="127.0.0.1", port=0, certs=str(certs.folder))
    server.start()
    try:
        with guarded_client_module.Client(f"localhost:{port}", certs=certs.folder,
                                          identity="alice", timeout=30) as client:
            conn = client.__dagen__
            used: list[str] = []
            for name, stubs in (("single", conn._single), ("stream", conn.stubs)):
                def spy(*args, _stub=stubs["total"], _name=name, **kwargs):
                    used.append(_name)
                    return _stub(*args, **kwargs)
                stubs["total"] = spy
            a = np.arange(100.0)
            assert client.total(a, label="first") == a.sum()  # chunks: the server's word unknown
            assert conn.server_reads_inline
            assert client.total(a, label="second") == a.sum()  # inline: one frame
        assert used == ["stream", "single"]
        assert served_last == [False, True]
        assert sent_with_status == [True]  # the response went with the status
        assert record.read_text().splitlines() == ["total first", "total second"]
        # bob, refused by the policy, through the one-frame handler
        folder = Path(certs.folder)
        bob = grpc.ssl_channel_credentials((folder / "ca.crt").read_bytes(),
                                           (folder / "bob.key").read_bytes(),
                                           (folder / "bob.crt").read_bytes())
        method = servicer.methods["total"]
        request = method.input_cls()
        method.encode_request({"a": a, "label": "bob"}, EncodeContext(inline=True), request.request)
        with grpc.secure_channel(f"localhost:{port}", bob) as channel:
            call = channel.unary_stream(method.path, request_serializer=bytes,
                                        response_deserializer=bytes)
            with pytest.raises(grpc.RpcError) as refused:
                list(call(request.SerializeToString(), timeout=30,
                          metadata=(INLINE_HEADER, ONE_FRAME_HEADER)))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
        assert served_last == [False, True]  # the servicer never saw it
        assert record.read_text().splitlines() == ["total first", "total second"]  # never ran
    finally:
        server.stop(None)
        servicer.close()
