"""Developer check: generate.py on a model trained elsewhere (or a train.py checkpoint), with its samples
scored by the model itself and by a different model (the judge).

The flags after `--` go to generate.py unchanged (a preset, --compare-samplers, a sweep ...); the model
stands in for --ckpt, so the outputs are exactly generate.py's:

    python tools/reference_generation.py --dataset cifar10 --model models/vnncomp21-resnet4b.pth \\
        --judge models/vnncomp21-resnet2b.pth --out runs/gen-paper
    python tools/reference_generation.py --dataset cifar10 --model robustbench:Wong2020Fast \\
        --judge robustbench:Engstrom2019Robustness --out runs/gen-samplers -- --compare-samplers --n-per-class 50

A model is PATH.pt (a train.py checkpoint), PATH/NAME.pth (a reference model file: tools/reference_models.py
says where the VNN-COMP 2021 and Wong et al. 2018 weights come from) or robustbench:NAME. The committed
results came from the developers' JPEG-derived CIFAR-10 copy (--train-npz) and their reference .pth files.

Prints, and with --results writes (with provenance, for tools/report.py), per run: the generating
model's accuracy on its samples, the judge's, and the within-class diversity (mean pixel L2 between
same-class samples, and that of the training images), with the run's generate.py settings.
"""
import argparse
import json
import os
import time

import numpy as np
import torch

# common first: it puts the repo on sys.path
from common import (SPEC_HELP, check_spec, classifier, data_files, guarded, model_specs, parse_tool_args, spec_sha256,
                    split, tool_parser)
import generate as G
import metrics
from data import load_npz
from models import provenance, write_json

SETTINGS = ("preset", "steps", "eta", "zeta", "noise_std", "sigma_pca", "retained_variance", "n_per_class", "init")


def model_spec(text: str) -> str:
    """argparse type of one model spec (common.model_specs, one only)."""
    specs = model_specs(text)
    if len(specs) != 1:
        raise argparse.ArgumentTypeError(f"one model, not {len(specs)}")
    return specs[0]


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    p = tool_parser(splits=("train",), description=__doc__)
    p.add_argument("--model", type=model_spec, required=True, help="the generating model: " + SPEC_HELP)
    p.add_argument("--judge", type=model_spec, required=True, help="the different model that scores the samples (a model spec, as --model)")
    p.add_argument("--results", default=None, help="also write every run's scores here, with provenance")
    p.add_argument("generate_flags", nargs=argparse.REMAINDER, help="-- then generate.py's flags")
    return p


def main(argv=None) -> None:
    args = parse_tool_args(build_parser(), argv)
    started = time.time()
    for spec in (args.model, args.judge):  # both checked before anything runs or is written
        check_spec(spec)
    (model, tag), (judge, judge_tag) = classifier(args.model, args.model_dir), classifier(args.judge, args.model_dir)
    data = {"dataset": "npz", "train_npz": args.train_npz} if args.train_npz else {"dataset": args.dataset, "data_dir": args.data_dir}
    info = {"args": data, "model_config": {"num_classes": 10}, "source": tag, "file": args.model}
    flags = [f for f in args.generate_flags if f != "--"]
    loader, G.load_classifier = G.load_classifier, lambda *_, **__: (model, info)  # the model in place of --ckpt
    try:
        G.main(["--ckpt", tag, *(["--train-npz", args.train_npz] if args.train_npz else []), "--out", args.out, *flags])
    finally:  # generate.py as it was, for whoever imports it next in this process
        G.load_classifier = loader
    train = split(args, train=True)
    reference = metrics.diversity(train.images, train.labels)
    print(f"\n| generator | run | its accuracy on its samples | judge ({judge_tag}) accuracy | pixel L2 diversity "
          f"(training images: {reference:.2f}) |\n|---|---|---|---|---|")
    settings = run_settings(args.out)
    folders = [os.path.normpath(os.path.join(args.out, run)) for run in sorted(settings)]  # this call's runs only
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
                     "settings": settings[os.path.relpath(folder, args.out)]})
        print(f"| {tag} | {runs[-1]['run']} | {100 * own:.1f}% | {100 * judged:.1f}% | {runs[-1]['pixel_l2_diversity']:.2f} |")
        write_json(os.path.join(folder, "judged.json"), {"model": tag, "judge": judge_tag, **runs[-1],
                                                         "pixel_l2_diversity_training_images": reference})
    if args.results:
        write_json(args.results, {"provenance": provenance(data_files(args, train=True)), "model": tag, "judge": judge_tag,
                                  "model_sha256": spec_sha256(args.model), "judge_sha256": spec_sha256(args.judge),
                                  "pixel_l2_diversity_training_images": reference, "runs": runs,
                                  "seconds": time.time() - started})  # generation, its start's fit and the scoring


def run_settings(out: str) -> dict:
    """Each run's own generate.py settings, by its folder relative to `out`: those of args.json (written once,
    at the top) with what the call's comparison file (compare_inits / compare_samplers / sweep_pca .json)
    says the run changed; a single run ('.') keeps args.json's."""
    with open(os.path.join(out, "args.json")) as f:
        base = json.load(f)
    name = ("compare_inits" if base.get("compare_inits") else "compare_samplers" if base.get("compare_samplers")
            else "sweep_pca" if base.get("sweep_pca") or base.get("sweep_variance") else None)
    changes = {".": {}}
    if name:
        with open(os.path.join(out, f"{name}.json")) as f:
            changes = {run_folder(label): run["settings"] for label, run in json.load(f)["runs"].items()}
    return {folder: {k: {**base, **change}.get(k) for k in SETTINGS} for folder, change in changes.items()}


def run_folder(label: str) -> str:
    """The folder generate.run writes a comparison's run to, from its label."""
    return label.replace(", ", "-").replace(" ", "_")


if __name__ == "__main__":
    guarded(main)
