"""The client: encode the arguments, call the server, decode the result.

A generated client package declares ``class Client(ServiceClient, pb2=...)`` with one
method per remote function, each with the original signature and docstring and a
one-line body that calls :func:`call`. The model of the service is read from those
methods once, when the class is created.

The user's names belong to the user (as in grpc's stubs, SQLAlchemy and pydantic): the
attributes of a generated client are the served functions and classes and nothing
else. dagen's own state of a client (its channel, target, timeout, limits...) lives
behind one reserved slot, ``client.__dagen__`` (a :class:`Connection`), and the
generated code calls free functions whose own arguments are positional-only, so that
no parameter name of a served function can collide with them.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import grpc

from ._arrays import NO_ARRAYS, EncodeContext
from ._budget import budget_check, message_deserializer
from ._buffers import LendingPool
from ._codecs import (
    ENV_COMPRESSION,
    accept_header,
    compression_from_env,
    normalize_compression,
    require,
)
from ._display import (
    TRANSFER_THRESHOLD,
    CallProgress,
    ProgressCallback,
    UploadCounter,
    call_options,
    current_overrides,
    settings_for,
)
from ._errors import CallError, exception_from_rpc_error
from ._handshake import CONTRACT_METADATA_KEY, ContractInfo
from ._introspect import introspect_class, introspect_function, make_service
from ._model import INSTANCE_FIELD, Service
from ._protocol import Method, receive, receive_each, send
from ._security import CHANNEL_OPTIONS, channel_credentials, channel_options, physical_memory
from ._wire import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    BadFrame,
    LimitExceeded,
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
ENV_SERVER_NAME = "DAGEN_SERVER_NAME"

# The memory of large results, lent again once the caller has let go of their arrays:
# a first touch of fresh memory costs ~0.16 s per GiB (see dagen._buffers).
_RESULT_BUFFERS = LendingPool(max_bytes=physical_memory() // 4)


@dataclass(frozen=True)
class ClientSpec:
    """What a generated client class was built from: ``Client.__dagen_spec__``."""

    pb2: Any
    service: Service
    methods: dict[str, Method]  # by function key: "anomaly", "Model.predict"
    contract: ContractInfo | None


class ServiceClient:
    """A connection to a dagen server: the base of generated ``Client`` classes.

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
    server_name
        The name to check the server's certificate against, when it is not the host
        of ``target``: through an SSH tunnel (``ssh -L 50051:localhost:50051 login1``,
        then ``target="localhost:50051", server_name="login1.hpc.example.org"``) or
        on a Unix socket (``target="unix:/path/to/socket"``; default ``localhost``).
        ``$DAGEN_SERVER_NAME`` when omitted.
    timeout
        Seconds a call may take before it raises TimeoutError; ``$DAGEN_TIMEOUT``,
        else one hour. ``None`` waits as long as it takes.
    chunk_bytes
        Size of the chunks arrays are sent in.
    on_progress
        Called with a :class:`dagen.ProgressReport` for each progress report of a
        running function, and for transfers of large arrays.
    progress_bar
        Show a progress bar on stderr: True, False, or None (the default) for
        "when stderr is a terminal and there is no ``on_progress``".
    transfer_threshold
        Transfers of arrays of at least this many bytes (64 MiB) are reported.
    compression
        ``"zstd"`` or ``"lz4"`` to compress the arrays of calls both ways (for links
        slower than a few hundred MB/s: see "Wire compression" in the README), None
        (the default) for none; ``$DAGEN_COMPRESSION`` when omitted. It needs the
        codec's package (``pip install 'dagen-grpc[compression]'``) here, and on the
        server to compress responses and to accept compressed uploads.

    The client's attributes are the served functions and classes only. dagen's state
    is ``client.__dagen__`` (a :class:`Connection`: ``target``, ``timeout``,
    ``limits``, ``close()``...). ``with Client(...) as c:`` closes the channel at the
    end of the block, as does :func:`dagen.close`; ``with dagen.call_options(client=c,
    timeout=..., on_progress=...)`` overrides the settings for the calls made inside
    the block. Ctrl-C during a call, or a timeout, cancels it on the server too.

    Subclass a generated ``Client`` to add helpers of your own; its methods then call
    the served functions as ``self.<function>(...)``.
    """

    __dagen_spec__: ClassVar[ClientSpec]
    __dagen__: Connection

    def __init_subclass__(
        cls,
        *,
        pb2: Any = None,
        contract: ContractInfo | None = None,
        classes: list[type[RemoteObject]] | tuple[type[RemoteObject], ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if pb2 is None:  # a user's subclass of a generated client: it serves the same
            if "__dagen_spec__" not in dir(cls):
                raise TypeError(
                    f"{cls.__qualname__}: subclass a client that dagen build generated, "
                    "or pass pb2= (the compiled contract) to ServiceClient"
                )
            return
        owner = f"{cls.__module__}.{cls.__qualname__}"
        functions = [
            introspect_function(fn, owner, skip_first=True)
            for name, fn in vars(cls).items()
            if inspect.isfunction(fn) and not name.startswith("_")
        ]
        remote_classes = [introspect_class(c, cls.__module__) for c in classes]
        service = make_service(pb2.DESCRIPTOR.package, cls.__doc__, functions, remote_classes)
        methods = {fn.key: Method(service, fn, pb2) for fn in service.rpcs}
        cls.__dagen_spec__ = ClientSpec(pb2, service, methods, contract)
        for c in classes:
            c._dagen_client_class_ = cls

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
        on_progress: ProgressCallback | None = None,
        progress_bar: bool | None = None,
        transfer_threshold: int = TRANSFER_THRESHOLD,
        server_name: str | None = None,
        compression: str | None | object = ...,
    ) -> None:
        spec = getattr(type(self), "__dagen_spec__", None)
        if spec is None:
            raise TypeError("ServiceClient is the base of the clients dagen build generates")
        self.__dagen__ = Connection(
            spec,
            target,
            certs=certs,
            identity=identity,
            insecure=insecure,
            timeout=timeout,
            chunk_bytes=chunk_bytes,
            limits=limits,
            on_progress=on_progress,
            progress_bar=progress_bar,
            transfer_threshold=transfer_threshold,
            server_name=server_name,
            compression=compression,
        )

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.__dagen__.close()

    def __repr__(self) -> str:
        target = getattr(getattr(self, "__dagen__", None), "target", None)
        return f"<{type(self).__module__}.{type(self).__qualname__} target={target!r}>"


class Connection:
    """dagen's state of one client, ``client.__dagen__``: the channel, the settings
    (``target``, ``identity``, ``timeout``, ``chunk_bytes``, ``limits``,
    ``on_progress``, ``progress_bar``, ``transfer_threshold``, ``compression``; see
    :class:`ServiceClient`), and the calls."""

    def __init__(
        self,
        spec: ClientSpec,
        target: str | None,
        *,
        certs: str | os.PathLike[str] | None,
        identity: str | None,
        insecure: bool | None,
        timeout: float | None | object,
        chunk_bytes: int,
        limits: Limits | None,
        on_progress: ProgressCallback | None,
        progress_bar: bool | None,
        transfer_threshold: int,
        server_name: str | None,
        compression: str | None | object,
    ) -> None:
        env = os.environ
        compression = compression_from_env() if compression is ... else (
            normalize_compression(compression))  # type: ignore[arg-type]
        require(compression)  # CodecUnavailable (an ImportError) before any call
        server_name = server_name or env.get(ENV_SERVER_NAME) or None
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
        self.spec = spec
        self.methods = spec.methods
        self.contract = spec.contract
        self.target = target
        self.identity = identity
        self.timeout: float | None = timeout  # type: ignore[assignment]
        self.chunk_bytes = chunk_bytes
        self.limits = limits or Limits()
        self.on_progress = on_progress
        self.progress_bar = progress_bar
        self.transfer_threshold = transfer_threshold
        self.compression: str | None = compression  # type: ignore[assignment]
        self.tls = not insecure
        self.bound: dict[type, type] = {}  # remote classes bound to this client (bound_class)
        if insecure:
            self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            assert certs is not None
            credentials = channel_credentials(certs, identity)
            self.channel = grpc.secure_channel(
                target, credentials, options=channel_options(target, server_name)
            )
        self._contract_headers = {  # the same on every call: made once
            name: (CONTRACT_METADATA_KEY, self.contract.header(m.fn.rpc))
            for name, m in self.methods.items()
            if self.contract is not None
        }
        # functions called with one request and one response: (method, stub, metadata)
        self._unary: dict[str, tuple[Method, Any, Any]] = {}
        self.stubs: dict[str, Any] = {}
        for name, method in self.methods.items():
            if method.streaming:
                frame_cls = method.output_cls
                assert frame_cls is not None  # a streaming method has frames
                self.stubs[name] = self.channel.stream_stream(
                    method.path,
                    request_serializer=frame_serializer,
                    response_deserializer=frame_deserializer(frame_cls, budget_check(
                        frame_cls.DESCRIPTOR, self.limits, "the response")),
                )
            elif method.fn.generator:
                self.stubs[name] = self.channel.unary_stream(
                    method.path,
                    request_serializer=method.request_cls.SerializeToString,
                    response_deserializer=message_deserializer(
                        method.response_cls, self.limits, "the response"),
                )
            else:
                self.stubs[name] = self.channel.unary_unary(
                    method.path,
                    request_serializer=method.request_cls.SerializeToString,
                    response_deserializer=message_deserializer(
                        method.response_cls, self.limits, "the response"),
                )
                self._unary[name] = (method, self.stubs[name], self._metadata(method))

    @contextmanager
    def options(self, **options: Any) -> Iterator[None]:
        """Override ``timeout``, ``on_progress``, ``progress_bar``, ``transfer_threshold`` or
        ``compression`` for this client's calls inside the ``with`` block (see
        :func:`dagen.call_options`)."""
        with call_options(client=self, **options):
            yield

    def call(self, name: str, arguments: dict[str, Any], /) -> Any:
        if name in self._unary:
            # One request, one response, no arrays: a path that does little, inline, as
            # a tiny call's time is mostly Python that runs with cold caches.
            method, stub, metadata = self._unary[name]
            timeout = self.timeout if not current_overrides() else settings_for(self).timeout
            request = method.encode_request(arguments)  # no arrays: no EncodeContext needed
            try:
                # A blocking call: no thread per call (future() starts one). grpc checks
                # for signals while it waits, and Ctrl-C there cancels the call.
                response = stub(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as e:
                raise exception_from_rpc_error(
                    e, function=name, target=self.target, timeout=timeout, tls=self.tls
                ) from None
            if type(response) is BadFrame:  # over the decode budget, or no message
                raise self._bad_response(name, response)
            if method.result_as_is:
                return response.result
            try:
                return method.decode_response(response, NO_ARRAYS)
            except WireError as e:
                raise self._refuse_response(name, e) from None
        method = self.methods[name]
        settings = settings_for(self)
        # ValueError or CodecUnavailable before anything is sent:
        codecs = require(normalize_compression(settings.compression)) if method.streaming else ()
        ctx = EncodeContext(self.chunk_bytes, codecs)
        request = method.encode_request(arguments, ctx)  # TypeError before anything is sent
        metadata = self._metadata(method, codecs)
        if method.fn.generator:
            return self._iterate(method, request, ctx, metadata, settings.timeout)
        stub = self.stubs[name]
        try:
            progress = CallProgress(name, settings)
            upload = UploadCounter(send(method.input_cls, "request", request, ctx))
            frames = stub(iter(upload), timeout=settings.timeout, metadata=metadata)
            try:
                if progress.shows_transfer(ctx.nbytes):
                    upload.follow(progress, ctx.nbytes, frames)
                message, dctx = receive(
                    frames,
                    "response",
                    self.limits,
                    alloc=_RESULT_BUFFERS.take,
                    on_progress=progress.run if progress.active else None,
                    on_bytes=functools.partial(progress.transfer, "download")
                    if progress.active
                    else None,
                )
            except BaseException:
                frames.cancel()  # Ctrl-C, a failing callback or a bad frame: stop the server's work too
                raise
            finally:
                progress.close()
            return method.decode_response(message, dctx)
        except grpc.RpcError as e:
            raise exception_from_rpc_error(
                e, function=name, target=self.target, timeout=settings.timeout, tls=self.tls
            ) from None
        except WireError as e:
            raise self._refuse_response(name, e) from None

    def _bad_response(self, name: str, bad: BadFrame) -> CallError:
        return self._refuse_response(name, bad.exception())

    def _refuse_response(self, name: str, e: WireError) -> CallError:
        if isinstance(e, LimitExceeded):
            return CallError(f"{name}(): the server at {self.target} sent a response over "
                             f"this client's limits: {e}", grpc.StatusCode.RESOURCE_EXHAUSTED)
        return CallError(f"{name}(): the server at {self.target} sent a malformed response: {e}")

    def _metadata(self, method: Method, codecs: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...] | None:
        metadata: tuple[tuple[str, str], ...] = (accept_header(codecs),) if codecs else ()
        if self.contract is not None:
            metadata += (self._contract_headers[method.name],)
        return metadata or None

    def _iterate(self, method: Method, request: Any, ctx: EncodeContext, metadata: Any,
                 timeout: float | None) -> Iterator[Any]:
        """The items of a generator's results as they arrive; closing the iterator
        early cancels the remote call (and closes the remote generator)."""
        stub = self.stubs[method.name]
        call = None
        try:
            if method.streaming:
                call = stub(send(method.input_cls, "request", request, ctx), timeout=timeout,
                            metadata=metadata)
                for message, dctx in receive_each(call, "response", self.limits):
                    yield method.decode_response(message, dctx)
            else:
                call = stub(request, timeout=timeout, metadata=metadata)
                for response in call:
                    if type(response) is BadFrame:
                        raise self._bad_response(method.name, response)
                    yield method.decode_response(response, NO_ARRAYS)
        except grpc.RpcError as e:
            raise exception_from_rpc_error(
                e, function=method.name, target=self.target, timeout=timeout, tls=self.tls
            ) from None
        except WireError as e:
            raise self._refuse_response(method.name, e) from None
        finally:
            if call is not None:
                call.cancel()  # a no-op once the call has completed

    def close(self) -> None:
        """Close the channel: calls in progress are cancelled."""
        self.channel.close()

    def __repr__(self) -> str:
        return f"<dagen connection target={self.target!r}>"


class RemoteObject:
    """Base of the client's mirrors of remote classes: an object holds the arguments
    it was constructed with; each method call sends them, and the server constructs
    the real object with them and calls the method (DASF's semantics)."""

    _dagen_client_class_: ClassVar[type[ServiceClient]]
    _dagen_client_: ClassVar[ServiceClient | None] = None  # set on classes bound to a client
    _dagen_arguments_: dict[str, Any]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_dagen_arguments_", {}).items())
        return f"{type(self).__qualname__}({args})"


def call(client: ServiceClient, key: str, arguments: dict[str, Any], /) -> Any:
    """Call the served function ``key`` through ``client`` with ``arguments`` (by
    parameter name): what the generated client's functions do."""
    return client.__dagen__.call(key, arguments)


def call_method(
    target: RemoteObject | type[RemoteObject], key: str, arguments: dict[str, Any], /
) -> Any:
    """Call a remote class's method: on an object (its constructor arguments go along)
    or on the class (static and class methods)."""
    cls = target if isinstance(target, type) else type(target)
    client = cls._dagen_client_ or default_client(cls._dagen_client_class_)
    if not isinstance(target, type):
        arguments[INSTANCE_FIELD] = target._dagen_arguments_
    return client.__dagen__.call(key, arguments)


def close(client: ServiceClient, /) -> None:
    """Close ``client``'s channel (what leaving ``with Client(...)`` does)."""
    client.__dagen__.close()


class bound_class:  # noqa: N801 - used like a decorator in generated code
    """``client.Model`` is a subclass of ``Model`` whose calls go through ``client``."""

    def __init__(self, cls: type[RemoteObject], /) -> None:
        self.cls = cls

    def __get__(self, client: ServiceClient | None, owner: type) -> type[RemoteObject]:
        if client is None:
            return self.cls
        cache = client.__dagen__.bound
        if self.cls not in cache:
            cache[self.cls] = type(self.cls.__name__, (self.cls,), {
                "_dagen_client_": client, "__module__": self.cls.__module__,
                "__qualname__": self.cls.__qualname__, "__doc__": self.cls.__doc__,
            })
        return cache[self.cls]


C = TypeVar("C", bound=ServiceClient)
_defaults: dict[tuple[type, tuple[str | None, ...]], ServiceClient] = {}
_defaults_lock = threading.Lock()


def default_client(cls: type[C], /) -> C:
    """The client the module-level functions use, configured by the environment
    (``DAGEN_TARGET``, ``DAGEN_CERTS``, ``DAGEN_IDENTITY``, ``DAGEN_TIMEOUT``,
    ``DAGEN_INSECURE``, ``DAGEN_COMPRESSION``); a new one whenever those change."""
    key = (
        cls,
        tuple(
            os.environ.get(v)
            for v in (ENV_TARGET, ENV_CERTS, ENV_IDENTITY, ENV_TIMEOUT, ENV_INSECURE,
                      ENV_SERVER_NAME, ENV_COMPRESSION)
        ),
    )
    with _defaults_lock:
        client = _defaults.get(key)
        if client is None:
            client = _defaults[key] = cls()
        return client  # type: ignore[return-value]
