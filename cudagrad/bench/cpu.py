"""CPU kernels against numpy, in the same process.

cudagrad's figures replay the planned kernels (no graph building, see
timing.replay_plan): the kernels' speed, as a training loop's steady state sees
it. numpy runs the same expression its own way: one pass over memory per op.
"""
from __future__ import annotations

import numpy as np

import cudagrad as cg
from cudagrad.bench.timing import median_seconds, replay_plan
from cudagrad.device import get_device


def _chain_numpy(x, y, z):
    return np.maximum((x * y + z) * 0.5 - y / (z + 2.0), 0.0) * 1.5 + x


def _chain(x, y, z):
    """8 elementwise ops over 3 inputs: mul, add, mul, add, div, sub, relu, mul (+ x: 9 reads)."""
    return ((x * y + z) * 0.5 - y / (z + 2.0)).relu() * 1.5 + x


def _softmax_numpy(m):
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _row(name, result, expected, reference_function, target, quick, note=""):
    plan, replay = replay_plan(result)
    repeats = 3 if quick else 15
    ours_s = median_seconds(replay, lambda: None, warmup=1 if quick else 3, repeats=repeats,
                            min_seconds=0.0 if quick else 0.5)
    reference_s = median_seconds(reference_function, lambda: None, warmup=1 if quick else 3,
                                 repeats=repeats, min_seconds=0.0 if quick else 0.5)
    error = float(np.max(np.abs(result.numpy() - expected))) if expected.size else 0.0
    kernels = len(plan.steps)
    row = {"name": name, "cudagrad_s": ours_s, "reference_s": reference_s,
           "target_speedup": target, "kernels": kernels, "max_abs_error": error}
    row["note"] = f"{kernels} kernel{'s' if kernels != 1 else ''}, max abs error {error:.2g}" + (
        f"; {note}" if note else "")
    return row


def run(quick: bool = False) -> dict:
    get_device("cpu")
    rng = np.random.default_rng(0)
    rows = []

    n = 1 << (16 if quick else 24)
    x_np, y_np, z_np = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    z_np = np.abs(z_np)              # z + 2 stays away from 0
    x, y, z = (cg.tensor(v, device="cpu", requires_grad=False) for v in (x_np, y_np, z_np))
    rows.append(_row(f"8-op elementwise chain, 3 inputs of {n} float32",
                     _chain(x, y, z), _chain_numpy(x_np, y_np, z_np),
                     lambda: _chain_numpy(x_np, y_np, z_np), 3.0, quick,
                     "numpy makes a pass (and a temporary) per op"))

    side = 256 if quick else 4096
    m_np = rng.standard_normal((side, side), dtype=np.float32)
    m = cg.tensor(m_np, device="cpu", requires_grad=False)
    rows.append(_row(f"row softmax {side}x{side} float32", m.softmax(-1),
                     _softmax_numpy(m_np), lambda: _softmax_numpy(m_np), 2.0, quick))

    size = 128 if quick else 1024
    a_np = rng.standard_normal((size, size), dtype=np.float32)
    b_np = rng.standard_normal((size, size), dtype=np.float32)
    a, b = (cg.tensor(v, device="cpu", requires_grad=False) for v in (a_np, b_np))
    rows.append(_row(f"matmul float32 {size}x{size}x{size}", a @ b, a_np @ b_np,
                     lambda: a_np @ b_np, 0.5, quick, "numpy calls its BLAS"))
    return {"reference": f"numpy {np.__version__}", "rows": rows}
