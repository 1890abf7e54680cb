"""dagen: annotated Python functions as secure gRPC services, with arrays streamed in chunks.

The public API is small: generated client packages subclass
:class:`dagen.client.ServiceClient`; failed calls raise the errors below. A served
function may declare a ``Progress`` parameter to report progress and check
``cancelled()``; callers receive ``ProgressReport``s and set per-call options with
``call_options``. Inside a served function, ``caller()`` is the :class:`Identity` of
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
    InsecureRefused,
    PolicyError,
)
from ._policy import Identity, caller
from ._progress import NO_PROGRESS, Progress, ProgressReport, ProgressStep, cancelled
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
    "ClusterError",
    "ClusterUnavailable",
    "DagenWarning",
    "CertificateExpiryWarning",
    "Progress",
    "NO_PROGRESS",
    "ProgressReport",
    "ProgressStep",
    "cancelled",
    "call_options",
    "caller",
    "Identity",
]
