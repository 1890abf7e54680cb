"""``dagen build``: a module -> its .proto, compiled modules, server module and client package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc_tools
from google.protobuf import __version__ as protobuf_version

from ._introspect import BuildError, introspect_module, load_module
from ._model import Service
from ._render import render_client, render_client_pyproject, render_proto, render_server, write
from ._resources import data_dir
from ._version import __version__


@dataclass(frozen=True)
class BuildResult:
    service: Service
    out: Path
    proto: Path
    server: Path
    client: Path  # the client package's project folder (pip install it)


def compile_proto(proto: Path, out: Path) -> None:
    """Run grpcio-tools' protoc on ``proto`` (which sits in ``out``): no system protoc."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{out}",
        f"-I{data_dir('protos')}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(proto),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"protoc failed on {proto}:\n{done.stderr.strip()}")


def _grpc_relative(text: str, package: str) -> str:
    """Inside a package, ``import x_pb2`` must be ``from . import x_pb2``."""
    return re.sub(rf"^import {package}_pb2 as", f"from . import {package}_pb2 as", text, flags=re.M)


def _client_version(proto_text: str) -> str:
    """Changes with the contract, so pip reinstalls a client built from another one."""
    import hashlib

    return f"{__version__}+contract.{hashlib.sha256(proto_text.encode()).hexdigest()[:12]}"


def build_service(
    service: Service, out: Path, source_dir: str, *, client: bool = True
) -> BuildResult:
    out.mkdir(parents=True, exist_ok=True)
    package = service.package
    proto_text = render_proto(service, __version__)
    proto = out / f"{package}.proto"
    write(proto, proto_text)
    compile_proto(proto, out)
    server = out / f"{package}_server.py"
    write(server, render_server(service, __version__, source_dir))
    project = out / service.client_package
    if client:
        if project.exists():
            shutil.rmtree(project)
        code = project / service.client_package
        write(
            project / "pyproject.toml",
            render_client_pyproject(
                service,
                version=__version__,
                client_version=_client_version(proto_text),
                grpc_version=grpc.__version__,
                protobuf_version=protobuf_version,
            ),
        )
        init = render_client(service, __version__)
        compile(
            init, str(code / "__init__.py"), "exec"
        )  # a template bug fails the build, not the user
        write(code / "__init__.py", init)
        for suffix in ("_pb2.py", "_pb2.pyi"):
            shutil.copy(out / f"{package}{suffix}", code / f"{package}{suffix}")
        grpc_module = (out / f"{package}_pb2_grpc.py").read_text()
        write(code / f"{package}_pb2_grpc.py", _grpc_relative(grpc_module, package))
        shutil.copy(proto, code / proto.name)
        write(code / "py.typed", "")
    return BuildResult(service, out, proto, server, project)


def build(module: str, out: str | Path) -> BuildResult:
    """Build everything for ``module`` (a file path or an importable name) into ``out``."""
    mod = load_module(module)
    service = introspect_module(mod)
    source_dir = str(Path(mod.__file__).resolve().parent) if mod.__file__ else ""
    return build_service(service, Path(out), source_dir)
