"""The public API is pinned: changing it is a deliberate act."""

import dagen
import dagen.client
import dagen.server


def test_top_level_exports():
    assert sorted(dagen.__all__) == sorted(
        ["__version__", "DagenError", "RemoteError", "CallError", "ContractMismatch", "ServerUnavailable",
         "Progress", "NO_PROGRESS", "ProgressReport", "ProgressStep", "cancelled",
         "call_options", "caller", "Identity"]
    )
    for name in dagen.__all__:
        assert hasattr(dagen, name)


def test_runtime_modules_used_by_generated_code():
    assert sorted(dagen.client.__all__) == sorted(
        ["DEFAULT_TIMEOUT", "ServiceClient", "default_client", "RemoteObject", "call_method",
         "bound_class", "ContractInfo"]
    )
    assert sorted(dagen.server.__all__) == sorted(
        ["ContractInfo", "Servicer", "ServerOptions", "create_server", "import_served_module",
         "caller_of", "main"]
    )
