"""Test code that uses a dagen client, without a server.

A :class:`MockTransport` answers the client's calls with a function of the test's (as
httpx's ``MockTransport`` does for HTTP): the client does all of its own work (checks
and encodes the arguments, chunks and compresses arrays, maps failures to exceptions,
shows progress), the messages and frames go through their wire encoding both ways,
and the handler sees what a server would::

    import grpc
    from dagen.testing import MockTransport, ProgressState, Reply, RpcError

    def handler(request):
        if request.key == "add":
            return request.arguments["a"] + request.arguments["b"]
        if request.key == "regrid":  # reports progress, then returns
            return Reply(request.arguments["da"], progress=[ProgressState(0.5, "half")])
        raise RpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

    client = Client(transport=MockTransport(handler))
    assert client.add(1, 2) == 3

The handler returns the function's result (a generator's: an iterable of its items), a
:class:`Reply` (progress reports, then the result), or raises :class:`RpcError` (a
failure as the client sees it: ``RpcError.raised(exc, "f")`` is what a server sends
when the function ``f`` raised ``exc``). End-to-end tests still want a real server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from ._arrays import NO_ARRAYS, EncodeContext
from ._errors import ERROR_METADATA_KEY, remote_error_details
from ._progress import ProgressState, ProgressStep, state_to_proto
from ._protocol import Method, receive, send
from ._wire import Limits, frame_deserializer, frame_serializer

__all__ = ["MockTransport", "ProgressState", "ProgressStep", "Reply", "Request", "RpcError"]


@dataclass(frozen=True)
class Request:
    """One call as the handler of a :class:`MockTransport` sees it."""

    key: str  # the function: "add", "Model.predict"
    message: Any  # the request message, decoded from its wire bytes
    arguments: dict[str, Any]  # the arguments by parameter name, as the function gets them
    instance: dict[str, Any] | None  # a remote object's constructor arguments, else None
    frames: tuple[bytes, ...]  # a function with arrays: the frames as sent (else empty)
    timeout: float | None
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Reply:
    """What a handler may return: progress reports of the function, then its result."""

    result: Any = None
    progress: Sequence[ProgressState] = field(default_factory=tuple)


class RpcError(grpc.RpcError):
    """A failed call as grpc reports it to the client: a status code, its details and
    the trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str = "",
                 trailing_metadata: Sequence[tuple[str, Any]] = ()) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self._trailing = tuple(trailing_metadata)

    @classmethod
    def raised(cls, exc: BaseException, function: str, *, debug: bool = False) -> RpcError:
        """What a dagen server sends when the served ``function`` raised ``exc``; with
        ``debug`` (``dagen serve --debug``), the remote traceback too."""
        details = remote_error_details(exc, function, debug)
        return cls(grpc.StatusCode.UNKNOWN, f"{details.type}: {details.message}",
                   ((ERROR_METADATA_KEY, details.SerializeToString()),))

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing


Handler = Callable[[Request], Any]


class MockTransport:
    """A client's transport that answers each call with ``handler(request)``; pass it
    as ``Client(transport=MockTransport(handler))``. ``requests`` lists the calls that
    reached it, in order; ``closed`` says whether the client closed it."""

    def __init__(self, handler: Handler, *, target: str = "mock", tls: bool = True) -> None:
        self.handler = handler
        self.target = target
        self.tls = tls  # whether the client reads failures as a TLS client would
        self.requests: list[Request] = []
        self.closed = False
        self._lock = threading.Lock()

    def stub(self, method: Method, limits: Limits) -> Callable[..., Any]:
        # (the handler's answers are Python objects: no bytes to hold to a decode budget)
        def call(request: Any, *, timeout: float | None = None,
                 metadata: Sequence[tuple[str, str]] | None = None) -> Any:
            return self._call(method, request, timeout, tuple(metadata or ()))

        return call

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<dagen.testing.MockTransport target={self.target!r}>"

    def _call(self, method: Method, request: Any, timeout: float | None,
              metadata: tuple[tuple[str, str], ...]) -> Any:
        if self.closed:
            raise RpcError(grpc.StatusCode.CANCELLED, "Channel closed!")
        frames: tuple[bytes, ...] = ()
        if method.streaming:  # the frames over the wire, read as the server reads them
            frames = tuple(frame_serializer(f) for f in request)
            parse = frame_deserializer(method.input_cls)
            message, ctx = receive([parse(f) for f in frames], "request", Limits())
        else:
            message, ctx = method.request_cls.FromString(request.SerializeToString()), NO_ARRAYS
        args, kwargs = method.decode_request(message, ctx)
        instance = None
        if method.init is not None:
            i_args, i_kwargs = method.decode_instance(message, ctx)
            instance = {**dict(zip(method.init.positional, i_args, strict=True)), **i_kwargs}
        seen = Request(method.name, message,
                       {**dict(zip(method.arguments.positional, args, strict=True)), **kwargs},
                       instance, frames, timeout, metadata)
        with self._lock:
            self.requests.append(seen)
        try:
            answer = self.handler(seen)
        except RpcError as e:
            if method.streaming or method.fn.generator:
                return _Call(_raise(e))  # grpc raises it as the responses are read
            raise
        reply = answer if isinstance(answer, Reply) else Reply(answer)
        if method.fn.generator:
            return _Call(self._items(method, reply.result))
        if not method.streaming:
            return method.response_cls.FromString(
                method.encode_response(reply.result).SerializeToString())
        return _Call(self._frames(method, reply))

    def _frames(self, method: Method, reply: Reply) -> Iterator[Any]:
        frame_cls: Any = method.output_cls
        parse = frame_deserializer(frame_cls)
        for sequence, state in enumerate(reply.progress, 1):
            yield parse(frame_serializer(frame_cls(progress=state_to_proto(state, sequence))))
        ctx = EncodeContext()
        response = method.encode_response(reply.result, ctx)
        for frame in send(frame_cls, "response", response, ctx):
            yield parse(frame_serializer(frame))

    def _items(self, method: Method, items: Iterable[Any]) -> Iterator[Any]:
        if not method.streaming:
            for item in items:
                yield method.response_cls.FromString(method.encode_response(item).SerializeToString())
            return
        parse = frame_deserializer(method.output_cls)
        for item in items:
            ctx = EncodeContext()
            for frame in send(method.output_cls, "response", method.encode_response(item, ctx), ctx):
                yield parse(frame_serializer(frame))


def _raise(error: RpcError) -> Iterator[Any]:
    raise error
    yield  # a generator


class _Call:
    """The responses of a call, as grpc's call objects give them: read them, or cancel."""

    def __init__(self, responses: Iterator[Any]) -> None:
        self._responses = responses
        self.cancelled = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self.cancelled:
            raise RpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        return next(self._responses)

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def done(self) -> bool:
        return True

