"""The chunked array wire format: frames, chunks, dtypes and the receiving sink."""

from __future__ import annotations

import importlib
import math
import random
import sys
import tracemalloc

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from dagen._build import compile_proto
from dagen._sink import ArraySink
from dagen._wire import (
    BadFrame,
    ChunkIn,
    ChunkOut,
    LimitExceeded,
    Limits,
    WireError,
    block_shape,
    encode_chunk_frame,
    frame_deserializer,
    frame_serializer,
    iter_chunks,
    wire_dtype,
)
from dagen.v1 import array_pb2

FRAME_PROTO = """\
syntax = "proto3";
package dagen_wire_test;
import "dagen/v1/array.proto";
message Hello { string text = 1; }
message Frame { oneof frame { Hello request = 1; dagen.v1.Chunk chunk = 2; } }
"""


@pytest.fixture(scope="module")
def pb2(tmp_path_factory: pytest.TempPathFactory):
    """A frame message compiled by protoc, shaped as every generated frame is."""
    folder = tmp_path_factory.mktemp("wire-frame")
    proto = folder / "dagen_wire_test.proto"
    proto.write_text(FRAME_PROTO)
    compile_proto(proto, folder)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("dagen_wire_test_pb2")
    finally:
        sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def deserialize(pb2):
    return frame_deserializer(pb2.Frame)


# -- helpers -------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint, written independently of the code under test."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = varint((number << 3) | wire_type)
    return key + (varint(len(payload)) + payload if wire_type == 2 else payload)


def chunk_frame(inner: bytes) -> bytes:
    return field(2, 2, inner)


def header(aid: int, dtype, shape, nbytes: int | None = None, codec: str = ""):
    dt = np.dtype(dtype)
    if nbytes is None:
        nbytes = math.prod(shape) * dt.itemsize
    return array_pb2.NDArray(id=aid, dtype=dt.str, shape=shape, nbytes=nbytes, codec=codec)


def chunk_in(aid: int, start, shape, data: bytes) -> ChunkIn:
    return ChunkIn(aid, tuple(start), tuple(shape), memoryview(data))


def as_tuple(c) -> tuple:
    """A ChunkIn or a protobuf Chunk as comparable plain values."""
    return (c.array_id, tuple(c.start), tuple(c.shape), bytes(c.data))


def sample(dtype, shape, seed: int = 0) -> np.ndarray:
    """Varied values of any wire dtype."""
    dt = np.dtype(dtype)
    n = math.prod(shape)
    rng = np.random.default_rng(seed)
    if dt.kind == "b":
        values = rng.random(n) < 0.5
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        values = rng.integers(info.min, info.max, n, endpoint=True, dtype=dt.newbyteorder("="))
    elif dt.kind == "f":
        values = rng.standard_normal(n) * 1e3
    elif dt.kind == "c":
        values = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    elif dt.kind == "M":
        values = np.datetime64("1970-01-01", "s") + rng.integers(-(10**9), 10**9, n).astype("m8[s]")
    elif dt.kind == "m":
        values = rng.integers(-(10**9), 10**9, n).astype(dt)
    elif dt.kind == "U":
        letters = list("aé€𝄞z")
        values = ["".join(rng.choice(letters, rng.integers(0, 6))) for _ in range(n)]
    elif dt.kind == "S":
        values = [bytes(rng.integers(1, 256, rng.integers(0, 4)).astype(np.uint8)) for _ in range(n)]
    else:
        raise AssertionError(dt)
    return np.asarray(values).astype(dt).reshape(shape)


def transfer(array: np.ndarray, chunk_bytes: int, deserialize, seed: int | None = None):
    """Send an array as chunk frames (shuffled when seeded) into a sink; the received array."""
    sink = ArraySink()
    sink.allocate(header(1, array.dtype, array.shape))
    frames = [encode_chunk_frame(c) for c in iter_chunks(1, array, chunk_bytes)]
    if seed is not None:
        random.Random(seed).shuffle(frames)
    for frame in frames:
        sink.write(deserialize(frame))
    sink.finish()
    return sink.arrays[1]


# -- encoding chunk frames -----------------------------------------------------------------------


