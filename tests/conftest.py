"""Shared helpers: the repo root on sys.path, tiny models, and tiny training runs."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402

# Subprocesses get this long before a test gives up on them: a guard against a hang, never a speed check (the
# suite times nothing; under load a smoke run took 300 s where it takes 30 s on a quiet machine).
HANG_TIMEOUT = 3600

# A training run small enough for a unit test: width-4 ResNet-18, 2 epochs, K = 2, synthetic data.
TINY_RUN = ["--dataset", "synthetic", "--width", "4", "--epochs", "2", "--steps", "2", "--batch-size", "100",
            "--val-size", "100", "--eval-examples", "50", "--device", "cpu"]


def tiny_train_args(out_dir, *extra):
    """Parsed and resolved train.py arguments for a tiny run in out_dir."""
    return train.resolve_args(train.build_parser().parse_args(TINY_RUN + ["--out-dir", str(out_dir), *extra]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_model():
    """A small convnet trained for a few seconds (plain CE) on the synthetic set, in eval mode, and its
    test images: a model whose attacks have something to do."""
    from data import synthetic_split
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    train_split = synthetic_split(600, seed=1)
    x, y = train_split.images.float() / 255, train_split.labels
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(15):
        for xb, yb in zip(x.split(100), y.split(100)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            optimizer.step()
    test_split = synthetic_split(200, seed=2)
    return net.eval(), test_split.images.float() / 255, test_split.labels


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A finished tiny TRADES run (train.py on synthetic data): its folder, with best.pt and log.jsonl."""
    out = tmp_path_factory.mktemp("smoke-run")
    train.run(tiny_train_args(out, "--weat", "adv"))
    return out


def help_entries(parser) -> dict:
    """Each option's help text, by its first flag, as one line."""
    entries = {}
    for line in parser.format_help().split("options:")[1].splitlines():
        if line.startswith("  -"):
            flag, _, text = line.strip().partition(" ")
            entries[flag.rstrip(",")] = text
        elif line.strip():
            entries[flag.rstrip(",")] += " " + line.strip()
    return entries
