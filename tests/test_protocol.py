"""The short paths of tiny calls (plain scalars in and out) against the general ones:
the same messages, the same arguments, the same errors."""

from __future__ import annotations

import pytest

from dagen._arrays import NO_ARRAYS, EncodeContext
from dagen._wire import WireError

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
    return echo_client_module.Client.methods


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
    np = pytest.importorskip("numpy")
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
