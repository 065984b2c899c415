"""Redraw the pictures in docs/images/ (needs Graphviz's `dot`).

    python scripts/doc_pictures.py [--format png] [--out DIR]

Each picture is drawn from the same code the guide shows, on the cpu device.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("CUDAGRAD_DEVICE", "cpu")

import cudagrad as cg  # noqa: E402

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
SUFFIX = ".svg"


def seed() -> None:
    a = cg.tensor([2, 2], [2.0, 3.0, 4.0, 5.0])
    b = cg.tensor([2, 2], [6.0, 7.0, 8.0, 9.0])
    c = cg.tensor([2, 2], [10.0, 10.0, 10.0, 10.0])
    d = cg.tensor([2, 2], [11.0, 11.0, 11.0, 11.0])
    e = ((a @ b) + c) * d
    f = e.sum()
    f.backward()
    cg.draw(f, IMAGES / f"seed-forward{SUFFIX}", names={"a": a, "b": b, "c": c, "d": d, "f": f})
    cg.draw_many([f, a.grad_tensor, b.grad_tensor], IMAGES / f"seed{SUFFIX}",
                 names={"a": a, "b": b, "c": c, "d": d, "f": f})


def softmax() -> None:
    x = cg.randn([64, 10], requires_grad=False)
    cg.draw(x.softmax(axis=1), IMAGES / f"softmax{SUFFIX}", names={"x": x})


def mlp_step() -> None:
    cg.manual_seed(0)
    model = cg.nn.Sequential(cg.nn.Linear(16, 32), cg.nn.ReLU(), cg.nn.Linear(32, 10))
    optimizer = cg.optim.SGD(model.parameters(), lr=0.1)
    x = cg.randn([64, 16], requires_grad=False)
    labels = [i % 10 for i in range(64)]
    loss = cg.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    updates = optimizer.schedule_step()
    names = {"x": x, "loss": loss, **dict(model.named_parameters())}
    cg.draw_many([loss, *updates], IMAGES / f"mlp-step{SUFFIX}", names=names)


def main() -> int:
    import argparse
    global IMAGES, SUFFIX
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--format", default="svg", choices=["svg", "png", "dot"])
    parser.add_argument("--out", type=Path, default=IMAGES)
    options = parser.parse_args()
    IMAGES, SUFFIX = options.out, "." + options.format
    IMAGES.mkdir(parents=True, exist_ok=True)
    seed()
    softmax()
    mlp_step()
    print(f"wrote {', '.join(sorted(p.name for p in IMAGES.glob('*' + SUFFIX)))} in {IMAGES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
