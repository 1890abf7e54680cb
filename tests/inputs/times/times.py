"""Dates and times keep naive/aware, zones, units and NaT."""

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["shift", "day_after", "span", "np_shift", "np_span"]


def shift(when: dt.datetime, by: dt.timedelta = dt.timedelta(hours=1)) -> dt.datetime:
    """A datetime, naive or aware, moved by a timedelta."""
    return when + by


def day_after(day: dt.date) -> dt.date:
    """A date."""
    return day + dt.timedelta(days=1)


def span(start: dt.datetime, end: dt.datetime) -> dt.timedelta:
    """A timedelta, negative ones included."""
    return end - start


def np_shift(when: np.datetime64, by: np.timedelta64) -> np.datetime64:
    """numpy scalars with their units; NaT stays NaT."""
    return when + by


def np_span(a: np.datetime64, b: np.datetime64) -> np.timedelta64:
    """numpy timedelta64 out."""
    return b - a


BERLIN = ZoneInfo("Europe/Berlin")
CASES = [
    ("shift", (dt.datetime(2024, 3, 31, 1, 30),), {}),
    ("shift", (dt.datetime(2024, 3, 31, 1, 30, 0, 123456, tzinfo=BERLIN),), {}),
    ("shift", (dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC), dt.timedelta(microseconds=1)), {}),
    ("shift", (dt.datetime(2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),), {}),
    ("day_after", (dt.date(2024, 2, 28),), {}),
    ("span", (dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 1, 12)), {}),
    ("np_shift", (np.datetime64("2024-01-01T00:00:00.000000001"), np.timedelta64(5, "ns")), {}),
    ("np_shift", (np.datetime64("NaT", "s"), np.timedelta64(1, "s")), {}),
    ("np_span", (np.datetime64("2024-01-01", "D"), np.datetime64("2024-03-01", "D")), {}),
]
