"""The type mapping: annotations -> nodes -> proto fields, and values through real messages."""

from __future__ import annotations

import importlib
import math
import re
import sys
import typing
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import xarray as xr
from xarray.testing import assert_identical

from dagen._arrays import DecodeContext, EncodeContext, allocate_arrays
from dagen._build import compile_proto
from dagen._protocol import receive, send
from dagen._sink import ArraySink
from dagen._types import (
    EncodeError,
    IntNode,
    NoneNode,
    ProtoField,
    UnsupportedType,
    WrapperNode,
    type_node,
    walk,
)
from dagen._wire import (
    ChunkIn,
    Limits,
    WireError,
    frame_deserializer,
    frame_serializer,
)
from dagen._xarray import fill_dataarray, read_dataarray, read_value, write_value
from dagen.v1 import value_pb2, xarray_pb2

# Every annotation the codec tests use, as the parameters of one function `f`.
FIELDS: dict[str, typing.Any] = {
    "b": bool,
    "i": int,
    "f": float,
    "s": str,
    "raw": bytes,
    "oi": int | None,
    "of": typing.Optional[float],  # noqa: UP045 - the typing spelling is what is tested
    "li": list[int],
    "lf": list[float],
    "lb": list[bool],
    "ls": list[str],
    "lraw": list[bytes],
    "di": dict[str, int],
    "lli": list[list[int]],
    "dlf": dict[str, list[float]],
    "loi": list[int | None],
    "ols": list[str] | None,
    "doi": dict[str, int | None],
    "ldi": list[dict[str, int]],
    "arr": np.ndarray,
    "farr": npt.NDArray[np.float64],
    "oarr": np.ndarray | None,
    "larr": list[np.ndarray],
    "darr": dict[str, np.ndarray],
    "da": xr.DataArray,
    "oda": xr.DataArray | None,
    "lda": list[xr.DataArray],
}
NODES = {name: type_node(annotation) for name, annotation in FIELDS.items()}


# The messages `dagen build` would generate for `def f(<FIELDS>) -> None`. The codecs
# address fields by name only, so wrapper message names here need not match the renderer's.
TEST_PROTO = """\
syntax = "proto3";
package dagen_types_test;
import "dagen/v1/array.proto";
import "dagen/v1/xarray.proto";

message FRequest {
  bool b = 1;
  int64 i = 2;
  double f = 3;
  string s = 4;
  bytes raw = 5;
  optional int64 oi = 6;
  optional double of = 7;
  repeated int64 li = 8;
  repeated double lf = 9;
  repeated bool lb = 10;
  repeated string ls = 11;
  repeated bytes lraw = 12;
  repeated Int64MapEntry di = 13;
  repeated Int64ListValue lli = 14;
  repeated DoubleListValueMapEntry dlf = 15;
  repeated OptionalInt64Value loi = 16;
  StringListValue ols = 17;
  repeated OptionalInt64ValueMapEntry doi = 18;
  repeated Int64MapValue ldi = 19;
  dagen.v1.NDArray arr = 20;
  dagen.v1.NDArray farr = 21;
  dagen.v1.NDArray oarr = 22;
  repeated dagen.v1.NDArray larr = 23;
  repeated NDArrayMapEntry darr = 24;
  dagen.v1.DataArray da = 25;
  dagen.v1.DataArray oda = 26;
  repeated dagen.v1.DataArray lda = 27;
}
message FInput { oneof frame { FRequest request = 1; dagen.v1.Chunk chunk = 2; } }
message Int64ListValue { repeated int64 value = 1; }
message DoubleListValue { repeated double value = 1; }
message OptionalInt64Value { optional int64 value = 1; }
message StringListValue { repeated string value = 1; }
message Int64MapValue { repeated Int64MapEntry value = 1; }
message Int64MapEntry { string key = 1; int64 value = 2; }
message DoubleListValueMapEntry { string key = 1; DoubleListValue value = 2; }
message OptionalInt64ValueMapEntry { string key = 1; OptionalInt64Value value = 2; }
message NDArrayMapEntry { string key = 1; dagen.v1.NDArray value = 2; }
"""


