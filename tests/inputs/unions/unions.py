"""Unions become oneofs; the first member that accepts a value carries it."""

from typing import Union

import numpy as np
import xarray as xr

__all__ = ["describe", "total", "maybe"]


def describe(value: int | str | list[float]) -> str:
    """A union of a scalar, a string and a list."""
    return f"{type(value).__name__}:{value!r}"


def total(data: Union[xr.DataArray, np.ndarray]) -> float | np.ndarray:  # noqa: UP007
    """Arrays in unions stream like any array."""
    return float(data.sum()) if isinstance(data, xr.DataArray) else np.cumsum(data)


def maybe(value: int | str | None = None) -> int | str | None:
    """An optional union."""
    return value


CASES = [
    ("describe", (3,), {}),
    ("describe", ("x",), {}),
    ("describe", ([1.5, 2.5],), {}),
    ("total", (xr.DataArray(np.arange(4.0), dims="x"),), {}),
    ("total", (np.arange(5),), {}),
    ("maybe", (), {}),
    ("maybe", (7,), {}),
    ("maybe", ("seven",), {}),
]
