"""The functions every system in the benchmark serves.

dagen builds and serves this module (``dagen build`` / ``dagen serve``); the dask
worker imports it too (``echo`` and ``add`` are pickled by reference), so both run
exactly the same Python function on the server side.
"""

import xarray as xr


def echo(da: xr.DataArray) -> xr.DataArray:
    """Return the DataArray it was given."""
    return da


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
