"""Developer check: samples from a classifier for each start (pca, gaussian, uniform) with one SGLD
budget, scored by the model itself and by a different model.

Needs the developers' ../shared folder (not shipped with the repo) and the decoded CIFAR-10 copy:

    python tools/reference_generation.py --train-npz /tmp/cifar10/cifar10_train.npz --out runs/reference

Prints a markdown table (share of samples each model classifies as the target class, samples x steps
per second) and writes a grid per start (one row per class) and compare-<model>.png (a row per start,
two samples per class, classes in order).
"""
import os
import time

import torch

from common import classifier, tool_parser  # first: it puts the repo on sys.path
from data import load_npz
import generate as G


def main():
    p = tool_parser()
    p.add_argument("--train-npz", required=True, help="decoded CIFAR-10 training set")
    p.add_argument("--model", default="vnncomp21-resnet4b", help="reference model name or train.py checkpoint")
    p.add_argument("--judge", default="vnncomp21-resnet2b", help="the different model that scores the samples")
    p.add_argument("--n-per-class", type=int, default=20, help="samples per class")
    p.add_argument("--steps", type=int, default=60, help="SGLD steps")
    p.add_argument("--step-size", type=float, default=1.0, help="eta")
    p.add_argument("--momentum", type=float, default=0.5, help="zeta")
    p.add_argument("--noise-std", type=float, default=0.01, help="sigma")
    p.add_argument("--sigma-pca", type=float, default=0.015, help="PCA start scale")
    args = p.parse_args()
    (model, tag), (judge, _) = classifier(args.model, args.shared), classifier(args.judge, args.shared)
    model.requires_grad_(False)
    train = load_npz(args.train_npz)
    os.makedirs(args.out, exist_ok=True)
    y = torch.arange(10).repeat_interleave(args.n_per_class)
    rows = []
    print("| model | start | model's accuracy on its samples | judge's accuracy | samples x steps / s |\n|---|---|---|---|---|")
    for init in G.INITS:
        fitted = None if init == "uniform" else G.fit_starts(train.images, train.labels, init, 0.95,
                                                              os.path.join("data", "generation-cache", f"ref-{init}.pt"))
        x0 = G.initial_points(init, fitted, y, (3, 32, 32), args.sigma_pca, seed=0)
        start = time.time()
        samples, trace = G.sgld(model, x0, y, args.steps, args.step_size, args.momentum, args.noise_std)
        speed = len(y) * args.steps / (time.time() - start)
        with torch.no_grad():
            judged = (judge(samples).argmax(1) == y).float().mean().item()
        G.save_grid(samples, y, os.path.join(args.out, f"samples-{tag}-{init}.png"), 10, G.CIFAR10_CLASSES)
        rows.append(torch.cat([samples[y == c][:2] for c in range(10)]))  # two per class
        print(f"| {tag} | {init} | {100 * trace[-1]['accuracy']:.1f}% | {100 * judged:.1f}% | {speed:.0f} |", flush=True)
    G.save_grid(rows, None, os.path.join(args.out, f"compare-{tag}.png"), len(rows[0]), row_labels=list(G.INITS))


if __name__ == "__main__":
    main()