CHUNKS = [
    pytest.param(1, (), (), bytes(range(8)), id="0-d"),
    pytest.param(7, (0, 0, 0), (2, 3, 4), bytes(range(24)), id="3-d"),
    pytest.param(3, (2**33, 5, 2**40 + 1), (1, 2, 3), b"abcdef", id="large-start"),
    pytest.param(2**32 - 1, (0,), (200,), b"\xab" * 200, id="max-id-long-data"),
    pytest.param(130, (1, 2**62), (70_000, 1), bytes(70_000), id="3-byte-lengths"),
]


@pytest.mark.parametrize("array_id, start, shape, data", CHUNKS)
def test_encode_chunk_frame_gives_the_bytes_protobuf_gives(pb2, array_id, start, shape, data):
    message = array_pb2.Chunk(array_id=array_id, start=start, shape=shape, data=data)
    expected = pb2.Frame(chunk=message).SerializeToString()
    assert expected == b"\x12" + varint(message.ByteSize()) + message.SerializeToString()

    for payload in (np.frombuffer(data, np.uint8), data, memoryview(data)):
        chunk = ChunkOut(array_id, start, shape, payload)
        assert encode_chunk_frame(chunk) == expected
        assert frame_serializer(chunk) == expected


def test_frame_serializer_serializes_messages(pb2):
    frame = pb2.Frame(request=pb2.Hello(text="hi"))
    assert frame_serializer(frame) == frame.SerializeToString()


def test_chunks_of_an_array_parse_with_protobuf(pb2):
    array = np.arange(60, dtype=">i4").reshape(3, 4, 5)
    chunks = list(iter_chunks(5, array, chunk_bytes=24))
    assert len(chunks) > 1
    for chunk in chunks:
        parsed = pb2.Frame.FromString(encode_chunk_frame(chunk))
        assert parsed.WhichOneof("frame") == "chunk"
        index = tuple(slice(a, a + n) for a, n in zip(chunk.start, chunk.shape, strict=True))
        assert as_tuple(parsed.chunk) == (5, chunk.start, chunk.shape, array[index].tobytes())


# -- parsing frames ------------------------------------------------------------------------------


def test_deserializer_returns_a_view_into_the_received_bytes(deserialize):
    payload = bytes(range(48))
    buf = encode_chunk_frame(ChunkOut(4, (2, 0), (2, 3), payload))
    out = deserialize(buf)
    assert type(out) is ChunkIn
    assert (out.array_id, out.start, out.shape) == (4, (2, 0), (2, 3))
    assert out.data.obj is buf  # no copy of the payload
    assert out.data.nbytes == 48
    assert bytes(out.data) == payload


@pytest.mark.parametrize("array_id, start, shape, data", CHUNKS)
def test_deserializer_parses_frames_protobuf_wrote(pb2, deserialize, array_id, start, shape, data):
    message = array_pb2.Chunk(array_id=array_id, start=start, shape=shape, data=data)
    out = deserialize(pb2.Frame(chunk=message).SerializeToString())
    assert type(out) is ChunkIn
    assert as_tuple(out) == (array_id, start, shape, data)


def test_deserializer_reads_array_id_zero_that_protobuf_omits(pb2, deserialize):
    buf = pb2.Frame(chunk=array_pb2.Chunk(array_id=0, start=[1], shape=[2], data=b"ab"))
    assert as_tuple(deserialize(buf.SerializeToString())) == (0, (1,), (2,), b"ab")


def test_deserializer_parses_unpacked_reordered_fields_and_skips_unknown_ones(deserialize):
    # Another implementation may write repeated fields unpacked, in any order, interleaved,
    # repeat a scalar field (the last one wins) and add fields this version does not know.
    inner = b"".join(
        [
            field(4, 2, b"0123456789ab"),
            field(1, 0, varint(99)),
            field(3, 0, varint(1)),
            field(2, 0, varint(2**40)),
            field(9, 0, varint(12345)),
            field(3, 0, varint(2)),
            field(10, 1, b"\x00" * 8),
            field(2, 2, varint(0)),  # a packed run after unpacked values
            field(11, 5, b"\x00" * 4),
            field(3, 2, varint(6)),
            field(12, 2, b"unknown"),
            field(1, 0, varint(3)),
        ]
    )
    reference = array_pb2.Chunk.FromString(inner)
    assert as_tuple(reference) == (3, (2**40, 0), (1, 2, 6), b"0123456789ab")
    out = deserialize(chunk_frame(inner))
    assert type(out) is ChunkIn
    assert as_tuple(out) == as_tuple(reference)


