"""The type mapping: for each supported Python type, its proto rendering and its codec.

Every annotation becomes a tree of small frozen nodes (as msgspec's ``type_info``
does). A node knows

* how it is declared as a field in a ``.proto`` file (:meth:`TypeNode.proto_field`),
* which messages or enums it needs generated (:class:`Definition` nodes), and
* how a Python value goes into a protobuf message field and back
  (:meth:`TypeNode.encode` / :meth:`TypeNode.decode`).

Adding a type means adding one node class here and one case in :func:`type_node`.

Nodes come in three shapes, because protobuf fields do:

* *scalar* nodes map to a scalar or enum field (``int64``, ``string``, ``Color``...);
* *message* nodes map to a message field and fill or read that sub-message;
* *container* nodes (list, tuple[X, ...], set, dict) map to ``repeated`` and ``map``.

A container or optional where protobuf cannot nest it (a list in a list, an optional
in a map...) is wrapped into a small generated message (:class:`WrapperNode`).

The runtime addresses fields and enum values by *name*, never by number: numbers
live only in the ``.proto`` (and the lock file that pins them), so the same nodes
serve every revision of a contract.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from ._arrays import DecodeContext, EncodeContext, attach_array, read_array
from ._wire import WireError


class UnsupportedType(TypeError):
    """An annotation that dagen cannot map to the wire."""


class EncodeError(TypeError):
    """A value that does not match its annotation; ``path`` says where inside it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def at(self, step: str) -> EncodeError:
        return EncodeError(self.message, step + self.path)


def type_name(value: Any) -> str:
    return _show(type(value))


def _mismatch(expected: str, value: Any) -> EncodeError:
    return EncodeError(f"expected {expected}, got {type_name(value)}")


def snake(name: str) -> str:
    """``DataArray`` -> ``data_array``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class ProtoField:
    """How a node is declared as a field: ``<label> <type> name = n;``."""

    type: str
    label: str = ""  # "", "optional" or "repeated"; maps carry their own syntax in type


class TypeNode:
    """One node of the type tree. Subclasses are frozen dataclasses."""

    shape: ClassVar[str]  # "scalar", "message", "container", "optional" or "none"
    annotation: Any

    @property
    def has_arrays(self) -> bool:
        return any(child.has_arrays for child in self.children())

    @property
    def name(self) -> str:
        """A CamelCase name, used to name generated messages."""
        raise NotImplementedError

    def children(self) -> tuple[TypeNode, ...]:
        return ()

    def proto_field(self) -> ProtoField:
        raise NotImplementedError

    def accepts(self, value: Any) -> bool:
        """A cheap check of the value's kind, to choose a Union's member."""
        raise NotImplementedError

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        """Put ``value`` into ``msg.<field>``; raise EncodeError if it does not fit."""
        raise NotImplementedError

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        """Read the Python value of ``msg.<field>``."""
        raise NotImplementedError


class Definition:
    """A node whose proto type is generated: a message (fields) or an enum (values)."""

    definition_name: str
    doc: str = ""

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        """(field name, node, comment) of a generated message; [] for enums."""
        return []

    def oneof(self) -> str | None:
        """The oneof all fields belong to, if any."""
        return None

    def enum_values(self) -> list[str] | None:
        """The value names (after the UNSPECIFIED zero) of a generated enum."""
        return None


# -- scalars -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalarNode(TypeNode):
    annotation: Any
    proto_type: str
    shape: ClassVar[str] = "scalar"
    # Values of exactly this type are their field's value as they are (check() would
    # return them unchanged), so a short path may skip check() for them: protobuf
    # itself refuses one that does not fit the field (an int over 64 bits), and then
    # check() says why. (A subclass that changes check() says again, or has none.)
    exact: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "check" in cls.__dict__ and "exact" not in cls.__dict__:
            cls.exact = None  # its own check(): no value may skip it

    @property
    def name(self) -> str:
        return self.proto_type[:1].upper() + self.proto_type[1:]

    def proto_field(self) -> ProtoField:
        return ProtoField(self.proto_type)

    def check(self, value: Any) -> Any:
        """The value as protobuf wants it, or raise EncodeError."""
        raise NotImplementedError

    def restore(self, value: Any, field: Any) -> Any:
        """The Python value of a wire value; ``field`` is its field descriptor."""
        return value

    def accepts(self, value: Any) -> bool:
        try:
            self.check(value)
        except EncodeError:
            return False
        return True

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        setattr(msg, field, self.check(value))

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        if self.plain:
            return getattr(msg, field)
        return self.restore(getattr(msg, field), msg.DESCRIPTOR.fields_by_name[field])

    @property
    def plain(self) -> bool:
        """Whether wire values are the Python values (no restore step)."""
        return _PLAIN.get(type(self)) or _PLAIN.setdefault(type(self), type(self).restore is ScalarNode.restore)


_PLAIN: dict[type, bool] = {}


@dataclass(frozen=True)
class BoolNode(ScalarNode):
    annotation: Any = bool
    proto_type: str = "bool"
    exact: ClassVar[type | None] = bool

    def check(self, value: Any) -> bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise _mismatch("bool", value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(value: Any) -> int:
    if type(value) is not int:  # (a plain int, the usual case, needs no more questions)
        # bool is an int to Python, but passing True where a count is expected is a bug.
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise _mismatch("int", value)
        value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise EncodeError(f"int {value} does not fit in 64 bits")
    return value


@dataclass(frozen=True)
class IntNode(ScalarNode):
    annotation: Any = int
    proto_type: str = "int64"
    exact: ClassVar[type | None] = int

    check = staticmethod(_int64)  # one frame less per int sent


@dataclass(frozen=True)
class FloatNode(ScalarNode):
    annotation: Any = float
    proto_type: str = "double"
    exact: ClassVar[type | None] = float

    def check(self, value: Any) -> float:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, float | int | np.floating | np.integer
        ):
            raise _mismatch("float", value)
        try:
            return float(value)
        except OverflowError:
            raise EncodeError(f"int {value} is too large for a float") from None


@dataclass(frozen=True)
class StrNode(ScalarNode):
    annotation: Any = str
    proto_type: str = "string"
    exact: ClassVar[type | None] = str

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _mismatch("str", value)
        return str(value)


@dataclass(frozen=True)
class BytesNode(ScalarNode):
    annotation: Any = bytes
    proto_type: str = "bytes"
    exact: ClassVar[type | None] = bytes

    def check(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise _mismatch("bytes", value)
        return bytes(value)


def _wire_label(value: Any) -> str:
    """An enum value name for a Python value: ``"daily mean"`` -> ``DAILY_MEAN``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"V{value}" if value >= 0 else f"VN{-value}"
    text = re.sub(r"[^0-9A-Za-z]+", "_", str(value)).strip("_").upper()
    return text if text and not text[0].isdigit() else f"V_{text}"


