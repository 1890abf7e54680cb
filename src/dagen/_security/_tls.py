"""Transport security: credentials from a certificate folder, addresses, channel options."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import grpc

from ._certs import CA_CERT, SERVER_CERT, SERVER_KEY
from ._reload import CertificateReloader, warn_if_expiring

# Chunks are under 4 MiB; headers of arrays with many attributes can be a few MiB.
MAX_MESSAGE_BYTES = 64 << 20

# Keepalive. A call that runs for hours sends nothing while its function works, and
# firewalls between centres drop connections idle for a few minutes (some after 4).
# Both ends ping every KEEPALIVE_TIME_MS, during calls and between them, without a
# limit on pings between data frames (gRPC's default stops after 2); a peer that
# does not answer within KEEPALIVE_TIMEOUT_MS is gone, and its calls end. The server
# accepts a ping every MIN_PING_INTERVAL_MS, half the client's period: gRPC servers
# answer pings that come more often with GOAWAY "too_many_pings", which would end
# every call on the connection.
KEEPALIVE_TIME_MS = 120_000
KEEPALIVE_TIMEOUT_MS = 20_000
MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2


def _keepalive(time_ms: int, timeout_ms: int) -> list[tuple[str, int | str]]:
    return [
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    *_keepalive(KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS),
]

SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    *_keepalive(KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.so_reuseport", 0),
]


def _read(folder: Path, name: str, hint: str) -> bytes:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {hint}")
    return path.read_bytes()


def check_server_folder(folder: str | Path) -> Path:
    """The server's certificate folder, which must exist: a mistyped ``--certs`` is
    not a reason to make a new CA (which no client would trust)."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(
            f"the certificate folder {folder} (--certs) {what}: give the folder that holds "
            f"{CA_CERT}, {SERVER_CERT} and {SERVER_KEY} (check the path for a typo)"
        )
    return folder


def server_credentials(folder: str | Path) -> grpc.ServerCredentials:
    """mTLS server credentials: the server's pair, and the CA that client certs need;
    a certificate that expires within 14 days is logged as a warning."""
    folder = check_server_folder(folder)
    _read(folder, CA_CERT, f"run 'dagen certs init {folder}' to make a new CA there")
    hint = f"run 'dagen certs server {folder} --host HOST --ip IP'"
    _read(folder, SERVER_CERT, hint)
    _read(folder, SERVER_KEY, hint)
    warn_if_expiring([folder / CA_CERT, folder / SERVER_CERT], server=True)
    # Read again whenever the files change, for new connections (see dagen._security._reload).
    return CertificateReloader(folder).credentials()


def channel_credentials(
    folder: str | os.PathLike[str], identity: str | None
) -> grpc.ChannelCredentials:
    """mTLS client credentials: the CA to trust and, for ``identity``, its pair (when
    it is None: the folder's one client pair, if it has exactly one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the certificate folder {folder} does not exist: make it and copy into it the "
            f"server's {CA_CERT} and your pair NAME.crt and NAME.key, which the server's "
            "operator gives you (or pass certs= the folder that holds them)"
        )
    ca = _read(folder, CA_CERT, "copy the server's ca.crt into it (the server's operator has it)")
    if identity is None:
        identity = only_identity(folder)
    if identity is None:
        warn_if_expiring([folder / CA_CERT], server=False)
        return grpc.ssl_channel_credentials(root_certificates=ca)
    hint = f"run 'dagen certs client {folder} {identity}' where the CA key is"
    cert = _read(folder, f"{identity}.crt", hint)
    warn_if_expiring([folder / CA_CERT, folder / f"{identity}.crt"], server=False)
    key = _read(folder, f"{identity}.key", hint)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def client_pairs(folder: Path) -> list[str]:
    """The client identities of a folder: each NAME.crt with its NAME.key, except the
    CA's and the server's."""
    return sorted(
        crt.stem
        for crt in folder.glob("*.crt")
        if crt.name not in (CA_CERT, SERVER_CERT) and crt.with_suffix(".key").is_file()
    )


def only_identity(folder: Path) -> str | None:
    """The identity to present when none is named: the folder's one client pair; None
    when it has none (the server then refuses, unless it asks for no client
    certificate); several are an error that lists them."""
    pairs = client_pairs(folder)
    if len(pairs) > 1:
        raise ValueError(
            f"{folder} holds {len(pairs)} client certificate pairs ({', '.join(pairs)}): "
            f"say which to present with identity='{pairs[0]}' (--identity {pairs[0]} on the "
            "command line, or set DAGEN_IDENTITY)"
        )
    return pairs[0] if pairs else None


def channel_options(target: str, server_name: str | None) -> list[tuple[str, int | str]]:
    """Options of a TLS channel: the name the server's certificate must carry, when it
    is not the target's host (an SSH tunnel; a Unix socket, where it is "localhost")."""
    if server_name is None and target.startswith("unix:"):
        server_name = "localhost"
    if server_name is None:
        return CHANNEL_OPTIONS
    return [
        *CHANNEL_OPTIONS,
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.default_authority", server_name),
    ]


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
