"""Every error says what was wrong and what to do: one test per message, each
checking that it names the cause and the fix (and not a wrong one)."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
from conftest import DAGEN, SERVICES

import dagen

ECHO = str(SERVICES / "echo_service.py")


def serve_fails(*args: str, timeout: float = 60) -> str:
    """`dagen serve ECHO ARGS` that must fail: its stderr."""
    done = subprocess.run([*DAGEN, "serve", ECHO, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode != 0, done.stdout
    return done.stderr


# -- the client ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "cause"),
    [
        ("127.0.0.1", "has no port"),
        ("localhost", "has no port"),
        ("https://localhost:50051", "is a URL"),
        ("grpc://localhost:50051", "is a URL"),
        ("::1", "IPv6 address without brackets"),
    ],
)
def test_a_target_without_a_port_or_as_a_url_says_give_host_port(
    echo_client_module, clean_env, target, cause
):
    with pytest.raises(ValueError, match="give host:port") as info:
        echo_client_module.Client(target, insecure=True)
    assert cause in str(info.value)


def test_the_url_message_names_the_address_to_give(echo_client_module, clean_env):
    with pytest.raises(ValueError, match=r"\('localhost:50051'\)"):
        echo_client_module.Client("https://localhost:50051/", insecure=True)


def test_plain_text_against_a_tls_server_says_drop_insecure(
    echo_client_module, echo_server, clean_env
):
    client = echo_client_module.Client(echo_server.target, insecure=True, timeout=20)
    with pytest.raises(dagen.ServerUnavailable) as info:
        client.add(1, 2)
    message = str(info.value)
    assert "plain text" in message and "serves TLS" in message
    assert "Drop insecure=True" in message and "certs=" in message


@pytest.mark.parametrize("value", ["ten", "-5", "0", "inf"])
def test_a_bad_dagen_timeout_names_the_variable(echo_client_module, clean_env, value):
    clean_env.setenv("DAGEN_TIMEOUT", value)
    with pytest.raises(ValueError, match=rf"\$DAGEN_TIMEOUT={value!r} is not a timeout") as info:
        echo_client_module.Client("localhost:1", insecure=True)
    assert "positive number" in str(info.value)


def test_dagen_timeout_none_waits(echo_client_module, clean_env):
    clean_env.setenv("DAGEN_TIMEOUT", "none")
    client = echo_client_module.Client("localhost:1", insecure=True)
    assert client.__dagen__.timeout is None


def test_a_missing_certificate_folder_says_copy_the_servers_ca(echo_client_module, tmp_path):
    missing = tmp_path / "certs"
    with pytest.raises(FileNotFoundError) as info:
        echo_client_module.Client("localhost:1", certs=missing, identity="alice")
    message = str(info.value)
    assert f"{missing} does not exist" in message
    assert "copy into it the server's ca.crt" in message


def test_one_client_pair_is_taken_without_identity(echo_client_module, echo_server, certs,
                                                  tmp_path):
    for name in ("ca.crt", "alice.crt", "alice.key"):
        shutil.copy(certs.folder / name, tmp_path)
    with echo_client_module.Client(echo_server.target, certs=tmp_path, timeout=30) as c:
        assert c.add(2, 3) == 5


def test_several_client_pairs_without_identity_are_listed(echo_client_module, certs):
    with pytest.raises(ValueError, match=r"2 client certificate pairs \(alice, bob\)") as info:
        echo_client_module.Client("localhost:1", certs=certs.folder)
    assert "identity='alice'" in str(info.value)


# -- the server ----------------------------------------------------------------------------------


def test_a_mistyped_certs_folder_does_not_suggest_a_new_ca(tmp_path):
    typo = tmp_path / "cerst"
    err = serve_fails("--certs", str(typo), "--port", "0")
    assert f"the certificate folder {typo} (--certs) does not exist" in err
    assert "certs init" not in err
    assert "Traceback" not in err


def test_a_host_that_is_not_this_machines_says_so():
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails locally,
    # with nothing sent anywhere.
    err = serve_fails("--host", "192.0.2.1", "--port", "0", "--insecure",
                      "--allow-remote-insecure")
    assert "192.0.2.1 is not an address of this machine" in err
    assert "in use" not in err


def test_a_port_in_use_says_so():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = serve_fails("--host", "127.0.0.1", "--port", str(port), "--insecure")
    assert f"port {port} is in use" in err


def test_certs_and_insecure_together_are_refused(certs):
    err = serve_fails("--certs", str(certs.folder), "--insecure", "--port", "0")
    assert "--insecure contradict each other" in err
    assert "every certificate of the CA" not in err
