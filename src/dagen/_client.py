"""The client: encode the arguments, call the server, decode the result.

A generated client package declares ``class Client(ServiceClient, pb2=...)`` with one
method per remote function, each with the original signature and docstring and a
one-line body that calls :meth:`ServiceClient._call`. The model of the service is
read from those methods once, when the class is created.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, ClassVar, TypeVar

import grpc

from ._arrays import DecodeContext, EncodeContext
from ._errors import CallError, exception_from_rpc_error
from ._introspect import introspect_function, make_service
from ._model import Service
from ._protocol import Method, receive, send
from ._tls import CHANNEL_OPTIONS, channel_credentials
from ._wire import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    Limits,
    WireError,
    frame_deserializer,
    frame_serializer,
)

DEFAULT_TIMEOUT = 3600.0

ENV_TARGET = "DAGEN_TARGET"
ENV_CERTS = "DAGEN_CERTS"
ENV_IDENTITY = "DAGEN_IDENTITY"
ENV_TIMEOUT = "DAGEN_TIMEOUT"
ENV_INSECURE = "DAGEN_INSECURE"


class ServiceClient:
    """A connection to a dagen server.

    Parameters
    ----------
    target
        ``host:port`` of the server; ``$DAGEN_TARGET`` when omitted.
    certs
        Folder with ``ca.crt`` (the CA that signed the server) and, for mutual TLS,
        ``<identity>.crt`` and ``<identity>.key``; ``$DAGEN_CERTS`` when omitted.
    identity
        Which client certificate of ``certs`` to present; ``$DAGEN_IDENTITY``.
    insecure
        Plain text, for a server started with ``--insecure`` on loopback.
    timeout
        Seconds a call may take before it raises TimeoutError; ``$DAGEN_TIMEOUT``,
        else one hour. ``None`` waits as long as it takes.
    chunk_bytes
        Size of the chunks arrays are sent in.
    """

    pb2: ClassVar[Any]
    service: ClassVar[Service]
    methods: ClassVar[dict[str, Method]]

    def __init_subclass__(cls, *, pb2: Any, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.pb2 = pb2
        owner = f"{cls.__module__}.{cls.__qualname__}"
        functions = [
            introspect_function(fn, owner, skip_first=True)
            for name, fn in vars(cls).items()
            if inspect.isfunction(fn) and not name.startswith("_")
        ]
        cls.service = make_service(pb2.DESCRIPTOR.package, cls.__doc__, functions)
        cls.methods = {fn.name: Method(cls.service, fn, pb2) for fn in functions}

    def __init__(
        self,
        target: str | None = None,
        *,
        certs: str | os.PathLike[str] | None = None,
        identity: str | None = None,
        insecure: bool | None = None,
        timeout: float | None | object = ...,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        limits: Limits | None = None,
    ) -> None:
        env = os.environ
        target = target or env.get(ENV_TARGET)
        if not target:
            raise ValueError(f"no server address: pass target='host:port' or set ${ENV_TARGET}")
        if insecure is None:
            insecure = env.get(ENV_INSECURE, "").lower() in ("1", "true", "yes")
        if certs is None and not insecure:
            certs = env.get(ENV_CERTS)
            if certs is None:
                raise ValueError(
                    f"no certificates: pass certs='folder' (with ca.crt and the identity's "
                    f"pair) or set ${ENV_CERTS}; insecure=True only for a plain-text server"
                )
        if identity is None:
            identity = env.get(ENV_IDENTITY) or None
        if timeout is ...:
            timeout = float(env[ENV_TIMEOUT]) if env.get(ENV_TIMEOUT) else DEFAULT_TIMEOUT
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be between 1 and {MAX_CHUNK_BYTES}")
        self.target = target
        self.identity = identity
        self.timeout: float | None = timeout  # type: ignore[assignment]
        self.chunk_bytes = chunk_bytes
        self.limits = limits or Limits()
        if insecure:
            self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            assert certs is not None
            credentials = channel_credentials(certs, identity)
            self._channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        self._stubs: dict[str, Any] = {}
        for name, method in self.methods.items():
            if method.streaming:
                self._stubs[name] = self._channel.stream_stream(
                    method.path,
                    request_serializer=frame_serializer,
                    response_deserializer=frame_deserializer(method.output_cls),
                )
            else:
                self._stubs[name] = self._channel.unary_unary(
                    method.path,
                    request_serializer=method.request_cls.SerializeToString,
                    response_deserializer=method.response_cls.FromString,
                )

    def _call(self, name: str, **arguments: Any) -> Any:
        method = self.methods[name]
        ctx = EncodeContext(self.chunk_bytes)
        request = method.encode_request(arguments, ctx)  # TypeError before anything is sent
        stub = self._stubs[name]
        try:
            if not method.streaming:
                response = stub(request, timeout=self.timeout)
                return method.decode_response(response, DecodeContext({}))
            frames = stub(send(method.input_cls, "request", request, ctx), timeout=self.timeout)
            try:
                message, dctx = receive(frames, "response", self.limits)
            except BaseException:
                frames.cancel()  # Ctrl-C or a bad frame: stop the server's work too
                raise
            return method.decode_response(message, dctx)
        except grpc.RpcError as e:
            raise exception_from_rpc_error(
                e, function=name, target=self.target, timeout=self.timeout
            ) from None
        except WireError as e:
            raise CallError(
                f"{name}(): the server at {self.target} sent a malformed response: {e}"
            ) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} target={self.target!r}>"


C = TypeVar("C", bound=ServiceClient)
_defaults: dict[tuple[type, tuple[str | None, ...]], ServiceClient] = {}
_defaults_lock = threading.Lock()


def default_client(cls: type[C]) -> C:
    """The client the module-level functions use, configured by the environment
    (``DAGEN_TARGET``, ``DAGEN_CERTS``, ``DAGEN_IDENTITY``, ``DAGEN_TIMEOUT``,
    ``DAGEN_INSECURE``); a new one whenever those change."""
    key = (
        cls,
        tuple(
            os.environ.get(v)
            for v in (ENV_TARGET, ENV_CERTS, ENV_IDENTITY, ENV_TIMEOUT, ENV_INSECURE)
        ),
    )
    with _defaults_lock:
        client = _defaults.get(key)
        if client is None:
            client = _defaults[key] = cls()
        return client  # type: ignore[return-value]
