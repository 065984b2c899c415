"""The CPU device: buffers are numpy arrays; kernels are C compiled by the
system compiler into shared objects, loaded with ctypes."""
from __future__ import annotations

import ctypes
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from array import array
from functools import lru_cache
from pathlib import Path

import numpy as np

from cudagrad.runtime import cache
from cudagrad.runtime.errors import CompileError, DeviceError
from cudagrad.runtime.stats import count

BASE_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared", "-std=c11")


def _address(array: np.ndarray) -> int:
    """The address of array's first byte. array.ctypes.data costs 1.5 us; a ctypes
    view of the buffer a seventh of that (it needs a writable, non-empty array)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


# Buffers up to this size are array.array objects rather than numpy arrays: one is
# made and tells its address in a third of the time (the tiny-op path, issue 5).
SMALL_BUFFER_BYTES = 4096
_ZERO_BYTES = array("B", bytes(SMALL_BUFFER_BYTES))
# array.array type codes of the dtypes a small buffer reads back without numpy
_LIST_CODES = {"float32": "f", "float64": "d", "int32": "i"}


class CpuBuffer:
    """Host memory a kernel reads or writes: `raw` (a 1-D numpy array of any dtype or an
    array.array) and its address. `array` is a numpy view of it, made when first asked."""

    __slots__ = ("raw", "nbytes", "ptr", "_array", "__weakref__")
    device = "cpu"

    def __init__(self, raw, nbytes: int, ptr: int):
        self.raw = raw
        self.nbytes = nbytes
        self.ptr = ptr
        self._array: np.ndarray | None = raw if type(raw) is np.ndarray else None

    @staticmethod
    def of_array(array: np.ndarray) -> CpuBuffer:
        """A buffer sharing a 1-D contiguous numpy array's memory."""
        return CpuBuffer(array, array.nbytes, _address(array))

    @staticmethod
    def of_list(values: list, code: str) -> CpuBuffer:
        """A small buffer filled from Python numbers (code: an array.array type code)."""
        raw = array(code, values)
        address, count = raw.buffer_info()
        return CpuBuffer(raw, count * raw.itemsize, address)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.frombuffer(self.raw, dtype=np.uint8)
        return self._array

    def tolist(self, dtype_name: str, np_dtype, count: int) -> list:
        """The first count values as Python numbers, read in place."""
        code = _LIST_CODES.get(dtype_name)
        if code is not None and type(self.raw) is array:
            return memoryview(self.raw).cast("B").cast(code)[:count].tolist()  # type: ignore[call-overload]
        return self.array.view(np_dtype)[:count].tolist()


class Program:
    __slots__ = ("kernel", "function", "library")

    def __init__(self, kernel, library: ctypes.CDLL):
        self.kernel = kernel
        self.library = library        # keeps the shared object loaded
        self.function = getattr(library, kernel.name)
        self.function.argtypes = [ctypes.c_void_p] * len(kernel.params)
        self.function.restype = None


