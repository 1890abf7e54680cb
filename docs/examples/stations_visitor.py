"""Calling with the re-created data types, and a remote class."""

import numpy as np
from stations_client import Client, Kind, Station

buoy = Station("B1", Kind.BUOY, [1.0, 10.0], temperature=np.array([18.5, 14.0]))
ship = Station("S7", Kind.SHIP, [5.0, 50.0, 500.0])

with Client("localhost:50051", certs="certs/", identity="alice") as remote:
    deep = remote.deepest([buoy, ship])           # a Station of the client package
    smooth = remote.Smoother(5).apply(np.arange(10.0))

print(deep.name, deep.kind, smooth)
