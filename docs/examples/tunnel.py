"""A client through an SSH tunnel: the target is the tunnel, the name is the server's."""

from ocean_tools_client import Client

with Client("localhost:50051", certs="certs/", identity="alice",
            server_name="login1.hpc.example.org") as remote:   # or $DAGEN_SERVER_NAME
    print(remote.sea_water_density(12.0, 35.0))