@pytest.fixture(scope="module")
def pb2(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("types-proto")
    proto = folder / "dagen_types_test.proto"
    proto.write_text(TEST_PROTO)
    compile_proto(proto, folder)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("dagen_types_test_pb2")
    finally:
        sys.path.remove(str(folder))


def test_the_test_messages_declare_fields_as_nodes_render_them(pb2):
    scalar_types = {"int64": "TYPE_INT64", "double": "TYPE_DOUBLE", "bool": "TYPE_BOOL",
                    "string": "TYPE_STRING", "bytes": "TYPE_BYTES"}
    for name, node in NODES.items():
        field = pb2.FRequest.DESCRIPTOR.fields_by_name[name]
        rendered = node.proto_field()
        if rendered.type.startswith("map<"):
            assert field.message_type.GetOptions().map_entry, name
            continue
        assert field.is_repeated == (rendered.label == "repeated"), name
        if field.message_type is not None:
            assert field.message_type.name == rendered.type.rsplit(".", 1)[-1], name
        else:
            assert field.type == getattr(field, scalar_types[rendered.type]), name
            assert field.has_presence == (rendered.label == "optional"), name


def roundtrip(pb2, name: str, value: typing.Any, chunk_bytes: int = 64) -> typing.Any:
    """Encode into the request message, send it and its chunks as frames, receive, decode."""
    node = NODES[name]
    ctx = EncodeContext(chunk_bytes)
    request = pb2.FRequest()
    node.encode(value, request, name, ctx)
    frames = [frame_serializer(f) for f in send(pb2.FInput, "request", request, ctx)]
    deserialize = frame_deserializer(pb2.FInput)
    message, dctx = receive((deserialize(f) for f in frames), "request", Limits())
    return node.decode(message, name, dctx)


def encode_error(pb2, name: str, value: typing.Any) -> EncodeError:
    with pytest.raises(EncodeError) as info:
        NODES[name].encode(value, pb2.FRequest(), name, EncodeContext())
    return info.value


# -- annotations -> nodes ------------------------------------------------------------------------


def describe(node) -> typing.Any:
    """A node's structure: its class, and what it holds."""
    for attribute in ("inner", "item", "value"):
        child = getattr(node, attribute, None)
        if child is not None:
            return (type(node).__name__, describe(child))
    return type(node).__name__


@pytest.mark.parametrize(
    "annotation, expected",
    [
        (bool, "BoolNode"),
        (int, "IntNode"),
        (float, "FloatNode"),
        (str, "StrNode"),
        (bytes, "BytesNode"),
        (int | None, ("OptionalNode", "IntNode")),
        (typing.Optional[str], ("OptionalNode", "StrNode")),  # noqa: UP045
        (None | float, ("OptionalNode", "FloatNode")),
        (list[int], ("ListNode", "IntNode")),
        (typing.List[int], ("ListNode", "IntNode")),  # noqa: UP006
        (dict[str, float], ("DictNode", "FloatNode")),
        (list[list[int]], ("ListNode", ("WrapperNode", ("ListNode", "IntNode")))),
        (dict[str, list[float]], ("DictNode", ("WrapperNode", ("ListNode", "FloatNode")))),
        (list[int | None], ("ListNode", ("WrapperNode", ("OptionalNode", "IntNode")))),
        (list[str] | None, ("OptionalNode", ("WrapperNode", ("ListNode", "StrNode")))),
        (np.ndarray, "NDArrayNode"),
        (npt.NDArray[np.float64], "NDArrayNode"),
        (xr.DataArray, "DataArrayNode"),
        (np.ndarray | None, ("OptionalNode", "NDArrayNode")),
        (list[xr.DataArray], ("ListNode", "DataArrayNode")),
    ],
)
def test_type_node(annotation, expected):
    node = type_node(annotation)
    assert describe(node) == expected
    assert node.annotation == annotation


def test_type_node_makes_equal_nodes_for_equal_annotations():
    assert type_node(int) == IntNode()
    assert type_node(list[list[int]]) == type_node(list[list[int]])
    assert type_node(list[int]) != type_node(list[float])


@pytest.mark.parametrize("annotation", [None, type(None)])
def test_none_is_a_return_type(annotation):
    assert type_node(annotation, is_return=True) == NoneNode()


@pytest.mark.parametrize(
    "annotation, match",
    [
        (list, "bare list needs its item types"),
        (dict, "bare dict needs its item types"),
        (typing.List, "list needs an item type"),  # noqa: UP006
        (list[int, str], "list needs an item type"),
        (complex, "not a supported type"),
        (object, "not a supported type"),
        (typing.Any, "not a supported type"),
        (pd.Index, "not a supported type"),
        (dict[float, str], "dict keys must be str"),
        (list[complex], "not a supported type"),
        (dict[str, pd.Categorical], "not a supported type"),
        (None, "None is only supported as a return annotation"),
        (type(None), "None is only supported as a return annotation"),
    ],
)
def test_unsupported_annotations(annotation, match):
    with pytest.raises(UnsupportedType, match=match):
        type_node(annotation)


def test_has_arrays():
    assert NODES["larr"].has_arrays
    assert NODES["darr"].has_arrays
    assert NODES["oda"].has_arrays
    assert NODES["farr"].has_arrays
    assert not NODES["lli"].has_arrays
    assert not NODES["doi"].has_arrays
    assert not NoneNode().has_arrays


# -- proto fields --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotation, expected",
    [
        (bool, ProtoField("bool")),
        (int, ProtoField("int64")),
        (float, ProtoField("double")),
        (str, ProtoField("string")),
        (bytes, ProtoField("bytes")),
        (int | None, ProtoField("int64", "optional")),
        (typing.Optional[bytes], ProtoField("bytes", "optional")),  # noqa: UP045
        (list[float], ProtoField("double", "repeated")),
        (dict[str, int], ProtoField("Int64MapEntry", "repeated")),
        (dict[str, bytes], ProtoField("BytesMapEntry", "repeated")),
        (list[list[int]], ProtoField("Int64ListValue", "repeated")),
        (list[list[list[str]]], ProtoField("StringListValueListValue", "repeated")),
        (dict[str, list[float]], ProtoField("DoubleListValueMapEntry", "repeated")),
        (list[int | None], ProtoField("OptionalInt64Value", "repeated")),
        (dict[str, int | None], ProtoField("OptionalInt64ValueMapEntry", "repeated")),
        (list[dict[str, int]], ProtoField("Int64MapValue", "repeated")),
        (list[str] | None, ProtoField("StringListValue")),  # a message field has presence
        (np.ndarray, ProtoField("dagen.v1.NDArray")),
        (npt.NDArray[np.int8], ProtoField("dagen.v1.NDArray")),
        (np.ndarray | None, ProtoField("dagen.v1.NDArray")),
        (list[np.ndarray], ProtoField("dagen.v1.NDArray", "repeated")),
        (dict[str, np.ndarray], ProtoField("NDArrayMapEntry", "repeated")),
        (xr.DataArray, ProtoField("dagen.v1.DataArray")),
        (list[list[xr.DataArray]], ProtoField("DataArrayListValue", "repeated")),
    ],
)
def test_proto_field(annotation, expected):
    assert type_node(annotation).proto_field() == expected


