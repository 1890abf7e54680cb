"""A visitor through a relay: the target is the relay, the name is the server's."""

from ocean_tools_client import Client

with Client("relay.example.org:443", server_name="ocean.relay.example.org",
            certs="certs/", identity="alice") as remote:
    print(remote.sea_water_density(12.0, 35.0))
