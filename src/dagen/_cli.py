"""The ``dagen`` command line: build, serve, certs."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._exceptions import DagenError
from ._executors import EXECUTORS
from ._version import __version__

DEFAULT_CHUNK_SIZE = "4032KiB"  # dagen._wire.DEFAULT_CHUNK_BYTES (not imported: numpy)
# dagen._datasets' DEFAULT_IDLE_TIMEOUT and DEFAULT_MAX_PER_IDENTITY (not imported: grpc)
DEFAULT_DATASET_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_DATASETS_PER_IDENTITY = 32


def _chunk_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from ._security import parse_size
    from ._wire import MAX_CHUNK_BYTES

    size = parse_size(value)
    if size > MAX_CHUNK_BYTES:
        raise click.BadParameter(f"must be at most {MAX_CHUNK_BYTES} bytes")
    return size


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dagen")
def main() -> None:
    """Turn annotated Python functions into secure gRPC services.

    \b
    Typical session:
      dagen build examples/ocean_tools.py -o build/
      dagen certs init certs/
      dagen certs server certs/ --host localhost --ip 127.0.0.1
      dagen certs client certs/ alice
      dagen serve examples/ocean_tools.py --certs certs/ --port 50051
      pip install --find-links build/wheels ocean_tools_client
    """


# -- build --------------------------------------------------------------------------------------


@main.command()
@click.argument("module")
@click.option(
    "-o",
    "--out",
    default="build",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder to write the generated files into.",
)
@click.option("--lock", type=click.Path(dir_okay=False),
              help="The lock file pinning field numbers [default: MODULE.dagen.lock next to the module].")
@click.option("--allow-breaking", is_flag=True,
              help="Build even if the change breaks clients built from the locked contract.")
def build(module: str, out: str, lock: str | None, allow_breaking: bool) -> None:
    """Generate the .proto, compiled modules, server module and client package of MODULE.

    MODULE is a file (examples/ocean_tools.py) or an importable module name. Its
    public functions and classes (__all__ when it has one) become remote; each needs
    type annotations, and its numpy-style docstring becomes the documentation.

    The lock file (commit it with the module) pins every field number, so that a
    rebuild keeps old clients working; a change that would break them (a function or
    parameter removed, a type changed) stops the build unless --allow-breaking.
    """
    from ._build import build as run_build
    from ._introspect import BuildError

    try:
        result = run_build(module, out, lock=lock, allow_breaking=allow_breaking)
    except BuildError as e:
        raise click.ClickException(str(e)) from None
    service = result.service
    click.echo(f"built {service.full_name} (contract revision {result.contract.revision}): "
               f"{len(service.rpcs)} remote functions")
    click.echo(f"  lock file:      {result.lock}")
    click.echo(f"  contract:       {result.proto}")
    click.echo(f"  server module:  {result.server}  (python -m {service.package}_server)")
    click.echo(f"  client package: {result.client}")
    wheels = result.wheelhouse
    if wheels is None:
        return
    if wheels.runtime is None:
        click.echo(f"  wheels:         {wheels.folder}  (the client's only)")
        click.echo(f"Warning: the dagen runtime's wheel could not be made: {wheels.problem}. "
                   f"Put a wheel of dagen-grpc {__version__} into {wheels.folder} (pip wheel "
                   "--no-deps <dagen's source folder>) before handing the folder on.", err=True)
    else:
        click.echo(f"  wheels:         {wheels.folder}  ({wheels.client.name}, {wheels.runtime.name})")
    click.echo(f"The visitor installs the client with: "
               f"pip install --find-links {wheels.folder} {service.client_package}")


# -- serve --------------------------------------------------------------------------------------


_relay_options = [
    click.option("--relay", metavar="ssh://USER@HOST:PORT",
                 help="Listen on no TCP port: dial out to this dagen relay over SSH and "
                 "publish the server there under the host name of its certificate (needs "
                 "pip install 'dagen-grpc[relay]'). Serves on --socket, or a private socket."),
    click.option("--relay-key", type=click.Path(dir_okay=False),
                 help="With --relay: the SSH private key the relay's services file lists."),
    click.option("--relay-known-hosts", type=click.Path(dir_okay=False),
                 help="With --relay: the relay's SSH host key, pinned "
                 "[default: relay_known_hosts in --certs]."),
    click.option("--relay-name",
                 help="With --relay: the name to publish, one of the certificate's DNS "
                 "names [default: its first]."),
]


def _serve_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--certs",
            type=click.Path(file_okay=False),
            help="Folder made by 'dagen certs' (ca.crt, server.crt, server.key).",
        ),
        click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help="Address to listen on (0.0.0.0 or :: for every interface).",
        ),
        click.option(
            "--port",
            default=50051,
            show_default=True,
            type=int,
            help="Port to listen on; 0 picks a free one.",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Plain text instead of mutual TLS; only on a loopback address.",
        ),
        click.option(
            "--allow-remote-insecure",
            is_flag=True,
            help="Together with --insecure: allow plain text on a non-loopback address.",
        ),
        click.option(
            "--workers",
            default=8,
            show_default=True,
            type=click.IntRange(1, 1024),
            help="Calls served at the same time (threads, or worker processes).",
        ),
        click.option(
            "--executor",
            default="thread",
            show_default=True,
            type=click.Choice(EXECUTORS),
            help="Where functions run: threads of the server (a cancelled call stops when "
            "its function checks dagen.cancelled()), worker processes (a cancelled "
            "call's worker is terminated at once), or a dask cluster (one task per call; "
            "with --cluster, --scheduler or --scheduler-file).",
        ),
        click.option(
            "--cluster",
            type=click.Path(dir_okay=False),
            help="With --executor dask: a cluster file (cluster.yaml, or a pyproject.toml's "
            "[tool.dagen.cluster]) that dagen starts: kind (slurm, pbs, sge, lsf, "
            "htcondor, local), options, scale or adapt.",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="With --executor dask: the address of a dask scheduler that already runs "
            "(tls://host:8786; its TLS settings come from dask's configuration).",
        ),
        click.option(
            "--scheduler-file",
            type=click.Path(dir_okay=False),
            help="With --executor dask: the scheduler file of a dask scheduler that already runs.",
        ),
        click.option(
            "--wait-for-workers",
            type=click.FloatRange(min=0, min_open=True),
            metavar="SECONDS",
            help="With --executor dask: how long a call waits for a dask worker before it "
            "fails with UNAVAILABLE [default: the cluster file's wait_for_workers, or 300].",
        ),
        click.option(
            "--spool",
            type=click.Path(file_okay=False),
            metavar="DIR",
            help="With --executor dask: a folder the workers can read (on the cluster's "
            "shared file system) where the arrays callers upload are received, as .npy "
            "files the function gets memory-mapped; a call's files are removed when it "
            "ends. Without it, arguments travel to the workers inside the task.",
        ),
        click.option(
            "--chunk-size",
            default=DEFAULT_CHUNK_SIZE,
            show_default=True,
            callback=_chunk_size,
            help="Size of the chunks results are sent in (the default keeps every message "
            "under gRPC's default 4 MiB limit).",
        ),
        click.option(
            "--dataset-idle-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_DATASET_IDLE_TIMEOUT,
            show_default=True,
            metavar="SECONDS",
            help="A dataset a @dagen.dataset function opened for a caller is released "
            "(closed on the server) after this many seconds without a block read; the "
            "caller then opens it again.",
        ),
        click.option(
            "--max-datasets-per-identity",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_DATASETS_PER_IDENTITY,
            show_default=True,
            metavar="N",
            help="Datasets one identity may hold open at once (each may hold files open "
            "on the server); one more is refused until the caller closes one.",
        ),
        click.option(
            "--debug", is_flag=True, help="Send tracebacks of failed calls to the callers."
        ),
        click.option(
            "--reflection/--no-reflection",
            default=True,
            show_default=True,
            help="Serve gRPC server reflection (grpcurl lists and calls the service "
            "without its .proto); any certificate of the CA may use it.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="The log on stderr: lines of text, or one JSON object per line (time, "
            "level, event, call_id, identity, function, bytes_in, bytes_out, seconds, "
            "status, reason).",
        ),
        *_relay_options,
    ]
    for option in reversed(options):
        f = option(f)
    from ._security import security_options  # --policy, --socket, the limits

    return security_options(f)


def _run(
    servicer_cls: Any,
    *,
    certs: str | None,
    host: str,
    port: int,
    insecure: bool,
    allow_remote_insecure: bool,
    workers: int,
    executor: str,
    chunk_size: int,
    debug: bool,
    reflection: bool = True,
    log_format: str = "text",
    relay: str | None = None,
    relay_key: str | None = None,
    relay_known_hosts: str | None = None,
    relay_name: str | None = None,
    cluster: str | None = None,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    wait_for_workers: float | None = None,
    spool: str | None = None,
    dataset_idle_timeout: float = DEFAULT_DATASET_IDLE_TIMEOUT,
    max_datasets_per_identity: int = DEFAULT_MAX_DATASETS_PER_IDENTITY,
    **access: Any,  # --policy, --socket and the limits: dagen._security._settings
) -> None:
    from ._exceptions import CertificateError, InsecureRefused, RelayError
    from ._logs import configure_logging, follow_grpc_core_log
    from ._security import security_settings
    from ._serve import serve
    from ._server import ServerOptions

    if certs is not None and insecure:
        raise click.UsageError(
            f"--certs {certs} and --insecure contradict each other: --insecure serves plain "
            "text, with no certificates; drop --insecure to serve over mutual TLS with "
            f"{certs}, or drop --certs to serve plain text"
        )
    configure_logging(log_format)
    follow_grpc_core_log()  # failed TLS handshakes, which only grpc's C core sees
    settings = security_settings(servicer_cls, insecure=insecure, **access)
    tunnel = _relay_tunnel(relay, certs=certs, key=relay_key,
                           known_hosts=relay_known_hosts, name=relay_name,
                           socket=settings.socket) if relay else None
    options = ServerOptions(debug=debug, chunk_bytes=chunk_size, executor=executor,
                            workers=workers, limits=settings.limits, policy=settings.policy,
                            call_limits=settings.call_limits,
                            dataset_idle_timeout=dataset_idle_timeout,
                            max_datasets_per_identity=max_datasets_per_identity,
                            executor_config=_dask_target(executor, cluster, scheduler,
                                                         scheduler_file, wait_for_workers,
                                                         spool))
    try:
        servicer = servicer_cls(options)
    except (ValueError, DagenError) as e:  # a function this executor cannot run, a cluster
        raise click.ClickException(str(e)) from None  # that cannot start or import the module
    try:
        serve(servicer, host=host, port=port, certs=certs, insecure=insecure,
              allow_remote_insecure=allow_remote_insecure, socket=settings.socket,
              settings=settings.describe(), tunnel=tunnel, reflection=reflection)
    except (InsecureRefused, OSError, CertificateError, RelayError) as e:
        raise click.ClickException(str(e)) from None


def _relay_tunnel(relay: str, **options: Any) -> Any:
    """The tunnel of ``dagen serve --relay`` (dagen._tunnel), not started yet."""
    from ._exceptions import RelayError

    try:
        from ._tunnel import RelayTunnel

        return RelayTunnel(relay, **options)
    except RelayError as e:
        raise click.ClickException(str(e)) from None



def _dask_target(
    executor: str, cluster: str | None, scheduler: str | None, scheduler_file: str | None,
    wait_for_workers: float | None, spool: str | None = None,
) -> Any:
    """The DaskTarget of --executor dask (None for the other executors); a bad cluster
    file stops the server here, with one line that says what is wrong."""
    if executor != "dask":
        given = [n for n, v in (("--cluster", cluster), ("--scheduler", scheduler),
                                ("--scheduler-file", scheduler_file), ("--spool", spool),
                                ("--wait-for-workers", wait_for_workers is not None)) if v]
        if given:
            raise click.UsageError(f"{given[0]} goes with --executor dask")
        return None
    from ._cluster import dask_target

    try:
        return dask_target(cluster, scheduler, scheduler_file, wait_for_workers, spool)
    except DagenError as e:
        raise click.ClickException(str(e)) from None



@main.command()
@click.argument("module")
@click.option("--lock", type=click.Path(dir_okay=False),
              help="The lock file 'dagen build' wrote [default: MODULE.dagen.lock next to the module].")
@_serve_options
def serve(module: str, lock: str | None, **options: Any) -> None:
    """Serve the functions of MODULE over gRPC, with mutual TLS by default.

    MODULE is a file or an importable module name, as for 'dagen build'. Clients
    need a certificate signed by the CA in --certs.
    """
    from ._build import build_servicer
    from ._exceptions import BuildError, ContractError
    from ._serve import interrupt_on_sigterm

    interrupt_on_sigterm()  # a SIGTERM while building still removes the build folder
    try:
        servicer_cls = build_servicer(module, lock)
    except (BuildError, ContractError) as e:
        raise click.ClickException(str(e)) from None
    _run(servicer_cls, **options)


def run_servicer(servicer_cls: Any) -> None:
    """The command line of a generated server module (``python -m <module>_server``):
    the options of ``dagen serve``."""

    @click.command(
        help=f"Serve {servicer_cls.service.full_name} over gRPC, with mutual TLS by default."
    )
    @_serve_options
    def command(**options: Any) -> None:
        _run(servicer_cls, **options)

    command(prog_name=f"python -m {servicer_cls.service.package}_server")


# -- operators: describe, ping, service-unit -------------------------------------------------------


def _client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("target", required=False),
        click.option("--certs", type=click.Path(file_okay=False),
                     help="Folder with ca.crt and your certificate pair [default: $DAGEN_CERTS]."),
        click.option("--identity", help="Which pair of --certs to present [default: "
                     "$DAGEN_IDENTITY, or the folder's only one]."),
        click.option("--server-name", help="The name in the server's certificate, when TARGET "
                     "is not it (an address, a relay) [default: $DAGEN_SERVER_NAME]."),
        click.option("--insecure", is_flag=True, help="Plain text, for a server run with --insecure."),
        click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0,
                     min_open=True), help="Seconds to wait for the server."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _ask_server(ask: Callable[[Any], Any], target: str | None, **credentials: Any) -> Any:
    """``ask(channel)``, with the server's failure as one line and a non-zero exit."""
    import grpc

    from ._exceptions import CertificateError
    from ._meta import open_channel

    try:
        channel = open_channel(target, **credentials)
    except (ValueError, CertificateError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    try:
        return ask(channel)
    except grpc.RpcError as e:
        code = e.code()  # type: ignore[attr-defined]
        raise click.ClickException(
            f"{target or 'the server'}: {code.name if code else 'failed'}: "
            f"{e.details()}") from None  # type: ignore[attr-defined]
    finally:
        channel.close()


@main.command()
@_client_options
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON, for tools.")
def describe(target: str | None, timeout: float, as_json: bool, **credentials: Any) -> None:
    """Show what the dagen server at TARGET serves: its functions and classes with
    their Python signatures and docstrings, the contract revision and its dagen version.

    TARGET is host:port or unix:PATH [default: $DAGEN_TARGET]. The served module is
    not needed: the server describes itself.
    """
    import json

    from ._meta import describe_remote, description_dict, description_lines

    d = _ask_server(lambda channel: describe_remote(channel, timeout), target,
                    **credentials)
    if as_json:
        click.echo(json.dumps(description_dict(d), indent=2))
    else:
        for line in description_lines(d):
            click.echo(line)


@main.command()
@_client_options
def ping(target: str | None, timeout: float, **credentials: Any) -> None:
    """Check the dagen server at TARGET: its health, the round-trip time, and the
    identity it sees for your certificate. Exits with 1 unless it is SERVING (for
    scripts and cron)."""
    from ._meta import ping as ping_server

    pong = _ask_server(lambda channel: ping_server(channel, timeout), target,
                       **credentials)
    who = pong.caller
    identity = who.identity or "(no certificate: plain text)"
    click.echo(f"{target or 'server'}: {pong.status}, round trip {pong.seconds * 1000:.1f} ms; "
               f"{who.service} (dagen {who.dagen_version}) sees you as {identity}"
               + (f" (serial {who.serial})" if who.serial else ""))
    if pong.status != "SERVING":
        sys.exit(1)


@main.command("service-unit", context_settings={"ignore_unknown_options": True})
@click.option("--name", help="The service's name [default: dagen-MODULE].")
@click.option("--script", is_flag=True,
              help="Print a shell script that restarts the server when it fails, for hosts "
              "without a user systemd (start it from cron with @reboot).")
@click.argument("serve_args", nargs=-1, required=True, type=click.UNPROCESSED)
def service_unit(name: str | None, script: bool, serve_args: tuple[str, ...]) -> None:
    """Print a user systemd unit that keeps 'dagen serve SERVE_ARGS' running.

    SERVE_ARGS are those of 'dagen serve' (MODULE and its options); they are checked
    now. The unit runs in the current folder with this Python and PYTHONPATH, and
    restarts the server when it fails. Install it with

    \b
      dagen service-unit MODULE --certs certs/ > ~/.config/systemd/user/NAME.service
      systemctl --user daemon-reload && systemctl --user enable --now NAME
      loginctl enable-linger      (to keep it running when you log out)
    """
    import os

    from ._units import loop_script, systemd_unit

    try:
        # (under this command's context: click keeps the help option of the first one)
        parsed = serve.make_context("dagen serve", list(serve_args),
                                    parent=click.get_current_context())
    except click.ClickException as e:
        raise click.UsageError(f"the options of dagen serve: {e.format_message()}") from None
    module = parsed.params["module"]
    name = name or "dagen-" + Path(module).stem.replace("_", "-")
    python_path = os.environ.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "dagen", "serve", *serve_args]
    make = loop_script if script else systemd_unit
    click.echo(make(name, command, os.getcwd(), python_path), nl=False)


