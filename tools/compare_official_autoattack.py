"""Developer check: our attacks (attacks.py) against the official AutoAttack (Croce & Hein 2020), on the same
model, the same points and the same eps.

    git clone https://github.com/fra31/auto-attack /tmp/auto-attack
    git -C /tmp/auto-attack checkout a39220048b3c   # the commit behind results/agreement-autoattack.json
    python tools/compare_official_autoattack.py --autoattack-repo /tmp/auto-attack --model models/vnncomp21-resnet4b.pth \\
        --dataset cifar10 --n-examples 200 --eps 8,2 --results runs/agreement-autoattack.json

The official code is imported from the checkout that --autoattack-repo names (or, without it, from an
installed `autoattack` package), never copied into this repo; the results file records its git commit and
a sha256 of its Python files. A model is PATH.pt (a train.py checkpoint), PATH/NAME.pth (a reference model
file, see tools/reference_models.py) or robustbench:NAME.

For each eps, both sides run (a) each attack of AutoAttack "standard" alone on every point, as the
official `run_standard_evaluation_individual` does (APGD-CE 100 iterations; APGD-T and FAB-T 100
iterations towards each of 9 target classes; Square 5000 queries), and (b) the standard cascade, each
attack only on the points still robust. The official side is `AutoAttack(model, norm="Linf", eps=eps,
version="standard", seed=SEED)`, which reseeds torch's global generator before every attack of every
batch; ours is `attacks.autoattack(..., seed=SEED)`, which seeds each attack's own generator. The random
streams differ, so single points can differ where an attack is at its limit. Reported for each attack
and the cascade: robust accuracy on each side, the per-point agreement (robust under both, only under the
official code, only under ours, under neither) and the seconds each side took (measured here, official
then ours, one after the other in this process).
"""
import glob
import hashlib
import os
import sys
import time

import torch

# common first: it puts the repo on sys.path
from common import (SPEC_HELP, check_spec, checkout_commit, classifier, data_files, first_points, parse_tool_args,
                    recorded_name, tool_parser)
from attacks import STANDARD_ATTACKS, autoattack, eval_mode
from data import DataError
from models import CheckpointError, first_line, provenance, resolve_device, write_json

OFFICIAL_SETTINGS = {"version": "standard", "norm": "Linf", "apgd_n_iter": 100, "n_target_classes": 9,
                     "fab_n_iter": 100, "square_n_queries": 5000}  # AutoAttack "standard", Linf (its set_version)


class ToolError(ValueError):
    """Bad input to the tool: no official package where it was named, bad eps or point counts."""


def load_official(repo: str = None):
    """The official `autoattack` package: imported from the checkout `repo` (its folder autoattack/), or,
    without one, the installed package."""
    for name in [m for m in sys.modules if m == "autoattack" or m.startswith("autoattack.")]:
        del sys.modules[name]  # a package imported before (another checkout) must not answer for this one
    if repo is not None:
        package = os.path.join(os.path.abspath(repo), "autoattack")
        if not os.path.isfile(os.path.join(package, "__init__.py")):
            raise ToolError(f"--autoattack-repo {repo} does not hold the autoattack package ({package}/__init__.py "
                            "missing); clone github.com/fra31/auto-attack there")
        sys.path.insert(0, os.path.abspath(repo))
    try:
        import autoattack
        autoattack.AutoAttack
    except (ImportError, AttributeError) as e:
        where = f"from {repo}" if repo else "(no --autoattack-repo given, and no installed autoattack package)"
        raise ToolError(f"cannot import the official AutoAttack {where}: {first_line(e)}") from None
    if repo is not None and not os.path.abspath(autoattack.__file__).startswith(package + os.sep):
        raise ToolError(f"autoattack was imported from {autoattack.__file__}, not from {repo}")
    return autoattack


def official_source(module) -> dict:
    """Which official code ran: its folder (the checkout holding the package), that checkout's git commit
    (None where the folder is no checkout of its own, e.g. an installed package) and a sha256 over the
    package's Python files (names and contents, in sorted order)."""
    package = os.path.dirname(os.path.abspath(module.__file__))
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(package, "*.py"))):
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    return {"path": os.path.dirname(package), "git_commit": checkout_commit(os.path.dirname(package)),
            "sha256_of_py_files": digest.hexdigest()}


def agreement(robust_official: torch.Tensor, robust_ours: torch.Tensor) -> dict:
    """Per-point agreement of two robust masks: points robust under both, only under one side, under neither."""
    a, b = robust_official.bool().cpu(), robust_ours.bool().cpu()
    return {"both_robust": int((a & b).sum()), "only_official_robust": int((a & ~b).sum()),
            "only_ours_robust": int((~a & b).sum()), "neither": int((~a & ~b).sum())}


def run_official(official, model, x, y, eps: float, attacks: tuple, seed: int, batch_size: int, device: str) -> tuple:
    """(robust mask, seconds) of the official AutoAttack "standard" with `attacks` run as its cascade (one
    attack: as its run_standard_evaluation_individual runs each)."""
    adversary = official.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=device,
                                    verbose=False)
    adversary.attacks_to_run = list(attacks)
    start = time.perf_counter()
    _, y_adv = adversary.run_standard_evaluation(x, y, bs=batch_size, return_labels=True)
    return (y_adv.cpu() == y.cpu()), time.perf_counter() - start