def test_deserializer_reads_negative_and_wide_values_as_protobuf_does(deserialize):
    inner = field(1, 0, varint(2**33 + 5)) + field(2, 0, varint(-1)) + field(3, 0, varint(-(2**63)))
    reference = array_pb2.Chunk.FromString(inner)
    assert as_tuple(reference) == (5, (-1,), (-(2**63),), b"")
    assert as_tuple(deserialize(chunk_frame(inner))) == as_tuple(reference)


def test_deserializer_merges_a_chunk_split_over_two_fields(pb2, deserialize):
    first = field(1, 0, varint(2)) + field(2, 2, varint(1) + varint(0))
    second = field(3, 2, varint(1) + varint(3)) + field(4, 2, b"xyz")
    buf = chunk_frame(first) + chunk_frame(second)
    reference = pb2.Frame.FromString(buf).chunk  # protobuf merges repeated sub-messages
    out = deserialize(buf)
    assert type(out) is ChunkIn
    assert as_tuple(out) == as_tuple(reference) == (2, (1, 0), (1, 3), b"xyz")


def test_deserializer_returns_other_frames_as_messages(pb2, deserialize):
    out = deserialize(pb2.Frame(request=pb2.Hello(text="hi")).SerializeToString())
    assert isinstance(out, pb2.Frame)
    assert out.WhichOneof("frame") == "request"
    assert out.request.text == "hi"


GARBAGE = [
    pytest.param(b"\xff\xff\xff\xff", id="invalid-key"),
    pytest.param(b"\x12\x05\x08", id="frame-shorter-than-its-length"),
    pytest.param(chunk_frame(b"\x22\x05ab"), id="data-runs-past-frame"),
    pytest.param(chunk_frame(b"\x08\x80"), id="truncated-varint"),
    pytest.param(chunk_frame(b"\x08" + b"\x80" * 10 + b"\x01"), id="overlong-varint"),
    pytest.param(chunk_frame(b"\x0f"), id="wire-type-7"),
    pytest.param(chunk_frame(b"\x51\x00\x00"), id="truncated-fixed64"),
    pytest.param(chunk_frame(b"\x5d\x00"), id="truncated-fixed32"),
    pytest.param(chunk_frame(b"\x12\x03\x01"), id="packed-runs-past-frame"),
    pytest.param(b"\x0a\x05ab", id="truncated-request"),
]


@pytest.mark.parametrize("buf", GARBAGE)
def test_deserializer_returns_badframe_for_garbage(pb2, deserialize, buf):
    with pytest.raises(DecodeError):
        pb2.Frame.FromString(buf)  # protobuf refuses these bytes too
    out = deserialize(buf)
    assert isinstance(out, BadFrame)
    assert out.error.startswith("malformed frame")


def test_deserializer_refuses_a_packed_varint_running_past_its_field(pb2, deserialize):
    # The packed `start` field is one byte long, but its varint continues (0x80) into the
    # key of the next field: protobuf refuses this; the hand parser must not read across.
    inner = b"\x08\x01" + b"\x12\x01\x80" + b"\x1a\x01\x01" + b"\x22\x08" + bytes(8)
    with pytest.raises(DecodeError):
        array_pb2.Chunk.FromString(inner)
    out = deserialize(chunk_frame(inner))
    assert isinstance(out, BadFrame), f"parsed as {out}"


# -- cutting arrays into chunks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, itemsize, chunk_bytes, expected",
    [
        ((10, 4), 8, 64, (2, 4)),  # slabs of whole rows along axis 0
        ((10, 4), 8, 1 << 20, (10, 4)),  # the whole array
        ((7,), 1, 3, (3,)),
        ((3, 100), 8, 64, (1, 8)),  # a row exceeds chunk_bytes: split it
        ((2, 3, 4), 4, 20, (1, 1, 4)),
        ((2, 3, 50), 4, 64, (1, 1, 16)),
        ((), 8, 64, ()),
        ((5,), 16, 8, (1,)),  # one element is larger than chunk_bytes
        ((2, 3), 16, 8, (1, 1)),
    ],
)
def test_block_shape(shape, itemsize, chunk_bytes, expected):
    assert block_shape(shape, itemsize, chunk_bytes) == expected


