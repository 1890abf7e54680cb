"""The public API is pinned: changing it is a deliberate act."""

import dagen
import dagen.client
import dagen.server


def test_top_level_exports():
    assert sorted(dagen.__all__) == sorted(
        ["__version__", "DagenError", "RemoteError", "CallError", "ContractMismatch", "ServerUnavailable",
         "Progress", "NO_PROGRESS", "ProgressReport", "ProgressStep", "cancelled",
         "call_options", "caller", "Identity",
         "BuildError", "ContractError", "CertificateError", "PolicyError", "InsecureRefused",
         "CodecUnavailable", "ClusterError", "ClusterUnavailable", "DagenWarning",
         "CertificateExpiryWarning"]
    )
    for name in dagen.__all__:
        assert hasattr(dagen, name)


def test_one_exception_hierarchy():
    """Every error dagen raises derives from DagenError, every warning from DagenWarning,
    and they are the classes the modules raising them use."""
    from dagen import _certs, _codecs, _contract, _introspect, _policy, _reload, _server

    errors = [dagen.RemoteError, dagen.CallError, dagen.ContractMismatch, dagen.ServerUnavailable,
              dagen.BuildError, dagen.ContractError, dagen.CertificateError, dagen.PolicyError,
              dagen.InsecureRefused, dagen.CodecUnavailable, dagen.ClusterError,
              dagen.ClusterUnavailable]
    assert all(issubclass(e, dagen.DagenError) for e in errors)
    assert issubclass(dagen.CodecUnavailable, ImportError)  # `except ImportError` still works
    assert issubclass(dagen.ServerUnavailable, ConnectionError)
    assert issubclass(dagen.CertificateExpiryWarning, dagen.DagenWarning)
    assert issubclass(dagen.DagenWarning, UserWarning)
    assert _certs.CertificateError is dagen.CertificateError
    assert _codecs.CodecUnavailable is dagen.CodecUnavailable
    assert _contract.ContractError is dagen.ContractError
    assert _introspect.BuildError is dagen.BuildError
    assert _policy.PolicyError is dagen.PolicyError
    assert _reload.CertificateExpiryWarning is dagen.CertificateExpiryWarning
    assert _server.InsecureRefused is dagen.InsecureRefused


def test_runtime_modules_used_by_generated_code():
    assert sorted(dagen.client.__all__) == sorted(
        ["DEFAULT_TIMEOUT", "ServiceClient", "default_client", "RemoteObject", "call_method",
         "bound_class", "ContractInfo"]
    )
    assert sorted(dagen.server.__all__) == sorted(
        ["ContractInfo", "Servicer", "ServerOptions", "create_server", "import_served_module",
         "caller_of", "main"]
    )
