"""Time the lane kernels' launch choices on the GPU, in one run (issue 7).

    python scripts/tune_lanes.py [--json PATH] [--only chain,softmax] [--device cpu --quick]

For the elementwise chain, the full sum, row softmax and layer norm (the sizes of
`python -m cudagrad.bench gpu`), times cudagrad's kernel under each variant of
render.py's constants, and the scalar kernels of before (lower.LANES off), against the
card's copy bandwidth measured in the same run: medians of CUDA events, inputs rotated
past L2 (cudagrad.bench.gpu's Bench). Each variant is checked against numpy first.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

import cudagrad as cg
import cudagrad.codegen.lower as lower
import cudagrad.codegen.render as render
from cudagrad.bench.gpu import Bench, _rotate, kernel_workloads, relative_error
from cudagrad.bench.timing import replay_plan
from cudagrad.realization import _PLANS

WORKLOADS = ("chain", "sum", "softmax", "layer norm")
# (label, {(module, constant): value}); the first is the scalar kernels of before
VARIANTS = {
    "chain": [("scalar (before)", {(lower, "LANES"): False}),
              ("4 a thread, block 256", {(render, "ELEMENTWISE_ELEMENTS_PER_THREAD"): 4,
                                         (render, "ELEMENTWISE_BLOCK"): 256}),
              ("8 a thread, block 256", {(render, "ELEMENTWISE_BLOCK"): 256}),
              ("16 a thread, block 256", {(render, "ELEMENTWISE_ELEMENTS_PER_THREAD"): 16,
                                          (render, "ELEMENTWISE_BLOCK"): 256}),
              ("8 a thread, block 128", {(render, "ELEMENTWISE_BLOCK"): 128}),
              ("8 a thread, block 512", {}),
              ("16 a thread, block 128", {(render, "ELEMENTWISE_ELEMENTS_PER_THREAD"): 16,
                                          (render, "ELEMENTWISE_BLOCK"): 128})],
    "sum": [("as is", {})],
    "softmax": [("scalar (before)", {(lower, "LANES"): False}),
                ("cache 8 words (block 1024)", {(render, "ROW_CACHE_WORDS"): 8}),
                ("cache 16 words (block 512)", {(render, "ROW_CACHE_WORDS"): 16}),
                ("cache 32 words (block 256)", {}),
                ("no cache (re-read)", {(render, "ROW_CACHE_WORDS"): 0})],
}
VARIANTS["layer norm"] = VARIANTS["softmax"]


def _set(overrides: dict) -> dict:
    saved = {key: getattr(*key) for key in overrides}
    for (module, name), value in overrides.items():
        setattr(module, name, value)
    _PLANS.clear()                     # plans hold rendered kernels: render again
    return saved


def measure(bench: Bench, work, variants) -> list[dict]:
    first = work.make(bench.rng)
    set_bytes = sum(array.nbytes for array in first)
    count = 1 if set_bytes >= 2 * bench.l2_bytes else min(8, math.ceil(2 * bench.l2_bytes / set_bytes))
    sets = [first] + [work.make(bench.rng) for _ in range(count - 1)]
    inputs = [[cg.tensor(a, device=bench.device, requires_grad=False) for a in arrays] for arrays in sets]
    want = work.numpy(*[a.astype(np.float64) for a in first])
    rows = []
    for label, overrides in variants:
        saved = _set(overrides)
        try:
            results = [work.ours(*tensors) for tensors in inputs]
            replays = [replay_plan(result) for result in results]
            error = relative_error(results[0].numpy(), want)
            seconds = bench.seconds(_rotate([run for _, run in replays]), "cudagrad")
            launch = [step.kernel.launch for step in replays[0][0].steps]
            rows.append({"workload": work.name, "variant": label, "seconds": seconds,
                         "GBps": work.min_bytes / seconds / 1e9,
                         "of_copy": work.min_bytes / seconds / 1e9 / bench.copy_gbps,
                         "kernels": len(replays[0][0].steps), "relative_error": error,
                         "launch": str(launch)})
            del replays, results
        finally:
            _set(saved)
        bench.free()
        row = rows[-1]
        print(f"  {work.name[:28]:28s} {label:28s} {row['seconds'] * 1e6:9.1f} us "
              f"{row['GBps']:7.0f} GB/s {row['of_copy']:6.1%} err {row['relative_error']:.1e}",
              file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json")
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    args = parser.parse_args()
    bench = Bench(args.device, quick=args.quick, compile_torch=False)
    bench.measure_copy()
    bench.free()
    print(f"{bench.card}: copy {bench.copy_gbps:.0f} GB/s", file=sys.stderr, flush=True)
    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    rows = []
    for work in kernel_workloads(args.quick):
        for part in wanted:
            if part in work.name:
                rows += measure(bench, work, VARIANTS[part])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"card": bench.card, "copy_GBps": bench.copy_gbps, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
