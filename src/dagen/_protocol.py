"""One remote function as both ends see it: its messages, its codecs and its frames."""

from __future__ import annotations

import inspect
import operator
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._arrays import DecodeContext, EncodeContext, allocate_arrays
from ._model import INSTANCE_FIELD, Function, Parameter, Service
from ._sink import ArraySink
from ._types import EncodeError, ScalarNode
from ._wire import BadFrame, ChunkIn, Limits, WireError

# Inline arrays (NDArray.data) are negotiated as compression is: a client that reads
# them says so in its call metadata; a server that reads them answers so in the
# trailing metadata of such a call, and the client inlines its uploads from then on.
INLINE_METADATA_KEY = "dagen-inline"
INLINE_HEADER = (INLINE_METADATA_KEY, "1")
# A client whose request is one frame (every array inline, or none) says so: the server
# then takes it as the one message of a unary-stream rpc (grpc reads it with the call,
# with no wait for the end of the client's stream). The bytes on the wire are the same.
FRAMES_METADATA_KEY = "dagen-frames"
ONE_FRAME_HEADER = (FRAMES_METADATA_KEY, "1")


def says(metadata: Iterable[tuple[str, Any]] | None, key: str) -> bool:
    """Whether the peer's metadata says ``key: 1``: FRAMES_METADATA_KEY, its request is
    one frame; INLINE_METADATA_KEY, it reads inline arrays."""
    return any(k == key and value == "1" for k, value in metadata or ())


class Method:
    """A function of the service with the protobuf classes generated for it."""

    def __init__(self, service: Service, fn: Function, pb2: Any) -> None:
        self.fn = fn
        self.name = fn.key  # "anomaly", "Model.predict"
        self.rpc = fn.rpc  # "Anomaly", "ModelPredict"
        self.path = f"/{service.full_name}/{fn.rpc}"
        self.streaming = fn.streaming or _client_streaming(pb2, service, fn)
        try:
            self.request_cls = getattr(pb2, fn.request_message)
            self.response_cls = getattr(pb2, fn.response_message)
            self.input_cls = getattr(pb2, fn.input_frame) if self.streaming else None
            self.output_cls = getattr(pb2, fn.output_frame) if self.streaming else None
        except AttributeError as e:
            raise RuntimeError(
                f"{pb2.__name__} does not match the service model ({e}): rebuild with dagen build"
            ) from None
        self.arguments = _Arguments(fn.parameters, self.name)
        owner = [c for c in service.classes if c.name == fn.owner]
        init = owner[0].init if fn.has_instance and owner else None
        self.init = _Arguments(init.parameters, str(fn.owner)) if init is not None else None
        # plain_arguments(request): the arguments in order, when they are the request's
        # fields as they are (a function of plain scalars, every one sent); else None,
        # and decode_request says what they are. An attribute: one frame less per call.
        self.plain_arguments: Callable[[Any], tuple[Any, ...] | None] = (
            self.arguments.read_plain if self.init is None else _no_plain_arguments
        )
        # (name, check) of each argument when all are plain scalars: see encode_request
        self._plain_checks = self.arguments.plain_checks if self.init is None else None
        returns = fn.returns
        self._check_result = returns.check if _set_as_is(returns) else None
        self._result_exact = returns.exact if _set_as_is(returns) else None
        # the result is the response's field as it is (a plain scalar): read it in place
        self.result_as_is = _read_as_is(returns)

    # -- requests ---------------------------------------------------------------------------------

    def encode_request(self, arguments: dict[str, Any], ctx: EncodeContext | None = None,
                       into: Any = None) -> Any:
        """The request message; a TypeError names the argument that does not fit.
        ``ctx`` collects its arrays (it may be left out by a method without arrays).
        ``into``: the message to fill (a frame's request: see new_frame), else a new one."""
        if into is None:
            msg = self.request_cls()
        else:
            msg = into
            msg.SetInParent()  # an empty request is still its frame's request
        if ctx is None:
            if self.streaming:
                raise ValueError(f"{self.name}() sends arrays: encode it with an EncodeContext")
            checks = self._plain_checks
            if checks is not None:  # plain scalars: set each field, with no more calls
                try:
                    for name, check, exact in checks:
                        value = arguments[name]
                        setattr(msg, name, value if type(value) is exact else check(value))
                    return msg
                except Exception:  # noqa: BLE001,S110 - encode() below names what is wrong
                    pass
            ctx = EncodeContext()
        if self.init is not None:
            instance = getattr(msg, INSTANCE_FIELD)
            instance.SetInParent()
            self.init.encode(arguments[INSTANCE_FIELD], instance, ctx)
        self.arguments.encode(arguments, msg, ctx)
        return msg

    def decode_request(self, msg: Any, ctx: DecodeContext) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments to call the function with."""
        return self.arguments.decode(msg, ctx)

    def decode_instance(self, msg: Any, ctx: DecodeContext) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments to construct a method's object with."""
        assert self.init is not None
        return self.init.decode(getattr(msg, INSTANCE_FIELD), ctx)

    # -- responses --------------------------------------------------------------------------------

    def encode_response(self, value: Any, ctx: EncodeContext | None = None,
                        into: Any = None) -> Any:
        """The response message; ``ctx`` collects its arrays (it may be left out by a
        method without arrays). ``into``: the message to fill (a frame's response: see
        new_frame), else a new one."""
        try:
            if into is not None:
                into.SetInParent()  # an empty response is still its frame's response
                if self._check_result is not None:
                    into.result = self._check_result(value)
                    return into
            if self._check_result is not None:  # a plain scalar: the message in one call
                if type(value) is self._result_exact:
                    try:
                        return self.response_cls(result=value)
                    except ValueError:
                        pass  # it does not fit the field: check() says why
                return self.response_cls(result=self._check_result(value))
            if ctx is None:
                if self.streaming:
                    raise ValueError(
                        f"{self.name}() returns arrays: encode it with an EncodeContext")
                ctx = EncodeContext()
            msg = self.response_cls() if into is None else into
            self.fn.returns.encode(value, msg, "result", ctx)
        except EncodeError as e:
            raise TypeError(
                f"{self.name}() returned a value that does not match its annotation"
                f"{' at ' + e.path if e.path else ''}: {e.message}"
            ) from None
        return msg

    def decode_response(self, msg: Any, ctx: DecodeContext) -> Any:
        if self.result_as_is:
            return msg.result
        return self.fn.returns.decode(msg, "result", ctx)


