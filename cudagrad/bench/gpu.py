"""Fused GPU kernels against PyTorch eager and torch.compile, on one card, in one run.

    python -m cudagrad.bench gpu [--quick] [--json PATH] [--plot PATH] [--no-compile] [--only softmax,sum]
    python -m cudagrad.bench gpu --device cpu --quick     # the same code paths, on the CPU

Method (issue 7): count the minimum bytes (each input read once, each output
written once) or floating-point operations of each workload; warm up; time
medians of many runs with CUDA events recorded between back-to-back runs (the
queue stays full, so a sample is the GPU's time, or the host's where the host
is slower, as in an overhead-bound training step); rotate several input sets
where one would fit in L2. The card's device-to-device copy bandwidth and
cuBLAS float32 rates are measured in the same run and are what "of peak"
divides by. cudagrad's kernels are replayed from their plan (timing.replay_plan:
no graph building); training steps run whole (graph building, backward,
optimizer, realize). Every cudagrad result is checked against PyTorch's (or
numpy's, without PyTorch): "rel err" is max |ours - theirs| / max |theirs|
(for a training step: of the losses of its first three steps, from the same
initial weights and batch).
"""
from __future__ import annotations

import gc
import math
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import cudagrad as cg
import cudagrad.nn.functional as F
from cudagrad.bench.fusion import elementwise_chain, fusion_table, layer_norm, relu_mlp
from cudagrad.bench.gpu_report import plot, table  # noqa: F401 (__main__ looks them up here)
from cudagrad.bench.timing import event_median_seconds, median_seconds, replay_plan
from cudagrad.device import get_device
from cudagrad.runtime.errors import DeviceError

