"""The server: decode a request, call the real function, encode its result.

A generated server module only declares ``class XServicer(Servicer, module=..., pb2=...)``;
everything else happens here, once for every service. Creating and running the grpc
server that serves it is :mod:`dagen._serve`'s job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import types
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import grpc

from . import _last
from . import _references as references
from ._arrays import NO_ARRAYS, DecodeContext, EncodeContext
from ._budget import budget_check, frame_parser
from ._codecs import accepted_codecs
from ._datasets import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PER_IDENTITY,
    DatasetsService,
    HandleRefused,
    Registry,
    refuse_handle,
)
from ._errors import ERROR_METADATA_KEY, remote_error_details
from ._exceptions import ClusterUnavailable
from ._executors import (
    CallState,
    Cancelled,
    Executor,
    Slots,
    executor_class,
    make_executor,
    stopped,
    supervise,
)
from ._handshake import CONTRACT_METADATA_KEY, ContractInfo
from ._introspect import introspect_module
from ._logs import call_id
from ._model import Service
from ._progress import (
    cancellation_scope,
    reset_cancellation_check,
    reset_time_remaining,
    set_cancellation_check,
    set_time_remaining,
    state_to_proto,
)
from ._protocol import (
    FRAMES_METADATA_KEY,
    INLINE_HEADER,
    INLINE_METADATA_KEY,
    Method,
    new_frame,
    receive,
    says,
    send_frame,
)
from ._security import Admission, CallLimits, Policy, UploadWatch, cancel_rpc
from ._wire import (
    DEFAULT_CHUNK_BYTES,
    LimitExceeded,
    Limits,
    WireError,
    frame_serializer,
)

log = logging.getLogger("dagen.server")

# A unary call that ran longer than this is asked, once done, whether its caller is
# still there (to log and end it as cancelled rather than as done).
_ASK_IF_GONE_AFTER = 0.001


@dataclass(frozen=True)
class ServerOptions:
    debug: bool = False  # send tracebacks to callers
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    limits: Limits = Limits()
    executor: str = "thread"  # or "process", "dask": see dagen._executors
    workers: int = 8  # calls run at the same time
    policy: Policy | None = None  # who may call what; None: every certificate of the CA
    call_limits: CallLimits = CallLimits()  # calls in progress, per identity, memory
    executor_config: Any = None  # what the executor needs: dask's cluster (dagen._cluster)
    dataset_idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds a dataset handle lives unused
    max_datasets_per_identity: int = DEFAULT_MAX_PER_IDENTITY  # handles one identity holds


class Servicer:
    """Serves the functions of a module; subclass with ``module=`` and ``pb2=``."""

    module: ClassVar[types.ModuleType]
    pb2: ClassVar[Any]
    service: ClassVar[Service]
    methods: ClassVar[dict[str, Method]]  # by function key: "anomaly", "Model.predict"
    contract: ClassVar[ContractInfo | None]
    _served: ClassVar[dict[str, frozenset[str | None]]]  # by rpc: fingerprints served

    def __init_subclass__(
        cls,
        *,
        module: types.ModuleType,
        pb2: Any,
        contract: ContractInfo | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.module = module
        cls.pb2 = pb2
        cls.service = introspect_module(module)
        cls.contract = contract
        cls.methods = {fn.key: Method(cls.service, fn, pb2) for fn in cls.service.rpcs}
        cls._served = {m.rpc: contract.served(m.rpc) for m in cls.methods.values()} if (
            contract is not None) else {}  # (empty without a contract: nothing checked)

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self._functions: dict[str, Callable[..., Any]] = {}
        executor = executor_class(self.options.executor)
        refusals = [(m.fn, why) for m in self.methods.values()
                    if (why := executor.refuses(m.fn)) is not None]
        if refusals:
            fn, why = refusals[0]
            others = (f" ({', '.join(f.key + '()' for f, _ in refusals[1:])} too)"
                      if len(refusals) > 1 else "")
            where = getattr(self.module, "__file__", None) or self.module.__name__
            raise ValueError(
                f"{where}:{fn.line}: {fn.key}(): {why}{others}; serve the module with "
                "--executor thread (the default), or make "
                + ("the method a module-level function" if fn.owner
                   else "the generator return a list")
            )
        for key, method in self.methods.items():
            fn = method.fn
            owner: Any = getattr(self.module, fn.owner) if fn.owner else self.module
            if fn.has_instance:  # a method: called on an object made per call
                self._functions[key] = functools.partial(_construct_and_call, owner, fn.name)
            else:
                self._functions[key] = getattr(owner, fn.name)
        self._executor = make_executor(self.options.executor, self.module, self.options.workers,
                                       self.options.executor_config)
        self.admission = Admission(self.options.call_limits)  # see dagen._security._guard
        # what the servers serving it started for it (health watchers): stopped by close()
        self.on_close: list[Callable[[], None]] = []
        self.uploads = UploadWatch(self.options.call_limits.upload_idle_timeout)
        # the datasets its @dagen.dataset functions opened, and the service that reads
        # them (made with the server's guard: dagen._serve)
        self.datasets = Registry(self.options.dataset_idle_timeout,
                                 self.options.max_datasets_per_identity)
        self.on_close.append(self.datasets.close)
        self.datasets_service: DatasetsService | None = None

    @property
    def executor(self) -> Executor:
        return self._executor

    def close(self) -> None:
        """Stop what serving it started, then the executor (its worker processes)."""
        for stop in self.on_close:
            stop()
        self._executor.shutdown()

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """A handler for each rpc of the service, by rpc name.

        A unary rpc's request arrives as bytes and its handler parses it: a malformed
        one gets INVALID_ARGUMENT (grpc alone would answer INTERNAL), and the parsing
        runs in the call's thread, not in the one thread that takes all grpc's events."""
        handlers = {}
        for method in self.methods.values():
            if method.streaming:
                handlers[method.rpc] = grpc.stream_stream_rpc_method_handler(
                    self._stream_handler(method),
                    response_serializer=frame_serializer,
                )
            elif method.fn.generator:
                handlers[method.rpc] = grpc.unary_stream_rpc_method_handler(
                    self._items_handler(method),
                    response_serializer=method.response_cls.SerializeToString,
                )
            else:
                handlers[method.rpc] = grpc.unary_unary_rpc_method_handler(
                    self._unary_handler(method),
                    response_serializer=method.response_cls.SerializeToString,
                )
        return handlers

    def one_frame_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """For each streaming rpc, by rpc name: the handler of a call whose client says
        its request is one frame (``dagen-frames: 1``), a unary-stream handler. grpc reads
        that frame with the call (no request iterator, no wait for the client's
        half-close); the bytes on the wire are those of the stream-stream rpc."""
        return {
            method.rpc: grpc.unary_stream_rpc_method_handler(
                self._one_frame_handler(method), response_serializer=_last.serializer)
            for method in self.methods.values() if method.streaming
        }

    # -- handlers -------------------------------------------------------------------------------

    def _unary_handler(self, method: Method) -> Callable[[bytes, grpc.ServicerContext], Any]:
        # A unary function has no progress reports to forward (a Progress parameter
        # makes an rpc streaming): under an executor that allows it (inline_slots: the
        # thread executor) it runs right here, with no call state, supervision or future.
        # A tiny call's time is mostly Python that runs with cold caches, so this path
        # touches as little code as it can.
        executor = self._executor
        slots = executor.inline_slots
        fn = self._functions[method.fn.key]
        plain_arguments = method.plain_arguments
        checks_contract = self.contract is not None
        check = self._budget(method)

        def handle(data: bytes, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            request = self._parse(method, data, context, check)
            if checks_contract:
                self._check_contract(method, context)
            args: Any = plain_arguments(request)
            kwargs: dict[str, Any] = {}
            if args is None:
                args, kwargs = self._decode(method, request, NO_ARRAYS, context)
            if slots is None:
                result = self._invoke(method, executor.open(context), args, kwargs, context,
                                      started)
            else:
                result = self._run_here(fn, slots, method, args, kwargs, context, started)
            try:
                response = method.encode_response(result)
            except TypeError as e:
                # a quick function that returned early for a caller who had gone (it is
                # asked only after long calls) ends as stopped, not as a bad result
                gone = stopped(context)
                if gone is not None:
                    self._stop_gone(method, context, gone, started)
                self._refuse_result(method, e, context)
            if log.isEnabledFor(logging.DEBUG):
                self._log(method, context, 0, 0, started)
            return response

        return handle

    def _stream_handler(
        self, method: Method
    ) -> Callable[[Iterator[Any], grpc.ServicerContext], Iterator[Any]]:
        options = self.options
        frame_cls = method.input_cls
        assert frame_cls is not None  # a streaming method has frames
        parse = frame_parser(frame_cls, options.limits, "the request")

        def handle(messages: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            frames = self.uploads.watch(  # parsed here, not in grpc's one event thread
                map(parse, messages),
                lambda why: cancel_rpc(context, grpc.StatusCode.ABORTED, f"{method.name}(): {why}"),
            )
            self._check_contract(method, context)
            call = self._executor.open(context)
            with self._abandoned(method, context, call, started):
                yield from self._stream(method, context, call, frames, started)

        return handle

    def _one_frame_handler(
        self, method: Method
    ) -> Callable[[bytes, grpc.ServicerContext], Iterator[Any]]:
        frame_cls = method.input_cls
        assert frame_cls is not None  # a streaming method has frames
        parse = frame_parser(frame_cls, self.options.limits, "the request")

        def handle(data: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            frame = parse(data)  # a BadFrame (malformed, over budget): receive() refuses it
            self._check_contract(method, context)
            call = self._executor.open(context)
            final = None
            with self._abandoned(method, context, call, started):
                frames = self._stream(method, context, call, (frame,), started, last=True)
                for item in frames:
                    if type(item) is _last.LastFrame:
                        final = item.frame
                        for _ in frames:  # the call's own end (its log line) comes first
                            raise AssertionError("a frame after the last")
                        break
                    yield item
            if final is not None:  # (outside: grpc drops this generator after SENT)
                yield _last.SENT if _last.send_with_status(context, final) else final

        return handle

    def _stream(self, method: Method, context: grpc.ServicerContext, call: CallState,
                frames: Iterable[Any], started: float, last: bool = False) -> Iterator[Any]:
        """A streaming call, once its state is open: receive, run, send. With ``last``, a
        response of one frame is yielded as a LastFrame (see dagen._last)."""
        options = self.options
        alloc = self.admission.alloc(context, call.alloc)
        try:
            request, dctx = receive(frames, "request", options.limits, alloc=alloc)
        except LimitExceeded as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method.name}(): {e}")
        except WireError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}(): {e}")
        bytes_in = sum(a.nbytes for a in dctx.arrays.values())
        service = self.datasets_service  # selections of its datasets passed back: resolved
        # (no dataset function: none is set, and a reference that arrives is refused)
        token = references.resolver.set(service.resolver(context)) if service else None
        try:
            args, kwargs = self._decode(method, request, dctx, context)
        finally:
            if token is not None:
                references.resolver.reset(token)
        del dctx, request  # the function's arguments hold what is still needed
        result = yield from self._execute(method, call, args, kwargs, context, started)
        del args, kwargs
        if method.fn.dataset:  # a @dagen.dataset function: what it opened, under a handle
            result = self._open_dataset(method, result, context)
        bytes_out = 0
        metadata = context.invocation_metadata()
        codecs = accepted_codecs(metadata)  # compression the caller asked for
        # and whether it reads arrays inside their headers
        inline = says(metadata, INLINE_METADATA_KEY)
        if inline:  # it will inline its uploads to this server from now on
            context.set_trailing_metadata((INLINE_HEADER,))
        for item in self._items(method, result, context):
            ectx = EncodeContext(options.chunk_bytes, codecs, inline)
            # encoded into its frame: no copy of its inline arrays
            frame, into = new_frame(method.output_cls, "response")
            self._encode(method, item, ectx, context, into)
            del item
            if last and not method.fn.generator and ectx.whole:
                yield _last.LastFrame(frame)
            else:
                yield from send_frame(frame, ectx)
            del frame
            bytes_out += ectx.nbytes
        alloc.completed()  # its buffers may serve the next call (a failed call's are freed)
        self._log(method, context, bytes_in, bytes_out, started)

    def _items_handler(self, method: Method) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        """A generator without arrays: a server stream of response messages."""
        check = self._budget(method)

        def handle(data: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            request = self._parse(method, data, context, check)
            self._check_contract(method, context)
            args, kwargs = self._decode(method, request, NO_ARRAYS, context)
            call = self._executor.open(context)
            with self._abandoned(method, context, call, started):
                result = self._invoke(method, call, args, kwargs, context, started)
                for item in self._items(method, result, context):
                    yield self._encode(method, item, EncodeContext(), context)
            self._log(method, context, 0, 0, started)

        return handle

    def _items(self, method: Method, result: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """The results to send: the one result, or each item of a generator's. A caller
        that goes away closes the generator (its ``finally`` blocks run)."""
        if not method.fn.generator:
            yield result
            return
        iterator = iter(result)
        # The generator's body runs here, as it is iterated: dagen.cancelled() asks the rpc.
        check = lambda: stopped(context) is not None  # noqa: E731
        try:
            while True:
                try:
                    with cancellation_scope(check, context.time_remaining):
                        item = next(iterator)
                except StopIteration:
                    return
                except Exception as e:  # noqa: BLE001 - the caller gets it, the server goes on
                    log.info("%s() raised %s: %s", method.name, type(e).__name__, e,
                             exc_info=self.options.debug, extra=call_fields(
                                 context, method, "failed", "UNKNOWN", reason=_reason(e)))
                    self._abort_with(context, e, method, grpc.StatusCode.UNKNOWN)
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _budget(self, method: Method) -> Callable[[bytes], None]:
        """The decode budget of a method's request (see dagen._budget)."""
        return budget_check(method.request_cls.DESCRIPTOR, self.options.limits, "the request")

    @staticmethod
    def _parse(method: Method, data: bytes, context: grpc.ServicerContext,
               check: Callable[[bytes], None]) -> Any:
        try:
            check(data)  # before anything of it is parsed: its cost is bounded
            return method.request_cls.FromString(data)
        except LimitExceeded as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method.name}(): {e}")
            raise AssertionError("unreachable: abort raises") from None
        except Exception as e:  # noqa: BLE001 - any parse failure is the peer's fault
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{method.name}(): malformed request message: {e}")
            raise AssertionError("unreachable: abort raises") from None

    def _check_contract(self, method: Method, context: grpc.ServicerContext) -> None:
        """Refuse a caller whose contract header names a fingerprint not served (set
        lookups on every call; ContractInfo.check words the refusal)."""
        served = self._served.get(method.rpc)
        if served is None:
            return
        for key, value in context.invocation_metadata():
            if key == CONTRACT_METADATA_KEY:
                if value.partition(":")[2] not in served:
                    assert self.contract is not None
                    reason = self.contract.check(method.rpc, value)
                    fields = call_fields(context, method, "contract_mismatch",
                                         "FAILED_PRECONDITION", reason=reason)
                    log.warning("%s %s() refused: contract mismatch: %s", fields["identity"],
                                method.fn.key, reason, extra=fields)
                    context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"{method.fn.key}(): {reason}")
                return

    def _decode(
        self, method: Method, request: Any, dctx: DecodeContext, context: grpc.ServicerContext
    ) -> tuple[list[Any], dict[str, Any]]:
        try:
            if method.init is not None:  # a method: its object, made from the caller's arguments
                init_args, init_kwargs = method.decode_instance(request, dctx)
                args, kwargs = method.decode_request(request, dctx)
                return [init_args, init_kwargs, *args], kwargs
            return method.decode_request(request, dctx)
        except (WireError, ValueError, TypeError, KeyError) as e:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}(): invalid request: {e}"
            )
            raise  # unreachable: abort raises

    def _run_here(
        self,
        fn: Callable[..., Any],
        slots: Slots,
        method: Method,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        context: grpc.ServicerContext,
        started: float,
    ) -> Any:
        """Run a unary call in grpc's handler thread; ``dagen.cancelled()`` asks the rpc
        (only when the function checks: asking costs a lock). A call that waited for a
        slot runs only if its caller is still there."""
        if slots.take():  # it waited for a slot: it runs only if still wanted
            try:
                gone = stopped(context)
            except BaseException:
                slots.give()
                raise
            if gone is not None:
                slots.give()
                self._stop_gone(method, context, gone, started)
        token = set_cancellation_check(lambda: stopped(context) is not None)
        remaining = set_time_remaining(context.time_remaining)
        result: Any = None
        failure: Exception | None = None
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the caller gets it, the server goes on
            failure = e
        finally:
            reset_time_remaining(remaining)
            reset_cancellation_check(token)
            slots.give()
        # Its deadline may have passed before grpc ends the rpc: asked after a failure
        # or a call long enough for that to be likely. (Asking costs a tiny call a lock
        # and a clock; a result for a caller who has gone is dropped by grpc anyway.)
        if failure is not None or time.perf_counter() - started > _ASK_IF_GONE_AFTER:
            gone = stopped(context)
            if gone is not None:  # nobody waits for the result (or the error it caused)
                self._stop_gone(method, context, gone, started)
        if failure is not None:
            log.info("%s() raised %s: %s", method.name, type(failure).__name__, failure,
                     exc_info=failure if self.options.debug else None,  # (outside the except)
                     extra=call_fields(context, method, "failed", "UNKNOWN",
                                       reason=_reason(failure), seconds=_since(started)))
            self._abort_with(context, failure, method, grpc.StatusCode.UNKNOWN)
        return result

    def _stop_gone(self, method: Method, context: grpc.ServicerContext, gone: Cancelled,
                   started: float, call: CallState | None = None) -> NoReturn:
        """End the rpc of a call whose caller has gone (or whose deadline passed)."""
        self._log_cancelled(method, context, call, gone, started)
        code = grpc.StatusCode.DEADLINE_EXCEEDED if gone.deadline else grpc.StatusCode.CANCELLED
        context.abort(code, f"{method.name}() was stopped: {gone.reason}")
        raise AssertionError("unreachable: abort raises")

    def _invoke(
        self,
        method: Method,
        call: CallState,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        context: grpc.ServicerContext,
        started: float,
    ) -> Any:
        """Run the function to its end (a unary rpc has no frames for its reports)."""
        running = self._execute(method, call, args, kwargs, context, started)
        while True:
            try:
                next(running)
            except StopIteration as done:
                return done.value

    def _execute(
        self,
        method: Method,
        call: CallState,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        context: grpc.ServicerContext,
        started: float,
    ) -> Generator[Any, None, Any]:
        """Run the function in the executor, yield its progress frames, return its result;
        stop it when the caller goes or the deadline passes."""
        fn = self._functions[method.fn.key]
        # A function without progress reports has none to forward while it runs: under an
        # executor that allows it (threads), it runs in this handler thread, with no
        # hand-off to another (as a unary call's does); dagen.cancelled() still asks the rpc.
        future = self._executor.submit(
            call, method.name, fn, method.fn.progress, args, kwargs,
            inline=method.fn.progress is None,
        )
        del args, kwargs
        try:
            reports = supervise(call, future, context)
            while True:
                try:
                    sequence, state = next(reports)
                except StopIteration as done:
                    return done.value
                if method.fn.progress is not None and method.output_cls is not None:
                    yield method.output_cls(progress=state_to_proto(state, sequence))
        except Cancelled as e:
            self._stop_gone(method, context, e, started, call)
        except ClusterUnavailable as e:  # no dask worker to run it: the caller may retry later
            log.warning("%s(): %s", method.name, e, extra=call_fields(
                context, method, "failed", "UNAVAILABLE", reason=str(e), seconds=_since(started)))
            self._abort_with(context, e, method, grpc.StatusCode.UNAVAILABLE)
        except Exception as e:  # noqa: BLE001 - the caller gets it, the server goes on
            log.info(
                "%s() raised %s: %s", method.name, type(e).__name__, e, exc_info=self.options.debug,
                extra=call_fields(context, method, "failed", "UNKNOWN", reason=_reason(e),
                                  seconds=_since(started)),
            )
            self._abort_with(context, e, method, grpc.StatusCode.UNKNOWN)
        raise AssertionError("unreachable: abort raises")

    @contextlib.contextmanager
    def _abandoned(self, method: Method, context: grpc.ServicerContext, call: CallState,
                   started: float) -> Iterator[None]:
        """Log a call whose rpc ended while grpc was sending its frames: grpc then drops
        the handler's generator (GeneratorExit at its yield), with nothing else said."""
        try:
            yield
        except GeneratorExit:
            gone = stopped(context) or Cancelled("the caller cancelled it")
            call.cancel(gone.reason)
            self._log_cancelled(method, context, call, gone, started)
            raise

    def _log_cancelled(
        self,
        method: Method,
        context: grpc.ServicerContext,
        call: CallState | None,
        e: Cancelled,
        started: float,
    ) -> None:
        what = self._executor.after_cancel(call)
        fields = call_fields(context, method, "cancelled",
                             "DEADLINE_EXCEEDED" if e.deadline else "CANCELLED",
                             reason=e.reason, seconds=_since(started))
        log.info("%s %s() cancelled after %.3f s, because %s; %s", fields["identity"],
                 method.name, fields["seconds"], e.reason, what, extra=fields)

    def _encode(
        self, method: Method, result: Any, ctx: EncodeContext, context: grpc.ServicerContext,
        into: Any = None,
    ) -> Any:
        try:
            return method.encode_response(result, ctx, into)
        except TypeError as e:
            self._refuse_result(method, e, context)

    def _open_dataset(self, method: Method, result: Any, context: grpc.ServicerContext) -> Any:
        from ._security import caller, identity_from_auth

        # the guard's caller, looked up once for the call (its policy may have already)
        identity = caller() or identity_from_auth(context.auth_context() or {}, context.peer())
        try:
            return self.datasets.open(method.fn.key, result, identity.name)
        except TypeError as e:
            self._refuse_result(method, e, context)
        except HandleRefused as e:  # the caller holds too many
            refuse_handle(context, e, f"{method.name}()")
            raise AssertionError("unreachable: abort raises") from None

    def _refuse_result(self, method: Method, e: TypeError, context: grpc.ServicerContext) -> NoReturn:
        log.warning("%s", e)
        self._abort_with(context, e, method, grpc.StatusCode.INTERNAL)
        raise AssertionError("unreachable: abort raises")

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
        # Transfers are logged; calls that move no arrays only at DEBUG, because the
        # line (and the caller's certificate lookup) costs a tiny call ~20% of its time.
        level = logging.INFO if method.streaming else logging.DEBUG
        if log.isEnabledFor(level):
            fields = call_fields(context, method, "call", "OK", bytes_in=bytes_in,
                                 bytes_out=bytes_out, seconds=_since(started))
            log.log(
                level,
                "%s %s() in %d B, out %d B, %.3f s",
                fields["identity"],
                method.name,
                bytes_in,
                bytes_out,
                fields["seconds"],
                extra=fields,
            )


