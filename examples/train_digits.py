"""Train an MLP on scikit-learn's 8x8 digits and report what one step costs.

    pip install cudagrad[examples]        # scikit-learn and tqdm
    python examples/train_digits.py                      # default device
    python examples/train_digits.py --device cpu --epochs 30 --save digits.npz
    python examples/train_digits.py --load digits.npz --epochs 0   # evaluate only

The digits ship inside scikit-learn, so nothing is downloaded. Every
training step (forward, backward and the Adam update) is one lazy graph that
realizes in one schedule; the script prints how many kernels that schedule
launches, the median step time and the test accuracy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import cudagrad as cg
import cudagrad.nn.functional as F


def load_data(seed: int):
    """Standardised features, split 80/20 with a fixed seed, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=seed, stratify=digits.target)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-6   # some corner pixels are always 0
    return ((x_train - mean) / std).astype(np.float32), y_train, ((x_test - mean) / std).astype(np.float32), y_test


def make_model(hidden: int, device: str) -> cg.nn.Module:
    return cg.nn.Sequential(cg.nn.Linear(64, hidden, device=device), cg.nn.ReLU(),
                            cg.nn.Linear(hidden, 10, device=device))


def batches(x, y, batch_size: int, rng: np.random.Generator):
    """Shuffled full batches only: a ragged last batch would change the
    shapes, so the kernels, and cost a compile every epoch."""
    order = rng.permutation(len(x))
    for start in range(0, len(x) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def accuracy(model, x, y, device: str) -> float:
    with cg.no_grad():
        logits = model(cg.tensor(x, device=device, requires_grad=False)).numpy()
    return float((logits.argmax(axis=1) == y).mean())


def train_step(model, optimizer, x_batch, y_batch, device: str) -> float:
    """One step as one schedule: the loss is realized with the update, so the
    forward pass is not computed a second time just to print it."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(cg.tensor(x_batch, device=device, requires_grad=False)), y_batch)
    loss.backward()
    cg.realize(loss, *optimizer.schedule_step())
    return loss.item()


def make_jit_step(model, optimizer):
    """The same step under cg.jit: captured on its second call, then replayed without
    building its graph. It takes tensors (labels too) and returns the loss as a tensor:
    reading it happens outside, after the call."""
    @cg.jit
    def jit_step(x, labels):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        cg.realize(loss, *optimizer.schedule_step())
        return loss

    def train_step_jit(model, optimizer, x_batch, y_batch, device: str) -> float:
        x = cg.tensor(x_batch, device=device, requires_grad=False)
        labels = cg.tensor(y_batch, dtype=cg.int32, device=device, requires_grad=False)
        return jit_step(x, labels).item()
    return train_step_jit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cg.default_device()")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (a short run)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="PATH", help="write the trained weights (.npz) here")
    parser.add_argument("--load", metavar="PATH", help="start from these weights")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar (for logs)")
    parser.add_argument("--jit", action="store_true", help="replay the captured step (cg.jit)")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    device = args.device or cg.default_device()
    cg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = make_model(args.hidden, device)
    if args.load:
        model.load_state_dict(cg.load(args.load))
        print(f"loaded {args.load}: test accuracy {accuracy(model, x_test, y_test, device):.4f}")
    optimizer = cg.optim.Adam(model.parameters(), lr=args.lr)
    step = make_jit_step(model, optimizer) if args.jit else train_step

    steps_per_epoch = len(x_train) // args.batch_size
    total_steps = args.epochs * steps_per_epoch
    if args.steps is not None:
        total_steps = min(total_steps, args.steps)
    print(f"device {device}: {len(x_train)} train / {len(x_test)} test samples, "
          f"{total_steps} steps of batch {args.batch_size}")

    losses, step_seconds, step_kernels = [], [], []
    progress = tqdm(total=total_steps, disable=args.no_progress, file=sys.stdout, unit="step")
    while len(losses) < total_steps:
        for x_batch, y_batch in batches(x_train, y_train, args.batch_size, rng):
            if len(losses) == total_steps:
                break
            launched_before = cg.stats()["kernels_launched"]
            started = time.perf_counter()
            losses.append(step(model, optimizer, x_batch, y_batch, device))
            step_seconds.append(time.perf_counter() - started)
            step_kernels.append(cg.stats()["kernels_launched"] - launched_before)
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
    progress.close()

    if losses:
        # The first steps compile their kernels; the steady state is what a
        # long run costs, so report medians.
        print(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f}")
        print(f"kernels per training step: {int(statistics.median(step_kernels))} "
              f"(first step {step_kernels[0]})")
        print(f"median step time: {statistics.median(step_seconds) * 1e3:.3f} ms "
              f"(first step {step_seconds[0] * 1e3:.1f} ms)")
    print(f"test accuracy: {accuracy(model, x_test, y_test, device):.4f}")
    if args.save:
        cg.save(model.state_dict(), args.save)
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
