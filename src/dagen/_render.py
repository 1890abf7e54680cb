"""Rendering: the service model and its contract -> the text of the generated files,
through the jinja2 templates in ``codegen/`` (StrictUndefined: a typo in a template
fails loudly).

Annotations and defaults are written back as Python source that evaluates to objects
equal to the originals, and each is checked by evaluating it, so that the generated
client's ``inspect.signature`` equals the original function's. Types the client cannot
import (the server module's dataclasses, enums, pydantic models, TypedDicts and
classes) are re-created in the client package as mirrors with the same names, fields,
defaults and docstrings; so are the served module's public exceptions (same name, same
built-in bases, docstring), which the client raises for the remote ones.

The user's names belong to the user: the generated client module refers to the modules
it imports under reserved names (``import xarray as _dagen_xarray``; no served name may
start with ``_dagen``), to a builtin as ``_dagen_builtins.float`` when a served name
shadows it, and its functions' first parameter is ``_dagen_self``, so that a served
function called ``xarray``, ``float`` or ``dagen``, or a parameter called ``self``,
``cls`` or ``Client``, works with its own spelling.
"""

from __future__ import annotations

import builtins
import enum
import importlib
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from ._introspect import BuildError
from ._layout import Contract
from ._model import Function, RemoteClass, RemoteException, Service
from ._resources import data_dir
from ._types import NOTHING, EnumNode, ModelField, ModelNode, own_doc

# -- annotations and defaults as source ---------------------------------------------------------

RESERVED_PREFIX = "_dagen"  # the generated client's own names: no served name may take it
SELF = "_dagen_self"  # the first parameter of the generated client's methods


def alias(module_name: str) -> str:
    """The name the generated client module imports ``module_name`` under."""
    return f"{RESERVED_PREFIX}_{module_name.replace('.', '_')}"