# -- relay --------------------------------------------------------------------------------------


def _host_port(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:443)")
    return host.strip("[]") or "0.0.0.0", int(port)


@main.command()
@click.option("--listen", default="0.0.0.0:443", show_default=True, callback=_host_port,
              help="Where visitors connect (TLS, routed by the server name they ask for).")
@click.option("--tunnels", default="0.0.0.0:2222", show_default=True, callback=_host_port,
              help="Where servers connect over SSH to publish their names.")
@click.option("--services", required=True, type=click.Path(dir_okay=False),
              help="TOML file: which SSH public keys may publish which names "
              "(read again when it changes).")
@click.option("--host-key", type=click.Path(dir_okay=False),
              help="The relay's SSH host key, made if missing [default: relay_host_key "
              "beside --services].")
def relay(listen: tuple[str, int], tunnels: tuple[str, int], services: str,
          host_key: str | None) -> None:
    """Relay visitors to servers that listen on no port (needs pip install 'dagen-grpc[relay]').

    Servers dial out ('dagen serve --relay ssh://USER@THIS-HOST:PORT') and publish the
    host name of their certificate; a visitor asks for that name (Client(target=
    "THIS-HOST:PORT", server_name=NAME)) and the relay routes its TLS connection there
    unopened: mutual TLS runs end to end, and the relay holds no dagen key.

    \b
    relay-services.toml:
      [services."ocean.relay.example.org"]
      keys = ["ssh-ed25519 AAAA... ocean-tools@login1"]
    """
    import asyncio

    from ._exceptions import RelayError
    from ._logs import configure_logging

    configure_logging("text")
    try:
        from ._relay import Relay, known_hosts_line

        key_path = host_key or str(Path(services).parent / "relay_host_key")
        the_relay = Relay(services, key_path, listen=listen, tunnels=tunnels)
    except RelayError as e:
        raise click.ClickException(str(e)) from None

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await the_relay.start()
        try:
            click.echo(f"dagen relay: visitors on {listen[0]}:{the_relay.visitor_port}, "
                       f"tunnels on {tunnels[0]}:{the_relay.tunnel_port} (SSH); Ctrl-C stops")
            line = known_hosts_line(the_relay.host_key, "RELAY-HOST", the_relay.tunnel_port)
            click.echo(f"  servers pin its host key: add to their relay_known_hosts: {line}")
            sys.stdout.flush()
            await stop.wait()
        finally:
            await the_relay.close()

    try:
        asyncio.run(run())
    except OSError as e:
        raise click.ClickException(f"cannot listen: {e}") from None


