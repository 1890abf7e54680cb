"""What benchmarks/lazy_datasets.py serves with `dagen serve`: the synthetic Zarr store
named by the environment variable DAGEN_BENCH_STORE, opened lazily (``synthetic``, a
dagen dataset, issue 20) and as a function returning a selection eagerly
(``selection``). ``synthetic`` exists only when this dagen has ``dagen.dataset``.
"""

import os

import xarray as xr
import zarr  # noqa: F401 - at the server's start, as xpublish's server does, not in a read

import dagen


def _open() -> xr.Dataset:
    return xr.open_zarr(os.environ["DAGEN_BENCH_STORE"], consolidated=False)


def selection(start: int, stop: int) -> xr.Dataset:
    """Time steps ``start`` to ``stop`` (exclusive) of every variable, sent whole."""
    return _open().isel(time=slice(start, stop))


if hasattr(dagen, "dataset"):

    @dagen.dataset
    def synthetic() -> xr.Dataset:
        """The whole synthetic store, opened lazily: blocks travel as they are touched."""
        return _open()
