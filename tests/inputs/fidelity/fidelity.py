"""What real data needs to come back exactly: indexes, dict order, datetime64 arguments."""

import datetime as dt

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["echo_dataarray", "echo_dataset", "per_level", "hours_since"]



def echo_dataarray(da: xr.DataArray) -> xr.DataArray:
    """Return the DataArray it was given."""
    return da


def echo_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Return the Dataset it was given."""
    return ds


def per_level(ds: xr.Dataset, levels: list[int]) -> dict[str, float]:
    """The mean geopotential of each pressure level, in the order asked for."""
    return {str(level): float(ds.z.sel(level=level).mean()) for level in levels}


def hours_since(when: dt.datetime, start: dt.datetime = dt.datetime(1979, 1, 1)) -> float:
    """Hours from ``start`` to ``when``."""
    return (when - start) / dt.timedelta(hours=1)


def sample() -> xr.Dataset:
    """A small field shaped like ERA-Interim's (month, level, latitude, longitude)."""
    rng = np.random.default_rng(14)
    shape = (2, 3, 4, 5)
    return xr.Dataset(
        {"z": (("month", "level", "latitude", "longitude"), rng.normal(5e4, 1e3, shape))},
        coords={
            "month": np.array([1, 7], dtype="int32"),
            "level": np.array([200, 500, 850], dtype="int32"),
            "latitude": np.linspace(60, 30, 4, dtype="float32"),
            "longitude": np.linspace(-10, 20, 5, dtype="float32"),
        },
        attrs={"Conventions": "CF-1.0"},
    )


def station_series() -> xr.DataArray:
    """A series with a station-name coordinate indexed by set_xindex."""
    time = pd.date_range("2001-01-01", periods=4, freq="D")
    da = xr.DataArray(
        np.arange(4.0), dims="time", name="t2m",
        coords={"time": time, "station": ("time", ["a", "b", "c", "d"])},
    )
    return da.set_xindex("station")


CASES = [
    ("echo_dataarray", (station_series(),), {}),
    ("echo_dataarray", (station_series().drop_indexes("time"),), {}),
    ("echo_dataset", (sample().rename_dims(level="plev"),), {}),
    ("echo_dataset", (sample().assign_coords(hpa=("level", [2, 5, 8])).set_xindex("hpa"),), {}),
    ("per_level", (sample(), [200, 850, 500]), {}),
    ("hours_since", (sample().assign_coords(
        month=pd.date_range("1979-01-01", periods=2, freq="MS")).month.values[1],), {}),
    ("hours_since", (np.datetime64("1979-01-02T00:00:00.000001"),), {"start": np.datetime64("1979-01-01")}),
]
