"""Known messages: types whose message is one of the toolkit's own (``dagen.v1.*``) or a
protobuf well-known type: arrays, xarray objects, dates and times."""

from __future__ import annotations

import datetime as dt
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from .._arrays import DecodeContext, EncodeContext, attach_array, read_array
from .._wire import WireError
from ._base import EncodeError, MessageNode, ProtoField, TypeNode, mismatch


@dataclass(frozen=True)
class _KnownMessage(MessageNode):
    """A node whose message is one of the toolkit's own (``dagen.v1.*``, well-known)."""

    annotation: Any
    message: ClassVar[str]
    python: ClassVar[Any]  # the accepted Python type(s)

    @property
    def name(self) -> str:
        return self.message.rsplit(".", 1)[-1]

    def proto_field(self) -> ProtoField:
        return ProtoField(self.message)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.python)

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        if not self.accepts(value):
            raise mismatch(self.expected, value)
        self.write(value, m, ctx)

    @property
    def expected(self) -> str:
        return getattr(self.python, "__qualname__", str(self.python))

    def write(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class NDArrayNode(_KnownMessage):
    """``numpy.ndarray`` (also ``numpy.typing.NDArray[...]``): a header plus streamed chunks."""

    annotation: Any = np.ndarray
    message: ClassVar[str] = "dagen.v1.NDArray"
    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/array.proto",)
    python: ClassVar[Any] = np.ndarray
    expected: ClassVar[str] = "numpy.ndarray"  # type: ignore[misc]

    @property
    def has_arrays(self) -> bool:
        return True

    def write(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        attach_array(value, m, ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return read_array(m, ctx)


class _ChunkedMessage(_KnownMessage):
    """A known message whose arrays stream in chunks; ``codec`` names the module of dagen
    that fills and reads it, and its two functions (imported on first use)."""

    codec: ClassVar[tuple[str, str, str]]  # module, fill(value, m, ctx), read(m, ctx)

    @property
    def has_arrays(self) -> bool:
        return True

    def write(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        module, fill, _ = self.codec
        _codec_function(module, fill)(value, m, ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        module, _, read = self.codec
        return _codec_function(module, read)(m, ctx)


@functools.cache
def _codec_function(module: str, name: str) -> Any:
    """A function of a codec module of dagen, imported once (not on every call)."""
    return getattr(importlib.import_module(module, "dagen"), name)


class _XarrayNode(_ChunkedMessage):
    """An xarray object: metadata in its message, data streamed in chunks (_xarray.py)."""

    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/xarray.proto",)


@dataclass(frozen=True)
class DataArrayNode(_XarrayNode):
    """``xarray.DataArray``: name, dims, coordinates and attrs; data streamed in chunks."""

    annotation: Any = xr.DataArray
    message: ClassVar[str] = "dagen.v1.DataArray"
    python: ClassVar[Any] = xr.DataArray
    expected: ClassVar[str] = "xarray.DataArray"  # type: ignore[misc]
    codec: ClassVar[tuple[str, str, str]] = ("._xarray", "fill_dataarray", "read_dataarray")


@dataclass(frozen=True)
class DatasetNode(_XarrayNode):
    """``xarray.Dataset``: every variable's data streamed in chunks."""

    annotation: Any = xr.Dataset
    message: ClassVar[str] = "dagen.v1.Dataset"
    python: ClassVar[Any] = xr.Dataset
    expected: ClassVar[str] = "xarray.Dataset"  # type: ignore[misc]
    codec: ClassVar[tuple[str, str, str]] = ("._xarray", "fill_dataset", "read_dataset")


@dataclass(frozen=True)
class LazyDatasetNode(_ChunkedMessage):
    """The result of a ``@dagen.dataset`` function: a ``dagen.v1.DatasetHandle`` (the
    schema, the coordinates' data in chunks, a handle to read blocks with). The server
    encodes the handle it opened (dagen._datasets), the client reads it into a lazy
    ``xarray.Dataset`` (dagen._lazy); never chosen from an annotation alone."""

    annotation: Any = xr.Dataset
    message: ClassVar[str] = "dagen.v1.DatasetHandle"
    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/dataset.proto",)
    python: ClassVar[Any] = object  # an opened handle (dagen._datasets.Opened)
    expected: ClassVar[str] = "xarray.Dataset"  # type: ignore[misc]
    codec: ClassVar[tuple[str, str, str]] = ("._datasets", "fill_handle", "read_handle")

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        # the client's side (dagen._lazy, not the server's _datasets) makes the lazy dataset
        return _codec_function("._lazy", self.codec[2])(m, ctx)


class _TableNode(_ChunkedMessage):
    """A pandas object: columns and index in its message, their values streamed in chunks
    (_pandas.py)."""

    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/table.proto",)


@dataclass(frozen=True)
class DataFrameNode(_TableNode):
    """``pandas.DataFrame``: str column names, any index but a MultiIndex."""

    annotation: Any = pd.DataFrame
    message: ClassVar[str] = "dagen.v1.DataFrame"
    python: ClassVar[Any] = pd.DataFrame
    expected: ClassVar[str] = "pandas.DataFrame"  # type: ignore[misc]
    codec: ClassVar[tuple[str, str, str]] = ("._pandas", "fill_dataframe", "read_dataframe")


@dataclass(frozen=True)
class SeriesNode(_TableNode):
    """``pandas.Series``: its values, its name (str or None) and its index."""

    annotation: Any = pd.Series
    message: ClassVar[str] = "dagen.v1.Series"
    python: ClassVar[Any] = pd.Series
    expected: ClassVar[str] = "pandas.Series"  # type: ignore[misc]
    codec: ClassVar[tuple[str, str, str]] = ("._pandas", "fill_series", "read_series")


_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class DateTimeNode(_KnownMessage):
    """``datetime.datetime``, naive or aware; the zone survives when it is a ZoneInfo.

    A ``numpy.datetime64`` (``ds.time.values[0]``) is accepted too, as the naive datetime
    it stands for; NaT and sub-microsecond parts are refused (a datetime holds neither)."""

    annotation: Any = dt.datetime
    message: ClassVar[str] = "dagen.v1.DateTime"
    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/time.proto",)
    python: ClassVar[Any] = dt.datetime

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        # not in accepts(): in ``datetime | numpy.datetime64`` a datetime64 stays one
        super().fill(_from_datetime64(value) if isinstance(value, np.datetime64) else value, m, ctx)

    def write(self, value: dt.datetime, m: Any, ctx: EncodeContext) -> None:
        offset = value.utcoffset()
        if offset is None:
            micros = (value - _EPOCH) // _MICROSECOND
            m.naive = True
        else:
            micros = (value - _EPOCH_UTC) // _MICROSECOND
            m.utc_offset_seconds = int(offset.total_seconds())
            m.zone = getattr(value.tzinfo, "key", None) or ""
            if m.zone:
                wall = (value.replace(tzinfo=None) - _EPOCH) // _MICROSECOND
                m.local.seconds, rest = divmod(wall, 10**6)
                m.local.nanos = rest * 1000
        m.time.seconds, rest = divmod(micros, 10**6)
        m.time.nanos = rest * 1000
        m.fold = bool(value.fold)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        delta = dt.timedelta(seconds=m.time.seconds, microseconds=m.time.nanos // 1000)
        if m.naive:
            return (_EPOCH + delta).replace(fold=int(m.fold))
        instant = _EPOCH_UTC + delta
        if m.zone:
            from zoneinfo import ZoneInfo

            try:
                zone = ZoneInfo(m.zone)
                if m.HasField("local"):
                    wall = dt.timedelta(seconds=m.local.seconds, microseconds=m.local.nanos // 1000)
                    return (_EPOCH + wall).replace(tzinfo=zone, fold=int(m.fold))
                return instant.astimezone(zone)
            except (ValueError, KeyError, OSError) as e:
                raise WireError(f"unknown time zone {m.zone!r}: {e}") from None
        tz = dt.timezone(dt.timedelta(seconds=m.utc_offset_seconds))
        return instant.astimezone(dt.UTC if m.utc_offset_seconds == 0 else tz).replace(fold=int(m.fold))


def _from_datetime64(value: np.datetime64) -> dt.datetime:
    """The naive datetime a datetime64 stands for; EncodeError when there is none."""
    if np.isnat(value):
        raise EncodeError("expected a datetime, got NaT (numpy.datetime64 'not a time')")
    micros = value.astype("datetime64[us]")
    if micros != value:
        raise EncodeError(
            f"{value!r} has a part below the microsecond, which a datetime cannot hold: "
            "round it first (value.astype('datetime64[us]'))"
        )
    try:
        return _EPOCH + int(micros.astype("int64")) * _MICROSECOND
    except OverflowError:
        raise EncodeError(f"{value!r} is outside the years 1 to 9999 a datetime holds") from None


@dataclass(frozen=True)
class DateNode(_KnownMessage):
    """``datetime.date`` (a datetime is refused: its time would be lost)."""

    annotation: Any = dt.date
    message: ClassVar[str] = "dagen.v1.Date"
    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/time.proto",)
    python: ClassVar[Any] = dt.date

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dt.date) and not isinstance(value, dt.datetime)

    def write(self, value: dt.date, m: Any, ctx: EncodeContext) -> None:
        m.year, m.month, m.day = value.year, value.month, value.day

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        try:
            return dt.date(m.year, m.month, m.day)
        except ValueError as e:
            raise WireError(f"invalid date: {e}") from None


@dataclass(frozen=True)
class TimeDeltaNode(_KnownMessage):
    """``datetime.timedelta`` as the well-known ``google.protobuf.Duration``."""

    annotation: Any = dt.timedelta
    message: ClassVar[str] = "google.protobuf.Duration"
    proto_imports: ClassVar[tuple[str, ...]] = ("google/protobuf/duration.proto",)
    python: ClassVar[Any] = dt.timedelta

    def write(self, value: dt.timedelta, m: Any, ctx: EncodeContext) -> None:
        micros = value // _MICROSECOND
        seconds, rest = divmod(abs(micros), 10**6)
        sign = -1 if micros < 0 else 1  # Duration: seconds and nanos share the sign
        m.seconds, m.nanos = sign * seconds, sign * rest * 1000

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return dt.timedelta(seconds=m.seconds, microseconds=int(m.nanos / 1000))


def _unit(dtype: np.dtype) -> str:
    unit, count = np.datetime_data(dtype)
    return unit if count == 1 else f"{count}{unit}"


@dataclass(frozen=True)
class Datetime64Node(_KnownMessage):
    """A ``numpy.datetime64`` scalar, with its unit; NaT survives."""

    annotation: Any = np.datetime64
    message: ClassVar[str] = "dagen.v1.Datetime64"
    proto_imports: ClassVar[tuple[str, ...]] = ("dagen/v1/time.proto",)
    python: ClassVar[Any] = np.datetime64
    kind: ClassVar[str] = "M8"

    def write(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        m.value = int(np.asarray(value).view("int64"))
        m.unit = _unit(value.dtype)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        try:
            dtype = np.dtype(f"{self.kind}[{m.unit}]")
        except TypeError:
            raise WireError(f"unknown {self.kind} unit {m.unit!r}") from None
        return np.array(m.value, dtype="int64").view(dtype)[()]


@dataclass(frozen=True)
class Timedelta64Node(Datetime64Node):
    """A ``numpy.timedelta64`` scalar, with its unit."""

    annotation: Any = np.timedelta64
    message: ClassVar[str] = "dagen.v1.Timedelta64"
    python: ClassVar[Any] = np.timedelta64
    kind: ClassVar[str] = "m8"


# The known messages by the Python type that maps to each (type_node reads this).
KNOWN: dict[Any, Callable[[], TypeNode]] = {
    np.ndarray: NDArrayNode,
    xr.DataArray: DataArrayNode,
    xr.Dataset: DatasetNode,
    pd.DataFrame: DataFrameNode,
    pd.Series: SeriesNode,
    dt.datetime: DateTimeNode,
    dt.date: DateNode,
    dt.timedelta: TimeDeltaNode,
    np.datetime64: Datetime64Node,
    np.timedelta64: Timedelta64Node,
}