# -- certs --------------------------------------------------------------------------------------


@main.group()
def certs() -> None:
    """Make a certificate authority and certificates for mutual TLS.

    \b
    dagen certs init certs/                                  the CA (ca.crt, ca.key)
    dagen certs server certs/ --host login1.hpc.org --ip 127.0.0.1
    dagen certs client certs/ alice                          alice.crt, alice.key
    Give each client ca.crt and its own pair; keep ca.key on the server side.
    """


def _certs_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ._exceptions import CertificateError

        try:
            return f(*args, **kwargs)
        except CertificateError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


_days = click.option(
    "--days",
    default=365,
    show_default=True,
    type=click.IntRange(1, 36500),
    help="Validity in days.",
)
_force = click.option("--force", is_flag=True, help="Replace existing files.")


@certs.command("init")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--name", default="dagen CA", show_default=True, help="The CA's subject name.")
@_days
@_force
@_certs_errors
def certs_init(folder: str, name: str, days: int, force: bool) -> None:
    """Create a certificate authority in FOLDER."""
    from ._security import init_ca

    path = init_ca(folder, name=name, days=days, force=force)
    click.echo(f"created CA {path} (key {Path(folder) / 'ca.key'}, mode 0600)")


@certs.command("server")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--host", "hosts", multiple=True, help="A DNS name clients use to reach the server.")
@click.option("--ip", "ips", multiple=True, help="An IP address clients use to reach the server.")
@_days
@_force
@_certs_errors
def certs_server(
    folder: str, hosts: tuple[str, ...], ips: tuple[str, ...], days: int, force: bool
) -> None:
    """Issue the server certificate (server.crt, server.key) from the CA in FOLDER."""
    from ._security import issue_server

    path = issue_server(folder, hosts=list(hosts), ips=list(ips), days=days, force=force)
    click.echo(f"created server certificate {path} for {', '.join([*hosts, *ips])}")


