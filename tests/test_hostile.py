"""Hostile and broken input, spoken to a real server over mutual TLS with a raw gRPC
channel: no dagen code on the sending side, every frame built by hand.

Each case gets INVALID_ARGUMENT (or the fitting status) with a message that says what
is wrong; nothing is allocated beyond the limits (the server's peak RSS, VmHWM, stays
put); nothing is executed (the served functions record every run); and the next valid
call succeeds. A bounded hypothesis fuzz of the frame decoder and the receiving sink
(broken frames are refused, valid ones arrive exactly) closes the file.

The unit-level refusals of the sink are in test_wire.py; here they go over the wire.
"""

from __future__ import annotations

import math
import re
import threading
import time

import grpc
import numpy as np
import pytest
from guarded import SERVICE, MiB, Served, raw_channel, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dagen._arrays import EncodeContext, attach_array, read_array
from dagen._coverage import Coverage
from dagen._protocol import receive, send
from dagen._sink import ArraySink
from dagen._wire import (
    DEFAULT_CHUNK_BYTES,
    BadFrame,
    ChunkIn,
    ChunkOut,
    LimitExceeded,
    Limits,
    WireError,
    encode_chunk_frame,
    frame_deserializer,
    frame_serializer,
)
from dagen.v1 import array_pb2

LIMITS = ["--max-array-bytes", "64MiB", "--max-call-bytes", "96MiB", "--max-arrays", "8",
          "--max-ndim", "4", "--max-memory", "256MiB"]
PEAK_SLACK = 24 * MiB  # what grpc, TLS and a few threads may add to the peak RSS


@pytest.fixture(scope="module")
def pb2(guarded_build):
    import importlib
    import sys

    sys.path.insert(0, str(guarded_build.out))
    try:
        return importlib.import_module("guarded_service_pb2")
    finally:
        sys.path.remove(str(guarded_build.out))


@pytest.fixture(scope="module")
def server(certs, tmp_path_factory, guarded_build) -> Served:
    tmp = tmp_path_factory.mktemp("hostile")
    served = serve("--certs", str(certs.folder), *LIMITS, tmp=tmp, name="hostile")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def channel(server, certs):
    with raw_channel(server.target, certs.folder) as ch:
        yield ch


# -- frames, by hand ------------------------------------------------------------------------------


def header(dtype: str = "<f8", shape=(4,), nbytes: int | None = None, id: int = 1):
    if nbytes is None:
        nbytes = max(0, math.prod(shape)) * np.dtype(dtype).itemsize
    return array_pb2.NDArray(id=id, dtype=dtype, shape=list(shape), nbytes=nbytes)


def total_request(pb2, label: str = "", **kw) -> bytes:
    return pb2.TotalInput(request=pb2.TotalRequest(a=header(**kw), label=label)).SerializeToString()


def chunk(pb2, start, shape, data: bytes | None = None, id: int = 1, itemsize: int = 8) -> bytes:
    if data is None:
        data = bytes(max(0, math.prod(shape)) * itemsize)
    return pb2.TotalInput(
        chunk=array_pb2.Chunk(array_id=id, start=list(start), shape=list(shape), data=data)
    ).SerializeToString()


def call(channel, method: str, frames: list[bytes], timeout: float = 30):
    """Send raw frames on a streaming rpc; the raw response frames, or the RpcError."""
    stub = channel.stream_stream(SERVICE + method)
    try:
        return list(stub(iter(frames), timeout=timeout))
    except grpc.RpcError as e:
        return e


def valid_total(pb2, channel, label: str = "valid") -> None:
    """A correct call of total(): the server still serves, and serves right."""
    values = np.arange(5, dtype="<f8")
    replies = call(channel, "Total", [
        total_request(pb2, label=label, shape=(5,)),
        chunk(pb2, (0,), (5,), values.tobytes()),
    ])
    assert not isinstance(replies, grpc.RpcError), replies
    assert pb2.TotalOutput.FromString(replies[0]).response.result == 10.0


