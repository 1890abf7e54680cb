"""A stand-in for `ssh -L`: bytes in, bytes out (the SSH tunnel of an HPC login node)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Forwarder:
    """Listens on 127.0.0.1:PORT and copies every connection's bytes to ``target`` (a
    (host, port) or a Unix socket path) and back, as ``ssh -L PORT:target`` does;
    ``sent`` and ``received`` count the bytes that went to the target and came back."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.sent = 0  # bytes to the target, over all connections
        self.received = 0  # bytes from the target
        self._count = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.connections += 1
            self._sockets += [client, upstream]
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, up: bool) -> None:
        try:
            while data := a.recv(1 << 16):
                with self._count:  # counted before it goes on: the peer never sees more
                    if up:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
