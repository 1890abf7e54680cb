"""Remote datasets opened lazily: a @dagen.dataset function, and one that takes a
selection of it back."""

import numpy as np
import pandas as pd
import xarray as xr

import dagen

__all__ = ["ocean", "mean_of"]


@dagen.dataset
def ocean(run: str = "reference", days: int = 10) -> xr.Dataset:
    """Daily sea surface temperature of a model run.

    Parameters
    ----------
    run
        The model run.
    days
        How many days.
    """
    time = pd.date_range("2010-06-01", periods=days, freq="D")
    sst = np.arange(days * 4 * 5, dtype="float32").reshape(days, 4, 5)
    return xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst, {"units": "degC"})},
        coords={"time": time, "lat": [54.0, 55.0, 56.0, 57.0],
                "lon": np.linspace(10.0, 14.0, 5), "station": ("lat", ["a", "b", "c", "d"])},
        attrs={"run": run},
    ).chunk({"time": 3})


def mean_of(sst: xr.DataArray) -> float:
    """The mean of a selection."""
    return float(sst.mean())


CASES = [
    ("ocean", (), {}),
    ("ocean", ("warm",), {"days": 4}),
    ("mean_of", (ocean().sst.isel(time=slice(0, 3)),), {}),
]
