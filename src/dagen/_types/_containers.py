"""Containers and compositions: optional, list/tuple/set, dict, fixed tuples, unions, and
the wrapper message around what protobuf cannot nest directly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .._arrays import DecodeContext, EncodeContext
from .._wire import WireError
from ._base import (
    Definition,
    EncodeError,
    MessageNode,
    ProtoField,
    TypeNode,
    mismatch,
    show_annotation,
    snake,
)
from ._scalars import ScalarNode, StrNode


def nestable(node: TypeNode) -> TypeNode:
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
    return OptionalNode(annotation, nestable(inner))


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
            raise mismatch(self.factory.__name__, value)
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
class DictEntryNode(MessageNode, Definition):
    """The generated ``<Dict>Entry { K key = 1; V value = 2; }`` of a dict's items."""

    annotation: Any = dataclasses.field(compare=False)
    key: ScalarNode
    value: TypeNode
    dict_name: str

    @property
    def name(self) -> str:
        return self.dict_name + "Entry"

    @property
    def definition_name(self) -> str:  # type: ignore[override]
        return self.name

    def children(self) -> tuple[TypeNode, ...]:
        return (self.key, self.value)

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        return [("key", self.key, ""), ("value", self.value, "")]

    def proto_field(self) -> ProtoField:
        return ProtoField(self.definition_name)


@dataclass(frozen=True)
class DictNode(TypeNode):
    """``dict[str, V]`` and ``dict[int, V]`` as ``repeated <Dict>Entry``, in the dict's order.

    A ``map<K, V>`` field is, on the wire, exactly repeated entries ``{K key = 1;
    V value = 2;}``; protobuf runtimes do not keep a map's order, a repeated field they
    do. Peers that declare the field as ``map<K, V>`` read and write the same bytes."""

    annotation: Any
    key: ScalarNode
    value: TypeNode
    shape: ClassVar[str] = "container"

    @property
    def name(self) -> str:
        prefix = "" if isinstance(self.key, StrNode) else self.key.name
        return prefix + self.value.name + "Map"

    @property
    def entry(self) -> DictEntryNode:
        return DictEntryNode(self.annotation, self.key, self.value, self.name)

    def children(self) -> tuple[TypeNode, ...]:
        return (self.entry,)

    def proto_field(self) -> ProtoField:
        return ProtoField(self.entry.definition_name, "repeated")

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if not isinstance(value, dict):
            raise mismatch("dict", value)
        target = getattr(msg, field)
        node = self.value
        for k, v in value.items():
            try:
                key = self.key.check(k)
            except EncodeError as e:
                raise EncodeError(f"dict key {k!r}: {e.message}") from None
            entry = target.add()
            entry.key = key
            try:
                node.encode(v, entry, "value", ctx)
            except EncodeError as e:
                raise e.at(f"[{k!r}]") from None

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        # a key sent twice keeps its last value, as a map's would
        node = self.value
        return {e.key: node.decode(e, "value", ctx) for e in getattr(msg, field)}


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
            raise mismatch(f"a tuple of {len(self.items)} items", value)
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
        raise mismatch(" | ".join(show_annotation(x.annotation) for x in self.members), value)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        which = m.WhichOneof("value")
        if which is None:
            raise WireError(f"no member of {self.definition_name} is set")
        return self.members[self.field_names.index(which)].decode(m, which, ctx)

