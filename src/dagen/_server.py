"""The server: decode a request, call the real function, encode its result.

A generated server module only declares ``class XServicer(Servicer, module=..., pb2=...)``;
everything else happens here, once for every service.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import types
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc

from ._arrays import DecodeContext, EncodeContext
from ._errors import ERROR_METADATA_KEY, remote_error_details
from ._introspect import introspect_module
from ._model import Service
from ._protocol import Method, receive, send
from ._tls import SERVER_OPTIONS, is_loopback, join_host_port, server_credentials
from ._wire import (
    DEFAULT_CHUNK_BYTES,
    LimitExceeded,
    Limits,
    WireError,
    frame_deserializer,
    frame_serializer,
)

log = logging.getLogger("dagen.server")


def import_served_module(name: str, fallback_path: str | None = None) -> types.ModuleType:
    """Import the module a generated server serves; if it is not on sys.path, look in
    the folder it was built from."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name or not fallback_path:
            raise
    sys.path.insert(0, fallback_path)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"cannot import {name!r}, the module this server serves: add the folder that "
            f"holds it to PYTHONPATH (it was built from {fallback_path})",
            name=name,
        ) from None


@dataclass(frozen=True)
class ServerOptions:
    debug: bool = False  # send tracebacks to callers
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    limits: Limits = Limits()


class Servicer:
    """Serves the functions of a module; subclass with ``module=`` and ``pb2=``."""

    module: ClassVar[types.ModuleType]
    pb2: ClassVar[Any]
    service: ClassVar[Service]
    methods: ClassVar[dict[str, Method]]

    def __init_subclass__(cls, *, module: types.ModuleType, pb2: Any, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.module = module
        cls.pb2 = pb2
        cls.service = introspect_module(module)
        cls.methods = {fn.name: Method(cls.service, fn, pb2) for fn in cls.service.functions}

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self._functions: dict[str, Callable[..., Any]] = {
            name: getattr(self.module, name) for name in self.methods
        }

    def generic_handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method in self.methods.values():
            if method.streaming:
                handlers[method.fn.rpc] = grpc.stream_stream_rpc_method_handler(
                    self._stream_handler(method),
                    request_deserializer=frame_deserializer(method.input_cls),
                    response_serializer=frame_serializer,
                )
            else:
                handlers[method.fn.rpc] = grpc.unary_unary_rpc_method_handler(
                    self._unary_handler(method),
                    request_deserializer=method.request_cls.FromString,
                    response_serializer=method.response_cls.SerializeToString,
                )
        return grpc.method_handlers_generic_handler(self.service.full_name, handlers)

    # -- handlers -------------------------------------------------------------------------------

    def _unary_handler(self, method: Method) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            args, kwargs = self._decode(method, request, DecodeContext({}), context)
            result = self._invoke(method, args, kwargs, context)
            response = self._encode(method, result, EncodeContext(), context)
            self._log(method, context, 0, 0, started)
            return response

        return handle

    def _stream_handler(
        self, method: Method
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]]:
        options = self.options

        def handle(frames: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            try:
                request, dctx = receive(frames, "request", options.limits)
            except LimitExceeded as e:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method.name}(): {e}")
            except WireError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}(): {e}")
            bytes_in = sum(a.nbytes for a in dctx.arrays.values())
            args, kwargs = self._decode(method, request, dctx, context)
            del dctx, request  # the function's arguments hold what is still needed
            result = self._invoke(method, args, kwargs, context)
            del args, kwargs
            ectx = EncodeContext(options.chunk_bytes)
            response = self._encode(method, result, ectx, context)
            del result
            yield from send(method.output_cls, "response", response, ectx)
            self._log(method, context, bytes_in, ectx.nbytes, started)

        return handle

    def _decode(
        self, method: Method, request: Any, dctx: DecodeContext, context: grpc.ServicerContext
    ) -> tuple[list[Any], dict[str, Any]]:
        try:
            return method.decode_request(request, dctx)
        except (WireError, ValueError, TypeError, KeyError) as e:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}(): malformed request: {e}"
            )
            raise  # unreachable: abort raises

    def _invoke(
        self, method: Method, args: list[Any], kwargs: dict[str, Any], context: grpc.ServicerContext
    ) -> Any:
        try:
            return self._functions[method.name](*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the caller gets it, the server goes on
            log.info(
                "%s() raised %s: %s", method.name, type(e).__name__, e, exc_info=self.options.debug
            )
            self._abort_with(context, e, method, grpc.StatusCode.UNKNOWN)
            raise  # unreachable: abort raises

    def _encode(
        self, method: Method, result: Any, ctx: EncodeContext, context: grpc.ServicerContext
    ) -> Any:
        try:
            return method.encode_response(result, ctx)
        except TypeError as e:
            log.warning("%s", e)
            self._abort_with(context, e, method, grpc.StatusCode.INTERNAL)
            raise  # unreachable: abort raises

    def _abort_with(
        self,
        context: grpc.ServicerContext,
        exc: BaseException,
        method: Method,
        code: grpc.StatusCode,
    ) -> None:
        details = remote_error_details(exc, method.name, self.options.debug)
        context.set_trailing_metadata(((ERROR_METADATA_KEY, details.SerializeToString()),))
        context.abort(code, f"{details.type}: {details.message}")

    def _log(
        self,
        method: Method,
        context: grpc.ServicerContext,
        bytes_in: int,
        bytes_out: int,
        started: float,
    ) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s() in %d B, out %d B, %.3f s",
                caller_of(context),
                method.name,
                bytes_in,
                bytes_out,
                time.perf_counter() - started,
            )


def caller_of(context: grpc.ServicerContext) -> str:
    """The caller's identity: the subject CN of its client certificate."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else context.peer()


# -- running ------------------------------------------------------------------------------------


class InsecureRefused(Exception):
    """Plain text was asked for on an address other than loopback."""


def create_server(
    servicer: Servicer,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    certs: str | None = None,
    insecure: bool = False,
    allow_remote_insecure: bool = False,
    workers: int = 8,
) -> tuple[grpc.Server, int]:
    """A started-ready grpc server and the port it listens on (``port=0`` picks one)."""
    address = join_host_port(host, port)
    if insecure:
        if not is_loopback(host) and not allow_remote_insecure:
            raise InsecureRefused(
                f"refusing to serve plain text on {address}: anyone on the network could read "
                "and call it. Use mutual TLS (--certs), or serve on 127.0.0.1 and reach it "
                "through an SSH tunnel; --allow-remote-insecure overrides this."
            )
        credentials = None
    elif certs is None:
        raise FileNotFoundError("no certificate folder given: pass --certs DIR (see 'dagen certs')")
    else:
        credentials = server_credentials(certs)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((servicer.generic_handler(),))
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot listen on {address} (is the port in use?)")
    return server, bound