def test_each_known_message_imports_the_file_that_declares_it():
    """A node names the .proto files its field needs (the contract imports those): each
    known message's file declares that message, and nodes of the user's types need none."""
    import grpc_tools

    from dagen._resources import data_dir
    from dagen._types import KNOWN

    roots = [data_dir("protos"), Path(grpc_tools.__file__).parent / "_proto"]
    for python_type, make in KNOWN.items():
        node = make()
        package, _, message = node.proto_field().type.rpartition(".")
        declared = [
            path for path in node.proto_imports for root in roots if (root / path).is_file()
            and f"package {package};" in (text := (root / path).read_text())
            and re.search(rf"^message {message} {{", text, re.M)
        ]
        assert declared, f"{python_type}: no file in {node.proto_imports} declares {message}"
    assert type_node(dict[str, list[int] | None]).proto_imports == ()
    assert type_node(typing.Literal["a", "b"]).proto_imports == ()


def test_wrapper_messages_hold_their_node():
    node = type_node(dict[str, list[int] | None]).value
    assert isinstance(node, WrapperNode)
    assert node.definition_name == "OptionalInt64ListValueValue"
    assert node.inner.proto_field() == ProtoField("Int64ListValue")
    assert {w.definition_name for w in walk(node) if isinstance(w, WrapperNode)} == {
        "OptionalInt64ListValueValue",
        "Int64ListValue",
    }