@certs.command("client")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("identity")
@click.option("--san", "sans", multiple=True,
              help="Another name of the identity, which a policy may use: email:a@b.org, "
              "dns:host, uri:..., ip:... (repeatable).")
@_days
@_force
@_certs_errors
def certs_client(folder: str, identity: str, days: int, force: bool, sans: tuple[str, ...]) -> None:
    """Issue a client certificate for IDENTITY (IDENTITY.crt, IDENTITY.key)."""
    from ._security import issue_client, parse_san

    path = issue_client(folder, identity, days=days, force=force,
                        sans=[parse_san(s) for s in sans])
    click.echo(f"created client certificate {path} for identity {identity!r}")


@certs.command("list")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@_certs_errors
def certs_list(folder: str) -> None:
    """List the certificates of FOLDER: name, kind, expiry and status (valid,
    expires in N days, EXPIRED, REVOKED by revoked.txt)."""
    from ._security import format_serial, list_folder

    rows = list_folder(folder)
    if not rows:
        click.echo(f"no certificates (*.crt) in {folder}")
        return
    click.echo(f"{'NAME':<20} {'KIND':<7} {'SUBJECT CN':<24} {'EXPIRES':<17} {'STATUS':<18} SERIAL")
    for info, status in rows:
        expires = info.not_after.strftime("%Y-%m-%d %H:%M") if info.kind != "?" else ""
        serial = format_serial(info.serial) if info.kind != "?" else ""
        click.echo(f"{info.path.stem:<20} {info.kind:<7} {info.common_name:<24} {expires:<17} "
                   f"{status:<18} {serial}")