@dataclass(frozen=True, eq=False)
class EnumNode(ScalarNode, Definition):
    """``enum.Enum`` / ``IntEnum`` / ``StrEnum`` and ``typing.Literal[...]`` as a proto enum.

    Value names carry the enum's name as prefix (``COLOR_RED``), because proto enum
    values share their package's scope; ``<ENUM>_UNSPECIFIED = 0`` means "not set".
    """

    annotation: Any = None
    proto_type: str = ""
    members: tuple[Any, ...] = ()  # the Python values, in order
    labels: tuple[str, ...] = ()  # their wire names, same order
    doc: str = ""

    @property
    def name(self) -> str:
        return self.proto_type

    @property
    def definition_name(self) -> str:  # type: ignore[override]
        return self.proto_type

    @property
    def prefix(self) -> str:
        return snake(self.proto_type).upper()

    def enum_values(self) -> list[str]:
        return [f"{self.prefix}_{label}" for label in self.labels]

    @property
    def is_literal(self) -> bool:
        return typing.get_origin(self.annotation) is typing.Literal

    def check(self, value: Any) -> str:
        for member, label in zip(self.members, self.labels, strict=True):
            if value is member or (self.is_literal and _same_literal(value, member)):
                return f"{self.prefix}_{label}"
        if isinstance(value, enum.Enum) and not self.is_literal:
            # a member of the server's original enum where the client has its mirror
            for member, label in zip(self.members, self.labels, strict=True):
                if member.name == value.name and member.value == value.value:
                    return f"{self.prefix}_{label}"
        raise EncodeError(f"expected one of {list(self.members)!r}, got {value!r}")

    def restore(self, value: Any, field: Any) -> Any:
        item = field.enum_type.values_by_number.get(value)
        names = self.enum_values()
        if item is None or item.name not in names:
            raise WireError(f"{value} is not a known value of enum {self.proto_type}")
        return self.members[names.index(item.name)]

    def __hash__(self) -> int:
        return hash((self.proto_type, self.members))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumNode) and (self.proto_type, self.members) == (
            other.proto_type,
            other.members,
        )


