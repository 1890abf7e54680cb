"""--executor dask: calls run as tasks on a dask cluster, through a real `dagen serve`
subprocess over mutual TLS and the generated client. The same tests run on a local
cluster (kind: local, in the ordinary suite) and on a real SLURM (kind: slurm; brought
up by .ci/slurm-up.sh in `make test` as root, skipped where SLURM is not there, and
failing instead under CI=true with DAGEN_SLURM=required)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import ROOT, SERVICES, SHARED_DATA, import_client, start_server
from guarded import proc_status, reset_peak, wait_until

import dagen
from dagen._build import build

pytest.importorskip("distributed", reason="--executor dask needs dagen[cluster]")
pytest.importorskip("dask_jobqueue", reason="--executor dask needs dagen[cluster]")

MODULE = SERVICES / "cluster_service.py"
MiB = 1 << 20
ERA_INTERIM = SHARED_DATA / "eraint_uvz.nc"


def slurm_partition() -> str:
    """The partition of a SLURM that answers with an idle node; skips (or fails, under
    CI with DAGEN_SLURM=required) with the reason otherwise."""
    reason = ""
    if shutil.which("sinfo") is None:
        reason = "SLURM is not installed (sinfo not found); as root, .ci/slurm-up.sh installs it"
    else:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True,
                              timeout=30)
        lines = [line.split() for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0:
            reason = f"SLURM does not answer: {done.stderr.strip()} (run .ci/slurm-up.sh as root)"
        elif not any(state.startswith(("idle", "mix")) for _, state in lines):
            reason = f"SLURM has no idle node: {done.stdout.strip()!r}"
        else:
            return next(p for p, state in lines if state.startswith(("idle", "mix"))).rstrip("*")
    if os.environ.get("CI") and os.environ.get("DAGEN_SLURM") == "required":
        pytest.fail(f"SLURM was to be brought up for CI, but: {reason}")
    pytest.skip(reason)


def cluster_file(kind: str, folder: Path) -> Path:
    path = folder / "cluster.yaml"
    if kind == "local":
        path.write_text("kind: local\nscale: {jobs: 1}\nwait_for_workers: 60\n")
        return path
    partition = slurm_partition()
    path.write_text(f"""\
kind: slurm
options:
  cores: 1
  memory: 2GB
  processes: 1
  queue: {partition}
  walltime: "00:30:00"
  scheduler_options: {{host: 127.0.0.1}}
  worker_extra_args: [--host, 127.0.0.1]
  job_script_prologue: ["export PYTHONPATH={ROOT / 'src'}"]
  shared_temp_directory: {folder}
  log_directory: {folder / 'jobs'}
