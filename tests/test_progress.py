"""Progress: a running function's reports reach the caller in order, before the result;
transfers of large arrays show bytes, rate and time left in a terminal."""

import importlib
import inspect
import os
import pty
import subprocess
import sys
import textwrap
import time

import grpc
import numpy as np
import pytest
import xarray as xr
from conftest import SERVICES, start_server

import dagen
from dagen.testing import MockTransport, ProgressState, Reply

sys.path.insert(0, str(SERVICES))
progress_service = importlib.import_module("progress_service")


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("progress-server") / "server.log"


@pytest.fixture(scope="module")
def server(certs, server_log):
    server = start_server(SERVICES / "progress_service.py", "--certs", str(certs.folder),
                          log=server_log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(progress_client_module, server, certs):
    with progress_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                       timeout=60) as client:
        yield client


def test_ten_reports_reach_the_callback_in_order_before_the_result(client):
    events = []
    with client.__dagen__.options(on_progress=lambda report: events.append(report)):
        result = client.count(10)
    events.append(result)
    assert events[-1] == 10
    reports = events[:-1]
    assert [r.message for r in reports] == [f"step {i} of 10" for i in range(1, 11)]
    assert [r.fraction for r in reports] == pytest.approx([i / 10 for i in range(1, 11)])
    assert {(r.function, r.phase) for r in reports} == {("count", "run")}


def counting(request):
    """count(n) as the server runs it: n reports, then n."""
    n = request.arguments.get("n", 0)
    return Reply(n, progress=[ProgressState(i / n, f"step {i} of {n}") for i in range(1, n + 1)])


def test_callback_per_client_and_per_call(progress_client_module):
    seen, per_call = [], []
    with progress_client_module.Client(transport=MockTransport(counting),
                                       on_progress=seen.append) as client:
        assert client.count(3) == 3
        assert len(seen) == 3
        with client.__dagen__.options(on_progress=per_call.append):  # the inner setting wins
            assert client.count(2) == 2
        with dagen.call_options(on_progress=None), client.__dagen__.options(on_progress=None):
            assert client.count(4) == 4
    assert len(seen) == 3 and len(per_call) == 2
    with pytest.raises(TypeError, match="unknown call option 'colour'"):
        with client.__dagen__.options(colour="red"):
            pass


def test_nested_steps(client):
    reports = []
    with client.__dagen__.options(on_progress=reports.append):
        assert client.regrid(3) == "done"
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # closing a step counts
    assert [s.name for s in reports[1].steps] == ["regridding", "month 1"]
    assert reports[1].steps[0].total == 3
    assert reports[-1].steps == () and reports[-1].message == "month 3 of 3 done"


def test_a_failing_callback_cancels_the_call_and_raises(client):
    def stop(report):
        raise RuntimeError("enough")

    with client.__dagen__.options(on_progress=stop), pytest.raises(RuntimeError, match="enough"):
        client.count(5)
    assert client.add(1, 2) == 3


def test_progress_is_not_part_of_the_remote_signature(progress_build, progress_client_module):
    for name in ("count", "regrid", "cooperative"):
        original = inspect.signature(getattr(progress_service, name))
        remote = original.replace(
            parameters=[p for p in original.parameters.values() if p.name != "progress"]
        )
        assert inspect.signature(getattr(progress_client_module, name)) == remote
    proto = (progress_build.out / "progress_service.proto").read_text()
    # A function reporting progress is a stream, to carry Progress frames before its result.
    assert "rpc Count(stream CountInput) returns (stream CountOutput);" in proto
    assert "rpc Patient(PatientRequest) returns (PatientResponse);" in proto
    assert 'import "dagen/v1/progress.proto";' in proto
    count_request = proto.split("message CountRequest {")[1].split("}")[0]
    assert "progress" not in count_request
    count_output = proto.split("message CountOutput {")[1].split("\n}")[0]
    assert "dagen.v1.Progress progress = 3;" in count_output


