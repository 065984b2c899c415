"""The seed's tiny-op workloads on the cpu device: Python overhead end to end.

Realized rows read the result, so the kernels really run; lazy rows only build
the graph (cudagrad computes nothing there, while the reference does its work
eagerly: they show what graph building costs, not a like-for-like race).
Timed as `python -m timeit` does: the mean of a loop, with the garbage collector
off; each figure is the median of several such loops.
"""
from __future__ import annotations

import statistics
import timeit

import cudagrad as cg

A, B = [2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0]


def per_call_seconds(function, quick: bool) -> float:
    timer = timeit.Timer(function)
    if quick:
        number, repeats = 50, 3
    else:
        number, _ = timer.autorange()      # loops of at least 0.2 s (also the warm-up)
        repeats = 9
    timer.timeit(number)
    return statistics.median(total / number for total in timer.repeat(repeats, number))


def cudagrad_workloads() -> dict:
    def matmul_data():
        a = cg.tensor([2, 2], A, device="cpu")
        b = cg.tensor([2, 2], B, device="cpu")
        c = a @ b
        c.data

    def backward_grads():
        a = cg.tensor([2, 2], A, device="cpu")
        b = cg.tensor([2, 2], B, device="cpu")
        c = a @ b
        d = c.sum()
        d.backward()
        a.grad
        b.grad

    def matmul_lazy():
        a = cg.tensor([2, 2], A, device="cpu")
        b = cg.tensor([2, 2], B, device="cpu")
        a @ b

    def backward_lazy():
        a = cg.tensor([2, 2], A, device="cpu")
        b = cg.tensor([2, 2], B, device="cpu")
        (a @ b).sum().backward()
    return {"matmul": matmul_data, "backward": backward_grads, "matmul_lazy": matmul_lazy,
            "backward_lazy": backward_lazy}


def torch_workloads(torch) -> dict:
    rows_a, rows_b = [A[:2], A[2:]], [B[:2], B[2:]]

    def matmul_data():
        a = torch.tensor(rows_a, requires_grad=True)
        b = torch.tensor(rows_b, requires_grad=True)
        c = a @ b
        c.tolist()

    def backward_grads():
        a = torch.tensor(rows_a, requires_grad=True)
        b = torch.tensor(rows_b, requires_grad=True)
        c = a @ b
        d = c.sum()
        d.backward()
        a.grad.tolist()
        b.grad.tolist()

    def matmul_eager():
        a = torch.tensor(rows_a, requires_grad=True)
        b = torch.tensor(rows_b, requires_grad=True)
        a @ b

    def backward_eager():
        a = torch.tensor(rows_a, requires_grad=True)
        b = torch.tensor(rows_b, requires_grad=True)
        (a @ b).sum().backward()
    return {"matmul": matmul_data, "backward": backward_grads, "matmul_lazy": matmul_eager,
            "backward_lazy": backward_eager}


def numpy_workloads() -> dict:
    import numpy as np

    def matmul_data():
        a = np.array(A, dtype=np.float32).reshape(2, 2)
        b = np.array(B, dtype=np.float32).reshape(2, 2)
        (a @ b).tolist()

    def backward_grads():        # by hand: d sum(a @ b) / da = 1 @ b.T, / db = a.T @ 1
        a = np.array(A, dtype=np.float32).reshape(2, 2)
        b = np.array(B, dtype=np.float32).reshape(2, 2)
        ones = np.ones((2, 2), dtype=np.float32)
        (ones @ b.T).tolist()
        (a.T @ ones).tolist()

    def matmul_eager():
        a = np.array(A, dtype=np.float32).reshape(2, 2)
        b = np.array(B, dtype=np.float32).reshape(2, 2)
        a @ b

    def backward_eager():
        a = np.array(A, dtype=np.float32).reshape(2, 2)
        b = np.array(B, dtype=np.float32).reshape(2, 2)
        ones = np.ones((2, 2), dtype=np.float32)
        ones @ b.T, a.T @ ones
    return {"matmul": matmul_data, "backward": backward_grads, "matmul_lazy": matmul_eager,
            "backward_lazy": backward_eager}


ROWS = (
    ("matmul", "2x2 matmul, result read (c = a @ b; c.data)", 2.0, False),
    ("backward", "2x2 matmul backward, both grads read", 4.0, False),
    ("matmul_lazy", "2x2 matmul, lazy: graph built, nothing computed", None, True),
    ("backward_lazy", "2x2 matmul backward, lazy: gradient graph built, nothing computed", None,
     True),
)


def run(quick: bool = False) -> dict:
    try:
        import torch
        reference, theirs = f"PyTorch {torch.__version__}", torch_workloads(torch)
    except ImportError:
        import numpy as np
        reference, theirs = f"numpy {np.__version__}", numpy_workloads()
    ours = cudagrad_workloads()
    for function in ours.values():        # compile and plan before timing
        function()
    rows = []
    for key, name, target, lazy in ROWS:
        row = {"name": name, "cudagrad_s": per_call_seconds(ours[key], quick),
               "reference_s": per_call_seconds(theirs[key], quick), "lazy": lazy}
        if target is not None:
            row["target_speedup"] = target
        if lazy:
            row["note"] = "cudagrad builds the graph only; the reference computes eagerly"
        rows.append(row)
    return {"reference": reference, "rows": rows}
