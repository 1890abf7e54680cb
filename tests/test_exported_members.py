"""The public API is pinned: changing it is a deliberate act."""

import dagen
import dagen.client
import dagen.server


def test_top_level_exports():
    assert sorted(dagen.__all__) == sorted(
        ["__version__", "DagenError", "RemoteError", "CallError", "ServerUnavailable"]
    )
    for name in dagen.__all__:
        assert hasattr(dagen, name)


def test_runtime_modules_used_by_generated_code():
    assert sorted(dagen.client.__all__) == ["DEFAULT_TIMEOUT", "ServiceClient", "default_client"]
    assert sorted(dagen.server.__all__) == sorted(
        ["Servicer", "ServerOptions", "create_server", "import_served_module", "caller_of", "main"]
    )
