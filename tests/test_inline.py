"""Small arrays inside their headers (NDArray.data): the encoding, its checks, its
negotiation, and old peers (the dagen of 6bef73c, which never inlines) both ways."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
import xarray as xr
from conftest import DAGEN, ROOT, SERVICES, start_server
from xarray.testing import assert_identical

import dagen._last
import dagen._transport
from dagen._arrays import INLINE_BYTES, DecodeContext, EncodeContext, attach_array, read_array
from dagen._budget import frame_parser
from dagen._protocol import INLINE_HEADER, ONE_FRAME_HEADER
from dagen._sink import ArraySink
from dagen._wire import ChunkIn, ChunkOut, LimitExceeded, Limits, WireError, frame_serializer
from dagen.v1 import array_pb2

OLD_COMMIT = "6bef73c"  # the last dagen that never inlines


def inline_header(array: np.ndarray, ctx: EncodeContext) -> array_pb2.NDArray:
    header = array_pb2.NDArray()
    attach_array(array, header, ctx)
    return header


def receive_headers(*headers: array_pb2.NDArray, sink: ArraySink | None = None) -> ArraySink:
    sink = sink or ArraySink()
    sink.declare(headers)
    return sink


@pytest.mark.parametrize("array", [
    np.arange(1000.0),
    np.arange(24, dtype=">i4").reshape(2, 3, 4),
    np.float32(3.5) * np.ones(()),
    np.arange(60, dtype="u2").reshape(6, 10)[::2, 1::3],  # strided: sent as a copy
    np.array(["a", "bé", "ccc"], dtype=object),
    np.array(["2000-01-01T00", "2000-01-02T00"], dtype="M8[ns]"),
    np.array([True, False]),
])
def test_a_small_array_goes_inside_its_header_with_no_chunks(array):
    ctx = EncodeContext(inline=True)
    header = inline_header(array, ctx)
    assert header.data and ctx.whole and list(ctx.chunks()) == []
    sink = receive_headers(array_pb2.NDArray.FromString(header.SerializeToString()))
    assert sink.complete
    sink.finish()
    out = read_array(header, DecodeContext(sink.arrays))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


def test_cftime_dates_go_inline():
    cftime = pytest.importorskip("cftime")
    dates = np.array([cftime.DatetimeNoLeap(2000, 2, 28), cftime.DatetimeNoLeap(2000, 3, 1)])
    ctx = EncodeContext(inline=True)
    header = inline_header(dates, ctx)
    assert header.data and header.cftime.calendar == "noleap"
    out = read_array(header, DecodeContext(receive_headers(header).arrays))
    assert list(out) == list(dates)


def test_without_the_peers_word_every_array_goes_as_chunks():
    ctx = EncodeContext()
    header = inline_header(np.arange(10.0), ctx)
    assert not header.data and not ctx.whole
    assert [c.shape for c in ctx.chunks()] == [(10,)]


def test_arrays_go_inline_while_the_message_holds_at_most_one_chunk():
    ctx = EncodeContext(chunk_bytes=1000, inline=True)
    a, b, c, empty = np.zeros(100), np.ones(26), np.arange(10.0), np.zeros(0)
    headers = [inline_header(x, ctx) for x in (a, b, c, empty)]
    # 800 B inline, 208 B would pass the 1000 B budget: chunks; 80 B still fit
    assert [bool(h.data) for h in headers] == [True, False, True, False]
    assert [chunk.array_id for chunk in ctx.chunks()] == [2]
    assert not ctx.whole and ctx.nbytes == 1088
    sink = receive_headers(*headers)
    assert not sink.complete
    sink.write(ChunkIn(2, (0,), (26,), memoryview(b.tobytes())))
    sink.finish()
    for h, x in zip(headers, (a, b, c, empty), strict=True):
        np.testing.assert_array_equal(read_array(h, DecodeContext(sink.arrays)), x)
    assert INLINE_BYTES < 4 << 20  # a message stays under gRPC's default limit
    big = EncodeContext(inline=True)
    assert not inline_header(np.zeros(INLINE_BYTES // 8 + 1), big).data  # one byte too many


@pytest.mark.parametrize("codec", ["zstd", "zstd-shuffle", "lz4", "lz4-shuffle"])
def test_an_inline_array_is_compressed_as_one_block(codec):
    pytest.importorskip("zstandard")
    pytest.importorskip("lz4.block")
    array = np.repeat(np.linspace(0, 1, 50), 40).reshape(50, 40)
    ctx = EncodeContext(codecs=(codec,), inline=True)
    header = inline_header(array, ctx)
    assert header.codec == codec and 0 < len(header.data) < array.nbytes / 2
    out = read_array(header, DecodeContext(receive_headers(header).arrays))
    np.testing.assert_array_equal(out, array)


def bad(**fields) -> array_pb2.NDArray:
    base = dict(id=1, dtype="<f8", shape=[4], nbytes=32, data=bytes(32))
    return array_pb2.NDArray(**{**base, **fields})


@pytest.mark.parametrize(("header", "error"), [
    (bad(data=bytes(31)), "31 inline bytes, but shape \\(4,\\) of <f8 is 32 bytes"),
    (bad(data=bytes(33)), "33 inline bytes"),
    (bad(shape=[0], nbytes=0, data=b"x"), "1 inline bytes for an empty array"),
    (bad(nbytes=40), "the header declares 40"),
    (bad(dtype="|O8"), "unsupported dtype"),
    (bad(codec="zstd", data=b"not zstd at all"), "inline bytes \\(zstd\\)"),
    (bad(codec="bzip9"), "bzip9"),
])
def test_bad_inline_headers_are_refused(header, error):
    pytest.importorskip("zstandard")
    with pytest.raises(WireError, match=error):
        receive_headers(header)


def test_a_chunk_for_an_inline_array_is_refused():
    sink = receive_headers(bad())
    with pytest.raises(WireError, match="came whole in its header"):
        sink.write(ChunkIn(1, (0,), (4,), memoryview(bytes(32))))


def test_inline_arrays_are_checked_and_reserved_before_anything_is_allocated():
    allocated: list[int] = []
    reserved: list[int] = []

    def alloc(n: int) -> np.ndarray:
        allocated.append(n)
        return np.empty(n, np.uint8)

    alloc.reserve = reserved.append  # type: ignore[attr-defined]
    with pytest.raises(LimitExceeded, match="max_array_bytes=16"):
        receive_headers(bad(id=1), bad(id=2), sink=ArraySink(Limits(max_array_bytes=16), alloc))
    assert allocated == [] and reserved == []
    receive_headers(bad(id=1), bad(id=2), sink=ArraySink(Limits(), alloc))
    assert reserved == [64] and allocated == [32, 32]  # one charge for the message


# -- with real servers --------------------------------------------------------------------------


class FrameCounter:
    """The frames (and the chunk frames among them) a client sends and receives."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        self.received: list[str] = []

        def serialize(item):
            self.sent.append("chunk" if type(item) is ChunkOut else "message")
            return frame_serializer(item)

        def parser(frame_cls, limits, what):
            inner = frame_parser(frame_cls, limits, what)

            def deserialize(buf):
                frame = inner(buf)
                self.received.append("chunk" if type(frame) is ChunkIn else "message")
                return frame

            return deserialize

        monkeypatch.setattr(dagen._transport, "frame_serializer", serialize)
        monkeypatch.setattr(dagen._transport, "frame_parser", parser)

    def reset(self) -> tuple[list[str], list[str]]:
        out = (self.sent, self.received)
        self.sent, self.received = [], []
        return out


