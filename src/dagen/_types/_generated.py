"""Generated messages of the user's own classes: dataclasses, pydantic models, TypedDicts."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._arrays import DecodeContext, EncodeContext
from ._base import (
    Definition,
    EncodeError,
    MessageNode,
    ProtoField,
    TypeNode,
    UnsupportedType,
    class_summary,
    mismatch,
    show_annotation,
)
from ._containers import optional_of


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
            raise mismatch(self.name, value)
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


def model_node(cls: type, field_type: Callable[[Any], TypeNode]) -> ModelNode | None:
    """A dataclass, pydantic v2 model or TypedDict, or None if ``cls`` is none of those;
    ``field_type`` maps each field's annotation to its node (``type_node``)."""

    def field_node(name: str, annotation: Any) -> TypeNode:
        try:
            return field_type(annotation)
        except UnsupportedType as e:
            raise UnsupportedType(
                f"field {cls.__name__}.{name} ({show_annotation(annotation)}): {e}"
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
        return ModelNode(cls, "dataclass", fields, class_summary(cls))
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
        return ModelNode(cls, "typeddict", fields, class_summary(cls))
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
        return ModelNode(cls, "pydantic", tuple(pydantic_fields), class_summary(cls))
    return None
