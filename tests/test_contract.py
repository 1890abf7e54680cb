"""The lock file keeps the contract stable: compatible changes keep old clients working,
breaking ones stop the build, and an old client meets a clear version error."""

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import start_server

from dagen._build import build
from dagen._introspect import BuildError

V1 = '''
import enum

class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"

def scale(x: float, factor: float = 2.0) -> float:
    """Scale x."""
    return x * factor

def offset(x: float, mode: Mode = Mode.FAST) -> float:
    """Offset x."""
    return x + 1
'''


def write(folder, source):
    path = folder / "tool.py"
    path.write_text(textwrap.dedent(source))
    sys.modules.pop("tool", None)  # a new version of the module each time
    return path


def lock_of(module):
    return json.loads(module.with_name("tool.dagen.lock").read_text())


def fields(lock, message):
    return {name: entry["number"] for name, entry in lock["messages"][message]["fields"].items()}


def test_first_build_writes_the_lock_next_to_the_module(tmp_path):
    module = write(tmp_path, V1)
    result = build(str(module), tmp_path / "out")
    assert result.lock == module.with_name("tool.dagen.lock")
    lock = lock_of(module)
    assert lock["revision"] == 1
    assert fields(lock, "ScaleRequest") == {"x": 1, "factor": 2}
    assert lock["enums"]["Mode"]["values"] == {"MODE_FAST": 1, "MODE_EXACT": 2}
    rebuilt = build(str(module), tmp_path / "out")  # nothing changed: same revision
    assert rebuilt.contract.revision == 1


def test_adding_a_parameter_with_a_default_is_compatible_and_keeps_numbers(tmp_path):
    module = write(tmp_path, V1)
    first = build(str(module), tmp_path / "out")
    # Reordered parameters, a new one with a default, a new function, a new enum value.
    write(tmp_path, V1.replace("def scale(x: float, factor: float = 2.0)",
                               "def scale(factor: float = 2.0, bias: float = 0.0, *, x: float)")
          .replace('EXACT = "exact"', 'EXACT = "exact"\n    ROUGH = "rough"')
          + "\ndef square(x: float) -> float:\n    return x * x\n")
    second = build(str(module), tmp_path / "out")
    lock = lock_of(module)
    assert second.contract.revision == 2
    assert fields(lock, "ScaleRequest") == {"x": 1, "factor": 2, "bias": 3}
    assert lock["enums"]["Mode"]["values"] == {"MODE_FAST": 1, "MODE_EXACT": 2, "MODE_ROUGH": 3}
    old, new = first.contract.fingerprints["Scale"], second.contract.fingerprints["Scale"]
    assert old != new
    assert second.contract.accepted["Scale"] == (old, new)  # old clients still served
    proto = second.proto.read_text()
    assert "optional double bias = 3;" in proto


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.replace(", factor: float = 2.0", ""), "parameter 'factor' of scale() was removed"),
        (lambda s: s.replace("x: float, factor", "x: str, factor"),
         "parameter 'x' of scale() changed type from double to string"),
        (lambda s: s.replace("x: float, factor", "x: float, bias: float, factor"),
         "parameter 'bias' of scale() was added without a default"),
        (lambda s: s[: s.index("def offset")], "offset() was removed (rpc Offset)"),
        (lambda s: s.replace('    EXACT = "exact"\n', ""), "enum Mode lost its value MODE_EXACT"),
    ],
)
def test_breaking_changes_are_refused_with_what_breaks(tmp_path, change, expected):
    module = write(tmp_path, V1)
    build(str(module), tmp_path / "out")
    before = module.with_name("tool.dagen.lock").read_text()
    write(tmp_path, change(V1))
    with pytest.raises(BuildError) as info:
        build(str(module), tmp_path / "out")
    assert expected in str(info.value)
    assert "--allow-breaking" in str(info.value)
    assert module.with_name("tool.dagen.lock").read_text() == before  # lock untouched
    forced = build(str(module), tmp_path / "out", allow_breaking=True)
    assert forced.contract.revision == 2


def test_removed_field_numbers_are_reserved_and_never_reused(tmp_path):
    module = write(tmp_path, V1)
    build(str(module), tmp_path / "out")
    write(tmp_path, V1.replace(", factor: float = 2.0", ""))
    build(str(module), tmp_path / "out", allow_breaking=True)
    write(tmp_path, V1.replace(", factor: float = 2.0", ", gain: float = 1.0"))
    result = build(str(module), tmp_path / "out")
    assert fields(lock_of(module), "ScaleRequest") == {"x": 1, "gain": 3}
    assert "reserved 2;" in result.proto.read_text()


def test_cli_refuses_a_breaking_build(tmp_path):
    module = write(tmp_path, V1)
    dagen = [sys.executable, "-m", "dagen._cli", "build", str(module), "-o", str(tmp_path / "out")]
    assert subprocess.run(dagen, capture_output=True).returncode == 0
    write(tmp_path, V1.replace(", factor: float = 2.0", ""))
    done = subprocess.run(dagen, capture_output=True, text=True)
    assert done.returncode != 0
    assert "parameter 'factor' of scale() was removed" in done.stderr
    assert subprocess.run([*dagen, "--allow-breaking"], capture_output=True).returncode == 0


OLD_CLIENT = """
import sys
sys.path.insert(0, sys.argv[1])
import tool_client
client = tool_client.Client(sys.argv[2], certs=sys.argv[3], identity="alice", timeout=30)
for call in (lambda: client.scale(3.0), lambda: client.offset(1.0)):
    try:
        print("ok", call())
    except Exception as e:
        print(type(e).__name__, e)
"""


