"""Where the toolkit's own files are: in the wheel, or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """``protos`` or ``codegen``: packed under ``dagen/_data`` in a wheel, at the top
    of the repository in a source checkout or an editable install."""
    for candidate in (_HERE / "_data" / name, _HERE.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"dagen's {name!r} folder is missing from this installation")
