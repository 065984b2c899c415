"""Device selection: "cpu" or "cuda"; the default is cuda when a GPU is usable."""
from __future__ import annotations

import os
import threading

from cudagrad.runtime.errors import DeviceError

DEVICE_NAMES = ("cpu", "cuda")
_devices: dict = {}
_lock = threading.Lock()


def canonical_device(name) -> str:
    if name is None:
        return default_device()
    text = str(name).lower()
    base = text.split(":")[0]
    if base not in DEVICE_NAMES:
        raise ValueError(f"device: unknown device {name!r}; use 'cpu' or 'cuda'")
    return base


def cuda_available() -> tuple[bool, str]:
    """(usable, reason): whether a CUDA GPU can be used, and if not, why."""
    try:
        from cudagrad.runtime.cuda import cuda_available as probe
    except ImportError as error:
        return False, f"the CUDA runtime could not be imported ({error})"
    return probe()


def default_device() -> str:
    chosen = os.environ.get("CUDAGRAD_DEVICE")
    if chosen:
        return canonical_device(chosen)
    if "auto" not in _devices:
        _devices["auto"] = "cuda" if cuda_available()[0] else "cpu"
    return _devices["auto"]


def get_device(name: str):
    device = _devices.get(name)
    if device is not None:
        return device
    with _lock:
        if name not in _devices:
            if name == "cpu":
                from cudagrad.runtime.cpu import CpuDevice
                _devices[name] = CpuDevice()
            else:
                usable, reason = cuda_available()
                if not usable:
                    raise DeviceError(f"device 'cuda' requested but no usable GPU: {reason}")
                from cudagrad.runtime.cuda import CudaDevice
                _devices[name] = CudaDevice()
        return _devices[name]
