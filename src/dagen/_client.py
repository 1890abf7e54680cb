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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import grpc

from ._arrays import NO_ARRAYS, EncodeContext
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
from ._futures import current_handle, track
from ._handshake import CONTRACT_METADATA_KEY, ContractInfo
from ._introspect import introspect_class, introspect_function, make_service
from ._model import INSTANCE_FIELD, Service
from ._protocol import (
    INLINE_HEADER,
    INLINE_METADATA_KEY,
    ONE_FRAME_HEADER,
    Method,
    new_frame,
    receive,
    receive_each,
    says,
    send_frame,
)
from ._references import sending_to
from ._security import physical_memory
from ._transport import GrpcTransport, Transport
from ._wire import (
    DEFAULT_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    BadFrame,
    LimitExceeded,
    Limits,
    WireError,
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
    # the mirrors of the served module's exceptions, by "module.qualname" on the server
    exceptions: Mapping[str, type[Exception]] = field(default_factory=dict)


def mirror_html(self: BaseException) -> str:
    """Jupyter's view of a remote exception raised as the client package's mirror."""
    from ._html import error_html

    return error_html(self, {"remote type": type(self).__qualname__})


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
        "when stderr is a terminal or this runs in a Jupyter kernel, and there is no
        ``on_progress``" (in a kernel, a widget when ipywidgets is installed).
    transfer_threshold
        Transfers of arrays of at least this many bytes (64 MiB) are reported.
    compression
        ``"zstd"`` or ``"lz4"`` to compress the arrays of calls both ways (for links
        slower than a few hundred MB/s: see "Wire compression" in the README), None
        (the default) for none; ``$DAGEN_COMPRESSION`` when omitted. It needs the
        codec's package (``pip install 'dagen-grpc[compression]'``) here, and on the
        server to compress responses and to accept compressed uploads.
    transport
        How calls reach the server: a gRPC channel made of ``target``, ``certs``,
        ``identity``, ``insecure`` and ``server_name`` when omitted; for tests of code
        that uses a client, a :class:`dagen.testing.MockTransport` answers calls with a
        function instead (and takes none of those five).

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
        exceptions: Mapping[str, type[Exception]] | None = None,
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
        cls.__dagen_spec__ = ClientSpec(pb2, service, methods, contract, dict(exceptions or {}))
        for c in classes:
            c._dagen_client_class_ = cls
        for mirror in (exceptions or {}).values():
            if "_repr_html_" not in vars(mirror):  # Jupyter's view of a remote exception
                mirror._repr_html_ = mirror_html  # type: ignore[attr-defined]

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
        transport: Transport | None = None,
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
            transport=transport,
        )

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.__dagen__.close()

    def __repr__(self) -> str:
        target = getattr(getattr(self, "__dagen__", None), "target", None)
        return f"<{type(self).__module__}.{type(self).__qualname__} target={target!r}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: server, security, timeout, and the functions with their
        signatures and first docstring lines."""
        from ._html import client_html

        return client_html(self)


class Connection:
    """dagen's state of one client, ``client.__dagen__``: the transport (a gRPC
    channel, ``channel``), the settings (``target``, ``identity``, ``timeout``,
    ``chunk_bytes``, ``limits``, ``on_progress``, ``progress_bar``,
    ``transfer_threshold``, ``compression``; see :class:`ServiceClient`), and the calls."""

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
        transport: Transport | None = None,
    ) -> None:
        env = os.environ
        compression = compression_from_env() if compression is ... else (
            normalize_compression(compression))  # type: ignore[arg-type]
        require(compression)  # CodecUnavailable (an ImportError) before any call
        if transport is not None:
            given = [name for name, value in [("certs", certs), ("identity", identity),
                                              ("insecure", insecure), ("server_name", server_name)]
                     if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: these configure the gRPC channel, and "
                    f"transport={transport!r} replaces it; configure the transport instead"
                )
            target = target or transport.target
        else:
            server_name = server_name or env.get(ENV_SERVER_NAME) or None
            target = target or env.get(ENV_TARGET)
            if not target:
                raise ValueError(
                    f"no server address: pass target='host:port' or set ${ENV_TARGET}")
            check_target(target)
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
            timeout = timeout_from_env()
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
        self.bound: dict[type, type] = {}  # remote classes bound to this client (bound_class)
        if transport is None:
            transport = GrpcTransport(target, None if insecure else certs, identity, server_name)
        self.transport = transport
        self.tls = transport.tls
        self._contract_headers = {  # the same on every call: made once
            name: (CONTRACT_METADATA_KEY, self.contract.header(m.fn.rpc))
            for name, m in self.methods.items()
            if self.contract is not None
        }
        # functions called with one request and one response: (method, stub, metadata)
        self._unary: dict[str, tuple[Method, Any, Any]] = {}
        self.stubs: dict[str, Any] = {
            name: transport.stub(m, self.limits) for name, m in self.methods.items()}
        # streaming calls whose request is one frame: sent with no thread to feed grpc
        single = getattr(transport, "single_frame_stub", None)
        self._single: dict[str, Any] = {} if single is None else {
            name: single(m, self.limits) for name, m in self.methods.items() if m.streaming}
        # whether the server reads arrays inside their headers: it says so in the
        # trailing metadata of a call (the first calls' uploads go as chunks)
        self.server_reads_inline = False
        for name, method in self.methods.items():
            if not method.streaming and not method.fn.generator:
                self._unary[name] = (method, self.stubs[name], self._metadata(method))

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel of a client that talks to a server (the default transport)."""
        channel: grpc.Channel = getattr(self.transport, "channel", None)
        if channel is None:
            raise AttributeError(f"{self.transport!r} has no gRPC channel")
        return channel

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
                handle = current_handle()
                if handle is None:
                    # A blocking call: no thread per call (future() starts one). grpc checks
                    # for signals while it waits, and Ctrl-C there cancels the call.
                    response = stub(request, timeout=timeout, metadata=metadata)
                else:  # a submitted call (dagen.submit): cancelled through its future
                    rpc = stub.future(request, timeout=timeout, metadata=metadata)
                    handle.attach(rpc)
                    response = rpc.result()
            except grpc.RpcError as e:
                raise self._rpc_error(e, name, timeout) from None
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
        ctx = EncodeContext(self.chunk_bytes, codecs, self.server_reads_inline)
        # a streaming request is encoded into its frame: no copy of its inline arrays
        frame, into = new_frame(method.input_cls, "request") if method.streaming else (None, None)
        with sending_to(self):  # selections of datasets this server opened: references
            # a TypeError before anything is sent
            request = method.encode_request(arguments, ctx, into)
        metadata = self._metadata(method, codecs)
        if method.fn.generator:
            return self._iterate(method, request if frame is None else frame, ctx, metadata,
                                 settings.timeout)
        try:
            progress = CallProgress(name, settings)
            single = self._single.get(name) if ctx.whole else None
            if single is not None:  # one frame: no thread to feed it to grpc
                # (the server then reads it with the call: see dagen._protocol)
                frames = single(frame, timeout=settings.timeout,
                                metadata=(*(metadata or ()), ONE_FRAME_HEADER))
                upload = None
            else:
                upload = UploadCounter(send_frame(frame, ctx), ctx.inline_nbytes)
                frames = self.stubs[name](iter(upload), timeout=settings.timeout,
                                          metadata=metadata)
            track(frames)
            try:
                if upload is not None and progress.shows_transfer(ctx.nbytes):
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
            if not self.server_reads_inline:
                self._learn_inline(frames)
            result = method.decode_response(message, dctx)
            if method.fn.dataset:  # a handle: the lazy dataset it stands for
                from ._lazy import open_lazy

                return open_lazy(self, name, result)
            return result
        except grpc.RpcError as e:
            raise self._rpc_error(e, name, settings.timeout) from None
        except WireError as e:
            raise self._refuse_response(name, e) from None

    def _rpc_error(self, e: grpc.RpcError, name: str, timeout: float | None) -> BaseException:
        """What a failed rpc of ``name`` raises (see dagen._errors)."""
        return exception_from_rpc_error(e, function=name, target=self.target, timeout=timeout,
                                        tls=self.tls, mirrors=self.spec.exceptions)

    def _bad_response(self, name: str, bad: BadFrame) -> CallError:
        return self._refuse_response(name, bad.exception())

    def _refuse_response(self, name: str, e: WireError) -> CallError:
        if isinstance(e, LimitExceeded):
            return CallError(f"{name}(): the server at {self.target} sent a response over "
                             f"this client's limits: {e}", grpc.StatusCode.RESOURCE_EXHAUSTED)
        return CallError(f"{name}(): the server at {self.target} sent a malformed response: {e}")

    def _learn_inline(self, call: Any) -> None:
        """Remember whether the server of a completed call reads inline arrays."""
        trailing = getattr(call, "trailing_metadata", None)  # (a test's transport may lack it)
        self.server_reads_inline = (trailing is not None
                                     and says(trailing(), INLINE_METADATA_KEY))

    def _metadata(self, method: Method, codecs: tuple[str, ...] = ()) -> tuple[tuple[str, str], ...] | None:
        metadata: tuple[tuple[str, str], ...] = (accept_header(codecs),) if codecs else ()
        if method.streaming:  # this client reads arrays inside their headers
            metadata += (INLINE_HEADER,)
        if self.contract is not None:
            metadata += (self._contract_headers[method.name],)
        return metadata or None

    def _iterate(self, method: Method, request: Any, ctx: EncodeContext, metadata: Any,
                 timeout: float | None) -> Iterator[Any]:
        """The items of a generator's results as they arrive; closing the iterator
        early cancels the remote call (and closes the remote generator). ``request`` is
        the request's frame when the method streams."""
        stub = self.stubs[method.name]
        call = None
        try:
            if method.streaming:
                call = stub(send_frame(request, ctx), timeout=timeout,
                            metadata=metadata)
                track(call)
                for message, dctx in receive_each(call, "response", self.limits):
                    yield method.decode_response(message, dctx)
                if not self.server_reads_inline:
                    self._learn_inline(call)
            else:
                call = stub(request, timeout=timeout, metadata=metadata)
                track(call)
                for response in call:
                    if type(response) is BadFrame:
                        raise self._bad_response(method.name, response)
                    yield method.decode_response(response, NO_ARRAYS)
        except grpc.RpcError as e:
            raise self._rpc_error(e, method.name, timeout) from None
        except WireError as e:
            raise self._refuse_response(method.name, e) from None
        finally:
            if call is not None:
                call.cancel()  # a no-op once the call has completed

    def close(self) -> None:
        """Close the channel: calls in progress are cancelled."""
        self.transport.close()

    def __repr__(self) -> str:
        return f"<dagen connection target={self.target!r}>"