class _Arguments:
    """The parameters of a function (or of a class's constructor) in a message: encoded
    with errors naming the argument, decoded with defaults, required-ness and pydantic
    constraints applied."""

    def __init__(self, parameters: tuple[Parameter, ...], who: str) -> None:
        self.parameters = parameters
        self.who = who
        self.validators = {
            p.name: v for p in parameters if (v := constraint_validator(p.annotation)) is not None
        }
        self.positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY]
        self._plan = [  # each parameter; whether it has presence; whether it is read as is
            (p, p.type.shape in ("scalar", "message"), _read_as_is(p.type)) for p in parameters
        ]
        # A tiny call's time is mostly Python run with cold caches: when every argument
        # is its field's value, passed by position, read them with no Python call
        # per field (HasField over map, then one attrgetter).
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        plain = not self.validators and all(
            presence and as_is and p.kind in positional for p, presence, as_is in self._plan
        )
        names = tuple(p.name for p in parameters)
        self._plain_names = names if plain else None
        self._read_fields = _fields_reader(names)
        checks = tuple((p.name, p.type.check, p.type.exact) for p in parameters
                       if _set_as_is(p.type))
        self.plain_checks = checks if len(checks) == len(parameters) else None

    def read_plain(self, msg: Any) -> tuple[Any, ...] | None:
        """The arguments in order if all are plain scalars taken by position and were
        all sent; else None (a missing one gets its default or an error from decode)."""
        names = self._plain_names
        if names is None or not all(map(msg.HasField, names)):
            return None
        return self._read_fields(msg)

    def encode(self, values: dict[str, Any], msg: Any, ctx: EncodeContext) -> None:
        for p in self.parameters:
            try:
                p.type.encode(values[p.name], msg, p.name, ctx)
            except EncodeError as e:
                raise TypeError(f"{self.who}(): argument {p.name!r}{e.path}: {e.message}") from None
            except (TypeError, ValueError, OverflowError) as e:
                raise TypeError(f"{self.who}(): argument {p.name!r}: {e}") from None

    def decode(self, msg: Any, ctx: DecodeContext) -> tuple[list[Any], dict[str, Any]]:
        values = {}
        for p, has_presence, plain in self._plan:
            name = p.name
            # A parameter a client built before it was added did not send gets its
            # Python default; a required one that was not sent is refused (proto3
            # would read it as zero).
            if has_presence and not msg.HasField(name):
                if not p.has_default:
                    raise WireError(f"the required argument {name!r} was not sent")
                values[name] = p.default
            elif plain:
                values[name] = getattr(msg, name)
            else:
                values[name] = p.type.decode(msg, name, ctx)
        for name, validate in self.validators.items():
            try:
                values[name] = validate(values[name])
            except ValueError as e:  # pydantic's ValidationError is one
                raise ValueError(f"argument {name!r}: {e}") from None
        return [values.pop(name) for name in self.positional], values


def _no_plain_arguments(msg: Any) -> None:
    return None