def old_client_calls(client_project, server, certs):
    done = subprocess.run(
        [sys.executable, "-c", OLD_CLIENT, str(client_project), server.target, str(certs.folder)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_old_client_against_new_servers(tmp_path, certs):
    module = write(tmp_path, V1)
    v1 = build(str(module), tmp_path / "v1")

    # A compatible change: the old client keeps working, and the server uses the new
    # parameter's default for it.
    write(tmp_path, V1.replace("factor: float = 2.0)", "factor: float = 2.0, bias: float = 0.5)")
          .replace("return x * factor", "return x * factor + bias"))
    build(str(module), tmp_path / "v2")
    server = start_server(module, "--certs", str(certs.folder))
    try:
        assert old_client_calls(v1.client, server, certs) == ["ok 6.5", "ok 2.0"]
    finally:
        server.stop()

    # A breaking change: a clear error naming both revisions, for the changed call only.
    write(tmp_path, V1.replace(", factor: float = 2.0", "").replace("x * factor", "x * 2"))
    build(str(module), tmp_path / "v3", allow_breaking=True)
    server = start_server(module, "--certs", str(certs.folder))
    try:
        scale, offset = old_client_calls(v1.client, server, certs)
    finally:
        server.stop()
    assert scale.startswith("ContractMismatch scale(): this client was built from revision 1")
    assert "the server runs revision 3" in scale
    assert "Ask the service's provider for the current client" in scale
    assert offset == "ok 2.0"


def test_newer_client_against_an_older_server_says_so(tmp_path, certs):
    module = write(tmp_path, V1)
    build(str(module), tmp_path / "v1")
    server = start_server(module, "--certs", str(certs.folder))  # serves revision 1
    try:
        write(tmp_path, V1.replace("factor: float = 2.0)", "factor: float = 2.0, bias: float = 0.5)"))
        v2 = build(str(module), tmp_path / "v2")  # compatible for old clients, not for old servers
        scale, offset = old_client_calls(v2.client, server, certs)
    finally:
        server.stop()
    assert scale.startswith("ContractMismatch scale(): this client is newer than the server")
    assert "built from revision 2" in scale and "still runs revision 1" in scale
    assert "Ask the service's provider for the client of revision 1" in scale
    assert "redeploy the server" in scale
    assert "changed this call incompatibly" not in scale and "Rebuild" not in scale
    assert offset == "ok 2.0"


DICTS = '''
def per_level(levels: dict[str, float]) -> dict[str, float]:
    """Means by level."""
    return levels
'''


def test_a_lock_of_dicts_as_maps_accepts_their_ordered_entries(tmp_path):
    """Dicts were map<K, V> fields; they are now repeated entries, the same bytes on the
    wire: a lock written when they were maps sees no break, the numbers stay."""
    module = write(tmp_path, DICTS)
    build(str(module), tmp_path / "out")
    lock_file = module.with_name("tool.dagen.lock")
    lock = json.loads(lock_file.read_text())
    for message in ("PerLevelRequest", "PerLevelResponse"):
        for entry in lock["messages"][message]["fields"].values():
            assert entry["type"] == "repeated DoubleMapEntry"
            entry["type"] = "map<string, double>"  # as an older dagen wrote it
    del lock["messages"]["DoubleMapEntry"]
    lock_file.write_text(json.dumps(lock))
    rebuilt = build(str(module), tmp_path / "out")
    assert fields(lock_of(module), "PerLevelRequest") == {"levels": 1}
    assert "repeated DoubleMapEntry levels = 1;" in rebuilt.proto.read_text()
    write(tmp_path, DICTS.replace("levels: dict[str, float]", "levels: dict[str, int]"))
    with pytest.raises(BuildError, match="changed type from repeated DoubleMapEntry to repeated Int64MapEntry"):
        build(str(module), tmp_path / "out")


LITERALS = '''
from typing import Literal

def pick(how: Literal["fast", "exact"] = "fast") -> str:
    """Echo the choice."""
    return how
'''


def test_a_value_added_to_a_literal_is_compatible(tmp_path, certs):
    module = write(tmp_path, LITERALS)
    v1 = build(str(module), tmp_path / "v1")
    # inserted in the middle: the old values keep their numbers
    write(tmp_path, LITERALS.replace('["fast", "exact"]', '["fast", "rough", "exact"]'))
    v2 = build(str(module), tmp_path / "v2")
    assert v2.contract.revision == 2
    values = lock_of(module)["enums"]["LiteralFastRoughExact"]["values"]
    assert values == {"LITERAL_FAST_ROUGH_EXACT_FAST": 1, "LITERAL_FAST_ROUGH_EXACT_EXACT": 2,
                      "LITERAL_FAST_ROUGH_EXACT_ROUGH": 3}
    assert v2.contract.accepted["Pick"] == (v1.contract.fingerprints["Pick"],
                                            v2.contract.fingerprints["Pick"])
    server = start_server(module, "--certs", str(certs.folder))
    try:
        done = subprocess.run(
            [sys.executable, "-c", LITERAL_CLIENT, str(v1.client), server.target, str(certs.folder)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["exact", "fast"]  # the old client's "exact" still means exact
    # a value removed still breaks
    write(tmp_path, LITERALS.replace('["fast", "exact"]', '["fast", "rough"]'))
    with pytest.raises(BuildError, match="changed type from LiteralFastRoughExact to LiteralFastRough\n"):
        build(str(module), tmp_path / "v3")


LITERAL_CLIENT = """
import sys
sys.path.insert(0, sys.argv[1])
from tool_client import Client
with Client(sys.argv[2], certs=sys.argv[3], identity="alice") as c:
    print(c.pick("exact"))
    print(c.pick())
"""