def check_target(target: str) -> None:
    """Refuse a target grpc would misread: a URL, or a host without its port (grpc
    would take 443 and fail later, or hang on an address nobody serves)."""
    if target.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return
    scheme, sep, rest = target.partition("://")
    if sep:
        address = rest.split("/", 1)[0]
        raise ValueError(
            f"the target {target!r} is a URL: give host:port ({address or 'host:port'!r}); "
            f"{scheme}:// is not needed: the connection is TLS unless insecure=True"
        )
    host, sep, port = target.rpartition(":")
    if ":" in host and not host.startswith("["):
        raise ValueError(
            f"the target {target!r} looks like an IPv6 address without brackets: give "
            "host:port, with the address in brackets ('[::1]:50051')"
        )
    if not sep or not port.isdigit() or not host:
        raise ValueError(
            f"the target {target!r} has no port: give host:port (e.g. '{target.rstrip(':')}:50051', "
            "the port the server printed when it started)"
        )


def timeout_from_env() -> float | None:
    """``$DAGEN_TIMEOUT`` in seconds (``none`` for no timeout), else one hour."""
    text = os.environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(
            f"${ENV_TIMEOUT}={text!r} is not a timeout: give seconds as a positive number "
            f"({ENV_TIMEOUT}=10 or 2.5), or 'none' to wait as long as a call takes"
        )
    return value


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
