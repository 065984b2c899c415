"""The CUDA device: buffers, copies, compiling and launching, on the driver API.

Everything runs in order on one stream of the library's own: kernels, copies and
the reuse of freed memory. That ordering is what lets the caching allocator hand
a freed block to the next allocation at once, even while a kernel that used it
may still be running.

cuda-python is imported when a CudaDevice is made, not when cudagrad is.
"""
from __future__ import annotations

import ctypes
import threading
import weakref

import numpy as np

from . import cache, stats
from .errors import DeviceError
from .nvrtc import compile_cuda, compile_options, nvrtc_version
from .uploads import PendingUploads

_STATS = stats.STATS
_LARGE_SHARED_MEMORY = 48 * 1024  # above this a kernel must opt in to dynamic shared memory
_TENSOR_MAP_BYTES = 128           # a CUtensorMap, as cuTensorMapEncodeTiled writes it
_TENSOR_MAP_CACHE_SIZE = 4096     # encoded maps kept (buffer address, map) -> bytes


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def cuda_available() -> tuple[bool, str]:
    """(usable, why) for the first GPU, in plain words. Never raises."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return False, "cuda-python is not installed (pip install cuda-python)"
    try:
        (status,) = driver.cuInit(0)
    except Exception as error:  # libcuda.so could not be loaded at all
        return False, f"no NVIDIA driver found (libcuda could not be loaded: {error})"
    try:
        if status == driver.CUresult.CUDA_ERROR_NO_DEVICE:
            return False, "the NVIDIA driver is installed but sees no CUDA device"
        if status:
            return False, f"the CUDA driver failed to start ({status.name})"
        status, count = driver.cuDeviceGetCount()
        if status or count == 0:
            return False, "the NVIDIA driver is installed but sees no CUDA device"
        status, version = driver.cuDriverGetVersion()
        return True, f"{count} CUDA device(s), driver CUDA {version // 1000}.{version % 1000 // 10}"
    except Exception as error:
        return False, f"the CUDA driver could not be queried ({error})"


def _size_class(nbytes: int) -> int:
    """Round up to one of four classes per power of two (at most 25% waste),
    so freed blocks are reusable by requests of a similar, not equal, size."""
    if nbytes <= 512:
        return 512
    power = 1 << (nbytes - 1).bit_length()  # the power of two at or above nbytes
    step = power // 8                       # classes at 5/8, 6/8, 7/8 and 8/8 of it
    return -(-nbytes // step) * step


class CudaBuffer:
    """A block of device memory. It goes back to the device's free list when the
    last reference to it is dropped; `ptr` is the address kernels receive."""

    __slots__ = ("ptr", "nbytes", "device", "__weakref__")

    def __init__(self, ptr: int, nbytes: int, device: CudaDevice):
        self.ptr = ptr
        self.nbytes = nbytes
        self.device = device

    def __repr__(self) -> str:
        return f"CudaBuffer(ptr={self.ptr:#x}, nbytes={self.nbytes})"


class CudaProgram:
    """A loaded kernel plus its launch shape and argument block.

    The void** argument block is built once; a launch writes only the buffer
    addresses into it, under the program's lock: two threads launching the same
    program (the same graph shape) must not interleave their addresses.
    """

    def __init__(self, kernel, module, function, workspace: CudaBuffer | None = None):
        self.kernel = kernel
        self.name = kernel.name
        self.module = module      # kept so the module outlives the function
        self.function = function
        (self.grid, self.block, self.shared_bytes) = kernel.launch
        self.param_count = len(kernel.params)
        # the kernel's own memory (Kernel.workspace), passed after the buffers: every launch
        # of this program uses it, one after another on the device's stream
        self.workspace = workspace
        slots = max(self.param_count + (workspace is not None), 1)
        # tensor maps (nearly every kernel has none) follow the buffers, 128 bytes each,
        # 64-byte aligned; bound_maps: the buffer address each map was last encoded for
        self.tensor_maps = getattr(kernel, "tensor_maps", ())
        self.bound_maps: list = [None] * len(self.tensor_maps)
        self.fallback: CudaProgram | None = None    # kernel.fallback's, compiled on first need
        map_words = (_TENSOR_MAP_BYTES * len(self.tensor_maps) + 64) // 8 if self.tensor_maps else 0
        # kernelParams is an array of pointers, each to one argument: here to the
        # 64-bit slot holding that buffer's device address, or to a tensor map's bytes.
        self.arg_values = (ctypes.c_uint64 * (slots + map_words))()
        if workspace is not None:
            self.arg_values[self.param_count] = workspace.ptr
        base = ctypes.addressof(self.arg_values)
        pointers = [base + 8 * i for i in range(slots)]
        maps_start = -(-(base + 8 * slots) // 64) * 64
        self.map_addresses = [maps_start + _TENSOR_MAP_BYTES * i for i in range(len(self.tensor_maps))]
        pointers += self.map_addresses
        self.arg_pointers = (ctypes.c_void_p * len(pointers))(*pointers)
        self.arg_address = ctypes.addressof(self.arg_pointers)
        self.dims = (*self.grid, *self.block, self.shared_bytes)  # as cuLaunchKernel takes them
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CudaProgram({self.name}, grid={self.grid}, block={self.block})"


class CudaDevice:
    name = "cuda"

    def __init__(self, ordinal: int = 0):
        usable, why = cuda_available()
        if not usable:
            raise DeviceError(f"cuda: no usable GPU: {why}")
        from cuda.bindings import driver
        self._driver = driver
        self.ordinal = ordinal
        self._device = self._call(driver.cuDeviceGet(ordinal), f"cuDeviceGet({ordinal})")
        self._context = self._call(driver.cuDevicePrimaryCtxRetain(self._device),
                                   "cuDevicePrimaryCtxRetain")
        # thread-local, not a set of thread ids: ids are reused once a thread ends
        self._thread_state = threading.local()
        self._make_current()
        self._stream = self._call(driver.cuStreamCreate(
            driver.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")
        self._uploads = PendingUploads(driver)
        self.target = self._read_target()
        self.arch = self.target["arch"]
        self._programs: dict = {}                 # (source, launch) -> CudaProgram
        self._encoded_maps: dict = {}             # (TensorMap, buffer address) -> 128 bytes
        self._free_blocks: dict[int, list[int]] = {}  # size class -> device addresses
        self.bytes_in_use = 0                     # held by live CudaBuffers
        self.bytes_cached = 0                     # held in the free lists

    # -- plumbing -----------------------------------------------------------
    def _call(self, result, what: str):
        """cuda-python returns (status, *values); raise DeviceError unless success."""
        status = result[0]
        if status:
            raise DeviceError(f"cuda: {what} failed: {status.name}")
        return result[1] if len(result) == 2 else result[1:] or None

    def _make_current(self) -> None:
        # A context is current per thread, so each new calling thread sets it once.
        self._call(self._driver.cuCtxSetCurrent(self._context), "cuCtxSetCurrent")
        self._thread_state.has_context = True

    def _ensure_current(self) -> None:
        if not getattr(self._thread_state, "has_context", False):
            self._make_current()

    def _attribute(self, name: str) -> int:
        attribute = getattr(self._driver.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")
        return int(self._call(self._driver.cuDeviceGetAttribute(attribute, self._device), name))

    def _read_target(self) -> dict:
        capability = (self._attribute("COMPUTE_CAPABILITY_MAJOR"),
                      self._attribute("COMPUTE_CAPABILITY_MINOR"))
        raw_name = self._call(self._driver.cuDeviceGetName(64, self._device), "cuDeviceGetName")
        self.device_name = raw_name.split(b"\0")[0].decode()
        self.total_memory = int(self._call(self._driver.cuDeviceTotalMem(self._device),
                                           "cuDeviceTotalMem"))
        return {
            "arch": f"sm_{capability[0]}{capability[1]}",
            "compute_capability": capability,
            "max_threads_per_block": self._attribute("MAX_THREADS_PER_BLOCK"),
            "multiprocessor_count": self._attribute("MULTIPROCESSOR_COUNT"),
            "shared_memory_per_block": self._attribute("MAX_SHARED_MEMORY_PER_BLOCK"),
            "shared_memory_per_block_optin": self._attribute("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"),
            "warp_size": self._attribute("WARP_SIZE"),
        }

    # -- memory -------------------------------------------------------------
    def allocate(self, nbytes: int) -> CudaBuffer:
        size = _size_class(nbytes)
        blocks = self._free_blocks.get(size)
        if blocks:
            ptr = blocks.pop()
            self.bytes_cached -= size
        else:
            ptr = self._allocate_new(nbytes, size)
        self.bytes_in_use += size
        buffer = CudaBuffer(ptr, nbytes, self)
        weakref.finalize(buffer, self._release, ptr, size)
        return buffer

    def _release(self, ptr: int, size: int) -> None:
        # Called when a CudaBuffer is collected. Plain bookkeeping, no driver
        # call: stream order makes the block safe to reuse at once.
        self._free_blocks.setdefault(size, []).append(ptr)
        self.bytes_in_use -= size
        self.bytes_cached += size

    def _allocate_new(self, nbytes: int, size: int) -> int:
        self._ensure_current()
        status, ptr = self._driver.cuMemAlloc(size)
        if status == self._driver.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            self.empty_cache()  # the cached blocks may be just what is missing
            status, ptr = self._driver.cuMemAlloc(size)
        if status == self._driver.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            free, total = self.memory_info()
            raise DeviceError(
                f"cuda: out of memory allocating {nbytes} bytes ({self.bytes_in_use} in use "
                f"by cudagrad; {_gib(free)} free of {_gib(total)} on "
                f"{self.device_name}). Free some tensors or use smaller batches.")
        if status:
            raise DeviceError(f"cuda: cuMemAlloc({size}) failed: {status.name}")
        return int(ptr)

    def empty_cache(self) -> None:
        """Give every cached free block back to the driver."""
        self.synchronize()  # a queued kernel may still touch a block freed on the host
        for blocks in self._free_blocks.values():
            for ptr in blocks:
                self._call(self._driver.cuMemFree(ptr), "cuMemFree")
        self._free_blocks.clear()
        self.bytes_cached = 0

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory, as the driver sees it."""
        self._ensure_current()
        free, total = self._call(self._driver.cuMemGetInfo(), "cuMemGetInfo")
        return int(free), int(total)

    def from_numpy(self, array: np.ndarray) -> CudaBuffer:
        array = np.ascontiguousarray(array)
        buffer = self.allocate(array.nbytes)
        self.copy_from_numpy(buffer, array)
        return buffer

    def copy_from_numpy(self, buffer: CudaBuffer, array: np.ndarray) -> None:
        """Overwrite the start of `buffer` with a host array: queued on our stream when small
        (uploads.py), else copied and waited for; either way the caller may reuse array."""
        array = np.ascontiguousarray(array)
        if array.nbytes > buffer.nbytes:
            raise ValueError(f"cuda: {array.nbytes} bytes do not fit a {buffer.nbytes}-byte buffer")
        if array.nbytes:
            self._ensure_current()
            # On our stream, so it is ordered after kernels that used this block before.
            # A small one is queued without waiting for the kernels before it (uploads.py).
            if not self._uploads.queue(self._stream, buffer.ptr, array):
                self._call(self._driver.cuMemcpyHtoDAsync(buffer.ptr, array.ctypes.data,
                                                          array.nbytes, self._stream), "cuMemcpyHtoD")
                self.synchronize()  # the host array may be freed once we return
        stats.count("bytes_host_to_device", array.nbytes)

    def copy_buffer(self, target: CudaBuffer, source: CudaBuffer, nbytes: int) -> None:
        """Device to device, on our stream (ordered after the kernels before it)."""
        self._ensure_current()
        self._call(self._driver.cuMemcpyDtoDAsync(target.ptr, source.ptr, nbytes, self._stream),
                   "cuMemcpyDtoD")

    def capture_graph(self, launch_all) -> object:
        """The work launch_all(stream) puts on the stream it is given, captured into an
        instantiated CUDA graph (nothing runs now); launch_graph replays it on our stream.
        The capture has a stream of its own: work other threads put on ours meanwhile
        neither joins the graph nor breaks the capture."""
        self._ensure_current()
        driver = self._driver
        stream = self._call(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING),
                            "cuStreamCreate")
        mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        try:
            self._call(driver.cuStreamBeginCapture(stream, mode), "cuStreamBeginCapture")
            try:
                launch_all(stream)
            finally:
                graph = self._call(driver.cuStreamEndCapture(stream), "cuStreamEndCapture")
            executable = self._call(driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        finally:
            driver.cuStreamDestroy(stream)
        return (graph, executable)      # the graph is kept alive with its executable

    def launch_graph(self, graph) -> None:
        self._ensure_current()
        self._call(self._driver.cuGraphLaunch(graph[1], self._stream), "cuGraphLaunch")

    def to_numpy(self, buffer: CudaBuffer, np_dtype, count: int) -> np.ndarray:
        result = np.empty(count, dtype=np_dtype)
        if result.nbytes > buffer.nbytes:
            raise ValueError(f"cuda: reading {result.nbytes} bytes from a "
                             f"{buffer.nbytes}-byte buffer")
        if result.nbytes:
            self._ensure_current()
            self._call(self._driver.cuMemcpyDtoHAsync(result.ctypes.data, buffer.ptr,
                                                      result.nbytes, self._stream), "cuMemcpyDtoH")
            self.synchronize()
        stats.count("bytes_device_to_host", result.nbytes)
        return result

    # -- kernels ------------------------------------------------------------
    def compile(self, kernel) -> CudaProgram:
        key = (kernel.source, kernel.launch)
        program = self._programs.get(key)
        if program is not None:
            stats.count("cache_hits_memory")
            return program
        self._ensure_current()
        module = self._load_cached_module(kernel)
        if module is None:
            cubin = compile_cuda(kernel.source, kernel.name, self._arch_of(kernel))
            stats.count("kernels_compiled")
            cache.store(self._disk_key(kernel), ".cubin", cubin)
            module = self._load_module(cubin)
        program = self._make_program(kernel, module)
        self._programs[key] = program
        return program

    def _arch_of(self, kernel) -> str:
        """The architecture kernel compiles for: the device's, or the kernel's own
        arch-specific variant of it (sm_90a on an sm_90 device)."""
        arch = getattr(kernel, "arch", "") or self.arch
        if arch.rstrip("af") != self.arch:
            raise DeviceError(f"cuda: kernel {kernel.name} is built for {arch}; this GPU is {self.arch}")
        return arch

    def _disk_key(self, kernel) -> str:
        major, minor = nvrtc_version()
        arch = self._arch_of(kernel)
        return cache.make_key(kernel.source, f"nvrtc {major}.{minor}", arch,
                              " ".join(compile_options(arch)), "cuda")

    def _load_cached_module(self, kernel):
        path = cache.load(self._disk_key(kernel), ".cubin")
        if path is None:
            return None
        try:
            module = self._load_module(path.read_bytes())
        except (OSError, DeviceError):
            return None  # unreadable or refused by the driver: rebuild it
        stats.count("cache_hits_disk")
        return module

    def _load_module(self, cubin: bytes):
        return self._call(self._driver.cuModuleLoadData(cubin), "cuModuleLoadData")

    def _make_program(self, kernel, module) -> CudaProgram:
        driver = self._driver
        function = self._call(driver.cuModuleGetFunction(module, kernel.name.encode()),
                              f"cuModuleGetFunction({kernel.name})")
        grid, block, shared_bytes = kernel.launch
        limit = self._call(driver.cuFuncGetAttribute(
            driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, function),
            "cuFuncGetAttribute")
        if block[0] * block[1] * block[2] > limit:
            raise DeviceError(f"cuda: kernel {kernel.name} asks for {block} threads a block; "
                              f"with its registers this GPU runs at most {limit}")
        if shared_bytes > _LARGE_SHARED_MEMORY:
            self._call(driver.cuFuncSetAttribute(
                function,
                driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_bytes), "cuFuncSetAttribute(max dynamic shared memory)")
        workspace = None
        if getattr(kernel, "workspace", 0):
            workspace = self.allocate(kernel.workspace)
            self._call(driver.cuMemsetD8Async(workspace.ptr, 0, kernel.workspace, self._stream),
                       "cuMemsetD8Async(workspace)")
        return CudaProgram(kernel, module, function, workspace)

    def launch(self, program: CudaProgram, buffers: list, stream=None) -> None:
        """Launch on the library's stream (or on stream: a CUDA graph's capture)."""
        if stream is None:
            stream = self._stream
        if len(buffers) != program.param_count:
            raise ValueError(f"cuda: {program.name} takes {program.param_count} buffers, "
                             f"got {len(buffers)}")
        if not getattr(self._thread_state, "has_context", False):
            self._make_current()
        values = program.arg_values
        with program.lock:
            for index, buffer in enumerate(buffers):
                values[index] = buffer.ptr
            if program.tensor_maps:     # one attribute test on the common path
                self._launch_with_tensor_maps(program, buffers, stream)
                return
            # Measured on an H100 host: cuda-python's Cython wrapper (3.4 us) beats
            # calling the driver's cuLaunchKernel pointer through ctypes (4.1 us).
            (status,) = self._driver.cuLaunchKernel(program.function, *program.dims, stream,
                                                    program.arg_address, 0)
        if status:
            raise DeviceError(f"cuda: launching {program.name} failed: {status.name}")
        _STATS["kernels_launched"] += 1  # stats.count inlined: this is the hot path

    def _launch_with_tensor_maps(self, program: CudaProgram, buffers: list, stream) -> None:
        """Launch a kernel taking tensor maps (its buffer addresses already written, its
        lock held): each map re-encoded only when its buffer's address changed (a replayed
        plan reuses addresses, so the steady state copies nothing); where an address cannot
        be a map's base, the kernel's fallback runs instead."""
        for slot, tensor_map in enumerate(program.tensor_maps):
            address = buffers[tensor_map.param].ptr
            if program.bound_maps[slot] == address:
                continue
            encoded = self._encoded_map(tensor_map, address)
            if encoded is None:
                if program.fallback is None:
                    program.fallback = self.compile(program.kernel.fallback)
                self.launch(program.fallback, buffers, stream)
                return
            ctypes.memmove(program.map_addresses[slot], encoded, _TENSOR_MAP_BYTES)
            program.bound_maps[slot] = address
        (status,) = self._driver.cuLaunchKernel(program.function, *program.dims, stream,
                                                program.arg_address, 0)
        if status:
            raise DeviceError(f"cuda: launching {program.name} failed: {status.name}")
        _STATS["kernels_launched"] += 1

    def _encoded_map(self, tensor_map, address: int) -> bytes | None:
        """The 128 bytes of `tensor_map` over the buffer at `address` (cached), or None
        where the matrix's start is not 16-byte aligned (the copy engine's rule)."""
        key = (tensor_map, address)
        encoded = self._encoded_maps.get(key)
        if encoded is not None:
            return encoded
        driver = self._driver
        itemsize = 4 if tensor_map.dtype == "float32" else 2
        start = address + tensor_map.offset * itemsize
        if start % 16:
            return None
        data_type = (driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT32 if itemsize == 4
                     else driver.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16)
        wide, narrow = driver.cuuint64_t, driver.cuuint32_t
        encoded_map = self._call(driver.cuTensorMapEncodeTiled(
            data_type, 2, start, [wide(size) for size in tensor_map.dims],
            [wide(tensor_map.row_stride * itemsize)], [narrow(size) for size in tensor_map.box],
            [narrow(1), narrow(1)],
            driver.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
            driver.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
            driver.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            driver.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
            f"cuTensorMapEncodeTiled({tensor_map})")
        encoded = ctypes.string_at(encoded_map.getPtr(), _TENSOR_MAP_BYTES)
        if len(self._encoded_maps) >= _TENSOR_MAP_CACHE_SIZE:
            self._encoded_maps.clear()      # addresses come and go: start over rather than grow
        self._encoded_maps[key] = encoded
        return encoded

    @property
    def stream_handle(self) -> int:
        """The library's stream as an integer (what DLPack's stream= argument takes)."""
        return int(self._stream)

    def synchronize(self) -> None:
        self._ensure_current()
        (status,) = self._driver.cuStreamSynchronize(self._stream)
        if not status:
            self._uploads.finished()
        if status:
            raise DeviceError(f"cuda: a kernel or copy failed: {status.name} (errors such as "
                              "an illegal address leave the GPU context unusable; restart "
                              "the process; CUDAGRAD_DEBUG=1 names the kernel)")

    def __repr__(self) -> str:
        return f"CudaDevice({self.ordinal}: {self.device_name}, {self.arch})"
