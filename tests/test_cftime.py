"""Issue 14 §3: cftime calendars (climate model output) travel exactly, as coordinates
(the CFTimeIndex of a dimension coordinate included) and as data, through a real
`dagen serve` over mutual TLS; and the encoder itself."""

import datetime as dt

import numpy as np
import pytest
import xarray as xr
from xarray.testing import assert_identical

from dagen._arrays import DecodeContext, EncodeContext, attach_array, read_array
from dagen._cftime import UNITS, cftime_offsets
from dagen._wire import WireError
from dagen.v1 import array_pb2

cftime = pytest.importorskip("cftime")

CALENDARS = ["noleap", "360_day", "all_leap", "julian", "proleptic_gregorian", "standard"]


def dates(calendar: str, n: int = 6) -> np.ndarray:
    """n monthly dates with odd seconds and microseconds, and the extremes of years 1 and 9999."""
    inner = [cftime.datetime(1850 + 37 * i, 1 + i % 12, 28, i, 59, 59, 999_999 - i, calendar=calendar)
             for i in range(n - 2)]
    first = cftime.datetime(1, 1, 1, calendar=calendar)
    last = cftime.datetime(9999, 12, 30, 23, 59, 59, 999_999, calendar=calendar)
    return np.array([first, *inner, last], dtype=object)


def assert_same_dates(got: np.ndarray, sent: np.ndarray) -> None:
    assert got.dtype == object and got.shape == sent.shape
    for g, s in zip(got.reshape(-1), sent.reshape(-1), strict=True):
        assert g == s and g.calendar == s.calendar and g.has_year_zero == s.has_year_zero
        assert (g.year, g.month, g.day, g.hour, g.minute, g.second, g.microsecond) == (
            s.year, s.month, s.day, s.hour, s.minute, s.second, s.microsecond)


@pytest.mark.parametrize("calendar", CALENDARS)
def test_cftime_coordinates_round_trip(echo, calendar):
    time = xr.date_range("2001-01-01", periods=8, freq="6h", calendar=calendar, use_cftime=True)
    da = xr.DataArray(
        np.arange(16.0).reshape(8, 2), dims=("time", "x"), name="tas",
        coords={"time": time, "x": [1, 2], "valid": ("time", np.asarray(time + dt.timedelta(days=1)))},
        attrs={"units": "K"},
    )
    assert isinstance(da.indexes["time"], xr.CFTimeIndex)
    got = echo.echo(da)
    assert_identical(got, da)
    assert isinstance(got.indexes["time"], xr.CFTimeIndex)
    assert got.indexes["time"].calendar == da.indexes["time"].calendar
    assert_same_dates(got["valid"].values, da["valid"].values)
    # the index works as one: label selection by date string
    assert got.sel(time="2001-01-01T12").item(0) == 4.0


@pytest.mark.parametrize("calendar", CALENDARS)
def test_cftime_data_round_trip(echo, calendar):
    values = dates(calendar).reshape(2, 3)
    da = xr.DataArray(values, dims=("a", "b"), name="when")
    got = echo.echo(da)
    assert_identical(got, da)
    assert_same_dates(got.values, values)

    ds = xr.Dataset(
        {"start": ("run", values[0]), "end": ("run", values[1]), "tas": ("run", [280.0, 281.5, 279.0])},
        coords={"run": ["r1", "r2", "r3"]},
    )
    got_ds = echo.echo_dataset(ds)
    assert_identical(got_ds, ds)
    assert_same_dates(got_ds["end"].values, values[1])

    got_array = echo.echo_array(values)
    assert isinstance(got_array, np.ndarray)
    assert_same_dates(got_array, values)


@pytest.mark.filterwarnings("ignore::cftime.CFWarning")  # year 0 in julian is not CF, but valid
def test_cftime_year_zero_and_0d_round_trip(echo):
    values = np.array([cftime.datetime(0, 3, 1, 12, calendar="julian", has_year_zero=True),
                       cftime.datetime(-4712, 1, 1, calendar="julian", has_year_zero=True)], dtype=object)
    assert_same_dates(echo.echo_array(values), values)
    scalar = np.empty((), dtype=object)
    scalar[()] = cftime.DatetimeNoLeap(2100, 2, 28, 23, 59, 59, 1)
    assert_same_dates(echo.echo_array(scalar), scalar)