@certs.command("show")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@_certs_errors
def certs_show(file: str) -> None:
    """Show a certificate: subject, alternative names, issuer, serial, validity, key."""
    from ._security import describe, show_lines

    for line in show_lines(describe(file)):
        click.echo(line)


@certs.command("renew")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.argument("names", nargs=-1, required=True)
@_days
@click.option("--new-key", is_flag=True, help="Make a new key pair too (not for the CA).")
@_certs_errors
def certs_renew(folder: str, names: tuple[str, ...], days: int, new_key: bool) -> None:
    """Renew certificates of FOLDER: NAMES are 'ca', 'server' or identities.

    Each gets a new certificate with the same subject and names, valid DAYS from now,
    written in place at once; a running server uses its renewed certificate (and a
    renewed ca.crt) for new connections without dropping the others. A renewed CA
    keeps its key, so the certificates it signed stay valid.
    """
    from ._security import describe, renew

    for name in names:
        path = renew(folder, name, days=days, new_key=new_key)
        until = describe(path).not_after.strftime("%Y-%m-%d")
        click.echo(f"renewed {path} (valid until {until}{', new key' if new_key else ''})")


@certs.command("revoke")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.argument("names", nargs=-1, required=True)
@_certs_errors
def certs_revoke(folder: str, names: tuple[str, ...]) -> None:
    """Revoke the current certificates of identities (or .crt files) in FOLDER.

    Their serials go to FOLDER/revoked.txt, which a server serving with --certs FOLDER
    reads again when it changes (it looks every 0.1 s): from then on, those
    certificates are refused (PERMISSION_DENIED). Issue a new one with 'dagen certs
    client --force'. To refuse an identity whatever its certificate, add its name on a
    line of revoked.txt.
    """
    from ._security import format_serial, revoke, serial_of

    for name in names:
        serial, common_name = serial_of(folder, name)
        path = revoke(folder, serial, f"{common_name}")
        click.echo(f"revoked the certificate of {common_name!r} (serial "
                   f"{format_serial(serial)}) in {path}")


if __name__ == "__main__":
    main()
