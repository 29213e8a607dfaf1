"""Developer check: how attacks move E(x) and E(x, y), on models trained elsewhere and on our own
checkpoints, with the paper's attack points and with the robust-accuracy points side by side.

    python tools/reference_energy.py --dataset cifar10 --models robustbench:Wong2020Fast --n-examples 200
    python tools/reference_energy.py --dataset cifar10 --models models/vnncomp21-resnet4b.pth,models/wong18-cifar-small-8px.pth \\
        --results runs/energy-attacks-reference.json

A model is PATH.pt (a train.py checkpoint), PATH/NAME.pth (a reference model file: tools/reference_models.py
says where the VNN-COMP 2021 and Wong et al. 2018 weights come from) or robustbench:NAME. The committed
results came from the developers' JPEG-derived CIFAR-10 copy (--test-npz) and their reference .pth files.
The torchattacks comparison needs `pip install torchattacks` (a development check, not a dependency).

Writes energy_attacks-<model>.json, .png (E(x)) and -xy.png (E(x, y)) per model under --out (the tables and
figures of `analysis.py attacks`) and, with --results, one file for docs/ (tools/report.py renders it): per model every attack
of the paper's Fig. 2 with the paper's points, the mean shift of E(x) with its 95% bootstrap interval,
each random attack run with --attack-seeds seeds (the shift averaged over them, each seed's
shift beside it), PGD-CE and APGD-CE under both point rules (`final`, the paper's, and `first-adversarial`, the
robust-accuracy rule) and, with torchattacks installed, the mean E(x) of its PGD and TPGD points.
"""
import argparse
import os
import time

import torch

# common first: it puts the repo on sys.path
from common import (SPEC_HELP, checked_models_and_points, classifier, data_files, guarded, model_specs, spec_sha256,
                    parse_tool_args, recorded_name, tool_parser)
from attacks import PGD20_STEP_SIZE, eval_mode
from analysis import ANALYSIS_STEPS, POINT_RULES, attack_energies, attacks_table, plot_attack_panels, point_energies
from models import provenance, write_json


def optional_torchattacks():
    """The torchattacks module, or None where it is not installed (a development check, not a dependency)."""
    try:
        import torchattacks
    except ImportError:
        return None
    return torchattacks


def torchattacks_means(model, x, y, eps: float, steps: int) -> dict:
    """Mean E(x) at torchattacks' PGD and TPGD points (same eps, step, steps); empty without the package."""
    torchattacks = optional_torchattacks()
    if torchattacks is None:
        return {}
    means = {}
    for name, attack in (("pgd-ce", torchattacks.PGD), ("trades-pgd", torchattacks.TPGD)):
        torch.manual_seed(0)  # the global generator, seeded as analysis.attack_points seeds it
        with eval_mode(model):
            x_adv = attack(model, eps=eps, alpha=PGD20_STEP_SIZE, steps=steps)(x, y)
        means[name] = point_energies(model, x_adv, y)["E_x"].mean().item()
    return means


def build_parser() -> argparse.ArgumentParser:
    """The command line of this tool."""
    p = tool_parser(splits=("test",), description=__doc__)
    p.add_argument("--models", type=model_specs, required=True, help="comma-separated model specs, each " + SPEC_HELP)
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels")
    p.add_argument("--steps", type=int, default=ANALYSIS_STEPS, help="iterations of every attack")
    p.add_argument("--n-examples", type=int, default=500, help="first n test points")
    p.add_argument("--attack-seeds", type=int, default=3, help="seeds 0 .. N-1 of every random attack (analysis.attacks_table)")
    p.add_argument("--results", default=None, help="also write every model's tables here, with provenance")
    return p


def main(argv=None) -> None:
    args = parse_tool_args(build_parser(), argv)
    specs, x, y = checked_models_and_points(args, args.n_examples)
    eps = args.eps / 255
    os.makedirs(args.out, exist_ok=True)
    models = {}
    for spec in specs:
        started = time.time()
        model, tag = classifier(spec, args.model_dir)
        clean = point_energies(model, x, y)["E_x"]
        rules = {attack: {rule: {"mean_E_x": out["E_x"].mean().item(), "frac_E_x_down": (out["E_x"] < clean).double().mean().item()}
                          for rule, out in ((r, attack_energies(model, x, y, attack, eps, args.steps, r)) for r in POINT_RULES)}
                 for attack in ("pgd-ce", "apgd-ce")}
        table, per_point = attacks_table(model, x, y, eps, steps=args.steps, seeds=tuple(range(args.attack_seeds)))
        models[tag] = {"model": recorded_name(spec), "sha256": spec_sha256(spec), "attacks": table, "point_rules": rules,
                       "torchattacks_mean_E_x": torchattacks_means(model, x, y, eps, args.steps)}
        models[tag]["seconds"] = time.time() - started  # every attack and seed, both point rules, the torchattacks check
        write_json(os.path.join(args.out, f"energy_attacks-{tag}.json"), models[tag])
        plot_attack_panels(per_point, table, os.path.join(args.out, f"energy_attacks-{tag}.png"),
                           f"{tag}: clean and attacked energies, eps {args.eps:g}/255, K = {args.steps}, "
                           f"first {len(y)} test points, the paper's attack points")
        print(f"{tag} done: " + ", ".join(f"{a} {row['E_x_shift']['mean']:+.3f}" for a, row in table.items() if a != "clean"),
              flush=True)
    if args.results:
        settings = {"n": len(y), "eps_pixels": args.eps, "steps": args.steps, "step_size": PGD20_STEP_SIZE, "points": "final",
                    "attack_seeds": args.attack_seeds,
                    "torchattacks": getattr(optional_torchattacks(), "__version__", None)}
        write_json(args.results, {"provenance": provenance(data_files(args, train=False)), "settings": settings, "models": models})


if __name__ == "__main__":
    guarded(main)