_base = np.arange(24 * 10, dtype="<f8").reshape(24, 10)


ARRAYS = {
    "c-contiguous": _base,
    "transposed": _base.T,
    "fortran": np.asfortranarray(_base),
    "strided": _base[::3, 1::2],
    "reversed": _base[::-1, ::-1],
    "3-d-strided": np.arange(4 * 5 * 6, dtype=">i2").reshape(4, 5, 6)[:, ::2, ::-1],
    "strings": sample("<U3", (6, 7)),
    "bools": sample("|b1", (50,)),
    "0-d": np.array(2.5),
    "0-d-view": _base[3, 4, ...],
}


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("chunk_bytes", [1, 16, 50, 200, 1 << 20])
def test_chunks_tile_the_array_exactly(name, chunk_bytes):
    array = ARRAYS[name]
    limit = max(chunk_bytes, array.dtype.itemsize)
    covered = np.zeros(array.shape, np.int64)
    rebuilt = np.zeros_like(array)
    for chunk in iter_chunks(3, array, chunk_bytes):
        assert chunk.array_id == 3
        index = tuple(slice(a, a + n) for a, n in zip(chunk.start, chunk.shape, strict=True))
        data = memoryview(chunk.data)
        assert data.c_contiguous
        assert data.nbytes == math.prod(chunk.shape) * array.dtype.itemsize <= limit
        assert bytes(data) == array[index].tobytes()  # C order of the block
        covered[index] += 1
        rebuilt[index] = np.frombuffer(data, array.dtype).reshape(chunk.shape)
    assert (covered == 1).all()
    np.testing.assert_array_equal(rebuilt, array)


def test_chunks_of_a_contiguous_array_are_views_of_it():
    array = np.arange(1000, dtype="<i8").reshape(100, 10)
    chunks = list(iter_chunks(1, array, chunk_bytes=800))
    assert len(chunks) == 10
    assert all(np.shares_memory(c.data, array) for c in chunks)


def test_chunks_are_slabs_along_axis_0_when_a_row_fits():
    array = np.zeros((10, 4))
    chunks = list(iter_chunks(1, array, chunk_bytes=64))
    assert [c.start for c in chunks] == [(0, 0), (2, 0), (4, 0), (6, 0), (8, 0)]
    assert {c.shape for c in chunks} == {(2, 4)}


def test_chunks_split_rows_larger_than_chunk_bytes():
    array = np.zeros((3, 100))
    chunks = list(iter_chunks(1, array, chunk_bytes=64))
    assert len(chunks) == 3 * 13
    boxes = [(c.start, c.shape) for c in chunks]
    assert boxes[:2] == [((0, 0), (1, 8)), ((0, 8), (1, 8))]
    assert boxes[12:14] == [((0, 96), (1, 4)), ((1, 0), (1, 8))]
    assert boxes[-1] == ((2, 96), (1, 4))


def test_a_0d_array_is_one_chunk():
    chunks = list(iter_chunks(2, np.array(7, dtype="<i4"), chunk_bytes=1))
    assert len(chunks) == 1
    assert (chunks[0].start, chunks[0].shape) == ((), ())
    assert bytes(chunks[0].data) == b"\x07\x00\x00\x00"


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 5, 2)])
def test_an_empty_array_has_no_chunks(shape):
    assert list(iter_chunks(1, np.zeros(shape), chunk_bytes=8)) == []


# -- dtypes --------------------------------------------------------------------------------------

_UNITS = ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]
_DTYPES = (
    [np.dtype(c) for c in "?bhilqBHILQefdgFDG"]
    + [np.dtype(f"{kind}8[{unit}]") for kind in "Mm" for unit in _UNITS]
    + [np.dtype(s) for s in ("U1", "U5", "S1", "S3")]
)
WIRE_DTYPES = sorted(
    {dt.newbyteorder(order).str for dt in _DTYPES for order in "<>"}
)


@pytest.mark.parametrize("text", WIRE_DTYPES)
def test_wire_dtype_accepts_plain_dtypes(text):
    dtype = wire_dtype(text)
    assert dtype == np.dtype(text)
    assert dtype.str == text


