"""For operators: health, reflection, dagen describe and ping, JSON logs and the service
unit, against real `dagen serve` subprocesses over mutual TLS."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from conftest import ROOT, Certs
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from guarded import GUARDED, SERVICE, raw_channel, serve, wait_until

from dagen import _meta
from dagen._cli import main
from dagen._introspect import load_module
from dagen._logs import JsonFormatter
from dagen._serve import create_server
from dagen._server import Servicer

SERVICE_NAME = SERVICE.strip("/")
POLICY = '[allow]\nadd = ["carol"]\n'  # alice may call nothing but what every server has


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ops-policy") / "policy.toml"
    path.write_text(POLICY)
    return path


def health_status(channel: grpc.Channel, service: str = "") -> str:
    answer = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def sleep_call(channel: grpc.Channel, client_module, seconds: float,
               timeout: float = 60) -> grpc.Future:
    """An async raw call of guarded_service.sleep (a unary rpc)."""
    pb2 = client_module._dagen_pb2
    stub = channel.unary_unary(SERVICE + "Sleep",
                               request_serializer=pb2.SleepRequest.SerializeToString,
                               response_deserializer=pb2.SleepResponse.FromString)
    return stub.future(pb2.SleepRequest(seconds=seconds), timeout=timeout)


# -- health -------------------------------------------------------------------------------------


def test_health_turns_not_serving_on_sigterm_while_calls_finish(
    certs: Certs, tmp_path: Path, guarded_client_module
) -> None:
    served = serve("--certs", str(certs.folder), tmp=tmp_path)
    channel = raw_channel(served.target, certs.folder)
    try:
        assert health_status(channel) == "SERVING"
        assert health_status(channel, SERVICE_NAME) == "SERVING"
        statuses: list[tuple[float, str]] = []
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                          timeout=60)

        def follow() -> None:
            try:
                for answer in watch:
                    statuses.append((time.monotonic(),
                                     health_pb2.HealthCheckResponse.ServingStatus.Name(
                                         answer.status)))
            except grpc.RpcError:
                pass

        threading.Thread(target=follow, daemon=True).start()
        assert wait_until(lambda: statuses, 10)
        call = sleep_call(channel, guarded_client_module, 3.0)  # holds the drain open
        assert wait_until(lambda: "sleep" in served.records(), 10)
        served.process.terminate()  # SIGTERM
        sent = time.monotonic()
        assert wait_until(lambda: any(s == "NOT_SERVING" for _, s in statuses), 10), statuses
        seen = next(t for t, s in statuses if s == "NOT_SERVING")
        # while the call in progress holds the drain open: the server still runs, the
        # call not finished
        assert served.alive()
        assert not call.done()
        assert seen - sent < 2.0
        assert call.result().result == 3.0  # the call in progress finished
        assert [s for _, s in statuses][:2] == ["SERVING", "NOT_SERVING"]
        served.process.wait(timeout=30)
        assert served.process.returncode == 0
    finally:
        channel.close()
        served.stop()


def test_health_follows_the_executor(guarded_client_module, monkeypatch) -> None:
    """NOT_SERVING while the executor says calls cannot run (a dask executor without
    workers), SERVING again once they can."""
    monkeypatch.setattr(_meta, "_POLL", 0.05)
    servicer_cls = type("GuardedServicer", (Servicer,), {}, module=load_module(str(GUARDED)),
                        pb2=guarded_client_module._dagen_pb2)
    servicer = servicer_cls()
    reason: list[str | None] = [None]
    monkeypatch.setattr(servicer.executor, "unready", lambda: reason[0])
    before = set(threading.enumerate())
    server, port = create_server(servicer, port=0, insecure=True)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert health_status(channel) == "SERVING"
        reason[0] = "no dask worker in the cluster"
        assert wait_until(lambda: health_status(channel) == "NOT_SERVING", 5)
        reason[0] = None
        assert wait_until(lambda: health_status(channel) == "SERVING", 5)
    finally:
        channel.close()
        server.stop(None)
        watchers = [t for t in set(threading.enumerate()) - before if t.name == "dagen-health"]
        servicer.close()
    assert watchers and wait_until(lambda: not any(t.is_alive() for t in watchers), 5)


def test_the_dask_executor_is_unready_without_workers() -> None:
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from dagen._cluster import dask_target
    from dagen._executors._dask import DaskExecutor

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        executor = DaskExecutor(sys.modules[__name__], 1,
                                dask_target(None, cluster.scheduler_address, None, 1.0))
        try:
            assert "no dask worker in " in (executor.unready() or "")
            cluster.scale(1)
            executor.client.wait_for_workers(1, timeout=30)
            assert executor.unready() is None
        finally:
            executor.shutdown()
        assert executor.unready() == "the executor is shut down"


# -- reflection, and what any certificate of the CA may call -------------------------------------


def _messages(file: object) -> set[str]:
    """The full names of every message of a file descriptor and those it imports."""
    names: set[str] = set()

    def walk(message) -> None:  # noqa: ANN001 - a Descriptor
        names.add(message.full_name)
        for nested in message.nested_types:
            walk(nested)

    for message in file.message_types_by_name.values():  # type: ignore[attr-defined]
        walk(message)
    for dependency in file.dependencies:  # type: ignore[attr-defined]
        names |= _messages(dependency)
    return names


def test_reflection_resolves_every_message_of_the_contract(
    certs: Certs, tmp_path: Path, guarded_client_module, policy_file: Path
) -> None:
    """Even for a caller the policy lets call nothing."""
    from google.protobuf.descriptor_pb2 import DescriptorProto
    from google.protobuf.descriptor_pool import DescriptorPool

    served = serve("--certs", str(certs.folder), "--policy", str(policy_file), tmp=tmp_path)
    channel = raw_channel(served.target, certs.folder, "alice")
    try:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health", "dagen.v1.Meta"} <= services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE_NAME)
        expected = guarded_client_module._dagen_pb2.DESCRIPTOR
        assert {m.name for m in service.methods} == set(
            expected.services_by_name[SERVICE_NAME.rpartition(".")[2]].methods_by_name)
        names = _messages(expected)
        assert len(names) > 20
        for name in sorted(names):
            ours, theirs = DescriptorProto(), DescriptorProto()
            expected.pool.FindMessageTypeByName(name).CopyToProto(ours)
            pool.FindMessageTypeByName(name).CopyToProto(theirs)
            assert theirs == ours, name
        # the health service and Meta too, whatever the policy; the functions not
        assert health_status(channel) == "SERVING"
        pb2 = guarded_client_module._dagen_pb2
        add = channel.unary_unary(SERVICE + "Add", request_serializer=pb2.AddRequest.SerializeToString,
                                  response_deserializer=pb2.AddResponse.FromString)
        with pytest.raises(grpc.RpcError) as refused:
            add(pb2.AddRequest(a=1, b=2), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()
        served.stop()


def test_no_reflection_turns_it_off(certs: Certs, tmp_path: Path) -> None:
    served = serve("--certs", str(certs.folder), "--no-reflection", tmp=tmp_path)
    channel = raw_channel(served.target, certs.folder)
    try:
        with pytest.raises(grpc.RpcError) as off:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert health_status(channel) == "SERVING"
    finally:
        channel.close()
        served.stop()


# -- dagen describe and ping, where the served module is not ------------------------------------


def visitor(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dagen ARGS` where only dagen is importable (not the tests' folders)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DAGEN_")}
    environment.update(PYTHONPATH=str(ROOT / "src"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "dagen", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def own_server(certs: Certs, tmp_path_factory):
    """A server of a module only its folder has."""
    folder = tmp_path_factory.mktemp("owner")
    module = folder / "secret_ocean.py"
    module.write_text('''\
"""Tools only the owner has."""

import numpy as np


def scale(a: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Multiply by ``factor``."""
    return a * factor


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Grid:
    """A grid of a given resolution."""

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution

    def cells(self, extent: float) -> int:
        """How many cells cover ``extent``."""
        return int(extent / self.resolution)
