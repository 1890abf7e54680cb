"""pandas tables: a DataFrame and a Series in, a DataFrame and a Series out."""

import datetime as dt

import numpy as np
import pandas as pd

__all__ = ["hourly_means", "with_anomaly"]


def hourly_means(table: pd.DataFrame, column: str = "temperature") -> pd.Series:
    """The mean of a column for each hour of the day."""
    return table[column].groupby(table.index.hour).mean()


def with_anomaly(series: pd.Series) -> pd.DataFrame:
    """The series and its departure from its mean, as columns of one table."""
    return pd.DataFrame({"value": series, "anomaly": series - series.mean()})


TIME = pd.date_range("2024-03-31", periods=8, freq="3h", tz="Europe/Berlin", name="time")
TABLE = pd.DataFrame({
    "temperature": np.linspace(270.0, 285.0, 8),
    "station": pd.Categorical(list("abab") * 2),
    "note": ["ok", None, "ok", "check", "ok", "ok", None, "ok"],
    "seen": pd.date_range("2024-01-01", periods=8, tz=dt.timezone(dt.timedelta(hours=2))),
}, index=TIME)

CASES = [
    ("hourly_means", (TABLE,), {}),
    ("with_anomaly", (pd.Series([1.0, 2.0, 4.0], index=pd.Index(list("xyz"), name="id"), name="v"),), {}),
    ("with_anomaly", (pd.Series(np.arange(3, dtype="int16")),), {}),
]