@dataclass
class SourceWriter:
    """Writes annotations and defaults as source, recording the modules they need.

    ``local`` maps classes mirrored in the generated module to their names there;
    ``taken`` holds the names the served module defines in the generated module (its
    functions, classes, methods and fields), which shadow builtins of the same name.
    Modules are written under their reserved alias (``_dagen_typing.Any``).
    """

    local: dict[Any, str] = field(default_factory=dict)
    imports: set[str] = field(default_factory=set)
    lossy: set[str] = field(default_factory=set)  # annotations written without their metadata
    taken: set[str] = field(default_factory=set)

    def module(self, module_name: str) -> str:
        """The module's name in the generated code (imported under its alias)."""
        self.imports.add(module_name)
        return alias(module_name)

    def builtin(self, name: str) -> str:
        """A builtin's name in the generated code: through the builtins module when a
        served name shadows it."""
        return f"{self.module('builtins')}.{name}" if name in self.taken else name

    def annotation(self, ann: Any) -> str:
        if ann is None or ann is type(None):
            return "None"
        if ann is Ellipsis:
            return "..."
        if ann is typing.Any:
            return f"{self.module('typing')}.Any"
        if isinstance(ann, type) and ann in self.local:
            return self.local[ann]
        if isinstance(ann, types.UnionType):
            return " | ".join(self.annotation(a) for a in ann.__args__)
        if isinstance(ann, types.GenericAlias):
            args = ", ".join(self.annotation(a) for a in ann.__args__) or "()"
            return f"{self.annotation(ann.__origin__)}[{args}]"
        origin = typing.get_origin(ann)
        if origin is typing.Union:
            t = self.module("typing")
            members = typing.get_args(ann)
            if len(members) == 2 and type(None) in members:
                inner = members[0] if members[1] is type(None) else members[1]
                return f"{t}.Optional[{self.annotation(inner)}]"
            return f"{t}.Union[{', '.join(self.annotation(a) for a in members)}]"
        if origin is typing.Literal:
            literals = ", ".join(py_literal(a) for a in typing.get_args(ann))
            return f"{self.module('typing')}.Literal[{literals}]"
        if origin is typing.Annotated:
            inner, *metadata = typing.get_args(ann)
            try:
                rendered = ", ".join(self.default(m) for m in metadata)
            except BuildError:
                # Constraints that are not literals (pydantic's Field(gt=0)) stay on the
                # server, which validates them; the client annotation is the plain type.
                self.lossy.add(repr(ann))
                return self.annotation(inner)
            return f"{self.module('typing')}.Annotated[{self.annotation(inner)}, {rendered}]"
        name = getattr(ann, "_name", None)
        if origin is not None and name and getattr(typing, name, None) is not None:
            args = ", ".join(self.annotation(a) for a in typing.get_args(ann))
            return f"{self.module('typing')}.{name}[{args}]"
        if origin is not None and isinstance(origin, type):  # collections.abc.Iterator[int]
            args = ", ".join(self.annotation(a) for a in typing.get_args(ann))
            return f"{self._class(origin)}[{args}]"
        if isinstance(ann, type):
            return self._class(ann)
        raise BuildError(f"cannot write annotation {ann!r} as source")

    def _class(self, cls: type) -> str:
        if cls.__module__ == "builtins" and getattr(builtins, cls.__qualname__, None) is cls:
            return self.builtin(cls.__qualname__)
        # Prefer the shortest public path: xarray.DataArray, not xarray.core.dataarray.DataArray.
        parts = cls.__module__.split(".")
        for i in range(1, len(parts) + 1):
            module_name = ".".join(parts[:i])
            obj: Any = importlib.import_module(module_name)
            for attr in cls.__qualname__.split("."):
                obj = getattr(obj, attr, None)
            if obj is cls:
                return f"{self.module(module_name)}.{cls.__qualname__}"
        raise BuildError(f"cannot import class {cls!r} by name")

    def default(self, value: Any) -> str:
        if isinstance(value, float) and not math.isfinite(value):
            return f'{self.builtin("float")}("{value}")'
        if isinstance(value, enum.Enum) and type(value) in self.local:
            return f"{self.local[type(value)]}.{value.name}"
        text = py_literal(value) if type(value) in (str, dict, list, tuple) else repr(value)
        # A repr that names its class's module (datetime.timedelta(hours=1)) or a builtin
        # (frozenset({1})): under the names the generated module has for them.
        top = type(value).__module__.split(".")[0]
        head = text.split("(", 1)[0]
        if top != "builtins" and head.startswith(f"{top}."):
            text = self.module(top) + text[len(top) :]
        elif head in self.taken and getattr(builtins, head, None) is type(value):
            text = self.builtin(head) + text[len(head) :]
        try:
            same = eval(text, self._namespace()) == value  # noqa: S307 - our own repr of a value
        except Exception:  # noqa: BLE001
            same = False
        if not same:
            raise BuildError(f"the default {text} cannot be written as a Python literal")
        return text

    def _namespace(self) -> dict[str, Any]:
        namespace: dict[str, Any] = {name: cls for cls, name in self.local.items()}
        for module_name in self.imports:
            namespace[alias(module_name)] = importlib.import_module(module_name)
        return namespace

    def check(self, text: str, expected: Any, what: str) -> None:
        """The source must evaluate to the original (mirrors stand for the originals)."""
        if any(part in repr(expected) for part in self.lossy):
            return
        if eval(text, self._namespace()) != expected:  # noqa: S307 - source we just wrote
            raise BuildError(f"{what}: {text} does not reproduce {expected!r}")


# -- jinja filters -------------------------------------------------------------------------------


def _comment(text: str | None, indent: str = "") -> str:
    lines = inspect.cleandoc(text or "").splitlines() or [""]
    return "\n".join(f"{indent}//{' ' + line if line else ''}" for line in lines)


def py_literal(value: Any) -> str:
    """``repr``, with strings in double quotes as formatted Python writes them."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if eval(text) == value else repr(value)  # noqa: S307 - our own literal
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        items = ", ".join(py_literal(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    return repr(value)


def _docstring(doc: str | None, indent: str = "    ") -> str:
    """``doc`` as a docstring literal in a body indented by ``indent``: its lines
    re-indented to that body (``inspect.getdoc`` gives the same text)."""
    if doc is None:
        return ""
    lines = doc.expandtabs().splitlines() or [""]
    margin = min(
        (len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()), default=0
    )
    lines = [lines[0].strip()] + [
        indent + line[margin:].rstrip() if line.strip() else "" for line in lines[1:]
    ]
    if len(lines) > 1 and not lines[-1]:
        lines[-1] = indent  # the closing quotes on a line of their own
    text = "\n".join(lines)
    if '"""' in text or text.endswith(('"', "\\")):
        return repr(doc)
    prefix = "r" if "\\" in text else ""
    return f'{prefix}"""{text}"""'