def test_what_cannot_travel_is_refused_before_sending(echo):
    mixed = np.array([cftime.DatetimeNoLeap(2000, 1, 1), cftime.Datetime360Day(2000, 1, 1)])
    with pytest.raises(TypeError, match="mixes calendars.*'noleap'.*'360_day'.*convert them"):
        echo.echo_array(mixed)
    with pytest.raises(TypeError, match="cannot also hold NoneType"):
        echo.echo_array(np.array([cftime.DatetimeNoLeap(2000, 1, 1), None]))
    with pytest.raises(TypeError, match="without a calendar.*calendar='noleap'"):
        echo.echo_array(np.array([cftime.datetime(2000, 1, 1, calendar="")]))
    with pytest.raises(TypeError, match="more than 290000 years"):
        echo.echo_array(np.array([cftime.DatetimeNoLeap(300_000, 1, 1)]))
    # the client still works after refusing
    assert echo.add(2, 3) == 5


# -- the encoder -------------------------------------------------------------------------------


def _round_trip(values: np.ndarray) -> tuple[array_pb2.NDArray, np.ndarray, np.ndarray]:
    header, ctx = array_pb2.NDArray(), EncodeContext()
    attach_array(values, header, ctx)
    header = array_pb2.NDArray.FromString(header.SerializeToString())
    sent = ctx.arrays[0]
    return header, sent, read_array(header, DecodeContext({header.id: sent.copy()}))


def test_encoder_sends_int64_microseconds_with_the_calendar():
    values = np.array([cftime.Datetime360Day(1970, 1, 1), cftime.Datetime360Day(1970, 2, 1, 0, 0, 0, 7),
                       cftime.Datetime360Day(1969, 12, 29)], dtype=object)
    header, sent, got = _round_trip(values)
    assert header.dtype == "<i8" and header.nbytes == 24 and not header.object_strings
    assert (header.cftime.calendar, header.cftime.units, header.cftime.has_year_zero) == (
        "360_day", "microseconds since 1970-01-01", True)
    assert UNITS == header.cftime.units
    day = 86_400 * 10**6
    assert sent.tolist() == [0, 30 * day + 7, -2 * day]  # 360_day: every month has 30 days, December too
    assert_same_dates(got, values)

    offsets, spec = cftime_offsets(np.array([cftime.DatetimeJulian(1970, 3, 1)]))
    assert offsets.dtype == np.int64 and spec.calendar == "julian" and not spec.has_year_zero
    assert offsets.tolist() == [59 * day]  # from 1970-01-01 of the dates' own calendar


def test_plain_arrays_have_no_cftime_header():
    header, _, got = _round_trip(np.array(["a", "bc"], dtype=object))
    assert not header.HasField("cftime") and header.object_strings and got.tolist() == ["a", "bc"]
    header, _, _ = _round_trip(np.arange(3))
    assert not header.HasField("cftime")


def test_receiver_refuses_a_bad_cftime_header():
    header = array_pb2.NDArray(id=1, dtype="<f8", shape=[1], nbytes=8)
    header.cftime.calendar = "noleap"
    header.cftime.units = UNITS
    with pytest.raises(WireError, match="'<i8' offsets"):
        read_array(header, DecodeContext({1: np.zeros(1)}))
    header.dtype = "<i8"
    header.cftime.calendar = "martian"
    with pytest.raises(WireError, match="calendar 'martian'"):
        read_array(header, DecodeContext({1: np.zeros(1, dtype="<i8")}))


def test_receiver_without_cftime_names_the_package(monkeypatch):
    header, sent, _ = _round_trip(np.array([cftime.DatetimeNoLeap(2000, 1, 1)]))
    monkeypatch.setitem(__import__("sys").modules, "cftime", None)  # import cftime fails
    with pytest.raises(ImportError, match="pip install cftime"):
        read_array(header, DecodeContext({header.id: sent}))
