"""The server's log: lines for people, or one JSON object per line for tools.

``dagen serve --log-format json`` writes each record as one JSON object: ``time``
(ISO 8601, UTC), ``level``, ``logger``, ``event`` (what happened: ``call``,
``cancelled``, ``refused``, ...; ``message`` when the record names none) and
``message`` (the text line), then every field the record was given with
``extra={...}`` (``call_id``, ``identity``, ``function``, ``bytes_in``,
``bytes_out``, ``seconds``, ``status``, ``reason``, ``peer``...). The formatter knows
no field by name: a log call adds one by passing it in ``extra``.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import secrets
import sys
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# What every LogRecord has: the rest of its attributes came in through extra=
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; fields given with ``extra=`` included."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": "message",
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = value
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return json.dumps(fields, default=str, ensure_ascii=False)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr in ``log_format`` (``text`` or ``json``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


_token = secrets.token_hex(3)  # this process's calls: ids differ across restarts
_numbers = itertools.count(1)


def call_id(context: Any) -> str:
    """The id of the call a grpc.ServicerContext serves: the same on each of its lines
    (given when first asked for: a call that logs nothing costs nothing)."""
    cid = getattr(context, "_dagen_call_id", None)
    if cid is None:
        cid = f"{_token}-{next(_numbers)}"
        try:
            context._dagen_call_id = cid
        except AttributeError:  # a context that takes no attributes: an id per line
            pass
    return cid