LAYER_NORM_EPS = 1e-5


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Bench:
    """One device, one PyTorch (or none), one way of timing both."""

    def __init__(self, device: str, quick: bool, compile_torch: bool):
        self.device = device
        self.cg_device = get_device(device)
        self.quick = quick
        self.torch = _import_torch()
        if self.torch is not None and device == "cuda" and not self.torch.cuda.is_available():
            print(f"cudagrad.bench: PyTorch {self.torch.__version__} cannot use this GPU "
                  "(a CPU-only build?): running without it", file=sys.stderr)
            self.torch = None
        self.compile_torch = compile_torch and self.torch is not None
        self.rng = np.random.default_rng(0)
        self.use_events = device == "cuda" and self.torch is not None
        if self.use_events:
            self.cg_stream = self.torch.cuda.ExternalStream(self.cg_device.stream_handle)
        if self.torch is not None and device == "cuda":
            self.torch.backends.cuda.matmul.allow_tf32 = False    # the float32 reference is float32
            self.torch.backends.cudnn.allow_tf32 = False
        self.card = self.cg_device.device_name if device == "cuda" else f"CPU: {_cpu_model()}"
        self.l2_bytes = self._l2_bytes()
        self.cublas: dict[tuple, float] = {}      # (m, k, n, dtype, tf32) -> TFLOP/s
        self.copy_gbps: float | None = None

    def _l2_bytes(self) -> int:
        if self.device != "cuda":
            return 4 << 20     # a typical CPU L2 (quick runs rotate, exercising the path)
        if self.torch is not None:
            size = getattr(self.torch.cuda.get_device_properties(0), "L2_cache_size", 0)
            if size:
                return int(size)
        try:
            return int(self.cg_device._attribute("L2_CACHE_SIZE"))
        except Exception:
            return 64 << 20

    # ---- timing ---------------------------------------------------------------------
    def torch_sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def seconds(self, function: Callable, side: str) -> float:
        """Median seconds of function(); side is "cudagrad" or "torch" (whose stream)."""
        sync = self.cg_device.synchronize if side == "cudagrad" else self.torch_sync
        if self.quick:
            warmup, repeats = 1, 3
        else:
            function()
            sync()
            started = time.perf_counter()
            function()
            sync()
            once = time.perf_counter() - started
            repeats = int(min(max(1.0 / max(once, 1e-6), 10), 200))   # about a second of samples
            warmup = 3 if once < 0.05 else 1
        if self.use_events:
            stream = self.cg_stream if side == "cudagrad" else self.torch.cuda.current_stream()
            return event_median_seconds(function, self.torch, stream, warmup, repeats)
        return median_seconds(function, sync, warmup, repeats, min_seconds=0.0)

    @property
    def timing(self) -> str:
        if self.use_events:
            return "CUDA events between back-to-back runs, medians"
        if self.device == "cuda":
            return "wall time of synchronized runs, medians (no PyTorch for CUDA events)"
        return "wall time, medians"

    # ---- the card's limits, measured in this run -------------------------------------
    def measure_copy(self) -> None:
        """Device-to-device copy bandwidth: bytes read + written per second."""
        count = 1 << (22 if self.quick else 28)
        if self.torch is not None:
            source = self.torch.empty(count, device=self.device).uniform_()
            destination = self.torch.empty_like(source)
            seconds = self.seconds(lambda: destination.copy_(source), "torch")
            self.copy_method = "torch copy_"
        else:
            source = cg.tensor(self.rng.random(count, dtype=np.float32), device=self.device,
                               requires_grad=False)
            _, negate = replay_plan(-source)
            seconds = self.seconds(negate, "cudagrad")
            self.copy_method = "cudagrad negate (one read, one write)"
        self.copy_gbps = 2 * count * 4 / seconds / 1e9

    def cublas_tflops(self, m: int, k: int, n: int, dtype: str = "float32", tf32: bool = False):
        """PyTorch's matmul rate (cuBLAS on CUDA) for [m, k] @ [k, n]; None without PyTorch."""
        key = (m, k, n, dtype, tf32)
        if self.torch is None:
            return None
        if key not in self.cublas:
            torch = self.torch
            a = torch.randn(m, k, device=self.device, dtype=getattr(torch, dtype))
            b = torch.randn(k, n, device=self.device, dtype=getattr(torch, dtype))
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                seconds = self.seconds(lambda: a @ b, "torch")
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False
            self.cublas[key] = 2 * m * k * n / seconds / 1e12
        return self.cublas[key]

    def free(self) -> None:
        """Give memory back between workloads (the next one may need most of the card)."""
        gc.collect()
        if self.torch is not None and self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
        if hasattr(self.cg_device, "empty_cache"):
            self.cg_device.empty_cache()

    def compiled_seconds(self, function: Callable, calls: list[Callable], row: dict) -> None:
        """torch.compile(function), compiled once and warmed up, then timed; n/a on failure."""
        if not self.compile_torch:
            return
        try:
            compiled = self.torch.compile(function)
            for call in calls:
                call(compiled)
            self.torch_sync()
            row["compiled_s"] = self.seconds(_rotate([lambda c=call: c(compiled) for call in calls]),
                                             "torch")
        except Exception as error:        # Inductor needs a compiler, Triton, ...: report, go on
            row["compiled_s"] = None
            row["compile_error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}" \
                if str(error).strip() else type(error).__name__


def _guarded(row: dict, torch_side: Callable) -> None:
    """Run PyTorch's side of a row; where it fails (out of memory, ...) cudagrad's figures stay."""
    try:
        torch_side()
    except Exception as error:
        traceback.print_exc()
        row["torch_error"] = f"{type(error).__name__}: {error}"


def _rotate(functions: list[Callable]) -> Callable:
    """One function that calls the given ones in turn (input sets rotated past L2)."""
    if len(functions) == 1:
        return functions[0]
    turn = [0]

    def call():
        function = functions[turn[0] % len(functions)]
        turn[0] += 1
        return function()
    return call


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, dtype=np.float32), np.asarray(theirs, dtype=np.float32)
    if theirs.size == 0:
        return 0.0
    scale = float(np.max(np.abs(theirs)))
    return float(np.max(np.abs(ours - theirs))) / (scale if scale > 0 else 1.0)


# ---- kernel workloads: one graph, replayed -----------------------------------------------
@dataclass
class KernelWorkload:
    name: str
    label: str                      # a short name, for the plot
    make: Callable                  # rng -> list of numpy inputs (one input set)
    ours: Callable                  # cudagrad tensors -> result
    theirs: Callable                # torch tensors -> result
    numpy: Callable                 # numpy arrays -> result (the check without PyTorch)
    min_bytes: int = 0              # a memory-bound workload: rate in GB/s against copy
    flops: int = 0                  # a compute-bound one: TFLOP/s against cuBLAS float32
    matmul_shape: tuple | None = None
    is_cublas: bool = False         # PyTorch's time is the cuBLAS reference itself
    peak: tuple = ("float32", False)    # the cuBLAS rate it is measured against: (dtype, tf32)
    dtype: str = "float32"          # the inputs' dtype on both sides (numpy makes float32)
    target: dict = field(default_factory=dict)
    compile: bool = True
    note: str = ""


