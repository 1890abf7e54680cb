"""Numpy-style docstrings -> the documentation the contract carries (its comments).

Build time only: ``docstring_parser`` is a build dependency, and the client and
server runtime never import this module. The model keeps each docstring exactly as
written (``Function.doc``); the contract's layout reads it through :func:`parse_docs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import docstring_parser


@dataclass(frozen=True)
class Docs:
    """What a function's docstring says of it, its parameters and its result."""

    summary: str = ""
    parameters: dict[str, str] = field(default_factory=dict)  # name -> description
    returns: str = ""


def parse_docs(doc: str | None) -> Docs:
    """The documentation in a numpy-style docstring ("" where it says nothing)."""
    parsed = docstring_parser.parse(doc or "", style=docstring_parser.DocstringStyle.NUMPYDOC)
    return Docs(
        parsed.short_description or "",
        {p.arg_name: p.description or "" for p in parsed.params},
        (parsed.returns.description or "") if parsed.returns else "",
    )
