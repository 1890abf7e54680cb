"""Introspection: a Python module (or a generated client class) -> the service model.

As FastAPI does for its dependencies, each function is read once, with
``inspect.signature(eval_str=True)``, into frozen model objects.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import sys
import textwrap
import traceback
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._exceptions import BuildError
from ._model import (
    DATASET_MARK,
    INSTANCE_FIELD,
    Function,
    Parameter,
    RemoteClass,
    RemoteException,
    Service,
    camel,
)
from ._progress import is_progress_annotation
from ._types import (
    EnumNode,
    LazyDatasetNode,
    ModelNode,
    OptionalNode,
    TypeNode,
    UnsupportedType,
    own_doc,
    show_annotation,
    type_node,
)


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
        except Exception as e:
            del sys.modules[name]
            raise import_failure(spec, e, path.parent) from None
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name == spec:
            raise BuildError(
                f"cannot import module {spec!r}: {e}; give a file path (path/to/{spec}.py) "
                "or add its folder to PYTHONPATH"
            ) from None
        raise import_failure(spec, e, None) from None
    except Exception as e:  # noqa: BLE001 - the module's own code failed: said in one line
        raise import_failure(spec, e, None) from None


def import_failure(spec: str, e: BaseException, folder: Path | None) -> BuildError:
    """One line for a module whose import failed: where (the module's own line that
    failed, else the deepest one) and what to do."""
    if isinstance(e, SyntaxError):
        text = f" ({e.text.strip()})" if e.text and e.text.strip() else ""
        return BuildError(
            f"{e.filename}:{e.lineno}: {spec} has a syntax error: {e.msg}{text}; fix it "
            "(python -m py_compile FILE shows it too)"
        )
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<frozen")]
    own = [f for f in frames if folder is not None and Path(f.filename).parent == folder]
    found = own or frames
    where = f"{found[-1].filename}:{found[-1].lineno}: " if found else ""
    if isinstance(e, ModuleNotFoundError) and e.name:
        top = e.name.split(".")[0]
        fix = (f"install {top} in this environment (pip install {top}), or fix the "
               "import")
    elif isinstance(e, ImportError):
        fix = "check the name imported and the installed version of its package"
    else:
        fix = "importing the module runs its top-level code, which must not fail"
    return BuildError(
        f"{where}importing {spec} failed with {type(e).__name__}: {e}; {fix}"
    )


def is_data_type(cls: type) -> bool:
    """Classes that are types of values (sent as messages or enums), not remote classes."""
    return (
        dataclasses.is_dataclass(cls)
        or typing.is_typeddict(cls)
        or issubclass(cls, enum.Enum | BaseException | tuple)
        or hasattr(cls, "model_fields")  # pydantic
    )


def public_members(
    module: types.ModuleType,
) -> tuple[list[Callable[..., Any]], list[type], list[type[Exception]]]:
    """The functions, remote classes and exception classes a module offers: those in
    ``__all__`` when it has one, else the public ones defined in it. Data types
    (dataclasses, enums, pydantic models, exceptions...) are types of values, not
    remote classes; exceptions are mirrored in the client."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module.__name__
        ]
    functions: list[Callable[..., Any]] = []
    classes: list[type] = []
    exceptions: list[type[Exception]] = []
    for name in names:
        obj = getattr(module, name, None)
        if inspect.isfunction(obj):
            functions.append(obj)
        elif inspect.isclass(obj):
            if issubclass(obj, Exception):
                exceptions.append(obj)
            elif not is_data_type(obj):
                classes.append(obj)
        elif obj is None:
            raise BuildError(f"{module.__name__}.__all__ names {name!r}, which does not exist")
        else:
            raise BuildError(
                f"{module.__name__}.__all__ names {name!r}, which is neither a function nor a class"
            )
    return functions, classes, exceptions


def _mirror_bases(cls: type, mirrored: set[type]) -> list[type]:
    """The bases of an exception's mirror: its built-in and mirrored bases; a base that
    is neither (private, or of another library) stands for its own bases."""
    found: list[type] = []
    for base in cls.__bases__:
        if base in mirrored or base.__module__ == "builtins":
            if issubclass(base, BaseException):
                found.append(base)
        else:
            found.extend(_mirror_bases(base, mirrored))
    unique = list(dict.fromkeys(found))
    # (ValueError, Exception) would be no valid class: a base another one implies goes
    return [b for b in unique if not any(o is not b and issubclass(o, b) for o in unique)]