def test_wrapper_message_names_are_unique_per_structure():
    # A service's wrapper messages are collected by name: two structures with one name
    # would share one message, and one of them could not be encoded at all.
    annotations = [
        list[list[int] | None],
        list[list[int | None]],
        dict[str, list[int] | None],
        dict[str, list[int | None]],
        list[list[int]],
        list[dict[str, int]],
        list[dict[str, int] | None],
        list[dict[str, int | None]],
        dict[str, list[list[float]]],
    ]
    fields: dict[str, set[ProtoField]] = {}
    for annotation in annotations:
        for node in walk(type_node(annotation)):
            if isinstance(node, WrapperNode):
                fields.setdefault(node.definition_name, set()).add(node.inner.proto_field())
    clashes = {name: found for name, found in fields.items() if len(found) > 1}
    assert not clashes


# -- values through messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("b", True, True),
        ("b", False, False),
        ("b", np.bool_(True), True),
        ("i", 0, 0),
        ("i", -(2**63), -(2**63)),
        ("i", 2**63 - 1, 2**63 - 1),
        ("i", np.int32(-5), -5),
        ("i", np.uint64(2**63 - 1), 2**63 - 1),
        ("f", 1.5, 1.5),
        ("f", 3, 3.0),
        ("f", float("inf"), float("inf")),
        ("f", np.float32(0.1), float(np.float32(0.1))),
        ("f", np.float64(2.5), 2.5),
        ("f", np.int16(7), 7.0),
        ("s", "", ""),
        ("s", "héllo 𝄞", "héllo 𝄞"),
        ("s", np.str_("np"), "np"),
        ("raw", b"\x00\xff", b"\x00\xff"),
        ("raw", bytearray(b"ab"), b"ab"),
    ],
)
def test_scalars_roundtrip(pb2, name, value, expected):
    out = roundtrip(pb2, name, value)
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    "name, value",
    [
        ("oi", None),
        ("oi", 0),  # present, though it is the default
        ("of", None),
        ("of", 0.0),
        ("li", []),
        ("li", [1, -2, 2**63 - 1]),
        ("lf", [0.5, 2.0]),
        ("lb", [True, False]),
        ("ls", ["", "a"]),
        ("lraw", [b"", b"\x00"]),
        ("di", {}),
        ("di", {"a": 1, "": 0}),
        ("lli", [[], [1, 2], [3]]),
        ("dlf", {"x": [], "y": [1.5, 2.0]}),
        ("loi", [None, 0, 7, None]),
        ("ols", None),
        ("ols", []),  # an empty list is not None
        ("ols", ["a", "b"]),
        ("doi", {"none": None, "zero": 0}),
        ("ldi", [{}, {"a": 1}]),
    ],
)
def test_containers_and_optionals_roundtrip(pb2, name, value):
    assert roundtrip(pb2, name, value) == value


def test_tuples_go_as_lists(pb2):
    assert roundtrip(pb2, "li", (1, 2)) == [1, 2]
    assert roundtrip(pb2, "lli", ((1,), [2, 3])) == [[1], [2, 3]]


