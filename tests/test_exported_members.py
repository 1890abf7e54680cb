"""The public API is pinned: changing it is a deliberate act."""

import subprocess
import sys

import pytest

import dagen
import dagen.client
import dagen.server


def test_top_level_exports():
    assert sorted(dagen.__all__) == sorted(
        ["__version__", "DagenError", "RemoteError", "CallError", "ContractMismatch", "ServerUnavailable",
         "Progress", "NO_PROGRESS", "ProgressReport", "ProgressStep", "cancelled", "time_remaining",
         "call_options", "close", "submit", "acall", "caller", "Identity",
         "BuildError", "ContractError", "CertificateError", "PolicyError", "InsecureRefused",
         "CodecUnavailable", "RelayError", "ClusterError", "ClusterUnavailable", "DagenWarning",
         "CertificateExpiryWarning", "DatasetExpired", "dataset"]
    )
    for name in dagen.__all__:
        assert hasattr(dagen, name)


def test_one_exception_hierarchy():
    """Every error dagen raises derives from DagenError, every warning from DagenWarning,
    and they are the classes the modules raising them use."""
    from dagen import _codecs, _introspect, _lock, _serve
    from dagen._security import _certs, _policy, _reload

    errors = [dagen.RemoteError, dagen.CallError, dagen.ContractMismatch, dagen.ServerUnavailable,
              dagen.BuildError, dagen.ContractError, dagen.CertificateError, dagen.PolicyError,
              dagen.InsecureRefused, dagen.CodecUnavailable, dagen.RelayError, dagen.ClusterError,
              dagen.ClusterUnavailable, dagen.DatasetExpired]
    assert all(issubclass(e, dagen.DagenError) for e in errors)
    assert issubclass(dagen.CodecUnavailable, ImportError)  # `except ImportError` still works
    assert issubclass(dagen.ServerUnavailable, ConnectionError)
    assert issubclass(dagen.CertificateExpiryWarning, dagen.DagenWarning)
    assert issubclass(dagen.DagenWarning, UserWarning)
    assert _certs.CertificateError is dagen.CertificateError
    assert _codecs.CodecUnavailable is dagen.CodecUnavailable
    assert _lock.ContractError is dagen.ContractError
    assert _introspect.BuildError is dagen.BuildError
    assert _policy.PolicyError is dagen.PolicyError
    assert _reload.CertificateExpiryWarning is dagen.CertificateExpiryWarning
    assert _serve.InsecureRefused is dagen.InsecureRefused


def test_runtime_modules_used_by_generated_code():
    assert sorted(dagen.client.__all__) == sorted(
        ["DEFAULT_TIMEOUT", "ServiceClient", "ClientSpec", "Connection", "call", "call_method",
         "close", "default_client", "RemoteObject", "bound_class", "ContractInfo", "Limits",
         "dataset"]
    )
    assert sorted(dagen.server.__all__) == sorted(
        ["ContractInfo", "Servicer", "ServerOptions", "create_server", "import_served_module",
         "caller_of", "main"]
    )


def test_the_security_package_exports_each_name_from_its_module():
    """dagen._security's names are imported on first use; the names its type-checking
    imports list are the ones it resolves at run time, each from the module it says."""
    import ast
    import importlib
    import inspect

    import dagen._security as security

    checked = {}
    tree = ast.parse(inspect.getsource(security))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.level == 1
                checked[imp.module] = tuple(sorted(a.name for a in imp.names))
    assert checked == {m: tuple(sorted(names)) for m, names in security._EXPORTS.items()}
    for module, names in security._EXPORTS.items():
        for name in names:
            expected = getattr(importlib.import_module(f"dagen._security.{module}"), name)
            assert getattr(security, name) is expected
    assert sorted(security.__all__) == sorted(n for ns in checked.values() for n in ns)
    with pytest.raises(AttributeError, match="no attribute 'nothing_of_that_name'"):
        security.nothing_of_that_name  # noqa: B018


def test_import_dagen_loads_neither_click_nor_the_certificate_tools():
    """What a served module and a client pay for `import dagen` (for dagen.caller):
    the identity, not the command line's options or the certificate folder's tools."""
    code = (
        "import sys, dagen\n"
        "print(sorted(m for m in sys.modules if m == 'click' or m.startswith('dagen._security.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['dagen._security._identity']"


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
        "client.ServiceClient subclass": "(*, pb2=None, contract=None, classes=(), exceptions=None, **kwargs)",
        "client.ContractInfo": "(revision, fingerprints, accepted=<factory>)",
        "server.ContractInfo": "(revision, fingerprints, accepted=<factory>)",
        "server.Servicer subclass": "(*, module, pb2, contract=None, **kwargs)",
        "server.import_served_module": "(name, fallback_path=None)",
        "server.main": "(servicer_cls)",
    }
