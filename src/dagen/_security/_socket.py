"""Listening on a Unix domain socket (``dagen serve --socket PATH``).

On a shared login node a TCP port on 127.0.0.1 can be reached by every user of
the node; a socket file with mode 0600 only by its owner (and root). The socket is
created with that mode (the umask is narrowed while gRPC binds it, so it is never
wider, not even for a moment). A stale socket file left by a server that died is
replaced; one a live server listens on is not.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from pathlib import Path

import grpc

_umask_lock = threading.Lock()


def unix_target(path: str | os.PathLike[str]) -> str:
    """The gRPC address of a socket file (absolute, so that the server and the client
    agree whatever their working folders)."""
    return f"unix:{Path(path).resolve()}"


def _in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def bind_unix_socket(
    server: grpc.Server, path: str | os.PathLike[str],
    credentials: grpc.ServerCredentials | None,
) -> str:
    """Bind ``server`` to the socket file ``path`` with mode 0600; its address."""
    path = Path(path).resolve()
    if not path.parent.is_dir():
        raise OSError(f"cannot listen on {path}: the folder {path.parent} does not exist")
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"cannot listen on {path}: it exists and is not a socket")
        if _in_use(path):
            raise OSError(f"cannot listen on {path}: a server is listening on it already")
        path.unlink()  # left behind by a server that did not stop cleanly
    address = f"unix:{path}"
    with _umask_lock:
        old = os.umask(0o177)
        try:
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except RuntimeError:
            bound = 0
        finally:
            os.umask(old)
    if bound == 0:
        raise OSError(f"cannot listen on {path}")
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)
    return address
