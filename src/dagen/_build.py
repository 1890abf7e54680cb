"""``dagen build``: a module -> its .proto, compiled modules, server module and client package."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc_tools
from google.protobuf import __version__ as protobuf_version

from ._contract import (
    Contract,
    ContractError,
    build_contract,
    lock_path_for,
    read_lock,
    settle,
    write_lock,
)
from ._introspect import BuildError, introspect_module, load_module
from ._model import Service
from ._render import render_client, render_client_pyproject, render_proto, render_server, write
from ._resources import data_dir
from ._version import __version__
from ._wheelhouse import Wheelhouse, write_wheelhouse


@dataclass(frozen=True)
class BuildResult:
    service: Service
    contract: Contract
    out: Path
    proto: Path
    server: Path
    client: Path  # the client package's project folder (pip install it)
    lock: Path | None
    wheelhouse: Wheelhouse | None = None  # the client's and the runtime's wheels


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


def build_service(
    service: Service,
    out: Path,
    source_dir: str,
    *,
    lock_path: Path | None = None,
    allow_breaking: bool = False,
    client: bool = True,
    write_lock_file: bool = True,
) -> BuildResult:
    """Write everything for ``service`` into ``out``; number fields from the lock."""
    lock = read_lock(lock_path) if lock_path else None
    contract = settle(build_contract(service, lock), lock, allow_breaking=allow_breaking)
    out.mkdir(parents=True, exist_ok=True)
    package = service.package
    proto = out / f"{package}.proto"
    write(proto, render_proto(contract, __version__))
    # The contract imports dagen/v1/*.proto: put them beside it, so that the build
    # folder alone is all a client in another language needs (protoc -I build).
    protos = out / "dagen" / "v1"
    protos.mkdir(parents=True, exist_ok=True)
    for source in (data_dir("protos") / "dagen" / "v1").glob("*.proto"):
        shutil.copy(source, protos / source.name)
    compile_proto(proto, out)
    server = out / f"{package}_server.py"
    write(server, render_server(service, contract, __version__, source_dir))
    project = out / service.client_package
    if client:
        if project.exists():
            shutil.rmtree(project)
        code = project / service.client_package
        init, needs_pydantic = render_client(service, contract, __version__)
        compile(init, str(code / "__init__.py"), "exec")  # a template bug fails the build, not the user
        write(code / "__init__.py", init)
        write(project / "pyproject.toml", render_client_pyproject(
            service, version=__version__,
            client_version=f"{__version__}+r{contract.revision}",
            # the _pb2_grpc module checks grpcio against the grpcio-tools that wrote it
            grpc_version=importlib.metadata.version("grpcio-tools"),
            protobuf_version=protobuf_version,
            extra_dependencies=["pydantic>=2"] if needs_pydantic else [],
        ))
        for suffix in ("_pb2.py", "_pb2.pyi"):
            shutil.copy(out / f"{package}{suffix}", code / f"{package}{suffix}")
        grpc_module = (out / f"{package}_pb2_grpc.py").read_text()
        write(code / f"{package}_pb2_grpc.py", _grpc_relative(grpc_module, package))
        shutil.copy(proto, code / proto.name)
        write(code / "py.typed", "")
    if lock_path and write_lock_file:
        write_lock(lock_path, contract)
    return BuildResult(service, contract, out, proto, server, project, lock_path)


def build(module: str, out: str | Path, *, allow_breaking: bool = False,
          lock: str | Path | None = None, wheels: bool = True) -> BuildResult:
    """Build everything for ``module`` (a file path or an importable name) into ``out``.

    The lock file goes next to the module's source unless ``lock`` names another path.
    With ``wheels``, ``out/wheels`` gets the client's wheel and the dagen runtime's: the
    visitor's ``pip install --find-links out/wheels <module>_client``.
    """
    mod = load_module(module)
    service = introspect_module(mod)
    out = Path(out)
    lock_path = Path(lock) if lock else lock_path_for(mod.__file__, out, service.package)
    source_dir = str(Path(mod.__file__).resolve().parent) if mod.__file__ else ""
    try:
        result = build_service(service, out, source_dir, lock_path=lock_path,
                               allow_breaking=allow_breaking)
    except ContractError as e:
        raise BuildError(str(e)) from None
    if not wheels:
        return result
    return dataclasses.replace(result, wheelhouse=write_wheelhouse(out / "wheels", result.client))
