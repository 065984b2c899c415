"""examples/train_digits.py in its short mode: it runs, the loss falls, checkpoints load."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the example needs scikit-learn (pip install cudagrad[examples])")
pytest.importorskip("tqdm", reason="the example needs tqdm (pip install cudagrad[examples])")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "train_digits.py"


def run_example(*args: str) -> str:
    # The script is run as a user would run it, from a checkout: the
    # repository root must be importable.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--no-progress", *args],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_short_run_loss_falls_and_reports_the_step(tmp_path):
    checkpoint = tmp_path / "digits.npz"
    output = run_example("--steps", "40", "--save", str(checkpoint))
    first, last = map(float, re.search(r"loss: first ([\d.]+), last ([\d.]+)", output).groups())
    assert last < 0.8 * first, output
    assert re.search(r"kernels per training step: \d+", output), output
    assert re.search(r"median step time: [\d.]+ ms", output), output
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", output).group(1))
    assert checkpoint.exists()

    # Loading the checkpoint and training 0 epochs evaluates the same weights.
    reloaded = run_example("--load", str(checkpoint), "--epochs", "0")
    assert float(re.search(r"loaded .*: test accuracy ([\d.]+)", reloaded).group(1)) == accuracy
    assert float(re.search(r"test accuracy: ([\d.]+)$", reloaded.strip()).group(1)) == accuracy


def test_the_jit_step_trains_as_the_plain_one():
    """--jit replays the captured step: the same losses as the step run as written."""
    plain = run_example("--steps", "12")
    replayed = run_example("--steps", "12", "--jit")
    losses = [tuple(map(float, re.search(r"loss: first ([\d.]+), last ([\d.]+)", output).groups()))
              for output in (plain, replayed)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5), (plain, replayed)
    accuracies = [float(re.search(r"test accuracy: ([\d.]+)", output).group(1)) for output in (plain, replayed)]
    assert accuracies[0] == pytest.approx(accuracies[1], abs=0.002)