def test_a_small_array_call_is_one_message_each_way_once_the_server_said_so(
        echo_client_module, echo_server, certs, monkeypatch):
    counter = FrameCounter(monkeypatch)
    da = xr.DataArray(np.random.default_rng(0).random(1024), dims="x", name="t",
                      attrs={"units": "K"})
    with echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                   timeout=60) as client:
        assert not client.__dagen__.server_reads_inline
        assert_identical(client.echo(da), da)  # uploads chunks: the server has not spoken
        assert counter.reset() == (["message", "chunk"], ["message"])
        assert client.__dagen__.server_reads_inline  # its trailing metadata said so
        for _ in range(2):
            assert_identical(client.echo(da), da)
            assert counter.reset() == (["message"], ["message"])
        one_mib = np.arange(1 << 17, dtype="f8")  # 1 MiB: still one message
        np.testing.assert_array_equal(client.echo_array(one_mib), one_mib)
        assert counter.reset() == (["message"], ["message"])
        large = np.arange(5 << 17, dtype="f8")  # 5 MiB: chunks, as before
        np.testing.assert_array_equal(client.echo_array(large), large)
        sent, received = counter.reset()
        assert sent.count("chunk") == 2 and received.count("chunk") == 2
        out = client.echo_many([np.arange(10.0), large], {"u": da})  # inline and chunks mixed
        np.testing.assert_array_equal(out["a1"], large)
        np.testing.assert_array_equal(out["u"], da.values)
        sent, received = counter.reset()
        assert sent.count("chunk") == 2 and received.count("chunk") == 2


