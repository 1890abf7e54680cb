"""What a server says about itself, for operators and for the tools of the gRPC world.

Beside the served module's service, every server (:func:`dagen._serve.create_server`)
serves

* ``grpc.health.v1.Health`` (grpcio-health-checking): SERVING while calls can run,
  NOT_SERVING while they cannot (:meth:`Executor.unready`, e.g. no dask worker) and
  from SIGTERM on, while the calls in progress finish (:class:`Health`);
* ``dagen.v1.Meta`` (protos/dagen/v1/meta.proto): ``Describe``, the served functions and
  classes with their Python signatures and docstrings, the contract revision and the
  dagen version (what ``dagen describe`` prints), and ``WhoAmI``, the identity the
  server sees (``dagen ping``);
* server reflection (grpcio-reflection, v1alpha) unless ``--no-reflection``: grpcurl
  lists and calls the service without its .proto.

None of them passes the guard (dagen._security._guard): any certificate of the CA may
call them, whatever the policy or the call limits. The visitor's side of Meta
(:func:`describe_remote`, :func:`ping`) works without the served module.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from ._version import __version__
from .v1 import meta_pb2

if TYPE_CHECKING:
    from ._executors import Executor
    from ._model import Function
    from ._server import Servicer

log = logging.getLogger("dagen.server")

META_SERVICE = "dagen.v1.Meta"
HEALTH_SERVICE = "grpc.health.v1.Health"
_HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
_POLL = 2.0  # seconds between two questions to the executor whether calls can run


# -- the server's side ----------------------------------------------------------------------------


class _Shown(str):
    """An annotation as written: inspect renders it without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _signature(obj: Any, module: str, drop: Sequence[str] = (), first: bool = False) -> str:
    """``obj``'s Python signature without the parameters ``drop`` names (a
    dagen.Progress one) and, with ``first``, without its first (``self``)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"

    def shown(annotation: Any) -> Any:
        if annotation is inspect.Parameter.empty:
            return annotation
        if isinstance(annotation, str):
            return _Shown(annotation)
        return _Shown(_DOTTED.sub(_public_path, inspect.formatannotation(annotation, module)))

    parameters = list(sig.parameters.values())[1 if first else 0:]
    return str(sig.replace(
        parameters=[p.replace(annotation=shown(p.annotation)) for p in parameters
                    if p.name not in drop],
        return_annotation=shown(sig.return_annotation),
    ))


_DOTTED = re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*){2,}")


def _public_path(match: re.Match[str]) -> str:
    """``xarray.DataArray`` for ``xarray.core.dataarray.DataArray``: the name its
    package exports it under, if it does."""
    path = match.group(0)
    top, _, rest = path.partition(".")
    name = rest.rpartition(".")[2]
    package = sys.modules.get(top)
    obj = sys.modules.get(path.rpartition(".")[0])
    if package is not None and obj is not None and getattr(package, name, None) is getattr(
            obj, name, object()):
        return f"{top}.{name}"
    return path


def _kind(fn: Function) -> str:
    if fn.dataset:
        return "dataset"
    if fn.streaming:
        return "array stream"
    return "server stream" if fn.generator else "unary"


def description(servicer: Servicer) -> meta_pb2.Description:
    """The served module as a visitor's client shows it."""
    service = servicer.service
    module = servicer.module
    name = module.__name__

    def info(fn: Function, owner: Any) -> meta_pb2.FunctionInfo:
        obj = getattr(owner, fn.name)
        # a plain method read from its class is a function: its first parameter is self
        first = fn.has_instance and isinstance(inspect.getattr_static(owner, fn.name),
                                               types.FunctionType)
        drop = (fn.progress,) if fn.progress else ()
        return meta_pb2.FunctionInfo(
            name=fn.key, signature=_signature(obj, name, drop, first), doc=inspect.cleandoc(
                fn.doc or ""), rpc=f"/{service.full_name}/{fn.rpc}", kind=_kind(fn))

    contract = servicer.contract
    return meta_pb2.Description(
        service=service.full_name,
        module=service.module,
        doc=inspect.cleandoc(service.doc or ""),
        dagen_version=__version__,
        contract_revision=contract.revision if contract is not None else 0,
        functions=[info(fn, module) for fn in service.functions],
        classes=[
            meta_pb2.ClassInfo(
                name=c.name, signature=_signature(getattr(module, c.name), name,
                                                  drop=(c.init.progress or "",)),
                doc=inspect.cleandoc(c.doc or ""),
                methods=[info(fn, getattr(module, c.name)) for fn in c.methods])
            for c in service.classes
        ],
    )


