"""The door of the server: every call passes here before anything of it is decoded,
allocated or run.

:class:`Guard` wraps each handler of the served module once, when the server is made
(:meth:`Guard.wrap`). For each call it

1. reads the caller's :class:`~dagen._security._identity.Identity` from the TLS auth context,
   when anything needs it (a policy, a deny-list with entries, the calls per identity
   limit, or :func:`dagen.caller`);
2. refuses it with PERMISSION_DENIED when the deny-list (``revoked.txt``) names its
   certificate or identity, or the policy does not let it call the function;
3. refuses it with RESOURCE_EXHAUSTED when the server, or that identity, has as many
   calls in progress as it may (:class:`~dagen._security._limits.Admission`);
4. runs the call with :func:`dagen.caller` set to the identity (the executor carries
   it on to the thread or worker process that runs the function).

It is not a grpc interceptor: an interceptor runs Python on every call to find the
handler, which a tiny call pays for in latency.
"""

from __future__ import annotations

import contextvars
import logging
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc

from .._logs import call_id
from .._wire import LimitExceeded
from ._denylist import DENY_LIST, DenyList
from ._identity import Identity, LazyIdentity, reset_caller, set_caller
from ._limits import Admission
from ._policy import Policy

log = logging.getLogger("dagen.server")


class Guard:
    def __init__(
        self,
        functions: dict[str, str],
        admission: Admission,
        *,
        policy: Policy | None = None,
        deny_list: DenyList | None = None,
    ) -> None:
        self.functions = functions  # rpc name -> function key ("anomaly", "Model.predict")
        self.admission = admission
        self.policy = policy
        self.deny_list = deny_list

    @classmethod
    def for_servicer(cls, servicer: Any, certs: str | Path | None) -> Guard:
        options = servicer.options
        return cls(
            {m.rpc: key for key, m in servicer.methods.items()},
            servicer.admission,
            policy=getattr(options, "policy", None),
            deny_list=DenyList(Path(certs) / DENY_LIST) if certs is not None else None,
        )

    # -- the checks -------------------------------------------------------------------------------

    def admit(
        self, function: str, context: grpc.ServicerContext
    ) -> tuple[LazyIdentity, Callable[[], None]]:
        """The caller, once it may make this call, and what ends the call's admission;
        aborts the rpc otherwise. The caller is identified only when something needs
        its name: a policy, a deny-list with entries, or its call limit."""
        caller = LazyIdentity(context)
        deny_list = self.deny_list
        # empty() reads the file if it changed (looking every 0.1 s), refused() need not:
        # it goes first, so that a policy does not keep the list from being read
        if (deny_list is not None and not deny_list.empty()) or self.policy is not None:
            self._refuse_unless_allowed(function, caller, context)
        try:
            leave = self.admission.enter(caller.name)
        except LimitExceeded as e:
            self._refuse_overload(function, caller, context, e)
        return caller, leave

    def _refuse_unless_allowed(
        self, function: str, caller: LazyIdentity, context: grpc.ServicerContext
    ) -> None:
        """Abort the rpc if the deny-list or the policy refuses this caller."""
        identity = caller.get()
        deny_list = self.deny_list
        reason = deny_list.refused(identity, refresh=False) if deny_list is not None else None
        if reason is not None:
            log.warning("refused %s() to %s from %s: %s", function, identity,
                        identity.peer, reason, extra=_refused(context, function, identity,
                                                              "PERMISSION_DENIED", reason))
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{function}(): {reason} on this server")
        if self.policy is not None and not self.policy.allowed(identity, function):
            log.warning("refused %s() to %s from %s: not allowed by the policy %s",
                        function, identity, identity.peer, self.policy.source,
                        extra=_refused(context, function, identity, "PERMISSION_DENIED",
                                       f"not allowed by the policy {self.policy.source}"))
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {function}(): the server's policy does not "
                "allow it",
            )

    @staticmethod
    def _refuse_overload(function: str, caller: LazyIdentity, context: grpc.ServicerContext,
                         e: LimitExceeded) -> NoReturn:
        log.warning("refused %s() to %s: %s", function, caller.get(), e,
                    extra=_refused(context, function, caller.get(), "RESOURCE_EXHAUSTED", str(e)))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{function}(): {e}")
        raise AssertionError("unreachable: abort raises")

    # -- wrapping the handlers ------------------------------------------------------------------

    def wrap(self, handlers: dict[str, grpc.RpcMethodHandler]) -> dict[str, grpc.RpcMethodHandler]:
        """The servicer's handlers (by rpc name), guarded."""
        return {rpc: self._wrap(self.functions[rpc], h) for rpc, h in handlers.items()}

    def _wrap(self, function: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(function, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(function, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if not handler.request_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(function, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise ValueError(f"{function}(): dagen makes no client-streaming rpcs")

    def _unary(self, function: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        admit = self.admit

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            caller, leave = admit(function, context)
            # The handler runs to its end in this thread: set dagen.caller() here and
            # reset it after (cheaper than running in a copied context).
            token = set_caller(caller)
            try:
                return behaviour(request, context)
            finally:
                reset_caller(token)
                leave()

        return handle

    def _streaming(
        self, function: str, behaviour: Callable[..., Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            ctx = self._enter(function, context)
            return run_each(ctx, ctx.run(behaviour, request, context))

        return handle

    def check(self, function: str, context: grpc.ServicerContext) -> None:
        """Abort the rpc if the deny-list or the policy refuses its caller ``function``
        (a dataset passed back as an argument is checked for its dataset function)."""
        deny_list = self.deny_list
        if (deny_list is not None and not deny_list.empty()) or self.policy is not None:
            self._refuse_unless_allowed(function, LazyIdentity(context), context)

    def enter(self, function: str, context: grpc.ServicerContext) -> contextvars.Context:
        """Admit a call of ``function`` (aborting the rpc when refused) until the rpc
        ends; the context to run its handler in, where dagen.caller() is set (the reads
        of a dataset's blocks are calls of its dataset function)."""
        return self._enter(function, context)

    def _enter(self, function: str, context: grpc.ServicerContext) -> contextvars.Context:
        """Admit the call until the rpc ends; the context its handler runs in, where
        dagen.caller() is set."""
        caller, leave = self.admit(function, context)
        if not context.add_callback(leave):
            leave()  # the rpc ended already
        ctx = contextvars.copy_context()
        ctx.run(set_caller, caller)
        return ctx


def run_each(ctx: contextvars.Context, responses: Iterator[Any]) -> Iterator[Any]:
    """The items of a handler's responses, each taken in ``ctx`` (where dagen.caller() is
    set); the handler's generator is closed in it too."""
    try:
        while True:
            try:
                item = ctx.run(next, responses)
            except StopIteration:
                return
            yield item
    except BaseException as e:
        # gRPC keeps the error it raises when the caller goes away (in the rpc's
        # state) and with it, through the traceback, every frame it passed: the
        # call's arrays would outlive the call. Let go of their locals.
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            ctx.run(close)
        del responses


def _refused(context: grpc.ServicerContext, function: str, identity: Identity, status: str,
             reason: str) -> dict[str, Any]:
    """The fields of a refusal's log record (--log-format json writes them)."""
    return {"event": "refused", "call_id": call_id(context), "identity": str(identity),
            "peer": identity.peer, "function": function, "status": status, "reason": reason}