def test_lists_of_floats_accept_numpy_scalars(pb2):
    out = roundtrip(pb2, "lf", [np.float32(0.5), np.int64(2), 3])
    assert out == [0.5, 2.0, 3.0]
    assert all(type(v) is float for v in out)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("i", True, "expected int, got bool"),
        ("i", np.bool_(False), "expected int, got numpy.bool"),
        ("i", 1.0, "expected int, got float"),
        ("i", "1", "expected int, got str"),
        ("i", None, "expected int, got NoneType"),
        ("i", 2**63, "int 9223372036854775808 does not fit in 64 bits"),
        ("i", -(2**63) - 1, "int -9223372036854775809 does not fit in 64 bits"),
        ("i", np.uint64(2**63), "int 9223372036854775808 does not fit in 64 bits"),
        ("f", True, "expected float, got bool"),
        ("f", np.bool_(True), "expected float, got numpy.bool"),
        ("f", "1.0", "expected float, got str"),
        ("f", 1j, "expected float, got complex"),
        ("f", np.complex64(1), "expected float, got numpy.complex64"),
        ("b", 1, "expected bool, got int"),
        ("s", b"x", "expected str, got bytes"),
        ("raw", "x", "expected bytes, got str"),
        ("raw", memoryview(b"x"), "expected bytes, got memoryview"),
        ("li", 3, "expected list, got int"),
        ("li", {1, 2}, "expected list, got set"),
        ("di", [("a", 1)], "expected dict, got list"),
        ("arr", [1.0, 2.0], "expected numpy.ndarray, got list"),
        ("da", np.zeros(2), "expected xarray.DataArray, got numpy.ndarray"),
    ],
)
def test_values_that_do_not_match_are_refused(pb2, name, value, message):
    error = encode_error(pb2, name, value)
    assert error.message == message
    assert error.path == ""
    assert str(error) == message


@pytest.mark.parametrize(
    "name, value, path, message",
    [
        ("li", [1, 2, "x"], "[2]", "expected int, got str"),
        ("li", [1, True], "[1]", "expected int, got bool"),
        ("lf", [0.5, None], "[1]", "expected float, got NoneType"),
        ("di", {"a": 1, "k": "v"}, "['k']", "expected int, got str"),
        ("lli", [[1], [2, 3.0]], "[1][1]", "expected int, got float"),
        ("lli", [[1], 2], "[1]", "expected list, got int"),
        ("dlf", {"a": [1.0, "x"]}, "['a'][1]", "expected float, got str"),
        ("loi", [None, "x"], "[1]", "expected int, got str"),
        ("doi", {"a": None, "b": 2**64}, "['b']", "int 18446744073709551616 does not fit in 64 bits"),
        ("ldi", [{}, {"a": 1, "b": 1.5}], "[1]['b']", "expected int, got float"),
        ("larr", [np.zeros(1), "a"], "[1]", "expected numpy.ndarray, got str"),
        ("darr", {"x": np.zeros(1), "y": 1}, "['y']", "expected numpy.ndarray, got int"),
        ("lda", [xr.DataArray(1), np.zeros(1)], "[1]", "expected xarray.DataArray, got numpy.ndarray"),
    ],
)
def test_refusals_name_the_path(pb2, name, value, path, message):
    error = encode_error(pb2, name, value)
    assert (error.path, error.message) == (path, message)


def test_dict_keys_of_the_wrong_type_are_refused(pb2):
    error = encode_error(pb2, "di", {"a": 1, 2: 1})
    assert re.search(r"dict key.*\bstr\b.*\bint\b", error.message), error.message
    with pytest.raises(EncodeError) as info:
        NODES["ldi"].encode([{}, {3: 1}], pb2.FRequest(), "ldi", EncodeContext())
    assert info.value.path == "[1]"


def test_floats_too_large_for_a_double_are_refused(pb2):
    # As ints beyond 64 bits are: an EncodeError (with its path), not an OverflowError.
    error = encode_error(pb2, "lf", [1.0, 10**400])
    assert error.path == "[1]"


def test_none_node_accepts_only_none():
    NoneNode().encode(None, None, "result", EncodeContext())
    with pytest.raises(EncodeError, match="expected None, got int"):
        NoneNode().encode(0, None, "result", EncodeContext())
    assert NoneNode().decode(None, "result", None) is None


# -- numpy arrays --------------------------------------------------------------------------------