def measure_kernels(bench: Bench, work: KernelWorkload) -> dict:
    row: dict[str, Any] = {"name": work.name, "label": work.label, "target": work.target}
    first = work.make(bench.rng)
    set_bytes = sum(array.nbytes for array in first)
    count = 1 if set_bytes >= 2 * bench.l2_bytes else min(8, math.ceil(2 * bench.l2_bytes / set_bytes))
    sets = [first] + [work.make(bench.rng) for _ in range(count - 1)]
    row["input_sets"] = count

    inputs = [[_input(array, bench.device, work.dtype) for array in arrays] for arrays in sets]
    results = [work.ours(*tensors) for tensors in inputs]
    replays = [replay_plan(result) for result in results]
    row["kernels"] = len(replays[0][0].steps)
    row["cudagrad_s"] = bench.seconds(_rotate([run for _, run in replays]), "cudagrad")
    ours = results[0].to(cg.float32).numpy()
    del replays, results, inputs

    torch = bench.torch

    def torch_side():
        tensors = [[torch.from_numpy(array).to(bench.device).to(getattr(torch, work.dtype))
                    for array in arrays] for arrays in sets]
        row["relative_error"] = relative_error(ours, work.theirs(*tensors[0]).float().cpu().numpy())
        calls = [lambda f, ts=ts: f(*ts) for ts in tensors]
        row["reference_s"] = bench.seconds(_rotate([lambda c=call: c(work.theirs) for call in calls]),
                                           "torch")
        if work.compile:
            bench.compiled_seconds(work.theirs, calls, row)
        if work.is_cublas:
            m, k, n = work.matmul_shape or (0, 0, 0)
            bench.cublas[(m, k, n) + tuple(work.peak)] = work.flops / row["reference_s"] / 1e12
    if torch is None:
        row["relative_error"] = relative_error(ours, work.numpy(*sets[0]))
    else:
        _guarded(row, torch_side)
    _rates(bench, row, work.min_bytes, work.flops, work.matmul_shape, work.peak)
    if work.note:
        row["note"] = work.note
    return row


def _input(array: np.ndarray, device: str, dtype: str):
    """A benchmark input: the numpy array on the device, converted (and stored) as dtype."""
    tensor = cg.tensor(array, device=device, requires_grad=False)
    if dtype != "float32":
        tensor = tensor.to(getattr(cg, dtype))
        tensor.realize()
    return tensor


_PEAK_NAMES = {("float32", False): "cuBLAS float32", ("float32", True): "cuBLAS TF32",
               ("bfloat16", False): "cuBLAS bfloat16"}


def _rates(bench: Bench, row: dict, min_bytes: int, flops: int, matmul_shape,
           peak_kind: tuple = ("float32", False)) -> None:
    """Achieved GB/s or TFLOP/s of each side, and cudagrad's fraction of the card's peak."""
    if min_bytes:
        row["unit"], amount, scale, peak, row["peak"] = "GB/s", min_bytes, 1e9, bench.copy_gbps, "copy"
    elif flops:
        peak = bench.cublas_tflops(*matmul_shape, *peak_kind) if matmul_shape else None
        row["unit"], amount, scale, row["peak"] = "TFLOP/s", flops, 1e12, _PEAK_NAMES[peak_kind]
    else:
        return
    for side in ("cudagrad", "reference", "compiled"):
        seconds = row.get(f"{side}_s")
        if seconds:
            row[f"{side}_rate"] = amount / seconds / scale
    row["fraction_of_peak"] = row["cudagrad_rate"] / peak if peak else None


