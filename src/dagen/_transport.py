"""How a client's calls reach a server: the transport seam.

A :class:`Connection` asks its transport for one *stub* per remote function and calls
it the way grpc's multi-callables are called: ``stub(request, timeout=..., metadata=...)``
with the request message (a unary function) or an iterator of frames (a function with
arrays), answering with the response message, an iterator of responses (a generator)
or an iterator of frames with ``cancel()`` and ``done()``. Failures are raised as
``grpc.RpcError`` (with ``code()``, ``details()`` and ``trailing_metadata()``), which
the connection turns into dagen's exceptions.

:class:`GrpcTransport` is the one that talks to a server; ``dagen.testing.MockTransport``
answers with a function of the test's, so that the client's own work (options, error
mapping, progress display) is tested without one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from ._budget import frame_parser, message_deserializer
from ._protocol import Method
from ._security import CHANNEL_OPTIONS, channel_credentials, channel_options
from ._wire import Limits, frame_serializer

# Unary-stream calls (a generator's, a single-frame one's) read their responses in the
# calling thread, not through the channel's thread that hands every event over.
_SINGLE_THREAD = ("SingleThreadedUnaryStream", 1)  # grpc.experimental.ChannelOptions


class Transport(Protocol):
    """What a client needs of its way to the server."""

    target: str  # what error messages call the server
    tls: bool  # whether failures may be TLS handshakes (for their hints)

    def stub(self, method: Method, limits: Limits) -> Callable[..., Any]:
        """The callable that makes calls of ``method``; what it receives is decoded
        within ``limits`` (the client's decode budget: dagen._budget)."""

    def close(self) -> None:
        """Let go of the connection: calls in progress are cancelled."""


class GrpcTransport:
    """A gRPC channel to ``target``: mutual TLS with the pair of ``identity`` in the
    folder ``certs``, or plain text when ``certs`` is None."""

    def __init__(
        self,
        target: str,
        certs: str | os.PathLike[str] | None,
        identity: str | None = None,
        server_name: str | None = None,
    ) -> None:
        self.target = target
        self.tls = certs is not None
        if certs is None:
            self.channel = grpc.insecure_channel(target, options=[*CHANNEL_OPTIONS, _SINGLE_THREAD])
        else:
            self.channel = grpc.secure_channel(
                target, channel_credentials(certs, identity),
                options=[*channel_options(target, server_name), _SINGLE_THREAD],
            )

    def stub(self, method: Method, limits: Limits) -> Callable[..., Any]:
        if method.streaming:
            return self._framed(self.channel.stream_stream, method, limits)
        multicallable = self.channel.unary_stream if method.fn.generator else self.channel.unary_unary
        return multicallable(
            method.path,
            request_serializer=method.request_cls.SerializeToString,
            response_deserializer=message_deserializer(method.response_cls, limits, "the response"),
        )

    def single_frame_stub(self, method: Method, limits: Limits) -> Callable[..., Any]:
        """A streaming method called with one request frame (its arrays inline, or none):
        as a unary-stream call, the same on the wire (one message, then the end of the
        client's half), which grpc sends from the calling thread; a stream-stream call
        starts a thread per call to take the frames from their iterator."""
        return self._framed(self.channel.unary_stream, method, limits)

    @staticmethod
    def _framed(multicallable: Callable[..., Any], method: Method, limits: Limits) -> Any:
        """``method`` called through ``multicallable`` with its frames as messages."""
        frame_cls = method.output_cls
        assert frame_cls is not None  # a streaming method has frames
        return multicallable(
            method.path,
            request_serializer=frame_serializer,
            response_deserializer=frame_parser(frame_cls, limits, "the response"),
        )

    def close(self) -> None:
        self.channel.close()

    def __repr__(self) -> str:
        return f"<dagen grpc transport target={self.target!r}>"