def test_stock_protobuf_client_receives_progress_frames(progress_build, server, certs):
    """What another language's protoc-generated client sees: Progress frames, then the
    response."""
    sys.path.insert(0, str(progress_build.out))
    try:
        pb2 = importlib.import_module("progress_service_pb2")
        pb2_grpc = importlib.import_module("progress_service_pb2_grpc")
    finally:
        sys.path.remove(str(progress_build.out))
    credentials = grpc.ssl_channel_credentials(
        (certs.folder / "ca.crt").read_bytes(),
        (certs.folder / "alice.key").read_bytes(),
        (certs.folder / "alice.crt").read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = pb2_grpc.ProgressServiceStub(channel)
        frames = list(stub.Count(iter([pb2.CountInput(request=pb2.CountRequest(n=4))]), timeout=30))
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["progress"] * 4 + ["response"]
    assert [f.progress.sequence for f in frames[:4]] == [1, 2, 3, 4]
    assert frames[3].progress.fraction == 1.0 and frames[3].progress.message == "step 4 of 4"
    assert frames[4].response.result == 4


def test_progress_outside_a_server():
    """The default NO_PROGRESS reports nowhere, so the function runs locally as before."""
    assert progress_service.count(3) == 3
    assert not dagen.cancelled()
    states = []
    progress = dagen.Progress(states.append)
    assert progress_service.regrid(2, progress=progress) == "done"
    assert states[-1].fraction == 1.0
    with pytest.raises(ValueError, match="finite number"):
        progress.update(done=float("inf"))


def test_reports_are_merged_only_when_the_caller_falls_behind():
    from dagen._executors import ReportQueue
    from dagen._progress import ProgressState

    queue = ReportQueue(maxlen=4)
    for i in range(1, 11):  # nobody reads: the newest replaces the last pending one
        queue.put(ProgressState(i / 10, f"report {i}"))
    items = queue.drain()
    assert [seq for seq, _ in items] == [1, 2, 3, 10]
    assert items[-1][1].message == "report 10"


def test_progress_parameters_are_found_and_checked():
    from collections.abc import Iterator

    from dagen._introspect import BuildError, introspect_function

    def optional(n: int, p: dagen.Progress | None = None) -> int:
        return n

    def twice(p: dagen.Progress, q: dagen.Progress) -> int:
        return 0

    def positional(p: dagen.Progress, /) -> int:
        return 0

    def items(p: dagen.Progress) -> Iterator[int]:
        yield 0

    fn = introspect_function(optional, "m")
    assert fn.progress == "p" and [p.name for p in fn.parameters] == ["n"] and fn.streaming
    for bad, message in [(twice, "at most one dagen.Progress"),
                         (positional, "cannot be positional-only"),
                         (items, "a generator cannot take a dagen.Progress")]:
        with pytest.raises(BuildError, match=message):
            introspect_function(bad, "m")


def test_transfers_above_the_threshold_are_reported(client):
    reports = []
    da = xr.DataArray(np.arange(1 << 19, dtype="f8"), dims="x")  # 4 MiB each way, and 4 more
    with client.__dagen__.options(on_progress=reports.append, transfer_threshold=1 << 20):
        result = client.double(da, da)
    xr.testing.assert_identical(result[1], da)
    up = [r for r in reports if r.phase == "upload"]
    down = [r for r in reports if r.phase == "download"]
    assert up and down
    assert up[-1].bytes_done == up[-1].bytes_total >= 8 << 20
    assert down[-1].bytes_done == down[-1].bytes_total >= 8 << 20
    assert [r.bytes_done for r in up] == sorted(r.bytes_done for r in up)
    reports.clear()
    with client.__dagen__.options(on_progress=reports.append):  # below the default threshold (64 MiB)
        client.double(da, da)
    assert reports == []


def test_a_transfer_of_inline_and_chunked_arrays_reports_its_end(client):
    """A message whose coordinates go inside their headers and whose data goes as
    chunks: the inline bytes count as done with the message, so the last report of
    each way says done == total (a report at the end is sent only then)."""
    n = 1024
    da = xr.DataArray(np.ones((n, n)), dims=("y", "x"),  # 8 MiB as chunks
                      coords={"y": np.arange(n), "x": np.arange(n) * 2})  # 8 KiB each, inline
    arrays = da.nbytes + 2 * n * 8
    client.double(da, da)  # the first call learns that the server reads inline arrays
    assert client.__dagen__.server_reads_inline
    reports = []
    with client.__dagen__.options(on_progress=reports.append, transfer_threshold=1 << 20):
        result = client.double(da, da)
    xr.testing.assert_identical(result[1], da)
    for phase in ("upload", "download"):
        seen = [(r.bytes_done, r.bytes_total) for r in reports if r.phase == phase]
        assert seen and seen[-1] == (2 * arrays, 2 * arrays), (phase, seen)
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_nothing_is_shown_when_stderr_is_not_a_terminal(progress_client_module, capsys):
    client = progress_client_module.Client(transport=MockTransport(counting))
    assert client.count(10) == 10
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.slow
def test_upload_progress_in_a_pseudo_terminal(server, certs, progress_build, server_log):
    """A 256 MiB upload shows bytes, rate and time left on a terminal; the function's
    own reports show as a bar; the server logs the call's figures."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(progress_build.client)!r})
        import progress_service_client as m
        client = m.Client({server.target!r}, certs={str(certs.folder)!r}, identity="alice",
                          timeout=120)
        print("count", client.count(10))
        print("checksum", client.checksum(np.ones(32 << 20)))  # 256 MiB
    """)
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", script], stdin=slave, stdout=slave,
                               stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    started = time.monotonic()
    while time.monotonic() - started < 120:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # the other end closed
            break
        if not data:
            break
        output += data
    os.close(master)
    assert process.wait(timeout=30) == 0, output
    text = output.decode(errors="replace")
    assert "count 10" in text and f"checksum {float(32 << 20)}" in text
    assert "count(): 100%" in text and "step 10 of 10" in text  # the function's bar
    final = [line for line in text.split("\r") if "checksum() upload: 100%" in line]
    assert final, text
    assert "256M/256M" in final[-1] and "B/s" in final[-1]  # bytes, rate...
    assert "<00:00" in final[-1]  # ...and time left
    log = server_log.read_text()
    assert "alice checksum() in 268435456 B, out 0 B" in log


def test_transfer_reports_to_a_callback_are_throttled_and_timed():
    from dagen._display import CallProgress, CallSettings

    reports = []
    progress = CallProgress("f", CallSettings(timeout=None, on_progress=reports.append,
                                              progress_bar=False, transfer_threshold=0))
    total = 100 << 20
    for i in range(1, 101):  # 100 chunks arriving within a fraction of a second
        progress.transfer("upload", i << 20, total)
        time.sleep(0.002)
    assert 2 <= len(reports) <= 6  # every ~0.1 s and the last one, not every chunk
    assert reports[-1].bytes_done == total and reports[-1].elapsed > 0.15
