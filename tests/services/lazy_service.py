"""Remote datasets opened lazily, and functions that take selections of them back
(tests/test_datasets.py)."""

import os
from pathlib import Path

import cftime
import numpy as np
import xarray as xr

import dagen

# ERA-Interim from the shared data beside the repository, or the stand-in of the same
# layout that tests/test_datasets.py writes where that is absent ($DAGEN_TEST_ERA)
ERA = Path(__file__).resolve().parents[3] / "shared" / "data" / "eraint_uvz.nc"


def _era() -> Path:
    return Path(os.environ.get("DAGEN_TEST_ERA") or ERA)


@dagen.dataset
def era(month_chunks: int = 1) -> xr.Dataset:
    """ERA-Interim monthly means of u, v and z, opened with dask chunks."""
    return xr.open_dataset(_era(), chunks={"month": month_chunks, "level": 1})


@dagen.dataset
def era_unchunked() -> xr.Dataset:
    """The same file opened without chunks=: xarray indexes it lazily, the server makes
    its blocks."""
    return xr.open_dataset(_era())


@dagen.dataset
def store(path: str) -> xr.Dataset:
    """A Zarr store, opened lazily."""
    return xr.open_zarr(path)


@dagen.dataset
def in_memory(days: int = 40) -> xr.Dataset:
    """A dataset in memory: cftime days of a noleap calendar, a non-dimension
    coordinate, attributes; the server makes its blocks."""
    time = xr.date_range("2000-01-01", periods=days, freq="D", calendar="noleap",
                         use_cftime=True)
    assert isinstance(time[0], cftime.DatetimeNoLeap)
    x = np.arange(300.0)
    temp = np.add.outer(np.arange(days, dtype="float32"), np.arange(300, dtype="float32"))
    return xr.Dataset(
        {"temp": (("time", "x"), temp, {"units": "degC"}),
         "flag": (("x",), np.arange(300) % 3 == 0),
         "name": ((), np.array("north sea", dtype=object))},
        coords={"time": time, "x": x, "label": ("x", [f"p{i}" for i in range(300)])},
        attrs={"title": "synthetic", "version": 3},
    )


@dagen.dataset
def wide(n: int = 9_000_000) -> xr.Dataset:
    """A non-index coordinate of more than 64 MiB: it stays on the server, lazy too."""
    x = np.arange(n)
    return xr.Dataset({"depth": ("x", (x % 1000).astype("float32"))},
                      coords={"x": x, "lon": ("x", x * 0.5)})


def _pid_block(block: np.ndarray) -> np.ndarray:
    return np.full(block.shape, os.getpid(), dtype="int64")


def _caller_block(block: np.ndarray) -> np.ndarray:
    identity = dagen.caller()
    return np.full(block.shape, identity.name if identity else "", dtype="<U16")


@dagen.dataset
def pids(blocks: int = 2) -> xr.Dataset:
    """Each block holds the id of the process that computed it, and who read it."""
    import dask.array as da

    zeros = da.zeros(blocks * 4, chunks=4, dtype="int64")
    return xr.Dataset({"pid": ("i", zeros.map_blocks(_pid_block, dtype="int64")),
                       "caller": ("i", zeros.map_blocks(_caller_block, dtype="<U16"))})


def total(da: xr.DataArray) -> float:
    """The sum of a DataArray (a selection passed back stays on the server)."""
    return float(da.sum())


def describe(ds: xr.Dataset) -> list[str]:
    """The variables and sizes of a Dataset, as the server sees it."""
    return [f"{name}:{dict(ds[name].sizes)}" for name in ds.data_vars]


def echo(da: xr.DataArray) -> xr.DataArray:
    """The DataArray itself, computed on the server."""
    return da.load()