def kernel_workloads(quick: bool) -> list[KernelWorkload]:
    n = 1 << (16 if quick else 28)
    side = 256 if quick else 8192
    sizes = (128, 192) if quick else (4096, 8192)
    epilogue = 160 if quick else 4096

    def normal(*shapes):
        return lambda rng: [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]

    def softmax_numpy(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def layer_norm_numpy(x, gamma, beta):
        centered = x - x.mean(axis=1, keepdims=True)
        return centered / np.sqrt((centered ** 2).mean(axis=1, keepdims=True) + LAYER_NORM_EPS) * gamma + beta

    def layer_norm_torch(x, gamma, beta):
        import torch
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta, LAYER_NORM_EPS)

    def matmul_bias_relu_torch(x, w, b):
        import torch
        return torch.relu(torch.addmm(b, x, w))

    def tf32_matmul(a, b):
        previous = cg.get_float32_matmul_precision()
        cg.set_float32_matmul_precision("high")      # read when the matmul is built
        try:
            return a @ b
        finally:
            cg.set_float32_matmul_precision(previous)

    def tf32_matmul_torch(a, b):
        import torch
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return a @ b
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False

    def chain_numpy(x, y, z):
        return np.maximum((x * y + z) * 0.5 - y / (np.abs(z) + 1) + np.exp(-np.abs(x)), 0) * 1.5

    two_to_the = n.bit_length() - 1
    work = [
        KernelWorkload(
            f"elementwise chain, 3 inputs of 2^{two_to_the} float32", "chain", normal(n, n, n),
            ours=elementwise_chain, theirs=elementwise_chain, numpy=chain_numpy, min_bytes=4 * 4 * n,
            target={"text": "1 kernel, >= 1.0x compiled", "kernels": 1, "vs_compiled": 1.0}),
        KernelWorkload(
            f"full sum of 2^{two_to_the} float32", "sum", normal(n),
            ours=lambda x: x.sum(), theirs=lambda x: x.sum(), numpy=lambda x: x.sum(dtype=np.float64),
            min_bytes=4 * n + 4, target={"text": ">= 0.95x eager", "vs_eager": 0.95}),
        KernelWorkload(
            f"row softmax {side}x{side} float32", "softmax", normal((side, side)),
            ours=lambda x: x.softmax(-1), theirs=lambda x: x.softmax(-1), numpy=softmax_numpy,
            min_bytes=2 * 4 * side * side,
            target={"text": "1 kernel, >= 90% of copy", "kernels": 1, "fraction": 0.9}),
        KernelWorkload(
            f"layer norm {side}x{side} float32", "layer norm", normal((side, side), side, side),
            ours=lambda x, g, b: layer_norm(x, g, b, LAYER_NORM_EPS), theirs=layer_norm_torch,
            numpy=layer_norm_numpy, min_bytes=2 * 4 * side * side + 2 * 4 * side,
            target={"text": "1 kernel, >= 90% of copy", "kernels": 1, "fraction": 0.9},
            note="PyTorch runs F.layer_norm; cudagrad (x - mean) / sqrt(var + eps) * g + b"),
    ]
    for size in sizes:
        work.append(KernelWorkload(
            f"matmul float32 {size}^3", f"matmul {size}", normal((size, size), (size, size)),
            ours=lambda a, b: a @ b, theirs=lambda a, b: a @ b, numpy=lambda a, b: a @ b,
            flops=2 * size ** 3, matmul_shape=(size, size, size), is_cublas=True, compile=False,
            target={"text": ">= 80% of cuBLAS", "fraction": 0.8},
            note="PyTorch with TF32 off is cuBLAS float32 (compiled would call it too)"))
    for size in sizes:
        work.append(KernelWorkload(
            f"matmul tf32 {size}^3", f"tf32 {size}", normal((size, size), (size, size)),
            ours=tf32_matmul, theirs=tf32_matmul_torch, numpy=lambda a, b: a @ b,
            flops=2 * size ** 3, matmul_shape=(size, size, size), is_cublas=True, compile=False,
            peak=("float32", True), target={"text": ">= 60% of cuBLAS TF32", "fraction": 0.6},
            note="cg.set_float32_matmul_precision('high'); PyTorch with TF32 on is cuBLAS TF32"))
    for size in sizes:
        work.append(KernelWorkload(
            f"matmul bfloat16 {size}^3", f"bf16 {size}", normal((size, size), (size, size)),
            ours=lambda a, b: a @ b, theirs=lambda a, b: a @ b, numpy=lambda a, b: a @ b,
            flops=2 * size ** 3, matmul_shape=(size, size, size), is_cublas=True, compile=False,
            peak=("bfloat16", False), dtype="bfloat16",
            target={"text": ">= 60% of cuBLAS bf16", "fraction": 0.6},
            note="bfloat16 inputs and result, float32 accumulation on both sides"))
    m = epilogue
    work.append(KernelWorkload(
        f"matmul + bias + relu float32 {m}^3", "matmul+bias+relu", normal((m, m), (m, m), m),
        ours=lambda x, w, b: (x @ w + b).relu(), theirs=matmul_bias_relu_torch,
        numpy=lambda x, w, b: np.maximum(x @ w + b, 0), flops=2 * m ** 3, matmul_shape=(m, m, m),
        target={"text": "1 kernel", "kernels": 1},
        note="PyTorch eager: addmm (bias in cuBLAS's epilogue) and a relu pass"))
    return work