def introspect_exceptions(found: list[type[Exception]]) -> tuple[RemoteException, ...]:
    """The exception classes to mirror in the client, each after its mirrored bases."""
    mirrored = set(found)
    out = []
    for cls in sorted(found, key=lambda c: len(c.__mro__)):  # a base has the shorter MRO
        bases = _mirror_bases(cls, mirrored)
        try:
            type(cls.__name__, tuple(bases), {})
        except TypeError as e:
            raise BuildError(
                f"{_class_where(cls)}: the exception {cls.__name__} cannot be mirrored in the "
                f"client with the bases {', '.join(b.__name__ for b in bases)}: {e}"
            ) from None
        out.append(
            RemoteException(
                name=cls.__name__,
                wire_name=f"{cls.__module__}.{cls.__qualname__}",
                bases=tuple(
                    b.__name__ if b in mirrored else f"builtins.{b.__qualname__}" for b in bases
                ),
                doc=own_doc(cls),
                line=_class_line(cls),
            )
        )
    return tuple(out)


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


_ITERATORS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    typing.Iterator,
    typing.Iterable,
    typing.Generator,
}


def introspect_function(
    fn: Callable[..., Any],
    owner: str,
    *,
    skip_first: bool = False,
    cls: str | None = None,
    kind: str = "function",
) -> Function:
    qualname = f"{owner}.{fn.__name__}"
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", 0)
    if kind != "init":
        _check_name(fn.__name__, f"{_where(fn, line)}: {qualname}", "function")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise BuildError(f"{_where(fn, line)}: {qualname}: async functions are not supported yet")
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError, TypeError) as e:
        raise BuildError(
            f"{_where(fn, line)}: {qualname}: cannot resolve its annotations: {e}"
        ) from None
    arg_lines = _arg_lines(fn)
    params = list(sig.parameters.values())[1 if skip_first else 0 :]

    parameters = []
    progress: str | None = None  # a dagen.Progress parameter: filled in by the server
    for p in params:
        pline = arg_lines.get(p.name, line)
        where = f"{_where(fn, pline)}: in {qualname}, parameter {p.name!r}"
        if is_progress_annotation(p.annotation):
            if progress is not None or p.kind is p.POSITIONAL_ONLY:
                raise BuildError(
                    f"{where}: a function takes at most one dagen.Progress "
                    "parameter, and it cannot be positional-only"
                )
            progress = p.name
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise BuildError(f"{where}: *args and **kwargs cannot be part of a remote signature")
        if p.name.startswith(RESERVED_PREFIX):
            raise BuildError(
                f"{where}: names starting with {RESERVED_PREFIX!r} are reserved for the "
                "generated client's own names; rename the parameter"
            )
        if p.annotation is p.empty:
            raise BuildError(f"{where}: missing annotation (every parameter needs a type)")
        try:
            node = type_node(p.annotation)
        except UnsupportedType as e:
            raise BuildError(f"{where}: annotation {show_annotation(p.annotation)}: {e}") from None
        if p.default is None and not isinstance(node, OptionalNode):
            raise BuildError(
                f"{where}: the default is None, so the annotation must allow it: "
                f"{show_annotation(p.annotation)} | None"
            )
        parameters.append(
            Parameter(p.name, p.kind, p.annotation, node, p.default, pline)
        )
    return_annotation = sig.return_annotation
    if fn.__name__ == "__init__" and return_annotation is sig.empty:
        return_annotation = None
    generator = typing.get_origin(return_annotation) in _ITERATORS
    if generator and progress is not None:
        raise BuildError(
            f"{_where(fn, line)}: in {qualname}: a generator cannot take a dagen.Progress "
            "parameter (yet): the items it yields are its progress"
        )
    if inspect.isgeneratorfunction(fn) and not generator:
        raise BuildError(
            f"{_where(fn, line)}: in {qualname}: a generator needs a return annotation "
            "Iterator[T] (or Generator[T, None, None])"
        )
    if return_annotation is sig.empty:
        raise BuildError(
            f"{_where(fn, line)}: in {qualname}: missing return annotation "
            "(use '-> None' if it returns nothing)"
        )
    dataset = bool(getattr(fn, DATASET_MARK, False))
    if dataset:
        returns = _dataset_returns(fn, line, qualname, cls, generator, parameters,
                                   return_annotation)
    else:
        try:
            item = typing.get_args(return_annotation)[0] if generator else return_annotation
            returns = type_node(item, is_return=not generator)
        except (UnsupportedType, IndexError) as e:
            raise BuildError(
                f"{_where(fn, line)}: in {qualname}, return annotation "
                f"{show_annotation(return_annotation)}: {e}"
            ) from None
    return Function(
        name=fn.__name__,
        parameters=tuple(parameters),
        returns=returns,
        return_annotation=return_annotation,
        doc=fn.__doc__,
        line=line,
        generator=generator,
        owner=cls,
        kind=kind,
        progress=progress,
        dataset=dataset,
    )


