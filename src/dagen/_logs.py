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
import io
import itertools
import json
import logging
import os
import re
import secrets
import sys
import threading
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


# grpc's C core: "I1206 02:23:52.407636 7612 ssl_transport_security.cc:2563] Handshake
# failed with error SSL_ERROR_SSL: error:1000007d:...:CERTIFICATE_VERIFY_FAILED: ..."
_HANDSHAKE_FAILED = re.compile(
    rb"ssl_transport_security\.cc:\d+\] Handshake failed with (?:fatal )?error (\w+): (.*)$")


def follow_grpc_core_log() -> None:
    """Make a failed TLS handshake a record of this log (``event: tls_handshake_failed``,
    with grpc's reason), where grpc's C core only writes a line of its own to file
    descriptor 2, past Python's logging: a client whose certificate the CA did not sign,
    an expired one, plain text against TLS. grpc does not say from which address (no
    hook of grpcio sees a connection before its handshake), so the record has no peer.

    File descriptor 2 becomes a pipe that a thread reads: handshake lines become records,
    every other line goes on to the real stderr unchanged. Python's own stderr (and so
    this log's handler) writes to the real stderr directly, so the thread never waits on
    the pipe it reads. Call it once, from the process that serves."""
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    stderr = io.TextIOWrapper(os.fdopen(real, "wb", buffering=0), write_through=True,
                              encoding=sys.stderr.encoding, errors="backslashreplace")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setStream(stderr)
    sys.stderr = stderr
    log = logging.getLogger("dagen.server")

    def pump() -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                found = _HANDSHAKE_FAILED.search(line.rstrip())
                if found is None:
                    stderr.buffer.write(line)
                    continue
                code, reason = (g.decode(errors="replace") for g in found.groups())
                log.warning(
                    "TLS handshake failed (%s): %s: a client whose certificate this server's "
                    "CA did not sign, an expired certificate, or a client without TLS",
                    code, reason, extra={"event": "tls_handshake_failed", "status": code,
                                         "reason": reason})

    threading.Thread(target=pump, name="dagen-grpc-log", daemon=True).start()


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
