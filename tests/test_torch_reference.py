"""The same MLP, weights and batches in cudagrad and PyTorch give the same losses.

Runs only where torch is installed. 20 steps of SGD with momentum and of
Adam; the losses must agree within 1e-4 relative.
"""
import numpy as np
import pytest

import cudagrad as cg
import cudagrad.nn.functional as F

torch = pytest.importorskip("torch")

STEPS = 20
BATCH, FEATURES, HIDDEN, CLASSES = 16, 12, 32, 5


def make_batches():
    # Labels from a fixed linear rule, so there is something to learn and the
    # loss falls within 20 steps.
    rng = np.random.default_rng(0)
    rule = rng.normal(size=(FEATURES, CLASSES))
    batches = []
    for _ in range(STEPS):
        x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
        batches.append((x, (x @ rule).argmax(axis=1)))
    return batches


def train_cudagrad(make_optimizer, device, batches):
    cg.manual_seed(0)
    model = cg.nn.Sequential(cg.nn.Linear(FEATURES, HIDDEN, device=device), cg.nn.ReLU(),
                             cg.nn.Linear(HIDDEN, CLASSES, device=device))
    initial = model.state_dict()
    optimizer = make_optimizer(model.parameters())
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(cg.tensor(x, device=device, requires_grad=False)), y)
        loss.backward()
        cg.realize(loss, *optimizer.schedule_step())
        losses.append(loss.item())
    return initial, losses, model.state_dict()


def train_torch(make_optimizer, device, initial, batches):
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, CLASSES)).to(device)
    model.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in initial.items()})
    optimizer = make_optimizer(model.parameters())
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x).to(device)),
                                                 torch.from_numpy(y).long().to(device))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}


OPTIMIZERS = {
    "sgd-momentum": (lambda p: cg.optim.SGD(p, lr=0.1, momentum=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "adam": (lambda p: cg.optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_losses_match_pytorch(name, device):   # device: the conftest fixture
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    ours, theirs = OPTIMIZERS[name]
    batches = make_batches()
    initial, cg_losses, cg_final = train_cudagrad(ours, device, batches)
    torch_losses, torch_final = train_torch(theirs, device, initial, batches)
    np.testing.assert_allclose(cg_losses, torch_losses, rtol=1e-4)
    assert cg_losses[-1] < cg_losses[0]          # it trained at all
    for key, array in torch_final.items():
        np.testing.assert_allclose(cg_final[key], array, rtol=1e-3, atol=1e-4, err_msg=key)
