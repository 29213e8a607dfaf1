"""Developer figure: samples of several generate.py runs side by side, one row per run, one sample per
class (the first of each), the class names above the columns; 900 px wide, every label 10 pt at 100 dpi.

    python tools/generation_figure.py --runs runs/reference/gen-samplers-trades-s0/SGLD-no_momentum \\
        runs/reference/gen-samplers-cpu-w16-10k-natural/SGLD-no_momentum --labels "TRADES,natural" \\
        --out docs/generation-models.png
"""
import argparse
import os

import torch

from common import tool_parser  # first: it puts the repo on sys.path
from data import load_npz
from generate import CIFAR10_CLASSES

FIGURE_WIDTH_IN, FIGURE_DPI, FONT_PT = 9.0, 100, 10  # 900 px, a docs page's width: the labels show at 10 pt
GAP = 2  # white pixels between the samples of the grid


def first_per_class(folder: str) -> torch.Tensor:
    """The first sample of each class of a generate.py run folder, in class order, as floats in [0, 1]."""
    samples = load_npz(os.path.join(folder, "samples.npz"))
    return torch.stack([samples.images[samples.labels == c][0] for c in samples.labels.unique()]).float() / 255


def grid(rows: list) -> torch.Tensor:
    """One (H, W, 3) image of the rows of samples (each (classes, 3, h, w)), GAP white pixels between them."""
    n, _, h, w = rows[0].shape
    out = torch.ones(len(rows) * (h + GAP) - GAP, n * (w + GAP) - GAP, 3)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            out[r * (h + GAP):r * (h + GAP) + h, c * (w + GAP):c * (w + GAP) + w] = image.permute(1, 2, 0).clamp(0, 1)
    return out


def draw(rows: list, labels: list, path: str, class_names=CIFAR10_CLASSES) -> None:
    """The figure: the grid of `rows`, each row labelled on the left, the class names on top; the grid fills
    the width the row labels leave."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    image, (n, _, h, w) = grid(rows), rows[0].shape
    width_px, pad_px, top_px = FIGURE_WIDTH_IN * FIGURE_DPI, 8, 2.2 * FONT_PT * FIGURE_DPI / 72
    fig = plt.figure(figsize=(FIGURE_WIDTH_IN, 1), dpi=FIGURE_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image.numpy(), interpolation="nearest", aspect="auto")
    ax.set_yticks([r * (h + GAP) + h / 2 for r in range(len(rows))], labels, fontsize=FONT_PT)
    ax.set_xticks([c * (w + GAP) + w / 2 for c in range(n)], list(class_names)[:n], fontsize=FONT_PT)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    renderer = fig.canvas.get_renderer()
    label_px = max(t.get_window_extent(renderer).width for t in ax.get_yticklabels()) + 2 * pad_px
    grid_w = width_px - label_px - pad_px
    grid_h = grid_w * image.shape[0] / image.shape[1]
    height_px = grid_h + top_px + pad_px
    fig.set_size_inches(FIGURE_WIDTH_IN, height_px / FIGURE_DPI)
    ax.set_position((label_px / width_px, pad_px / height_px, grid_w / width_px, grid_h / height_px))
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


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
    draw([first_per_class(folder) for folder in args.runs], labels, args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
