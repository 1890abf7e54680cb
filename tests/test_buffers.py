"""Receive buffers are reused (by the server and the client) only when nothing else refers to them."""

import time

import numpy as np

from dagen._buffers import MIN_BYTES, BufferPool, LendingPool
from dagen._security import Admission


def test_a_buffer_nobody_refers_to_is_reused():
    pool = BufferPool()
    handed_out = [pool.take(MIN_BYTES)]
    address = handed_out[0].ctypes.data
    pool.give_back(handed_out)  # the list was the only reference
    again = pool.take(MIN_BYTES)
    assert again.ctypes.data == address
    assert pool.take(MIN_BYTES).ctypes.data != address  # taken: not handed out twice


def test_a_buffer_still_in_use_is_not_reused():
    pool = BufferPool()
    buffer = pool.take(MIN_BYTES)
    kept = buffer.view(np.float64).reshape(-1, 4)  # what a function might keep
    pool.give_back([buffer])
    del buffer
    assert pool.held_bytes == 0
    fresh = pool.take(MIN_BYTES)
    assert not np.shares_memory(fresh, kept)


def test_small_buffers_and_other_sizes_are_not_pooled():
    pool = BufferPool()
    pool.give_back([pool.take(1024)])
    assert pool.held_bytes == 0
    handed_out = [pool.take(MIN_BYTES)]
    address = handed_out[0].ctypes.data
    pool.give_back(handed_out)
    assert pool.held_bytes == MIN_BYTES
    assert pool.take(MIN_BYTES + 8).ctypes.data != address  # exact sizes only


def test_one_buffer_of_a_size_is_kept():
    pool = BufferPool()
    pool.give_back([pool.take(MIN_BYTES), pool.take(MIN_BYTES)])
    assert pool.held_bytes == MIN_BYTES


def test_the_pool_is_bounded_and_lets_go_when_idle():
    sizes = [MIN_BYTES, MIN_BYTES + 8, MIN_BYTES + 16]
    pool = BufferPool(max_bytes=2 * MIN_BYTES + 24, idle_seconds=0.2)
    buffers = [pool.take(n) for n in sizes]
    pool.give_back(buffers)
    assert pool.held_bytes == sizes[1] + sizes[2]  # the oldest went first
    deadline = time.monotonic() + 5
    while pool.held_bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.held_bytes == 0


class _Rpc:
    """Stands in for grpc's context: runs the end-of-call callbacks on demand."""

    def __init__(self):
        self.callbacks = []

    def add_callback(self, callback):
        self.callbacks.append(callback)
        return True

    def end(self):
        for callback in self.callbacks:
            callback()


def test_the_server_reuses_the_buffers_of_completed_calls():
    admission = Admission()
    rpc = _Rpc()
    alloc = admission.alloc(rpc)
    received = alloc(MIN_BYTES)
    address = received.ctypes.data
    del received  # the call is over and its arrays are gone
    alloc.completed()
    rpc.end()
    assert admission.memory == 0
    next_rpc = _Rpc()
    assert admission.alloc(next_rpc)(MIN_BYTES).ctypes.data == address


def test_a_function_that_kept_its_argument_keeps_its_memory():
    admission = Admission()
    rpc = _Rpc()
    alloc = admission.alloc(rpc)
    received = alloc(MIN_BYTES)
    kept = received[:10]  # e.g. stored in a global by the function
    del received
    alloc.completed()
    rpc.end()
    assert not np.shares_memory(admission.alloc(_Rpc())(MIN_BYTES), kept)


def test_the_buffers_of_a_failed_call_are_freed_not_kept():
    admission = Admission()
    rpc = _Rpc()
    admission.alloc(rpc)(MIN_BYTES)  # the upload broke off: the call never completed
    rpc.end()
    assert admission.buffers.held_bytes == 0


def test_a_client_result_buffer_is_lent_again_once_the_caller_let_go():
    pool = LendingPool(max_bytes=4 * MIN_BYTES)
    first = pool.take(MIN_BYTES)
    address = first.ctypes.data
    result = first.view(np.float64).reshape(-1, 8)  # what the caller gets
    del first
    second = pool.take(MIN_BYTES)
    assert second.ctypes.data != address  # the caller still holds the first result
    del result
    third = pool.take(MIN_BYTES)
    assert third.ctypes.data == address  # its memory, already touched, serves again
    held = pool.held_bytes
    small = pool.take(1024)
    assert pool.held_bytes == held  # small ones are never pooled
    del second, third, small


def test_the_client_pool_is_bounded_and_lets_go_when_idle():
    pool = LendingPool(max_bytes=2 * MIN_BYTES, idle_seconds=0.2)
    for _ in range(3):
        pool.take(MIN_BYTES + 8)  # dropped at once each time: the same buffer serves
    assert pool.held_bytes == MIN_BYTES + 8
    held = [pool.take(MIN_BYTES) for _ in range(3)]  # all alive: three buffers lent
    assert pool.held_bytes <= 2 * MIN_BYTES
    del held
    deadline = time.monotonic() + 5
    while pool.held_bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.held_bytes == 0


def test_a_buffer_over_the_cap_does_not_push_the_others_out():
    pool = BufferPool(max_bytes=2 * MIN_BYTES)
    pool.give_back([pool.take(MIN_BYTES)])
    pool.give_back([pool.take(3 * MIN_BYTES)])  # alone larger than the whole pool
    assert pool.held_bytes == MIN_BYTES
    lending = LendingPool(max_bytes=2 * MIN_BYTES)
    lending.take(MIN_BYTES)
    lending.take(3 * MIN_BYTES)
    assert lending.held_bytes == MIN_BYTES
