"""Scalars, enums and literals: nodes that map to a scalar or enum field."""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._arrays import DecodeContext, EncodeContext
from .._wire import WireError
from ._base import (
    Definition,
    EncodeError,
    ProtoField,
    TypeNode,
    UnsupportedType,
    class_summary,
    mismatch,
    snake,
)


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
        raise mismatch("bool", value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(value: Any) -> int:
    if type(value) is not int:  # (a plain int, the usual case, needs no more questions)
        # bool is an int to Python, but passing True where a count is expected is a bug.
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise mismatch("int", value)
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
            raise mismatch("float", value)
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
            raise mismatch("str", value)
        return str(value)


@dataclass(frozen=True)
class BytesNode(ScalarNode):
    annotation: Any = bytes
    proto_type: str = "bytes"
    exact: ClassVar[type | None] = bytes

    def check(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise mismatch("bytes", value)
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


def enum_node(cls: type[enum.Enum]) -> EnumNode:
    members = tuple(cls)
    if not members:
        raise UnsupportedType(f"enum {cls.__name__} has no members")
    return EnumNode(cls, cls.__name__, members, tuple(m.name.upper() for m in members), class_summary(cls))


def literal_node(annotation: Any) -> EnumNode:
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
            raise mismatch("None", value)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return None


# The scalar nodes by the Python type that maps to each (type_node reads this).
SCALARS: dict[Any, Callable[[], ScalarNode]] = {
    bool: BoolNode,
    int: IntNode,
    float: FloatNode,
    str: StrNode,
    bytes: BytesNode,
}
