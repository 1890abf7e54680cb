"""What a caller sees when a call fails, and that the server keeps serving."""

import socket
import time

import numpy as np
import pytest
from conftest import SERVICES, start_server

import dagen
from dagen.testing import MockTransport, RpcError


@pytest.mark.parametrize(
    ("kind", "exc_type", "text"),
    [
        ("value", ValueError, "bad value"),
        ("key", KeyError, "missing"),
        ("type", TypeError, "wrong type"),
        ("zero", ZeroDivisionError, "division by zero"),
    ],
)
def test_builtin_exceptions_keep_their_type(echo_client_module, kind, exc_type, text):
    def handler(request):  # what the server sends when fail() raises
        raise RpcError.raised(exc_type(text), request.key)

    echo = echo_client_module.Client(transport=MockTransport(handler, target="there:1"))
    with pytest.raises(exc_type) as info:
        echo.fail(kind)
    assert type(info.value) is exc_type
    assert info.value.args == (text,)
    assert any("fail() on the server at there:1" in note for note in info.value.__notes__)


def test_a_remote_error_keeps_the_server_running(echo):
    with pytest.raises(ZeroDivisionError, match="division by zero") as info:
        echo.fail("zero")
    assert any("fail()" in note and echo.__dagen__.target in note for note in info.value.__notes__)
    assert echo.add(1, 1) == 2  # the server keeps serving


def test_the_served_modules_exceptions_arrive_as_their_mirrors(echo, echo_client_module):
    with pytest.raises(echo_client_module.CustomError) as info:
        echo.fail("custom")
    err = info.value
    assert type(err) is echo_client_module.CustomError
    assert err.args == ("custom failure",)
    assert not any("Remote traceback" in note for note in err.__notes__)  # only with --debug


def test_debug_server_sends_tracebacks(echo_client_module, certs):
    server = start_server(SERVICES / "echo_service.py", "--certs", str(certs.folder), "--debug")
    try:
        with echo_client_module.Client(server.target, certs=certs.folder, identity="alice") as c:
            with pytest.raises(echo_client_module.CustomError) as info:
                c.fail("custom")
            (note,) = (n for n in info.value.__notes__ if "Remote traceback" in n)
            assert "raise errors[kind]" in note
            with pytest.raises(ValueError) as info2:
                c.fail("value")
            assert any("Remote traceback" in n for n in info2.value.__notes__)
    finally:
        server.stop()


def test_wrong_return_type_is_reported(echo):
    with pytest.raises(TypeError, match=r"bad_return\(\) returned a value that does not match"):
        echo.bad_return()
    assert echo.add(2, 2) == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.add("2", 3), r"add\(\): argument 'a': expected int, got str"),
        (lambda c: c.add(True, 3), r"argument 'a': expected int, got bool"),
        (lambda c: c.add(2**64, 3), r"argument 'a': int 18446744073709551616 does not fit"),
        (lambda c: c.echo([1, 2]), r"echo\(\): argument 'da': expected xarray.DataArray, got list"),
        (lambda c: c.nested([[1], ["x"]], {}, []), r"argument 'grid'\[1\]\[0\]: expected int"),
        (lambda c: c.nested([], {"k": [1.0, "x"]}, []), r"argument 'table'\['k'\]\[1\]"),
        (lambda c: c.echo_array(np.array([object()])), r"argument 'a': object arrays cannot be sent"),
        (lambda c: c.add(1), r"missing 1 required positional argument: 'b'"),
        (lambda c: c.add(1, 2, c=3), r"unexpected keyword argument 'c'"),
    ],
)
def test_bad_arguments_fail_in_the_client(call, message, echo_client_module, clean_env):
    transport = MockTransport(lambda request: pytest.fail(f"{request.key}() was sent"))
    client = echo_client_module.Client(transport=transport, timeout=5)
    with pytest.raises(TypeError, match=message):
        call(client)
    assert transport.requests == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_names_the_address(echo_client_module, certs):
    target = f"127.0.0.1:{_free_port()}"
    client = echo_client_module.Client(target, certs=certs.folder, identity="alice", timeout=10)
    started = time.monotonic()
    with pytest.raises(dagen.ServerUnavailable, match=target) as info:
        client.add(1, 2)
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 10
    with pytest.raises(ConnectionError, match=target):
        client.echo_array(np.arange(10))


def test_timeout_raises_timeout_error(echo_client_module, echo_server, certs):
    client = echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                       timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"sleep\(\) did not finish within its timeout of 0.5 s"):
        client.sleep(3.0)
    assert time.monotonic() - started < 2.5


def test_environment_configures_module_functions(echo_client_module, echo_server, certs, clean_env):
    clean_env.setenv("DAGEN_TARGET", echo_server.target)
    clean_env.setenv("DAGEN_CERTS", str(certs.folder))
    clean_env.setenv("DAGEN_IDENTITY", "bob")
    assert echo_client_module.add(20, 22) == 42


def test_missing_configuration_is_explained(echo_client_module, clean_env):
    with pytest.raises(ValueError, match="DAGEN_TARGET"):
        echo_client_module.add(1, 2)
    clean_env.setenv("DAGEN_TARGET", "localhost:1")
    with pytest.raises(ValueError, match="DAGEN_CERTS"):
        echo_client_module.add(1, 2)


def test_missing_identity_files_are_named(echo_client_module, certs):
    with pytest.raises(FileNotFoundError, match=r"carol\.crt.*dagen certs client"):
        echo_client_module.Client("localhost:1", certs=certs.folder, identity="carol")