def assert_same_array(actual, expected):
    assert type(actual) is np.ndarray
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(3, 4),
        np.arange(60, dtype=">i2").reshape(3, 4, 5)[:, ::2, ::-1],
        np.array(3.5, dtype="<f4"),
        np.zeros((0, 3)),
        np.array(["a", "bcd", "€"]),
        np.array([b"x", b"yz"]),
        np.array(["2000-01-01", "NaT"], dtype="M8[ns]"),
        np.array([True, False]),
    ],
    ids=["2-d", "strided-big-endian", "0-d", "empty", "str", "bytes", "datetime", "bool"],
)
def test_ndarrays_roundtrip(pb2, array):
    assert_same_array(roundtrip(pb2, "arr", array), array)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["a", "bcd", ""], dtype=object),
        np.array([["x"], ["yy"]], dtype=object),
        np.array("0-d", dtype=object),
        np.array([], dtype=object),
    ],
    ids=["1-d", "2-d", "0-d", "empty"],
)
def test_object_arrays_of_str_come_back_as_object_arrays(pb2, array):
    out = roundtrip(pb2, "arr", array)
    assert_same_array(out, array)
    assert all(type(v) is str for v in out.reshape(-1))


def test_object_arrays_of_str_with_trailing_nul_characters_are_refused(pb2):
    # numpy's fixed-width strings, which carry str arrays, would silently drop them.
    array = np.array(["a\x00", "b"], dtype=object)
    with pytest.raises(TypeError, match="ending in NUL characters cannot be sent"):
        roundtrip(pb2, "arr", array)


def test_object_arrays_of_other_objects_are_refused(pb2):
    with pytest.raises(TypeError, match="object arrays cannot be sent.*found int 1"):
        roundtrip(pb2, "arr", np.array(["a", 1], dtype=object))


def test_ndarray_annotation_dtype_is_not_enforced(pb2):
    assert_same_array(roundtrip(pb2, "farr", np.arange(3)), np.arange(3))


def test_arrays_inside_containers_roundtrip(pb2):
    a, b = np.arange(10.0), np.array([[1, 2], [3, 4]], dtype="u1")
    out = roundtrip(pb2, "larr", [a, b, a])
    assert len(out) == 3
    for actual, expected in zip(out, [a, b, a], strict=True):
        assert_same_array(actual, expected)
    assert out[0] is not out[2]
    out = roundtrip(pb2, "darr", {"a": a, "b": b})
    assert set(out) == {"a", "b"}
    assert_same_array(out["a"], a)
    assert_same_array(out["b"], b)
    assert roundtrip(pb2, "oarr", None) is None
    assert_same_array(roundtrip(pb2, "oarr", b), b)


# -- attribute values ----------------------------------------------------------------------------


def assert_same_value(actual, expected):
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, np.ndarray | np.generic):
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same_value(a, e)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same_value(actual[key], expected[key])
    else:
        assert actual == expected


def value_roundtrip(value):
    m = value_pb2.Value()
    write_value(value, m)
    return read_value(value_pb2.Value.FromString(m.SerializeToString()))


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "units: m s-1",
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        float("inf"),
        True,
        False,
        b"\x00\xff",
        [],
        (),
        {},
        [1, "a", None, 2.5, True, b"x", [False]],
        (1, 2),
        ("a", (3,), [4]),
        {"b": 1, "a": {"c": [1, (2,)]}},
        np.float32(1.5),
        np.float64(0.1),
        np.int16(-3),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.complex64(1 + 2j),
        np.datetime64("2000-01-01T00:00", "ns"),
        np.timedelta64(5, "s"),
        np.str_("héllo"),
        np.bytes_(b"ab"),
        np.array([1, 2], dtype=">i2"),
        np.arange(6.0).reshape(2, 3).T,
        np.array(3.0),  # a 0-d array stays an array, not a scalar
        np.array(["a", "bcd"]),
        np.array([], dtype="<f4"),
        [np.float32(1), (np.int8(2),)],
    ],
    ids=repr,
)
def test_attribute_values_roundtrip_with_their_type(value):
    assert_same_value(value_roundtrip(value), value)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.array([1, None], dtype=object), "arrays of dtype object cannot be sent"),
        (np.zeros(2, dtype="i4,f8"), "cannot be sent"),
        (np.zeros(2**18), "too large"),
        (object(), "values of type object cannot be sent"),
        ({1, 2}, "values of type set cannot be sent"),
        (1j, "values of type complex cannot be sent"),
        ([1, object()], "values of type object cannot be sent"),
        ({1: "a"}, "dict keys in attributes must be str"),
        (2**63, "does not fit in 64 bits"),
    ],
)
def test_unsupported_attribute_values_are_refused(value, match):
    with pytest.raises(TypeError, match=match):
        write_value(value, value_pb2.Value())


