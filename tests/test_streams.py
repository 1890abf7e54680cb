"""Generators stream items as produced and stop when the caller stops; lazy (dask)
arrays are sent block by block."""

import time

import numpy as np
import pytest
from conftest import SERVICES, import_client, start_server

import dagen
from dagen._arrays import EncodeContext, attach_array
from dagen._build import build
from dagen.v1 import array_pb2


@pytest.fixture(scope="module")
def streams(tmp_path_factory, certs):
    marks = tmp_path_factory.mktemp("marks")
    out = tmp_path_factory.mktemp("stream-build")
    module = SERVICES / "stream_service.py"
    result = build(str(module), out / "build", lock=out / "lock")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGEN_TEST_MARKS", str(marks))  # inherited by the server process
    server = start_server(module, "--certs", str(certs.folder), "--lock", str(out / "lock"))
    mp.undo()
    client_module = import_client(result.client, "stream_service_client")
    with client_module.Client(server.target, certs=certs.folder, identity="alice", timeout=60) as c:
        yield c, marks
    server.stop()


def wait_for(path, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("kind", ["items", "arrays"])
def test_closing_the_iterator_early_stops_the_remote_generator(streams, kind):
    client, marks = streams
    tag = f"close-{kind}"
    it = client.forever(tag) if kind == "items" else client.frames(tag, 1000)
    received = [next(it) for _ in range(3)]
    if kind == "items":
        assert received == [0, 1, 2]
    else:
        assert [int(a[0]) for a in received] == [0, 1, 2]
        assert all(a.dtype == np.int32 and a.shape == (1000,) for a in received)
    it.close()
    started = time.monotonic()
    assert wait_for(marks / f"{tag}.closed", 5), "the remote generator was never closed"
    print(f"remote generator closed {time.monotonic() - started:.3f} s after the client closed "
          f"its iterator, having produced {(marks / f'{tag}.closed').read_text()} items")
    it = client.forever("again")
    assert next(it) == 0
    it.close()


def test_items_arrive_while_the_remote_generator_runs(streams):
    client, _ = streams
    it = client.forever("live")
    started = time.monotonic()
    first = next(it)
    # The generator never ends: getting an item at all proves it was not collected first.
    assert first == 0 and time.monotonic() - started < 10
    it.close()


def test_dask_arrays_are_sent_block_by_block():
    dask_array = pytest.importorskip("dask.array")
    computed = []

    def record(block):
        if block.size:
            computed.append(block.shape)
        return block

    lazy = dask_array.arange(200 * 10, dtype="float64", chunks=100).reshape(200, 10)
    lazy = lazy.rechunk((20, 10)).map_blocks(record, dtype="float64")
    ctx = EncodeContext(chunk_bytes=800)  # 10 rows of 10 float64 per chunk
    header = array_pb2.NDArray()
    attach_array(lazy, header, ctx)
    assert list(header.shape) == [200, 10] and header.dtype == "<f8"
    assert computed == []  # attaching computes nothing
    chunks = list(ctx.chunks())
    assert len(computed) == 10 and set(computed) == {(20, 10)}  # each block once, never whole
    whole = np.zeros((200, 10))
    for c in chunks:
        assert np.prod(c.shape) * 8 <= 800
        rows = slice(c.start[0], c.start[0] + c.shape[0])
        whole[rows] = np.frombuffer(c.data, dtype="float64").reshape(c.shape)
    np.testing.assert_array_equal(whole, np.arange(2000.0).reshape(200, 10))


def test_dagen_cancelled_answers_inside_a_generator(streams):
    client, marks = streams
    it = client.patient("patient")
    assert next(it) == 0
    # closed while the generator works towards its next item: wait until it does (a
    # close that reaches the server before it resumed the generator ends it at its
    # yield, where no dagen.cancelled() is asked)
    assert wait_for(marks / "patient.working", 5)
    it.close()
    assert wait_for(marks / "patient.cancelled", 5), "dagen.cancelled() never said so"


@pytest.mark.parametrize("size", [1000, 600_000])  # one chunk; two (4.8 MB)
def test_each_array_item_reaches_the_caller_as_soon_as_it_is_yielded(streams, size):
    client, marks = streams
    tag = f"spaced-{size}"
    arrived = []
    for item in client.spaced(tag, 4, 1.0, size):
        arrived.append(time.time())
        assert item.shape == (size,) and item[0] == len(arrived) - 1
    yielded = [float(t) for t in (marks / f"{tag}.times").read_text().split()]
    late = [a - y for a, y in zip(arrived, yielded, strict=True)]
    print(f"{size * 8} B items, 1.0 s apart, reached the caller "
          f"{', '.join(f'{d:.3f}' for d in late)} s after being yielded")
    assert all(d < 0.2 for d in late), late


def test_a_generator_sees_the_seconds_left_before_its_deadline(streams):
    client, _ = streams
    with client.__dagen__.options(timeout=20.0):
        left = list(client.remaining(3))
    assert all(15.0 < x <= 20.5 for x in left) and left == sorted(left, reverse=True), left
    with client.__dagen__.options(timeout=None):
        assert list(client.remaining(2)) == [-1.0, -1.0]


def test_a_submitted_generator_gives_its_items_as_a_list(streams):
    client, _ = streams
    with client.__dagen__.options(timeout=None):
        assert dagen.submit(client.remaining, 3).result(30) == [-1.0, -1.0, -1.0]