def _fields_reader(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A function of a message that gives these fields' values, as a tuple."""
    if len(names) > 1:
        return operator.attrgetter(*names)  # one C call
    if names:
        return lambda msg: (getattr(msg, names[0]),)
    return lambda msg: ()


def _set_as_is(node: Any) -> typing.TypeGuard[ScalarNode]:
    """Whether a value's field is set to what the node's check() makes of it."""
    return isinstance(node, ScalarNode) and type(node).encode is ScalarNode.encode


def _read_as_is(node: Any) -> bool:
    """Whether a parameter's Python value is its message field's value."""
    return (isinstance(node, ScalarNode) and type(node).decode is ScalarNode.decode
            and node.plain)


def constraint_validator(annotation: Any) -> Callable[[Any], Any] | None:
    """For ``Annotated[T, <pydantic constraints>]``: a validator the server applies to the
    decoded argument (the wire carries T; the constraints hold on the server)."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    try:
        import pydantic
    except ImportError:
        return None
    try:
        return pydantic.TypeAdapter(annotation).validate_python
    except pydantic.PydanticUserError:
        return None


def new_frame(frame_cls: Any, field: str) -> tuple[Any, Any]:
    """A frame and its (empty) message field, for encode_request/encode_response to fill
    in place: ``frame_cls(request=message)`` would copy the message (its inline arrays)."""
    frame = frame_cls()
    return frame, getattr(frame, field)


def send(frame_cls: Any, field: str, message: Any, ctx: EncodeContext) -> Iterator[Any]:
    """The frames of one direction of a streaming call: the message, then its chunks."""
    frame, into = new_frame(frame_cls, field)
    into.CopyFrom(message)  # (a message encoded into a frame is sent with send_frame)
    return send_frame(frame, ctx)


def send_frame(frame: Any, ctx: EncodeContext) -> Iterator[Any]:
    """The frames of one direction of a streaming call: the frame of its message (filled
    in place), then its arrays' chunks."""
    yield frame
    yield from ctx.chunks()


def _client_streaming(pb2: Any, service: Service, fn: Function) -> bool:
    """What the compiled contract says: a client reads its functions' model from its own
    signatures, which lack what only the server sees (a ``dagen.Progress`` parameter)."""
    desc = pb2.DESCRIPTOR.services_by_name.get(service.name)
    rpc = desc.methods_by_name.get(fn.rpc) if desc is not None else None
    return bool(rpc is not None and rpc.client_streaming)


def receive(
    frames: Iterable[Any],
    field: str,
    limits: Limits,
    *,
    alloc: Callable[[int], Any] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    on_bytes: Callable[[int, int], None] | None = None,
) -> tuple[Any, DecodeContext]:
    """Read one direction of a streaming call: the message, then the chunks of its
    arrays into arrays allocated once (by ``alloc``); raise WireError if anything is
    out of place. Progress frames before the message go to ``on_progress``;
    ``on_bytes(done, total)`` follows the arrays' bytes as they arrive."""
    it = iter(frames)
    first = next(it, None)
    while first is not None and not isinstance(first, ChunkIn | BadFrame) and (
        first.WhichOneof("frame") == "progress"
    ):
        if on_progress is not None:
            on_progress(first.progress)
        first = next(it, None)
    if first is None:
        raise WireError(f"the stream ended before the {field} message")
    if isinstance(first, BadFrame):
        raise first.exception()
    if isinstance(first, ChunkIn) or first.WhichOneof("frame") != field:
        got = "a chunk" if isinstance(first, ChunkIn) else (
            f"a {first.WhichOneof('frame')} frame" if first.WhichOneof("frame") else "an empty frame"
        )
        raise WireError(f"the first frame must be the {field} message, not {got}")
    message = getattr(first, field)
    sink = ArraySink(limits, alloc)
    allocate_arrays(message, sink)
    total = sink.total
    if on_bytes is not None:
        on_bytes(sink.done, total)  # arrays inside their headers are in already
    for frame in it:
        if type(frame) is ChunkIn:
            sink.write(frame)
            if on_bytes is not None:
                on_bytes(sink.done, total)
        elif isinstance(frame, BadFrame):
            raise frame.exception()
        else:
            raise WireError(f"a second {field} message arrived after the first")
    sink.finish()
    return message, DecodeContext(sink.arrays)


def receive_each(frames: Iterable[Any], field: str, limits: Limits) -> Iterator[tuple[Any, DecodeContext]]:
    """Read a stream of several messages, each followed by its arrays' chunks (the
    results of a generator), yielding each as soon as its last chunk is in: the
    sender sends all of an item's chunks before the next item, and the item's headers
    say how many bytes each array holds."""
    message: Any = None
    sink: ArraySink | None = None  # the item whose chunks are arriving
    for frame in frames:
        if type(frame) is ChunkIn:
            if sink is None:
                raise WireError(f"a chunk arrived outside the arrays of a {field} message")
            sink.write(frame)
        elif isinstance(frame, BadFrame):
            raise frame.exception()
        elif frame.WhichOneof("frame") == field:
            if sink is not None:
                sink.finish()  # raises: it is incomplete (a complete one was handed over)
            message = getattr(frame, field)
            sink = ArraySink(limits)
            allocate_arrays(message, sink)
        else:
            continue
        if sink is not None and sink.complete:
            yield message, DecodeContext(sink.arrays)
            message = sink = None
    if sink is not None:
        sink.finish()  # raises: the stream ended inside an item
