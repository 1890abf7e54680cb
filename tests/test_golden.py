"""One folder per feature under tests/inputs/ (as betterproto does): an input module,
the .proto it must produce, and round trips of its CASES through a real server.

Each folder also holds the expected generated code, `expected_client.py` (the client
package's __init__.py) and `expected_server.py`. Set DAGEN_REGENERATE=1 (or
DAGEN_UPDATE_GOLDEN=1) to rewrite the expected files after a deliberate change.
"""

import importlib
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import import_client, start_server
from equivalence import assert_equivalent, call_case

import dagen
from dagen._build import build

INPUTS = Path(__file__).parent / "inputs"
FEATURES = sorted(p.name for p in INPUTS.iterdir() if (p / f"{p.name}.py").is_file())
UPDATE = "1" in (os.environ.get("DAGEN_UPDATE_GOLDEN"), os.environ.get("DAGEN_REGENERATE"))


def _body(proto: str) -> str:
    # Without the first line, which names the dagen version.
    return proto.split("\n", 1)[1]


@pytest.fixture(scope="module", params=FEATURES)
def feature(request, tmp_path_factory, certs):
    name = request.param
    source = INPUTS / name / f"{name}.py"
    out = tmp_path_factory.mktemp(f"golden-{name}")
    lock = out / f"{name}.dagen.lock"  # keep the inputs folder clean
    result = build(str(source), out / "build", lock=lock)
    original = sys.modules[name]
    server = start_server(source, "--certs", str(certs.folder), "--lock", str(lock))
    client_module = import_client(result.client, f"{name}_client")
    client = client_module.Client(server.target, certs=certs.folder, identity="alice", timeout=60)
    yield name, result, original, client
    dagen.close(client)
    server.stop()


def test_proto_matches_the_golden_file(feature):
    name, result, _, _ = feature
    expected = INPUTS / name / "expected.proto"
    produced = result.proto.read_text()
    if UPDATE:
        expected.write_text(produced)
    assert expected.exists(), f"{expected} is missing: make it with DAGEN_UPDATE_GOLDEN=1"
    assert _body(produced) == _body(expected.read_text())


def _generated(result, name):
    """The generated client and server modules, without their first line (which names
    the dagen version) and with the server's path to the module's folder (which depends
    on where the build went) left out."""
    client = (result.client / f"{name}_client" / "__init__.py").read_text()
    server = re.sub(r'(?m)^SOURCE_FOLDER = .*$', 'SOURCE_FOLDER = "..."', result.server.read_text())
    return {"expected_client.py": client, "expected_server.py": server}


def test_generated_code_matches_the_golden_files(feature):
    name, result, _, _ = feature
    for filename, produced in _generated(result, name).items():
        expected = INPUTS / name / filename
        if UPDATE:
            expected.write_text(produced)
        assert expected.exists(), f"{expected} is missing: make it with DAGEN_REGENERATE=1"
        assert _body(produced) == _body(expected.read_text()), filename


def test_cases_round_trip_through_a_real_server(feature):
    name, _, original, client = feature
    for key, args, kwargs in original.CASES:
        expected = call_case(original, key, args, kwargs)
        actual = call_case(client, key, args, kwargs)
        if hasattr(expected, "__next__"):  # generators: the items, in order
            expected, actual = list(expected), list(actual)
        assert_equivalent(actual, expected, f"{name}.{key}{args!r:.60}")


def test_client_mirrors_keep_names_signatures_and_docs(feature):
    import inspect

    name, result, original, client = feature
    client_module = importlib.import_module(f"{name}_client")
    for export in original.__all__:
        theirs, ours = getattr(original, export), getattr(client_module, export)
        # (a dataclass without docstring gets one naming its fields' types: mirrors' differ)
        assert (ours.__doc__ or "").replace(f"{name}_client.", f"{name}.") == (theirs.__doc__ or ""), export
        if inspect.isfunction(theirs):
            assert _text(ours, name) == _text(theirs, name), export
        elif not isinstance(theirs, type) or not hasattr(theirs, "__mro__"):
            continue
        for attr in vars(theirs):
            if attr.startswith("_") and attr != "__init__" or not callable(getattr(theirs, attr)):
                continue
            mine, original_attr = getattr(ours, attr), getattr(theirs, attr)
            # instance methods: the first parameter (self; the mirror's _dagen_self) aside
            skip = inspect.isfunction(original_attr)
            assert _text(mine, name, skip) == _text(original_attr, name, skip), f"{export}.{attr}"
            assert mine.__doc__ == getattr(theirs, attr).__doc__, f"{export}.{attr}"


def _text(fn, module, skip_first=False):
    """A signature as text, mirrors named like the originals they stand for, and
    Annotated[T, constraints] as T: non-literal constraints (pydantic's Field(gt=0))
    stay on the server, which validates them."""
    import inspect
    import typing

    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    parameters = list(sig.parameters.values())[1 if skip_first else 0 :]
    sig = sig.replace(
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in parameters],
        return_annotation=hints.get("return", sig.return_annotation),
    )
    return str(sig).replace(f"{module}_client.", f"{module}.")
