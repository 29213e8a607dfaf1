"""Developer figure: samples of several generate.py runs side by side, one row per run, one sample per
class (the first of each), the class names above the columns.

    python tools/generation_figure.py --runs runs/reference/gen-samplers-trades-s0/SGLD-no_momentum \
        runs/reference/gen-samplers-cpu-w16-10k-natural/SGLD-no_momentum --labels "TRADES,natural" \
        --out docs/generation-models.png
"""
import argparse
import os

import torch

from common import tool_parser  # first: it puts the repo on sys.path
from data import load_npz
from generate import CIFAR10_CLASSES, save_grid


def first_per_class(folder: str) -> torch.Tensor:
    """The first sample of each class of a generate.py run folder, in class order, as floats in [0, 1]."""
    samples = load_npz(os.path.join(folder, "samples.npz"))
    return torch.stack([samples.images[samples.labels == c][0] for c in samples.labels.unique()]).float() / 255


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    p = tool_parser(models=False, description=__doc__)
    p.add_argument("--runs", nargs="+", required=True, help="generate.py run folders (each holding samples.npz)")
    p.add_argument("--labels", required=True, help="comma-separated, one row label per run")
    return p


def main(argv=None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    labels = args.labels.split(",")
    if len(labels) != len(args.runs):
        p.error(f"--labels names {len(labels)} rows for {len(args.runs)} runs")
    rows = [first_per_class(folder) for folder in args.runs]
    save_grid(rows, None, args.out, len(rows[0]), CIFAR10_CLASSES, row_labels=labels)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