def _dataset_returns(fn: Callable[..., Any], line: int, qualname: str, cls: str | None,
                     generator: bool, parameters: list[Parameter],
                     return_annotation: Any) -> TypeNode:
    """The node of a @dagen.dataset function's result (a DatasetHandle), once its
    signature fits: a module-level function of plain arguments returning xr.Dataset."""
    where = f"{_where(fn, line)}: {qualname}: @dagen.dataset"
    if cls is not None or generator:
        raise BuildError(f"{where} marks a module-level function that returns one "
                         "xarray.Dataset, not a method or a generator")
    import xarray as xr

    if return_annotation is not xr.Dataset:
        raise BuildError(f"{where} needs the return annotation xarray.Dataset, not "
                         f"{show_annotation(return_annotation)}")
    arrays = [p.name for p in parameters if p.type.has_arrays]
    if arrays:
        raise BuildError(f"{where}: the parameter {arrays[0]!r} carries arrays; a dataset "
                         "function takes plain arguments (names, numbers, dates) that say "
                         "which dataset to open")
    return LazyDatasetNode()


def introspect_class(cls: type, owner: str) -> RemoteClass:
    """A remote class: its constructor's parameters and its public methods."""
    qualname = f"{owner}.{cls.__name__}"
    defines_init = any("__init__" in vars(c) for c in cls.__mro__[:-1])
    if defines_init:
        constructor: Any = cls.__init__  # type: ignore[misc]
        init = introspect_function(
            constructor, qualname, skip_first=True, cls=cls.__name__, kind="init"
        )
    else:
        init = Function(
            "__init__",
            (),
            type_node(None, is_return=True),
            None,
            None,
            0,
            owner=cls.__name__,
            kind="init",
        )
    methods: dict[str, Function] = {}
    for klass in cls.__mro__[:-1]:
        for name, attr in vars(klass).items():
            if name.startswith("_") or name in methods:
                continue
            if isinstance(attr, staticmethod):
                methods[name] = introspect_function(
                    attr.__func__, qualname, cls=cls.__name__, kind="staticmethod"
                )
            elif isinstance(attr, classmethod):
                methods[name] = introspect_function(
                    attr.__func__, qualname, skip_first=True, cls=cls.__name__, kind="classmethod"
                )
            elif inspect.isfunction(attr):
                methods[name] = introspect_function(
                    attr, qualname, skip_first=True, cls=cls.__name__, kind="method"
                )
    if not methods:
        raise BuildError(f"{qualname}: a remote class needs at least one public method")
    if any(p.type.has_arrays for p in init.parameters):  # methods then carry arrays too
        methods = {
            name: dataclasses.replace(fn, instance_arrays=True) if fn.has_instance else fn
            for name, fn in methods.items()
        }
    for fn in methods.values():
        for p in fn.parameters:
            if fn.has_instance and p.name == INSTANCE_FIELD:
                raise BuildError(
                    f"{_class_where(cls, p.line)}: in {qualname}.{fn.name}, parameter "
                    f"{INSTANCE_FIELD!r}: the name is reserved for the constructor arguments "
                    "a method call carries; rename the parameter"
                )
    return RemoteClass(cls.__name__, cls.__doc__, init, tuple(methods.values()))