def meta_handler(servicer: Servicer) -> grpc.GenericRpcHandler:
    """The ``dagen.v1.Meta`` service of ``servicer``'s server."""
    described = description(servicer).SerializeToString()  # the same for every caller
    full_name = servicer.service.full_name

    def describe(request: meta_pb2.DescribeRequest, context: grpc.ServicerContext) -> bytes:
        return described

    def who_am_i(request: meta_pb2.WhoAmIRequest, context: grpc.ServicerContext) -> Any:
        from ._security import identity_from_auth

        identity = identity_from_auth(context.auth_context() or {}, context.peer())
        return meta_pb2.Caller(
            identity=identity.name, names=list(identity.sans), peer=identity.peer,
            serial=identity.serial_hex, service=full_name, dagen_version=__version__)

    return grpc.method_handlers_generic_handler(META_SERVICE, {
        "Describe": grpc.unary_unary_rpc_method_handler(
            describe, request_deserializer=meta_pb2.DescribeRequest.FromString),
        "WhoAmI": grpc.unary_unary_rpc_method_handler(
            who_am_i, request_deserializer=meta_pb2.WhoAmIRequest.FromString,
            response_serializer=meta_pb2.Caller.SerializeToString),
    })



class Health:
    """The server's ``grpc.health.v1`` status: SERVING once it serves, as long as the
    executor can run calls; NOT_SERVING while it cannot, and for good from
    :meth:`shutdown` on (SIGTERM: the calls in progress are finishing). The status
    is that of the whole server ("") and of the served service by name."""

    def __init__(self, server: grpc.Server, service: str, executor: Executor) -> None:
        from grpc_health.v1 import health, health_pb2_grpc

        self.servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        self._names = ("", service)
        self._executor = executor
        self._stop = threading.Event()
        self._reason: str | None = "not started"
        self._set(False)

    def _set(self, serving: bool) -> None:
        from grpc_health.v1 import health_pb2

        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in self._names:
            self.servicer.set(name, status)

    def start(self) -> None:
        """SERVING (if the executor can run calls), and follow the executor from now on."""
        self._update()
        threading.Thread(target=self._watch, name="dagen-health", daemon=True).start()

    def _update(self) -> None:
        reason = self._executor.unready()
        if reason != self._reason:
            if reason is None:
                log.info("health: SERVING", extra={"event": "health", "status": "SERVING"})
            else:
                log.warning("health: NOT_SERVING: %s", reason,
                            extra={"event": "health", "status": "NOT_SERVING", "reason": reason})
            self._reason = reason
            self._set(reason is None)

    def _watch(self) -> None:
        while not self._stop.wait(_POLL):
            try:
                self._update()
            except Exception:  # noqa: BLE001 - the next round asks again
                log.exception("health: cannot ask the executor")

    def shutdown(self) -> None:
        """NOT_SERVING for good (new calls should go elsewhere; those in progress finish)."""
        self._stop.set()
        self.servicer.enter_graceful_shutdown()


def enable_reflection(server: grpc.Server, service: str, *others: str) -> None:
    """Server reflection (v1alpha) of the served service, Meta, health and ``others``."""
    from grpc_reflection.v1alpha import reflection

    reflection.enable_server_reflection(
        (service, META_SERVICE, HEALTH_SERVICE, *others, reflection.SERVICE_NAME), server)


# -- the visitor's side ---------------------------------------------------------------------------