@pytest.mark.parametrize(
    "text",
    [
        "O", "|O", "<O8", "V8", "|V8", "i4,f8", "[('a','<i4')]", "(2,)<f8", "<f8,(2,)<i4",
        "float64", "", " <f8", "<f8\n", "<f3", "<u16", "<U0", "|S0", "<M8[xyz]", "<M4[ns]",
        "<i4[ns]", "np.float64",
    ],
)
def test_wire_dtype_refuses_other_dtypes(text):
    with pytest.raises(WireError, match="unsupported dtype"):
        wire_dtype(text)


# -- the receiving sink --------------------------------------------------------------------------

SINK_DTYPES = [
    "<f8", ">f8", "<f4", "<f2", "<i8", ">i2", "|i1", "|u1", "<u8", "|b1", "<c16", ">c8",
    "<M8[ns]", ">M8[s]", "<m8[s]", "<U5", "|S3",
]


@pytest.mark.parametrize("dtype", SINK_DTYPES)
@pytest.mark.parametrize("shape", [(), (13,), (4, 5, 6)])
@pytest.mark.parametrize("chunk_bytes", [24, 1 << 20])
def test_sink_reproduces_arrays(deserialize, dtype, shape, chunk_bytes):
    array = sample(dtype, shape)
    received = transfer(array, chunk_bytes, deserialize, seed=len(shape))
    assert received.dtype == array.dtype
    assert received.shape == array.shape
    assert received.tobytes() == array.tobytes()
    np.testing.assert_array_equal(received, array)


@pytest.mark.parametrize("seed", range(3))
def test_sink_accepts_chunks_in_any_order(deserialize, seed):
    array = sample("<i4", (3, 5, 100), seed)  # rows of 400 bytes, split into blocks of 40
    np.testing.assert_array_equal(transfer(array, 40, deserialize, seed=seed), array)


@pytest.fixture
def sink() -> ArraySink:
    """A sink expecting one 4x4 array of int32, id 1."""
    s = ArraySink()
    s.allocate(header(1, "<i4", (4, 4)))
    return s


def block(start, shape, itemsize: int = 4) -> ChunkIn:
    return chunk_in(1, start, shape, bytes(math.prod(shape) * itemsize))


def test_sink_refuses_a_duplicate_chunk(sink):
    sink.write(block((2, 0), (2, 4)))
    with pytest.raises(WireError, match=r"chunk at \(2, 0\) overlaps one already received"):
        sink.write(block((2, 0), (2, 4)))


def test_sink_refuses_a_partially_overlapping_chunk(sink):
    sink.write(block((0, 0), (2, 2)))
    with pytest.raises(WireError, match="overlaps"):
        sink.write(block((1, 1), (2, 2)))


def test_sink_accepts_adjacent_blocks(sink):
    expected = np.arange(16, dtype="<i4").reshape(4, 4)
    for start, shape in [((0, 2), (2, 2)), ((2, 0), (2, 4)), ((0, 0), (2, 2))]:
        index = tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))
        sink.write(chunk_in(1, start, shape, expected[index].tobytes()))
    sink.finish()
    np.testing.assert_array_equal(sink.arrays[1], expected)


def test_sink_finds_overlap_with_a_tall_block_received_earlier(sink):
    sink.write(block((0, 0), (4, 1)))
    sink.write(block((3, 1), (1, 3)))
    sink.write(block((1, 1), (1, 3)))
    with pytest.raises(WireError, match="overlaps"):
        sink.write(block((3, 0), (1, 1)))


def test_sink_refuses_an_overlap_after_chunks_arrived_out_of_row_order():
    sink = ArraySink()
    sink.allocate(header(1, "|u1", (3, 2)))
    sink.write(chunk_in(1, (1, 0), (2, 1), b"\x01\x01"))  # rows 1-2 of column 0
    sink.write(chunk_in(1, (0, 1), (2, 1), b"\x02\x02"))  # rows 0-1 of column 1
    with pytest.raises(WireError, match="overlaps"):
        sink.write(chunk_in(1, (2, 0), (1, 1), b"\x03"))  # row 2 of column 0, again


def test_sink_never_finishes_an_array_with_elements_never_sent():
    # Element (2, 1) is never sent, but the chunks carry 6 elements in all: the sink must
    # refuse a chunk or the end of the stream, not hand out uninitialized memory.
    sink = ArraySink()
    sink.allocate(header(1, "|u1", (3, 2)))
    chunks = [((1, 0), (2, 1)), ((0, 1), (2, 1)), ((2, 0), (1, 1)), ((0, 0), (1, 1))]
    with pytest.raises(WireError):
        for start, shape in chunks:
            sink.write(chunk_in(1, start, shape, bytes(math.prod(shape))))
        sink.finish()


