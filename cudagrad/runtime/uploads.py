"""Small host-to-device copies that do not wait for the GPU.

Waiting for each upload to finish (a stream synchronize) also waits for every
kernel queued before it: a training step that uploads a label mask and two
optimizer scalars then runs its Python and its kernels one after the other
instead of overlapping them. So a small upload is copied on the host into an
array of our own, queued on the stream, and that array is kept alive until an
event recorded after the copy has completed; nobody else can change or free it
meanwhile, whatever the driver does with pageable memory.
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

# Up to this size an upload is queued; larger ones wait (the copy dominates anyway).
ASYNC_UPLOAD_BYTES = 1 << 20
# At most this many uploads in flight; past it the next upload waits for the stream.
MAX_IN_FLIGHT = 256


class PendingUploads:
    def __init__(self, driver):
        self._driver = driver
        self._in_flight: deque = deque()        # (event, host array), oldest first
        self._spare_events: list = []
        self._lock = threading.Lock()

    def queue(self, stream, destination: int, array: np.ndarray) -> bool:
        """Queue a copy of array to device address destination; False where the caller
        must copy and wait itself (too large, or too many in flight)."""
        if array.nbytes > ASYNC_UPLOAD_BYTES:
            return False
        driver = self._driver
        with self._lock:
            self._release_finished()
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return False
            private = np.array(array, copy=True)       # ours alone until the copy is done
            status, = driver.cuMemcpyHtoDAsync(destination, private.ctypes.data, private.nbytes, stream)
            if status:
                return False                           # the caller's own copy reports it
            event = self._spare_events.pop() if self._spare_events else self._new_event()
            driver.cuEventRecord(event, stream)
            self._in_flight.append((event, private))
        return True

    def finished(self) -> None:
        """The stream has been synchronized: every queued upload is done."""
        with self._lock:
            while self._in_flight:
                event, _ = self._in_flight.popleft()
                self._spare_events.append(event)

    def _release_finished(self) -> None:
        success = self._driver.CUresult.CUDA_SUCCESS
        while self._in_flight:
            event, _ = self._in_flight[0]
            if self._driver.cuEventQuery(event)[0] != success:
                break
            self._in_flight.popleft()
            self._spare_events.append(event)

    def _new_event(self):
        flags = self._driver.CUevent_flags.CU_EVENT_DISABLE_TIMING
        status, event = self._driver.cuEventCreate(flags)
        if status:
            raise RuntimeError(f"cuda: cuEventCreate failed: {status.name}")
        return event

    def __len__(self) -> int:
        return len(self._in_flight)