@lru_cache(maxsize=1)
def compiler() -> tuple[str, str]:
    """The C compiler's path and its version line (part of every cache key)."""
    name = os.environ.get("CC", "cc")
    path = shutil.which(name)
    if path is None:
        raise DeviceError(f"cpu: no C compiler found (looked for {name!r}; set CC or install gcc)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return path, version.splitlines()[0] if version else "unknown"


@lru_cache(maxsize=1)
def processor_identity() -> str:
    """Model and feature flags: code built with -march=native runs only where they match."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
        return platform.machine() + "|" + "|".join(wanted)
    except OSError:
        return platform.machine() + "|" + platform.processor()


class CpuDevice:
    name = "cpu"
    target: dict = {}

    def __init__(self):
        self._programs: dict[str, Program] = {}
        self._lock = threading.Lock()
        self._openmp = True

    # ---- memory ----------------------------------------------------------------
    def allocate(self, nbytes: int) -> CpuBuffer:
        if 0 < nbytes <= SMALL_BUFFER_BYTES:
            raw = _ZERO_BYTES[:nbytes]          # a fresh array.array (slicing copies)
            return CpuBuffer(raw, nbytes, raw.buffer_info()[0])
        return CpuBuffer.of_array(np.empty(max(nbytes, 1), dtype=np.uint8)[:nbytes])

    def from_numpy(self, array: np.ndarray) -> CpuBuffer:
        return CpuBuffer.of_array(np.ascontiguousarray(array).reshape(-1).copy())

    def wrap_numpy(self, array: np.ndarray) -> CpuBuffer:
        """Share a contiguous array's memory (DLPack and from_numpy without a copy)."""
        return CpuBuffer.of_array(array if array.ndim == 1 else array.reshape(-1))

    def copy_from_numpy(self, buffer: CpuBuffer, array: np.ndarray) -> None:
        """Overwrite the start of buffer with a host array."""
        array = np.ascontiguousarray(array)
        if array.nbytes > buffer.nbytes:
            raise ValueError(f"cpu: {array.nbytes} bytes do not fit a {buffer.nbytes}-byte buffer")
        ctypes.memmove(buffer.ptr, array.ctypes.data, array.nbytes)

    def copy_buffer(self, target: CpuBuffer, source: CpuBuffer, nbytes: int) -> None:
        ctypes.memmove(target.ptr, source.ptr, nbytes)

    def to_numpy(self, buffer: CpuBuffer, np_dtype, count_: int) -> np.ndarray:
        return buffer.array.view(np_dtype)[:count_].copy()

    def synchronize(self) -> None:
        pass

    # ---- kernels ---------------------------------------------------------------
    def flags(self) -> tuple[str, ...]:
        return BASE_FLAGS + (("-fopenmp",) if self._openmp else ())

    def compile(self, kernel) -> Program:
        program = self._programs.get(kernel.source)
        if program is not None:
            count("cache_hits_memory")
            return program
        path, version = compiler()
        key = cache.make_key(kernel.source, path, version, " ".join(self.flags()),
                             processor_identity(), "cpu")
        entry = cache.load(key, ".so")
        library = None
        if entry is not None:
            try:
                library = ctypes.CDLL(str(entry))
                getattr(library, kernel.name)     # an entry without this kernel is not trusted
                count("cache_hits_disk")
            except (OSError, AttributeError):
                library = None
        if library is None:
            library = self._build(kernel, key)
        program = Program(kernel, library)
        with self._lock:
            self._programs[kernel.source] = program
        return program

    def _build(self, kernel, key: str) -> ctypes.CDLL:
        path, _ = compiler()
        with tempfile.TemporaryDirectory(prefix="cudagrad-") as work:
            source = Path(work) / f"{kernel.name}.c"
            output = Path(work) / f"{kernel.name}.so"
            source.write_text(kernel.source)
            result = subprocess.run([path, *self.flags(), "-o", str(output), str(source), "-lm"],
                                    capture_output=True, text=True)
            if result.returncode != 0 and self._openmp and "omp" in result.stderr:
                self._openmp = False     # a compiler without OpenMP: single-threaded kernels
                return self._build(kernel, key)
            if result.returncode != 0:
                raise CompileError(f"cpu: {path} failed to compile kernel {kernel.name}",
                                   kernel.source, result.stderr)
            count("kernels_compiled")
            data = output.read_bytes()
            cache.store(key, ".so", data)
            # load the fresh file, not the entry's path: dlopen would hand back a bad
            # entry of that path already loaded by this process
            return ctypes.CDLL(str(output))

    def c_function(self, program: Program):
        """The ctypes function of a program (a plan's replay calls it directly)."""
        return program.function

    def launch(self, program: Program, buffers: list) -> None:
        program.function(*[buffer.ptr for buffer in buffers])
        count("kernels_launched")