# -- DataArrays ----------------------------------------------------------------------------------


def assert_same_dataarray(actual: xr.DataArray, expected: xr.DataArray) -> None:
    assert_identical(actual, expected)
    assert actual.dtype == expected.dtype
    assert list(actual.coords) == list(expected.coords)
    for name in expected.coords:
        assert actual[name].dtype == expected[name].dtype, name
        assert actual[name].attrs == expected[name].attrs, name
    assert list(actual.xindexes) == list(expected.xindexes)


def _dataarrays() -> dict[str, xr.DataArray]:
    data = np.arange(12.0).reshape(3, 4)
    return {
        "datetime-and-string-coords": xr.DataArray(
            data,
            dims=("time", "station"),
            coords={
                "time": np.array(["2000-01-01", "2000-01-02", "NaT"], dtype="M8[ns]"),
                "station": ["a", "bb", "ccc", "€"],
            },
            name="temperature",
            attrs={"units": "K", "valid_range": np.array([0.0, 400.0], dtype="f4")},
        ),
        "2-d-coords": xr.DataArray(
            data,
            dims=("y", "x"),
            coords={
                "lat": (("y", "x"), np.linspace(-1, 1, 12).reshape(3, 4), {"units": "deg"}),
                "lon": (("x", "y"), np.arange(12, dtype=">f4").reshape(4, 3)),
            },
        ),
        "scalar-coords": xr.DataArray(
            [1, 2],
            dims="x",
            coords={
                "height": 2.0,
                "label": "surface",
                "when": np.datetime64("2000-01-01", "s"),
            },
            name="",
        ),
        "object-str-coords": xr.DataArray(
            np.array(["p", "q", "r"], dtype=object),
            dims="x",
            coords={
                "x": np.array(["a", "b", "c"], dtype=object),
                "tag": ("x", np.array(["t", "", "uu"], dtype=object)),
            },
        ),
        "coord-attrs": xr.DataArray(
            [1.0, 2.0],
            dims="depth",
            coords={"depth": ("depth", [10, 20], {"units": "m", "positive": "down", "n": 2})},
            attrs={"history": ("made", "here"), "flags": [np.int8(1), None]},
            name="profile",
        ),
        "0-d": xr.DataArray(np.float32(3.5), name="scalar"),
        "empty": xr.DataArray(np.zeros((0, 2)), dims=("a", "b"), coords={"b": ["u", "v"]}),
        "timedelta-and-bool": xr.DataArray(
            np.array([True, False]),
            dims="lag",
            coords={"lag": np.array([1, 2], dtype="m8[s]")},
        ),
        "non-index-dimension": xr.DataArray(
            np.arange(6).reshape(2, 3), dims=("a", "b"), coords={"c": ("b", [3, 2, 1])}
        ),
    }


DATAARRAYS = _dataarrays()


@pytest.mark.parametrize("name", DATAARRAYS)
def test_dataarrays_roundtrip(pb2, name):
    da = DATAARRAYS[name]
    assert_same_dataarray(roundtrip(pb2, "da", da), da)


def test_dataarray_name_none_and_empty_differ(pb2):
    assert roundtrip(pb2, "da", xr.DataArray([1])).name is None
    assert roundtrip(pb2, "da", xr.DataArray([1], name="")).name == ""


def test_dataarrays_inside_containers_roundtrip(pb2):
    das = list(DATAARRAYS.values())[:3]
    for actual, expected in zip(roundtrip(pb2, "lda", das), das, strict=True):
        assert_same_dataarray(actual, expected)
    assert roundtrip(pb2, "oda", None) is None


def test_large_dataarrays_roundtrip_in_many_chunks(pb2):
    da = xr.DataArray(
        np.random.default_rng(0).standard_normal((40, 30)),
        dims=("y", "x"),
        coords={"y": np.arange(40), "x": pd.date_range("2000", periods=30, unit="ns")},
    )
    assert_same_dataarray(roundtrip(pb2, "da", da, chunk_bytes=100), da)


