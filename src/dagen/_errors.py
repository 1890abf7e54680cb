"""Errors: what a failed remote call raises, and how failures cross the wire.

A function's exception travels as the gRPC status (UNKNOWN, "Type: message") plus the
trailing metadata ``dagen-error-bin``, a serialized ``dagen.v1.RemoteError`` that
clients in any language can read. The Python client raises built-in exception types
as themselves (a remote ValueError is a ValueError, ``KeyError(1)`` is ``KeyError(1)``),
the served module's public exceptions as the client package's mirrors of them (same
name, same built-in bases), and anything else as a :class:`RemoteError` that is also
the nearest built-in class it derives from; the remote traceback, when the server
sends it, is a note.
"""

from __future__ import annotations

import ast
import builtins
import traceback
from collections.abc import Mapping
from typing import Any

import grpc

from ._exceptions import DagenError
from .v1 import errors_pb2

ERROR_METADATA_KEY = "dagen-error-bin"


class RemoteError(DagenError):
    """An exception raised by the remote function whose type has no local equivalent."""

    def __init__(
        self,
        type_name: str,
        message: str,
        *,
        module: str = "",
        function: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.module = module
        self.message = message
        self.function = function
        self.remote_traceback = remote_traceback

    def _repr_html_(self) -> str:
        """Jupyter's view: the remote type and message, the function, the traceback folded."""
        from ._html import error_html

        remote_type = f"{self.module}.{self.type_name}" if self.module else self.type_name
        return error_html(self, {"function": f"{self.function}()" if self.function else "",
                                 "remote type": remote_type}, self.remote_traceback)


class CallError(DagenError):
    """The call failed for a reason other than the function raising: refused,
    malformed, unimplemented... ``code`` is the gRPC status code."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code

    def _repr_html_(self) -> str:
        """Jupyter's view: the message and the gRPC status."""
        from ._html import error_html

        return error_html(self, {"status": self.code.name if self.code is not None else ""})


class ContractMismatch(CallError):
    """The client was built from a revision of the contract the server does not serve: an
    older client after a breaking change, or a client newer than the server; the message
    says which and what to do (get the matching client, or have the server redeployed)."""


class ServerUnavailable(DagenError, ConnectionError):
    """The server could not be reached, or the TLS handshake with it failed."""


def exception_message(exc: BaseException) -> str:
    """The text of an exception as the client shows it: ``str(exc)``, except that a
    KeyError's one argument is not quoted again (``KeyError('x')`` -> ``x``)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _literal_args(exc: BaseException) -> str:
    """The arguments that make the exception again, as source, when they are literals:
    ``exc.args``, and an OSError's file names (which are not among its args)."""
    args = exc.args
    if isinstance(exc, OSError) and exc.filename is not None and len(args) == 2:
        args = (*args, exc.filename, None, exc.filename2)
    try:
        text = repr(args)
        if len(text) <= _MAX_ARGS_TEXT and ast.literal_eval(text) == args:
            return text
    except Exception:  # noqa: BLE001 - arguments that are not literals are not sent
        pass
    return ""


_MAX_ARGS_TEXT = 16_384


def remote_error_details(exc: BaseException, function: str, debug: bool) -> errors_pb2.RemoteError:
    cls = type(exc)
    return errors_pb2.RemoteError(
        type=cls.__qualname__,
        module=cls.__module__,
        message=exception_message(exc),
        function=function,
        traceback="".join(traceback.format_exception(exc)) if debug else "",
        args=_literal_args(exc),
        bases=[_qualified(c) for c in cls.__mro__[1:] if issubclass(c, BaseException)],
    )


def instantiate(cls: type[BaseException], details: errors_pb2.RemoteError) -> BaseException:
    """An exception of ``cls`` with the remote one's arguments (when they were sent and
    give the same message), else with its message; never a TypeError of a constructor
    that takes other arguments (``KeyError`` subclasses with their own ``__init__``)."""
    if details.args and len(details.args) <= _MAX_ARGS_TEXT:
        try:
            args = ast.literal_eval(details.args)
            exc = cls(*args)
            if exception_message(exc) == details.message:
                return exc
        except Exception:  # noqa: BLE001 - another signature: the message, below
            pass
    try:
        return cls(details.message)
    except Exception:  # noqa: BLE001 - a constructor that needs other arguments
        exc = cls.__new__(cls)
        exc.args = (details.message,)
        return exc


_AS_REMOTE: dict[tuple[str, type], type[RemoteError]] = {}


def _remote_error_like(name: str, base: type[BaseException]) -> type[RemoteError]:
    """A RemoteError that is also a ``base`` (the nearest class of the remote exception
    the client knows), so that ``except base`` catches it."""
    key = (name, base)
    if key not in _AS_REMOTE:
        cls = type(name.rsplit(".", 1)[-1], (RemoteError, base), {"__module__": __name__})
        cls.__doc__ = f"A remote {name}, which the client does not have: a {base.__name__}."
        _AS_REMOTE[key] = cls
    return _AS_REMOTE[key]


def _known_class(name: str, mirrors: Mapping[str, type]) -> type[BaseException] | None:
    cls: Any = mirrors.get(name)
    if cls is None and name.startswith("builtins."):
        cls = getattr(builtins, name.removeprefix("builtins."), None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None


def exception_from_details(
    details: errors_pb2.RemoteError, target: str, mirrors: Mapping[str, type] | None = None
) -> Exception:
    """The local exception for a remote one: the same built-in type, or the client
    package's mirror of the served module's exception (``mirrors``, by the remote
    class's ``module.qualname``). A class the client has neither of is a
    :class:`RemoteError` that is also the nearest built-in or mirrored class it derives
    from (``except ValueError`` catches a remote ``ValueError`` subclass)."""
    mirrors = mirrors or {}
    note = f"raised by {details.function}() on the server at {target}"
    if details.traceback:
        note += "\n\nRemote traceback:\n" + details.traceback
    own = f"{details.module}.{details.type}" if details.module else details.type
    exc: BaseException
    cls = _known_class(own, mirrors)
    if cls is not None:
        exc = instantiate(cls, details)
    else:
        base = next(filter(None, (_known_class(b, mirrors) for b in details.bases)), Exception)
        remote = RemoteError if base is Exception else _remote_error_like(own, base)
        exc = remote(
            own,
            details.message,
            module=details.module,
            function=details.function,
            remote_traceback=details.traceback,
        )
    exc.add_note(note)
    return exc  # type: ignore[return-value]  # _known_class allows Exception classes only


def exception_from_rpc_error(
    err: grpc.RpcError,
    *,
    function: str,
    target: str,
    timeout: float | None,
    tls: bool = False,
    mirrors: Mapping[str, type] | None = None,
) -> Exception:
    code = err.code() if hasattr(err, "code") else None
    text = err.details() if hasattr(err, "details") else str(err)
    for key, value in (
        err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    ) or ():
        if key == ERROR_METADATA_KEY:
            return exception_from_details(
                errors_pb2.RemoteError.FromString(value), target, mirrors
            )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(
            f"{function}() did not finish within its timeout of {timeout} s (server {target})"
        )
    # grpc reports it as UNKNOWN: TSI_DATA_CORRUPTED where the changed record is read,
    # "Wrap failed (TSI_INTERNAL_ERROR)" on a side that writes after TLS gave up
    if code == grpc.StatusCode.UNKNOWN and "TSI_" in (text or ""):
        return ServerUnavailable(
            f"the connection to {target} broke during {function}(): {text}. TLS refused "
            "data that something between client and server (a relay, a proxy, the network) "
            "had changed, or gave up on the connection. No result was returned (nothing "
            "partial either); the call may or may not have run."
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = ""
        lowered = (text or "").lower()
        if "unrecognized_name" in lowered:  # the TLS alert a dagen relay sends
            hint = (
                f" {target} answered the TLS server name the client asked for with "
                "unrecognized_name: it is a relay with no server connected under that name "
                "(the server is not running or has not reached the relay, or the relay does "
                "not know the name). Check server_name= (or DAGEN_SERVER_NAME), and ask the "
                "server's operator whether it is up."
            )
        elif "hostname verification" in lowered:
            hint = (
                f" The TLS handshake failed: the server's certificate does not name the host "
                f"of {target}. Through an SSH tunnel or a Unix socket, pass server_name= the "
                "name in the server's certificate (or set DAGEN_SERVER_NAME)."
            )
        elif any(word in lowered for word in ("ssl", "tls", "handshake", "certificate")):
            hint = (
                " The TLS handshake failed: check that the server's certificate is signed "
                "by the CA you trust, and that you present a client certificate "
                "(identity=...) signed by the server's CA."
            )
        elif "stream removed" in lowered:  # the connection broke while the call ran
            hint = (
                " The connection broke during the call: the server stopped or crashed, or "
                "the network failed. No result was returned (nothing partial either); the "
                "call may or may not have run."
            )
        elif not tls and any(
            word in lowered for word in ("socket closed", "connection reset", "eof", "goaway")
        ):
            hint = (
                " The client speaks plain text (insecure=True or DAGEN_INSECURE) and the "
                "server closed the connection: most likely it serves TLS (dagen serve "
                "--certs). Drop insecure=True and pass certs= (the folder with the server's "
                "ca.crt and your pair) and identity=."
            )
        elif tls and any(word in lowered for word in ("socket closed", "connection reset")):
            # TLS 1.3: a server that refuses the client certificate just closes the socket.
            hint = (
                " The server closed the connection during the TLS handshake: most likely it "
                "refused the client certificate (none given, or not signed by its CA; pass "
                "identity=... / set DAGEN_IDENTITY, with the pair from the server's operator)."
            )
        return ServerUnavailable(
            f"cannot reach the server at {target} for {function}(): {text}.{hint}"
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CallError(
            f"the server at {target} does not offer {function}(): is the client "
            f"package built from the same module as the server? ({text})",
            code,
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION and "revision" in (text or ""):
        return ContractMismatch(text, code)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionError(f"{function}() at {target}: {text}")
    if code == grpc.StatusCode.CANCELLED:
        return CallError(f"{function}() at {target} was cancelled: {text}", code)
    name = code.name if code is not None else "UNKNOWN"
    return CallError(f"{function}() at {target} failed with {name}: {text}", code)