RESERVED_PREFIX = "_dagen"  # the generated client's own names (see dagen._render)
CLIENT_CLASS = "Client"  # the generated client class: no served name may take it


def _check_name(name: str, where: str, what: str) -> None:
    """Refuse the few names the generated client cannot give to the user."""
    if name.startswith(RESERVED_PREFIX):
        raise BuildError(
            f"{where}: the {what} name {name!r} starts with {RESERVED_PREFIX!r}, which is "
            "reserved for the generated client's own names; rename it"
        )
    if name.startswith("__") and name.endswith("__"):
        raise BuildError(
            f"{where}: the {what} name {name!r} is a dunder name, which belongs to Python; "
            "rename it"
        )


def _class_line(cls: type) -> int:
    try:
        return inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return 0


def _class_where(cls: type, line: int = 0) -> str:
    try:
        path = inspect.getsourcefile(cls) or "<unknown>"
        line = line or inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        path = getattr(sys.modules.get(cls.__module__), "__file__", None) or "<unknown>"
    return f"{path}:{line}"


def check_client_names(service: Service, path: str, found_classes: dict[str, type]) -> None:
    """The names the generated client module defines at its top level (the served
    functions and classes, the mirrored data types and ``Client``) must be distinct,
    and may not start with the reserved prefix."""
    seen: dict[str, str] = {}

    def claim(name: str, where: str, what: str) -> None:
        _check_name(name, where, what)
        if name == CLIENT_CLASS:
            raise BuildError(
                f"{where}: the {what} name {name!r} is the name of the generated client "
                f"class ({service.client_package}.Client); rename it"
            )
        if name in seen:
            raise BuildError(
                f"{where}: the {what} name {name!r} is taken by {seen[name]} in the "
                f"generated client {service.client_package}; rename one of them"
            )
        seen[name] = f"{what} ({where})"

    for fn in service.functions:
        claim(fn.name, f"{path}:{fn.line}", "function")
    for c in service.classes:
        claim(c.name, _class_where(found_classes[c.name]), "class")
    for e in service.exceptions:
        claim(e.name, _class_where(found_classes[e.name]), "exception")
    for d in service.definitions():
        cls = getattr(d, "annotation", None)
        if not isinstance(d, ModelNode | EnumNode) or not isinstance(cls, type):
            continue  # not mirrored in the client
        where = _class_where(cls)
        claim(cls.__name__, where, "type")
        if isinstance(d, EnumNode):
            members = list(cls.__members__)  # type: ignore[attr-defined]
        else:
            members = [f.name for f in d.fields]
        for member in members:
            _check_name(member, f"{where}: {cls.__name__}", "field")


def make_service(
    module_name: str,
    doc: str | None,
    functions: Iterable[Function],
    classes: Iterable[RemoteClass] = (),
) -> Service:
    functions = tuple(functions)
    classes = tuple(classes)
    seen: dict[str, str] = {}
    for fn in (*functions, *(m for c in classes for m in c.methods)):
        if fn.rpc in seen:
            raise BuildError(
                f"{module_name}: {seen[fn.rpc]!r} and {fn.key!r} both become rpc {fn.rpc!r}"
            )
        seen[fn.rpc] = fn.key
    if not camel(module_name.rsplit(".", 1)[-1]):
        raise BuildError(f"{module_name}: cannot derive a service name")
    service = Service(module=module_name, doc=doc, functions=functions, classes=classes)
    try:
        service.definitions()
    except UnsupportedType as e:
        raise BuildError(f"{module_name}: {e}") from None
    return service


def introspect_module(module: types.ModuleType) -> Service:
    """The service a module offers: one rpc per public function and class method."""
    found_functions, found_classes, found_exceptions = public_members(module)
    functions = [introspect_function(fn, module.__name__) for fn in found_functions]
    classes = [introspect_class(cls, module.__name__) for cls in found_classes]
    if not functions and not classes:
        raise BuildError(f"module {module.__name__} has no public functions or classes to serve")
    service = dataclasses.replace(
        make_service(module.__name__, module.__doc__, functions, classes),
        exceptions=introspect_exceptions(found_exceptions),
    )
    path = getattr(module, "__file__", None) or module.__name__
    check_client_names(
        service, path, {cls.__name__: cls for cls in (*found_classes, *found_exceptions)}
    )
    return service
