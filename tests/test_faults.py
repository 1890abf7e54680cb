"""Faults: a client that dies mid-upload or mid-download (the server frees the call's
buffers -- its RSS comes back near its baseline, measured -- and goes on serving), and
a server killed mid-call (the client raises a clear error well within its deadline and
never returns a half-filled array)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from guarded import MiB, serve, wait_until

import dagen

BACK_NEAR_BASELINE = 32 * MiB  # what malloc may keep of the call's 1 MiB chunk frames

CHILD = textwrap.dedent('''
    """A client that starts a big transfer, says so, and waits to be killed."""
    import sys, threading, time
    import numpy as np
    import grpc

    mode, target, certs, build, client_project = sys.argv[1:6]
    sys.path[:0] = [build, client_project]

    if mode == "upload":
        import guarded_service_pb2 as pb2
        from dagen.v1 import array_pb2
        n = 256 << 20
        creds = grpc.ssl_channel_credentials(
            open(f"{certs}/ca.crt", "rb").read(), open(f"{certs}/alice.key", "rb").read(),
            open(f"{certs}/alice.crt", "rb").read())
        channel = grpc.secure_channel(target, creds)

        def frames():
            header = array_pb2.NDArray(id=1, dtype="|u1", shape=[n], nbytes=n)
            yield pb2.TotalInput(request=pb2.TotalRequest(a=header, label="died")).SerializeToString()
            block = bytes(1 << 20)
            for start in range(0, n // 2, 1 << 20):
                yield pb2.TotalInput(chunk=array_pb2.Chunk(
                    array_id=1, start=[start], shape=[1 << 20], data=block)).SerializeToString()
            print("half sent", flush=True)
            time.sleep(3600)

        list(channel.stream_stream("/guarded_service.GuardedService/Total")(frames()))
    else:
        import guarded_service_client as g

        def on_progress(report):
            if report.phase == "download" and report.bytes_done > 0:
                print("downloading", report.bytes_done, flush=True)
                time.sleep(3600)  # stops reading: the server's sends wait

        client = g.Client(target, certs=certs, identity="alice", timeout=600,
                          on_progress=on_progress, transfer_threshold=1 << 20)
        client.zeros(256 << 20)
''')


@pytest.fixture(scope="module")
def server(certs, tmp_path_factory, guarded_build):
    served = serve("--certs", str(certs.folder), tmp=tmp_path_factory.mktemp("faults"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def child_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("child") / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture(scope="module")
def alice(guarded_client_module, server, certs):
    with guarded_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                      timeout=60) as client:
        yield client


def settled_rss(server, seconds: float = 0.5) -> int:
    """The server's RSS once it stops moving."""
    time.sleep(seconds)
    return server.rss()


@pytest.mark.parametrize("mode, says", [("upload", "half sent"), ("download", "downloading")])
def test_a_client_that_dies_mid_transfer_leaves_nothing_behind(
    mode, says, server, child_script, certs, guarded_build, alice
):
    assert alice.total(np.ones(10)) == 10.0  # warm: threads, TLS, imports
    baseline = settled_rss(server)
    before = server.records()
    child = subprocess.Popen(
        [sys.executable, str(child_script), mode, server.target, str(certs.folder),
         str(guarded_build.out), str(guarded_build.client)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert says in line, (line, child.stderr.read() if child.poll() is not None else "")
        wait_until(lambda: server.rss() - baseline > 96 * MiB, 15)  # the server holds it
        during = server.rss() - baseline
        child.kill()  # no goodbye: the kernel closes its connection
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    freed = wait_until(lambda: server.rss() - baseline < BACK_NEAR_BASELINE, 15)
    after = server.rss() - baseline
    print(f"client died mid-{mode}: server RSS baseline {baseline / MiB:.0f} MiB, "
          f"+{during / MiB:.0f} MiB during the call, +{after / MiB:.1f} MiB after")
    assert during > 96 * MiB  # the call really held its buffer
    assert freed, f"the server still holds {after / MiB:.0f} MiB after the client died"
    # the server goes on serving, and ran nothing for the upload that never finished
    assert alice.total(np.arange(4.0)) == 6.0
    if mode == "upload":
        assert "total died" not in server.records()[len(before):]
    assert server.alive()


def test_a_server_killed_mid_call_raises_at_once(guarded_client_module, certs, tmp_path):
    served = serve("--certs", str(certs.folder), tmp=tmp_path)
    errors: list[BaseException] = []
    with guarded_client_module.Client(served.target, certs=certs.folder, identity="alice",
                                      timeout=20) as client:
        assert client.add(1, 1) == 2

        def call() -> None:
            try:
                client.sleep(30.0)
            except BaseException as e:  # noqa: BLE001 - examined below
                errors.append(e)

        thread = threading.Thread(target=call)
        thread.start()
        assert wait_until(lambda: "sleep" in served.records(), 15)  # the call runs
        killed = time.perf_counter()
        served.kill()
        thread.join(20)
        elapsed = time.perf_counter() - killed
    print(f"server killed mid-call: the client raised after {elapsed:.2f} s "
          f"(deadline 20 s): {errors[0]!r}")
    assert elapsed < 5
    assert isinstance(errors[0], dagen.ServerUnavailable)
    assert served.target in str(errors[0]) and "sleep()" in str(errors[0])


def test_a_server_killed_mid_download_never_yields_a_half_filled_array(
    guarded_client_module, certs, tmp_path
):
    served = serve("--certs", str(certs.folder), tmp=tmp_path)
    seen: list[int] = []

    def on_progress(report) -> None:
        if report.phase == "download" and report.bytes_done > 0:
            seen.append(report.bytes_done)
            if len(seen) == 1:
                served.kill()

    with guarded_client_module.Client(served.target, certs=certs.folder, identity="alice",
                                      timeout=20, on_progress=on_progress,
                                      transfer_threshold=MiB) as client:
        started = time.perf_counter()
        with pytest.raises((dagen.ServerUnavailable, dagen.CallError)) as failed:
            client.zeros(128 * MiB)
        elapsed = time.perf_counter() - started
    print(f"server killed after {seen[0] / MiB:.0f} MiB of 128 MiB downloaded: "
          f"{type(failed.value).__name__} after {elapsed:.2f} s: {failed.value}")
    assert 0 < seen[0] < 128 * MiB
    assert served.target in str(failed.value) and "zeros()" in str(failed.value)
    assert elapsed < 10
