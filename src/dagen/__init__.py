"""dagen: annotated Python functions as secure gRPC services, with arrays streamed in chunks.

The public API is small: generated client packages subclass
:class:`dagen.client.ServiceClient`; failed calls raise the errors below.
"""

from ._errors import CallError, DagenError, RemoteError, ServerUnavailable
from ._version import __version__

__all__ = ["__version__", "DagenError", "RemoteError", "CallError", "ServerUnavailable"]
