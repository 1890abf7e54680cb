"""The runtime (client and server) needs none of the build-time dependencies.

docstring_parser, jinja2 and grpcio-tools are needed only by ``dagen build`` (and
click only by the command line): an installed client, or a server started from its
generated module, must import with them missing. Each case imports in a fresh
interpreter where those packages are blocked (``sys.modules[name] = None`` makes
any import of them fail), and then checks that none of dagen's build-time modules
was loaded either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BUILD_PACKAGES = ("docstring_parser", "jinja2", "grpc_tools")
BUILD_MODULES = (
    "dagen._build",
    "dagen._render",
    "dagen._layout",
    "dagen._fingerprint",
    "dagen._lock",
    "dagen._docstrings",
)

SCRIPT = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
sys.path[:0] = {path!r}
for module in {modules!r}:
    __import__(module)
print(json.dumps(sorted(m for m in {build_modules!r} if m in sys.modules)))
"""


def import_blocked(modules: list[str], blocked: tuple[str, ...], path: list[str] = ()) -> list[str]:
    """Import ``modules`` in a fresh interpreter with ``blocked`` packages missing; the
    build-time dagen modules that got loaded (the import must succeed)."""
    script = SCRIPT.format(
        blocked=list(blocked), path=list(path), modules=modules,
        build_modules=[*BUILD_MODULES, "dagen._cli"] if "click" in blocked else list(BUILD_MODULES),
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_blocking_works():
    """(The check itself: a module that needs a blocked package fails to import.)"""
    script = SCRIPT.format(blocked=["jinja2"], path=[], modules=["dagen._render"],
                           build_modules=[])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode != 0 and "jinja2" in done.stderr


def test_client_runtime_needs_no_build_dependencies():
    assert import_blocked(["dagen.client"], (*BUILD_PACKAGES, "click")) == []


def test_server_runtime_needs_no_build_dependencies():
    assert import_blocked(["dagen.server"], BUILD_PACKAGES) == []


def test_server_runtime_needs_no_click():
    assert import_blocked(["dagen.server"], (*BUILD_PACKAGES, "click")) == []


def test_generated_client_imports_without_build_dependencies(ocean_build):
    """The installed client package, as a visitor has it."""
    loaded = import_blocked(["ocean_tools_client"], (*BUILD_PACKAGES, "click"),
                            [str(ocean_build.client)])
    assert loaded == []


def test_generated_server_imports_without_build_dependencies(ocean_build):
    """The generated server module: it imports the served module and dagen.server."""
    loaded = import_blocked(["ocean_tools_server"], BUILD_PACKAGES,
                            [str(Path(ocean_build.server).parent)])
    assert loaded == []
