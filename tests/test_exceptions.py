"""Exceptions keep their identity: the served module's public exceptions are mirrored in
the client package and raised as the mirrors; built-in exceptions arrive as themselves,
with their arguments, under every executor."""

import inspect

import pytest
from conftest import SERVICES, import_client, start_server

import dagen
from dagen._build import build


@pytest.fixture(scope="module")
def errors_client_module(tmp_path_factory):
    result = build(str(SERVICES / "errors_service.py"), tmp_path_factory.mktemp("errors-build"))
    return import_client(result.client, "errors_service_client")


@pytest.fixture(scope="module", params=["thread", "process"])
def remote(request, errors_client_module, certs):
    server = start_server(SERVICES / "errors_service.py", "--certs", str(certs.folder),
                          "--executor", request.param)
    try:
        with errors_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                         timeout=60) as client:
            yield client
    finally:
        server.stop()


def test_mirrors_have_the_names_bases_and_docstrings(errors_client_module):
    import errors_service as served  # the build imported it

    m = errors_client_module
    for name in ("DataError", "RegionError", "UnknownStation", "LookupFailed"):
        assert name in m.__all__
        assert inspect.getdoc(getattr(m, name)) == inspect.getdoc(getattr(served, name))
    assert m.RegionError.__bases__ == (m.DataError, ValueError)
    assert m.DataError.__bases__ == (Exception,)
    assert m.UnknownStation.__bases__ == (KeyError,)  # its private base stands for its bases
    assert not hasattr(m, "OtherLibraryError")  # not public


def test_a_served_exception_arrives_as_its_mirror(remote, errors_client_module):
    m = errors_client_module
    with pytest.raises(m.RegionError) as info:
        remote.fail("region")
    assert type(info.value) is m.RegionError
    assert str(info.value) == "lat 95 is outside -90..90"
    assert any("fail()" in note for note in info.value.__notes__)
    for kind, catch in (("region", ValueError), ("region", m.DataError), ("data", m.DataError),
                        ("station", KeyError), ("station", m.UnknownStation)):
        with pytest.raises(catch):
            remote.fail(kind)


def test_a_constructor_with_other_arguments_keeps_its_type(remote, errors_client_module):
    # LookupFailed(key, where): it used to arrive as the TypeError of calling it with one
    # argument (under the process executor, the server rebuilt it that way).
    with pytest.raises(errors_client_module.LookupFailed) as info:
        remote.fail("lookup")
    assert isinstance(info.value, KeyError)
    assert "t2m not found in era-interim" in str(info.value)


def test_an_exception_without_a_mirror_is_caught_as_its_builtin_base(remote):
    with pytest.raises(ValueError) as info:
        remote.fail("other")
    assert isinstance(info.value, dagen.RemoteError)
    assert info.value.type_name == "errors_service.OtherLibraryError"
    assert info.value.message == "merge conflict"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("key", KeyError("k")),
        ("key-int", KeyError(1)),
        ("key-tuple", KeyError("a", "b")),
        ("key-empty", KeyError()),
        ("dict", KeyError("missing key")),
        ("os", FileNotFoundError(2, "No such file or directory", "/data/x.nc")),
        ("unicode", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")),
        ("plain", Exception("plain")),
    ],
)
def test_builtin_exceptions_arrive_as_themselves(remote, kind, expected):
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is what is checked
        remote.fail(kind)
    assert type(info.value) is type(expected)
    assert info.value.args == expected.args
    assert str(info.value) == str(expected)
    if isinstance(expected, OSError):
        assert (info.value.errno, info.value.filename) == (2, "/data/x.nc")