def test_sink_refuses_exactly_the_overlapping_chunks():
    shape = (6, 5, 4)
    rng = random.Random(0)
    sink = ArraySink()
    sink.allocate(header(1, "|u1", shape))
    covered = np.zeros(shape, bool)
    refused = 0
    for _ in range(300):
        start = tuple(rng.randrange(n) for n in shape)
        size = tuple(rng.randint(1, min(3, n - a)) for a, n in zip(start, shape, strict=True))
        index = tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))
        chunk = chunk_in(1, start, size, bytes(math.prod(size)))
        if covered[index].any():
            with pytest.raises(WireError, match="overlaps"):
                sink.write(chunk)
            refused += 1
        else:
            sink.write(chunk)
            covered[index] = True
    assert 0 < refused < 300


@pytest.mark.parametrize(
    "start, shape",
    [
        pytest.param((3, 0), (2, 4), id="past-the-end"),
        pytest.param((0, 4), (1, 1), id="start-past-the-end"),
        pytest.param((-1, 0), (1, 4), id="negative-start"),
        pytest.param((0, 0), (0, 4), id="zero-size"),
        pytest.param((0, 0), (-1, 4), id="negative-size"),
    ],
)
def test_sink_refuses_a_chunk_outside_the_array(sink, start, shape):
    chunk = chunk_in(1, start, shape, bytes(max(0, math.prod(shape)) * 4))
    with pytest.raises(WireError, match=r"outside the array's shape \(4, 4\)|empty chunk of shape"):
        sink.write(chunk)


def test_sink_refuses_a_chunk_with_the_wrong_number_of_bytes(sink):
    with pytest.raises(WireError, match="carries 15 bytes, expected 16"):
        sink.write(chunk_in(1, (0, 0), (1, 4), bytes(15)))


def test_sink_refuses_a_chunk_with_the_wrong_number_of_dimensions(sink):
    with pytest.raises(WireError, match="do not match the array's 2 dimensions"):
        sink.write(chunk_in(1, (0,), (4,), bytes(16)))


def test_sink_refuses_a_chunk_for_an_undeclared_array(sink):
    with pytest.raises(WireError, match="undeclared array id 2"):
        sink.write(chunk_in(2, (0, 0), (1, 4), bytes(16)))


def test_sink_refuses_an_array_declared_twice(sink):
    with pytest.raises(WireError, match="array id 1 is declared twice"):
        sink.allocate(header(1, "<f8", (2,)))


def test_sink_refuses_a_header_whose_nbytes_disagree_with_its_shape():
    with pytest.raises(WireError, match="is 64 bytes, but the header declares 63"):
        ArraySink().allocate(header(1, "<i4", (4, 4), nbytes=63))


def test_sink_refuses_a_negative_extent():
    with pytest.raises(WireError, match="negative extent"):
        ArraySink().allocate(header(1, "<i4", (-2, -2), nbytes=16))


def test_sink_refuses_an_unknown_codec():
    with pytest.raises(WireError, match="unsupported codec 'snappy'"):
        ArraySink().allocate(header(1, "<i4", (4,), codec="snappy"))


def test_sink_refuses_an_unsupported_dtype():
    with pytest.raises(WireError, match="unsupported dtype '|O'"):
        ArraySink().allocate(array_pb2.NDArray(id=1, dtype="|O", shape=[2], nbytes=16))


def test_sink_refuses_a_header_it_cannot_allocate_with_a_wire_error():
    # Zero bytes, but no numpy array has this shape: a peer's header must not raise
    # anything but WireError (else the call fails with UNKNOWN instead of INVALID_ARGUMENT).
    with pytest.raises(WireError):
        ArraySink().allocate(header(1, "<f8", (0, 2**62)))


def test_sink_finish_names_the_missing_elements(sink):
    sink.write(block((0, 0), (3, 4)))
    sink.write(block((3, 0), (1, 2)))
    with pytest.raises(WireError, match="array 1: the stream ended with 2 of 16 elements missing"):
        sink.finish()


