"""Developer check: how attacks move E(x) and E(x, y), on reference models and on our own checkpoints,
with the paper's attack points and with the robust-accuracy points side by side.

Needs the developers' ../shared folder (not shipped with the repo) and the decoded CIFAR-10 copy; the
torchattacks comparison needs `pip install torchattacks` (a development check, not a dependency):

    python tools/reference_energy.py --test-npz /tmp/cifar10/cifar10_test.npz --out runs/reference

Writes energy_attacks-<model>.json / .png per model (the tables of `analysis.py attacks`) and prints:
1. for PGD-CE and APGD-CE, mean E(x) and the share of points whose E(x) went down under both rules
   (`--points final`, the paper's, and `first-adversarial`, the robust-accuracy rule);
2. every attack of the paper's Fig. 2 with the paper's points;
3. with torchattacks installed: mean E(x) of torchattacks' PGD and TPGD on the same points, beside ours.
"""
import json
import os

import torch

from common import classifier, first_points, tool_parser  # first: it puts the repo on sys.path
from attacks import PGD20_STEP_SIZE, eval_mode
from analysis import ANALYSIS_STEPS, attack_energies, attacks_table, plot_attack_panels, point_energies


def torchattacks_means(model, x, y, eps: float, steps: int) -> dict:
    """Mean E(x) at torchattacks' PGD and TPGD points (same eps, step, steps); empty without the package."""
    try:
        import torchattacks
    except ImportError:
        return {}
    means = {}
    for name, attack in (("pgd-ce", torchattacks.PGD), ("trades-pgd", torchattacks.TPGD)):
        torch.manual_seed(0)  # the global generator, seeded as analysis.attack_points seeds it
        with eval_mode(model):
            x_adv = attack(model, eps=eps, alpha=PGD20_STEP_SIZE, steps=steps)(x, y)
        means[name] = point_energies(model, x_adv, y)["E_x"].mean().item()
    return means


def main():
    p = tool_parser()
    p.add_argument("--test-npz", required=True, help="decoded CIFAR-10 test set")
    p.add_argument("--models", default="vnncomp21-resnet4b,wong18-cifar-small-8px",
                   help="reference model names, or paths to train.py checkpoints")
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels")
    p.add_argument("--steps", type=int, default=ANALYSIS_STEPS, help="iterations of every attack")
    p.add_argument("--n-examples", type=int, default=500, help="first n test points")
    args = p.parse_args()
    x, y = first_points(args.test_npz, args.n_examples)
    eps = args.eps / 255
    os.makedirs(args.out, exist_ok=True)
    rules, tables = [], []
    for name in args.models.split(","):
        model, tag = classifier(name, args.shared)
        clean = point_energies(model, x, y)["E_x"]
        for attack in ("pgd-ce", "apgd-ce"):
            both = {rule: attack_energies(model, x, y, attack, eps, args.steps, rule) for rule in ("final", "first-adversarial")}
            rules.append(f"| {tag} | {attack} | {clean.mean():.3f} | " + " | ".join(
                f"{out['E_x'].mean():.3f} | {100 * (out['E_x'] < clean).double().mean():.1f}%" for out in both.values()) + " |")
        table, per_point = attacks_table(model, x, y, eps, steps=args.steps)
        ta = torchattacks_means(model, x, y, eps, args.steps)
        with open(os.path.join(args.out, f"energy_attacks-{tag}.json"), "w") as f:
            json.dump({"model": name, "n": len(y), "eps_pixels": args.eps, "steps": args.steps, "points": "final",
                       "attacks": table, "torchattacks_mean_E_x": ta}, f, indent=2)
        plot_attack_panels(per_point, os.path.join(args.out, f"energy_attacks-{tag}.png"),
                           f"{tag}: clean (blue) and attacked (red), eps {args.eps:g}/255, K = {args.steps}, "
                           f"{len(y)} test points, the paper's attack points")
        for attack, row in table.items():
            check = f"{ta[attack]:.3f}" if attack in ta else ""
            tables.append(f"| {tag} | {attack} | {row['kind']} | {row['E_x']['mean']:.3f} | {row['E_x']['median']:.3f} | "
                          f"{row['E_xy']['mean']:.3f} | " + (f"{100 * row['frac_E_x_down']:.1f}% | "
                          f"{100 * row['success_rate']:.1f}% | " if attack != "clean" else "| | ") + f"{check} |")
        print(f"{tag} done", flush=True)
    print(f"\n{args.n_examples} points, eps {args.eps:g}/255, K = {args.steps}: E(x) under both point rules\n")
    print("| model | attack | clean mean E(x) | final (paper): mean E(x) | E(x) down | first-adversarial: mean E(x) | E(x) down |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rules))
    print("\nEvery attack of Fig. 2, the paper's points (torchattacks' mean E(x) where it has the attack)\n")
    print("| model | attack | kind | mean E(x) | median E(x) | mean E(x,y) | E(x) down | success | torchattacks mean E(x) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(tables))


if __name__ == "__main__":
    main()