def _same_literal(value: Any, member: Any) -> bool:
    if isinstance(member, str):
        return isinstance(value, str) and value == member
    return (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool | np.bool_)
        and value == member
    )


def _enum_node(cls: type[enum.Enum]) -> EnumNode:
    members = tuple(cls)
    if not members:
        raise UnsupportedType(f"enum {cls.__name__} has no members")
    return EnumNode(cls, cls.__name__, members, tuple(m.name.upper() for m in members), _doc(cls))


def _literal_node(annotation: Any) -> EnumNode:
    values = typing.get_args(annotation)
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise UnsupportedType("Literal values must be str or int")
    labels = [_wire_label(v) for v in values]
    for i, label in enumerate(labels):  # distinct values may sanitize alike
        if labels.index(label) != i:
            labels[i] = f"{label}_{i}"
    camel = "".join(label.title().replace("_", "") for label in labels)
    name = (
        "Literal" + camel if len(camel) <= 40 else f"Literal{camel[:32]}{abs(hash(values)) % 10**6}"
    )
    return EnumNode(annotation, name, values, tuple(labels))


# -- messages ----------------------------------------------------------------------------------


class MessageNode(TypeNode):
    """A node that fills or reads a whole sub-message."""

    shape: ClassVar[str] = "message"

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        raise NotImplementedError

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        raise NotImplementedError

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        sub = getattr(msg, field)
        sub.SetInParent()  # present even when every field of it is at its default
        self.fill(value, sub, ctx)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return self.read(getattr(msg, field), ctx)


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
            raise _mismatch(self.expected, value)
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
    python: ClassVar[Any] = np.ndarray
    expected: ClassVar[str] = "numpy.ndarray"  # type: ignore[misc]

    @property
    def has_arrays(self) -> bool:
        return True

    def write(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        attach_array(value, m, ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return read_array(m, ctx)


class _XarrayNode(_KnownMessage):
    """An xarray object: metadata in its message, data streamed in chunks (_xarray.py)."""

    @property
    def has_arrays(self) -> bool:
        return True

    def write(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        from ._xarray import fill_xarray

        fill_xarray(value, m, ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        from ._xarray import read_xarray

        return read_xarray(m, ctx)


@dataclass(frozen=True)
class DataArrayNode(_XarrayNode):
    """``xarray.DataArray``: name, dims, coordinates and attrs; data streamed in chunks."""

    annotation: Any = xr.DataArray
    message: ClassVar[str] = "dagen.v1.DataArray"
    python: ClassVar[Any] = xr.DataArray
    expected: ClassVar[str] = "xarray.DataArray"  # type: ignore[misc]


@dataclass(frozen=True)
class DatasetNode(_XarrayNode):
    """``xarray.Dataset``: every variable's data streamed in chunks."""

    annotation: Any = xr.Dataset
    message: ClassVar[str] = "dagen.v1.Dataset"
    python: ClassVar[Any] = xr.Dataset
    expected: ClassVar[str] = "xarray.Dataset"  # type: ignore[misc]


_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class DateTimeNode(_KnownMessage):
    """``datetime.datetime``, naive or aware; the zone survives when it is a ZoneInfo."""

    annotation: Any = dt.datetime
    message: ClassVar[str] = "dagen.v1.DateTime"
    python: ClassVar[Any] = dt.datetime

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


@dataclass(frozen=True)
class DateNode(_KnownMessage):
    """``datetime.date`` (a datetime is refused: its time would be lost)."""

    annotation: Any = dt.date
    message: ClassVar[str] = "dagen.v1.Date"
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


@dataclass(frozen=True)
class WrapperNode(MessageNode, Definition):
    """A generated message ``<Inner>Value { <inner> value = 1; }`` around a node that
    protobuf cannot nest directly (a list in a list, an optional in a map...)."""

    inner: TypeNode

    @property
    def annotation(self) -> Any:  # type: ignore[override]
        return self.inner.annotation

    @property
    def name(self) -> str:
        # "Value" keeps names unique: list[list[int] | None] holds OptionalInt64ListValue
        # items, list[list[int | None]] holds OptionalInt64ValueList ones.
        return self.inner.name + "Value"

    @property
    def definition_name(self) -> str:  # type: ignore[override]
        return self.name

    def children(self) -> tuple[TypeNode, ...]:
        return (self.inner,)

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        return [("value", self.inner, "")]

    def proto_field(self) -> ProtoField:
        return ProtoField(self.definition_name)

    def accepts(self, value: Any) -> bool:
        return self.inner.accepts(value)

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        self.inner.encode(value, m, "value", ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return self.inner.decode(m, "value", ctx)


@dataclass(frozen=True)
class TupleNode(MessageNode, Definition):
    """A fixed ``tuple[A, B, ...]``: a generated message with fields ``item_0``, ``item_1``..."""

    annotation: Any
    items: tuple[TypeNode, ...]

    @property
    def name(self) -> str:
        return "".join(i.name for i in self.items) + "Tuple"

    @property
    def definition_name(self) -> str:  # type: ignore[override]
        return self.name

    def children(self) -> tuple[TypeNode, ...]:
        return self.items

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        return [(f"item_{i}", node, "") for i, node in enumerate(self.items)]

    def proto_field(self) -> ProtoField:
        return ProtoField(self.definition_name)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, tuple | list) and len(value) == len(self.items)

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        if not isinstance(value, tuple | list) or len(value) != len(self.items):
            raise _mismatch(f"a tuple of {len(self.items)} items", value)
        for i, (node, item) in enumerate(zip(self.items, value, strict=True)):
            try:
                node.encode(item, m, f"item_{i}", ctx)
            except EncodeError as e:
                raise e.at(f"[{i}]") from None

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return tuple(node.decode(m, f"item_{i}", ctx) for i, node in enumerate(self.items))


@dataclass(frozen=True)
class UnionNode(MessageNode, Definition):
    """``Union[A, B, ...]`` as a generated message with ``oneof value { A a = 1; B b = 2; }``;
    a value goes as the first member that accepts it."""

    annotation: Any
    members: tuple[TypeNode, ...]

    @property
    def name(self) -> str:
        return "Or".join(m.name for m in self.members)

    @property
    def definition_name(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def field_names(self) -> list[str]:
        names = [snake(m.name) for m in self.members]
        return [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]

    def children(self) -> tuple[TypeNode, ...]:
        return self.members

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        return [(n, m, "") for n, m in zip(self.field_names, self.members, strict=True)]

    def oneof(self) -> str | None:
        return "value"

    def proto_field(self) -> ProtoField:
        return ProtoField(self.definition_name)

    def accepts(self, value: Any) -> bool:
        return any(m.accepts(value) for m in self.members)

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        for field, member in zip(self.field_names, self.members, strict=True):
            if member.accepts(value):
                member.encode(value, m, field, ctx)
                return
        raise _mismatch(" | ".join(_show(x.annotation) for x in self.members), value)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        which = m.WhichOneof("value")
        if which is None:
            raise WireError(f"no member of {self.definition_name} is set")
        return self.members[self.field_names.index(which)].decode(m, which, ctx)


class _Nothing:
    """No default (dataclasses.MISSING cannot be a dataclass field's default value)."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()


def _or_nothing(value: Any) -> Any:
    return NOTHING if value is dataclasses.MISSING else value



@dataclass(frozen=True)
class ModelField:
    name: str
    node: TypeNode
    annotation: Any
    default: Any = NOTHING  # a value, or NOTHING
    factory: Any = NOTHING  # a default_factory, or NOTHING
    required: bool = True  # False for keys a TypedDict may leave out
    doc: str = ""

    @property
    def has_default(self) -> bool:
        return self.default is not NOTHING or self.factory is not NOTHING


@dataclass(frozen=True, eq=False)
class ModelNode(MessageNode, Definition):
    """A dataclass, pydantic model or TypedDict as a generated message of its fields."""

    annotation: Any
    kind: str  # "dataclass", "pydantic" or "typeddict"
    fields: tuple[ModelField, ...]
    doc: str = ""

    @property
    def name(self) -> str:
        return self.annotation.__name__

    @property
    def definition_name(self) -> str:  # type: ignore[override]
        return self.name

    def children(self) -> tuple[TypeNode, ...]:
        return tuple(f.node for f in self.fields)

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        return [(f.name, f.node, f.doc) for f in self.fields]

    def proto_field(self) -> ProtoField:
        return ProtoField(self.definition_name)

    def accepts(self, value: Any) -> bool:
        if self.kind == "typeddict":
            return isinstance(value, dict) and all(
                f.name in value for f in self.fields if f.required
            )
        if isinstance(value, self.annotation):
            return True
        # The server's own class where the client has its mirror (or the reverse): the
        # same name and fields will do, as only the fields travel.
        return type(value).__name__ == self.name and all(hasattr(value, f.name) for f in self.fields)

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        if not self.accepts(value):
            raise _mismatch(self.name, value)
        for f in self.fields:
            if self.kind == "typeddict":
                if f.name not in value:
                    continue  # optional key left out: the field stays unset
                item = value[f.name]
            else:
                item = getattr(value, f.name)
            try:
                f.node.encode(item, m, f.name, ctx)
            except EncodeError as e:
                raise e.at(f".{f.name}") from None

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        values = {}
        for f in self.fields:
            if not f.required and not m.HasField(f.name):
                continue
            values[f.name] = f.node.decode(m, f.name, ctx)
        if self.kind == "typeddict":
            return values
        return self.annotation(**values)  # a pydantic model validates here

    def __hash__(self) -> int:
        return hash(self.annotation)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelNode) and other.annotation is self.annotation


# -- optional and containers -------------------------------------------------------------------


def _nestable(node: TypeNode) -> TypeNode:
    """A node that can stand as the item of a repeated field or the value of a map."""
    return node if node.shape in ("scalar", "message") else WrapperNode(node)


@dataclass(frozen=True)
class OptionalNode(TypeNode):
    """``X | None``: a field with presence; unset means None."""

    annotation: Any
    inner: TypeNode
    shape: ClassVar[str] = "optional"

    @property
    def name(self) -> str:
        return "Optional" + self.inner.name

    def children(self) -> tuple[TypeNode, ...]:
        return (self.inner,)

    def proto_field(self) -> ProtoField:
        inner = self.inner.proto_field()
        return ProtoField(inner.type, "optional" if self.inner.shape == "scalar" else "")

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if value is None:
            msg.ClearField(field)
        else:
            self.inner.encode(value, msg, field, ctx)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return self.inner.decode(msg, field, ctx) if msg.HasField(field) else None


def optional_of(annotation: Any, inner: TypeNode) -> TypeNode:
    # Presence needs a scalar or message field; wrap anything else.
    return OptionalNode(annotation, _nestable(inner))


@dataclass(frozen=True)
class ListNode(TypeNode):
    """``list[X]``; also ``tuple[X, ...]``, ``set[X]`` and ``frozenset[X]`` (``factory``)."""

    annotation: Any
    item: TypeNode
    factory: Callable[..., Any] = list
    shape: ClassVar[str] = "container"

    @property
    def name(self) -> str:
        kinds: dict[Any, str] = {list: "List", tuple: "Tuple", set: "Set", frozenset: "FrozenSet"}
        kind = kinds[self.factory]
        return self.item.name + kind

    def children(self) -> tuple[TypeNode, ...]:
        return (self.item,)

    def proto_field(self) -> ProtoField:
        return ProtoField(self.item.proto_field().type, "repeated")

    @property
    def _python(self) -> tuple[type, ...]:
        return (set, frozenset) if self.factory in (set, frozenset) else (list, tuple)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self._python)

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if not isinstance(value, self._python):
            raise _mismatch(self.factory.__name__, value)
        target = getattr(msg, field)
        item = self.item
        values: Any = value
        for i, v in enumerate(values):
            try:
                if isinstance(item, ScalarNode):
                    target.append(item.check(v))
                else:
                    assert isinstance(item, MessageNode)
                    sub = target.add()
                    item.fill(v, sub, ctx)
            except EncodeError as e:
                raise e.at(f"[{i}]") from None

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        items = getattr(msg, field)
        item = self.item
        if isinstance(item, ScalarNode):
            if item.plain:
                return self.factory(items)
            fd = msg.DESCRIPTOR.fields_by_name[field]
            return self.factory(item.restore(v, fd) for v in items)
        assert isinstance(item, MessageNode)
        return self.factory(item.read(m, ctx) for m in items)


@dataclass(frozen=True)
class DictNode(TypeNode):
    """``dict[str, V]`` and ``dict[int, V]`` as ``map<string|int64, V>``."""

    annotation: Any
    key: ScalarNode
    value: TypeNode
    shape: ClassVar[str] = "container"

    @property
    def name(self) -> str:
        prefix = "" if isinstance(self.key, StrNode) else self.key.name
        return prefix + self.value.name + "Map"

    def children(self) -> tuple[TypeNode, ...]:
        return (self.key, self.value)

    def proto_field(self) -> ProtoField:
        return ProtoField(f"map<{self.key.proto_type}, {self.value.proto_field().type}>")

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if not isinstance(value, dict):
            raise _mismatch("dict", value)
        target = getattr(msg, field)
        node = self.value
        for k, v in value.items():
            try:
                key = self.key.check(k)
            except EncodeError as e:
                raise EncodeError(f"dict key {k!r}: {e.message}") from None
            try:
                if isinstance(node, ScalarNode):
                    target[key] = node.check(v)
                else:
                    assert isinstance(node, MessageNode)
                    node.fill(v, target[key], ctx)
            except EncodeError as e:
                raise e.at(f"[{k!r}]") from None

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        items = getattr(msg, field)
        node = self.value
        if isinstance(node, ScalarNode):
            if node.plain:
                return dict(items)
            fd = msg.DESCRIPTOR.fields_by_name[field].message_type.fields_by_name["value"]
            return {k: node.restore(v, fd) for k, v in items.items()}
        assert isinstance(node, MessageNode)
        return {k: node.read(m, ctx) for k, m in items.items()}


@dataclass(frozen=True)
class NoneNode(TypeNode):
    """``None`` as a return annotation: an empty response."""

    annotation: Any = None
    shape: ClassVar[str] = "none"

    @property
    def name(self) -> str:
        return "None"

    def accepts(self, value: Any) -> bool:
        return value is None

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if value is not None:
            raise _mismatch("None", value)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return None


# -- from annotations --------------------------------------------------------------------------

_SCALARS: dict[Any, Callable[[], ScalarNode]] = {
    bool: BoolNode,
    int: IntNode,
    float: FloatNode,
    str: StrNode,
    bytes: BytesNode,
}

_MESSAGES: dict[Any, Callable[[], TypeNode]] = {
    np.ndarray: NDArrayNode,
    xr.DataArray: DataArrayNode,
    xr.Dataset: DatasetNode,
    dt.datetime: DateTimeNode,
    dt.date: DateNode,
    dt.timedelta: TimeDeltaNode,
    np.datetime64: Datetime64Node,
    np.timedelta64: Timedelta64Node,
}

SUPPORTED = (
    "None, bool, int, float, str, bytes, X | None, Union[...], Literal[...], list[X], "
    "tuple[...], set[X], frozenset[X], dict[str|int, X], enum.Enum, dataclasses, pydantic "
    "models, TypedDict, datetime, date, timedelta, numpy.datetime64, numpy.timedelta64, "
    "numpy.ndarray, xarray.DataArray, xarray.Dataset"
)


def own_doc(cls: type) -> str | None:
    """A class's own docstring: not one inherited (TypedDict from dict) nor the one
    dataclasses make up from the signature."""
    doc = cls.__dict__.get("__doc__")
    if doc and dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return None
    return doc


def _doc(obj: Any) -> str:
    import inspect

    doc = inspect.cleandoc(own_doc(obj) or "") if isinstance(obj, type) else ""
    return doc.split("\n\n")[0].strip()


def _show(annotation: Any) -> str:
    if isinstance(annotation, type):
        module = annotation.__module__
        return (
            annotation.__qualname__
            if module == "builtins"
            else f"{module}.{annotation.__qualname__}"
        )
    return repr(annotation).replace("typing.", "")


def type_node(
    annotation: Any, *, is_return: bool = False, _seen: frozenset[Any] = frozenset()
) -> TypeNode:
    """Map an annotation to its node, or raise UnsupportedType saying why."""
    if annotation is None or annotation is type(None):
        if is_return:
            return NoneNode()
        raise UnsupportedType("None is only supported as a return annotation or in X | None")
    if annotation in _SCALARS:
        return _SCALARS[annotation]()
    if annotation in _MESSAGES:
        return _MESSAGES[annotation]()

    def sub(a: Any) -> TypeNode:
        return type_node(a, _seen=_seen)

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Annotated, typing.NotRequired, typing.Required):
        return sub(args[0])  # Annotated[T, ...] is T on the wire
    if origin is np.ndarray:  # numpy.typing.NDArray[...]: the dtype is not enforced
        return NDArrayNode(annotation)
    if origin is typing.Literal:
        return _literal_node(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) < len(args):  # X | None, or A | B | None
            inner = members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007
            return optional_of(annotation, sub(inner))
        return UnionNode(annotation, tuple(_nestable(sub(a)) for a in members))
    if origin in (list, set, frozenset):
        if len(args) != 1:
            raise UnsupportedType(f"{origin.__name__} needs an item type: {origin.__name__}[X]")
        return ListNode(annotation, _nestable(sub(args[0])), origin)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return ListNode(annotation, _nestable(sub(args[0])), tuple)
        if args == ((),):
            args = ()
        return TupleNode(annotation, tuple(sub(a) for a in args))
    if origin is dict:
        if len(args) != 2:
            raise UnsupportedType("dict needs key and value types: dict[str, X]")
        if args[0] not in (str, int):
            raise UnsupportedType("dict keys must be str or int")
        key = _SCALARS[args[0]]()
        return DictNode(annotation, key, _nestable(sub(args[1])))
    if annotation in (list, dict, tuple, set, frozenset):
        raise UnsupportedType(f"bare {annotation.__name__} needs its item types")
    if isinstance(annotation, type):
        if annotation in _seen:
            raise UnsupportedType(
                f"{annotation.__name__} refers to itself; recursive types are not supported"
            )
        if issubclass(annotation, enum.Enum):
            return _enum_node(annotation)
        model = _model_node(annotation, _seen | {annotation})
        if model is not None:
            return model
    raise UnsupportedType(f"not a supported type (supported: {SUPPORTED})")


def _model_node(cls: type, seen: frozenset[Any]) -> ModelNode | None:
    """A dataclass, pydantic v2 model or TypedDict, or None if ``cls`` is none of those."""

    def field_node(name: str, annotation: Any) -> TypeNode:
        try:
            return type_node(annotation, _seen=seen)
        except UnsupportedType as e:
            raise UnsupportedType(
                f"field {cls.__name__}.{name} ({_show(annotation)}): {e}"
            ) from None

    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = tuple(
            ModelField(
                f.name,
                field_node(f.name, hints[f.name]),
                hints[f.name],
                _or_nothing(f.default),
                _or_nothing(f.default_factory),
            )
            for f in dataclasses.fields(cls)
            if f.init
        )
        return ModelNode(cls, "dataclass", fields, _doc(cls))
    if typing.is_typeddict(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        required = cls.__required_keys__  # type: ignore[attr-defined]
        hints = {
            n: typing.get_args(a)[0] if typing.get_origin(a) in (typing.NotRequired, typing.Required) else a
            for n, a in hints.items()
        }
        fields = tuple(
            ModelField(
                n,
                field_node(n, a) if n in required else optional_of(a, field_node(n, a)),
                a,
                required=n in required,
            )
            for n, a in hints.items()
        )
        return ModelNode(cls, "typeddict", fields, _doc(cls))
    model_fields = getattr(cls, "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(cls, "model_validate"):  # pydantic v2
        hints = typing.get_type_hints(cls, include_extras=True)
        pydantic_fields: list[ModelField] = []
        for name, info in model_fields.items():
            annotation = hints.get(name, info.annotation)
            default = NOTHING if info.is_required() or info.default_factory else info.default
            factory = info.default_factory if info.default_factory else NOTHING
            pydantic_fields.append(
                ModelField(
                    name,
                    field_node(name, annotation),
                    annotation,
                    default,
                    factory,
                    doc=info.description or "",
                )
            )
        return ModelNode(cls, "pydantic", tuple(pydantic_fields), _doc(cls))
    return None


def walk(node: TypeNode) -> Iterator[TypeNode]:
    """The node and all nodes below it, depth first, children before their parent."""
    for child in node.children():
        yield from walk(child)
    yield node


def definitions(roots: typing.Iterable[TypeNode]) -> list[Definition]:
    """The generated messages and enums the nodes need, each once, dependencies first."""
    found: dict[str, Definition] = {}
    for root in roots:
        for node in walk(root):
            if isinstance(node, Definition):
                previous = found.get(node.definition_name)
                if previous is not None and previous != node:
                    raise UnsupportedType(
                        f"two different types both need the proto name {node.definition_name!r}"
                    )
                found.setdefault(node.definition_name, node)
    return list(found.values())