def test_multiindex_coordinates_are_refused(pb2):
    da = xr.DataArray(
        np.zeros((2, 3)), dims=("a", "b"), coords={"a": [1, 2], "b": [3, 4, 5]}
    ).stack(z=("a", "b"))
    with pytest.raises(TypeError, match="coordinate 'z' is a MultiIndex"):
        NODES["da"].encode(da, pb2.FRequest(), "da", EncodeContext())


@pytest.mark.parametrize(
    "da, match",
    [
        (xr.DataArray([1, 2], dims=[0]), "dimension names of the DataArray must be str to be sent, got int 0"),
        (xr.DataArray([1, 2], dims="x", name=1), "the DataArray's name must be str to be sent, got int 1"),
        (
            xr.DataArray([1, 2], dims="x", coords={("a", 1): ("x", [1, 2])}),
            "coordinate names must be str to be sent, got tuple",
        ),
        (
            xr.DataArray([1, 2], dims="x", attrs={1: "a"}),
            "attribute names of the DataArray must be str to be sent, got int 1",
        ),
        (
            xr.DataArray([1, 2], dims="x", coords={"x": ("x", [1, 2], {"bad": object()})}),
            "attribute 'bad' of coordinate 'x': values of type object cannot be sent",
        ),
        (
            xr.DataArray([1, 2], dims="x", coords={"c": ("x", np.array([1, "a"], dtype=object))}),
            "object arrays cannot be sent",
        ),
    ],
    ids=["dim", "name", "coord-name", "attr-name", "attr-value", "object-coord"],
)
def test_dataarrays_with_unsendable_parts_are_refused(pb2, da, match):
    with pytest.raises(TypeError, match=match):
        NODES["da"].encode(da, pb2.FRequest(), "da", EncodeContext())


def test_dataarray_chunks_cover_every_array_once(pb2):
    da = DATAARRAYS["2-d-coords"]
    ctx = EncodeContext(chunk_bytes=16)
    request = pb2.FRequest()
    NODES["da"].encode(da, request, "da", ctx)
    assert len(ctx.arrays) == 3  # the data and two coordinates
    assert ctx.nbytes == da.nbytes + da.lat.nbytes + da.lon.nbytes
    sizes: dict[int, int] = {}
    for chunk in ctx.chunks():
        sizes[chunk.array_id] = sizes.get(chunk.array_id, 0) + math.prod(chunk.shape)
    assert sizes == {1: 12, 2: 12, 3: 12}


def transmit_dataarray(da: xr.DataArray, edit=None) -> xr.DataArray:
    """fill_dataarray -> bytes -> parse (``edit`` may tamper) -> chunks -> read_dataarray."""
    ctx = EncodeContext(chunk_bytes=32)
    sent = xarray_pb2.DataArray()
    fill_dataarray(da, sent, ctx)
    received = xarray_pb2.DataArray.FromString(sent.SerializeToString())
    if edit is not None:
        edit(received)
    sink = ArraySink()
    allocate_arrays(received, sink)
    for chunk in ctx.chunks():
        sink.write(ChunkIn(chunk.array_id, chunk.start, chunk.shape, memoryview(chunk.data)))
    sink.finish()
    return read_dataarray(received, DecodeContext(sink.arrays))


@pytest.mark.parametrize("name", ["datetime-and-string-coords", "object-str-coords", "0-d"])
def test_dataarray_messages_roundtrip(name):
    da = DATAARRAYS[name]
    assert_same_dataarray(transmit_dataarray(da), da)


def test_a_variable_whose_dims_disagree_with_its_data_is_refused():
    da = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"))
    with pytest.raises(WireError, match=r"variable has dims \['y'\] but 2-d data"):
        transmit_dataarray(da, edit=lambda m: m.variable.dims.pop())


def test_a_coordinate_that_does_not_fit_the_data_is_refused():
    da = xr.DataArray(np.zeros(3), dims="x", coords={"c": ("x", [1, 2, 3])})
    with pytest.raises(WireError, match="inconsistent DataArray"):
        transmit_dataarray(da, edit=lambda m: m.coords[0].variable.dims.__setitem__(0, "y"))
