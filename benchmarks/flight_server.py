"""Apache Arrow Flight with mutual TLS: ``do_exchange`` echoes a table (reads it all,
holds it, writes its batches back), ``do_action("add")`` adds two int64.

    python benchmarks/flight_server.py --certs DIR [--port 0]
"""

from __future__ import annotations

import argparse
import signal
import struct
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

_ADD_IN = struct.Struct("<qq")
_ADD_OUT = struct.Struct("<q")


class EchoServer(flight.FlightServerBase):
    def do_exchange(self, context, descriptor, reader, writer):
        table = reader.read_all()  # held whole, as the other servers hold the array
        writer.begin(table.schema)
        for batch in table.to_batches():
            writer.write_batch(batch)
        del table

    def do_action(self, context, action):
        if action.type != "add":
            raise flight.FlightServerError(f"unknown action {action.type!r}")
        a, b = _ADD_IN.unpack(action.body.to_pybytes())
        yield flight.Result(pa.py_buffer(_ADD_OUT.pack(a + b)))

    def list_actions(self, context):
        return [("add", "add two little-endian int64")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    certs = Path(args.certs)
    server = EchoServer(
        location=f"grpc+tls://{args.host}:{args.port}",
        tls_certificates=[flight.CertKeyPair(
            cert=(certs / "server.crt").read_bytes(), key=(certs / "server.key").read_bytes()
        )],
        verify_client=True,
        root_certificates=(certs / "ca.crt").read_bytes(),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"flight: serving on {args.host}:{server.port}", flush=True)
    threading.Thread(target=server.serve, daemon=True).start()
    while not stop.wait(0.5):
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
