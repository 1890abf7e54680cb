"""Serving: import what a server serves, create the grpc server, and run it until it is
told to stop.

``dagen serve`` and generated server modules (``python -m <package>_server``) both end
in :func:`serve`: it prints the address line, serves until SIGTERM or Ctrl-C, then stops
gracefully (calls in progress get a few seconds to finish). Certificates renewed in
place are picked up while it serves (:mod:`dagen._security._reload`, through the guard). The
command lines that lead here live in :mod:`dagen._cli`; this module needs no click.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import signal
import socket as socketlib
import sys
import time
import types
from typing import TYPE_CHECKING, NoReturn

import grpc

from ._datasets import DATASETS_SERVICE, DatasetsService
from ._exceptions import InsecureRefused
from ._executors import server_stopping
from ._meta import Health, enable_reflection, meta_handler
from ._security import (
    SERVER_OPTIONS,
    Guard,
    bind_unix_socket,
    is_loopback,
    join_host_port,
    server_credentials,
    unix_target,
)
from ._server import Servicer, StreamingMethods, UnknownMethods
from ._threads import LastIdlePool

if TYPE_CHECKING:
    from ._tunnel import RelayTunnel as Tunnel

log = logging.getLogger("dagen.server")

GRACE = 5.0  # seconds calls in progress get to finish once the server is told to stop


def import_served_module(name: str, fallback_path: str | None = None) -> types.ModuleType:
    """Import the module a generated server serves; if it is not on sys.path, look in
    the folder it was built from."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name or not fallback_path:
            raise
    sys.path.insert(0, fallback_path)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"cannot import {name!r}, the module this server serves: add the folder that "
            f"holds it to PYTHONPATH (it was built from {fallback_path})",
            name=name,
        ) from None


def create_server(
    servicer: Servicer,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    certs: str | None = None,
    insecure: bool = False,
    allow_remote_insecure: bool = False,
    workers: int = 8,
    socket: str | None = None,
    reflection: bool = True,
) -> tuple[grpc.Server, int]:
    """A started-ready grpc server and the port it listens on (``port=0`` picks one);
    with ``socket``, it listens on that Unix socket file instead (mode 0600). Beside the
    service it serves health, ``dagen.v1.Meta`` and (unless ``reflection=False``)
    server reflection: see dagen._meta."""
    server, bound, _ = _create_server(
        servicer, host=host, port=port, certs=certs, insecure=insecure,
        allow_remote_insecure=allow_remote_insecure, workers=workers, socket=socket,
        reflection=reflection)
    return server, bound


def _create_server(
    servicer: Servicer,
    *,
    host: str,
    port: int,
    certs: str | None,
    insecure: bool,
    allow_remote_insecure: bool,
    workers: int,
    socket: str | None,
    reflection: bool,
) -> tuple[grpc.Server, int, Health]:
    address = join_host_port(host, port)
    if insecure:
        if socket is None and not is_loopback(host) and not allow_remote_insecure:
            raise InsecureRefused(
                f"refusing to serve plain text on {address}: anyone on the network could read "
                "and call it. Use mutual TLS (--certs), or serve on 127.0.0.1 and reach it "
                "through an SSH tunnel; --allow-remote-insecure overrides this."
            )
        credentials = None
    elif certs is None:
        raise FileNotFoundError("no certificate folder given: pass --certs DIR (see 'dagen certs')")
    else:
        credentials = server_credentials(certs)
    if servicer.options.policy is not None and credentials is None:
        raise InsecureRefused(
            "a policy needs mutual TLS (--certs): over plain text callers have no identity"
        )
    # A handler thread for every call the guard may admit, and some to refuse the others:
    # the guard holds a thread only for calls it admitted, so calls over the limits are
    # refused as fast as those spare threads can. No maximum_concurrent_rpcs: grpc
    # counts it in Python under the server's lock, ~20 us of every tiny call. (Nor
    # HTTP/2's max_concurrent_streams: grpc resets streams over it, which callers see as
    # a broken connection, not as a refusal.)
    max_calls = servicer.options.call_limits.max_calls
    server = grpc.server(
        LastIdlePool(max_workers=max(workers, max_calls + 8)),
        options=SERVER_OPTIONS,
    )
    # Registered methods: grpc matches the rpc's path in C, and every handler is
    # guarded (once, here); paths nobody serves get UNIMPLEMENTED.
    guard = Guard.for_servicer(servicer, None if insecure else certs)
    handlers = guard.wrap(servicer.method_handlers())
    streaming = {rpc: h for rpc, h in handlers.items() if h.request_streaming}
    server.add_registered_method_handlers(
        servicer.service.full_name,
        {rpc: h for rpc, h in handlers.items() if rpc not in streaming},
    )
    # Streaming rpcs: grpc asks the handler of a call with its metadata, which says
    # whether the request is one frame (then read with the call: see StreamingMethods).
    server.add_generic_rpc_handlers((StreamingMethods(
        servicer.service.full_name, streaming, guard.wrap(servicer.one_frame_handlers())),))
    # Not guarded: any certificate of the CA may ask (policies and limits are for calls)
    server.add_generic_rpc_handlers((meta_handler(servicer),))
    # The blocks of datasets its @dagen.dataset functions opened: each read is guarded
    # as a call of the dataset function (dagen._datasets). A module without one serves
    # no dagen.v1.Datasets (and its calls resolve no dataset reference)
    if any(method.fn.dataset for method in servicer.methods.values()):
        servicer.datasets_service = DatasetsService(servicer, guard)
        server.add_generic_rpc_handlers((servicer.datasets_service.handler(),))
    health = Health(server, servicer.service.full_name, servicer.executor)
    health.start()
    servicer.on_close.append(health.shutdown)  # its watcher thread ends with the servicer
    if reflection:
        enable_reflection(server, servicer.service.full_name,
                          *([DATASETS_SERVICE] if servicer.datasets_service else []))
    # last: logs a method nobody serves, then UNIMPLEMENTED
    server.add_generic_rpc_handlers((UnknownMethods(servicer.service.full_name),))
    if socket is not None:
        bind_unix_socket(server, socket, credentials)
        return server, 0, health
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises "Failed to bind" where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address}: {why_not_bound(host, port)}")
    return server, bound, health


