"""A first look at GPU kernel speed against PyTorch (the full runner is cudagrad.bench)."""
import numpy as np
import torch

import cudagrad as cg
from cudagrad.bench.timing import median_seconds, replay_plan
from cudagrad.device import get_device

device = get_device("cuda")
sync = device.synchronize
print(device.device_name)
torch.backends.cuda.matmul.allow_tf32 = False


def torch_time(fn):
    torch.cuda.synchronize()
    return median_seconds(fn, torch.cuda.synchronize)


rng = np.random.default_rng(0)
for n in (1024, 4096):
    a_np = rng.standard_normal((n, n)).astype(np.float32)
    b_np = rng.standard_normal((n, n)).astype(np.float32)
    a, b = cg.tensor(a_np, device="cuda"), cg.tensor(b_np, device="cuda")
    out = a @ b
    plan, run = replay_plan(out)
    t = median_seconds(run, sync)
    ta, tb = torch.from_numpy(a_np).cuda(), torch.from_numpy(b_np).cuda()
    tt = torch_time(lambda: ta @ tb)
    err = np.abs(out.numpy() - (ta @ tb).cpu().numpy()).max()
    print(f"matmul {n}: cudagrad {2*n**3/t/1e12:.1f} TFLOP/s, torch {2*n**3/tt/1e12:.1f} TFLOP/s, max err {err:.2e}")

n = 1 << 26
x_np, y_np, z_np = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
x, y, z = (cg.tensor(v, device="cuda") for v in (x_np, y_np, z_np))
chain = ((x * y + z) * 0.5 - y / (z.abs() + 1) + (-x.abs()).exp()).relu() * 1.5
plan, run = replay_plan(chain)
t = median_seconds(run, sync)
print(f"chain 2^26: {len(plan.steps)} kernel(s), {4*4*n/t/1e12:.2f} TB/s")
s = x.sum()
plan, run = replay_plan(s)
t = median_seconds(run, sync)
tx = torch.from_numpy(x_np).cuda()
print(f"sum 2^26: {4*n/t/1e12:.3f} TB/s (torch {4*n/torch_time(lambda: tx.sum())/1e12:.3f}); value err {abs(s.item()-x_np.astype(np.float64).sum()):.3g}")
m = cg.tensor(rng.standard_normal((8192, 8192)).astype(np.float32), device="cuda")
sm = m.softmax(-1)
plan, run = replay_plan(sm)
t = median_seconds(run, sync)
print(f"softmax 8192^2: {len(plan.steps)} kernels, {2*4*8192*8192/t/1e12:.2f} TB/s")