class StreamingMethods(grpc.GenericRpcHandler):
    """The streaming rpcs of a service: the handler for a request of one frame when the
    caller says so in its metadata (see Servicer.one_frame_handlers), else the
    stream-stream handler (old clients, other languages, requests with chunks)."""

    def __init__(self, service: str, streamed: dict[str, grpc.RpcMethodHandler],
                 one_frame: dict[str, grpc.RpcMethodHandler]) -> None:
        self.paths = {f"/{service}/{rpc}": (handler, one_frame[rpc])
                      for rpc, handler in streamed.items()}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handlers = self.paths.get(details.method)  # type: ignore[attr-defined]
        if handlers is None:
            return None
        one = says(details.invocation_metadata, FRAMES_METADATA_KEY)  # type: ignore[attr-defined]
        return handlers[1] if one else handlers[0]


class UnknownMethods(grpc.GenericRpcHandler):
    """The paths the server does not serve (grpc matches its registered methods first):
    logged with who asked, then UNIMPLEMENTED as grpc would answer."""

    def __init__(self, service: str) -> None:
        self.service_name = service

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        path = details.method  # type: ignore[attr-defined]

        def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            who = caller_of(context)
            log.warning(
                "unknown method %s called: %s called %s, which this server does not serve "
                "(it serves %s): a client built from another module, or another server's "
                "client", path, who, path, self.service_name,
                extra={"event": "unknown_method", "call_id": call_id(context), "identity": who,
                       "function": path, "status": "UNIMPLEMENTED",
                       "reason": "no such method on this server"},
            )
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
            yield b""  # unreachable: abort raises

        return grpc.stream_stream_rpc_method_handler(refuse)


def caller_of(context: grpc.ServicerContext) -> str:
    """The caller's identity: the subject CN of its client certificate."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else context.peer()


def call_fields(context: grpc.ServicerContext, method: Method, event: str, status: str,
                **fields: Any) -> dict[str, Any]:
    """The fields of a call's log record (``extra=``; --log-format json writes them)."""
    return {"event": event, "call_id": call_id(context), "identity": caller_of(context),
            "function": method.fn.key, "status": status, **fields}


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 6)


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# -- methods ------------------------------------------------------------------------------------


def _construct_and_call(owner: type, name: str, init_args: list[Any], init_kwargs: dict[str, Any],
                        *args: Any, **kwargs: Any) -> Any:
    """Call a method as DASF does: on an object made with the caller's arguments."""
    return getattr(owner(*init_args, **init_kwargs), name)(*args, **kwargs)
