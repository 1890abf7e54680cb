"""A dask-backed result is computed in batches of blocks, sent as they are computed:
work the blocks share runs once per batch (not once per block, dask/dask#9888), the
blocks in flight stay within the budget, and the array arrives whole and exact."""

import numpy as np
import pytest

from dagen._wire import iter_dask_chunks

da = pytest.importorskip("dask.array")


def reassemble(chunks, shape, dtype):
    out = np.full(shape, np.nan, dtype)
    for chunk in chunks:
        region = tuple(slice(s, s + n) for s, n in zip(chunk.start, chunk.shape, strict=True))
        out[region] = np.frombuffer(chunk.data, dtype).reshape(chunk.shape)
    return out


CALLS: list[int] = []  # blocks of x computed (list.append is atomic: no lock to pickle)


def counted(block):
    if block.size:
        CALLS.append(1)
    return block


def shared_reduction(calls):
    """An array whose every block needs the mean of the whole array; ``calls`` counts
    how often the blocks of x are computed for that mean."""
    x = da.from_array(np.arange(64 * 10, dtype="f8").reshape(64, 10), chunks=(8, 10))
    y = x - x.map_blocks(counted, meta=np.array((), "f8")).mean()
    expected = x.compute() - x.compute().mean()
    calls.clear()  # (dask may look at a block while building the graph)
    return y, expected


@pytest.mark.parametrize("blocks_per_batch, batches", [(8, 1), (3, 3), (1, 8)])
def test_shared_work_runs_once_per_batch(blocks_per_batch, batches):
    calls = CALLS
    y, expected = shared_reduction(calls)
    block_bytes = 8 * 10 * 8
    chunks = iter_dask_chunks(1, y, 1 << 20, in_flight_bytes=blocks_per_batch * block_bytes)
    np.testing.assert_array_equal(reassemble(chunks, y.shape, y.dtype), expected)
    assert len(calls) == 8 * batches  # the 8 blocks of x, once per batch


def test_at_most_the_budget_is_computed_ahead_of_what_is_sent():
    calls = CALLS
    y, _ = shared_reduction(calls)
    chunks = iter_dask_chunks(1, y, 1 << 20, in_flight_bytes=2 * 8 * 10 * 8)
    next(chunks)
    assert len(calls) == 8  # one batch (of two blocks) computed, not the whole array
    chunks.close()


def test_on_a_distributed_client_blocks_come_from_the_cluster():
    distributed = pytest.importorskip("distributed")
    calls = CALLS
    y, expected = shared_reduction(calls)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=":0") as client:
        with distributed.get_task_stream(client=client) as stream:
            chunks = list(iter_dask_chunks(1, y, 1 << 20, in_flight_bytes=4 * 8 * 10 * 8))
        assert stream.data  # the blocks were computed as tasks of the cluster
    np.testing.assert_array_equal(reassemble(chunks, y.shape, y.dtype), expected)
    assert len(calls) == 8 * 2  # two batches of four blocks
