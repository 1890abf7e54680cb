"""dagen: annotated Python functions as secure gRPC services, with arrays streamed in chunks.

The public API is small: generated client packages subclass
:class:`dagen.client.ServiceClient`; failed calls raise the errors below. A served
function may declare a ``Progress`` parameter to report progress and check
``cancelled()``; callers receive ``ProgressReport``s and set per-call options with
``call_options``.
"""

from ._display import call_options
from ._errors import CallError, ContractMismatch, DagenError, RemoteError, ServerUnavailable
from ._progress import Progress, ProgressReport, ProgressStep, cancelled
from ._version import __version__

__all__ = [
    "__version__",
    "DagenError",
    "RemoteError",
    "CallError",
    "ContractMismatch",
    "ServerUnavailable",
    "Progress",
    "ProgressReport",
    "ProgressStep",
    "cancelled",
    "call_options",
]