def run_ours(model, x, y, eps: float, attacks: tuple, seed: int, batch_size: int) -> tuple:
    """(robust mask, seconds) of attacks.autoattack with `attacks` as its cascade."""
    start = time.perf_counter()
    _, robust = autoattack(model, x, y, eps, attacks, seed=seed, batch_size=batch_size)
    return robust.cpu(), time.perf_counter() - start


def compare_at(official, model, x, y, eps: float, seed: int, batch_size: int, device: str) -> list:
    """One row per attack alone and one for the cascade: robust accuracy and seconds of each side, agreement."""
    rows = []
    for attacks in [(a,) for a in STANDARD_ATTACKS] + [STANDARD_ATTACKS]:
        with eval_mode(model):
            robust_official, seconds_official = run_official(official, model, x, y, eps, attacks, seed, batch_size, device)
            robust_ours, seconds_ours = run_ours(model, x, y, eps, attacks, seed, batch_size)
        row = {"attack": attacks[0] if len(attacks) == 1 else "cascade", "n": len(y),
               "official": {"robust_accuracy": robust_official.float().mean().item(), "seconds": seconds_official},
               "ours": {"robust_accuracy": robust_ours.float().mean().item(), "seconds": seconds_ours},
               "agreement": agreement(robust_official, robust_ours)}
        rows.append(row)
        print(f"eps {255 * eps:g}/255 {row['attack']}: robust {100 * row['official']['robust_accuracy']:.1f}% official "
              f"({seconds_official:.0f} s), {100 * row['ours']['robust_accuracy']:.1f}% ours ({seconds_ours:.0f} s); "
              f"robust only under the official {row['agreement']['only_official_robust']}, only under ours "
              f"{row['agreement']['only_ours_robust']}", flush=True)
    return rows


def build_parser():
    p = tool_parser(splits=("test",), description=__doc__)
    p.add_argument("--autoattack-repo", default=None,
                   help="a checkout of github.com/fra31/auto-attack (default: an installed autoattack package)")
    p.add_argument("--model", required=True, help="the classifier: " + SPEC_HELP)
    p.add_argument("--eps", default="8", help="comma-separated Linf radii in pixels (8 means 8/255)")
    p.add_argument("--n-examples", type=int, default=200, help="the first n test points")
    p.add_argument("--batch-size", type=int, default=500, help="points per attack batch, both sides")
    p.add_argument("--seed", type=int, default=0, help="both sides' attack seed")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, ...")
    p.add_argument("--results", default=None, help="write the rows here, with provenance")
    return p


def radii(text: str) -> list:
    """Comma-separated pixel radii -> a list of positive floats."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise ToolError(f"--eps {text!r}: give positive radii in pixels, e.g. 8 or 8,2")
    return values


def run(args) -> dict:
    """Check every input, then run both sides at each eps; the results file's contents."""
    eps_pixels = radii(args.eps)
    if args.n_examples < 1 or args.batch_size < 1:
        raise ToolError(f"--n-examples and --batch-size must be positive (got {args.n_examples}, {args.batch_size})")
    if args.results and os.path.isdir(args.results):
        raise ToolError(f"--results {args.results} is a folder; name a file")
    official = load_official(args.autoattack_repo)
    check_spec(args.model)
    device = resolve_device(args.device)
    x, y = first_points(args, args.n_examples)
    model = classifier(args.model, args.model_dir)[0].to(device)
    x, y = x.to(device), y.to(device)
    with torch.no_grad(), eval_mode(model):
        clean = (model(x).argmax(1) == y).float().mean().item()
    rows = []
    for eps in eps_pixels:
        rows += [{"eps_pixels": eps, **row} for row in compare_at(official, model, x, y, eps / 255, args.seed,
                                                                  args.batch_size, device)]
        write_json(os.path.join(args.out, "agreement-autoattack-progress.json"), rows)  # the radii done so far
    settings = {"model": recorded_name(args.model), "n": len(y), "index_rule": f"the first {len(y)} test points",
                "clean_accuracy": clean,
                "eps_pixels": eps_pixels, "seed": args.seed, "batch_size": args.batch_size,
                "attacks": list(STANDARD_ATTACKS),
                "official": OFFICIAL_SETTINGS}
    model_file = [] if args.model.startswith("robustbench:") else [args.model]
    return {"provenance": provenance(data_files(args, train=False) + model_file, device),
            "settings": settings, "official_source": official_source(official), "rows": rows}


def main(argv=None) -> None:
    args = parse_tool_args(build_parser(), argv)
    try:
        result = run(args)
    except (ToolError, CheckpointError, DataError) as e:
        print(f"compare_official_autoattack.py: error: {first_line(e)}", file=sys.stderr)
        sys.exit(2)
    if args.results:
        write_json(args.results, result)


if __name__ == "__main__":
    main()
