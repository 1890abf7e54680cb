"""Uploads that stall: a call whose caller sends no frame for ``upload_idle_timeout``
seconds while the server receives its request is cancelled with ABORTED naming the
limit, and what it held is freed when its rpc ends (see dagen._security._limits).

One thread watches every upload in progress, waking at most once a second (and not
at all while none is in progress); receiving a frame only stores the time. A slow
upload that keeps sending is never cut: the clock restarts with every frame (a chunk
frame is at most 4 MiB, so the default of two minutes suits links down to ~35 KB/s).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

log = logging.getLogger("dagen.server")

DEFAULT_UPLOAD_IDLE_TIMEOUT = 120.0

T = TypeVar("T")


class UploadWatch:
    def __init__(self, timeout: float = DEFAULT_UPLOAD_IDLE_TIMEOUT) -> None:
        self.timeout = timeout
        self._lock = threading.Condition()
        # number -> [time of the last frame, what cancels the call]
        self._uploads: dict[int, list[Any]] = {}
        self._numbers = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, frames: Iterator[T], cancel: Callable[[str], None]) -> Iterator[T]:
        """The frames, as they arrive; ``cancel(message)`` if none arrives in time."""
        number = next(self._numbers)
        entry = [time.monotonic(), cancel]
        with self._lock:
            self._uploads[number] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dagen-upload-watch",
                                                daemon=True)
                self._thread.start()
            self._lock.notify()
        try:
            for frame in frames:
                entry[0] = time.monotonic()
                yield frame
        finally:
            with self._lock:
                self._uploads.pop(number, None)

    def _run(self) -> None:
        tick = min(1.0, self.timeout / 4)
        while True:
            with self._lock:
                while not self._uploads:
                    self._lock.wait()
                now = time.monotonic()
                stalled = [n for n, (last, _) in self._uploads.items()
                           if now - last > self.timeout]
                cancels = [self._uploads.pop(n)[1] for n in stalled]
            for cancel in cancels:
                try:
                    cancel(f"the upload sent nothing for {self.timeout:g} s "
                           f"(upload_idle_timeout={self.timeout:g} s); the call is cancelled")
                except Exception:  # noqa: BLE001 - one call's failure must not stop the watch
                    log.exception("cancelling a stalled upload failed")
            time.sleep(tick)


def cancel_rpc(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End an rpc from another thread than its handler's, with a status the caller sees
    (grpc's public ``cancel()`` would say only CANCELLED)."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(code.value[0], details)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - another grpc: its plain cancel
        context.cancel()
