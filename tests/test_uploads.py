"""Queued small uploads (cudagrad/runtime/uploads.py), against a stand-in for the driver:
each host copy stays alive until its event has completed, large or too many uploads
fall back to the caller's waiting copy, and a synchronize releases everything."""
from __future__ import annotations

import enum

import numpy as np

from cudagrad.runtime import uploads
from cudagrad.runtime.uploads import PendingUploads


class FakeDriver:
    class CUresult(enum.IntEnum):
        CUDA_SUCCESS = 0
        CUDA_ERROR_NOT_READY = 600

    class CUevent_flags(enum.IntEnum):
        CU_EVENT_DISABLE_TIMING = 2

    def __init__(self):
        self.copies = []              # (destination, bytes copied at queue time)
        self.done = set()             # events the "GPU" has passed
        self.recorded = []
        self.created = 0

    def cuMemcpyHtoDAsync(self, destination, source, nbytes, stream):
        import ctypes
        self.copies.append((destination, ctypes.string_at(source, nbytes)))
        return (self.CUresult.CUDA_SUCCESS,)

    def cuEventCreate(self, flags):
        self.created += 1
        return self.CUresult.CUDA_SUCCESS, f"event{self.created}"

    def cuEventRecord(self, event, stream):
        self.done.discard(event)
        self.recorded.append(event)
        return (self.CUresult.CUDA_SUCCESS,)

    def cuEventQuery(self, event):
        ready = event in self.done
        return (self.CUresult.CUDA_SUCCESS if ready else self.CUresult.CUDA_ERROR_NOT_READY,)


def test_small_uploads_are_queued_on_a_private_copy(rng):
    driver = FakeDriver()
    pending = PendingUploads(driver)
    values = rng.standard_normal(16).astype(np.float32)
    assert pending.queue("stream", 1000, values)
    values[:] = 0                              # the caller may reuse its array at once
    destination, copied = driver.copies[0]
    assert destination == 1000 and copied == pending._in_flight[0][1].tobytes()
    assert not np.all(pending._in_flight[0][1] == 0)
    assert len(pending) == 1


def test_finished_uploads_are_released_and_their_events_reused(rng):
    driver = FakeDriver()
    pending = PendingUploads(driver)
    for index in range(3):
        assert pending.queue("stream", index, rng.standard_normal(4))
    assert len(pending) == 3 and driver.created == 3
    driver.done.update(driver.recorded[:2])    # the GPU passed the first two
    assert pending.queue("stream", 9, rng.standard_normal(4))
    assert len(pending) == 2                   # two released, one queued
    assert driver.created == 3                 # the new upload took a released event
    pending.finished()
    assert len(pending) == 0


def test_large_or_too_many_uploads_fall_back_to_a_waiting_copy(rng, monkeypatch):
    driver = FakeDriver()
    pending = PendingUploads(driver)
    big = np.zeros(uploads.ASYNC_UPLOAD_BYTES // 4 + 1, dtype=np.float32)
    assert not pending.queue("stream", 0, big) and not driver.copies
    monkeypatch.setattr(uploads, "MAX_IN_FLIGHT", 2)
    assert pending.queue("stream", 0, rng.standard_normal(2))
    assert pending.queue("stream", 1, rng.standard_normal(2))
    assert not pending.queue("stream", 2, rng.standard_normal(2))
    driver.done.update(driver.recorded)
    assert pending.queue("stream", 3, rng.standard_normal(2))


def test_uploads_keep_values_exact_on_the_device(device, rng):
    """End to end where a GPU exists: many small uploads in a row, read back exactly."""
    import cudagrad as cg
    arrays = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(40)]
    tensors = [cg.from_numpy(array.copy(), device=device) for array in arrays]
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    np.testing.assert_allclose(total.numpy(), np.sum(arrays, axis=0), rtol=1e-5, atol=1e-5)
    for array, t in zip(arrays, tensors):
        np.testing.assert_array_equal(t.numpy(), array)
