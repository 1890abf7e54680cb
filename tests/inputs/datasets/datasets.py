"""xarray Datasets, eager and dask-backed."""

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["echo", "monthly_means", "lazy_field"]


def echo(ds: xr.Dataset) -> xr.Dataset:
    """Return the Dataset it was given."""
    return ds


def monthly_means(ds: xr.Dataset) -> xr.Dataset:
    """Group every variable by month."""
    return ds.groupby("time.month").mean(keep_attrs=True)


def lazy_field(n: int) -> xr.Dataset:
    """A dask-backed result: sent block by block, never computed whole on the server."""
    import dask.array as da

    data = da.arange(n * 6, dtype="float32", chunks=n).reshape(n, 6)
    return xr.Dataset({"field": (("y", "x"), data)}, coords={"y": np.arange(n)}, attrs={"lazy": 1})


def sample() -> xr.Dataset:
    time = pd.date_range("2001-01-01", periods=24, freq="MS")
    rng = np.random.default_rng(3)
    return xr.Dataset(
        {
            "sst": (("time", "lat"), rng.normal(size=(24, 3)).astype("float32"), {"units": "degC"}),
            "mask": ("lat", np.array([True, False, True])),
            "name": ((), np.array("north sea")),
        },
        coords={"time": time, "lat": [50.0, 55.0, 60.0], "station": ("lat", ["a", "b", "c"])},
        attrs={"title": "sample", "version": 2, "levels": [1, 2]},
    )


CASES = [
    ("echo", (sample(),), {}),
    ("echo", (xr.Dataset(),), {}),
    ("monthly_means", (sample().drop_vars("name"),), {}),
    ("lazy_field", (5,), {}),
]
