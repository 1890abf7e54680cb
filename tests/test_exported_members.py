"""The public API is pinned: changing it is a deliberate act."""

import dagen
import dagen.client
import dagen.server


def test_top_level_exports():
    assert sorted(dagen.__all__) == sorted(
        ["__version__", "DagenError", "RemoteError", "CallError", "ContractMismatch", "ServerUnavailable",
         "Progress", "NO_PROGRESS", "ProgressReport", "ProgressStep", "cancelled",
         "call_options", "close", "caller", "Identity",
         "BuildError", "ContractError", "CertificateError", "PolicyError", "InsecureRefused",
         "CodecUnavailable", "DagenWarning", "CertificateExpiryWarning"]
    )
    for name in dagen.__all__:
        assert hasattr(dagen, name)


def test_one_exception_hierarchy():
    """Every error dagen raises derives from DagenError, every warning from DagenWarning,
    and they are the classes the modules raising them use."""
    from dagen import _certs, _codecs, _contract, _introspect, _policy, _reload, _server

    errors = [dagen.RemoteError, dagen.CallError, dagen.ContractMismatch, dagen.ServerUnavailable,
              dagen.BuildError, dagen.ContractError, dagen.CertificateError, dagen.PolicyError,
              dagen.InsecureRefused, dagen.CodecUnavailable]
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
        ["DEFAULT_TIMEOUT", "ServiceClient", "ClientSpec", "Connection", "call", "call_method",
         "close", "default_client", "RemoteObject", "bound_class", "ContractInfo"]
    )
    assert sorted(dagen.server.__all__) == sorted(
        ["ContractInfo", "Servicer", "ServerOptions", "create_server", "import_served_module",
         "caller_of", "main"]
    )


def _bare(fn):
    """A signature without annotations: names, kinds and defaults."""
    import inspect

    sig = inspect.signature(fn)
    return str(sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                           return_annotation=sig.empty))


def test_entry_points_of_generated_code_keep_their_signatures():
    """Installed clients and servers outlive the dagen that built them: what generated
    code calls is versioned API. Changing a line here breaks every generated package."""
    c, s = dagen.client, dagen.server
    assert {
        "client.call": _bare(c.call),
        "client.call_method": _bare(c.call_method),
        "client.default_client": _bare(c.default_client),
        "client.bound_class": _bare(c.bound_class),
        "client.close": _bare(c.close),
        "client.ServiceClient subclass": _bare(c.ServiceClient.__init_subclass__),
        "client.ContractInfo": _bare(c.ContractInfo),
        "server.ContractInfo": _bare(s.ContractInfo),
        "server.Servicer subclass": _bare(s.Servicer.__init_subclass__),
        "server.import_served_module": _bare(s.import_served_module),
        "server.main": _bare(s.main),
    } == {
        "client.call": "(client, key, arguments, /)",
        "client.call_method": "(target, key, arguments, /)",
        "client.default_client": "(cls, /)",
        "client.bound_class": "(cls, /)",
        "client.close": "(client, /)",
        "client.ServiceClient subclass": "(*, pb2=None, contract=None, classes=(), **kwargs)",
        "client.ContractInfo": "(revision, fingerprints, accepted=<factory>)",
        "server.ContractInfo": "(revision, fingerprints, accepted=<factory>)",
        "server.Servicer subclass": "(*, module, pb2, contract=None, **kwargs)",
        "server.import_served_module": "(name, fallback_path=None)",
        "server.main": "(servicer_cls)",
    }
    assert issubclass(c.RemoteObject, object) and c.ServiceClient.__enter__ and c.ServiceClient.__exit__
