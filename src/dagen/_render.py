"""Rendering: the service model -> the text of the generated files, through the
jinja2 templates in ``codegen/`` (StrictUndefined: a typo in a template fails loudly).

Annotations and defaults are written back as Python source that evaluates to objects
equal to the originals, and each is checked by evaluating it, so that the generated
client's ``inspect.signature`` equals the original function's.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from ._introspect import BuildError
from ._model import Function, Service
from ._resources import data_dir
from ._types import DataArrayNode, TypeNode, walk

# -- annotations and defaults as source ---------------------------------------------------------


@dataclass
class SourceWriter:
    """Writes annotations and defaults as source, recording the modules they need."""

    imports: set[str] = field(default_factory=set)

    def annotation(self, ann: Any) -> str:
        if ann is None or ann is type(None):
            return "None"
        if ann is Ellipsis:
            return "..."
        if ann is typing.Any:
            self.imports.add("typing")
            return "typing.Any"
        if isinstance(ann, types.UnionType):
            return " | ".join(self.annotation(a) for a in ann.__args__)
        if isinstance(ann, types.GenericAlias):
            args = ", ".join(self.annotation(a) for a in ann.__args__) or "()"
            return f"{self.annotation(ann.__origin__)}[{args}]"
        origin = typing.get_origin(ann)
        if origin is typing.Union:
            self.imports.add("typing")
            members = typing.get_args(ann)
            if len(members) == 2 and type(None) in members:
                inner = members[0] if members[1] is type(None) else members[1]
                return f"typing.Optional[{self.annotation(inner)}]"
            return f"typing.Union[{', '.join(self.annotation(a) for a in members)}]"
        name = getattr(ann, "_name", None)
        if origin is not None and name and getattr(typing, name, None) is not None:
            self.imports.add("typing")
            args = ", ".join(self.annotation(a) for a in typing.get_args(ann))
            return f"typing.{name}[{args}]"
        if isinstance(ann, type):
            return self._class(ann)
        raise BuildError(f"cannot write annotation {ann!r} as source")

    def _class(self, cls: type) -> str:
        if cls.__module__ == "builtins" and getattr(builtins, cls.__qualname__, None) is cls:
            return cls.__qualname__
        # Prefer the shortest public path: xarray.DataArray, not xarray.core.dataarray.DataArray.
        parts = cls.__module__.split(".")
        for i in range(1, len(parts) + 1):
            module_name = ".".join(parts[:i])
            obj: Any = importlib.import_module(module_name)
            for attr in cls.__qualname__.split("."):
                obj = getattr(obj, attr, None)
            if obj is cls:
                self.imports.add(module_name)
                return f"{module_name}.{cls.__qualname__}"
        raise BuildError(f"cannot import class {cls!r} by name")

    def default(self, value: Any) -> str:
        if isinstance(value, float) and not math.isfinite(value):
            return f'float("{value}")'
        text = repr(value)
        try:
            same = eval(text, {}) == value  # noqa: S307 - our own repr of a literal
        except Exception:  # noqa: BLE001
            same = False
        if not same:
            raise BuildError(f"the default {text} cannot be written as a Python literal")
        return text

    def check(self, text: str, expected: Any, what: str) -> None:
        namespace = {
            name.split(".")[0]: importlib.import_module(name.split(".")[0]) for name in self.imports
        }
        for name in self.imports:
            importlib.import_module(name)
        if eval(text, namespace) != expected:  # noqa: S307 - source we just wrote
            raise BuildError(f"{what}: {text} does not reproduce {expected!r}")


# -- jinja filters -------------------------------------------------------------------------------


def _comment(text: str | None, indent: str = "") -> str:
    lines = inspect.cleandoc(text or "").splitlines() or [""]
    return "\n".join(f"{indent}//{' ' + line if line else ''}" for line in lines)


def _field(node: TypeNode, name: str, number: int) -> str:
    f = node.proto_field()
    label = f"{f.label} " if f.label else ""
    return f"{label}{f.type} {name} = {number};"


def _docstring(doc: str | None) -> str:
    if doc is None:
        return ""
    if '"""' not in doc and "\\" not in doc and not doc.endswith('"'):
        return f'"""{doc}"""'
    return repr(doc)


def _pytype(annotation: Any) -> str:
    return SourceWriter().annotation(annotation)


class _Python:
    """Filters that write a function's signature, sharing one SourceWriter for imports."""

    def __init__(self) -> None:
        self.writer = SourceWriter()

    def params(self, fn: Function, method: bool = False) -> str:
        parts = ["self"] if method else []
        w = self.writer
        kinds = [p.kind for p in fn.parameters]
        for i, p in enumerate(fn.parameters):
            if p.kind is inspect.Parameter.KEYWORD_ONLY and (
                i == 0 or kinds[i - 1] is not inspect.Parameter.KEYWORD_ONLY
            ):
                parts.append("*")
            ann = w.annotation(p.annotation)
            w.check(ann, p.annotation, f"{fn.name}(): annotation of {p.name!r}")
            text = f"{p.name}: {ann}"
            if p.has_default:
                text += f" = {w.default(p.default)}"
            parts.append(text)
            if p.kind is inspect.Parameter.POSITIONAL_ONLY and (
                i + 1 == len(kinds) or kinds[i + 1] is not inspect.Parameter.POSITIONAL_ONLY
            ):
                parts.append("/")
        return ", ".join(parts)

    def method_params(self, fn: Function) -> str:
        return self.params(fn, method=True)

    def returns(self, fn: Function) -> str:
        ann = self.writer.annotation(fn.return_annotation)
        self.writer.check(ann, fn.return_annotation, f"{fn.name}(): return annotation")
        return f" -> {ann}"

    @staticmethod
    def arguments(fn: Function) -> str:
        return "".join(f", {p.name}={p.name}" for p in fn.parameters)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("codegen"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - we write code, not HTML
    )
    env.filters.update(
        comment=_comment, field=_field, docstring=_docstring, pyrepr=repr, pytype=_pytype
    )
    return env


# -- the files -----------------------------------------------------------------------------------


def proto_imports(service: Service) -> list[str]:
    nodes = [
        node
        for fn in service.functions
        for root in (fn.returns, *(p.type for p in fn.parameters))
        for node in walk(root)
    ]
    imports = set()
    if any(fn.streaming for fn in service.functions):
        imports.add("dagen/v1/array.proto")
    if any(isinstance(node, DataArrayNode) for node in nodes):
        imports.add("dagen/v1/xarray.proto")
    return sorted(imports)


def render_proto(service: Service, version: str) -> str:
    template = _environment().get_template("service.proto.j2")
    return template.render(service=service, version=version, imports=proto_imports(service))


def render_server(service: Service, version: str, source_dir: str) -> str:
    template = _environment().get_template("server.py.j2")
    return template.render(service=service, version=version, source_dir=source_dir)


def render_client(service: Service, version: str) -> str:
    env = _environment()
    python = _Python()
    env.filters.update(
        params=python.params,
        method_params=python.method_params,
        returns=python.returns,
        arguments=python.arguments,
    )
    for fn in service.functions:  # collect the modules the annotations need
        python.params(fn)
        python.returns(fn)
    template = env.get_template("client_package/__init__.py.j2")
    return template.render(service=service, version=version, imports=sorted(python.writer.imports))


def render_client_pyproject(service: Service, **versions: str) -> str:
    template = _environment().get_template("client_package/pyproject.toml.j2")
    return template.render(service=service, **versions)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