def without_parameters(doc: str | None, names: set[str]) -> str | None:
    """``doc`` without the entries of ``names`` in its numpy-style Parameters section
    (the parameters the client does not take, as a ``dagen.Progress``)."""
    if not doc or not names:
        return doc
    lines = doc.splitlines(keepends=True)
    kept: list[str] = []
    in_parameters = dropping = False
    entry_indent = 0
    for i, line in enumerate(lines):
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        underline = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if underline:  # a section header
            in_parameters, dropping = text in ("Parameters", "Other Parameters"), False
            entry_indent = indent
        elif in_parameters and text and indent <= entry_indent and set(text) != {"-"}:
            dropping = re.split(r"\s*:", text, maxsplit=1)[0] in names  # a new entry
        if dropping and not text:  # a blank line: kept when it ends the entry
            following = next((x for x in lines[i + 1 :] if x.strip()), "")
            dropping = len(following) - len(following.lstrip()) > entry_indent
        if not dropping:
            kept.append(line)
    return "".join(kept)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("codegen"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - we write code, not HTML
    )
    env.filters.update(comment=_comment, docstring=_docstring, pyrepr=py_literal)
    return env


# -- the client module, laid out for its template ------------------------------------------------


@dataclass
class PyFunction:
    """A def of the generated client: its header, docstring and one-line body."""

    decorator: str
    header: str
    doc: str | None
    body: str


@dataclass
class PyClass:
    name: str
    header: str  # "class X(Base):"
    decorator: str  # a decorator line before it, or ""
    doc: str | None
    lines: list[str]  # field or member lines
    methods: list[PyFunction]


def served_names(service: Service) -> set[str]:
    """The names the served module defines in the generated client module: functions,
    classes and their methods, mirrored types and their fields and members."""
    names = {fn.name for fn in service.functions} | {e.name for e in service.exceptions}
    for c in service.classes:
        names |= {c.name, *(m.name for m in c.methods)}
    for d in service.definitions():
        if isinstance(d, ModelNode):
            names |= {d.name, *(f.name for f in d.fields)}
        elif isinstance(d, EnumNode) and isinstance(d.annotation, type):
            names |= {d.annotation.__name__, *d.annotation.__members__}  # type: ignore[attr-defined]
    return names


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return "a lambda" if name.endswith("<lambda>") else name


def _safe_to_call(fn: Any) -> bool:
    """Only lambdas are called to see what they make (a factory with no argument)."""
    return getattr(fn, "__name__", "") == "<lambda>"


def field_where(cls: Any, name: str) -> str:
    """``file:line`` of a field of a class (its first line that assigns or annotates it)."""
    try:
        lines, first = inspect.getsourcelines(cls)
        path = inspect.getsourcefile(cls) or "<unknown>"
    except (OSError, TypeError):
        return getattr(cls, "__qualname__", repr(cls))
    pattern = re.compile(rf"^\s+{re.escape(name)}\s*[:=]")
    offset = next((i for i, line in enumerate(lines) if pattern.match(line)), 0)
    return f"{path}:{first + offset}"


