"""The user's names belong to the user (issue 14): every name Python allows in a served
module works in the client with the same spelling, through both client styles; the few
that cannot are refused by `dagen build` with the file, the line and what to rename."""

from __future__ import annotations

import importlib
import itertools
import keyword
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest
from conftest import import_client, start_server
from equivalence import assert_equivalent, call_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagen
from dagen._build import build

NAMES = Path(__file__).parent / "inputs" / "names" / "names.py"


@pytest.fixture(scope="module")
def served(tmp_path_factory, certs):
    out = tmp_path_factory.mktemp("names")
    lock = out / "names.dagen.lock"
    result = build(str(NAMES), out / "build", lock=lock)
    server = start_server(NAMES, "--certs", str(certs.folder), "--lock", str(lock))
    module = import_client(result.client, "names_client")
    yield module, server
    server.stop()


def test_module_level_functions_and_classes_keep_the_users_names(served, certs, clean_env):
    """The module-level style (connected by the environment): parameters called name,
    key, target, self, cls and Client; functions called like dagen's own names."""
    client_module, server = served
    clean_env.setenv("DAGEN_TARGET", server.target)
    clean_env.setenv("DAGEN_CERTS", str(certs.folder))
    clean_env.setenv("DAGEN_IDENTITY", "alice")
    original = sys.modules["names"]
    for key, args, kwargs in original.CASES:
        expected = call_case(original, key, args, kwargs)
        actual = call_case(client_module, key, args, kwargs)  # the mirrors, unbound
        assert_equivalent(actual, expected, f"names.{key}")
    assert client_module.describe(name="n", key="k", target=1) == "n:k:1"
    assert client_module.make(Client="c") == "c made by me"


def test_the_client_exposes_only_the_users_names(served):
    client_module, _ = served
    public = {name for name in dir(client_module.Client) if not name.startswith("_")}
    original = sys.modules["names"]
    assert public == {name for name in original.__all__ if name not in ("Record", "Settings")}
    module_public = {  # (the compiled contract is a submodule, names_pb2)
        name for name, value in vars(client_module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert module_public == {*original.__all__, "Client"}


def test_leaving_with_closes_the_channel_even_when_the_service_has_close(served, certs):
    client_module, server = served
    with client_module.Client(server.target, certs=certs.folder, identity="alice") as c:
        assert c.close() == "closed remotely"  # the served function, not dagen's
        assert c.target() == "the target"
        assert server.target in repr(c)
    with pytest.raises(ValueError, match="closed channel"):
        c.target()  # the channel is closed: nothing reaches the server
    other = client_module.Client(server.target, certs=certs.folder, identity="alice")
    assert other.timeout(1.0) == 2.0
    dagen.close(other)
    with pytest.raises(ValueError, match="closed channel"):
        other.timeout(1.0)


def test_users_can_subclass_the_generated_client(served, certs):
    client_module, server = served

    class Mine(client_module.Client):
        def both(self) -> tuple[str, str]:
            return self.target(), self.describe("x", target=2)

    with Mine(server.target, certs=certs.folder, identity="alice") as mine:
        assert mine.both() == ("the target", "x:k:2")
        assert mine.Shelf("s").close() == "s closed"
        assert mine.__dagen__.identity == "alice"


@pytest.mark.parametrize(
    ("source", "name", "line"),
    [
        ("def Client(x: int) -> int:\n    return x\n", "Client", 1),
        ("class Client:\n    def get(self) -> int:\n        return 1\n", "Client", 1),
        (
            "import dataclasses\n\n@dataclasses.dataclass\nclass Client:\n    x: int = 0\n\n"
            "def use(c: Client) -> int:\n    return c.x\n",
            "Client",
            3,
        ),
        ("__all__ = ['_dagen_x']\n\ndef _dagen_x() -> int:\n    return 1\n", "_dagen_x", 3),
        ("def f(\n    _dagen_y: int,\n) -> int:\n    return 1\n", "_dagen_y", 2),
        (
            "import dataclasses\n\n@dataclasses.dataclass\nclass P:\n    _dagen_z: int = 0\n\n"
            "def use(p: P) -> int:\n    return 1\n",
            "_dagen_z",
            3,
        ),
    ],
    ids=["function-Client", "class-Client", "dataclass-Client", "function-prefix",
         "parameter-prefix", "field-prefix"],
)
def test_names_that_cannot_work_are_refused_at_build(tmp_path, source, name, line):
    module_name = f"refused_{abs(hash(source)) % 10**8}"
    path = tmp_path / f"{module_name}.py"
    path.write_text(source)
    with pytest.raises(dagen.BuildError) as raised:
        build(str(path), tmp_path / "out", lock=tmp_path / "x.lock")
    message = str(raised.value)
    assert f"{path}:{line}" in message, message
    assert repr(name) in message and "rename" in message, message


# -- random names --------------------------------------------------------------------------------

_identifier = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not keyword.iskeyword(n) and not n.startswith("_dagen")
)


def _names(min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    # distinct as proto sees them too (protoc refuses fields whose JSON names meet)
    return st.lists(_identifier, min_size=min_size, max_size=max_size,
                    unique_by=lambda n: n.replace("_", ""))


_counter = itertools.count()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(functions=_names(1, 3), parameters=_names(1, 3), fields=_names(1, 3), data=st.data())
def test_random_names_round_trip(tmp_path_factory, certs, functions, parameters, fields, data):
    """Random identifiers as function, parameter and field names: built, served by
    `dagen serve` over mTLS, called through the client, compared with the module."""
    name = f"random_names_{next(_counter)}"
    folder = tmp_path_factory.mktemp(name)
    field_lines = "\n".join(f"    {f}: _b.int = 0" for f in fields)
    record, *others = parameters
    signature = ", ".join([f"{record}: Rec", *(f"{p}: _b.int" for p in others)])
    body = f"[*_dc.astuple({record}), {', '.join(others)}]" if others else (
        f"[*_dc.astuple({record})]")
    defs = "\n\n".join(
        f"def {fn}({signature}) -> _b.list[_b.int]:\n    return {body}\n" for fn in functions
    )
    source = textwrap.dedent('''\
        import builtins as _b
        import dataclasses as _dc


        @_dc.dataclass
        class Rec:
        {fields}


        {defs}
        ''').format(fields=field_lines, defs=defs)
    path = folder / f"{name}.py"
    path.write_text(source)
    lock = folder / "x.lock"
    result = build(str(path), folder / "build", lock=lock)
    original = sys.modules[name]
    server = start_server(path, "--certs", str(certs.folder), "--lock", str(lock))
    try:
        client_module = import_client(result.client, f"{name}_client")
        values = {f: data.draw(st.integers(-1000, 1000), label=f) for f in fields}
        numbers = [data.draw(st.integers(-1000, 1000)) for _ in others]
        with client_module.Client(server.target, certs=certs.folder, identity="alice") as c:
            for fn in functions:
                kwargs = dict(zip(others, numbers, strict=True))
                expected = getattr(original, fn)(original.Rec(**values), **kwargs)
                actual = getattr(c, fn)(client_module.Rec(**values), **kwargs)
                assert actual == expected, (fn, source)
    finally:
        server.stop()
    assert re.search(rf"def {functions[0]}\(", (result.client / f"{name}_client" /
                                                  "__init__.py").read_text())
    importlib.invalidate_caches()