def why_not_bound(host: str, port: int) -> str:
    """Why grpc could not listen on host:port (it does not say): found by binding a
    plain socket there (a bind sends nothing)."""
    try:
        infos = socketlib.getaddrinfo(host, port, type=socketlib.SOCK_STREAM,
                                      flags=socketlib.AI_PASSIVE)
    except socketlib.gaierror as e:
        return f"the host {host!r} is not a name or address this machine knows ({e.strerror})"
    for family, kind, proto, _, sockaddr in infos:
        with socketlib.socket(family, kind, proto) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    return (
                        f"{host} is not an address of this machine: use one of its own "
                        "addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                        "interface), with a firewall in front"
                    )
                if e.errno == errno.EADDRINUSE:
                    return f"port {port} is in use: stop what listens there, or pick another --port"
                if e.errno == errno.EACCES:
                    return (
                        f"port {port} needs privileges (ports below 1024 do): pick one above "
                        "1023"
                    )
                return e.strerror or str(e)
    return f"grpc could not listen there, though a plain socket can bind {host}:{port}"


# -- running ------------------------------------------------------------------------------------


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM stops this process as Ctrl-C does: KeyboardInterrupt in the
    main thread, so that ``finally`` clauses and ``with`` blocks run (a temporary
    folder is removed, a server stops gracefully). Call it in the main thread."""

    def interrupt(signum: int, frame: types.FrameType | None) -> NoReturn:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)


def serve(
    servicer: Servicer,
    *,
    host: str = "127.0.0.1",
    port: int = 50051,
    certs: str | None = None,
    insecure: bool = False,
    allow_remote_insecure: bool = False,
    socket: str | None = None,
    settings: str = "",
    tunnel: Tunnel | None = None,
    reflection: bool = True,
) -> None:
    """Serve ``servicer`` until SIGTERM or Ctrl-C, then stop gracefully; close it.

    Prints the address line (``dagen: serving <service> on <address> (...)``) once the
    server listens; ``settings`` describes, in the log, who may call and the limits.
    A server that cannot start raises (InsecureRefused, CertificateError, OSError) and
    leaves nothing running. Call it in the main thread (it handles signals).

    With a ``tunnel`` (``dagen serve --relay``: dagen._tunnel), the server listens on the
    tunnel's Unix socket only, and the tunnel is started once the server listens and
    stopped after the calls in progress have finished through it (a tunnel that cannot
    start raises RelayError).

    Its health (grpc.health.v1) turns NOT_SERVING as soon as it is told to stop, before
    the calls in progress finish (``enter_graceful_shutdown``)."""
    interrupt_on_sigterm()
    if tunnel is not None:
        socket = tunnel.socket
    try:
        server, bound, health = _create_server(
            servicer, host=host, port=port, certs=certs, insecure=insecure,
            allow_remote_insecure=allow_remote_insecure, workers=servicer.options.workers,
            socket=socket, reflection=reflection,
        )
        if settings:
            log.info("%s", settings)
        try:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, or SIGTERM: stop
                server.start()
                if tunnel is not None:
                    tunnel.start()
                address = unix_target(socket) if socket is not None else join_host_port(host, bound)
                if tunnel is not None:
                    address += f", {tunnel.describe()}"
                security = "plain text (INSECURE)" if insecure else f"mutual TLS with {certs}"
                print(f"dagen: serving {servicer.service.full_name} on {address} ({security}); "
                      "Ctrl-C stops", flush=True)
                while True:
                    time.sleep(3600)
            # Calls in progress get their grace: another SIGTERM (sent to the whole process
            # group, say) does not cut it short; another Ctrl-C does.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"dagen: stopping (finishing calls in progress for up to {GRACE:g} s)",
                  flush=True)
        finally:
            health.shutdown()  # NOT_SERVING: health watchers learn it before the drain
            server_stopping(GRACE)  # calls cut short then: the server's doing, not the caller's
            server.stop(grace=GRACE).wait()
            if tunnel is not None:
                tunnel.stop()
    finally:
        servicer.close()