# ---- training steps: graph building, backward, optimizer and realize, every step -------------
def measure_mlp(bench: Bench, name: str, label: str, widths: list[int], batch: int, loss_kind: str,
                optimizer: str, target: dict, compute_bound: bool, jit: bool = False) -> dict:
    """jit: the step wrapped in cg.jit (captured on its second call, replayed after)."""
    row: dict[str, Any] = {"name": name, "label": label, "target": target}
    device, rng = bench.device, bench.rng
    cg.manual_seed(0)
    model = relu_mlp(widths, device)
    x_np = rng.standard_normal((batch, widths[0]), dtype=np.float32)
    y_np: np.ndarray
    y: Any
    if loss_kind == "mse":
        y_np = rng.standard_normal((batch, widths[-1]), dtype=np.float32)
        y = cg.tensor(y_np, device=device, requires_grad=False)
    else:
        y_np = rng.integers(0, widths[-1], batch)
        # a jit step takes its labels as a tensor: a replay cannot read host data
        y = cg.tensor(y_np, dtype=cg.int32, device=device, requires_grad=False) if jit else y_np
    x = cg.tensor(x_np, device=device, requires_grad=False)
    loss_function = F.mse_loss if loss_kind == "mse" else F.cross_entropy
    initial = [param.numpy() for param in model.parameters()]
    opt: cg.optim.Optimizer = (cg.optim.SGD(model.parameters(), lr=1e-3) if optimizer == "sgd"
                               else cg.optim.Adam(model.parameters(), lr=1e-3))

    def step():
        opt.zero_grad()
        loss = loss_function(model(x), y)
        loss.backward()
        cg.realize(loss, *opt.schedule_step())
        return loss
    jitted = cg.jit(step) if jit else None
    if jitted is not None:
        step = jitted      # called as step() all the same

    ours_losses = [step().item() for _ in range(3)]     # also the warm-up: plans built
    before = cg.stats()["kernels_launched"]
    step()
    row["kernels"] = cg.stats()["kernels_launched"] - before
    row["cudagrad_s"] = bench.seconds(step, "cudagrad")
    if jitted is not None:     # how the replays ran: one CUDA graph launch each, or kernel by kernel
        row["jit_replays"] = dict(jitted.replays)

    torch = bench.torch

    def torch_side():
        torch_layers: list = []
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            torch_layers.append(torch.nn.Linear(fan_in, fan_out))
            if index < len(widths) - 2:
                torch_layers.append(torch.nn.ReLU())
        torch_model = torch.nn.Sequential(*torch_layers).to(device)
        with torch.no_grad():      # cudagrad's initial weights: the losses must agree step by step
            for param, value in zip(torch_model.parameters(), initial, strict=True):
                param.copy_(torch.from_numpy(value))
        tx = torch.from_numpy(x_np).to(device)
        ty = torch.from_numpy(y_np).to(device)
        torch_loss = torch.nn.functional.mse_loss if loss_kind == "mse" else torch.nn.functional.cross_entropy
        torch_opt = (torch.optim.SGD(torch_model.parameters(), lr=1e-3) if optimizer == "sgd"
                     else torch.optim.Adam(torch_model.parameters(), lr=1e-3))

        def torch_step(forward):
            torch_opt.zero_grad(set_to_none=True)
            loss = torch_loss(forward(tx), ty)
            loss.backward()
            torch_opt.step()
            return loss

        theirs_losses = [torch_step(torch_model).item() for _ in range(3)]
        row["relative_error"] = max(relative_error(a, b) for a, b in zip(ours_losses, theirs_losses))
        row["reference_s"] = bench.seconds(lambda: torch_step(torch_model), "torch")
        bench.compiled_seconds(torch_model, [lambda compiled: torch_step(compiled)], row)
        row["note"] = "torch.compile compiles the model (forward and backward); its optimizer runs eagerly"
        if jit:
            row["note"] += f"; cg.jit replays: {row['jit_replays']}"
    if torch is not None:
        _guarded(row, torch_side)
    else:
        row["relative_error"] = None
        row["note"] = f"losses of the first steps: {', '.join(f'{v:.5g}' for v in ours_losses)}"
    if compute_bound:
        per_layer = [fan_in * fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:])]
        # forward, weight gradients, input gradients (none for the first layer's input)
        flops = 2 * batch * (2 * sum(per_layer) + sum(per_layer[1:]))
        _rates(bench, row, 0, flops, (batch, widths[1], widths[2]))
    return row