def alice_credentials(certs) -> grpc.ChannelCredentials:
    """A plain grpc client's credentials: alice's certificate."""
    folder = Path(certs.folder)
    return grpc.ssl_channel_credentials(
        (folder / "ca.crt").read_bytes(), (folder / "alice.key").read_bytes(),
        (folder / "alice.crt").read_bytes())


def test_a_caller_that_does_not_ask_gets_chunks(echo_server, echo_client_module, certs):
    """Another language's client (protoc's classes, no dagen metadata) gets chunk frames."""
    spec = echo_client_module.Client.__dagen_spec__
    pb2 = spec.pb2
    creds = alice_credentials(certs)
    array = np.arange(100.0)
    header = array_pb2.NDArray(id=1, dtype="<f8", shape=[100], nbytes=800)
    request = pb2.EchoArrayInput(request=pb2.EchoArrayRequest(a=header))
    chunk = pb2.EchoArrayInput(chunk=array_pb2.Chunk(array_id=1, start=[0], shape=[100],
                                                     data=array.tobytes()))
    with grpc.secure_channel(echo_server.target, creds) as channel:
        call = channel.stream_stream(spec.methods["echo_array"].path,
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=pb2.EchoArrayOutput.FromString)
        frames = list(call(iter([request, chunk]), timeout=30))
        assert [f.WhichOneof("frame") for f in frames] == ["response", "chunk"]
        assert not frames[0].response.result.data
        assert frames[1].chunk.data == array.tobytes()
        # asking (as dagen's clients do) gets the array inline, and the server's word
        answer = call(iter([request, chunk]), timeout=30, metadata=(INLINE_HEADER,))
        frames = list(answer)
        assert [f.WhichOneof("frame") for f in frames] == ["response"]
        assert frames[0].response.result.data == array.tobytes()
        assert INLINE_HEADER in tuple(answer.trailing_metadata())


def test_the_server_logs_and_reports_inline_bytes(echo_client_module, certs, tmp_path):
    log = tmp_path / "server.log"
    server = start_server(SERVICES / "echo_service.py", "--certs", str(certs.folder), log=log)
    try:
        with echo_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                       timeout=60) as client:
            for _ in range(2):  # chunks up, inline down; then inline both ways
                client.echo_array(np.arange(1000.0))
    finally:
        server.stop()
    lines = [line for line in log.read_text().splitlines() if "echo_array()" in line]
    assert len(lines) == 2 and all("in 8000 B, out 8000 B" in line for line in lines), lines


