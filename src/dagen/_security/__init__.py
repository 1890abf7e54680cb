"""Security: who may connect, who may call what, and how much a call may take.

* transport: :mod:`._tls` (mutual TLS credentials, channel and server options),
  :mod:`._certs` (a certificate folder: CA, server and client certificates),
  :mod:`._certinfo` (list, show, renew and revoke them), :mod:`._reload` (server
  certificates that follow their files, expiry warnings), :mod:`._socket` (Unix
  socket files of mode 0600);
* callers: :mod:`._identity` (:class:`Identity`, :func:`caller`), :mod:`._policy`
  (:class:`Policy`: who may call which function), :mod:`._denylist` (``revoked.txt``
  and :func:`revoke`);
* the server's door: :mod:`._guard` (every call passes there first) and
  :mod:`._limits` (calls in progress, per identity, memory);
* :mod:`._settings`: the options of ``dagen serve`` that set all this. It needs
  click, which a served module's runtime must not: its names are imported on first
  use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._certinfo import CertInfo, describe, list_folder, parse_san, renew, serial_of, show_lines
from ._certs import (
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    init_ca,
    issue_client,
    issue_server,
)
from ._denylist import DENY_LIST, DenyList, revoke
from ._guard import Guard
from ._identity import (
    Identity,
    LazyIdentity,
    caller,
    format_serial,
    parse_serial,
    reset_caller,
    set_caller,
)
from ._limits import Admission, CallLimits, physical_memory
from ._policy import Policy
from ._reload import CertificateReloader, warn_if_expiring
from ._socket import bind_unix_socket, unix_target
from ._tls import (
    CHANNEL_OPTIONS,
    SERVER_OPTIONS,
    channel_credentials,
    channel_options,
    is_loopback,
    join_host_port,
    server_credentials,
)

if TYPE_CHECKING:
    from ._settings import SecuritySettings, parse_size, security_options, security_settings

_NEED_CLICK = {"SecuritySettings", "parse_size", "security_options", "security_settings"}


def __getattr__(name: str) -> Any:
    if name in _NEED_CLICK:
        return getattr(importlib.import_module("._settings", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CHANNEL_OPTIONS",
    "DENY_LIST",
    "SERVER_CERT",
    "SERVER_KEY",
    "SERVER_OPTIONS",
    "Admission",
    "CallLimits",
    "CertInfo",
    "CertificateReloader",
    "DenyList",
    "Guard",
    "Identity",
    "LazyIdentity",
    "Policy",
    "SecuritySettings",
    "bind_unix_socket",
    "caller",
    "channel_credentials",
    "channel_options",
    "describe",
    "format_serial",
    "init_ca",
    "is_loopback",
    "issue_client",
    "issue_server",
    "join_host_port",
    "list_folder",
    "parse_san",
    "parse_serial",
    "parse_size",
    "physical_memory",
    "renew",
    "reset_caller",
    "revoke",
    "security_options",
    "security_settings",
    "serial_of",
    "server_credentials",
    "set_caller",
    "show_lines",
    "unix_target",
    "warn_if_expiring",
]
