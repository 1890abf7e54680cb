"""The last response frame of a one-frame call, sent with the call's status.

grpc's sync server sends each message of a streaming response on its own and waits, in
the handler thread, until its one event thread has seen the send complete; then it sends
the status. A unary response goes with its status in one batch and nobody waits. For a
call whose response is one frame, dagen does the same as a unary response through
``grpc._server._status`` (grpc's own function for that batch): on loopback, with one
8 KiB message, that takes ~100 µs of CPU off each side of the call and ~150 µs off its
time (``benchmarks/grpc_shapes.py``, UT against US). The bytes on the wire are the same
(the message, then the trailers).

grpc's private function is used only if it is there with the parameters it has had
since grpc 1.x (``rpc_event, state, serialized_response``) and the servicer context has
the call's state; otherwise the frame goes as any other (``send_with_status`` answers
False).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ._wire import frame_serializer


@dataclass(frozen=True)
class LastFrame:
    """The handler's last frame: sent with the status if it can be (see above)."""

    frame: Any


SENT = object()  # yielded after the status has gone: grpc drops it and ends the call


def _private_status() -> Any:
    try:
        from grpc import _server

        status = _server._status
        params = list(inspect.signature(status).parameters)
    except Exception:  # noqa: BLE001 - another grpc: no shortcut
        return None
    return status if params == ["rpc_event", "state", "serialized_response"] else None


_STATUS = _private_status()


def send_with_status(context: Any, frame: Any) -> bool:
    """Send ``frame`` with the call's status (and its trailing metadata); False if this
    grpc does not allow it (send it as any other frame then)."""
    rpc_event = getattr(context, "_rpc_event", None)
    state = getattr(context, "_state", None)
    if _STATUS is None or rpc_event is None or state is None:
        return False
    _STATUS(rpc_event, state, frame_serializer(frame))
    return True


def serializer(item: Any) -> bytes:
    """The response serializer of one-frame calls: nothing for SENT (grpc sends nothing
    once the status has gone)."""
    return b"" if item is SENT else frame_serializer(item)
