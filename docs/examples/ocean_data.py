"""Datasets served lazily: a visitor opens them at once and reads only what it computes."""

from pathlib import Path

import xarray as xr

import dagen

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data


@dagen.dataset
def era_interim(month_chunk: int = 1) -> xr.Dataset:
    """ERA-Interim winds and geopotential: two months, three pressure levels, 0.75°."""
    return xr.open_dataset(DATA / "eraint_uvz.nc", chunks={"month": month_chunk, "level": 1})


def zonal_mean(da: xr.DataArray) -> xr.DataArray:
    """The mean over longitude, computed next to the data."""
    return da.mean("longitude", keep_attrs=True)
