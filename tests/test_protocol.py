"""The short paths of tiny calls (plain scalars in and out) against the general ones:
the same messages, the same arguments, the same errors."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import textwrap

import numpy as np
import pytest

from dagen._arrays import NO_ARRAYS, EncodeContext
from dagen._build import build_service
from dagen._introspect import introspect_module, load_module
from dagen._protocol import Method
from dagen._wire import WireError

KINDS = textwrap.dedent('''
    """Functions of every kind of argument and result the short paths must tell apart."""
    import datetime as dt
    import enum
    from typing import Annotated

    import pydantic


    class Color(enum.Enum):
        RED = "red"
        BLUE = "blue"


    def plain(b: bool, i: int, f: float, s: str, raw: bytes) -> str:
        """Every plain scalar."""
        return s


    def defaults(a: int, b: int = 5) -> int:
        """A default."""
        return a + b


    def color(c: Color) -> Color:
        """An enum."""
        return c


    def maybe(x: int | None) -> int | None:
        """Optional."""
        return x


    def when(t: dt.datetime) -> dt.datetime:
        """A datetime."""
        return t


    def positive(x: Annotated[int, pydantic.Field(gt=0)]) -> int:
        """A constraint, checked on the server."""
        return x


    def nothing() -> None:
        """No result."""
''')

PLAIN = {  # functions of tests/services/echo_service.py whose arguments are plain scalars
    "add": {"a": 2, "b": -3},
    "sleep": {"seconds": 0.25},
    "fail": {"kind": "value"},
}
NOT_PLAIN = {  # an optional argument; a keyword-only one
    "scalars": {"b": True, "i": 1, "f": 2.5, "s": "x", "raw": b"\0", "maybe": None},
    "positional": {"a": 1, "b": 2, "c": 4},
}


@pytest.fixture(scope="module")
def methods(echo_client_module):
    return echo_client_module.Client.__dagen_spec__.methods


@pytest.mark.parametrize("name", [*PLAIN, *NOT_PLAIN])
def test_requests_are_the_same_with_and_without_the_short_path(methods, name):
    method = methods[name]
    arguments = {**PLAIN, **NOT_PLAIN}[name]
    short = method.encode_request(arguments)  # no EncodeContext: the short path if plain
    general = method.encode_request(arguments, EncodeContext())
    assert short.SerializeToString(deterministic=True) == general.SerializeToString(
        deterministic=True)


@pytest.mark.parametrize("name", list(PLAIN))
def test_plain_arguments_are_what_decoding_gives(methods, name):
    method = methods[name]
    request = method.request_cls.FromString(
        method.encode_request(PLAIN[name]).SerializeToString())
    args, kwargs = method.decode_request(request, NO_ARRAYS)
    assert method.plain_arguments(request) == (*args, *kwargs.values())
    assert method.plain_arguments(request) == tuple(PLAIN[name].values())


@pytest.mark.parametrize("name", list(NOT_PLAIN))
def test_arguments_that_are_not_plain_take_the_general_path(methods, name):
    method = methods[name]
    request = method.encode_request(NOT_PLAIN[name])
    assert method.plain_arguments(request) is None


def test_a_missing_argument_takes_the_general_path_and_is_refused(methods):
    method = methods["add"]
    request = method.request_cls(a=1)  # b was not sent (a stock client may do that)
    assert method.plain_arguments(request) is None
    with pytest.raises(WireError, match="required argument 'b' was not sent"):
        method.decode_request(request, NO_ARRAYS)


@pytest.mark.parametrize("value, problem", [
    ("1", "expected int, got str"),
    (True, "expected int, got bool"),
    (2**63, "does not fit in 64 bits"),
])
def test_an_argument_that_does_not_fit_is_named(methods, value, problem):
    with pytest.raises(TypeError, match=rf"add\(\): argument 'b'.*{problem}"):
        methods["add"].encode_request({"a": 1, "b": value})


def test_numpy_integers_go_as_ints(methods):
    request = methods["add"].encode_request({"a": np.int32(7), "b": np.uint8(3)})
    assert (request.a, request.b) == (7, 3)


def test_a_plain_result_is_the_message_the_general_path_makes(methods):
    method = methods["add"]
    general = method.response_cls()
    method.fn.returns.encode(5, general, "result", EncodeContext())
    assert method.encode_response(5) == general
    assert method.decode_response(method.encode_response(5), NO_ARRAYS) == 5


@pytest.mark.parametrize("value", ["5", 5.0, True, 2**64])
def test_a_plain_result_that_does_not_match_its_annotation_is_refused(methods, value):
    with pytest.raises(TypeError, match=r"add\(\) returned a value that does not match"):
        methods["add"].encode_response(value)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """The Methods of KINDS, from its compiled contract."""
    folder = tmp_path_factory.mktemp("kinds")
    (folder / "kinds_service.py").write_text(KINDS)
    module = load_module(str(folder / "kinds_service.py"))
    service = introspect_module(module)
    out = folder / "build"
    build_service(service, out, "", client=False, lock_path=folder / "lock",
                  write_lock_file=False)
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("kinds_service_pb2")
    finally:
        sys.path.remove(str(out))
    return module, {fn.key: Method(service, fn, pb2) for fn in service.rpcs}


CASES = [  # function, arguments, whether they take the short path on the server
    ("plain", {"b": True, "i": -7, "f": 0.5, "s": "é", "raw": b"\0\1"}, True),
    ("plain", {"b": np.bool_(False), "i": np.int16(3), "f": np.float32(1.5), "s": "",
               "raw": b""}, True),
    ("defaults", {"a": 1, "b": 2}, True),
    ("color", {"c": "Color.BLUE"}, False),
    ("maybe", {"x": None}, False),
    ("maybe", {"x": 3}, False),
    ("when", {"t": dt.datetime(2026, 11, 28, 1, 2, 3)}, False),
    ("positive", {"x": 4}, False),
    ("nothing", {}, True),
]


def _arguments(module, arguments):
    return {k: getattr(module.Color, v.split(".")[1]) if isinstance(v, str) and
            v.startswith("Color.") else v for k, v in arguments.items()}


@pytest.mark.parametrize("name, arguments, short", CASES)
def test_every_kind_gives_the_same_request_and_arguments_on_either_path(
    kinds, name, arguments, short
):
    module, methods = kinds
    method = methods[name]
    arguments = _arguments(module, arguments)
    request = method.encode_request(arguments)
    general = method.encode_request(arguments, EncodeContext())
    assert request.SerializeToString(deterministic=True) == general.SerializeToString(
        deterministic=True)
    received = method.request_cls.FromString(request.SerializeToString())
    args, kwargs = method.decode_request(received, NO_ARRAYS)
    plain = method.plain_arguments(received)
    assert (plain is not None) == short
    if short:
        assert plain == (*args, *kwargs.values())
    assert getattr(module, name)(*args, **kwargs) == getattr(module, name)(**arguments)


def test_a_missing_argument_with_a_default_gets_it(kinds):
    _, methods = kinds
    request = methods["defaults"].request_cls(a=1)  # built before b was added
    assert methods["defaults"].plain_arguments(request) is None
    assert methods["defaults"].decode_request(request, NO_ARRAYS) == ([], {"a": 1, "b": 5})


def test_a_constraint_is_checked_though_the_argument_is_a_plain_int(kinds):
    _, methods = kinds
    request = methods["positive"].encode_request({"x": -1})  # the wire carries an int
    assert methods["positive"].plain_arguments(request) is None  # not the short path
    with pytest.raises(ValueError, match="argument 'x'"):
        methods["positive"].decode_request(request, NO_ARRAYS)


@pytest.mark.parametrize("name, value", [
    ("plain", "s"), ("defaults", 3), ("color", "Color.RED"), ("maybe", None), ("maybe", 2),
    ("when", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), ("positive", 1), ("nothing", None),
])
def test_every_kind_of_result_comes_back_as_the_general_path_makes_it(kinds, name, value):
    module, methods = kinds
    method = methods[name]
    value = _arguments(module, {"v": value})["v"]
    general = method.response_cls()
    method.fn.returns.encode(value, general, "result", EncodeContext())
    response = method.encode_response(value)
    assert response.SerializeToString(deterministic=True) == general.SerializeToString(
        deterministic=True)
    received = method.response_cls.FromString(response.SerializeToString())
    assert method.decode_response(received, NO_ARRAYS) == value


def test_leaving_out_the_encode_context_of_a_function_with_arrays_is_an_error(methods):
    with pytest.raises(ValueError, match=r"echo\(\) sends arrays"):
        methods["echo"].encode_request({"da": None})
    with pytest.raises(ValueError, match=r"echo\(\) returns arrays"):
        methods["echo"].encode_response(None)


def test_a_node_with_its_own_check_lets_no_value_skip_it():
    """A value of exactly its field's type skips check() (protobuf refuses what does not
    fit); a subclass with a check() of its own gets no such short cut unless it says so."""
    from dagen._types import IntNode

    class EvenNode(IntNode):
        def check(self, value):
            if value % 2:
                raise ValueError("odd")
            return value

    assert IntNode.exact is int
    assert EvenNode.exact is None