def cases(pb2):
    """name -> (method, frames, status, message pattern)."""
    INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
    req = total_request(pb2, shape=(8,))
    big_dtype = "<f8"
    return {
        "chunk-before-request": (
            "Total", [chunk(pb2, (0,), (4,))], INVALID,
            r"first frame must be the request message, not a chunk"),
        "empty-first-frame": (
            "Total", [b""], INVALID, r"first frame must be the request message, not an empty frame"),
        "second-request": (
            "Total", [req, req], INVALID, r"a second request message arrived after the first"),
        "chunk-outside-the-array": (
            "Total", [req, chunk(pb2, (6,), (4,))], INVALID,
            r"array 1: chunk at \(6,\) of shape \(4,\) lies outside the array's shape \(8,\)"),
        "chunk-at-a-negative-start": (
            "Total", [req, chunk(pb2, (-2,), (4,))], INVALID, r"lies outside the array"),
        "chunk-of-negative-size": (
            "Total", [req, chunk(pb2, (0,), (-4,), b"")], INVALID, r"empty chunk of shape \(-4,\)"),
        "chunk-with-too-many-dimensions": (
            "Total", [req, chunk(pb2, (0, 0), (4, 1))], INVALID,
            r"do not match the array's 1 dimensions"),
        "duplicate-chunk": (
            "Total", [req, chunk(pb2, (0,), (4,)), chunk(pb2, (0,), (4,))], INVALID,
            r"chunk at \(0,\) overlaps one already received"),
        "overlapping-chunk": (
            "Total", [req, chunk(pb2, (0,), (5,)), chunk(pb2, (4,), (4,))], INVALID,
            r"chunk at \(4,\) overlaps one already received"),
        "missing-chunks-then-end": (
            "Total", [req, chunk(pb2, (0,), (3,)), chunk(pb2, (5,), (3,))], INVALID,
            r"the stream ended with 2 of 8 elements missing"),
        "chunk-with-too-few-bytes": (
            "Total", [req, chunk(pb2, (0,), (8,), bytes(63))], INVALID,
            r"carries 63 bytes, expected 64"),
        "chunk-for-an-undeclared-array": (
            "Total", [req, chunk(pb2, (0,), (8,), id=7)], INVALID, r"undeclared array id 7"),
        "nbytes-disagreeing-with-shape": (
            "Total", [total_request(pb2, shape=(4,), nbytes=40)], INVALID,
            r"shape \(4,\) of <f8 is 32 bytes, but the header declares 40"),
        "negative-shape": (
            "Total", [total_request(pb2, shape=(-4,), nbytes=0)], INVALID,
            r"negative extent in shape \(-4,\)"),
        "astronomical-shape-within-uint64": (
            "Total", [total_request(pb2, dtype="|u1", shape=(2**62,))], EXHAUSTED,
            r"4611686018427387904 bytes exceed max_array_bytes=67108864"),
        "shape-overflowing-64-bits": (
            "Total", [total_request(pb2, dtype=big_dtype, shape=(2**40, 2**40), nbytes=0)], INVALID,
            r"is 9671406556917033397649408 bytes, but the header declares 0"),
        "empty-array-with-an-astronomical-axis": (
            "Total", [total_request(pb2, shape=(0, 2**62))], INVALID, r"cannot allocate shape"),
        "array-just-over-max-array-bytes": (
            "Total", [total_request(pb2, dtype="|u1", shape=(64 * MiB + 1,))], EXHAUSTED,
            r"67108865 bytes exceed max_array_bytes=67108864"),
        "too-many-dimensions": (
            "Total", [total_request(pb2, shape=(1,) * 5)], EXHAUSTED,
            r"5 dimensions exceed max_ndim=4"),
        "arrays-over-max-call-bytes": (
            "Pair", [pb2.PairInput(request=pb2.PairRequest(
                a=header("|u1", (60 * MiB,), id=1), b=header("|u1", (60 * MiB,), id=2)
            )).SerializeToString()], EXHAUSTED,
            r"arrays of 125829120 bytes exceed max_call_bytes=100663296"),
        "two-arrays-with-one-id": (
            "Pair", [pb2.PairInput(request=pb2.PairRequest(
                a=header(id=3), b=header(id=3))).SerializeToString()], INVALID,
            r"array id 3 is declared twice"),
        "more-arrays-than-max-arrays": (
            "Count", [pb2.CountInput(request=pb2.CountRequest(
                arrays=[header(shape=(1,), id=i + 1) for i in range(9)])).SerializeToString()],
            EXHAUSTED, r"more than 8 arrays in one call \(max_arrays=8\)"),
        "object-dtype": (
            "Total", [total_request(pb2, dtype="|O8", shape=(1,), nbytes=8)], INVALID,
            r"unsupported dtype '\|O8'"),
        "object-dtype-short": (
            "Total", [total_request(pb2, dtype="O", shape=(1,), nbytes=8)], INVALID,
            r"unsupported dtype 'O'"),
        "void-dtype": (
            "Total", [total_request(pb2, dtype="|V16", shape=(1,), nbytes=16)], INVALID,
            r"unsupported dtype '\|V16'"),
        "structured-dtype": (
            "Total", [total_request(pb2, dtype="[('a', '<i4'), ('b', 'O')]", shape=(1,),
                                    nbytes=12)], INVALID, r"unsupported dtype"),
        "unknown-dtype": (
            "Total", [total_request(pb2, dtype="<q7", shape=(1,), nbytes=7)], INVALID,
            r"unsupported dtype '<q7'"),
        "dtype-numpy-cannot-make": (
            "Total", [total_request(pb2, dtype="<f3", shape=(1,), nbytes=3)], INVALID,
            r"unsupported dtype '<f3'"),
        "empty-dtype": (
            "Total", [total_request(pb2, dtype="", shape=(1,), nbytes=8)], INVALID,
            r"unsupported dtype ''"),
        "a-codec": (
            "Total", [pb2.TotalInput(request=pb2.TotalRequest(a=array_pb2.NDArray(
                id=1, dtype="<f8", shape=[1], nbytes=8, codec="snappy"))).SerializeToString()],
            INVALID, r"unsupported codec 'snappy'"),
        "request-that-does-not-parse": (
            "Total", [b"\x0a\xff\xff\xff\xff\x0f\x01"], INVALID, r"malformed frame"),
        "chunk-frame-with-an-overlong-varint": (
            "Total", [req, b"\x12\x0c\x08" + b"\xff" * 11], INVALID,
            r"truncated or overlong varint|malformed frame"),
        "chunk-frame-with-a-group": (
            "Total", [req, b"\x12\x02\x0b\x0c"], INVALID,
            r"unsupported wire type|malformed frame"),
        "chunk-field-past-its-frame": (
            "Total", [req, b"\x12\x03\x22\x7f\x00"], INVALID,
            r"runs past the end of its frame|malformed frame"),
        "unary-request-that-does-not-parse": (
            "VaultOpen", [b"\x0a\x04\x0a\x02\xff\xfe"], INVALID,
            r"VaultOpen|Vault.open\(\): malformed request message"),
        "unknown-method": ("Nope", [b""], grpc.StatusCode.UNIMPLEMENTED, r"Method not found"),
    }


