"""pandas DataFrames and Series on the wire (see protos/dagen/v1/table.proto).

Each column, and the index unless it is a RangeIndex, travels as an NDArray whose
bytes follow as chunks, like any array; the message says how pandas holds the
values (extension dtype, time zone, categories, frequency) so that the receiver
makes the same object again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from ._arrays import DecodeContext, EncodeContext, attach_array, read_array
from ._wire import WireError

# The masked extension dtypes: values plus a mask of the missing ones.
_MASKED = frozenset(
    ["Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
     "Float32", "Float64", "boolean"]
)
_CONVERT = ("convert it first (df.astype(...), or df[col].to_numpy() into a column of a "
            "numpy dtype)")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{what} must be str to be sent, got {type(value).__name__} {value!r}: rename it "
            "(df.columns = df.columns.astype(str), series.rename(str(series.name)))"
        )
    return value


def _string_dtype_name(dtype: pd.StringDtype) -> str:
    head = "string" if dtype.na_value is pd.NA else "str"
    return f"{head}[{dtype.storage}]"


def _tz(tz: Any, m: Any, what: str) -> None:
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    if isinstance(tz, dt.timezone) and tz is not dt.UTC:
        offset = tz.utcoffset(None)
        m.tz_offset_seconds = int(offset.total_seconds())
    elif tz is dt.UTC:
        m.tz = "UTC"
    elif isinstance(key, str):
        m.tz = key
    else:
        raise TypeError(
            f"{what} has the time zone {tz!r}, which cannot be sent: only IANA zones "
            "(zoneinfo.ZoneInfo, 'Europe/Berlin') and fixed offsets (datetime.timezone) can"
        )


def _read_tz(m: Any) -> Any:
    if m.HasField("tz_offset_seconds"):
        return dt.timezone(dt.timedelta(seconds=m.tz_offset_seconds))
    if m.tz == "UTC":
        return dt.UTC
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(m.tz)
    except (ValueError, KeyError, OSError) as e:
        raise WireError(f"unknown time zone {m.tz!r}: {e}") from None


def fill_column(values: Any, m: Any, ctx: EncodeContext, what: str) -> None:
    """Fill a dagen.v1.Column with a pandas array (``series.array``, ``index.array``)."""
    if type(values) is pd.arrays.NumpyExtensionArray:  # not its subclass StringArray
        values = values.to_numpy()
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        fill_column(dtype.categories.array, m.categorical.categories, ctx, f"the categories of {what}")
        m.categorical.ordered = bool(dtype.ordered)
        attach_array(np.asarray(values.codes), m.values, ctx)
    elif isinstance(dtype, pd.DatetimeTZDtype):
        _tz(dtype.tz, m, what)
        attach_array(pd.DatetimeIndex(values).tz_convert(None).to_numpy(), m.values, ctx)
    elif isinstance(dtype, pd.StringDtype):
        m.dtype = _string_dtype_name(dtype)
        missing = np.asarray(values.isna(), dtype=bool)
        attach_array(values.to_numpy(dtype=object, na_value=""), m.values, ctx)
        attach_array(missing, m.mask, ctx)
    elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.name in _MASKED:
        m.dtype = dtype.name
        numpy_dtype = dtype.numpy_dtype  # type: ignore[attr-defined]
        missing = np.asarray(values.isna(), dtype=bool)
        fill = False if numpy_dtype.kind == "b" else 0
        attach_array(values.to_numpy(dtype=numpy_dtype, na_value=fill), m.values, ctx)
        attach_array(missing, m.mask, ctx)
    elif isinstance(dtype, np.dtype):
        array = np.asarray(values)
        if dtype.kind == "O":
            missing = np.asarray(pd.isna(array), dtype=bool)
            if missing.any():
                array = array.copy()
                array[missing] = ""
                attach_array(missing, m.mask, ctx)
        try:
            attach_array(array, m.values, ctx)
        except TypeError as e:
            raise TypeError(f"{what}: {e}; {_CONVERT}") from None
    else:
        raise TypeError(f"{what} has the dtype {dtype}, which cannot be sent: {_CONVERT}")


def read_column(m: Any, ctx: DecodeContext) -> Any:
    """The pandas array a dagen.v1.Column holds."""
    values = read_array(m.values, ctx)
    mask = read_array(m.mask, ctx) if m.HasField("mask") else None
    if mask is not None and (mask.dtype != bool or mask.shape != values.shape):
        raise WireError(f"a column's mask is {mask.dtype} {mask.shape}, not bool {values.shape}")
    try:
        if m.HasField("categorical"):
            categories = pd.Index(read_column(m.categorical.categories, ctx))
            dtype = pd.CategoricalDtype(categories, ordered=m.categorical.ordered)
            return pd.Categorical.from_codes(values, dtype=dtype)
        if m.tz or m.HasField("tz_offset_seconds"):
            return pd.DatetimeIndex(values).tz_localize("UTC").tz_convert(_read_tz(m)).array
        if m.dtype:
            return _extension(m.dtype, values, mask)
        if mask is not None:
            values = values.astype(object, copy=False)  # strings: already a new object array
            values[mask] = None
        return values
    except (ValueError, TypeError) as e:
        raise WireError(f"inconsistent column {m.name!r}: {e}") from None


def _extension(name: str, values: np.ndarray, mask: np.ndarray | None) -> Any:
    if mask is None:
        raise WireError(f"a column of dtype {name} without its mask")
    if name in _MASKED:
        dtype = pd.api.types.pandas_dtype(name)
        return dtype.construct_array_type()(values, mask)  # type: ignore[call-arg]
    head, _, storage = name.partition("[")
    if head not in ("string", "str") or storage[:-1] not in ("python", "pyarrow"):
        raise WireError(f"unknown column dtype {name!r}")
    na_value = pd.NA if head == "string" else np.nan
    objects = values.astype(object, copy=False)  # read_array made it: no second copy
    objects[mask] = None
    return pd.array(objects, dtype=pd.StringDtype(storage[:-1], na_value=na_value))


def fill_index(index: pd.Index, m: Any, ctx: EncodeContext, what: str) -> None:
    if isinstance(index, pd.MultiIndex):
        raise TypeError(
            f"{what} is a MultiIndex, which cannot be sent yet: reset_index() it into columns "
            "and set_index(...) them again on the other side"
        )
    name = None if index.name is None else _name(index.name, f"the name of {what}")
    if type(index) is pd.RangeIndex:
        m.range.start, m.range.stop, m.range.step = index.start, index.stop, index.step
        if name is not None:
            m.range.name = name
        return
    if name is not None:
        m.values.name = name
    freq = getattr(index, "freqstr", None)
    if freq:
        m.values.freq = freq
    fill_column(index.array, m.values, ctx, what)


def read_index(m: Any, ctx: DecodeContext) -> pd.Index:
    if m.HasField("range"):
        r = m.range
        name = r.name if r.HasField("name") else None
        return pd.RangeIndex(r.start, r.stop, r.step, name=name)
    if not m.HasField("values"):
        raise WireError("a table without its index")
    c = m.values
    name = c.name if c.HasField("name") else None
    values = read_column(c, ctx)
    try:
        if c.freq:
            kind = pd.DatetimeIndex if values.dtype.kind == "M" else pd.TimedeltaIndex
            return kind(values, freq=c.freq, name=name)
        return pd.Index(values, name=name, dtype=values.dtype, copy=False)
    except (ValueError, TypeError) as e:
        raise WireError(f"inconsistent index: {e}") from None


def fill_dataframe(df: pd.DataFrame, m: Any, ctx: EncodeContext) -> None:
    if isinstance(df.columns, pd.MultiIndex):
        raise TypeError("the DataFrame's columns are a MultiIndex, which cannot be sent yet: "
                        "join the levels into str names first")
    for position, name in enumerate(df.columns):
        c = m.columns.add()
        c.name = _name(name, "column names")
        fill_column(df.iloc[:, position].array, c, ctx, f"column {name!r}")
    if df.columns.name is not None:
        m.columns_name = _name(df.columns.name, "the name of the DataFrame's columns")
    fill_index(df.index, m.index, ctx, "the DataFrame's index")


def read_dataframe(m: Any, ctx: DecodeContext) -> pd.DataFrame:
    index = read_index(m.index, ctx)
    columns = [read_column(c, ctx) for c in m.columns]
    for c, values in zip(m.columns, columns, strict=True):
        if len(values) != len(index):
            raise WireError(f"column {c.name!r} has {len(values)} rows, the index {len(index)}")
    df = pd.DataFrame(dict(enumerate(columns)), index=index, copy=False)  # received: its own
    if columns:
        name = m.columns_name if m.HasField("columns_name") else None
        df.columns = pd.Index([c.name for c in m.columns], name=name)
    elif m.HasField("columns_name"):
        df.columns.name = m.columns_name
    return df


def fill_series(s: pd.Series, m: Any, ctx: EncodeContext) -> None:
    if s.name is not None:
        m.values.name = _name(s.name, "the Series' name")
    fill_column(s.array, m.values, ctx, "the Series")
    fill_index(s.index, m.index, ctx, "the Series' index")


def read_series(m: Any, ctx: DecodeContext) -> pd.Series:
    index = read_index(m.index, ctx)
    values = read_column(m.values, ctx)
    if len(values) != len(index):
        raise WireError(f"a Series of {len(values)} values has an index of {len(index)}")
    name = m.values.name if m.values.HasField("name") else None
    return pd.Series(values, index=index, name=name, copy=False)
