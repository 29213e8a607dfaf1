"""Developer check: generate.py on a reference model (or a train.py checkpoint), with its samples scored
by the model itself and by a different model (the judge).

Needs the developers' reference models (not shipped with the repo) and the decoded CIFAR-10 copy. The
flags after `--` go to generate.py unchanged (a preset, --compare-samplers, a sweep ...); the reference
model stands in for --ckpt, so the outputs are exactly generate.py's:

    python tools/reference_generation.py --train-npz data/cifar10/cifar10_train.npz --out runs/gen-paper
    python tools/reference_generation.py --train-npz data/cifar10/cifar10_train.npz --out runs/gen-samplers \
        -- --compare-samplers --n-per-class 50

Prints, and with --results writes (with provenance, for tools/report.py), per run: the generating
model's accuracy on its samples, the judge's, and the within-class diversity (mean pixel L2 between
same-class samples, and that of the training images), with the run's generate.py settings.
"""
import argparse
import json
import os

import numpy as np
import torch

from common import classifier, tool_parser  # first: it puts the repo on sys.path
import generate as G
import metrics
from data import load_npz
from models import provenance, write_json

SETTINGS = ("preset", "steps", "eta", "zeta", "noise_std", "sigma_pca", "retained_variance", "n_per_class", "init")


def main():
    p = tool_parser()
    p.add_argument("--train-npz", required=True, help="decoded CIFAR-10 training set")
    p.add_argument("--model", default="vnncomp21-resnet4b", help="reference model name or train.py checkpoint")
    p.add_argument("--judge", default="vnncomp21-resnet2b", help="the different model that scores the samples")
    p.add_argument("--results", default=None, help="also write every run's scores here, with provenance")
    p.add_argument("generate_flags", nargs=argparse.REMAINDER, help="-- then generate.py's flags")
    args = p.parse_args()
    (model, tag), (judge, judge_tag) = classifier(args.model, args.shared), classifier(args.judge, args.shared)
    info = {"args": {"dataset": "npz", "train_npz": args.train_npz}, "model_config": {"num_classes": 10},
            "source": tag, "file": args.train_npz}
    G.load_classifier = lambda *_, **__: (model, info)  # the reference model in place of --ckpt
    flags = [f for f in args.generate_flags if f != "--"]
    G.main(["--ckpt", tag, "--train-npz", args.train_npz, "--out", args.out, *flags])
    train = load_npz(args.train_npz)
    reference = metrics.diversity(train.images, train.labels)
    print(f"\n| generator | run | its accuracy on its samples | judge ({judge_tag}) accuracy | pixel L2 diversity "
          f"(training images: {reference:.2f}) |\n|---|---|---|---|---|")
    with open(os.path.join(args.out, "args.json")) as f:  # generate.py writes its settings once, at the top
        settings = json.load(f)
    folders = sorted({os.path.dirname(path) for path in glob_samples(args.out)})
    runs = []
    for folder in folders:
        samples = load_npz(os.path.join(folder, "samples.npz"))
        x = samples.images.float() / 255

        @torch.no_grad()
        def accuracy(net) -> float:
            return np.mean([(net(b).argmax(1) == yb).float().mean().item() for b, yb in zip(x.split(500), samples.labels.split(500))])
        own, judged = accuracy(model), accuracy(judge)
        runs.append({"run": os.path.relpath(folder, args.out), "samples": len(samples.labels), "own_accuracy": float(own),
                     "judge_accuracy": float(judged), "pixel_l2_diversity": metrics.diversity(samples.images, samples.labels),
                     "settings": {k: settings.get(k) for k in SETTINGS}})
        print(f"| {tag} | {runs[-1]['run']} | {100 * own:.1f}% | {100 * judged:.1f}% | {runs[-1]['pixel_l2_diversity']:.2f} |")
        write_json(os.path.join(folder, "judged.json"), {"model": tag, "judge": judge_tag, **runs[-1],
                                                         "pixel_l2_diversity_training_images": reference})
    if args.results:
        write_json(args.results, {"provenance": provenance([args.train_npz]), "model": tag, "judge": judge_tag,
                                  "pixel_l2_diversity_training_images": reference, "runs": runs})


def glob_samples(out: str) -> list:
    return [os.path.join(root, "samples.npz") for root, _, names in os.walk(out) if "samples.npz" in names]


if __name__ == "__main__":
    main()
