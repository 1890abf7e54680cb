"""Wire compression: codecs of chunk payloads, their checks, and negotiated calls."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import SERVICES, SHARED_DATA, start_server
from xarray.testing import assert_identical

import dagen
import dagen._transport
from dagen import _codecs
from dagen._arrays import EncodeContext, attach_array
from dagen._budget import frame_parser
from dagen._codecs import (
    ACCEPT_METADATA_KEY,
    CODECS,
    FAMILIES,
    CodecUnavailable,
    accepted_codecs,
    choose,
    compress,
    compress_chunks,
    normalize_compression,
)
from dagen._errors import CallError
from dagen._sink import ArraySink
from dagen._wire import (
    ChunkIn,
    WireError,
    encode_chunk_frame,
    frame_deserializer,
    frame_serializer,
    iter_chunks,
)
from dagen.testing import MockTransport
from dagen.v1 import array_pb2

zstandard = pytest.importorskip("zstandard")
lz4_block = pytest.importorskip("lz4.block")

ERA_INTERIM = SHARED_DATA / "eraint_uvz.nc"
DESERIALIZE = frame_deserializer(array_pb2.Chunk)  # chunk frames take the hand-written path


def header(array: np.ndarray, codec: str, aid: int = 1) -> array_pb2.NDArray:
    return array_pb2.NDArray(id=aid, dtype=array.dtype.str, shape=array.shape,
                             nbytes=array.nbytes, codec=codec)


def through(array: np.ndarray, codec: str, chunk_bytes: int = 1 << 20) -> tuple[np.ndarray, int]:
    """Send an array with ``codec`` through encoded chunk frames into a sink; the array
    received and the bytes of the frames."""
    sink = ArraySink()
    sink.allocate(header(array, codec))
    chunks = iter_chunks(1, array, chunk_bytes)
    if codec:
        chunks = compress_chunks(codec, chunks, array.dtype.itemsize)
    wire = 0
    for chunk in chunks:
        frame = encode_chunk_frame(chunk)
        wire += len(frame)
        sink.write(DESERIALIZE(frame))
    sink.finish()
    return sink.arrays[1], wire


def packed_field(shape=(4, 3, 121, 240)) -> np.ndarray:
    """Like ERA-Interim's variables: smooth fields stored as int16 with scale_factor and
    add_offset, unpacked to float64."""
    t, lev, lat, lon = np.ogrid[: shape[0], : shape[1], : shape[2], : shape[3]]
    field = 20 * np.sin(lon / 17 + t) * np.cos(lat / 13) + lev * 5
    rng = np.random.default_rng(3)
    packed = np.round(field / 0.03 + rng.integers(0, 2, shape)).astype(np.int16)
    return packed * 0.03 + 27.0


def smooth_field(shape=(240, 480)) -> np.ndarray:
    y, x = np.ogrid[: shape[0], : shape[1]]
    return (np.sin(x / 23) * np.cos(y / 19) * 30 + 273.15).astype("f4")


DTYPES = [
    "float16", "float32", "float64", "<f8", ">f8", ">f4", ">i4", "<i2", "int8", "uint8",
    "uint16", "uint32", "uint64", "int64", "bool", "complex64", ">c16",
    "datetime64[ns]", ">m8[s]", "<U5", ">U3", "|S4",
]


def sample(dtype: str, shape=(7, 6, 5)) -> np.ndarray:
    rng = np.random.default_rng(11)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "b":
        values = rng.integers(0, 2, n).astype(dt)
    elif dt.kind in "mM":
        values = rng.integers(0, 10**6, n).astype(dt.newbyteorder("=")).astype(dt)
    elif dt.kind in "US":
        words = ["", "a", "ab", "abc", "xyzz"] + (["ünï"] if dt.kind == "U" else [])
        values = np.array(words)[rng.integers(0, len(words), n)].astype(dt)
    elif dt.kind == "c":
        values = (np.arange(n) + 1j * np.arange(n)[::-1]).astype(dt)
    else:
        values = (np.arange(n) % 50).astype(dt)
    return values.reshape(shape)


# -- every dtype and layout through compressed chunks ----------------------------------------------


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_through_compressed_chunks(codec, dtype):
    array = sample(dtype)
    for chunk_bytes in (1 << 20, 48):  # one chunk; rows cut into blocks (strided targets)
        out, _ = through(array, codec, chunk_bytes)
        assert out.dtype == array.dtype and out.shape == array.shape
        np.testing.assert_array_equal(out, array)
        assert out.tobytes() == array.tobytes()


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.array(3.5), id="0-d"),
        pytest.param(np.array(7, dtype=">i8"), id="0-d-big-endian"),
        pytest.param(np.zeros((0,)), id="empty"),
        pytest.param(np.zeros((3, 0, 2), dtype=">i2"), id="empty-3d"),
        pytest.param(np.arange(60.0).reshape(3, 4, 5).transpose(2, 0, 1), id="transposed"),
        pytest.param(np.arange(200, dtype="int32").reshape(10, 20)[::3, 1::2], id="strided"),
        pytest.param(np.arange(24, dtype=">i4").reshape(4, 6)[:, ::-1], id="big-endian-reversed"),
    ],
)
def test_odd_layouts_round_trip_through_compressed_chunks(codec, array):
    for chunk_bytes in (1 << 20, 16):
        out, _ = through(array, codec, chunk_bytes)
        assert out.dtype == array.dtype and out.shape == array.shape
        np.testing.assert_array_equal(out, array)


def test_compressed_chunks_are_smaller_and_the_frames_are_what_protobuf_parses():
    array = packed_field()
    _, raw = through(array, "")
    for codec in CODECS:
        out, wire = through(array, codec)
        np.testing.assert_array_equal(out, array)
        assert wire < raw / (1.2 if CODECS[codec].shuffle else 1.8), codec
    chunk = next(compress_chunks("zstd", iter_chunks(3, array, 1 << 16), 8))
    parsed = array_pb2.Chunk.FromString(encode_chunk_frame(chunk)[4:])  # past tag + length
    assert parsed.array_id == 3 and list(parsed.shape) == list(chunk.shape)
    block = array[tuple(slice(a, a + n) for a, n in zip(chunk.start, chunk.shape, strict=True))]
    assert zstandard.ZstdDecompressor().decompress(parsed.data) == block.tobytes()


@pytest.mark.parametrize("codec", list(CODECS))
def test_the_receive_path_holds_at_most_one_block_besides_the_array(codec):
    import tracemalloc

    array = packed_field()  # 2.6 MiB: three 1 MiB chunks
    chunks = [DESERIALIZE(encode_chunk_frame(c)) for c in
              compress_chunks(codec, iter_chunks(1, array, 1 << 20), 8)]
    sink = ArraySink()
    sink.allocate(header(array, codec))
    assert sink.arrays[1].shape == array.shape  # allocated now (by the first chunk otherwise)
    tracemalloc.start()
    try:
        for chunk in chunks:
            sink.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(sink.arrays[1], array)
    # zstd without shuffle decompresses straight into the array; zstd-shuffle through one
    # buffer of one block (a chunk here: 680 KiB) at a time; python-lz4 makes the bytes
    # it returns from a buffer of its own (two blocks, for a moment)
    block = chunks[0].shape[0] * array[0].nbytes
    limit = {"zstd": 0, "zstd-shuffle": 1}.get(codec, 2) * block + (64 << 10)
    assert peak < limit, (peak, block)


def test_a_dask_array_goes_compressed_block_by_block():
    da = pytest.importorskip("dask.array")
    data = packed_field((4, 3, 40, 60))
    lazy = da.from_array(data, chunks=(1, 2, 40, 30))
    ctx = EncodeContext(1 << 12, FAMILIES["lz4"])
    h = array_pb2.NDArray()
    attach_array(lazy, h, ctx)
    sink = ArraySink()
    sink.allocate(h)
    wire = 0
    for chunk in ctx.chunks():
        frame = encode_chunk_frame(chunk)
        wire += len(frame)
        sink.write(DESERIALIZE(frame))
    sink.finish()
    np.testing.assert_array_equal(sink.arrays[1], data)
    assert h.codec == "lz4-shuffle" and wire < data.nbytes


def test_the_shuffle_is_bloscs():
    raw = np.array([0x0102, 0x0304, 0x0506], dtype=">u2").view(np.uint8)
    assert _codecs.shuffle(raw, 2).tobytes() == bytes([1, 3, 5, 2, 4, 6])
    data = zstandard.ZstdCompressor().compress(bytes([1, 3, 5, 2, 4, 6]))  # any zstd writer
    sink = ArraySink()
    sink.allocate(header(np.empty(3, ">u2"), "zstd-shuffle"))
    sink.write(ChunkIn(1, (0,), (3,), memoryview(data)))
    assert sink.arrays[1].tolist() == [0x0102, 0x0304, 0x0506]


# -- what the receiver refuses ---------------------------------------------------------------------


def write_one(codec: str, data: bytes, dtype="<f8", shape=(16,)) -> None:
    sink = ArraySink()
    sink.allocate(array_pb2.NDArray(id=1, dtype=dtype, shape=shape,
                                    nbytes=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                    codec=codec))
    sink.write(ChunkIn(1, (0,) * len(shape), shape, memoryview(data)))
    sink.finish()


def test_a_zip_bomb_is_refused_without_decompressing_it():
    import tracemalloc

    zeros = bytes(64 << 20)
    bombs = {
        "declared": zstandard.ZstdCompressor().compress(zeros),
        "undeclared": zstandard.ZstdCompressor(write_content_size=False).compress(zeros),
    }
    bombs["shuffled"] = bombs["undeclared"]
    lz4_bomb = lz4_block.compress(zeros, store_size=False)
    del zeros
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match=r"declares 67108864 bytes, but the block is 128"):
            write_one("zstd", bombs["declared"])
        with pytest.raises(WireError, match=r"decompresses to more than the block's 128 bytes"):
            write_one("zstd", bombs["undeclared"])
        with pytest.raises(WireError, match=r"more than the block's 128 bytes"):
            write_one("zstd-shuffle", bombs["shuffled"])
        with pytest.raises(WireError, match=r"more than the block's 128 bytes"):
            write_one("lz4", lz4_bomb)
        with pytest.raises(WireError, match=r"more than the block's 128 bytes"):
            write_one("lz4-shuffle", lz4_bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # nowhere near the 64 MiB the payloads would unpack to


@pytest.mark.parametrize("codec", list(CODECS))
def test_a_wrong_decompressed_size_is_refused(codec):
    shuffle = CODECS[codec].shuffle
    short = compress(codec, bytes(range(120)), 8 if shuffle else 1)
    long = compress(codec, bytes(136), 8 if shuffle else 1)
    with pytest.raises(WireError, match=r"array 1: chunk at \(0,\) of shape \(16,\)"):
        write_one(codec, short)
    with pytest.raises(WireError, match=r"bytes, expected 128|more than the block's 128|declares 136"):
        write_one(codec, long)


def test_a_wrong_size_is_refused_when_the_zstd_frame_does_not_declare_it():
    c = zstandard.ZstdCompressor(write_content_size=False)
    with pytest.raises(WireError, match=r"decompresses to 120 bytes, expected 128"):
        write_one("zstd", c.compress(bytes(120)))
    with pytest.raises(WireError, match=r"more than the block's 128 bytes"):
        write_one("zstd", c.compress(bytes(129)))
    write_one("zstd", c.compress(bytes(128)))  # exactly the block: fine


@pytest.mark.parametrize("codec", list(CODECS))
def test_corrupt_payloads_are_refused(codec):
    good = compress(codec, np.arange(16.0).tobytes(), 8)
    write_one(codec, good)
    for bad in (b"", b"\x00" * 7, good[: len(good) // 2], good + b"trailing", b"\xff" * 40):
        with pytest.raises(WireError, match=r"array 1: chunk at"):
            write_one(codec, bad)


def test_an_unknown_codec_is_refused():
    with pytest.raises(WireError, match=r"array 1: unsupported codec 'snappy': expected one of zstd"):
        write_one("snappy", b"")


def test_a_receiver_without_the_library_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now fails
    with pytest.raises(WireError, match=r"'zstd-shuffle'.*package 'zstandard' is not installed "
                                        r"here.*pip install zstandard"):
        ArraySink().allocate(header(np.zeros(4), "zstd-shuffle"))


# -- choosing a codec per array --------------------------------------------------------------------


def test_choice_follows_the_data():
    zstd = FAMILIES["zstd"]
    assert choose(packed_field(), zstd) == "zstd"  # unpacked int16: repeats as whole float64s
    assert choose(smooth_field(), zstd) == "zstd-shuffle"  # smooth floats: bytes by position
    noise = np.random.default_rng(0).integers(0, 256, 1 << 18, dtype=np.uint8)
    assert choose(noise, zstd) == ""  # nothing to gain: raw
    assert choose(np.zeros(1000, bool), FAMILIES["lz4"]) == "lz4"  # 1-byte items: no shuffle
    assert choose(np.array(["abc"] * 500), zstd) == "zstd"
    assert choose(np.zeros(1000), ("zstd",)) == "zstd"  # only what the peer accepts
    assert choose(np.zeros(1000), ()) == ""


def test_choice_for_a_dask_array_does_not_compute_it():
    da = pytest.importorskip("dask.array")
    computed = []

    def block(x):
        computed.append(1)
        return x

    lazy = da.zeros((100, 100), chunks=50).map_blocks(block, meta=np.zeros((0, 0)))
    ctx = EncodeContext(1 << 20, FAMILIES["zstd"])
    h = array_pb2.NDArray()
    attach_array(lazy, h, ctx)
    assert h.codec == "zstd-shuffle" and not computed


def test_sampling_never_copies_a_strided_array_whole():
    import tracemalloc

    big = np.zeros((2000, 2000))[:, ::2]  # 16 MiB of strided view
    tracemalloc.start()
    try:
        choose(big, FAMILIES["zstd"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# -- the options and the negotiation ---------------------------------------------------------------


def test_compression_option_values():
    assert normalize_compression(None) is None
    assert normalize_compression("none") is None and normalize_compression("") is None
    assert normalize_compression(" ZSTD ") == "zstd"
    with pytest.raises(ValueError, match="unknown compression 'gzip': expected one of zstd, lz4"):
        normalize_compression("gzip")


def test_accepted_codecs_keeps_the_callers_order_and_what_this_side_has(monkeypatch):
    md = (("x", "1"), (ACCEPT_METADATA_KEY, "lz4-shuffle, snappy,zstd,lz4"))
    assert accepted_codecs(md) == ("lz4-shuffle", "zstd", "lz4")
    assert accepted_codecs((("x", "1"),)) == () and accepted_codecs(None) == ()
    from dagen._codecs import available

    monkeypatch.setitem(sys.modules, "lz4.block", None)
    available.cache_clear()  # the answer is cached: forget it for this simulated uninstall
    try:
        assert accepted_codecs(md) == ("zstd",)  # answered raw or with zstd: never unreadable
    finally:
        monkeypatch.undo()
        available.cache_clear()


def test_a_client_without_the_library_fails_before_sending(echo_client_module, monkeypatch,
                                                           clean_env):
    Client = echo_client_module.Client
    transport = MockTransport(lambda request: request.arguments["a"])
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(CodecUnavailable, match=r"compression='zstd' needs the Python package "
                                               r"'zstandard'.*pip install zstandard"):
        Client(transport=transport, compression="zstd")
    monkeypatch.setenv("DAGEN_COMPRESSION", "zstd")
    with pytest.raises(ImportError, match="zstandard"):
        Client(transport=transport)
    monkeypatch.delenv("DAGEN_COMPRESSION")
    with Client(transport=transport) as client:
        with pytest.raises(CodecUnavailable, match="zstandard"):
            with client.__dagen__.options(compression="zstd"):
                client.echo_array(np.zeros(3))
        with pytest.raises(ValueError, match="unknown compression 'zip'"):
            with dagen.call_options(compression="zip"):
                client.echo_array(np.zeros(3))
        assert transport.requests == []  # nothing was sent
        np.testing.assert_array_equal(client.echo_array(np.zeros(3)), np.zeros(3))


def test_the_environment_sets_a_clients_compression(echo_client_module, echo_server, certs,
                                                    clean_env):
    clean_env.setenv("DAGEN_COMPRESSION", "lz4")
    with echo_client_module.Client(echo_server.target, certs=certs.folder,
                                   identity="alice") as client:
        assert client.__dagen__.compression == "lz4"
    with echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                   compression=None) as client:
        assert client.__dagen__.compression is None


# -- end to end, through `dagen serve` -------------------------------------------------------------


class WireCounter:
    """Counts the bytes of the frames a client sends and receives."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent = self.received = 0

        def serialize(item):
            out = frame_serializer(item)
            self.sent += len(out)
            return out

        def deserializer(frame_cls, limits, what):
            inner = frame_parser(frame_cls, limits, what)

            def deserialize(buf):
                self.received += len(buf)
                return inner(buf)

            return deserialize

        monkeypatch.setattr(dagen._transport, "frame_serializer", serialize)
        monkeypatch.setattr(dagen._transport, "frame_parser", deserializer)

    def reset(self) -> tuple[int, int]:
        out = (self.sent, self.received)
        self.sent = self.received = 0
        return out


