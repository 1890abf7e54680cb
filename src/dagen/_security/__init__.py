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
* :mod:`._settings`: the options of ``dagen serve`` that set all this.

What the rest of dagen uses is exported here and imported on first use (PEP 562), so
that importing one name costs what importing its module does: ``import dagen`` (for
``dagen.caller``) does not load the certificate tools, and a served module's runtime
does not load click, which ``._settings`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names of _EXPORTS, for type checkers (a test checks they agree)
    from ._certinfo import describe, list_folder, parse_san, renew, serial_of, show_lines
    from ._certs import init_ca, issue_client, issue_server
    from ._denylist import DenyList, revoke
    from ._guard import Guard, run_each
    from ._identity import (
        Identity,
        caller,
        format_serial,
        identity_from_auth,
        reset_caller,
        set_caller,
    )
    from ._idle import UploadWatch, cancel_rpc
    from ._limits import Admission, CallLimits, physical_memory
    from ._policy import Policy
    from ._reload import CertificateReloader
    from ._settings import parse_size, security_options, security_settings
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

_EXPORTS: dict[str, tuple[str, ...]] = {
    "_certinfo": ("describe", "list_folder", "parse_san", "renew", "serial_of", "show_lines"),
    "_certs": ("init_ca", "issue_client", "issue_server"),
    "_denylist": ("DenyList", "revoke"),
    "_guard": ("Guard", "run_each"),
    "_identity": ("Identity", "caller", "format_serial", "identity_from_auth", "reset_caller",
                  "set_caller"),
    "_idle": ("UploadWatch", "cancel_rpc"),
    "_limits": ("Admission", "CallLimits", "physical_memory"),
    "_policy": ("Policy",),
    "_reload": ("CertificateReloader",),
    "_settings": ("parse_size", "security_options", "security_settings"),
    "_socket": ("bind_unix_socket", "unix_target"),
    "_tls": (
        "CHANNEL_OPTIONS",
        "SERVER_OPTIONS",
        "channel_credentials",
        "channel_options",
        "is_loopback",
        "join_host_port",
        "server_credentials",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # asked once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