CASE_NAMES = [
    "chunk-before-request", "empty-first-frame", "second-request", "chunk-outside-the-array",
    "chunk-at-a-negative-start", "chunk-of-negative-size", "chunk-with-too-many-dimensions",
    "duplicate-chunk", "overlapping-chunk", "missing-chunks-then-end",
    "chunk-with-too-few-bytes", "chunk-for-an-undeclared-array",
    "nbytes-disagreeing-with-shape", "negative-shape", "astronomical-shape-within-uint64",
    "shape-overflowing-64-bits", "empty-array-with-an-astronomical-axis",
    "array-just-over-max-array-bytes", "too-many-dimensions", "arrays-over-max-call-bytes",
    "two-arrays-with-one-id", "more-arrays-than-max-arrays", "object-dtype",
    "object-dtype-short", "void-dtype", "structured-dtype", "unknown-dtype",
    "dtype-numpy-cannot-make", "empty-dtype", "a-codec", "request-that-does-not-parse",
    "chunk-frame-with-an-overlong-varint", "chunk-frame-with-a-group",
    "chunk-field-past-its-frame", "unary-request-that-does-not-parse", "unknown-method",
]


def test_every_case_is_listed(pb2):
    assert sorted(cases(pb2)) == sorted(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_input_is_refused_and_the_server_goes_on(name, pb2, server, channel):
    method, frames, code, pattern = cases(pb2)[name]
    valid_total(pb2, channel, "warm-up")
    before = server.records()
    server.reset_peak()
    baseline = server.rss()

    outcome = call(channel, method, frames)

    assert isinstance(outcome, grpc.RpcError), f"{name}: the server accepted it: {outcome!r}"
    assert outcome.code() == code, (name, outcome.code(), outcome.details())
    assert re.search(pattern, outcome.details()), (name, outcome.details())
    # nothing executed, nothing allocated beyond the limits
    assert server.records() == before, f"{name}: a function ran"
    grew = server.peak() - baseline
    assert grew < PEAK_SLACK, f"{name}: peak RSS grew by {grew / MiB:.1f} MiB"
    # and the next valid call succeeds
    valid_total(pb2, channel)
    assert server.alive()


def compressed_request(pb2, codec: str, n: int) -> bytes:
    return pb2.TotalInput(request=pb2.TotalRequest(a=array_pb2.NDArray(
        id=1, dtype="|u1", shape=[n], nbytes=n, codec=codec), label="bomb")).SerializeToString()


@pytest.mark.parametrize("codec, payload, pattern", [
    pytest.param("zstd", lambda: _zstd(bytes(512 * MiB)), r"zstd", id="zstd-bomb"),
    pytest.param("zstd-shuffle", lambda: _zstd(bytes(512 * MiB), size=False), r"zstd",
                 id="zstd-bomb-without-its-size"),
    pytest.param("zstd", lambda: b"\x28\xb5\x2f\xfd" + bytes(40), r"zstd", id="zstd-garbage"),
    pytest.param("zstd", lambda: _zstd(bytes(1000)), r"zstd", id="zstd-too-short"),
    pytest.param("lz4", lambda: _lz4(bytes(512 * MiB)), r"lz4", id="lz4-bomb"),
    pytest.param("lz4-shuffle", lambda: b"\xff" * 64, r"lz4", id="lz4-garbage"),
])
def test_compressed_chunks_that_lie_are_refused_without_inflating(
    codec, payload, pattern, pb2, server, channel
):
    """A chunk of a 4 KiB block whose payload decompresses to 512 MiB (a "zip bomb"),
    to too little, or is no valid frame: INVALID_ARGUMENT, and the server's memory does
    not move."""
    data = payload()
    before = server.records()
    server.reset_peak()
    baseline = server.rss()
    outcome = call(channel, "Total", [
        compressed_request(pb2, codec, 4096),
        pb2.TotalInput(chunk=array_pb2.Chunk(array_id=1, start=[0], shape=[4096], data=data)
                       ).SerializeToString(),
    ])
    assert isinstance(outcome, grpc.RpcError), outcome
    assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT, outcome.details()
    assert re.search(pattern, outcome.details()), outcome.details()
    print(f"{codec} payload of {len(data)} bytes: {outcome.details()}")
    assert server.peak() - baseline < PEAK_SLACK
    assert server.records() == before
    valid_total(pb2, channel)


def _zstd(raw: bytes, size: bool = True) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return zstandard.ZstdCompressor(write_content_size=size).compress(raw)


def _lz4(raw: bytes) -> bytes:
    block = pytest.importorskip("lz4.block")
    return block.compress(raw, store_size=False)


def test_refusals_are_clear_messages_printed(pb2, server, channel):
    """The messages a hostile or broken peer gets, printed for the record: each is one
    line of text, not a Python traceback or repr."""
    for name in CASE_NAMES:
        method, frames, _, _ = cases(pb2)[name]
        outcome = call(channel, method, frames)
        details = outcome.details() or ""
        print(f"{name:40} {outcome.code().name:20} {details}")
        assert details and "\n" not in details and "Traceback" not in details, name


def test_a_stream_cut_off_mid_array_runs_nothing_and_frees_its_buffer(pb2, server, channel):
    """The client sends the header of a 64 MiB array and half its chunks, then goes:
    nothing runs, the buffer is freed, and the server serves the next call."""
    before = server.records()
    baseline = server.rss()
    sent, release = threading.Event(), threading.Event()
    n = 64 * MiB  # max_array_bytes of this server

    def frames():
        yield total_request(pb2, dtype="|u1", shape=(n,), label="cut")
        for start in range(0, n // 2, MiB):
            yield chunk(pb2, (start,), (MiB,), bytes(MiB), itemsize=1)
        sent.set()
        release.wait(30)  # never sends the rest

    responses = channel.stream_stream(SERVICE + "Total")(frames(), timeout=60)
    assert sent.wait(30)
    assert wait_for_rss(server, baseline + n // 2 - 4 * MiB, 10, above=True)
    held = server.rss() - baseline
    responses.cancel()
    release.set()
    assert wait_for_rss(server, baseline + 20 * MiB, 10), (
        f"RSS stayed {(server.rss() - baseline) / MiB:.1f} MiB above its baseline")
    print(f"cut-off upload: server RSS +{held / MiB:.1f} MiB while receiving, "
          f"+{(server.rss() - baseline) / MiB:.1f} MiB after")
    assert server.records() == before
    valid_total(pb2, channel)


def wait_for_rss(server: Served, bound: int, timeout: float, above: bool = False) -> bool:
    """Wait until the server's RSS is at most ``bound`` (at least, with ``above``)."""
    def reached() -> bool:
        return server.rss() >= bound if above else server.rss() <= bound

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if reached():
            return True
        time.sleep(0.05)
    return reached()


def test_many_tiny_chunks_around_a_tall_one_cost_linear_time(pb2, server, channel):
    """A peer that sends one tall chunk and then thousands of one-element chunks beside
    it (quadratic for a list of received blocks) is served in time linear in what it sent."""
    rows = 20_000
    frames = [total_request(pb2, dtype="|u1", shape=(rows, 2), label="tiny"),
              chunk(pb2, (0, 0), (rows, 1), bytes(rows), itemsize=1)]
    frames += [chunk(pb2, (i, 1), (1, 1), b"\x01", itemsize=1) for i in range(rows)]
    started = time.perf_counter()
    replies = call(channel, "Total", frames, timeout=60)
    elapsed = time.perf_counter() - started
    assert not isinstance(replies, grpc.RpcError), replies
    assert pb2.TotalOutput.FromString(replies[0]).response.result == rows
    print(f"{len(frames)} chunk frames (one tall, {rows} of one element): {elapsed:.2f} s")
    assert elapsed < 20


# -- fuzzing the frame decoder and the sink -------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
FUZZ_LIMITS = Limits(max_array_bytes=1 << 16, max_call_bytes=1 << 17, max_arrays=4, max_ndim=3)


@pytest.fixture(scope="module")
def deserialize(pb2):
    return frame_deserializer(pb2.TotalInput)


def _valid_frames(shape, chunk_rows):
    array = np.arange(math.prod(shape), dtype="<i2").reshape(shape)
    out = []
    for s in range(0, shape[0], chunk_rows):
        block = array[s:s + chunk_rows]
        out.append(encode_chunk_frame(ChunkOut(1, (s, *(0,) * (len(shape) - 1)), block.shape,
                                               block.reshape(-1).view(np.uint8))))
    return array, out


def _mutate(frame: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if not frame or kind == "extend":
        return frame + data.draw(st.binary(max_size=16))
    i = data.draw(st.integers(0, len(frame) - 1))
    if kind == "flip":
        return frame[:i] + bytes([frame[i] ^ data.draw(st.integers(1, 255))]) + frame[i + 1:]
    if kind == "truncate":
        return frame[:i]
    return frame[:i] + data.draw(st.binary(max_size=12)) + frame[i:]


@FUZZ
@given(data=st.data())
def test_fuzz_frames_into_the_sink_never_crash_and_never_leave_a_gap(deserialize, data):
    """Valid chunk frames, mutated, reordered, dropped or duplicated, into a sink: every
    outcome is a WireError or a completely and exactly filled array, never another
    exception, never an array with elements that did not arrive."""
    shape = data.draw(st.tuples(st.integers(1, 12), st.integers(1, 6)))
    array, frames = _valid_frames(shape, data.draw(st.integers(1, 4)))
    ops = data.draw(st.lists(st.sampled_from(["keep", "mutate", "drop", "dup", "garbage"]),
                             min_size=len(frames), max_size=len(frames)))
    sent: list[bytes] = []
    for frame, op in zip(frames, ops, strict=True):
        if op == "keep":
            sent.append(frame)
        elif op == "mutate":
            sent.append(_mutate(frame, data))
        elif op == "dup":
            sent += [frame, frame]
        elif op == "garbage":
            sent.append(data.draw(st.binary(max_size=40)))
    sent = data.draw(st.permutations(sent))

    def receive(sentinel: int) -> np.ndarray | None:
        sink = ArraySink(FUZZ_LIMITS)
        sink.allocate(header("<i2", shape))
        sink.arrays[1][...] = sentinel  # what a gap would leave
        try:
            for raw in sent:
                frame = deserialize(raw)
                if isinstance(frame, BadFrame):
                    raise WireError(frame.error)
                if not isinstance(frame, ChunkIn):
                    raise WireError("not a chunk")
                sink.write(frame)
            sink.finish()
        except WireError:
            return None
        return sink.arrays[1]

    first, second = receive(-1), receive(7)
    assert (first is None) == (second is None)
    if first is not None and second is not None:
        # accepted: every element arrived (a mutated chunk may carry other values, but
        # never both sentinels at one place: that would be an element nobody sent)
        assert not ((first == -1) & (second == 7)).any()
        if all(op == "keep" for op in ops):
            np.testing.assert_array_equal(first, array)


# Every kind of dtype the wire carries (biufcmMUS), in either byte order.
WIRE_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"),
    hnp.datetime64_dtypes(endianness="?"),
    hnp.timedelta64_dtypes(endianness="?"),
    hnp.byte_string_dtypes(endianness="?", min_len=1, max_len=4),
    hnp.unicode_string_dtypes(endianness="?", min_len=1, max_len=4),
)


@settings(FUZZ, max_examples=200)
@given(
    array=WIRE_DTYPES.flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                         max_side=6))),
    chunk_bytes=st.integers(1, 64) | st.just(DEFAULT_CHUNK_BYTES),
)
def test_fuzz_valid_frames_decode_to_exactly_the_array_sent(pb2, deserialize, array, chunk_bytes):
    """The other side of the fuzzing above: any array of a wire dtype, sent as the sender
    sends it (its header in the request, then its chunks, of any size: whole, slabs,
    parts of rows, single elements), through the same deserializer and sink, arrives
    exactly: same dtype, shape and bytes."""
    ctx = EncodeContext(chunk_bytes)
    request = pb2.TotalRequest(label="fuzz")
    attach_array(array, request.a, ctx)
    wire = [frame_serializer(frame) for frame in send(pb2.TotalInput, "request", request, ctx)]
    assert (len(wire) > 1) == (array.size > 0)  # the request, then chunks if any elements

    message, received = receive([deserialize(raw) for raw in wire], "request", FUZZ_LIMITS)

    assert message.label == "fuzz"
    got = read_array(message.a, received)
    assert got.dtype == array.dtype
    assert got.shape == array.shape
    assert got.tobytes() == array.tobytes()


