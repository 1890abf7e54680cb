"""dagen: annotated Python functions as secure gRPC services, with arrays streamed in chunks.

The public API is small: generated client packages subclass
:class:`dagen.client.ServiceClient` (``close(client)`` closes one); failed calls raise
the errors below; ``submit`` and ``acall`` make several calls at once. A served
function may declare a ``Progress`` parameter to report progress and check
``cancelled()`` and ``time_remaining()``; callers receive ``ProgressReport``s and set
per-call options with ``call_options``. ``@dataset`` marks a function that returns a
lazily opened ``xarray.Dataset``: callers get it at once, its blocks read when computed. Inside a served function, ``caller()`` is the :class:`Identity` of
the client certificate that called it.
"""

from ._display import call_options
from ._errors import CallError, ContractMismatch, RemoteError, ServerUnavailable
from ._exceptions import (
    BuildError,
    CertificateError,
    CertificateExpiryWarning,
    ClusterError,
    ClusterUnavailable,
    CodecUnavailable,
    ContractError,
    DagenError,
    DagenWarning,
    DatasetExpired,
    InsecureRefused,
    PolicyError,
    RelayError,
)
from ._model import dataset
from ._progress import (
    NO_PROGRESS,
    Progress,
    ProgressReport,
    ProgressStep,
    cancelled,
    time_remaining,
)
from ._security import Identity, caller
from ._version import __version__

__all__ = [
    "__version__",
    "DagenError",
    "RemoteError",
    "CallError",
    "ContractMismatch",
    "ServerUnavailable",
    "BuildError",
    "ContractError",
    "CertificateError",
    "PolicyError",
    "InsecureRefused",
    "CodecUnavailable",
    "RelayError",
    "ClusterError",
    "ClusterUnavailable",
    "DatasetExpired",
    "DagenWarning",
    "CertificateExpiryWarning",
    "Progress",
    "NO_PROGRESS",
    "ProgressReport",
    "ProgressStep",
    "cancelled",
    "time_remaining",
    "call_options",
    "close",
    "submit",
    "acall",
    "caller",
    "Identity",
    "dataset",
]


def __getattr__(name: str) -> object:
    # dagen.close lives with the client runtime, loaded on first use: a served module's
    # `import dagen` (for dagen.caller or dagen.Progress) does not load the client.
    if name == "close":
        from ._client import close

        return close
    if name in ("submit", "acall"):
        from . import _futures

        return getattr(_futures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
