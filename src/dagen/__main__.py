"""The ``dagen`` command (and ``python -m dagen``).

The command is the data owner's: it needs the ``server`` extra (click, jinja2,
docstring_parser, grpcio-tools), which a visitor's install of the client runtime does
not pull in. Without it, say which extra to install instead of an ImportError.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

# The top-level modules of the `server` extra's distributions (pyproject.toml).
SERVER_EXTRA_MODULES = {"click": "click", "jinja2": "jinja2",
                        "docstring_parser": "docstring_parser", "grpc_tools": "grpcio-tools",
                        "grpc_health": "grpcio-health-checking",
                        "grpc_reflection": "grpcio-reflection"}
SERVER_EXTRA = "pip install 'dagen-grpc[server]'"
_PACKAGE = Path(__file__).resolve().parent


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The message for a module of the ``server`` extra that is not installed, else None."""
    top = (error.name or "").partition(".")[0]
    if top not in SERVER_EXTRA_MODULES or not _raised_by_dagen(error):
        return None  # a served module's own import: its traceback says more
    return (f"Error: the dagen command needs {SERVER_EXTRA_MODULES[top]}, which is not installed "
            f"here. The data owner's side (dagen build, certs, serve) is an extra of the "
            f"dagen-grpc distribution: {SERVER_EXTRA}. Calling a service through a generated "
            "client does not need it.")


def _raised_by_dagen(error: BaseException) -> bool:
    """Whether the import that failed is one of dagen's own modules'."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<frozen")]
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE)


def main() -> None:
    try:
        from ._cli import main as cli

        cli()
    except ModuleNotFoundError as e:
        message = missing_extra_message(e)
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