def mlp_workloads(quick: bool) -> list[dict]:
    wide, batch = (128, 256) if quick else (4096, 8192)
    small, small_batch = (64, 64) if quick else (512, 512)
    return [
        {"name": f"MLP step, compute-bound: 4 Linear {wide}, ReLU, MSE, SGD, batch {batch}, float32",
         "label": "MLP step (compute)", "widths": [wide] * 5, "batch": batch, "loss_kind": "mse",
         "optimizer": "sgd", "compute_bound": True, "target": {"text": ">= 0.8x eager", "vs_eager": 0.8}},
        {"name": f"MLP step, overhead-bound: 3 Linear {small} (10 classes), cross-entropy, Adam, "
                 f"batch {small_batch}",
         "label": "MLP step (overhead)", "widths": [small, small, small, 10], "batch": small_batch,
         "loss_kind": "cross_entropy", "optimizer": "adam", "compute_bound": False,
         "target": {"text": "- (see the cg.jit row)"}},
        {"name": "MLP step, overhead-bound, cg.jit: the same step captured once and replayed",
         "label": "MLP step (overhead, jit)", "widths": [small, small, small, 10], "batch": small_batch,
         "loss_kind": "cross_entropy", "optimizer": "adam", "compute_bound": False, "jit": True,
         "target": {"text": ">= 2x eager", "vs_eager": 2.0}},
    ]


def target_met(row: dict) -> bool | None:
    """True or False where every stated bound could be checked; None if one could not."""
    target, checks = row.get("target") or {}, []
    if "kernels" in target:
        checks.append(None if row.get("kernels") is None else row["kernels"] <= target["kernels"])
    for key, bound in (("vs_eager", "speedup"), ("vs_compiled", "speedup_compiled"),
                       ("fraction", "fraction_of_peak")):
        if key in target:
            value = row.get(bound)
            checks.append(None if value is None else value >= target[key])
    if False in checks:
        return False
    return None if None in checks or not checks else True


def run(quick: bool = False, device: str = "cuda", compile: bool = True, only: str | None = None) -> dict:
    """The suite; only: comma-separated parts of workload names to run (default: all)."""
    try:
        bench = Bench(device, quick, compile)
    except DeviceError as error:
        raise SystemExit(f"cudagrad.bench gpu: {error} (--device cpu runs the same code paths on the CPU)")
    torch = bench.torch
    print(f"{bench.card}; PyTorch {torch.__version__ if torch else 'not installed'}; "
          f"timing: {bench.timing}", file=sys.stderr, flush=True)
    bench.measure_copy()
    bench.free()
    rows = []
    jobs = [(work.name, lambda work=work: measure_kernels(bench, work)) for work in kernel_workloads(quick)]
    jobs += [(spec["name"], lambda spec=spec: measure_mlp(bench, **spec)) for spec in mlp_workloads(quick)]
    if only:
        wanted = [part.strip().lower() for part in only.split(",") if part.strip()]
        jobs = [(name, job) for name, job in jobs if any(part in name.lower() for part in wanted)]
    for name, job in jobs:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        try:
            row = job()
        except Exception as error:      # one workload failing (memory, a compile) leaves the others
            traceback.print_exc()
            row = {"name": name, "error": f"{type(error).__name__}: {error}"}
        rows.append(row)
        bench.free()
    for row in rows:
        if row.get("compiled_s") and row.get("cudagrad_s"):
            row["speedup_compiled"] = row["compiled_s"] / row["cudagrad_s"]
        if row.get("reference_s") and row.get("cudagrad_s"):
            row["speedup"] = row["reference_s"] / row["cudagrad_s"]
        row["target_met"] = target_met(row)
    size = 256 if quick else 8192
    references = {"copy_GBps": bench.copy_gbps, "copy_method": bench.copy_method,
                  "l2_bytes": bench.l2_bytes}
    if torch is not None:     # the other GEMM targets are fractions of these
        for label, dtype, tf32 in (("float32", "float32", False), ("tf32", "float32", True),
                                   ("bfloat16", "bfloat16", False)):
            references[f"cublas_{label}_{size}_TFLOPs"] = bench.cublas_tflops(size, size, size, dtype, tf32)
    return {"reference": f"PyTorch {torch.__version__} eager" if torch else "none (PyTorch not installed)",
            "device": device, "card": bench.card, "torch": torch.__version__ if torch else None,
            "torch_compile": bench.compile_torch, "timing": bench.timing, "references": references,
            "rows": rows, "fusion": fusion_table(device)}
