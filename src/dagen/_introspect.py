"""Introspection: a Python module (or a generated client class) -> the service model.

As FastAPI does for its dependencies, each function is read once, with
``inspect.signature(eval_str=True)``, into frozen model objects.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import docstring_parser

from ._model import Function, Parameter, Service, camel
from ._types import OptionalNode, UnsupportedType, type_node


class BuildError(Exception):
    """A module that dagen cannot turn into a service; the message says where and why."""


def load_module(spec: str) -> types.ModuleType:
    """Import a module from a file path (``examples/ocean_tools.py``) or a dotted name.

    A file's folder goes first on ``sys.path`` so that its own imports work.
    """
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise BuildError(f"no such file: {spec}")
        path = path.resolve()
        name = path.stem
        if not name.isidentifier():
            raise BuildError(f"{path.name}: the module name {name!r} is not a Python identifier")
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        existing = sys.modules.get(name)
        if existing is not None and getattr(existing, "__file__", None) == str(path):
            return existing
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        raise BuildError(f"cannot import module {spec!r}: {e}") from None


def public_functions(module: types.ModuleType) -> list[Callable[..., Any]]:
    """``__all__`` when the module has it, else the public functions defined in it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        found: list[Callable[..., Any]] = []
        for name in names:
            obj = getattr(module, name, None)
            if not inspect.isfunction(obj):
                raise BuildError(
                    f"{module.__name__}.__all__ names {name!r}, which is not a function "
                    "(classes are not supported yet)"
                )
            found.append(obj)
        return found
    return [
        obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == module.__name__
    ]


def _arg_lines(fn: Callable[..., Any]) -> dict[str, int]:
    """The line of each parameter in the source, for error messages."""
    try:
        lines, first = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return {}
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return {}
    a = node.args
    every = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]
    return {arg.arg: first + arg.lineno - 1 for arg in every}


def _where(fn: Callable[..., Any], line: int) -> str:
    try:
        path = inspect.getsourcefile(fn) or "<unknown>"
    except TypeError:
        path = "<unknown>"
    return f"{path}:{line}"


def introspect_function(
    fn: Callable[..., Any], owner: str, *, skip_first: bool = False
) -> Function:
    qualname = f"{owner}.{fn.__name__}"
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", 0)
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        raise BuildError(
            f"{_where(fn, line)}: {qualname}: async and generator functions are not supported yet"
        )
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError, TypeError) as e:
        raise BuildError(
            f"{_where(fn, line)}: {qualname}: cannot resolve its annotations: {e}"
        ) from None
    doc = docstring_parser.parse(fn.__doc__ or "", style=docstring_parser.DocstringStyle.NUMPYDOC)
    param_docs = {p.arg_name: p.description or "" for p in doc.params}
    arg_lines = _arg_lines(fn)
    params = list(sig.parameters.values())[1 if skip_first else 0 :]

    parameters = []
    for p in params:
        pline = arg_lines.get(p.name, line)
        where = f"{_where(fn, pline)}: in {qualname}, parameter {p.name!r}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise BuildError(f"{where}: *args and **kwargs cannot be part of a remote signature")
        if p.name == "self":
            raise BuildError(f"{where}: a parameter named 'self' would clash with the client class")
        if p.annotation is p.empty:
            raise BuildError(f"{where}: missing annotation (every parameter needs a type)")
        try:
            node = type_node(p.annotation)
        except UnsupportedType as e:
            raise BuildError(f"{where}: annotation {_show(p.annotation)}: {e}") from None
        if p.default is None and not isinstance(node, OptionalNode):
            raise BuildError(
                f"{where}: the default is None, so the annotation must allow it: "
                f"{_show(p.annotation)} | None"
            )
        parameters.append(
            Parameter(
                p.name, p.kind, p.annotation, node, p.default, param_docs.get(p.name, ""), pline
            )
        )
    if sig.return_annotation is sig.empty:
        raise BuildError(
            f"{_where(fn, line)}: in {qualname}: missing return annotation (use '-> None' if it returns nothing)"
        )
    try:
        returns = type_node(sig.return_annotation, is_return=True)
    except UnsupportedType as e:
        raise BuildError(
            f"{_where(fn, line)}: in {qualname}, return annotation {_show(sig.return_annotation)}: {e}"
        ) from None
    return Function(
        name=fn.__name__,
        parameters=tuple(parameters),
        returns=returns,
        return_annotation=sig.return_annotation,
        doc=fn.__doc__,
        summary=doc.short_description or "",
        returns_doc=(doc.returns.description or "") if doc.returns else "",
        line=line,
    )


def _show(annotation: Any) -> str:
    if isinstance(annotation, type):
        return (
            annotation.__qualname__
            if annotation.__module__ == "builtins"
            else f"{annotation.__module__}.{annotation.__qualname__}"
        )
    return repr(annotation).replace("typing.", "")


def make_service(module_name: str, doc: str | None, functions: Iterable[Function]) -> Service:
    functions = tuple(functions)
    seen: dict[str, str] = {}
    for fn in functions:
        if fn.rpc in seen:
            raise BuildError(
                f"{module_name}: functions {seen[fn.rpc]!r} and {fn.name!r} both become rpc {fn.rpc!r}"
            )
        seen[fn.rpc] = fn.name
    if not camel(module_name.rsplit(".", 1)[-1]):
        raise BuildError(f"{module_name}: cannot derive a service name")
    return Service(module=module_name, doc=doc, functions=functions)


def introspect_module(module: types.ModuleType) -> Service:
    """The service a module offers: one rpc per public function."""
    functions = [introspect_function(fn, module.__name__) for fn in public_functions(module)]
    if not functions:
        raise BuildError(f"module {module.__name__} has no public functions to serve")
    return make_service(module.__name__, module.__doc__, functions)
