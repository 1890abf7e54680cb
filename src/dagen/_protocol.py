"""One remote function as both ends see it: its messages, its codecs and its frames."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from ._arrays import DecodeContext, EncodeContext, allocate_arrays
from ._model import Function, Service
from ._types import EncodeError
from ._wire import ArraySink, BadFrame, ChunkIn, Limits, WireError


class Method:
    """A function of the service with the protobuf classes generated for it."""

    def __init__(self, service: Service, fn: Function, pb2: Any) -> None:
        self.fn = fn
        self.name = fn.name
        self.path = f"/{service.full_name}/{fn.rpc}"
        self.streaming = fn.streaming
        try:
            self.request_cls = getattr(pb2, fn.request_message)
            self.response_cls = getattr(pb2, fn.response_message)
            self.input_cls = getattr(pb2, fn.input_frame) if fn.streaming else None
            self.output_cls = getattr(pb2, fn.output_frame) if fn.streaming else None
        except AttributeError as e:
            raise RuntimeError(
                f"{pb2.__name__} does not match the service model ({e}): rebuild with dagen build"
            ) from None
        self._positional = [
            p.name for p in fn.parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]

    # -- requests ---------------------------------------------------------------------------------

    def encode_request(self, arguments: dict[str, Any], ctx: EncodeContext) -> Any:
        """The request message; a TypeError names the argument that does not fit."""
        msg = self.request_cls()
        for p in self.fn.parameters:
            try:
                p.type.encode(arguments[p.name], msg, p.name, ctx)
            except EncodeError as e:
                raise TypeError(
                    f"{self.name}(): argument {p.name!r}{e.path}: {e.message}"
                ) from None
            except (TypeError, ValueError, OverflowError) as e:
                raise TypeError(f"{self.name}(): argument {p.name!r}: {e}") from None
        return msg

    def decode_request(self, msg: Any, ctx: DecodeContext) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments to call the function with."""
        values = {p.name: p.type.decode(msg, p.name, ctx) for p in self.fn.parameters}
        args = [values.pop(name) for name in self._positional]
        return args, values

    # -- responses --------------------------------------------------------------------------------

    def encode_response(self, value: Any, ctx: EncodeContext) -> Any:
        msg = self.response_cls()
        try:
            self.fn.returns.encode(value, msg, "result", ctx)
        except EncodeError as e:
            raise TypeError(
                f"{self.name}() returned a value that does not match its annotation"
                f"{' at ' + e.path if e.path else ''}: {e.message}"
            ) from None
        return msg

    def decode_response(self, msg: Any, ctx: DecodeContext) -> Any:
        return self.fn.returns.decode(msg, "result", ctx)


def send(frame_cls: Any, field: str, message: Any, ctx: EncodeContext) -> Iterator[Any]:
    """The frames of one direction of a streaming call: the message, then its chunks."""
    yield frame_cls(**{field: message})
    yield from ctx.chunks()


def receive(frames: Iterable[Any], field: str, limits: Limits) -> tuple[Any, DecodeContext]:
    """Read one direction of a streaming call: the message, then the chunks of its
    arrays into arrays allocated once; raise WireError if anything is out of place."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise WireError(f"the stream ended before the {field} message")
    if isinstance(first, BadFrame):
        raise WireError(first.error)
    if isinstance(first, ChunkIn) or first.WhichOneof("frame") != field:
        raise WireError(f"the first frame must be the {field} message, not a chunk")
    message = getattr(first, field)
    sink = ArraySink(limits)
    allocate_arrays(message, sink)
    for frame in it:
        if type(frame) is ChunkIn:
            sink.write(frame)
        elif isinstance(frame, BadFrame):
            raise WireError(frame.error)
        else:
            raise WireError(f"a second {field} message arrived after the first")
    sink.finish()
    return message, DecodeContext(sink.arrays)
