"""Device selection: "cpu" or "cuda"; the default is cuda when a GPU is usable."""
from __future__ import annotations

import importlib.util
import os
import sys
import threading

from cudagrad.environment import getenv, is_set
from cudagrad.runtime.errors import DeviceError

DEVICE_NAMES = ("cpu", "cuda")
_devices: dict = {}
_lock = threading.Lock()
_cuda_ordinal = [0]     # the GPU "cuda" means in this process (cudagrad.distributed binds it)


def bind_cuda_device(ordinal: int) -> None:
    """Make "cuda" mean GPU `ordinal` in this process (one process per GPU, as
    cudagrad.distributed.init does with LOCAL_RANK). Only before the first cuda
    tensor: buffers made on one GPU cannot move to another."""
    device = _devices.get("cuda")
    if device is not None and getattr(device, "ordinal", ordinal) != ordinal:
        raise RuntimeError(f"device: cuda is already GPU {device.ordinal} in this process; bind GPU "
                           f"{ordinal} (cudagrad.distributed.init) before making any cuda tensor")
    _cuda_ordinal[0] = ordinal


def canonical_device(name) -> str:
    if name is None:
        return default_device()
    if name == "cpu" or name == "cuda":      # the common spellings, without the parsing below
        return name
    text = str(name).lower()
    base = text.split(":")[0]
    if base not in DEVICE_NAMES:
        raise ValueError(f"device: unknown device {name!r}; use 'cpu' or 'cuda'")
    return base


# One of these exists wherever the NVIDIA driver can run a kernel (WSL2: /dev/dxg)
_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/proc/driver/nvidia")


def _no_driver_files() -> bool:
    """On Linux without the driver's files, importing cuda-python (50 ms of every
    start on a CPU machine) can only end in 'no driver': skip it."""
    if not sys.platform.startswith("linux") or any(os.path.exists(p) for p in _DRIVER_FILES):
        return False
    try:
        return importlib.util.find_spec("cuda") is not None     # else: say it is not installed
    except (ImportError, ValueError):
        return False


def cuda_available() -> tuple[bool, str]:
    """(usable, reason): whether a CUDA GPU can be used, and if not, why."""
    if _no_driver_files():
        return False, f"no NVIDIA driver found (none of {', '.join(_DRIVER_FILES)} exists)"
    try:
        from cudagrad.runtime.cuda import cuda_available as probe
    except ImportError as error:
        return False, f"the CUDA runtime could not be imported ({error})"
    return probe()


def default_device() -> str:
    chosen = getenv("CUDAGRAD_DEVICE") if is_set("CUDAGRAD_DEVICE") else None
    if chosen:
        return canonical_device(chosen)
    if "auto" not in _devices:
        _devices["auto"] = "cuda" if cuda_available()[0] else "cpu"
    return _devices["auto"]


def opened_device(name: str):
    """The device object if it has been opened already, else None (never opens one)."""
    return _devices.get(name)


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
                _devices[name] = CudaDevice(_cuda_ordinal[0])
        return _devices[name]
