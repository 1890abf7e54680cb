"""Functions the end-to-end tests call through a real server."""

import os
import time
from pathlib import Path

import numpy as np
import xarray as xr


class CustomError(Exception):
    """An exception type the client does not have."""


def echo(da: xr.DataArray) -> xr.DataArray:
    """Return the DataArray it was given."""
    return da


def echo_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Return the Dataset it was given."""
    return ds


def echo_array(a: np.ndarray) -> np.ndarray:
    """Return the array it was given."""
    return a


def echo_many(arrays: list[np.ndarray], named: dict[str, xr.DataArray]) -> dict[str, np.ndarray]:
    """Arrays inside containers."""
    out = {f"a{i}": a for i, a in enumerate(arrays)}
    out.update({k: v.values for k, v in named.items()})
    return out


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def scalars(b: bool, i: int, f: float, s: str, raw: bytes, maybe: str | None = None) -> list[str]:
    """Describe each argument's type and value."""
    return [f"{type(v).__name__}:{v!r}" for v in (b, i, f, s, raw, maybe)]


def nested(
    grid: list[list[int]], table: dict[str, list[float]], holes: list[int | None]
) -> dict[str, list[list[int]] | None]:
    """Containers in containers."""
    return {"grid": grid, "none": None, "holes": [[h if h is not None else -1 for h in holes]]}


def positional(a: int, /, b: int, *, c: int = 3) -> list[int]:
    """Positional-only and keyword-only parameters."""
    return [a, b, c]


def nothing() -> None:
    """Return nothing."""


def fail(kind: str) -> None:
    """Raise an exception of the given kind."""
    errors = {
        "value": ValueError("bad value"),
        "key": KeyError("missing"),
        "type": TypeError("wrong type"),
        "zero": ZeroDivisionError("division by zero"),
        "custom": CustomError("custom failure"),
    }
    raise errors[kind]


def bad_return() -> int:
    """Return a value that does not match its annotation."""
    return "not an int"  # type: ignore[return-value]


def sleep(seconds: float) -> float:
    """Sleep, then return how long."""
    if os.environ.get("DAGEN_TEST_MARKS"):  # a test waits for the call to have started
        Path(os.environ["DAGEN_TEST_MARKS"], "sleep.started").touch()
    time.sleep(seconds)
    return seconds
