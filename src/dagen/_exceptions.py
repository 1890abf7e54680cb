"""Every exception and warning dagen raises, in one hierarchy.

``DagenError`` is the base of all of them, so ``except dagen.DagenError`` catches any
failure of dagen itself (never an exception of a served function, which arrives as
itself or as its mirror). Call failures derive from :class:`CallError`; the others are
raised before a call: while building, serving, or reading certificates and policies.
"""

from __future__ import annotations


class DagenError(Exception):
    """Base of the errors dagen itself raises."""


class BuildError(DagenError):
    """A module that dagen cannot turn into a service; the message says where and why."""


class ContractError(DagenError):
    """A rebuild that would break existing clients."""


class CertificateError(DagenError):
    """A certificate folder that lacks something, or a request that makes no sense."""


class PolicyError(DagenError):
    """A policy file that cannot be used; the message says where and why."""


class InsecureRefused(DagenError):
    """Plain text was asked for on an address other than loopback."""


class RelayError(DagenError):
    """A relay or a tunnel to one that cannot work as configured: a services file, a key
    or known-hosts file that is wrong, or a relay that refused the tunnel."""


class CodecUnavailable(DagenError, ImportError):
    """The library a codec needs is not installed here."""


class ClusterError(DagenError):
    """A cluster file that cannot be used, or a dask cluster that cannot run the served
    module; the message says where and why (see dagen._cluster)."""


class ClusterUnavailable(ClusterError):
    """No dask worker is there to run a call (the jobs never started, or all ended):
    the call fails with UNAVAILABLE rather than waiting for ever."""


class DatasetExpired(DagenError):
    """A remote dataset's handle is gone from its server: it expired (unused for the
    server's ``--dataset-idle-timeout``), was closed, or the server restarted. Open the
    dataset again by calling its dataset function."""


class DagenWarning(UserWarning):
    """Base of the warnings dagen gives."""


class CertificateExpiryWarning(DagenWarning):
    """A certificate in use expires soon (or has expired)."""