class _ClientWriter:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.writer = SourceWriter(taken=served_names(service))
        self.needs_pydantic = False
        definitions = service.definitions()
        for d in definitions:
            if isinstance(d, ModelNode | EnumNode) and isinstance(d.annotation, type):
                self.writer.local[d.annotation] = d.annotation.__name__
        self.definitions = definitions

    def signature(self, fn: Function, first: str | None) -> str:
        w = self.writer
        parts = [first] if first else []
        kinds = [p.kind for p in fn.parameters]
        for i, p in enumerate(fn.parameters):
            if p.kind is inspect.Parameter.KEYWORD_ONLY and (
                i == 0 or kinds[i - 1] is not inspect.Parameter.KEYWORD_ONLY
            ):
                parts.append("*")
            ann = w.annotation(p.annotation)
            w.check(ann, p.annotation, f"{fn.key}(): annotation of {p.name!r}")
            text = f"{p.name}: {ann}"
            if p.has_default:
                text += f" = {w.default(p.default)}"
            parts.append(text)
            if p.kind is inspect.Parameter.POSITIONAL_ONLY and (
                i + 1 == len(kinds) or kinds[i + 1] is not inspect.Parameter.POSITIONAL_ONLY
            ):
                parts.append("/")
        returns = ""
        if fn.return_annotation is not inspect.Signature.empty:
            ann = w.annotation(fn.return_annotation)
            w.check(ann, fn.return_annotation, f"{fn.key}(): return annotation")
            returns = f" -> {ann}"
        return f"def {fn.name}({', '.join(parts)}){returns}:"

    @staticmethod
    def arguments(fn: Function) -> str:
        """The call's arguments as a dict literal, by parameter name."""
        return "{" + ", ".join(f"{py_literal(p.name)}: {p.name}" for p in fn.parameters) + "}"

    def function(self, fn: Function, method: bool) -> PyFunction:
        client = SELF if method else "_dagen_client.default_client(_dagen_Client)"
        body = f"return _dagen_client.call({client}, {py_literal(fn.key)}, {self.arguments(fn)})"
        doc = without_parameters(fn.doc, {fn.progress} if fn.progress else set())
        decorator = "@_dagen_client.dataset" if fn.dataset else ""  # returns a lazy dataset
        return PyFunction(decorator, self.signature(fn, SELF if method else None), doc, body)

    def remote_class(self, cls: RemoteClass) -> PyClass:
        init = cls.init
        methods = [
            PyFunction(
                "",
                self.signature(init, SELF),
                init.doc,
                f"{SELF}._dagen_arguments_ = {self.arguments(init)}",
            )
        ]
        for fn in cls.methods:
            # Static methods become class methods, so that a class bound to a client
            # (client.Model) reaches that client; their signatures stay the same.
            decorator = "" if fn.kind == "method" else f"@{self.writer.builtin('classmethod')}"
            methods.append(
                PyFunction(
                    decorator,
                    self.signature(fn, SELF),
                    without_parameters(fn.doc, {fn.progress} if fn.progress else set()),
                    f"return _dagen_client.call_method("
                    f"{SELF}, {py_literal(fn.key)}, {self.arguments(fn)})",
                )
            )
        header = f"class {cls.name}(_dagen_client.RemoteObject):"
        return PyClass(cls.name, header, "", cls.doc, [], methods)

    def exception(self, exc: RemoteException) -> PyClass:
        """The mirror of a served module's exception: its name, bases and docstring."""
        bases = ", ".join(
            self.writer.builtin(b.removeprefix("builtins.")) if b.startswith("builtins.") else b
            for b in exc.bases
        )
        return PyClass(exc.name, f"class {exc.name}({bases}):", "", exc.doc, [], [])

    def mirror(self, node: ModelNode | EnumNode) -> PyClass:
        w = self.writer
        cls = node.annotation
        name = cls.__name__
        if isinstance(node, EnumNode):
            base = (
                "IntEnum"
                if issubclass(cls, enum.IntEnum)
                else ("StrEnum" if issubclass(cls, enum.StrEnum) else "Enum")
            )
            lines = [f"{m.name} = {py_literal(m.value)}" for m in cls]
            for m in cls:
                if eval(py_literal(m.value)) != m.value:  # noqa: S307 - our own repr
                    raise BuildError(
                        f"enum {name}: value {m.value!r} cannot be written as source"
                    )
            header = f"class {name}({w.module('enum')}.{base}):"
            return PyClass(name, header, "", own_doc(cls), lines, [])
        lines = [self._model_field(node, f) for f in node.fields]
        if node.kind == "dataclass":
            params = cls.__dataclass_params__
            options = [f"{k}=True" for k in ("frozen", "order") if getattr(params, k)]
            decorator = f"@{w.module('dataclasses')}.dataclass"
            if options:
                decorator += f"({', '.join(options)})"
            return PyClass(name, f"class {name}:", decorator, own_doc(cls), lines, [])
        if node.kind == "pydantic":
            self.needs_pydantic = True
            header = f"class {name}({w.module('pydantic')}.BaseModel):"
            return PyClass(name, header, "", own_doc(cls), lines, [])
        header = f"class {name}({w.module('typing')}.TypedDict):"
        return PyClass(name, header, "", own_doc(cls), lines, [])

    def _model_field(self, node: ModelNode, f: ModelField) -> str:
        w = self.writer
        ann = w.annotation(f.annotation)
        if node.kind == "typeddict" and not f.required:
            ann = f"{w.module('typing')}.NotRequired[{ann}]"
        text = f"{f.name}: {ann}"
        if f.factory is not NOTHING:
            if f.factory not in (list, dict, set, tuple, frozenset):
                made = f.factory() if _safe_to_call(f.factory) else NOTHING
                hint = (
                    f"default_factory={type(made).__name__} (and fill it in __post_init__), "
                    if type(made) in (list, dict, set, tuple, frozenset)
                    else ""
                )
                raise BuildError(
                    f"{field_where(node.annotation, f.name)}: {node.name}.{f.name}: the "
                    f"default factory {_callable_name(f.factory)} cannot be written into the "
                    "client, which must make the same default: use "
                    f"{hint or 'a builtin factory (list, dict, set, tuple, frozenset), '}"
                    "a literal default, or no default"
                )
            maker = (
                f"{w.module('dataclasses')}.field"
                if node.kind == "dataclass"
                else f"{w.module('pydantic')}.Field"
            )
            text += f" = {maker}(default_factory={w.builtin(f.factory.__name__)})"
        elif f.default is not NOTHING:
            try:
                text += f" = {w.default(f.default)}"
            except BuildError as e:
                raise BuildError(
                    f"{field_where(node.annotation, f.name)}: {node.name}.{f.name}: {e}: give "
                    "a literal default (a number, string, tuple...), or no default"
                ) from None
        return text


    def render(self, contract: Contract, version: str) -> str:
        service = self.service
        mirrors = [
            self.mirror(d)
            for d in self.definitions
            if isinstance(d, ModelNode | EnumNode) and isinstance(d.annotation, type)
        ]
        exceptions = [self.exception(e) for e in service.exceptions]
        classes = [self.remote_class(c) for c in service.classes]
        methods = [self.function(fn, True) for fn in service.functions]
        functions = [self.function(fn, False) for fn in service.functions]
        template = _environment().get_template("client_package/__init__.py.j2")
        return template.render(
            service=service,
            version=version,
            imports=[(m, alias(m)) for m in sorted(self.writer.imports)],
            mirrors=[*exceptions, *mirrors],
            classes=classes,
            methods=methods,
            functions=functions,
            contract=contract,
            exported=[
                "Client",
                *(e.name for e in exceptions),
                *(m.name for m in mirrors),
                *(c.name for c in service.classes),
                *(fn.name for fn in service.functions),
            ],
        )


# -- the files -----------------------------------------------------------------------------------


def render_proto(contract: Contract, version: str) -> str:
    return (
        _environment().get_template("service.proto.j2").render(contract=contract, version=version)
    )


def render_server(
    service: Service, contract: Contract, version: str, source_dir: str | None
) -> str:
    """The server module; ``source_dir``: the served module's folder relative to it."""
    template = _environment().get_template("server.py.j2")
    return template.render(
        service=service, contract=contract, version=version, source_dir=source_dir
    )


def render_client(service: Service, contract: Contract, version: str) -> tuple[str, bool]:
    """The client package's ``__init__.py``, and whether it needs pydantic."""
    writer = _ClientWriter(service)
    text = writer.render(contract, version)
    return text, writer.needs_pydantic


def render_client_pyproject(service: Service, **values: Any) -> str:
    template = _environment().get_template("client_package/pyproject.toml.j2")
    return template.render(service=service, **values)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