def test_sink_finish_accepts_arrays_without_elements():
    s = ArraySink()
    s.allocate(header(1, "<f8", (0, 3)))
    s.allocate(header(2, "<f8", (4, 0, 2)))
    s.finish()
    assert s.arrays[1].shape == (0, 3)
    assert s.arrays[2].shape == (4, 0, 2)


# -- limits --------------------------------------------------------------------------------------


def test_limit_max_array_bytes_is_checked_before_allocating():
    s = ArraySink(Limits(max_array_bytes=1024))
    s.allocate(header(1, "<f8", (128,)))  # exactly the limit
    with pytest.raises(LimitExceeded, match=r"array 2: 1152921504606846976 bytes exceed max_array_bytes=1024"):
        s.allocate(header(2, "<f8", (2**57,)))  # 2**60 bytes: allocating it would fail
    assert list(s.arrays) == [1]


def test_limit_max_call_bytes_counts_every_array():
    s = ArraySink(Limits(max_call_bytes=100, max_array_bytes=2**62))
    s.allocate(header(1, "<f8", (6,)))
    s.allocate(header(2, "|u1", (52,)))
    with pytest.raises(LimitExceeded, match="arrays of 101 bytes exceed max_call_bytes=100"):
        s.allocate(header(3, "|u1", (1,)))
    with pytest.raises(LimitExceeded, match="max_call_bytes"):
        s.allocate(header(4, "<c16", (2**28, 2**28)))  # 2**60 bytes
    assert list(s.arrays) == [1, 2]


def test_limit_max_arrays():
    s = ArraySink(Limits(max_arrays=2))
    s.allocate(header(1, "<f8", (1,)))
    s.allocate(header(2, "<f8", (1,)))
    with pytest.raises(LimitExceeded, match="more than 2 arrays in one call"):
        s.allocate(header(3, "<f8", (1,)))


def test_limit_max_ndim():
    s = ArraySink(Limits(max_ndim=3))
    s.allocate(header(1, "<f8", (1, 1, 1)))
    with pytest.raises(LimitExceeded, match="4 dimensions exceed max_ndim=3"):
        s.allocate(header(2, "<f8", (1, 1, 1, 1)))


def test_limit_exceeded_is_a_wire_error():
    with pytest.raises(WireError):
        ArraySink(Limits(max_ndim=0)).allocate(header(1, "<f8", (1,)))


# -- copies on the receive path --------------------------------------------------------------------


def test_sink_writes_into_the_array_it_allocated(deserialize):
    array = sample("<f8", (8, 6))
    s = ArraySink()
    s.allocate(header(1, array.dtype, array.shape))
    target = s.arrays[1]
    owner, address = target.base, target.__array_interface__["data"][0]
    for chunk in iter_chunks(1, array, chunk_bytes=40):  # blocks of rows and parts of rows
        s.write(deserialize(encode_chunk_frame(chunk)))
    s.finish()
    assert s.arrays[1] is target
    assert target.base is owner
    assert target.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(target, array)


def _peak_allocation(action) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "shape", [pytest.param((64, 8192), id="whole-rows"), pytest.param((2, 262144), id="blocks")]
)
def test_receive_path_copies_each_chunk_once(deserialize, shape):
    chunk_bytes = 1 << 20
    array = np.arange(math.prod(shape), dtype="<f8").reshape(shape)  # 4 MiB
    frames = [encode_chunk_frame(c) for c in iter_chunks(1, array, chunk_bytes)]
    assert len(frames) == 4
    s = ArraySink()
    s.allocate(header(1, array.dtype, array.shape))
    assert s.arrays[1].shape == shape  # allocated now (by the first chunk otherwise)

    def receive():
        for frame in frames:
            s.write(deserialize(frame))

    # The chunk's bytes go straight from the received frame into the array allocated
    # beforehand: no intermediate copy of a payload (1 MiB) is ever made. (Chunks that
    # are not whole rows are tracked with one bit per element: dagen._coverage.)
    assert _peak_allocation(receive) < chunk_bytes // 16 + array.size // 8
    s.finish()
    np.testing.assert_array_equal(s.arrays[1], array)
    # ...whereas one extra copy of a payload would show:
    assert _peak_allocation(lambda: bytes(deserialize(frames[0]).data)) >= chunk_bytes
