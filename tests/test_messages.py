"""Every error says what was wrong and what to do: one test per message, each
checking that it names the cause and the fix (and not a wrong one)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import textwrap

import grpc
import pytest
from conftest import DAGEN, SERVICES, start_server

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


# -- building and serving a module ----------------------------------------------------------------


def build_fails(tmp_path, source: str, name: str = "tools") -> str:
    """`dagen build` of a module with ``source`` that must fail: its stderr."""
    module = tmp_path / f"{name}.py"
    module.write_text(textwrap.dedent(source))
    done = subprocess.run([*DAGEN, "build", str(module), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    return done.stderr


def one_error_line(stderr: str) -> str:
    """The stderr of a failed command: one ``Error:`` line, no traceback."""
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy\nimport not_a_module_dagen_test\n",
         r"tools\.py:2: importing .*tools\.py failed with ModuleNotFoundError: No module "
         r"named 'not_a_module_dagen_test'; install not_a_module_dagen_test"),
        ("from math import not_a_name\n",
         r"tools\.py:1: importing .* failed with ImportError: .*not_a_name.*; check the name"),
        ("def f(a: int) -> int\n    return a\n",
         r"tools\.py:1: .* has a syntax error: expected ':' \(def f\(a: int\) -> int\); fix it"),
        ("X = 1\nY = X / 0\n",
         r"tools\.py:2: importing .* failed with ZeroDivisionError: division by zero; "
         r"importing the module runs its top-level code"),
    ],
)
def test_a_module_whose_import_fails_is_one_error_line_with_file_and_line(
    tmp_path, source, expected
):
    line = one_error_line(build_fails(tmp_path, source))
    assert re.search(expected, line), line
    assert str(tmp_path / "tools.py") in line


def test_serve_of_a_module_whose_import_fails_is_one_error_line(tmp_path):
    module = tmp_path / "tools.py"
    module.write_text("import not_a_module_dagen_test\n")
    done = subprocess.run([*DAGEN, "serve", str(module), "--insecure", "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{module}:1: importing" in one_error_line(done.stderr)


def test_the_process_executor_refuses_classes_in_one_line_with_file_and_line(tmp_path):
    module = tmp_path / "models.py"
    module.write_text(textwrap.dedent("""\
        class Model:
            def __init__(self, k: int) -> None:
                self.k = k

            def predict(self, x: int) -> int:
                return self.k * x
        """))
    done = subprocess.run([*DAGEN, "serve", str(module), "--insecure", "--port", "0",
                           "--executor", "process"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    line = one_error_line(done.stderr)
    assert f"{module}:5: Model.predict(): class methods and generators run only with " \
           "--executor thread" in line
    assert "serve the module with --executor thread" in line


def test_a_lambda_default_factory_names_file_line_and_fix(tmp_path):
    line = one_error_line(build_fails(tmp_path, """\
        from dataclasses import dataclass, field


        @dataclass
        class Box:
            name: str
            items: list[int] = field(default_factory=lambda: [1, 2])


        def size(box: Box) -> int:
            return len(box.items)
        """))
    assert f"{tmp_path / 'tools.py'}:7: Box.items: the default factory a lambda" in line
    assert "use default_factory=list (and fill it in __post_init__)" in line


@pytest.mark.parametrize(
    ("annotation", "advice"),
    [
        ("Path", "pathlib.Path is not a supported type: send the path as str (str(path))"),
        ("list[Path]", "pathlib.Path is not a supported type: send the path as str"),
        ("Any", "typing.Any is not a supported type: give the type of the values"),
        ("Station", "tools.Station is not a supported type: make Station a dataclass"),
        ("Callable[[int], int]", "functions cannot be sent: take the name of one"),
        ("np.float32", "use the Python scalar type"),
    ],
)
def test_an_unsupported_type_suggests_a_conversion(tmp_path, annotation, advice):
    line = one_error_line(build_fails(tmp_path, f"""\
        from collections.abc import Callable
        from pathlib import Path
        from typing import Any

        import numpy as np


        class Station:
            pass


        def use(value: {annotation}) -> int:
            return 0
        """))
    assert "tools.py:12: in tools.use, parameter 'value'" in line
    assert advice in line



def test_the_server_logs_an_unknown_method_and_who_called(tmp_path):
    log = tmp_path / "server.log"
    server = start_server(SERVICES / "echo_service.py", "--insecure", log=log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.unary_unary("/other.Service/Method")
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", timeout=20)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop()
    text = log.read_text()
    assert "called /other.Service/Method, which this server does not serve" in text
    assert "ipv4:127.0.0.1:" in text  # who: the peer (no certificate over plain text)


def test_a_call_ended_by_the_server_stopping_does_not_blame_the_caller(monkeypatch):
    from dagen._executors import _base

    class Ended:  # an rpc grpc has ended, with no deadline
        def time_remaining(self):
            return None

        def is_active(self):
            return False

    monkeypatch.setattr(_base, "_server_stop", {"ends": None, "grace": None})
    assert _base.stopped(Ended()).reason == "the caller cancelled it"
    _base.server_stopping(0.0)  # the grace period is over: grpc cut the call short
    reason = _base.stopped(Ended()).reason
    assert reason == "the server stopped: its grace period of 0 s for calls in progress ran out"
