"""The client's transport seam: dagen.testing.MockTransport answers a generated
client's calls with a handler, so the client's own work (arguments, arrays, options,
error mapping) is tested without a server. End-to-end tests use real servers."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import xarray as xr
from conftest import SERVICES, import_client

import dagen
from dagen._build import build
from dagen._codecs import ACCEPT_METADATA_KEY
from dagen.testing import MockTransport, Reply, Request, RpcError


def echo_handler(request: Request):
    """What echo_service's functions return, computed here."""
    args = request.arguments
    if request.key == "add":
        return args["a"] + args["b"]
    if request.key in ("echo", "echo_array"):
        return args["da" if request.key == "echo" else "a"]
    if request.key == "positional":
        return [args["a"], args["b"], args["c"]]
    raise AssertionError(f"unexpected call {request.key}")


def test_calls_go_through_the_wire_encoding_to_the_handler_and_back(echo_client_module):
    transport = MockTransport(echo_handler)
    with echo_client_module.Client(transport=transport, timeout=7) as client:
        assert client.add(2, 40) == 42
        assert client.positional(1, b=2) == [1, 2, 3]  # defaults applied as a server would
        data = np.arange(100_000, dtype="f4").reshape(1000, 100)[:, ::3]  # chunked, strided
        np.testing.assert_array_equal(client.echo_array(data), data)
        da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("y", "x"), name="t",
                          attrs={"units": "K"}, coords={"x": [10, 20, 30]})
        xr.testing.assert_identical(client.echo(da), da)
        assert repr(client.__dagen__.transport) == "<dagen.testing.MockTransport target='mock'>"
        assert client.__dagen__.target == "mock"
    assert transport.closed
    keys = [r.key for r in transport.requests]
    assert keys == ["add", "positional", "echo_array", "echo"]
    add, positional, array = transport.requests[:3]
    assert add.message.a == 2 and add.frames == () and add.timeout == 7
    assert positional.arguments == {"a": 1, "b": 2, "c": 3}
    assert len(array.frames) > 1 and all(isinstance(f, bytes) for f in array.frames)
    with pytest.raises(AttributeError, match="no gRPC channel"):
        client.__dagen__.channel  # noqa: B018 - the property raises


def test_a_remote_objects_constructor_arguments_reach_the_handler(guarded_client_module):
    def handler(request):
        assert request.key == "Vault.open"
        return f"opened {request.instance['label']}"

    transport = MockTransport(handler)
    client = guarded_client_module.Client(transport=transport)
    assert client.Vault("the vault").open() == "opened the vault"
    assert transport.requests[0].instance == {"label": "the vault"}


@pytest.fixture(scope="module")
def stream_client_module(tmp_path_factory):
    result = build(str(SERVICES / "stream_service.py"), tmp_path_factory.mktemp("stream-mock"))
    return import_client(result.client, "stream_service_client")


def test_a_generators_items_arrive_one_by_one(stream_client_module):
    def handler(request):
        if request.key == "forever":
            return iter(range(1000))
        return (np.full(request.arguments["size"], i, "int32") for i in range(3))

    client = stream_client_module.Client(transport=MockTransport(handler))
    items = client.forever("t")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert [a.tolist() for a in client.frames("t", 2)] == [[0, 0], [1, 1], [2, 2]]


def test_the_transport_replaces_the_channels_settings(echo_client_module, certs, clean_env):
    clean_env.setenv("DAGEN_CERTS", "/nowhere")  # not looked at: the transport connects
    transport = MockTransport(echo_handler, target="somewhere:1")
    assert echo_client_module.Client(transport=transport).__dagen__.target == "somewhere:1"
    with pytest.raises(ValueError, match="certs, identity: these configure the gRPC channel"):
        echo_client_module.Client(transport=transport, certs=certs.folder, identity="alice")


