"""The caller's side of long calls: per-call options, and how progress is shown.

Generated client functions keep the original signatures, so per-call settings
cannot be extra arguments. They come from the client (``Client(..., timeout=,
on_progress=, progress_bar=)``) and can be overridden for the calls made inside a
``with`` block, for one client or for all of them (the module-level functions of
a client package included)::

    with dagen.call_options(client=remote, timeout=600, on_progress=print):
        remote.regrid(sst)
    with dagen.call_options(progress_bar=False):
        ocean_tools_client.anomaly(sst)

Blocks nest (the inner one wins) and belong to the thread (context) that entered them.

Reports go to the ``on_progress`` callback when there is one, else to a tqdm bar on
stderr when stderr is a terminal or the caller runs in a Jupyter kernel
(``progress_bar=None``, the default), else nowhere. In a kernel the bar is a widget
when ipywidgets is installed, text otherwise.
Transfers of arrays of at least ``transfer_threshold`` bytes (64 MiB) are reported
too, with bytes, rate and time left.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ._progress import ProgressReport, report_from_proto
from ._wire import ChunkOut

TRANSFER_THRESHOLD = 64 << 20
_TRANSFER_INTERVAL = 0.1  # seconds between transfer reports to a callback

ProgressCallback = Callable[[ProgressReport], Any]

_OPTIONS = ("timeout", "on_progress", "progress_bar", "transfer_threshold", "compression")
_overrides: contextvars.ContextVar[tuple[tuple[object | None, dict[str, Any]], ...]] = (
    contextvars.ContextVar("dagen_call_options", default=())
)


@contextmanager
def call_options(*, client: object | None = None, **options: Any) -> Iterator[None]:
    """Override the settings of the calls made inside the block, for ``client`` or (when
    None) every client: ``timeout`` (seconds, None for none), ``on_progress`` (a callback
    taking a :class:`dagen.ProgressReport`, or None), ``progress_bar`` (True, False, or
    None: when stderr is a terminal or in a Jupyter kernel, and there is no callback),
    ``transfer_threshold``
    (bytes from which array transfers are reported), ``compression`` (``"zstd"``,
    ``"lz4"`` or None: compress the arrays of the call both ways, see dagen._codecs)."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown call option {sorted(unknown)[0]!r}: expected {', '.join(_OPTIONS)}"
        )
    if client is not None:  # a generated client: its settings live in client.__dagen__
        client = getattr(client, "__dagen__", client)
    token = _overrides.set((*_overrides.get(), (client, dict(options))))
    try:
        yield
    finally:
        _overrides.reset(token)


@dataclass(frozen=True)
class CallSettings:
    timeout: float | None
    on_progress: ProgressCallback | None
    progress_bar: bool | None
    transfer_threshold: int
    compression: str | None = None  # a codec family of dagen._codecs


# The overrides of the enclosing ``with call_options(...)`` blocks, empty (false)
# outside any: one call into C, for the path of tiny calls.
current_overrides = _overrides.get


def settings_for(client: Any) -> CallSettings:
    """The settings of ``client`` (a client's ``__dagen__``) with the overrides of the enclosing ``with`` blocks."""
    values = {name: getattr(client, name) for name in _OPTIONS}
    for target, options in _overrides.get():
        if target is None or target is client:
            values.update(options)
    return CallSettings(**values)


# -- showing one call -------------------------------------------------------------------------------


