"""The door of the server: every call passes here before anything of it is decoded,
allocated or run.

:class:`Guard` is a gRPC server interceptor. For each call of a served function it

1. reads the caller's :class:`~dagen._policy.Identity` from the TLS auth context;
2. refuses it with PERMISSION_DENIED when the deny-list (``revoked.txt``) names its
   certificate or identity, or the policy does not let it call the function;
3. refuses it with RESOURCE_EXHAUSTED when the server, or that identity, has as many
   calls in progress as it may (:class:`~dagen._limits.Admission`);
4. refuses a request message that does not parse with INVALID_ARGUMENT (gRPC alone
   would answer INTERNAL);
5. runs the call with :func:`dagen.caller` set to the identity (the executor carries
   it on to the thread or worker process that runs the function).

Methods it does not know (not the served module's) pass untouched; gRPC answers
UNIMPLEMENTED for paths nobody serves.
"""

from __future__ import annotations

import contextvars
import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from ._limits import Admission
from ._policy import (
    DENY_LIST,
    DenyList,
    Identity,
    Policy,
    identity_from_auth,
    reset_caller,
    set_caller,
)
from ._wire import BadFrame, LimitExceeded

log = logging.getLogger("dagen.server")


class Guard(grpc.ServerInterceptor):
    def __init__(
        self,
        functions: dict[str, str],
        admission: Admission,
        *,
        policy: Policy | None = None,
        deny_list: DenyList | None = None,
    ) -> None:
        self.functions = functions  # rpc path -> function key ("anomaly", "Model.predict")
        # rpc path -> (the handler, its guarded version): wrapped once, not on every call
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self.admission = admission
        self.policy = policy
        self.deny_list = deny_list

    @classmethod
    def for_servicer(cls, servicer: Any, certs: str | Path | None) -> Guard:
        options = servicer.options
        return cls(
            {m.path: key for key, m in servicer.methods.items()},
            servicer.admission,
            policy=getattr(options, "policy", None),
            deny_list=DenyList(Path(certs) / DENY_LIST) if certs is not None else None,
        )

    # -- the checks -------------------------------------------------------------------------------

    def admit(self, function: str, context: grpc.ServicerContext) -> Identity:
        """The caller's identity, once it may make this call; aborts the rpc otherwise."""
        identity = identity_from_auth(context.auth_context() or {}, context.peer())
        if self.deny_list is not None:
            reason = self.deny_list.refused(identity)
            if reason is not None:
                log.warning("refused %s() to %s from %s: %s", function, identity,
                            identity.peer, reason)
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"{function}(): {reason} on this server")
        if self.policy is not None and not self.policy.allowed(identity, function):
            log.warning("refused %s() to %s from %s: not allowed by the policy %s", function,
                        identity, identity.peer, self.policy.source)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {function}(): the server's policy does not allow it",
            )
        try:
            leave = self.admission.enter(identity.name or "anonymous")
        except LimitExceeded as e:
            log.warning("refused %s() to %s: %s", function, identity, e)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{function}(): {e}")
        if not context.add_callback(leave):
            leave()  # the rpc ended already
        return identity

    # -- wrapping the handlers ------------------------------------------------------------------

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        function = self.functions.get(handler_call_details.method)
        if handler is None or function is None:
            return handler
        guarded = self._wrap(function, handler)
        self._wrapped[handler_call_details.method] = (handler, guarded)
        return guarded

    def _wrap(self, function: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(function, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(function, handler.unary_stream, parsed=True),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if not handler.request_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(function, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # client streaming only: dagen never makes such rpcs

    def _unary(self, function: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            # A unary handler runs to its end in this thread: set dagen.caller() here
            # and reset it after (cheaper than running in a copied context).
            token = set_caller(self.admit(function, context))
            try:
                _check_parsed(function, request, context)
                return behaviour(request, context)
            finally:
                reset_caller(token)

        return handle

    def _streaming(
        self, function: str, behaviour: Callable[..., Iterator[Any]], parsed: bool = False
    ) -> Callable[..., Iterator[Any]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            ctx = self._enter(function, context)
            if parsed:
                _check_parsed(function, request, context)
            responses = ctx.run(behaviour, request, context)
            try:
                while True:
                    try:
                        item = ctx.run(next, responses)
                    except StopIteration:
                        return
                    yield item
            except BaseException as e:
                # gRPC keeps the error it raises when the caller goes away (in the rpc's
                # state) and with it, through the traceback, every frame it passed:
                # the call's arrays would outlive the call. Let go of their locals.
                traceback.clear_frames(e.__traceback__)
                raise
            finally:
                close = getattr(responses, "close", None)
                if close is not None:
                    ctx.run(close)
                del responses

        return handle

    def _enter(self, function: str, context: grpc.ServicerContext) -> contextvars.Context:
        """Admit the call; the context its handler runs in, where dagen.caller() is set."""
        identity = self.admit(function, context)
        ctx = contextvars.copy_context()
        ctx.run(set_caller, identity)
        return ctx


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request deserializer that returns BadFrame instead of raising."""
    if deserializer is None:
        return None

    def deserialize(buf: bytes) -> Any:
        try:
            return deserializer(buf)
        except Exception as e:  # noqa: BLE001 - any parse failure is the peer's fault
            return BadFrame(f"malformed request message: {e}")

    return deserialize


def _check_parsed(function: str, request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, BadFrame):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{function}(): {request.error}")
