"""Developer check: every attack on the three reference models of ../shared/reference-models.

Needs the developers' ../shared folder (not shipped with the repo) and the decoded CIFAR-10 copy:

    python ../shared/data/decode_cifar10.py /tmp/cifar10
    python tools/reference_attacks.py --test-npz /tmp/cifar10/cifar10_test.npz --out runs/reference

Prints a markdown table (clean, PGD-20, APGD-CE, APGD-T, FAB-T, Square, each run alone on all points,
and the cascade: robust only where clean-correct and every attack failed, with the summed seconds of
APGD-CE, APGD-T, FAB-T and Square) and writes it as JSON.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attacks import attack_by_name, eval_mode, predict  # noqa: E402
from data import load_npz  # noqa: E402

SINGLE = ("pgd-20", "apgd-ce", "apgd-t", "fab-t", "square")


def main():
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--test-npz", required=True, help="decoded CIFAR-10 test set")
    p.add_argument("--shared", default=os.path.join("..", "shared"), help="the developers' shared folder")
    p.add_argument("--models", default="vnncomp21-resnet2b,vnncomp21-resnet4b,wong18-cifar-small-8px", help="names")
    p.add_argument("--eps", default="8,2", help="radii in pixels")
    p.add_argument("--n-examples", type=int, default=500, help="first n test points")
    p.add_argument("--out", default=os.path.join("runs", "reference"), help="output folder")
    args = p.parse_args()
    sys.path.insert(0, os.path.join(args.shared, "reference-models"))
    import refmodels
    test = load_npz(args.test_npz)
    x, y = test.images[:args.n_examples].float() / 255, test.labels[:args.n_examples]
    os.makedirs(args.out, exist_ok=True)
    rows = []
    print("| model | eps | clean | " + " | ".join(SINGLE) + " | cascade |\n|" + "---|" * (len(SINGLE) + 4))
    for name in args.models.split(","):
        model = refmodels.load(name)
        for eps in (float(e) for e in args.eps.split(",")):
            row = {"model": name, "eps": eps, "n": len(y)}
            masks = []
            with eval_mode(model):
                for attack in SINGLE:
                    start = time.time()
                    x_adv = attack_by_name(attack)(model, x, y, eps / 255, 0)
                    masks.append(predict(model, x_adv) == y)
                    row[attack] = (masks[-1].float().mean().item(), time.time() - start)
            clean = predict(model, x) == y
            robust = clean & torch.stack(masks).all(0)  # robust only if every attack failed on it
            row["clean"] = (clean.float().mean().item(), 0.0)
            row["cascade"] = (robust.float().mean().item(), sum(row[a][1] for a in SINGLE if a != "pgd-20"))
            rows.append(row)
            cells = [f"{100 * row[k][0]:.1f} ({row[k][1]:.0f}s)" for k in ("clean",) + SINGLE + ("cascade",)]
            print(f"| {name} | {eps:g}/255 | " + " | ".join(cells) + " |", flush=True)
            with open(os.path.join(args.out, "reference_attacks.json"), "w") as f:
                json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