class CallProgress:
    """Shows the progress of one call: to a callback, a terminal bar, or nowhere."""

    def __init__(self, function: str, settings: CallSettings) -> None:
        self.function = function
        self.callback = settings.on_progress
        bar = settings.progress_bar
        if bar is None:
            bar = self.callback is None and (_stderr_is_terminal() or in_kernel())
        self.bar = bar
        self.threshold = settings.transfer_threshold
        self.started = time.perf_counter()
        self._bar: Any = None
        self._phase = ""
        self._phase_started = self.started
        self._last_sent = 0.0
        self._transfer_phase = ""  # apart from _phase, which only the bars keep

    @property
    def active(self) -> bool:
        return self.bar or self.callback is not None

    def shows_transfer(self, total: int) -> bool:
        return self.active and total >= self.threshold

    # -- reports -----------------------------------------------------------------------------------

    def run(self, message: Any) -> None:
        """A ``dagen.v1.Progress`` frame from the function."""
        report = report_from_proto(message, self.function, time.perf_counter() - self.started)
        if self.callback is not None:
            self.callback(report)
        if self.bar:
            bar = self._bar_for("run", None)
            if report.fraction is not None:
                bar.n = round(report.fraction * 1000)
            label = " › ".join(s.name for s in report.steps)
            text = f"{label}: {report.message}" if label and report.message else label or report.message
            bar.set_postfix_str(text, refresh=False)
            bar.refresh()

    def transfer(self, phase: str, done: int, total: int) -> None:
        """``done`` of ``total`` bytes of the arguments (upload) or result (download)."""
        if not self.shows_transfer(total):
            return
        now = time.perf_counter()
        if phase != self._transfer_phase:
            self._transfer_phase = phase
            self._phase_started = now
            self._last_sent = 0.0
        if self.bar:
            bar = self._bar_for(phase, total)
            bar.update(done - bar.n)
        if self.callback is not None and (done == total or now - self._last_sent >= _TRANSFER_INTERVAL):
            self._last_sent = now
            self.callback(
                ProgressReport(
                    function=self.function,
                    phase=phase,
                    fraction=done / total if total else 1.0,
                    bytes_done=done,
                    bytes_total=total,
                    elapsed=now - self._phase_started,
                )
            )

    def _bar_for(self, phase: str, total: int | None) -> Any:
        if self._bar is not None and self._phase == phase:
            return self._bar
        self.close()
        self._phase = phase
        tqdm, where = _bar_class()
        if phase == "run":
            self._bar = tqdm(
                total=1000,
                desc=f"{self.function}()",
                **where,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
                leave=False,
            )
        else:
            self._bar = tqdm(
                total=total,
                desc=f"{self.function}() {phase}",
                **where,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=True,
            )
        return self._bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._phase = ""


def _bar_class() -> tuple[Any, dict[str, Any]]:
    """tqdm's bar for where the caller runs, and where it goes: a widget in a Jupyter
    kernel with ipywidgets, else text on stderr (sized for a terminal)."""
    if in_kernel():
        try:
            import ipywidgets  # noqa: F401 - the widget bar needs it
            from tqdm.notebook import tqdm as widget
        except ImportError:
            pass
        else:
            return widget, {}
    from tqdm import tqdm

    return tqdm, {"file": sys.stderr, **_size()}


def in_kernel() -> bool:
    """Whether this runs in a Jupyter (IPython) kernel, where stderr is no terminal but
    a bar is still seen."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001 - any IPython that does not answer: not a kernel
        return False


def _size() -> dict[str, int]:
    """Nothing (tqdm measures the terminal), or a size where the terminal says it has
    none (a pseudo-terminal nobody sized), in which tqdm would print nothing."""
    try:
        columns, lines = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        columns = lines = 0
    size = {}
    if columns <= 0:
        size["ncols"] = 100
    if lines <= 0:
        size["nrows"] = 24
    return size


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class UploadCounter:
    """Counts the array bytes of frames as grpc takes them from the request iterator
    (on its own thread); the calling thread reads the count to report it. The message's
    frame carries ``message_bytes`` of arrays inside their headers; chunks the rest."""

    def __init__(self, frames: Iterable[Any], message_bytes: int = 0) -> None:
        self._frames = frames
        self._message_bytes = message_bytes
        self.done = 0
        self.finished = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        try:
            for frame in self._frames:
                if type(frame) is ChunkOut:
                    self.done += frame.block_nbytes  # before compression
                else:  # the message
                    self.done += self._message_bytes
                yield frame
        finally:
            self.finished.set()

    def follow(self, progress: CallProgress, total: int, rpc: Any) -> None:
        """Report the upload from the calling thread until it ends (or the rpc does)."""
        while not self.finished.wait(0.1):
            if rpc.done():
                return
            progress.transfer("upload", self.done, total)
        progress.transfer("upload", self.done, total)