@FUZZ
@given(
    dtype=st.one_of(st.sampled_from(["<f8", "|u1", ">i4", "<c16", "<M8[ns]", "|b1", "<U3",
                                     "|O8", "|V4", "<f3", "", "f8", "<i8,<i8", "<x1"]),
                    st.text(max_size=12)),
    shape=st.lists(st.integers(-3, 2**63 - 1) | st.integers(0, 70), max_size=5),
    nbytes=st.integers(0, 2**64 - 1) | st.just(None),
)
def test_fuzz_headers_are_allocated_within_the_limits_or_refused(dtype, shape, nbytes):
    """Any header: a WireError (LimitExceeded for sizes) before allocating, or an
    allocation within the limits."""
    sink = ArraySink(FUZZ_LIMITS)
    if nbytes is None:
        try:
            nbytes = max(0, math.prod(shape)) * np.dtype(dtype).itemsize
        except Exception:  # noqa: BLE001 - not a dtype numpy knows: any nbytes will do
            nbytes = 8
        nbytes = min(nbytes, 2**64 - 1)
    h = array_pb2.NDArray(id=1, dtype=dtype, shape=shape, nbytes=nbytes)
    try:
        sink.allocate(h)
    except LimitExceeded:
        return
    except WireError:
        return
    allocated = sink.arrays[1]
    assert allocated.nbytes <= FUZZ_LIMITS.max_array_bytes
    assert allocated.ndim <= FUZZ_LIMITS.max_ndim


@FUZZ
@given(data=st.data())
def test_fuzz_coverage_refuses_exactly_the_overlapping_blocks(data):
    """The overlap check agrees with a boolean array of what arrived, for blocks and slabs."""
    shape = data.draw(st.lists(st.integers(1, 17), min_size=1, max_size=3).map(tuple))
    coverage, arrived = Coverage(shape), np.zeros(shape, bool)
    for _ in range(data.draw(st.integers(1, 25))):
        start = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
        if data.draw(st.booleans()):  # a slab: whole rows
            start = (start[0], *(0,) * (len(shape) - 1))
            size = (data.draw(st.integers(1, shape[0] - start[0])), *shape[1:])
        else:
            size = tuple(data.draw(st.integers(1, n - a)) for a, n in zip(start, shape, strict=True))
        index = tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))
        free = not arrived[index].any()
        assert coverage.claim(start, size) == free
        if free:
            arrived[index] = True
