"""The fusion table: how many kernels canonical graphs take.

Printed by `python -m cudagrad.bench gpu` and pinned by tests/test_fusion_table.py.
Single-result graphs are counted without running them (`len(t.kernels())`);
training steps are counted as launched, on the second step (the steady state:
the first may differ, e.g. where no optimizer state exists yet).
"""
from __future__ import annotations

import numpy as np

import cudagrad as cg
import cudagrad.nn.functional as F

# Sizes are fixed: a reduction's kernel count may depend on its size (a long
# full reduction splits into partial and total sums), so the table names them.
ROWS, COLS = 256, 512
BATCH, IN, HIDDEN, OUT = 64, 128, 256, 10


def _tensor(rng, shape, device, requires_grad=False):
    return cg.tensor(rng.standard_normal(shape).astype(np.float32), device=device,
                     requires_grad=requires_grad)


def layer_norm(x, gamma, beta, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis."""
    mean = x.mean(axis=-1, keepdim=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdim=True)
    return centered / (variance + eps).sqrt() * gamma + beta


def elementwise_chain(x, y, z):
    """The issue's 3-input chain (works on cudagrad and torch tensors alike)."""
    return ((x * y + z) * 0.5 - y / (z.abs() + 1) + (-x.abs()).exp()).relu() * 1.5


def relu_mlp(widths: list[int], device: str) -> cg.nn.Sequential:
    """Linear layers of the given widths with a ReLU between every two (the benchmarks'
    model, on cudagrad)."""
    layers: list = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(cg.nn.Linear(fan_in, fan_out, device=device))
        if index < len(widths) - 2:
            layers.append(cg.nn.ReLU())
    return cg.nn.Sequential(*layers)


def _launched_by(function) -> int:
    before = cg.stats()["kernels_launched"]
    function()
    return cg.stats()["kernels_launched"] - before


def _mlp_step_kernels(device: str, optimizer: str, rng) -> int:
    """Kernels one steady-state training step of a 2-layer MLP launches:
    forward, loss, backward and the optimizer update, realized together."""
    model = cg.nn.Sequential(cg.nn.Linear(IN, HIDDEN, device=device), cg.nn.ReLU(),
                             cg.nn.Linear(HIDDEN, OUT, device=device))
    x = _tensor(rng, (BATCH, IN), device)
    opt: cg.optim.Optimizer
    if optimizer == "sgd":
        opt = cg.optim.SGD(model.parameters(), lr=0.01)
        target = _tensor(rng, (BATCH, OUT), device)

        def loss_of():
            return F.mse_loss(model(x), target)
    else:
        opt = cg.optim.Adam(model.parameters(), lr=1e-3)
        labels = rng.integers(0, OUT, BATCH)

        def loss_of():
            return F.cross_entropy(model(x), labels)

    def step():
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        cg.realize(loss, *opt.schedule_step())
    step()
    return _launched_by(step)


def _adam_update_kernels(device: str, rng) -> int:
    """The Adam update alone, of a 2-layer MLP's four parameters whose gradients
    are already computed (realized before the step is scheduled)."""
    model = cg.nn.Sequential(cg.nn.Linear(IN, HIDDEN, device=device), cg.nn.ReLU(),
                             cg.nn.Linear(HIDDEN, OUT, device=device))
    opt = cg.optim.Adam(model.parameters(), lr=1e-3)
    x = _tensor(rng, (BATCH, IN), device)
    counts = []
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        cg.realize(*[param.grad_tensor for param in model.parameters() if param.grad_tensor is not None])
        written = opt.schedule_step()
        counts.append(_launched_by(lambda: cg.realize(*written)))
    return counts[-1]


def fusion_table(device: str = "cpu") -> list[dict]:
    """[{"graph", "kernels", "ideal"}]: the kernels each canonical graph takes on
    device, and the count the design aims at (None: no single figure)."""
    rng = np.random.default_rng(0)
    x = _tensor(rng, (ROWS, COLS), device)
    gamma, beta = _tensor(rng, (COLS,), device), _tensor(rng, (COLS,), device)
    a, b, c = (_tensor(rng, (ROWS, COLS), device) for _ in range(3))
    weight, bias = _tensor(rng, (COLS, ROWS), device), _tensor(rng, (ROWS,), device)
    rows = [
        (f"elementwise chain, 3 inputs of {ROWS}x{COLS}", len(elementwise_chain(a, b, c).kernels()), 1),
        (f"row softmax {ROWS}x{COLS}", len(x.softmax(-1).kernels()), 1),
        (f"layer norm {ROWS}x{COLS}", len(layer_norm(x, gamma, beta).kernels()), 1),
        (f"matmul + bias + relu {ROWS}x{COLS} @ {COLS}x{ROWS}",
         len((x @ weight + bias).relu().kernels()), 1),
        (f"2-layer MLP {IN}-{HIDDEN}-{OUT}, batch {BATCH}: forward + MSE + backward + SGD step",
         _mlp_step_kernels(device, "sgd", rng), None),
        (f"2-layer MLP {IN}-{HIDDEN}-{OUT}, batch {BATCH}: forward + cross-entropy + backward + Adam step",
         _mlp_step_kernels(device, "adam", rng), None),
        ("Adam update of that MLP's 4 parameters, gradients already computed",
         _adam_update_kernels(device, rng), None),
    ]
    return [{"graph": graph, "kernels": kernels, "ideal": ideal} for graph, kernels, ideal in rows]


def render(table: list[dict]) -> str:
    width = max(len(row["graph"]) for row in table)
    lines = [f"| {'graph'.ljust(width)} | kernels | aim |", f"| {'-' * width} | ------- | --- |"]
    for row in table:
        ideal = "-" if row["ideal"] is None else str(row["ideal"])
        lines.append(f"| {row['graph'].ljust(width)} | {str(row['kernels']).rjust(7)} | {ideal.rjust(3)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(fusion_table()))