@pytest.mark.parametrize(
    ("error", "exc_type", "text"),
    [
        (RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), TimeoutError,
         r"add\(\) did not finish within its timeout of 2.5 s \(server mock\)"),
        (RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect: unrecognized_name"),
         dagen.ServerUnavailable, "a relay with no server connected under that name"),
        (RpcError(grpc.StatusCode.UNAVAILABLE, "Peer name x is not in peer certificate: "
                                               "hostname verification failed"),
         dagen.ServerUnavailable, "pass server_name= the name in the server's certificate"),
        (RpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"), dagen.ServerUnavailable,
         "most likely it refused the client certificate"),
        (RpcError(grpc.StatusCode.UNAVAILABLE, "Stream removed"), dagen.ServerUnavailable,
         "The connection broke during the call"),
        (RpcError(grpc.StatusCode.UNKNOWN, "Stream removed: TSI_DATA_CORRUPTED"),
         dagen.ServerUnavailable, "TLS refused data that something between"),
        (RpcError(grpc.StatusCode.UNKNOWN, "Stream removed (Wrap failed (TSI_INTERNAL_ERROR))"),
         dagen.ServerUnavailable, "TLS refused data that something between"),  # the writer's side
        (RpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"), dagen.CallError,
         r"does not offer add\(\): is the client package built from the same module"),
        (RpcError(grpc.StatusCode.FAILED_PRECONDITION, "built from revision 3, serving 4"),
         dagen.ContractMismatch, "built from revision 3"),
        (RpcError(grpc.StatusCode.PERMISSION_DENIED, "policy: alice may not call it"),
         PermissionError, r"add\(\) at mock: policy: alice may not call it"),
        (RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_calls=3"), dagen.CallError,
         r"add\(\) at mock failed with RESOURCE_EXHAUSTED: max_calls=3"),
    ],
)
@pytest.mark.parametrize("function", ["add", "echo_array"])  # unary; with arrays (streaming)
def test_failures_are_mapped_to_exceptions_that_say_what_to_do(
    error, exc_type, text, function, echo_client_module
):
    def handler(request):
        raise error

    client = echo_client_module.Client(transport=MockTransport(handler), timeout=2.5)
    with pytest.raises(exc_type, match=text.replace("add", function)) as raised:
        getattr(client, function)(*((1, 2) if function == "add" else (np.ones(3),)))
    assert type(raised.value) is exc_type
    if isinstance(raised.value, dagen.CallError):
        assert raised.value.code == error.code()


def test_a_closed_socket_is_a_refused_certificate_only_over_tls(echo_client_module):
    def handler(request):
        raise RpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed")

    client = echo_client_module.Client(transport=MockTransport(handler, tls=False))
    with pytest.raises(dagen.ServerUnavailable) as raised:
        client.add(1, 2)
    assert "client certificate" not in str(raised.value)


def test_per_call_options_reach_the_transport(echo_client_module):
    transport = MockTransport(echo_handler)
    client = echo_client_module.Client(transport=transport, timeout=30)
    with dagen.call_options(client=client, timeout=None, compression="zstd"):
        client.add(1, 2)
        client.echo_array(np.zeros(1 << 16))
    client.echo_array(np.zeros(1 << 16))
    unary, compressed, plain = transport.requests
    assert unary.timeout is None and compressed.timeout is None and plain.timeout == 30
    assert (ACCEPT_METADATA_KEY, "zstd-shuffle,zstd") in compressed.metadata
    assert not any(key == ACCEPT_METADATA_KEY for key, _ in plain.metadata)
    assert sum(map(len, compressed.frames)) < sum(map(len, plain.frames)) // 10


def test_a_reply_carries_progress_reports_before_the_result(progress_client_module):
    from dagen.testing import ProgressState, ProgressStep

    progress = [ProgressState(0.25, "a quarter", (ProgressStep("month", 1, 4),)),
                ProgressState(None, "no idea")]
    client = progress_client_module.Client(
        transport=MockTransport(lambda request: Reply("done", progress=progress)))
    reports = []
    with dagen.call_options(client=client, on_progress=reports.append):
        assert client.regrid(4) == "done"
    assert [(r.fraction, r.message, r.steps) for r in reports] == [
        (0.25, "a quarter", (dagen.ProgressStep("month", 1, 4),)), (None, "no idea", ())]