def era_or_synthetic() -> xr.Dataset:
    if ERA_INTERIM.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its _FillValue of nan is not CF-conforming
            with xr.open_dataset(ERA_INTERIM, engine="scipy") as ds:
                return ds.load()
    data = packed_field()
    return xr.Dataset({"z": (("month", "level", "latitude", "longitude"), data,
                             {"units": "m**2 s**-2"})},
                      coords={"latitude": np.linspace(90, -90, 121, dtype="f4")})


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_a_compressed_call_round_trips_with_fewer_bytes_on_the_wire(
    echo_client_module, echo_server, certs, monkeypatch, compression
):
    ds = era_or_synthetic()
    counter = WireCounter(monkeypatch)
    with echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                   timeout=60) as client:
        raw = client.echo(ds["z"])
        raw_up, raw_down = counter.reset()
        with client.__dagen__.options(compression=compression):
            out = client.echo(ds["z"])
        up, down = counter.reset()
        assert_identical(out, ds["z"])
        assert_identical(raw, ds["z"])
        minimum = 3 if compression == "zstd" else 1.8  # ERA's z: 4.1 and 2.6
        assert raw_up > ds["z"].nbytes and raw_down > ds["z"].nbytes
        assert up * minimum < raw_up, (up, raw_up)
        assert down * minimum < raw_down, (down, raw_down)  # the server compressed too
        many = client.echo_many([ds["z"].values, np.arange(10.0)], {"u": ds["z"] * 2})
        assert counter.reset()[1] > raw_down  # not asked: raw
        with client.__dagen__.options(compression=compression):
            again = client.echo_many([ds["z"].values, np.arange(10.0)], {"u": ds["z"] * 2})
        for key, value in many.items():
            np.testing.assert_array_equal(again[key], value)
            assert again[key].dtype == value.dtype