# -- old peers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_dagen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source of the dagen of OLD_COMMIT, with a client of the echo service it built."""
    if not (ROOT / ".git").exists():
        pytest.skip("the old dagen comes from git history: these tests run from a git checkout")
    where = tmp_path_factory.mktemp("old-dagen")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, "src", "codegen",
                              "protos"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    for name in ("echo_service.py", "echo_service.dagen.lock"):
        (where / name).write_bytes((SERVICES / name).read_bytes())
    subprocess.run([*DAGEN, "build", str(where / "echo_service.py"), "--out", str(where / "build")],
                   env=old_env(where), check=True, capture_output=True)
    return where


def old_env(where: Path, *extra: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (where / "src", *extra))}


CALLS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import dagen
    from echo_service_client import Client

    target, certs = sys.argv[1:3]
    small, large = np.arange(1000.0), np.arange(5 << 17, dtype="f8")
    smooth = np.repeat(np.linspace(0, 1, 500), 400)
    done = []
    with Client(target, certs=certs, identity="alice", timeout=60) as client:
        for _ in range(3):
            np.testing.assert_array_equal(client.echo_array(small), small)
            np.testing.assert_array_equal(client.echo_array(large), large)
            for codec in ("zstd", "lz4"):
                with client.__dagen__.options(compression=codec):
                    np.testing.assert_array_equal(client.echo_array(smooth), smooth)
                    np.testing.assert_array_equal(client.echo_array(smooth[:900]), smooth[:900])
            assert client.add(2, 3) == 5
            done.append(getattr(client.__dagen__, "server_reads_inline", None))
    print(json.dumps({"dagen": dagen.__file__, "inline": done}))
