"""The wheelhouse that ``dagen build`` writes beside the client package.

It holds the client's wheel and the dagen runtime's (the dagen-grpc distribution), so
that a visitor installs with one command and no access to the data owner's files::

    pip install --find-links build/wheels <module>_client

Both wheels are written here directly (a zip with its dist-info, as PEP 427 says):
no build backend, no network, a few milliseconds. The runtime's wheel is made from
the dagen that runs the build: a source checkout or editable install (its
pyproject.toml says the metadata and which folders the wheel takes in), or an
installed wheel of dagen-grpc (its dist-info says the metadata).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._version import __version__

DISTRIBUTION = "dagen-grpc"
_PACKAGE = Path(__file__).resolve().parent  # the dagen package that runs
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same files give the same wheel


class WheelError(Exception):
    """The runtime's wheel cannot be made from this installation of dagen."""


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path
    client: Path  # the client package's wheel
    runtime: Path | None  # dagen-grpc's wheel; None when it could not be made
    problem: str = ""  # why the runtime's wheel is missing


@dataclass(frozen=True)
class _Source:
    """What goes into a wheel: its core metadata and its files (archive name, path)."""

    metadata: str
    files: list[tuple[str, Path]]
    entry_points: str = ""

    @property
    def name(self) -> str:
        return _field(self.metadata, "Name")

    @property
    def version(self) -> str:
        return _field(self.metadata, "Version")


def write_wheelhouse(folder: Path, client_project: Path) -> Wheelhouse:
    """The client's wheel and, when it can be made, the dagen runtime's, into ``folder``."""
    client = write_wheel(folder, _client_source(client_project))
    try:
        runtime = write_wheel(folder, runtime_source())
    except (WheelError, OSError) as e:
        return Wheelhouse(folder, client, None, str(e))
    return Wheelhouse(folder, client, runtime)


def runtime_source() -> _Source:
    """The dagen-grpc distribution of the dagen package that runs."""
    root = _PACKAGE.parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():  # a source checkout, or an editable install of one
        data = tomllib.loads(pyproject.read_text())
        project = data.get("project", {})
        if project.get("name") == DISTRIBUTION:
            included = (data.get("tool", {}).get("hatch", {}).get("build", {})
                        .get("targets", {}).get("wheel", {}).get("force-include", {}))
            files = list(_tree(_PACKAGE, _PACKAGE.name))
            for source, target in included.items():
                files += _tree(root / source, target)
            return _Source(metadata_from_project(project), files,
                           _entry_points(project.get("scripts", {})))
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None and Path(str(dist.locate_file("dagen/__init__.py"))).resolve() == _PACKAGE / "__init__.py":
        return _Source(dist.read_text("METADATA") or "", list(_tree(_PACKAGE, _PACKAGE.name)),
                       dist.read_text("entry_points.txt") or "")
    raise WheelError(
        f"dagen runs from {_PACKAGE}, which is neither a source checkout of {DISTRIBUTION} "
        f"(no pyproject.toml naming it in {root}) nor an installed {DISTRIBUTION} distribution"
    )


def _client_source(project: Path) -> _Source:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    package = meta["name"].replace("-", "_")
    return _Source(metadata_from_project(meta), list(_tree(project / package, package)))


def metadata_from_project(project: dict[str, Any]) -> str:
    """Core metadata (METADATA) from a pyproject.toml's [project] table."""
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    license_ = project.get("license")
    if isinstance(license_, dict) and "text" in license_:
        lines.append(f"License: {license_['text']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {r}" for r in project.get("dependencies", [])]
    for extra, requirements in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        for requirement in requirements:
            spec, _, marker = requirement.partition(";")
            marker = f"({marker.strip()}) and " if marker.strip() else ""
            lines.append(f'Requires-Dist: {spec.strip()}; {marker}extra == "{extra}"')
    return "\n".join(lines) + "\n"


def write_wheel(folder: Path, source: _Source) -> Path:
    """Write the wheel of ``source`` into ``folder`` (replacing the distribution's older
    wheels there) and return its path."""
    name = re.sub(r"[-_.]+", "_", source.name).lower()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{name}-*.whl"):
        old.unlink()
    info = f"{name}-{source.version}.dist-info"
    path = folder / f"{name}-{source.version}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:

        def add(arcname: str, data: bytes) -> None:
            entry = zipfile.ZipInfo(arcname, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{arcname},sha256={digest.decode()},{len(data)}")

        for arcname, file in sorted(source.files):
            add(arcname, file.read_bytes())
        add(f"{info}/METADATA", source.metadata.encode())
        add(f"{info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: dagen {__version__}\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n").encode())
        if source.entry_points:
            add(f"{info}/entry_points.txt", source.entry_points.encode())
        records.append(f"{info}/RECORD,,")
        wheel.writestr(zipfile.ZipInfo(f"{info}/RECORD", _EPOCH), "\n".join(records) + "\n")
    return path


def _tree(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    """Every file under ``folder`` as (``prefix``/relative path, path), without bytecode."""
    if not folder.is_dir():
        raise WheelError(f"{folder} is missing: the wheel needs it")
    for path in folder.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield f"{prefix}/{path.relative_to(folder).as_posix()}", path


def _entry_points(scripts: dict[str, str]) -> str:
    return "".join(["[console_scripts]\n", *(f"{k} = {v}\n" for k, v in scripts.items())]) if scripts else ""


def _field(metadata: str, key: str) -> str:
    match = re.search(rf"^{key}: *(.+)$", metadata, flags=re.M)
    if not match:
        raise WheelError(f"the metadata has no {key} field")
    return match.group(1).strip()

