"""pandas tables through a real server: echoes, and a function that computes on one."""

import pandas as pd


def echo_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Return the DataFrame it was given."""
    return table


def echo_series(series: pd.Series) -> pd.Series:
    """Return the Series it was given."""
    return series


def station_means(table: pd.DataFrame, by: str = "station") -> pd.DataFrame:
    """The mean of every numeric column for each value of ``by``."""
    return table.groupby(by, observed=True).mean(numeric_only=True)


def frames(tables: dict[str, pd.DataFrame]) -> list[pd.Series]:
    """The first column of each table, in order."""
    return [t.iloc[:, 0] for t in tables.values()]
