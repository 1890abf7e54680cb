"""Compact HTML views for Jupyter (``_repr_html_``): a client, and a failed call."""

from __future__ import annotations

import html
import inspect
from typing import Any

_STYLE = "font-family:monospace;font-size:90%;border-collapse:collapse;text-align:left"
_CELL = "padding:1px 8px;text-align:left;vertical-align:top"


def _row(key: str, value: str) -> str:
    return (f'<tr><th style="{_CELL}">{html.escape(key)}</th>'
            f'<td style="{_CELL}">{value}</td></tr>')


def _first_line(doc: str | None) -> str:
    return (inspect.cleandoc(doc).splitlines() or [""])[0] if doc else ""


def client_html(client: Any) -> str:
    """Where the client calls, as whom, with which settings, and what it can call."""
    cls = type(client)
    conn = getattr(client, "__dagen__", None)
    if conn is None:
        return f"<code>{html.escape(repr(client))}</code>"
    spec = conn.spec
    security = "mutual TLS" if conn.tls else "plain text (insecure)"
    if conn.tls and conn.identity:
        security += f" as {html.escape(conn.identity)}"
    timeout = "none" if conn.timeout is None else f"{conn.timeout:g} s"
    rows = [_row("server", f"<code>{html.escape(conn.target)}</code>"),
            _row("security", security), _row("timeout", timeout)]
    if conn.contract is not None:
        rows.append(_row("contract", html.escape(str(conn.contract.revision))))
    for fn in spec.service.functions:
        rows.append(_row(f"{fn.name}{_signature(cls, fn.name)}", html.escape(_first_line(fn.doc))))
    for remote in spec.service.classes:
        rows.append(_row(f"class {remote.name}", html.escape(_first_line(remote.doc))))
    title = html.escape(f"{cls.__module__}.{cls.__qualname__}")
    return (f'<details open><summary><b>{title}</b> (dagen client of '
            f'<code>{html.escape(spec.service.module)}</code>)</summary>'
            f'<table style="{_STYLE}">{"".join(rows)}</table></details>')


def _signature(cls: type, name: str) -> str:
    """The function's signature as the visitor calls it (without ``self``)."""
    try:
        signature = inspect.signature(getattr(cls, name))
    except (AttributeError, TypeError, ValueError):
        return "(...)"
    return str(signature.replace(parameters=list(signature.parameters.values())[1:]))


def error_html(exc: BaseException, details: dict[str, str], traceback: str = "") -> str:
    """A failed call: its type and message, what it concerns; the remote traceback
    (when the server sends one) folded away."""
    head = (f'<b style="color:#b22">{html.escape(type(exc).__name__)}</b>: '
            f"{html.escape(str(exc))}")
    rows = "".join(_row(k, html.escape(v)) for k, v in details.items() if v)
    table = f'<table style="{_STYLE}">{rows}</table>' if rows else ""
    folded = (f"<details><summary>remote traceback</summary><pre>{html.escape(traceback)}"
              "</pre></details>") if traceback else ""
    return f"<div>{head}{table}{folded}</div>"
