"""Values go through a real server over mutual TLS and come back identical."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from xarray.testing import assert_identical

DTYPES = [
    "float16", "float32", "float64",
    "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "bool", "complex64", "complex128",
    "datetime64[ns]", "timedelta64[s]",
]


def sample(dtype: str, shape=(3, 4, 5)) -> np.ndarray:
    rng = np.random.default_rng(42)
    n = int(np.prod(shape))
    if dtype == "bool":
        values = rng.integers(0, 2, n).astype(bool)
    elif dtype.startswith(("datetime64", "timedelta64")):
        values = rng.integers(0, 10**12, n).astype(dtype)
    elif dtype.startswith("complex"):
        values = (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(dtype)
    elif dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    else:
        values = rng.normal(size=n).astype(dtype)
    return values.reshape(shape)


def assert_same_dtypes(actual: xr.DataArray, expected: xr.DataArray) -> None:
    assert actual.dtype == expected.dtype
    for name in expected.coords:
        assert actual[name].dtype == expected[name].dtype, name


@pytest.mark.parametrize("dtype", DTYPES)
def test_dataarray_of_every_dtype(echo, dtype):
    da = xr.DataArray(sample(dtype), dims=("t", "y", "x"), name=f"v_{dtype}")
    out = echo.echo(da)
    assert_identical(out, da)
    assert_same_dtypes(out, da)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ndarray_of_every_dtype(echo, dtype):
    a = sample(dtype)
    out = echo.echo_array(a)
    assert out.dtype == a.dtype and out.shape == a.shape
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.array(3.5), id="0-d"),
        pytest.param(np.zeros((0,)), id="empty"),
        pytest.param(np.zeros((3, 0, 2), dtype="int16"), id="empty-3d"),
        pytest.param(np.arange(60.0).reshape(3, 4, 5).transpose(2, 0, 1), id="transposed"),
        pytest.param(np.arange(200, dtype="int32").reshape(10, 20)[::3, 1::2], id="strided"),
        pytest.param(np.arange(24, dtype=">f8").reshape(4, 6), id="big-endian"),
        pytest.param(np.arange(24, dtype=">i4").reshape(4, 6)[:, ::-1], id="big-endian-reversed"),
    ],
)
def test_odd_layouts(echo, data):
    dims = tuple(f"d{i}" for i in range(data.ndim))
    da = xr.DataArray(data, dims=dims)
    out = echo.echo(da)
    assert_identical(out, da)
    assert out.dtype == da.dtype
    arr = echo.echo_array(data)
    np.testing.assert_array_equal(arr, data)
    assert arr.dtype == data.dtype and arr.shape == data.shape


def test_small_chunks_cut_rows_into_blocks(echo_client_module, echo_server, certs):
    # 64-byte chunks: a row of 40 float64 (320 B) must be split into n-d blocks.
    da = xr.DataArray(np.arange(3 * 7 * 40, dtype="float64").reshape(3, 7, 40), dims=("a", "b", "c"))
    with echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                   chunk_bytes=64) as client:
        assert_identical(client.echo(da), da)


def test_coordinates_names_and_attrs(echo):
    time = pd.date_range("2001-01-01", periods=4, freq="D")
    da = xr.DataArray(
        np.random.default_rng(0).normal(size=(4, 3, 2)).astype("float32"),
        dims=("time", "station", "level"),
        coords={
            "time": time,
            "station": ["Bremen", "Kiel", "Hamburg"],  # string dimension coordinate
            "station_id": ("station", np.array(["B1", "K22", "H333"], dtype=object)),
            "level": ("level", [1000.0, 850.0], {"units": "hPa", "positive": "down"}),
            "height": (("station", "level"), np.arange(6.0).reshape(3, 2)),
            "valid": ("time", time + pd.Timedelta(hours=6)),  # datetime non-dimension coord
            "run": np.datetime64("2000-12-31T12:00", "ns"),  # scalar coordinate
        },
        name="temperature",
        attrs={
            "units": "K",
            "count": 3,
            "scale": 0.5,
            "flags": [1, 2, 4],
            "mixed": ["a", 1, 2.5],
            "valid_range": np.array([200.0, 330.0], dtype="float32"),
            "fill": np.float32(-999.0),
            "history": "created by a test",
        },
    )
    out = echo.echo(da)
    assert_identical(out, da)
    assert_same_dtypes(out, da)
    assert type(out.attrs["fill"]) is np.float32
    assert type(out.attrs["count"]) is int
    assert out.attrs["valid_range"].dtype == np.float32
    assert out.station_id.dtype == object


def test_unnamed_dataarray_without_coords(echo):
    da = xr.DataArray(np.arange(5))
    out = echo.echo(da)
    assert out.name is None
    assert_identical(out, da)


def test_arrays_inside_containers(echo):
    arrays = [np.arange(3), np.ones((2, 2), dtype="float32")]
    named = {"u": xr.DataArray(np.arange(4.0), dims="x")}
    out = echo.echo_many(arrays, named)
    assert sorted(out) == ["a0", "a1", "u"]  # protobuf maps do not keep insertion order
    np.testing.assert_array_equal(out["a0"], arrays[0])
    np.testing.assert_array_equal(out["a1"], arrays[1])
    assert out["a1"].dtype == np.float32
    np.testing.assert_array_equal(out["u"], np.arange(4.0))


def test_scalars_keep_types(echo):
    assert echo.scalars(True, -(2**63), 1.5, "ünïcode ✓", b"\x00\xff") == [
        "bool:True", f"int:{-(2**63)}", "float:1.5", "str:'ünïcode ✓'", "bytes:b'\\x00\\xff'",
        "NoneType:None",
    ]
    assert echo.scalars(False, 0, 0.0, "", b"", maybe="set")[-1] == "str:'set'"
    assert echo.scalars(False, 0, 0.0, "", b"", maybe="")[-1] == "str:''"  # "" is not None


def test_nested_containers(echo):
    out = echo.nested([[1, 2], [], [3]], {"a": [1.5], "b": []}, [1, None, 3])
    assert out == {"grid": [[1, 2], [], [3]], "none": None, "holes": [[1, -1, 3]]}


def test_unary_results(echo):
    assert echo.add(2, 3) == 5
    assert echo.nothing() is None
    assert echo.positional(1, 2) == [1, 2, 3]
    assert echo.positional(1, b=2, c=4) == [1, 2, 4]


def test_large_results_reuse_memory_only_once_the_caller_dropped_them(echo):
    """The client receives a large result into the memory of one the caller dropped
    (dagen._buffers.LendingPool), never into one it still holds, even through a view."""
    n = (24 << 20) // 8 + 1237  # a size no other test uses: the pool is process-wide
    a = np.arange(n, dtype=np.float64)
    b = a[::-1].copy()
    r1 = echo.echo_array(a)
    r2 = echo.echo_array(b)
    assert not np.shares_memory(r1, r2)
    np.testing.assert_array_equal(r1, a)
    address = r1.__array_interface__["data"][0]
    del r1
    r3 = echo.echo_array(b)
    assert r3.__array_interface__["data"][0] == address  # touched memory, used again
    np.testing.assert_array_equal(r3, b)
    view = r2[::2]
    del r2
    r4 = echo.echo_array(a)
    assert not np.shares_memory(view, r4) and not np.shares_memory(r3, r4)
    np.testing.assert_array_equal(view, b[::2])  # the held view is untouched
    np.testing.assert_array_equal(r4, a)
