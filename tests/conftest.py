"""Shared helpers: the repo root on sys.path, tiny models, and tiny training runs."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402

# A training run small enough for a unit test: width-4 ResNet-18, 2 epochs, K = 2, synthetic data.
TINY_RUN = ["--dataset", "synthetic", "--width", "4", "--epochs", "2", "--steps", "2", "--batch-size", "100",
            "--val-size", "100", "--eval-examples", "50", "--device", "cpu"]


def tiny_train_args(out_dir, *extra):
    """Parsed and resolved train.py arguments for a tiny run in out_dir."""
    return train.resolve_args(train.build_parser().parse_args(TINY_RUN + ["--out-dir", str(out_dir), *extra]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
