"""Developer check: PGD-20 and the AutoAttack-style cascade on models trained elsewhere (or train.py
checkpoints), on the first test points.

    python tools/reference_attacks.py --dataset cifar10 --models robustbench:Wong2020Fast --n-examples 500
    python tools/reference_attacks.py --dataset cifar10 --models models/vnncomp21-resnet4b.pth --results runs/attacks-reference.json

A model is PATH.pt (a train.py checkpoint), PATH/NAME.pth (a reference model file: tools/reference_models.py
says where the VNN-COMP 2021 and Wong et al. 2018 weights come from) or robustbench:NAME. The committed
results came from the developers' JPEG-derived CIFAR-10 copy (--test-npz) and their reference .pth files.

Prints (and with --results writes, with provenance, for tools/report.py) a markdown table, as evaluate.py computes it: clean, PGD-20 (alone, on every point), then robust
accuracy after each attack of the cascade (APGD-CE on every clean-correct point, so it equals APGD-CE
alone; APGD-T, FAB-T and Square each only on the points still robust), with the seconds each took.
"""
import argparse
import os

# common first: it puts the repo on sys.path
from common import (SPEC_HELP, checked_models_and_points, classifier, data_files, guarded, model_specs,
                    parse_tool_args, recorded_name, tool_parser)
from evaluate import evaluate_model
from models import provenance, write_json

CASCADE = ("apgd-ce", "apgd-t", "fab-t", "square")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    p = tool_parser(splits=("test",), description=__doc__)
    p.add_argument("--models", type=model_specs, required=True, help="comma-separated model specs, each " + SPEC_HELP)
    p.add_argument("--eps", default="8,2", help="radii in pixels")
    p.add_argument("--n-examples", type=int, default=500, help="first n test points")
    p.add_argument("--results", default=None, help="also write the rows here, with provenance")
    return p


def main(argv=None) -> None:
    args = parse_tool_args(build_parser(), argv)
    specs, x, y = checked_models_and_points(args, args.n_examples)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    keys = ["clean", "pgd-20"] + [f"+{a}" for a in CASCADE]
    print("| model | eps | " + " | ".join(keys) + " | flags |\n|" + "---|" * (len(keys) + 3))
    for spec in specs:
        model, name = classifier(spec, args.model_dir)[0], recorded_name(spec)
        for eps in (float(e) for e in args.eps.split(",")):
            result = evaluate_model(model, x, y, eps / 255, CASCADE, batch_size=500, seed=0)
            row = {"model": name, "eps_pixels": eps, "n": len(y), **result["rows"], "flags": result["flags"]}
            rows.append(row)
            cells = [f"{100 * row[k]['accuracy']:.1f} ({row[k]['seconds']:.0f}s)" for k in keys]
            raised = ", ".join(k for k, v in row["flags"].items() if v) or "none"
            print(f"| {name} | {eps:g}/255 | " + " | ".join(cells) + f" | {raised} |", flush=True)
            write_json(os.path.join(args.out, "reference_attacks.json"), rows)
    if args.results:
        write_json(args.results, {"provenance": provenance(data_files(args, train=False)), "cascade": list(CASCADE), "rows": rows})


if __name__ == "__main__":
    guarded(main)
