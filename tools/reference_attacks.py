"""Developer check: PGD-20 and the AutoAttack-style cascade on the reference models of ../shared.

Needs the developers' ../shared folder (not shipped with the repo) and the decoded CIFAR-10 copy:

    python ../shared/data/decode_cifar10.py /tmp/cifar10
    python tools/reference_attacks.py --test-npz /tmp/cifar10/cifar10_test.npz --out runs/reference \
        --results results/attacks-reference.json

Prints (and with --results writes, with provenance, for tools/report.py) a markdown table, as evaluate.py computes it: clean, PGD-20 (alone, on every point), then robust
accuracy after each attack of the cascade (APGD-CE on every clean-correct point, so it equals APGD-CE
alone; APGD-T, FAB-T and Square each only on the points still robust), with the seconds each took.
"""
import os

from common import classifier, first_points, tool_parser
from evaluate import evaluate_model
from models import provenance, write_json

CASCADE = ("apgd-ce", "apgd-t", "fab-t", "square")


def main():
    p = tool_parser()
    p.add_argument("--test-npz", required=True, help="decoded CIFAR-10 test set")
    p.add_argument("--models", default="vnncomp21-resnet2b,vnncomp21-resnet4b,wong18-cifar-small-8px",
                   help="reference model names, or paths to train.py checkpoints")
    p.add_argument("--eps", default="8,2", help="radii in pixels")
    p.add_argument("--n-examples", type=int, default=500, help="first n test points")
    p.add_argument("--results", default=None, help="also write the rows here, with provenance")
    args = p.parse_args()
    x, y = first_points(args.test_npz, args.n_examples)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    keys = ["clean", "pgd-20"] + [f"+{a}" for a in CASCADE]
    print("| model | eps | " + " | ".join(keys) + " | flags |\n|" + "---|" * (len(keys) + 3))
    for name in args.models.split(","):
        model, _ = classifier(name, args.shared)
        for eps in (float(e) for e in args.eps.split(",")):
            result = evaluate_model(model, x, y, eps / 255, CASCADE, batch_size=500, seed=0)
            row = {"model": name, "eps_pixels": eps, "n": len(y), **result["rows"], "flags": result["flags"]}
            rows.append(row)
            cells = [f"{100 * row[k]['accuracy']:.1f} ({row[k]['seconds']:.0f}s)" for k in keys]
            raised = ", ".join(k for k, v in row["flags"].items() if v) or "none"
            print(f"| {name} | {eps:g}/255 | " + " | ".join(cells) + f" | {raised} |", flush=True)
            write_json(os.path.join(args.out, "reference_attacks.json"), rows)
    if args.results:
        write_json(args.results, {"provenance": provenance([args.test_npz]), "cascade": list(CASCADE), "rows": rows})


if __name__ == "__main__":
    main()