''')
    served = serve("--certs", str(certs.folder), tmp=folder, module=module)
    yield served
    served.stop()


def test_describe_needs_no_module(own_server, certs: Certs, tmp_path: Path) -> None:
    check = subprocess.run([sys.executable, "-c", "import secret_ocean"], cwd=tmp_path,
                           env={"PYTHONPATH": str(ROOT / "src")}, capture_output=True)
    assert check.returncode != 0  # the visitor does not have the module
    text = visitor("describe", own_server.target, "--certs", str(certs.folder), "--identity",
                   "alice", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "secret_ocean.SecretOcean" in text.stdout
    assert "def scale(a: numpy.ndarray, factor: float = 2.0) -> numpy.ndarray  [array stream]" \
        in text.stdout
    assert "def add(a: int, b: int) -> int\n    Add two integers." in text.stdout
    assert "class Grid(resolution: float) -> None" in text.stdout
    assert "    def cells(extent: float) -> int" in text.stdout
    assert "Tools only the owner has." in text.stdout
    as_json = visitor("describe", "--json", cwd=tmp_path, env={
        "DAGEN_TARGET": own_server.target, "DAGEN_CERTS": str(certs.folder),
        "DAGEN_IDENTITY": "bob"})
    assert as_json.returncode == 0, as_json.stderr
    d = json.loads(as_json.stdout)
    assert d["service"] == "secret_ocean.SecretOcean"
    assert d["dagen_version"] == __import__("dagen").__version__
    assert d["contract_revision"] == 1
    assert {f["name"]: f["kind"] for f in d["functions"]} == {"scale": "array stream",
                                                               "add": "unary"}
    assert d["classes"][0]["methods"][0] == {
        "name": "Grid.cells", "signature": "(extent: float) -> int",
        "doc": "How many cells cover ``extent``.",
        "rpc": "/secret_ocean.SecretOcean/GridCells", "kind": "unary"}


def test_ping_says_who_the_server_sees(own_server, certs: Certs, tmp_path: Path) -> None:
    pong = visitor("ping", own_server.target, "--certs", str(certs.folder), "--identity", "bob",
                   cwd=tmp_path)
    assert pong.returncode == 0, pong.stderr
    assert pong.stdout.startswith(f"{own_server.target}: SERVING, round trip ")
    assert "secret_ocean.SecretOcean" in pong.stdout
    assert "sees you as bob (serial " in pong.stdout


def test_ping_fails_with_a_non_zero_exit(own_server, certs: Certs, tmp_path: Path) -> None:
    # another CA's certificate: the handshake fails
    other = visitor("ping", own_server.target, "--certs", str(certs.other), "--identity",
                    "mallory", "--timeout", "5", cwd=tmp_path)
    assert other.returncode == 1
    assert "UNAVAILABLE" in other.stderr
    # nobody listens
    gone = visitor("ping", "localhost:1", "--certs", str(certs.folder), "--identity", "alice",
                   "--timeout", "3", cwd=tmp_path)
    assert gone.returncode == 1
    assert "Error: localhost:1: " in gone.stderr
    # a folder with several pairs, and no --identity: which one?
    which = visitor("ping", own_server.target, "--certs", str(certs.folder), cwd=tmp_path)
    assert which.returncode == 1
    assert "alice, bob" in which.stderr and "--identity" in which.stderr


def test_ping_over_a_unix_socket(certs: Certs, tmp_path: Path) -> None:
    socket = tmp_path / "dagen.sock"
    served = serve("--certs", str(certs.folder), "--socket", str(socket), tmp=tmp_path)
    try:
        pong = visitor("ping", f"unix:{socket}", "--certs", str(certs.folder), "--identity",
                       "alice", cwd=tmp_path)
        assert pong.returncode == 0, pong.stderr
        assert "SERVING" in pong.stdout and "sees you as alice" in pong.stdout
    finally:
        served.stop()


# -- logs ------------------------------------------------------------------------------------


def test_json_logs_parse_line_by_line(
    certs: Certs, tmp_path: Path, guarded_client_module, policy_file: Path
) -> None:
    import numpy as np

    served = serve("--certs", str(certs.folder), "--policy", str(policy_file),
                   "--log-format", "json", tmp=tmp_path)
    try:
        with guarded_client_module.Client(served.target, certs=certs.folder, identity="alice",
                                          timeout=30) as client:
            with pytest.raises(PermissionError):
                client.whoami_array(np.zeros(10))  # refused by the policy
        channel = raw_channel(served.target, certs.folder, "alice")
        try:
            nothing = channel.unary_unary(SERVICE + "NoSuchThing")
            with pytest.raises(grpc.RpcError) as unknown:
                nothing(b"", timeout=10)
            assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            channel.close()
    finally:
        served.stop()
    # every line the server wrote is JSON (grpc's own C log lines aside)
    lines = [line for line in served.logged().splitlines()
             if line and not re.match(r"[IWEF]\d{4} ", line)]
    records = [json.loads(line) for line in lines]
    for r in records:
        assert {"time", "level", "event", "message"} <= set(r)
    refused = [r for r in records if r["event"] == "refused"]
    assert refused and refused[0]["identity"] == "alice"
    assert refused[0]["function"] == "whoami_array"
    assert refused[0]["status"] == "PERMISSION_DENIED"
    assert "policy" in refused[0]["reason"] and refused[0]["call_id"]
    unknown_method = [r for r in records if r["event"] == "unknown_method"]
    assert unknown_method[0]["function"] == SERVICE + "NoSuchThing"
    assert unknown_method[0]["status"] == "UNIMPLEMENTED"
    assert any(r["event"] == "health" and r["status"] == "SERVING" for r in records)


def test_a_failed_tls_handshake_is_a_json_record(certs: Certs, tmp_path: Path) -> None:
    """A client whose certificate another CA signed never reaches a handler: only grpc's C
    core sees the handshake fail. dagen serve turns that line into a record of its log,
    and every line of the log is then JSON."""
    from dagen._security import init_ca, issue_client

    other = tmp_path / "other-ca"
    init_ca(other)
    issue_client(other, "mallory")
    shutil.copy(certs.folder / "ca.crt", other / "ca.crt")  # mallory trusts the server
    served = serve("--certs", str(certs.folder), "--log-format", "json", tmp=tmp_path)
    try:
        channel = raw_channel(served.target, other, "mallory")
        try:
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(SERVICE + "whoami")(b"", timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            channel.close()

        def failed() -> list[dict]:
            records = [json.loads(line) for line in served.logged().splitlines() if line]
            return [r for r in records if r["event"] == "tls_handshake_failed"]

        assert wait_until(failed, 10), served.logged()
    finally:
        served.stop()
    record = failed()[0]
    assert record["level"] == "WARNING" and record["status"].startswith("SSL_ERROR")
    assert "CERTIFICATE_VERIFY_FAILED" in record["reason"]
    assert "TLS handshake failed" in record["message"]


def test_json_logs_of_calls_cancellations_and_contract_mismatches(
    certs: Certs, tmp_path: Path, guarded_client_module
) -> None:
    import numpy as np

    served = serve("--certs", str(certs.folder), "--log-format", "json", tmp=tmp_path)
    pb2 = guarded_client_module._dagen_pb2
    try:
        with guarded_client_module.Client(served.target, certs=certs.folder, identity="bob",
                                          timeout=30) as client:
            assert client.whoami_array(np.zeros(1000)) == ["bob", "1000"]
        channel = raw_channel(served.target, certs.folder, "alice")
        try:
            add = channel.unary_unary(SERVICE + "Add",
                                      request_serializer=pb2.AddRequest.SerializeToString,
                                      response_deserializer=pb2.AddResponse.FromString)
            with pytest.raises(grpc.RpcError) as mismatch:
                add(pb2.AddRequest(a=1, b=2), timeout=10,
                    metadata=(("dagen-contract", "7:0123456789abcdef"),))
            assert mismatch.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as late:
                sleep_call(channel, guarded_client_module, 3.0, timeout=0.5).result()
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert wait_until(lambda: '"cancelled"' in served.logged(), 10)
        finally:
            channel.close()
    finally:
        served.stop()
    records = [json.loads(line) for line in served.logged().splitlines() if line.startswith("{")]
    call = next(r for r in records if r["event"] == "call")
    assert call["identity"] == "bob" and call["function"] == "whoami_array"
    assert call["bytes_in"] == 8000 and call["status"] == "OK"
    assert call["bytes_out"] == 0  # array bytes: the result, a list of str, has none
    assert call["seconds"] > 0 and call["call_id"]
    contract = next(r for r in records if r["event"] == "contract_mismatch")
    assert contract["function"] == "add" and contract["identity"] == "alice"
    assert contract["status"] == "FAILED_PRECONDITION" and "revision 7" in contract["reason"]
    cancelled = next(r for r in records if r["event"] == "cancelled")
    assert cancelled["function"] == "sleep" and cancelled["status"] == "DEADLINE_EXCEEDED"
    assert cancelled["reason"] == "its deadline passed"


def test_the_json_formatter_writes_any_extra_field() -> None:
    import logging

    record = logging.LogRecord("dagen.server", logging.WARNING, __file__, 1,
                               "handshake with %s failed", ("1.2.3.4:5",), None)
    record.event, record.peer = "tls_handshake_failed", "1.2.3.4:5"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["event"] == "tls_handshake_failed" and fields["peer"] == "1.2.3.4:5"
    assert fields["message"] == "handshake with 1.2.3.4:5 failed"
    assert fields["level"] == "WARNING" and fields["time"].endswith("+00:00")


# -- a unit that keeps the server running ---------------------------------------------------------


def test_service_unit_is_a_valid_systemd_unit(certs: Certs, tmp_path: Path) -> None:
    module = ROOT / "tests" / "services" / "guarded_service.py"
    result = CliRunner().invoke(main, ["service-unit", str(module), "--certs", str(certs.folder),
                                       "--port", "50123", "--log-format", "json"])
    assert result.exit_code == 0, result.output
    unit = result.output
    assert "Restart=on-failure" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart={sys.executable} -m dagen serve {module} --certs "
                          f"{certs.folder} --port 50123 --log-format json")
    path = tmp_path / "dagen-guarded-service.service"
    path.write_text(unit)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # parse it, as systemd would: sections of key=value lines
        import configparser

        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit)
        assert parser["Service"]["Restart"] == "on-failure"
        assert parser["Install"]["WantedBy"] == "default.target"
        return
    check = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True,
                           text=True, timeout=60)
    problems = [line for line in (check.stdout + check.stderr).splitlines()
                if str(path) in line or "dagen-guarded-service" in line]
    assert check.returncode == 0 and not problems, check.stdout + check.stderr


def test_service_unit_checks_the_serve_options() -> None:
    result = CliRunner().invoke(main, ["service-unit", "m.py", "--port", "not-a-port"])
    assert result.exit_code == 2
    assert "the options of dagen serve" in result.output and "--port" in result.output


def test_the_loop_script_restarts_a_failing_server(tmp_path: Path) -> None:
    """Where no user systemd runs: the script runs the command again after a failure
    and stops after a clean exit."""
    from dagen import _units

    counter = tmp_path / "count"
    command = ["sh", "-c", f'echo x >> {counter}; [ $(wc -l < {counter}) -ge 3 ]']
    text = _units.loop_script("t", command, str(tmp_path)).replace(
        f"sleep {_units.RESTART_SECONDS}", "sleep 0")
    script = tmp_path / "t.sh"
    script.write_text(text)
    done = subprocess.run(["sh", str(script)], env={**os.environ, "HOME": str(tmp_path)},
                          timeout=30, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert counter.read_text().count("x") == 3  # failed twice, restarted, then done
    log = (tmp_path / ".local" / "state" / "t.log").read_text()
    assert log.count("exited with 1, restarting") == 2


def test_a_unary_function_can_be_called_as_grpcurl_does(own_server, certs: Certs) -> None:
    """From reflection alone (no .proto, no client): the request message built from
    JSON, the response read back; the array stream is a stream of dagen's frames."""
    from google.protobuf import json_format
    from google.protobuf.descriptor_pool import DescriptorPool
    from google.protobuf.message_factory import GetMessageClass

    channel = raw_channel(own_server.target, certs.folder, "alice")
    try:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("secret_ocean.SecretOcean")
        add = service.methods_by_name["Add"]
        assert not add.client_streaming and not add.server_streaming
        request_cls = GetMessageClass(add.input_type)
        response_cls = GetMessageClass(add.output_type)
        call = channel.unary_unary(f"/{service.full_name}/Add",
                                   request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)
        answer = call(json_format.Parse('{"a": 20, "b": 22}', request_cls()), timeout=10)
        assert json_format.MessageToDict(answer) == {"result": "42"}  # int64 in JSON
        scale = service.methods_by_name["Scale"]
        assert scale.client_streaming and scale.server_streaming
    finally:
        channel.close()
