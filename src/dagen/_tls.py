"""Transport security: credentials from a certificate folder, addresses, channel options."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import grpc

from ._certs import CA_CERT, SERVER_CERT, SERVER_KEY

# Chunks are ~1 MiB; headers of arrays with many attributes can be a few MiB.
MAX_MESSAGE_BYTES = 64 << 20

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Long calls cross idle firewalls between centres: ping every 5 minutes (the
    # server allows pings that often, see SERVER_OPTIONS).
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]

SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
    ("grpc.so_reuseport", 0),
]


def _read(folder: Path, name: str, hint: str) -> bytes:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {hint}")
    return path.read_bytes()


def server_credentials(folder: str | Path) -> grpc.ServerCredentials:
    """mTLS server credentials: the server's pair, and the CA that client certs need."""
    folder = Path(folder)
    ca = _read(folder, CA_CERT, f"run 'dagen certs init {folder}'")
    hint = f"run 'dagen certs server {folder} --host HOST --ip IP'"
    cert = _read(folder, SERVER_CERT, hint)
    key = _read(folder, SERVER_KEY, hint)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(
    folder: str | os.PathLike[str], identity: str | None
) -> grpc.ChannelCredentials:
    """mTLS client credentials: the CA to trust and, for ``identity``, its pair."""
    folder = Path(folder)
    ca = _read(folder, CA_CERT, "copy the server's ca.crt into it")
    if identity is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    hint = f"run 'dagen certs client {folder} {identity}' where the CA key is"
    cert = _read(folder, f"{identity}.crt", hint)
    key = _read(folder, f"{identity}.key", hint)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def join_host_port(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
