"""The client runtime that generated client packages use."""

from ._client import DEFAULT_TIMEOUT, ServiceClient, default_client

__all__ = ["ServiceClient", "default_client", "DEFAULT_TIMEOUT"]
