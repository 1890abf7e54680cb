"""Mutual TLS end to end: real `dagen serve` subprocesses on loopback, real clients.

The session server (``echo_server``) requires a client certificate signed by the CA
of ``certs.folder``; ``certs.other`` is another CA with its own client "mallory".
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import DAGEN, SERVICES, Certs, Server, start_server
from guarded import wait_until

import dagen
from dagen._introspect import load_module
from dagen._serve import InsecureRefused, create_server
from dagen._server import Servicer

ECHO = SERVICES / "echo_service.py"
ADD_PATH = "/echo_service.EchoService/Add"


# -- helpers --------------------------------------------------------------------------------------


def serve_until_exit(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """`dagen serve ECHO ARGS`, which must exit by itself within ``timeout`` seconds
    (a server that keeps listening is killed, by its pid, and the test fails)."""
    process = subprocess.Popen(
        [*DAGEN, "serve", str(ECHO), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"dagen serve {' '.join(args)} kept running for {timeout} s")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_clean_refusal(done: subprocess.CompletedProcess[str]) -> str:
    """A non-zero exit with a one-line click error, not a crash; return stderr."""
    assert done.returncode != 0
    assert re.search(r"^Error: ", done.stderr, re.MULTILINE), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "dagen: serving" not in done.stdout
    return done.stderr


def stop(process: subprocess.Popen[str]) -> int:
    """SIGTERM to a server this test started; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("dagen serve did not stop within 15 s of SIGTERM")
    finally:
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def foreign_cert_folder(certs: Certs, tmp_path: Path) -> Path:
    """Trusts the server's real CA, but holds mallory's pair from another CA."""
    folder = tmp_path / "mallory"
    folder.mkdir()
    shutil.copy(certs.folder / "ca.crt", folder / "ca.crt")
    for name in ("mallory.crt", "mallory.key"):
        shutil.copy(certs.other / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def pb2(echo_client_module):
    return echo_client_module.Client.__dagen_spec__.pb2


# -- who may call ---------------------------------------------------------------------------------


def test_client_with_a_certificate_from_the_ca_works(echo) -> None:
    assert echo.add(2, 3) == 5
    assert echo.__dagen__.identity == "alice"


def test_every_identity_of_the_ca_works(echo_client_module, echo_server: Server, certs: Certs):
    with echo_client_module.Client(
        echo_server.target, certs=certs.folder, identity="bob", timeout=30
    ) as bob:
        assert bob.add(40, 2) == 42


def test_client_without_a_certificate_is_refused(
    echo_client_module, echo_server: Server, certs: Certs, echo, tmp_path: Path
) -> None:
    shutil.copy(certs.folder / "ca.crt", tmp_path)  # the CA, and no client pair to present
    with echo_client_module.Client(
        echo_server.target, certs=tmp_path, identity=None, timeout=30
    ) as anonymous:
        with pytest.raises(dagen.ServerUnavailable) as refused:
            anonymous.add(2, 3)
    assert isinstance(refused.value, ConnectionError)
    assert echo_server.target in str(refused.value)
    assert "add()" in str(refused.value)
    # the server survives the failed handshake and goes on serving
    assert echo.add(2, 3) == 5
    assert echo_server.process.poll() is None


def test_client_with_a_certificate_from_another_ca_is_refused(
    echo_client_module, echo_server: Server, foreign_cert_folder: Path, echo
) -> None:
    with echo_client_module.Client(
        echo_server.target, certs=foreign_cert_folder, identity="mallory", timeout=30
    ) as mallory:
        with pytest.raises(dagen.ServerUnavailable) as refused:
            mallory.add(2, 3)
    assert isinstance(refused.value, ConnectionError)
    assert f"cannot reach the server at {echo_server.target} for add()" in str(refused.value)
    assert echo.add(2, 3) == 5
    assert echo_server.process.poll() is None


@pytest.mark.parametrize("who", ["no-certificate", "foreign-certificate"])
def test_refused_client_certificate_error_says_it_is_about_certificates(
    echo_client_module, echo_server: Server, certs: Certs, foreign_cert_folder: Path, who: str,
    tmp_path: Path,
) -> None:
    shutil.copy(certs.folder / "ca.crt", tmp_path)  # the CA, and no client pair to present
    folder, identity = (
        (tmp_path, None) if who == "no-certificate" else (foreign_cert_folder, "mallory")
    )
    with echo_client_module.Client(
        echo_server.target, certs=folder, identity=identity, timeout=30
    ) as client:
        with pytest.raises(dagen.ServerUnavailable) as refused:
            client.add(2, 3)
    assert "certificate" in str(refused.value).lower()


def test_client_trusting_another_ca_does_not_trust_the_server(
    echo_client_module, echo_server: Server, certs: Certs, echo
) -> None:
    with echo_client_module.Client(
        echo_server.target, certs=certs.other, identity="mallory", timeout=30
    ) as client:
        with pytest.raises(dagen.ServerUnavailable) as refused:
            client.add(2, 3)
    message = str(refused.value)
    assert echo_server.target in message
    assert "CERTIFICATE_VERIFY_FAILED" in message  # gRPC's reason ...
    assert "The TLS handshake failed" in message  # ... and dagen's explanation
    assert "signed by the CA you trust" in message
    assert echo.add(2, 3) == 5


def test_plain_text_client_cannot_call_the_tls_server(
    echo_client_module, echo_server: Server, echo
) -> None:
    with echo_client_module.Client(echo_server.target, insecure=True, timeout=30) as client:
        with pytest.raises(dagen.ServerUnavailable, match=re.escape(echo_server.target)):
            client.add(2, 3)
    assert echo.add(2, 3) == 5


def test_raw_grpc_channel_without_client_certificate_is_refused(
    echo_server: Server, certs: Certs, pb2
) -> None:
    """The refusal is in the TLS layer: a hand-made gRPC call with the right bytes
    gets nowhere without a client certificate, and works with one."""
    request = pb2.AddRequest(a=2, b=3).SerializeToString()
    ca = (certs.folder / "ca.crt").read_bytes()

    roots_only = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(echo_server.target, roots_only) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(ADD_PATH)(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    with grpc.insecure_channel(echo_server.target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(ADD_PATH)(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # the same bytes on the same path with alice's certificate: the call is right
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(certs.folder / "alice.key").read_bytes(),
        certificate_chain=(certs.folder / "alice.crt").read_bytes(),
    )
    with grpc.secure_channel(echo_server.target, with_cert) as channel:
        response = channel.unary_unary(ADD_PATH)(request, timeout=30)
    assert pb2.AddResponse.FromString(response).result == 5


# -- plain text only on loopback ------------------------------------------------------------------


def test_insecure_on_a_public_address_is_refused_and_exits() -> None:
    done = serve_until_exit("--insecure", "--host", "0.0.0.0", "--port", "0", timeout=10)
    message = assert_clean_refusal(done)
    assert "refusing to serve plain text on 0.0.0.0:0" in message
    assert "--allow-remote-insecure" in message and "--certs" in message


def test_insecure_on_loopback_serves_plain_text(echo_client_module, certs: Certs) -> None:
    server = start_server(ECHO, "--insecure")
    try:
        with echo_client_module.Client(server.target, insecure=True, timeout=30) as client:
            assert client.add(2, 3) == 5
        # it is really plain text: a TLS client cannot talk to it
        with echo_client_module.Client(
            server.target, certs=certs.folder, identity="alice", timeout=30
        ) as tls_client:
            with pytest.raises(dagen.ServerUnavailable):
                tls_client.add(2, 3)
    finally:
        code = stop(server.process)
    assert code == 0


def test_insecure_on_a_public_address_with_override_starts(echo_client_module) -> None:
    process = subprocess.Popen(
        [
            *DAGEN,
            "serve",
            str(ECHO),
            "--insecure",
            "--allow-remote-insecure",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"on 0\.0\.0\.0:(\d+) \(plain text \(INSECURE\)\)", banner)
        assert match, banner
        with echo_client_module.Client(
            f"127.0.0.1:{match.group(1)}", insecure=True, timeout=30
        ) as client:
            assert client.add(20, 22) == 42
    finally:
        code = stop(process)
    assert code == 0


@pytest.fixture(scope="module")
def echo_servicer(pb2) -> type[Servicer]:
    module = load_module(str(ECHO))
    return type("EchoServicer", (Servicer,), {}, module=module, pb2=pb2)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org", "127.0.0.1.nip.io"])
def test_create_server_refuses_plain_text_off_loopback(echo_servicer, host: str) -> None:
    with pytest.raises(InsecureRefused, match="refusing to serve plain text on"):
        create_server(echo_servicer(), host=host, port=0, insecure=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_create_server_allows_plain_text_on_loopback(echo_servicer, host: str) -> None:
    server, port = create_server(echo_servicer(), host=host, port=0, insecure=True)
    server.stop(None)
    assert port > 0


# -- certificates the server needs ----------------------------------------------------------------


def test_serve_with_a_certs_folder_missing_server_key(certs: Certs, tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    shutil.copytree(certs.folder, folder)
    (folder / "server.key").unlink()
    message = assert_clean_refusal(serve_until_exit("--certs", str(folder), "--port", "0"))
    assert f"{folder / 'server.key'} is missing" in message
    assert f"dagen certs server {folder}" in message


@pytest.mark.parametrize("name", ["ca.crt", "server.crt", "server.key"])
def test_create_server_names_each_missing_file(
    echo_servicer, certs: Certs, tmp_path: Path, name: str
) -> None:
    shutil.copytree(certs.folder, tmp_path, dirs_exist_ok=True)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / name} is missing")):
        create_server(echo_servicer(), port=0, certs=str(tmp_path))


def test_serve_without_certs_or_insecure_is_refused() -> None:
    message = assert_clean_refusal(serve_until_exit("--port", "0"))
    assert "no certificate folder given" in message and "--certs" in message


def test_serve_on_a_port_in_use_is_refused_cleanly(echo_server: Server, certs: Certs) -> None:
    done = serve_until_exit("--certs", str(certs.folder), "--port", str(echo_server.port))
    message = assert_clean_refusal(done)
    assert f"cannot listen on 127.0.0.1:{echo_server.port}" in message


# -- stopping -------------------------------------------------------------------------------------


@pytest.fixture
def logged_server(
    certs: Certs, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """An mTLS server of its own (it gets stopped), its stderr in a file."""
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*DAGEN, "serve", str(ECHO), "--certs", str(certs.folder), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "DAGEN_TEST_MARKS": str(tmp_path)},  # sleep.started
        )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"on 127\.0\.0\.1:(\d+) \(mutual TLS with ", banner)
        assert match, banner
        yield process, int(match.group(1)), log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_sigterm_finishes_the_call_in_progress_and_exits_0(
    echo_client_module, logged_server, certs: Certs
) -> None:
    process, port, log = logged_server
    started = log.parent / "sleep.started"
    results: list[float] = []
    with echo_client_module.Client(
        f"localhost:{port}", certs=certs.folder, identity="bob", timeout=30
    ) as client:
        assert client.add(1, 1) == 2  # connected
        assert list(client.echo_array(np.arange(3))) == [0, 1, 2]  # a transfer: logged
        call = threading.Thread(target=lambda: results.append(client.sleep(1.5)))
        call.start()
        assert wait_until(started.exists, 15)  # the call runs
        process.send_signal(signal.SIGTERM)
        call.join(timeout=15)
    assert results == [1.5]
    assert process.wait(timeout=15) == 0
    assert process.stdout is not None
    assert "dagen: stopping" in process.stdout.read()
    # the server knew its callers by their certificates (transfers are logged at INFO)
    assert re.search(r"dagen\.server INFO bob echo_array\(\) in 24 B, out 24 B", log.read_text())


def test_serve_with_a_key_that_does_not_match_its_certificate_says_so(
    certs: Certs, tmp_path: Path
) -> None:
    folder = tmp_path / "mismatched"
    shutil.copytree(certs.folder, folder)
    shutil.copy(certs.folder / "alice.key", folder / "server.key")  # not server.crt's key
    message = assert_clean_refusal(serve_until_exit("--certs", str(folder), "--port", "0"))
    assert "cannot be served" in message and "key" in message
    assert "port in use" not in message
