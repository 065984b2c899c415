"""Time hand-written variants of the elementwise chain kernel against torch.compile (issue 7).

    python scripts/chain_variants.py [--rounds 25] [--variants 0,6] [--streams]
                                     [--skews 0,4096] [--no-placement] [--json PATH]

The bench's chain, ((x*y+z)*0.5 - y/(|z|+1) + exp(-|x|)).relu()*1.5 on three inputs of
2^28 float32, is DRAM-bound. To learn whether any launch shape, cache hint, loop structure
or buffer placement moves its bytes faster, this script renders variants of one kernel
(float4 packs, `per_thread` packs an operand a thread), checks each against numpy (float64,
on a sample of indices), and times them interleaved: every round runs every variant (and
cudagrad's own kernel, torch.compile, torch's copy) once in a shuffled order, `repeats`
back-to-back launches with a CUDA event between every two. Interleaving cancels the card's
drift (clocks, temperature) that separate timing runs fold into a comparison. Two figures
a row: the median over rounds of the mean of `repeats` calls started from an idle queue
(the host's launch latency shows in it), and the median of all single calls (the bench's
figure: the queue full, the GPU's time alone).

Optional rows: --placement (default on) runs the kernels on each other's buffers, --streams
on torch's stream, --skews with the four arrays laid out the given bytes apart. The
findings (H100, 2026-11-26) are in docs/BENCHMARKS.md: every kernel that keeps enough
bytes in flight ties with Inductor's at the DRAM ceiling.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
from typing import Callable

import numpy as np

import cudagrad as cg
from cudagrad.bench.fusion import elementwise_chain
from cudagrad.bench.gpu import Bench
from cudagrad.bench.timing import event_seconds, replay_plan
from cudagrad.realization import input_buffer
from cudagrad.runtime.cuda import CudaBuffer

# ld / st forms: "plain" is what cudagrad renders today (a float4 dereference)
LOADS = {
    "plain": "*(p)",
    "ldg": "__ldg(p)",
    "cs": "__ldcs(p)",
    "L2_256": "cg_ld_v4(p)",
    "evict_first": "cg_ld_v4_evict_first(p)",
}
STORES = {
    "plain": "*(p) = (v)",
    "cs": "__stcs(p, v)",
    "no_allocate": "cg_st_v4_no_allocate(p, v)",
    "evict_first": "cg_st_v4_evict_first(p, v)",
}

HELPERS = r"""
__device__ __forceinline__ float4 cg_ld_v4(const float4* p) {
  float4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.f32 {%0,%1,%2,%3}, [%4];"
      : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ unsigned long long cg_evict_first_policy() {
  unsigned long long policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ float4 cg_ld_v4_evict_first(const float4* p) {
  float4 v;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.f32 {%0,%1,%2,%3}, [%4], %5;"
      : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p), "l"(cg_evict_first_policy()));
  return v;
}
__device__ __forceinline__ void cg_st_v4_no_allocate(float4* p, float4 v) {
  asm volatile("st.global.L1::no_allocate.v4.f32 [%0], {%1,%2,%3,%4};"
               :: "l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
}
__device__ __forceinline__ void cg_st_v4_evict_first(float4* p, float4 v) {
  asm volatile("st.global.L1::no_allocate.L2::cache_hint.v4.f32 [%0], {%1,%2,%3,%4}, %5;"
               :: "l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "l"(cg_evict_first_policy())
               : "memory");
}
__device__ __forceinline__ float cg_chain(float x, float y, float z) {
  const float v = (x * y + z) * 0.5f - y / (fabsf(z) + 1.0f) + expf(-fabsf(x));
  return (v < 0.0f ? 0.0f : v) * 1.5f;
}
__device__ __forceinline__ float4 cg_chain4(float4 x, float4 y, float4 z) {
  return make_float4(cg_chain(x.x, y.x, z.x), cg_chain(x.y, y.y, z.y),
                     cg_chain(x.z, y.z, z.z), cg_chain(x.w, y.w, z.w));
}
"""


@dataclasses.dataclass(frozen=True)
class Variant:
    block: int = 512
    per_thread: int = 2          # float4 packs an operand a thread, per loop trip
    load: str = "plain"
    store: str = "plain"
    blocks_per_sm: int = 0       # 0: one trip a block (the grid covers the input); else a
    prefetch: bool = False       # persistent grid looping, loading trip i+1 before storing i
    min_blocks: int = 0          # __launch_bounds__' second argument (caps the registers)

    @property
    def label(self) -> str:
        shape = f"b{self.block} x{self.per_thread}"
        grid = f" persistent {self.blocks_per_sm}/SM" if self.blocks_per_sm else ""
        grid += f" min {self.min_blocks} blocks/SM" if self.min_blocks else ""
        return (f"{shape}{grid}{' prefetch' if self.prefetch else ''} ld {self.load} "
                f"st {self.store}")


def variant_source(name: str, v: Variant, packs: int) -> str:
    load, store = LOADS[v.load], STORES[v.store]
    step = v.block * v.per_thread
    load_trip = "\n".join(
        f"    {{ const int s = trip + {u * v.block} + (int)threadIdx.x;\n"
        f"      if (s < {packs}) {{ {{ const float4* p = X + s; a[{u}] = {load}; }}"
        f" {{ const float4* p = Y + s; b[{u}] = {load}; }}"
        f" {{ const float4* p = Z + s; c[{u}] = {load}; }} }} }}"
        for u in range(v.per_thread))
    store_trip = "\n".join(
        f"    {{ const int s = trip + {u * v.block} + (int)threadIdx.x;\n"
        f"      if (s < {packs}) {{ float4* p = O + s;"
        f" const float4 v = cg_chain4(a[{u}], b[{u}], c[{u}]); {store}; }} }}"
        for u in range(v.per_thread))
    bounds = f"{v.block}, {v.min_blocks}" if v.min_blocks else f"{v.block}"
    head = (f'extern "C" __global__ void __launch_bounds__({bounds}) {name}('
            "float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ y, "
            "const float* __restrict__ z) {\n"
            "  const float4* X = (const float4*)x; const float4* Y = (const float4*)y;\n"
            "  const float4* Z = (const float4*)z; float4* O = (float4*)out;\n"
            f"  float4 a[{v.per_thread}], b[{v.per_thread}], c[{v.per_thread}];\n"
            f"  const int stride = (int)gridDim.x * {step};\n")
    if not v.prefetch:
        body = (f"  for (int trip = (int)blockIdx.x * {step}; trip < {packs}; trip += stride) {{\n"
                f"{load_trip}\n{store_trip}\n  }}\n")
    else:
        # the next trip's loads go out before this trip's math and stores
        body = (f"  int trip = (int)blockIdx.x * {step};\n{load_trip}\n"
                f"  while (trip < {packs}) {{\n"
                f"    float4 a0[{v.per_thread}], b0[{v.per_thread}], c0[{v.per_thread}];\n"
                "#pragma unroll\n"
                f"    for (int u = 0; u < {v.per_thread}; u++)"
                " { a0[u] = a[u]; b0[u] = b[u]; c0[u] = c[u]; }\n"
                "    const int now = trip; trip += stride;\n"
                f"{load_trip}\n"
                "    { const int trip = now;\n"
                + store_trip.replace("a[", "a0[").replace("b[", "b0[").replace("c[", "c0[")
                + "\n    }\n  }\n")
    return HELPERS + head + body + "}\n"


VARIANTS = [
    Variant(),                                        # what cudagrad renders (a check)
    Variant(block=128),                               # Inductor's shape: 4 warps, 8 a thread
    Variant(block=256),
    Variant(per_thread=1),
    Variant(block=128, per_thread=1),
    Variant(block=256, per_thread=1, min_blocks=8),   # 32 registers: 2048 threads an SM
    Variant(block=256, per_thread=4),
    Variant(store="no_allocate"),
    Variant(store="cs"),
    Variant(store="evict_first"),
    Variant(load="ldg"),
    # slower on an H100 (2026-11-26, a call's median): 2 packs a thread in 32 registers by
    # 31% (the loads go out one operand at a time), .cs, evict-first and L2::256B loads by
    # 5%, persistent grids by 3%. Kept to re-measure on other cards.
    Variant(min_blocks=4),
    Variant(block=128, min_blocks=16),
    Variant(load="cs"),
    Variant(load="evict_first"),
    Variant(load="L2_256"),
    Variant(load="evict_first", store="evict_first"),
    Variant(blocks_per_sm=2),                         # persistent, as many blocks as fit
    Variant(blocks_per_sm=2, prefetch=True),
    Variant(block=256, blocks_per_sm=4),
    Variant(per_thread=1, blocks_per_sm=4),
    Variant(block=256, per_thread=1, blocks_per_sm=8, prefetch=True),
]
FAST_VARIANTS = 11            # the ones above the "slower" comment


def _registers(device, program) -> int:
    driver = device._driver
    status, count = driver.cuFuncGetAttribute(
        driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NUM_REGS, program.function)
    return int(count)


def _triton_registers(device) -> int | None:
    """Registers of Inductor's chain kernel, from the cubin Triton cached (None: not found)."""
    import glob
    import os
    root = os.environ.get("TRITON_CACHE_DIR", os.path.expanduser("~/.triton/cache"))
    for path in glob.glob(os.path.join(root, "*", "triton_poi_fused_abs_add_div*.cubin")):
        try:
            driver = device._driver
            module = device._load_module(open(path, "rb").read())
            name = os.path.basename(path)[:-len(".cubin")]
            status, function = driver.cuModuleGetFunction(module, name.encode())
            status, count = driver.cuFuncGetAttribute(
                driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NUM_REGS, function)
            return int(count)
        except Exception as error:       # a diagnostic only
            print(f"triton registers: {error}", file=sys.stderr)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--log", type=int, default=28, help="2^log elements an input")
    parser.add_argument("--json")
    parser.add_argument("--variants", help="indices into VARIANTS to run, e.g. 0,1 (default: "
                        "the first FAST_VARIANTS, those not known to be slower)")
    parser.add_argument("--skews", help="byte gaps between the arrays to try, e.g. 0,4096")
    parser.add_argument("--streams", action="store_true",
                        help="also time the first variant and cudagrad's kernel on torch's stream")
    parser.add_argument("--no-placement", dest="placement", action="store_false",
                        help="skip the rows that swap the two libraries' buffers")
    args = parser.parse_args()
    bench = Bench("cuda", quick=False, compile_torch=True)
    torch, device = bench.torch, bench.cg_device
    n = 1 << args.log
    packs = n // 4
    sms = device._attribute("MULTIPROCESSOR_COUNT")
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(n, dtype=np.float32) for _ in range(3)]
    tensors = [cg.tensor(a, device="cuda", requires_grad=False) for a in arrays]
    result = elementwise_chain(*tensors)
    plan, ours = replay_plan(result)
    kernel = plan.steps[0].kernel
    in_buffers = [input_buffer(t.node) for t in tensors]
    out_buffer = device.allocate(4 * n)

    sample = np.concatenate([rng.integers(0, n, 1 << 20), np.arange(n - 4096, n)])
    x, y, z = (a[sample].astype(np.float64) for a in arrays)
    want = np.maximum((x * y + z) * 0.5 - y / (np.abs(z) + 1) + np.exp(-np.abs(x)), 0) * 1.5

    timed: dict[str, Callable] = {"cudagrad (rendered)": ours}
    keep = []           # the skewed arrays' blocks, alive until the end
    stream_timed: dict[str, Callable] = {}   # cudagrad launches timed on torch's stream
    registers: dict[str, int | None] = {"cudagrad (rendered)": _registers(device, plan.steps[0].program)}
    chosen = range(FAST_VARIANTS) if not args.variants else [int(i) for i in args.variants.split(",")]
    for index in chosen:
        v = VARIANTS[index]
        name = f"chain_variant_{index}"
        grid = sms * v.blocks_per_sm if v.blocks_per_sm else -(-packs // (v.block * v.per_thread))
        variant = dataclasses.replace(kernel, name=name, source=variant_source(name, v, packs),
                                      launch=((grid, 1, 1), (v.block, 1, 1), 0))
        program = device.compile(variant)
        registers[v.label] = _registers(device, program)

        def launch(stream=None, program=program):
            device.launch(program, [out_buffer, *in_buffers], stream=stream)
        launch()
        got = device.to_numpy(out_buffer, np.float32, n)[sample]
        error = float(np.max(np.abs(got - want) / (np.abs(want) + 1)))
        if error > 1e-6:
            print(f"{v.label}: WRONG, relative error {error:.1e}", file=sys.stderr)
            continue
        timed[v.label] = launch

    torch_inputs = [torch.from_numpy(a).cuda() for a in arrays]
    compiled = torch.compile(elementwise_chain)
    source, target = torch_inputs[0], torch.empty_like(torch_inputs[0])
    torch_side: dict[str, Callable] = {
        "torch.compile": lambda: compiled(*torch_inputs),
        "torch copy_ (one input)": lambda: target.copy_(source)}
    if args.placement:
        # the same kernels on each other's memory: does where the buffers lie (their
        # addresses modulo DRAM channel interleaving) move the figure?
        torch_out = torch.empty_like(torch_inputs[0])
        on_torch = [input_buffer(cg.from_dlpack(t).node) for t in [torch_out, *torch_inputs]]
        rendered = plan.steps[0].program
        timed["cudagrad (rendered), torch's buffers"] = \
            lambda: device.launch(rendered, on_torch)
        timed["cudagrad (rendered), one fixed output"] = \
            lambda: device.launch(rendered, [out_buffer, *in_buffers])
        cg_views = [torch.from_dlpack(t) for t in tensors]
        cg_out = torch.from_dlpack(cg.from_dlpack(torch_out))   # a check that views work
        del cg_out

        def chain_into(x, y, z, out):
            out.copy_(elementwise_chain(x, y, z))
        compiled_into = torch.compile(chain_into)
        torch_side["torch.compile, cudagrad's buffers"] = lambda: compiled(*cg_views)
        torch_side["torch.compile, torch's buffers, into one output"] = \
            lambda: compiled_into(*torch_inputs, torch_out)
    if args.skews:
        # one block, the four arrays laid out back to back with `skew` bytes between them:
        # do streams that start at the same DRAM channel and bank hold each other up?
        plain = device.compile(dataclasses.replace(
            kernel, name="chain_skewed", source=variant_source("chain_skewed", Variant(), packs),
            launch=((-(-packs // 1024), 1, 1), (512, 1, 1), 0)))
        nbytes = 4 * n
        for skew in (int(s) for s in args.skews.split(",")):
            block = device.allocate(4 * (nbytes + skew))
            keep.append(block)
            views = [CudaBuffer(block.ptr + i * (nbytes + skew), nbytes, device) for i in range(4)]
            for view, buffer in zip(views[1:], in_buffers):
                device.copy_buffer(view, buffer, nbytes)
            timed[f"b512 x2, arrays back to back {skew} bytes apart"] = \
                lambda p=plain, v=views: device.launch(p, v)
    if args.streams:
        # the same launches on torch's stream (the legacy default stream): does the stream
        # change the gap between back-to-back kernels?
        handle = torch.cuda.current_stream().cuda_stream
        first = next(label for label in timed if label != "cudagrad (rendered)")
        stream_timed[f"{first}, on torch's stream"] = lambda launch=timed[first]: launch(handle)
        rendered = plan.steps[0].program
        stream_timed["cudagrad (rendered), on torch's stream"] = \
            lambda: device.launch(rendered, [out_buffer, *in_buffers], stream=handle)
    for function in torch_side.values():
        for _ in range(3):
            function()
    torch.cuda.synchronize()
    registers["torch.compile"] = _triton_registers(device)

    torch_side.update(stream_timed)
    samples: dict[str, list[float]] = {label: [] for label in [*timed, *torch_side]}
    calls: dict[str, list[float]] = {label: [] for label in samples}
    order = list(samples)
    for _ in range(args.rounds):
        random.shuffle(order)
        for label in order:
            if label in timed:
                device.synchronize()
                seconds = event_seconds(timed[label], torch, bench.cg_stream, args.repeats)
            else:
                torch.cuda.synchronize()
                seconds = event_seconds(torch_side[label], torch, torch.cuda.current_stream(),
                                        args.repeats)
            samples[label].append(statistics.fmean(seconds))
            calls[label] += seconds

    compiled_s = statistics.median(samples["torch.compile"])
    rows = []
    print(f"{bench.card}, 3 inputs of 2^{args.log} float32, {args.rounds} rounds of "
          f"{args.repeats} launches, median per launch")
    for label, values in sorted(samples.items(), key=lambda item: statistics.median(item[1])):
        median = statistics.median(values)
        nbytes = 2 * 4 * n if label.startswith("torch copy") else 16 * n
        spread = (statistics.quantiles(values, n=4)[2] - statistics.quantiles(values, n=4)[0]) / median
        rows.append({"variant": label, "seconds": median, "GBps": nbytes / median / 1e9,
                     "vs_compiled": compiled_s / median, "iqr_fraction": spread})
        each = sorted(calls[label])
        rows[-1].update(call_median=statistics.median(each), call_mean=statistics.fmean(each),
                        call_p10=each[len(each) // 10], call_p90=each[len(each) * 9 // 10])
        rows[-1]["registers"] = registers.get(label)
        print(f"  {label:58s} {registers.get(label) or '':>3} {median * 1e6:8.1f} us "
              f"{nbytes / median / 1e9:6.0f} GB/s "
              f"{compiled_s / median:7.4f}x compiled  (IQR {spread:.2%}); a call: median "
              f"{rows[-1]['call_median'] * 1e6:.1f}, p10 {rows[-1]['call_p10'] * 1e6:.1f}, "
              f"p90 {rows[-1]['call_p90'] * 1e6:.1f} us")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"card": bench.card, "rows": rows, "calls": calls,
                       "sources": {v.label: variant_source("chain", v, packs) for v in VARIANTS}},
                      handle, indent=1)


if __name__ == "__main__":
    main()
