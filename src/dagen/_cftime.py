"""Object arrays of cftime datetimes (the calendars of climate model output: noleap,
360_day, all_leap, julian, proleptic_gregorian, standard) on the wire.

They travel as int64 offsets in microseconds (cftime's resolution, so every date is
exact) since 1970-01-01 of their calendar, with the calendar in NDArray.cftime
(protos/dagen/v1/array.proto). cftime is imported only where such dates are met.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._wire import WireError

UNITS = "microseconds since 1970-01-01"


@dataclass(frozen=True)
class Calendar:
    """What a receiver needs to turn offsets back into dates (NDArray.cftime)."""

    calendar: str
    units: str
    has_year_zero: bool


def is_cftime(value: Any) -> bool:
    """Whether ``value`` is a cftime datetime (never imports cftime: without it loaded,
    nothing can be one)."""
    module = sys.modules.get("cftime")
    return module is not None and isinstance(value, module.datetime)


def _cftime() -> Any:
    try:
        import cftime
    except ImportError:
        raise ImportError(
            "an array of cftime dates (climate model calendars) arrived, which needs the "
            "cftime package to be read: pip install cftime"
        ) from None
    return cftime


def cftime_offsets(array: np.ndarray) -> tuple[np.ndarray, Calendar]:
    """The int64 offsets of an object array of cftime datetimes and their calendar;
    TypeError naming the problem for what cannot travel exactly."""
    cftime = _cftime()
    flat = array.reshape(-1)
    first = flat[0]
    calendar, year_zero = first.calendar, first.has_year_zero
    if not calendar:
        raise TypeError(
            f"cftime dates without a calendar ({first!r:.60}) cannot be sent: give them one, "
            "e.g. cftime.datetime(..., calendar='noleap')"
        )
    for value in flat:
        if not isinstance(value, cftime.datetime):
            raise TypeError(
                f"an object array of cftime dates cannot also hold {type(value).__name__} "
                f"{value!r:.40}: only dates of one calendar can be sent"
            )
        if value.calendar != calendar or value.has_year_zero != year_zero:
            raise TypeError(
                f"an object array of cftime dates mixes calendars ({calendar!r}, "
                f"has_year_zero={year_zero} and {value.calendar!r}, has_year_zero="
                f"{value.has_year_zero}): convert them to one calendar to send them"
            )
    spec = Calendar(calendar, UNITS, year_zero)
    with warnings.catch_warnings():  # year zero in julian/standard is not CF, but exact
        warnings.simplefilter("ignore", cftime.CFWarning)
        try:
            offsets = np.asarray(cftime.date2num(flat, UNITS, calendar, has_year_zero=year_zero))
        except OverflowError:
            raise TypeError(
                f"cftime dates of the {calendar!r} calendar more than 290000 years from "
                "1970 cannot be sent (their offsets in microseconds overflow 64 bits)"
            ) from None
        if offsets.dtype != np.int64 or not _same(decode_offsets(offsets, spec), flat):
            raise TypeError(
                f"cftime dates of the {calendar!r} calendar cannot be sent exactly "
                "as microseconds since 1970-01-01"
            )
    return offsets.reshape(array.shape), spec


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a == b))


def decode_offsets(offsets: np.ndarray, spec: Calendar) -> np.ndarray:
    cftime = _cftime()
    if offsets.size == 0:
        return np.empty(offsets.shape, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cftime.CFWarning)
        flat = cftime.num2date(
            offsets.reshape(-1), spec.units, spec.calendar,
            only_use_cftime_datetimes=True, has_year_zero=spec.has_year_zero,
        )
    return np.asarray(flat, dtype=object).reshape(offsets.shape)


def cftime_array(offsets: np.ndarray, header: Any) -> np.ndarray:
    """The object array of cftime dates an NDArray header with ``cftime`` set describes;
    WireError for a header cftime cannot read."""
    m = header.cftime
    if offsets.dtype != np.dtype("<i8"):
        raise WireError(f"cftime dates must arrive as '<i8' offsets, not {offsets.dtype.str!r}")
    try:
        return decode_offsets(offsets, Calendar(m.calendar, m.units, m.has_year_zero))
    except (ValueError, TypeError, OverflowError) as e:
        raise WireError(
            f"cftime dates of calendar {m.calendar!r} in units {m.units!r}: {e}"
        ) from None