def test_a_client_compressing_for_the_whole_client(echo_client_module, echo_server, certs,
                                                   monkeypatch):
    counter = WireCounter(monkeypatch)
    da = xr.DataArray(smooth_field(), dims=("y", "x"), name="t", attrs={"units": "K"})
    with echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                   compression="zstd") as client:
        assert_identical(client.echo(da), da)
        up, down = counter.reset()
        assert up < da.nbytes / 1.3 and down < da.nbytes / 1.3
        with client.__dagen__.options(compression=None):  # off for one block
            assert_identical(client.echo(da), da)
        assert min(counter.reset()) > da.nbytes


def test_a_server_without_the_library_refuses_a_compressed_upload(
    echo_client_module, certs, tmp_path, monkeypatch
):
    blocker = tmp_path / "no-zstd"
    (blocker / "zstandard").mkdir(parents=True)
    (blocker / "zstandard" / "__init__.py").write_text(
        "raise ImportError('zstandard is blocked for this test')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    server = start_server(SERVICES / "echo_service.py", "--certs", str(certs.folder))
    try:
        with echo_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                       timeout=30) as client:
            a = packed_field((2, 2, 30, 40))
            with client.__dagen__.options(compression="zstd"):
                with pytest.raises(CallError, match=r"INVALID_ARGUMENT.*echo_array\(\): array 1: "
                                   r"its chunks are compressed with 'zstd'.*'zstandard' is not "
                                   r"installed here.*pip install zstandard") as info:
                    client.echo_array(a)
                assert info.value.code.name == "INVALID_ARGUMENT"
                # an upload that goes raw (too small to gain) gets a raw answer
                np.testing.assert_array_equal(client.echo_array(np.arange(3.0)), np.arange(3.0))
            with client.__dagen__.options(compression="lz4"):  # the server has lz4
                np.testing.assert_array_equal(client.echo_array(a), a)
    finally:
        server.stop()


def test_a_compressed_chunk_may_not_claim_a_huge_block():
    # a few bytes must not make the receiver allocate a buffer as large as the array
    shape = (64 << 20,)  # 64 MiB of uint8, declared; allocated lazily by the sink
    data = zstandard.ZstdCompressor(write_content_size=False).compress(b"")
    with pytest.raises(WireError, match=r"a compressed chunk holds at most 33554432 bytes"):
        write_one("zstd-shuffle", data, dtype="|u1", shape=shape)