""")


def run_calls(target: str, certs: Path, env: dict[str, str], cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CALLS, target, str(certs)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_an_old_client_works_with_a_new_server(old_dagen, echo_server, certs):
    pytest.importorskip("zstandard")
    pytest.importorskip("lz4.block")
    env = old_env(old_dagen, old_dagen / "build" / "echo_service_client")
    result = run_calls(echo_server.target, certs.folder, env, old_dagen)
    assert result["dagen"].startswith(str(old_dagen))  # the old client indeed
    assert result["inline"] == [None, None, None]  # it knows nothing of inlining


def test_a_new_client_works_with_an_old_server(old_dagen, echo_build, certs, monkeypatch, tmp_path):
    pytest.importorskip("zstandard")
    pytest.importorskip("lz4.block")
    monkeypatch.setenv("PYTHONPATH", str(old_dagen / "src"))
    server = start_server(old_dagen / "echo_service.py", "--certs", str(certs.folder))
    try:
        import os

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(echo_build.client)])}
        result = run_calls(server.target, certs.folder, env, tmp_path)
    finally:
        server.stop()
    assert result["dagen"].startswith(str(ROOT / "src"))
    assert result["inline"] == [False, False, False]  # the old server never said it reads them


def test_inline_bytes_count_against_the_array_limits_not_the_value_budget(echo_client_module):
    """A message's inline array is array bytes (max_array_bytes...), not a value's bytes
    (max_value_bytes): the same array goes as chunks or inline under the same limits."""
    from dagen._budget import budget_check

    method = echo_client_module.Client.__dagen_spec__.methods["echo_array"]
    array = np.arange(1 << 16, dtype="f8")  # 512 KiB
    ctx = EncodeContext(inline=True)
    frame = method.input_cls(request=method.encode_request({"a": array}, ctx))
    buf = frame.SerializeToString()
    assert frame.request.a.data and len(buf) > array.nbytes
    limits = Limits(max_value_bytes=64 << 10)
    budget_check(method.input_cls.DESCRIPTOR, limits, "the request")(buf)  # passes
    sink = ArraySink(limits)
    sink.declare([frame.request.a])
    np.testing.assert_array_equal(sink.arrays[1].view("f8"), array)
    with pytest.raises(LimitExceeded, match="max_array_bytes"):
        ArraySink(Limits(max_array_bytes=256 << 10)).declare([frame.request.a])
    # a bytes value of the same size is a value: refused by the budget
    scalars = echo_client_module.Client.__dagen_spec__.methods["scalars"]
    big = scalars.request_cls(raw=bytes(array.nbytes)).SerializeToString()
    with pytest.raises(LimitExceeded, match="max_value_bytes"):
        budget_check(scalars.request_cls.DESCRIPTOR, limits, "the request")(big)


def test_a_message_is_encoded_into_its_frame_as_the_frame_of_a_copy_would_be(echo_client_module):
    """Streaming requests and responses are encoded in place into their frames (a
    frame_cls(request=...) copies the message and its inline arrays): the same bytes."""
    from dagen._protocol import new_frame, send

    method = echo_client_module.Client.__dagen_spec__.methods["echo_array"]
    array = np.arange(1 << 14, dtype="f8")
    for field, cls, encode in [("request", method.input_cls,
                                lambda ctx, into=None: method.encode_request({"a": array}, ctx, into)),
                               ("response", method.output_cls,
                                lambda ctx, into=None: method.encode_response(array, ctx, into))]:
        for inline in (True, False):
            frame, into = new_frame(cls, field)
            assert encode(EncodeContext(inline=inline), into) is into
            copied = [f.SerializeToString() for f in send(cls, field, encode(EncodeContext(inline=inline)),
                                                         EncodeContext())]
            assert frame.WhichOneof("frame") == field
            assert frame.SerializeToString() == copied[0]
            assert bool(getattr(frame, field).a.data if field == "request"
                        else frame.response.result.data) is inline


def test_a_request_of_one_frame_said_so_is_served_and_checked(echo_server, echo_client_module,
                                                              certs):
    """A caller that says its request is one frame (dagen-frames: 1, as dagen's clients do
    for inline requests) is served from that frame; a bad frame, or a header whose
    chunks never come, is refused as in a stream of frames. (The same bytes would pass
    through the stream-stream handler: that the one-frame path serves them, on both ends,
    is test_transport's test_a_request_of_one_frame_takes_the_unary_stream_path_both_ends.)"""
    spec = echo_client_module.Client.__dagen_spec__
    pb2 = spec.pb2
    creds = alice_credentials(certs)
    array = np.arange(100.0)
    inline = array_pb2.NDArray(id=1, dtype="<f8", shape=[100], nbytes=800, data=array.tobytes())
    chunked = array_pb2.NDArray(id=1, dtype="<f8", shape=[100], nbytes=800)
    metadata = (INLINE_HEADER, ONE_FRAME_HEADER)
    with grpc.secure_channel(echo_server.target, creds) as channel:
        call = channel.unary_stream(spec.methods["echo_array"].path,
                                    request_serializer=bytes,
                                    response_deserializer=pb2.EchoArrayOutput.FromString)
        good = pb2.EchoArrayInput(request=pb2.EchoArrayRequest(a=inline)).SerializeToString()
        answer = call(good, timeout=30, metadata=metadata)
        frames = list(answer)
        assert [f.WhichOneof("frame") for f in frames] == ["response"]
        assert frames[0].response.result.data == array.tobytes()
        # the frame went with the status (this grpc allows it), the trailing metadata too
        assert dagen._last._STATUS is not None
        assert INLINE_HEADER in tuple(answer.trailing_metadata())
        assert answer.code() == grpc.StatusCode.OK
        missing = pb2.EchoArrayInput(request=pb2.EchoArrayRequest(a=chunked)).SerializeToString()
        for request, words in [(b"\xff\xff\xff", "malformed frame"),
                               (missing, "elements missing")]:
            with pytest.raises(grpc.RpcError) as e:
                list(call(request, timeout=30, metadata=metadata))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert words in e.value.details()


def test_a_last_frame_goes_as_any_other_where_grpc_has_no_state_to_send_it_with():
    """Without grpc's call state (another grpc, a test's context) the one-frame handler
    yields the frame itself: send_with_status says it did not send it."""
    assert not dagen._last.send_with_status(object(), array_pb2.NDArray(id=1))
    assert dagen._last.serializer(dagen._last.SENT) == b""