scale: {{jobs: 1}}
wait_for_workers: 120
""")
    return path



@pytest.fixture(scope="module")
def cluster_client_module(tmp_path_factory):
    result = build(str(MODULE), tmp_path_factory.mktemp("cluster-build"))
    return import_client(result.client, "cluster_service_client")


@pytest.fixture(scope="module", params=["local", "slurm"])
def served(request, certs, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"dask-{request.param}")
    path = cluster_file(request.param, folder)
    log = folder / "server.log"
    server = start_server(MODULE, "--certs", str(certs.folder), "--executor", "dask",
                          "--cluster", str(path), log=log)
    server.kind, server.log, server.folder = request.param, log, folder
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(cluster_client_module, served, certs):
    with cluster_client_module.Client(served.target, certs=certs.folder, identity="alice",
                                      timeout=180) as client:
        yield client


def test_a_call_runs_as_a_task_on_a_worker(client, served):
    job, pid = client.job_id().split(":")
    assert int(pid) != served.process.pid  # not in the server
    if served.kind == "slurm":
        assert job, "the function did not run inside a SLURM job"
        states = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                text=True).stdout.split()
        assert states == ["RUNNING"]
    else:
        assert job == ""
    time.sleep(1.0)
    print(f"\n{served.kind}: idle RSS of dagen serve (server + dask scheduler): "
          f"{proc_status(served.process.pid, 'VmRSS') / MiB:.0f} MiB")


def test_the_task_sees_the_seconds_left_before_the_deadline(client):
    with client.__dagen__.options(timeout=60.0):
        left = client.remaining()
    assert 30.0 < left <= 60.5, left
    with client.__dagen__.options(timeout=None):
        assert client.remaining() is None


def test_real_data_comes_back_identical_with_progress_in_order(client, served):
    if not ERA_INTERIM.exists():
        pytest.skip(f"{ERA_INTERIM} is absent (the shared data folder of this environment)")
    reports = []
    with dagen.call_options(client=client, on_progress=reports.append):
        speed = client.wind_speed(str(ERA_INTERIM))
    with xr.open_dataset(ERA_INTERIM) as ds:
        expected = ((ds.u**2 + ds.v**2) ** 0.5).load()
    job = speed.attrs.pop("slurm_job_id")
    xr.testing.assert_identical(speed, expected)
    assert [r.fraction for r in reports] == [0.0, 1.0]
    assert reports[0].message == f"job {job}" and bool(job) == (served.kind == "slurm")


def test_progress_from_the_worker_arrives_in_order(client):
    reports = []
    with dagen.call_options(client=client, on_progress=reports.append):
        assert client.count(20) == 20
    assert [r.message for r in reports] == [f"step {i} of 20" for i in range(1, 21)]


def test_the_caller_identity_reaches_the_worker(client, cluster_client_module, served, certs):
    assert client.whoami() == "alice"
    with cluster_client_module.Client(served.target, certs=certs.folder, identity="bob",
                                      timeout=120) as bob:
        assert bob.whoami() == "bob"


def stops_growing(log: Path, within: float) -> float:
    """Seconds until ``log`` stopped growing (unchanged for 1 s), or fail after ``within``."""
    start = time.monotonic()
    size, since = -1, time.monotonic()
    while time.monotonic() - start < within + 1.0:
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return since - start
        time.sleep(0.05)
    raise AssertionError(f"{log} still grows {within} s after the call was cancelled")


def test_a_cancelled_cooperative_call_stops_on_the_worker(client, served, tmp_path):
    log = tmp_path / "tick.log"

    def cancel(report):
        raise KeyboardInterrupt  # as Ctrl-C in the callback: the client cancels the call

    with dagen.call_options(client=client, on_progress=cancel), pytest.raises(KeyboardInterrupt):
        client.tick(120.0, str(log))
    stopped = stops_growing(log, within=5.0)
    print(f"\n{served.kind}: cooperative call stopped {stopped:.2f} s after the cancel")
    size = log.stat().st_size
    time.sleep(1.0)
    assert log.stat().st_size == size and size > 0
    assert client.count(2) == 2  # the cluster goes on serving


def test_a_call_that_never_checks_is_stopped_by_restarting_its_worker(client, served, tmp_path):
    log = tmp_path / "forever.log"
    with dagen.call_options(client=client, timeout=3.0), pytest.raises(TimeoutError):
        client.tick_forever(600.0, str(log))
    assert log.exists() and log.stat().st_size > 0
    stopped = stops_growing(log, within=15.0)
    print(f"\n{served.kind}: never-checking call stopped {stopped:.2f} s after its deadline")
    assert "restarting worker" in served.log.read_text()
    assert client.count(3) == 3  # served by the restarted worker


def test_a_bad_cluster_file_stops_serve_at_start_in_one_line(tmp_path):
    bad = tmp_path / "cluster.yaml"
    for text, message in [
        ("kind: kubernetes\nscale: {jobs: 1}\n", "kind 'kubernetes' is not one of"),
        ("kind: slurm\noptions: {coers: 4}\nscale: {jobs: 1}\n",
         "option 'coers' is not taken by dask_jobqueue.SLURMCluster"),
        ("kind: slurm\noptions: {cores: 4}\n", "give either 'scale: {jobs: N}'"),
        ("kind: slurm\nscale: {jobs: 0}\n", "'scale' must be {jobs: N}"),
    ]:
        bad.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "dagen._cli", "serve", str(MODULE), "--insecure", "--port", "0",
             "--executor", "dask", "--cluster", str(bad)],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(bad) in lines[0], done.stderr


def test_no_worker_ever_arrives_fails_the_call_with_unavailable(
    cluster_client_module, certs, tmp_path
):
    """A scheduler that already runs (--scheduler-file) but has no worker: calls fail
    with UNAVAILABLE, saying so, after --wait-for-workers, rather than hanging."""
    sched_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = None
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        server = start_server(MODULE, "--certs", str(certs.folder), "--executor", "dask",
                              "--scheduler-file", str(sched_file), "--wait-for-workers", "2",
                              log=tmp_path / "server.log")
        with cluster_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                          timeout=60) as client:
            started = time.monotonic()
            with pytest.raises(Exception) as raised:
                client.count(1)
            took = time.monotonic() - started
        text = str(raised.value)
        assert "ClusterUnavailable" in text and "no dask worker joined" in text, text
        assert 2.0 <= took < 20, took
    finally:
        if server is not None:
            server.stop()
        scheduler.terminate()
        scheduler.wait(15)


def test_a_pyproject_table_is_a_cluster_file(tmp_path):
    from dagen import ClusterError
    from dagen._cluster import load_cluster_spec

    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.dagen.cluster]\nkind = "pbs"\noptions = {cores = 2, memory = "4GB"}\n'
                    "adapt = {minimum = 0, maximum = 5}\n")
    spec = load_cluster_spec(path)
    assert (spec.kind, dict(spec.options), spec.adapt, spec.jobs) == (
        "pbs", {"cores": 2, "memory": "4GB"}, (0, 5), None)
    path.write_text("[tool.other]\n")
    with pytest.raises(ClusterError, match=r"no \[tool.dagen.cluster\] table"):
        load_cluster_spec(path)


# -- --spool: large arguments cross the login node once ----------------------------------------


@pytest.fixture(scope="module")
def spooled(cluster_client_module, certs, tmp_path_factory):
    """A server with --spool on a local cluster, its client, and the spool folder."""
    folder = tmp_path_factory.mktemp("dask-spool")
    spool = folder / "spool"
    server = start_server(MODULE, "--certs", str(certs.folder), "--executor", "dask",
                          "--cluster", str(cluster_file("local", folder)), "--spool", str(spool),
                          log=folder / "server.log")
    try:
        with cluster_client_module.Client(server.target, certs=certs.folder, identity="alice",
                                          timeout=180) as client:
            yield client, spool
    finally:
        server.stop()


def _spool_files(spool: Path) -> list[Path]:
    return [p for p in spool.rglob("*") if p.is_file()]


def test_a_large_argument_is_received_into_the_spool_and_read_there(spooled):
    client, spool = spooled
    rng = np.random.default_rng(16)
    data = xr.DataArray(rng.normal(size=(2048, 4096)), dims=("y", "x"),  # 64 MiB
                        coords={"y": np.arange(2048)}, name="sst", attrs={"units": "K"})
    small = np.arange(100.0)  # 800 bytes: travels inside the task
    seen = {}

    def during(report):  # the worker reports the file backing `data`, then holds
        if report.phase != "run":
            return
        path = Path(report.message)
        seen["file"] = path
        seen["exists"] = path.is_file()
        with path.open("rb") as f:
            seen["magic"] = f.read(6)
        seen["listed"] = _spool_files(spool)

    with dagen.call_options(client=client, on_progress=during):
        back = client.spooled_echo(data, small, 1.0)
    file = back.attrs.pop("file")
    assert back.attrs.pop("small_file") == ""  # not backed by any file
    assert back.attrs.pop("writeable") == "True"  # copy-on-write: the function may write
    xr.testing.assert_identical(back, data)
    assert Path(file) == seen["file"] and seen["exists"] and seen["magic"] == b"\x93NUMPY"
    assert Path(file).parent.parent == spool.resolve() and file.endswith(".npy")
    assert seen["listed"] == [Path(file)]  # one file: the array; the rest went in the task
    assert wait_until(lambda: not _spool_files(spool), 5.0), _spool_files(spool)
    assert not list(spool.iterdir())  # the call's folder too


def test_a_cancelled_call_leaves_nothing_in_the_spool(spooled):
    client, spool = spooled
    data = xr.DataArray(np.ones((1024, 1024)), dims=("y", "x"))  # 8 MiB
    seen = []

    def cancel(report):
        if report.phase != "run":
            return
        seen.append(Path(report.message).is_file())
        raise KeyboardInterrupt  # as Ctrl-C in the callback: the client cancels the call

    with dagen.call_options(client=client, on_progress=cancel), pytest.raises(KeyboardInterrupt):
        client.spooled_echo(data, np.zeros(3), 60.0)
    assert seen == [True]
    assert wait_until(lambda: not list(spool.iterdir()), 5.0), _spool_files(spool)
    assert client.count(2) == 2  # it goes on serving


def test_spool_goes_with_the_dask_executor_and_must_be_writable(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    for args, message in [
        (["--spool", str(tmp_path)], "--spool goes with --executor dask"),
        (["--wait-for-workers", "5"], "--wait-for-workers goes with --executor dask"),
        (["--executor", "dask", "--scheduler", "tls://127.0.0.1:1", "--spool",
          str(blocked / "spool")], f"--spool {blocked / 'spool'}: cannot make the folder"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "dagen._cli", "serve", str(MODULE), "--insecure", "--port",
             "0", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and message in done.stderr, done.stderr



@pytest.mark.slow
def test_a_1_gib_lazy_result_streams_through_a_light_server(client, served):
    """A dask-backed result of 1 GiB is computed on the workers in batches of blocks and
    streamed to the caller: the server holds a batch (128 MiB) at a time, never the whole
    array. Bound: its peak RSS grows by less than 512 MiB over its RSS before the call."""
    n, chunk = 1 << 27, 1 << 21  # 1 GiB of float64 in 64 blocks of 16 MiB
    pid = served.process.pid
    before = proc_status(pid, "VmRSS")
    reset_peak(pid)
    started = time.monotonic()
    ramp = client.lazy_ramp(n, chunk)
    took = time.monotonic() - started
    extra = proc_status(pid, "VmHWM") - before
    values = ramp.values
    assert values.dtype == np.float64 and values.shape == (n,)
    for start in range(0, n, chunk):  # every value, 16 MiB at a time
        assert np.array_equal(values[start:start + chunk], np.arange(start, start + chunk,
                                                                        dtype="f8")), start
    print(f"\n{served.kind}: 1 GiB lazy result in {took:.1f} s; server RSS before "
          f"{before / MiB:.0f} MiB, peak {extra / MiB:+.0f} MiB during the call")
    assert extra < 512 * MiB, f"the server's RSS grew by {extra / MiB:.0f} MiB"