def open_channel(target: str | None, *, certs: str | None = None, identity: str | None = None,
                 server_name: str | None = None, insecure: bool = False) -> grpc.Channel:
    """A channel to a dagen server; what is not given comes from ``$DAGEN_TARGET``,
    ``$DAGEN_CERTS``, ``$DAGEN_IDENTITY``, ``$DAGEN_SERVER_NAME``, ``$DAGEN_INSECURE``,
    as for a generated client."""
    from ._client import ENV_CERTS, ENV_IDENTITY, ENV_INSECURE, ENV_SERVER_NAME, ENV_TARGET
    from ._security import CHANNEL_OPTIONS, channel_credentials, channel_options

    env = os.environ
    target = target or env.get(ENV_TARGET)
    if not target:
        raise ValueError(f"no server address: give TARGET (host:port or unix:PATH) or set "
                         f"${ENV_TARGET}")
    insecure = insecure or env.get(ENV_INSECURE, "").lower() in ("1", "true", "yes")
    if insecure:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    certs = certs or env.get(ENV_CERTS)
    if not certs:
        raise ValueError(f"no certificates: give --certs FOLDER (ca.crt and your pair) or set "
                         f"${ENV_CERTS}; --insecure only for a plain-text server")
    identity = identity or env.get(ENV_IDENTITY) or None  # None: the folder's one pair
    credentials = channel_credentials(certs, identity)
    return grpc.secure_channel(target, credentials, options=channel_options(
        target, server_name or env.get(ENV_SERVER_NAME) or None))



def _unary(channel: grpc.Channel, path: str, response: Callable[[bytes], Any]) -> Any:
    return channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response)


def describe_remote(channel: grpc.Channel, timeout: float) -> meta_pb2.Description:
    """The description a server gives of what it serves."""
    call = _unary(channel, f"/{META_SERVICE}/Describe", meta_pb2.Description.FromString)
    return call(meta_pb2.DescribeRequest(), timeout=timeout)


def description_dict(d: meta_pb2.Description) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(d, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


def description_lines(d: meta_pb2.Description) -> list[str]:
    """``dagen describe``'s text: a visitor's view of the service."""
    revision = str(d.contract_revision) if d.contract_revision else "none (served without a lock)"
    lines = [f"{d.service}  (module {d.module}, contract revision {revision}, "
             f"dagen {d.dagen_version})"]
    if d.doc:
        lines += ["", *_indent(d.doc, 2)]

    def function(f: meta_pb2.FunctionInfo, prefix: str, indent: int) -> None:
        note = "" if f.kind == "unary" else f"  [{f.kind}]"
        lines.extend(["", f"{' ' * indent}{prefix}{f.name.rpartition('.')[2]}{f.signature}{note}"])
        lines.extend(_indent(f.doc, indent + 4))

    for f in d.functions:
        function(f, "def ", 0)
    for c in d.classes:
        lines += ["", f"class {c.name}{c.signature}"]
        lines.extend(_indent(c.doc, 4))
        for m in c.methods:
            function(m, "def ", 4)
    return lines


def _indent(text: str, n: int) -> list[str]:
    return [(" " * n + line).rstrip() for line in text.splitlines()]


@dataclass(frozen=True)
class Pong:
    """What ``dagen ping`` found."""

    status: str  # SERVING, NOT_SERVING, ...
    seconds: float  # round trip of the health check
    caller: meta_pb2.Caller


def ping(channel: grpc.Channel, timeout: float) -> Pong:
    """Ask a server's health, timing the round trip, and who it sees calling."""
    from grpc_health.v1 import health_pb2

    check = _unary(channel, _HEALTH_CHECK, health_pb2.HealthCheckResponse.FromString)
    check(health_pb2.HealthCheckRequest(), timeout=timeout)  # the connection, made once
    started = time.perf_counter()
    answer = check(health_pb2.HealthCheckRequest(), timeout=timeout)
    seconds = time.perf_counter() - started
    who = _unary(channel, f"/{META_SERVICE}/WhoAmI", meta_pb2.Caller.FromString)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return Pong(status, seconds, who(meta_pb2.WhoAmIRequest(), timeout=timeout))
