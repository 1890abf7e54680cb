"""What benchmarks/dask_result.py serves with `dagen serve --executor dask`."""

import xarray as xr


def ramp(n: int, chunk: int) -> xr.DataArray:
    """0, 1, ..., n-1 as float64, lazy (dask), in blocks of ``chunk``."""
    import dask.array as da

    return xr.DataArray(da.arange(n, chunks=chunk, dtype="f8"), dims="x", name="ramp")
