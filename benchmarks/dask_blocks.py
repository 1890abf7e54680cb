"""How a dask-backed result's blocks are computed for sending: one block at a time
(`array.blocks[i].compute()`, dagen before issue 16) vs `iter_dask_chunks` (batches
of blocks, each batch one computation), on a 256 MiB array whose every block needs a
reduction over the whole array (x - x.mean()), with dask's threaded scheduler and
with a local distributed cluster.

    PYTHONPATH=src python benchmarks/dask_blocks.py [--mib 256] [--repeat 1]
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np


def one_block_at_a_time(array) -> int:
    """What dagen did before: compute each block on its own."""
    total = 0
    for index in itertools.product(*(range(n) for n in array.numblocks)):
        total += np.asarray(array.blocks[index].compute()).nbytes
    return total


def batched(array) -> int:
    from dagen._wire import DEFAULT_CHUNK_BYTES, iter_dask_chunks

    return sum(c.block_nbytes for c in iter_dask_chunks(1, array, DEFAULT_CHUNK_BYTES))


def shared_reduction(mib: int):
    import dask.array as da

    rows = mib * (1 << 20) // (4096 * 8)
    x = da.random.default_rng(0).random((rows, 4096), chunks=(256, 4096))  # 8 MiB blocks
    return x - x.mean()


def timed(label: str, fn, array, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        nbytes = fn(array)
        best = min(best, time.perf_counter() - start)
    assert nbytes == array.nbytes
    print(f"{label:45s} {best:7.2f} s")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    array = shared_reduction(args.mib)
    print(f"{array.nbytes / 2**20:.0f} MiB, {array.npartitions} blocks sharing x.mean()")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timed("threaded: one block at a time (before)", one_block_at_a_time, array, args.repeat)
        timed("threaded: iter_dask_chunks (after)", batched, array, args.repeat)
        from distributed import Client

        with Client(n_workers=2, threads_per_worker=1, dashboard_address=":0"):
            timed("local cluster: one block at a time (before)", one_block_at_a_time, array,
                  args.repeat)
            timed("local cluster: iter_dask_chunks (after)", batched, array, args.repeat)


if __name__ == "__main__":
    main()
