"""``dagen build``: a module -> its .proto, compiled modules, server module and client package."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc_tools
from google.protobuf import __version__ as protobuf_version

from ._exceptions import BuildError, ContractError
from ._fingerprint import with_fingerprints
from ._handshake import ContractInfo
from ._introspect import introspect_module, load_module
from ._layout import Contract, lay_out
from ._lock import lock_path_for, read_lock, settle, write_lock
from ._model import Service
from ._render import render_client, render_client_pyproject, render_proto, render_server, write
from ._resources import data_dir
from ._server import Servicer
from ._types import DataFrameNode, SeriesNode, walk
from ._version import __version__
from ._wheelhouse import Wheelhouse, write_wheelhouse

GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")  # what protoc writes, beside our own


def _relative(source_dir: str, out: Path) -> str | None:
    """``source_dir`` relative to ``out``, in POSIX form; None when there is none."""
    if not source_dir:
        return None
    try:
        return Path(os.path.relpath(Path(source_dir).resolve(), out.resolve())).as_posix()
    except ValueError:  # another drive
        return None


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


FORMAT = ("--isolated", "--line-length", "100", "--target-version", "py311")  # ruff format


def format_python(paths: list[Path]) -> None:
    """Format generated code with ruff, with fixed settings (``--isolated``: no project's
    configuration), so that the same model gives the same bytes in any folder."""
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError:
        raise BuildError(
            "dagen build formats the code it generates with ruff: pip install 'dagen-grpc[server]'"
        ) from None
    command = [os.fsdecode(find_ruff_bin()), "format", *FORMAT, "--quiet", *map(str, paths)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"ruff format failed on the generated code:\n{done.stderr.strip()}")


def check_imports(result: BuildResult, roots: list[str]) -> None:
    """Import the generated server module and client package in a fresh interpreter, with
    the build folder (and the folders the served module is imported from) on sys.path:
    an import-time failure is a build error, not the visitor's."""
    service = result.service
    # absolute: the check runs in the build folder, where a relative -o means nothing
    paths = [str(Path(p).resolve()) for p in (str(result.out), str(result.client), *roots)]
    code = (
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
        f"import {service.package}_server\n"
        + (f"import {service.client_package}\n" if result.client.exists() else "")
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        cwd=result.out,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise BuildError(
            f"the generated code in {result.out} does not import: {lines[-1]}\n"
            f"(python -c 'import {service.package}_server, {service.client_package}' "
            "with the build folder on sys.path shows the whole traceback)"
        )


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
    """Write everything for ``service`` into ``out``; number fields from the lock.

    ``source_dir`` is the folder of the served module: the server module looks there
    (as a path relative to itself, so that the output does not depend on the folder
    it is built in) when the module is not on ``sys.path``.
    """
    lock = read_lock(lock_path) if lock_path else None
    contract = settle(with_fingerprints(lay_out(service, lock)), lock, allow_breaking=allow_breaking)
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
    write(server, render_server(service, contract, __version__, _relative(source_dir, out)))
    generated = [server, *(out / f"{package}{suffix}" for suffix in GENERATED)]
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
            extra_dependencies=(["pydantic>=2"] if needs_pydantic else [])
            + (["pandas>=2"] if _uses_pandas(service) else []),
        ))
        for suffix in ("_pb2.py", "_pb2.pyi"):
            shutil.copy(out / f"{package}{suffix}", code / f"{package}{suffix}")
        grpc_module = (out / f"{package}_pb2_grpc.py").read_text()
        write(code / f"{package}_pb2_grpc.py", _grpc_relative(grpc_module, package))
        shutil.copy(proto, code / proto.name)
        write(code / "py.typed", "")
        generated += [code / "__init__.py", *(code / f"{package}{suffix}" for suffix in GENERATED)]
    format_python(generated)
    if lock_path and write_lock_file:
        write_lock(lock_path, contract)
    return BuildResult(service, contract, out, proto, server, project, lock_path)


def _uses_pandas(service: Service) -> bool:
    """Whether a call sends or returns a pandas object (the client then depends on pandas
    by name, not only through xarray)."""
    return any(
        isinstance(node, DataFrameNode | SeriesNode)
        for root in service.type_roots()
        for node in walk(root)
    )


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
    # the folder the module is imported from (a package's parent for a dotted name)
    roots = [str(Path(source_dir).parents[mod.__name__.count(".") - 1])] if (
        source_dir and "." in mod.__name__) else [source_dir]
    check_imports(result, [r for r in roots if r])
    if not wheels:
        return result
    return dataclasses.replace(result, wheelhouse=write_wheelhouse(out / "wheels", result.client))


def build_servicer(module: str, lock: str | Path | None = None) -> type[Servicer]:
    """The servicer ``dagen serve MODULE`` serves: ``module`` built as ``dagen build``
    builds it, with the contract of its lock file (only read here), in a temporary
    folder that is gone once the compiled messages are imported (whatever happens)."""
    mod = load_module(module)
    service = introspect_module(mod)
    with tempfile.TemporaryDirectory(prefix="dagen-serve-") as folder:
        out = Path(folder)
        lock_path = Path(lock) if lock else lock_path_for(mod.__file__, out, service.package)
        result = build_service(service, out, str(Path(mod.__file__ or ".").parent), client=False,
                               lock_path=lock_path, write_lock_file=False)
        sys.path.insert(0, folder)
        try:
            pb2 = importlib.import_module(f"{service.package}_pb2")
        finally:
            sys.path.remove(folder)
    c = result.contract
    contract = ContractInfo(c.revision, c.fingerprints, c.accepted)
    return type(f"{service.name}Servicer", (Servicer,), {}, module=mod, pb2=pb2,
                contract=contract)
