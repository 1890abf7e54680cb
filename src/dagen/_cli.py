"""The ``dagen`` command line: build, serve, certs."""

from __future__ import annotations

import functools
import importlib
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._exceptions import DagenError
from ._version import __version__

DEFAULT_CHUNK_SIZE = "4032KiB"  # dagen._wire.DEFAULT_CHUNK_BYTES (not imported: numpy)


def _chunk_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from ._settings import parse_size
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
      pip install build/ocean_tools_client
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
    click.echo(f"  client package: {result.client}  (pip install {result.client})")


# -- serve --------------------------------------------------------------------------------------


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
            type=click.Choice(["thread", "process", "dask"]),
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
            "--chunk-size",
            default=DEFAULT_CHUNK_SIZE,
            show_default=True,
            callback=_chunk_size,
            help="Size of the chunks results are sent in (the default keeps every message "
            "under gRPC's default 4 MiB limit).",
        ),
        click.option(
            "--debug", is_flag=True, help="Send tracebacks of failed calls to the callers."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    from ._settings import security_options  # --policy, --socket, the limits

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
    cluster: str | None = None,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    wait_for_workers: float | None = None,
    **access: Any,  # --policy, --socket and the limits: dagen._settings
) -> None:
    from ._certs import CertificateError
    from ._server import InsecureRefused, ServerOptions, create_server
    from ._settings import security_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = security_settings(servicer_cls, insecure=insecure, **access)
    dask = _dask_target(executor, cluster, scheduler, scheduler_file, wait_for_workers)
    try:
        servicer = servicer_cls(
            ServerOptions(debug=debug, chunk_bytes=chunk_size, executor=executor,
                          workers=workers, limits=settings.limits, policy=settings.policy,
                          call_limits=settings.call_limits, dask=dask)
        )
    except DagenError as e:  # a cluster that cannot start, or cannot import the module
        raise click.ClickException(str(e)) from None
    if dask is not None:
        _check_dask_workers(servicer, dask)
    try:
        server, bound = create_server(
            servicer,
            host=host,
            port=port,
            certs=certs,
            insecure=insecure,
            allow_remote_insecure=allow_remote_insecure,
            workers=workers,
            socket=settings.socket,
        )
    except (InsecureRefused, OSError, CertificateError) as e:
        raise click.ClickException(str(e)) from None
    logging.getLogger("dagen.server").info("%s", settings.describe())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    from ._tls import join_host_port

    security = "plain text (INSECURE)" if insecure else f"mutual TLS with {certs}"
    address = join_host_port(host, bound)
    if settings.socket is not None:
        from ._socket import unix_target

        address = unix_target(settings.socket)
    click.echo(
        f"dagen: serving {servicer.service.full_name} on {address} "
        f"({security}); Ctrl-C stops",
        err=False,
    )
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    click.echo("dagen: stopping (finishing calls in progress for up to 5 s)")
    server.stop(grace=5).wait()
    servicer.close()


def _dask_target(
    executor: str, cluster: str | None, scheduler: str | None, scheduler_file: str | None,
    wait_for_workers: float | None,
) -> Any:
    """The DaskTarget of --executor dask (None for the other executors); a bad cluster
    file stops the server here, with one line that says what is wrong."""
    if executor != "dask":
        given = [n for n, v in (("--cluster", cluster), ("--scheduler", scheduler),
                                ("--scheduler-file", scheduler_file)) if v]
        if given:
            raise click.UsageError(f"{given[0]} goes with --executor dask")
        return None
    from ._cluster import dask_target

    try:
        return dask_target(cluster, scheduler, scheduler_file, wait_for_workers)
    except DagenError as e:
        raise click.ClickException(str(e)) from None


def _check_dask_workers(servicer: Any, target: Any) -> None:
    """Check the served module on the dask workers: at once for a local cluster (a
    module that does not import there stops the server), in the background for batch
    jobs, which may wait in the queue (the first call then says what is wrong)."""
    executor = servicer.executor
    if target.cluster is not None and target.cluster.kind == "local":
        try:
            executor.check_workers(target.wait_for_workers)
        except DagenError as e:
            servicer.close()
            raise click.ClickException(str(e)) from None
        return

    def check() -> None:
        try:
            executor.check_workers(target.wait_for_workers)
        except DagenError as e:
            logging.getLogger("dagen.server").error("%s", e)
        except Exception:  # noqa: BLE001 - stopping, or the scheduler went: calls will say
            return
        else:
            logging.getLogger("dagen.server").info("dask workers ready on %s", target.describe())

    threading.Thread(target=check, name="dagen-dask-check", daemon=True).start()


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
    from ._build import build_service
    from ._contract import ContractError, ContractInfo, lock_path_for
    from ._introspect import BuildError, introspect_module, load_module
    from ._server import Servicer

    try:
        mod = load_module(module)
        service = introspect_module(mod)
        out = Path(tempfile.mkdtemp(prefix="dagen-serve-"))
        lock_path = Path(lock) if lock else lock_path_for(mod.__file__, out, service.package)
        # The same contract `dagen build` made from the lock; the lock is only read here.
        result = build_service(service, out, str(Path(mod.__file__ or ".").parent), client=False,
                               lock_path=lock_path, write_lock_file=False)
    except (BuildError, ContractError) as e:
        raise click.ClickException(str(e)) from None
    sys.path.insert(0, str(out))
    pb2 = importlib.import_module(f"{service.package}_pb2")
    c = result.contract
    contract = ContractInfo(c.revision, c.fingerprints, c.accepted)
    servicer_cls = type(f"{service.name}Servicer", (Servicer,), {}, module=mod, pb2=pb2,
                        contract=contract)
    _run(servicer_cls, **options)


def run_servicer(servicer_cls: Any) -> None:
    """Entry point of a generated server module (``python -m <module>_server``)."""

    @click.command(
        help=f"Serve {servicer_cls.service.full_name} over gRPC, with mutual TLS by default."
    )
    @_serve_options
    def command(**options: Any) -> None:
        _run(servicer_cls, **options)

    command(prog_name=f"python -m {servicer_cls.service.package}_server")


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
        from ._certs import CertificateError

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
    from ._certs import init_ca

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
    from ._certs import issue_server

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
    from ._certinfo import parse_san
    from ._certs import issue_client

    path = issue_client(folder, identity, days=days, force=force,
                        sans=[parse_san(s) for s in sans])
    click.echo(f"created client certificate {path} for identity {identity!r}")


@certs.command("list")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@_certs_errors
def certs_list(folder: str) -> None:
    """List the certificates of FOLDER: name, kind, expiry and status (valid,
    expires in N days, EXPIRED, REVOKED by revoked.txt)."""
    from ._certinfo import list_folder
    from ._policy import format_serial

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
    from ._certinfo import describe, show_lines

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
    from ._certinfo import describe, renew

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
    from ._certinfo import serial_of
    from ._policy import format_serial, revoke

    for name in names:
        serial, common_name = serial_of(folder, name)
        path = revoke(folder, serial, f"{common_name}")
        click.echo(f"revoked the certificate of {common_name!r} (serial "
                   f"{format_serial(serial)}) in {path}")


if __name__ == "__main__":
    main()
