"""Identity functions for the property-based round trips."""

import datetime as dt

import numpy as np
import xarray as xr


def echo_dataarray(da: xr.DataArray) -> xr.DataArray:
    return da


def echo_dataset(ds: xr.Dataset) -> xr.Dataset:
    return ds


def echo_array(a: np.ndarray) -> np.ndarray:
    return a


def echo_plain(
    number: int,
    real: float,
    text: str,
    raw: bytes,
    flag: bool,
    maybe: float | None,
    numbers: list[int],
    table: dict[str, list[float]],
    keyed: dict[int, str],
    pair: tuple[int, str],
    many: tuple[float, ...],
    unique: set[int],
    either: int | str,
) -> tuple[int, float, str, bytes, bool, float | None, list[int], dict[str, list[float]],
           dict[int, str], tuple[int, str], tuple[float, ...], set[int], int | str]:
    return (number, real, text, raw, flag, maybe, numbers, table, keyed, pair, many, unique, either)


def echo_times(when: dt.datetime, day: dt.date, span: dt.timedelta,
               stamp: np.datetime64) -> tuple[dt.datetime, dt.date, dt.timedelta, np.datetime64]:
    return (when, day, span, stamp)
