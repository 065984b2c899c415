"""cg.optim: SGD and Adam against numpy, in-place updates, kernels per step."""
import math

import numpy as np
import pytest

import cudagrad as cg
import cudagrad.nn.functional as F

# `device` is the fixture of conftest.py: cpu, and cuda where a GPU is usable.

# The toy loss 0.5 * sum(p^2) + sum(c * p) has gradient p + c, so the numpy
# reference needs no autograd of its own.
START = np.random.default_rng(0).normal(size=(3, 4))
C = np.random.default_rng(1).normal(size=(3, 4))


def run_optimizer(make_optimizer, device, steps=5):
    """The parameter's value after each of `steps` steps."""
    param = cg.tensor(START.copy(), dtype=cg.float64, device=device)
    c = cg.tensor(C, dtype=cg.float64, device=device, requires_grad=False)
    optimizer = make_optimizer([param])
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (param * param).sum() * 0.5 + (param * c).sum()
        loss.backward()
        optimizer.step()
        history.append(param.numpy().copy())
    return history


def numpy_sgd(lr, momentum=0.0, weight_decay=0.0, nesterov=False, steps=5):
    p, buf, history = START.copy(), None, []
    for _ in range(steps):
        g = p + C + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        history.append(p.copy())
    return history


def numpy_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, steps=5):
    p, m, v, history = START.copy(), np.zeros_like(START), np.zeros_like(START), []
    for t in range(1, steps + 1):
        g = p + C + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        step_size = lr / (1 - betas[0] ** t)
        p = p - step_size * m / (np.sqrt(v) / math.sqrt(1 - betas[1] ** t) + eps)
        history.append(p.copy())
    return history


@pytest.mark.parametrize("settings", [dict(lr=0.1), dict(lr=0.1, momentum=0.9),
                                      dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)])
def test_sgd_matches_numpy(device, settings):
    ours = run_optimizer(lambda params: cg.optim.SGD(params, **settings), device)
    for step, (got, expected) in enumerate(zip(ours, numpy_sgd(**settings))):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("settings", [dict(lr=0.1), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)])
def test_adam_matches_numpy(device, settings):
    ours = run_optimizer(lambda params: cg.optim.Adam(params, **settings), device, steps=6)
    for step, (got, expected) in enumerate(zip(ours, numpy_adam(steps=6, **settings))):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("optimizer_class", [cg.optim.SGD, cg.optim.Adam])
def test_step_updates_parameters_in_place_and_keeps_the_old_gradient(optimizer_class):
    param = cg.tensor(START.copy(), dtype=cg.float64, device="cpu")
    unused = cg.tensor(np.ones(2), dtype=cg.float64, device="cpu")
    c = cg.tensor(C, dtype=cg.float64, device="cpu", requires_grad=False)
    optimizer = optimizer_class([param, unused], lr=0.1)
    ((param * param).sum() * 0.5 + (param * c).sum()).backward()
    optimizer.step()
    assert not np.allclose(param.numpy(), START)
    assert param.is_leaf and param.requires_grad
    # The gradient is the one of the step just taken (at the old values), even
    # though it is read after the parameter was overwritten.
    np.testing.assert_allclose(np.reshape(param.grad, (3, 4)), START + C, rtol=1e-12)
    np.testing.assert_array_equal(unused.numpy(), np.ones(2))   # no gradient: left alone


def test_optimizer_rejects_bad_parameters():
    with pytest.raises(ValueError, match="empty"):
        cg.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="SGD"):
        cg.optim.SGD([np.zeros(3)], lr=0.1)
    leaf = cg.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="Adam.*leaf"):
        cg.optim.Adam([leaf * 2])


# --- one fused step ----------------------------------------------------------------

def mlp_step_kernels(make_optimizer, device):
    """Kernels launched by one steady-state `loss.backward(); opt.step()` of a 2-layer MLP."""
    cg.manual_seed(0)
    model = cg.nn.Sequential(cg.nn.Linear(16, 32, device=device), cg.nn.ReLU(), cg.nn.Linear(32, 4, device=device))
    optimizer = make_optimizer(model.parameters())
    rng = np.random.default_rng(0)

    def one_step():
        x = cg.tensor(rng.normal(size=(8, 16)).astype(np.float32), device=device, requires_grad=False)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), rng.integers(0, 4, size=8))
        before = dict(cg.stats())
        loss.backward()
        optimizer.step()
        after = cg.stats()
        return {name: after[name] - before[name] for name in ("kernels_launched", "kernels_compiled")}

    one_step()                        # compiles
    one_step()
    return one_step()


# One step (loss.backward(); opt.step()) of the 2-layer MLP with cross-entropy is
# 11 kernels with either optimizer: forward (2 matmuls with fused bias epilogues,
# relu, log-softmax, the loss), backward (the softmax gradient, 3 gradient
# matmuls, 2 bias reductions), and the updates, which run in the epilogues of the
# kernels that made each gradient (multi-output kernels: Adam's two moments and the
# parameter are written by one kernel; a weight's gradient is computed in the
# weight's own layout, (x^T g)^T = g^T x, so its update fuses too).
KERNELS_SGD_STEP = 11
KERNELS_ADAM_STEP = 11


def test_mlp_sgd_step_is_a_few_fused_kernels_and_compiles_nothing_new(device):
    counts = mlp_step_kernels(lambda params: cg.optim.SGD(params, lr=0.1, momentum=0.9), device)
    print(f"{device}: SGD-momentum step: {counts}")
    assert counts["kernels_launched"] == KERNELS_SGD_STEP, counts
    assert counts["kernels_compiled"] == 0, counts


def test_mlp_adam_step_is_a_few_fused_kernels_and_compiles_nothing_new(device):
    # The bias corrections change every step; they travel as data, so the
    # kernel source, hence the compiled kernels, stay the same.
    counts = mlp_step_kernels(lambda params: cg.optim.Adam(params, lr=1e-3), device)
    print(f"{device}: Adam step: {counts}")
    assert counts["kernels_launched"] == KERNELS_ADAM_STEP, counts
    assert counts["kernels_compiled"] == 0, counts
