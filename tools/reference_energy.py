"""Developer check: how attacks move E(x) and E(x, y) on reference models and on our own checkpoints.

Needs the developers' ../shared folder (not shipped with the repo) and the decoded CIFAR-10 copy:

    python tools/reference_energy.py --test-npz /tmp/cifar10/cifar10_test.npz --out runs/reference

Writes energy_attacks-<model>.json / .png per model (the same tables as `energy.py attacks`) and prints
one markdown table: per attack, mean E(x) and E(x, y), the share of points whose E(x) went down, and
the attack's success rate.
"""
import json
import os

from common import classifier, first_points, tool_parser
from energy import attacks_table, plot_histograms


def main():
    p = tool_parser()
    p.add_argument("--test-npz", required=True, help="decoded CIFAR-10 test set")
    p.add_argument("--models", default="vnncomp21-resnet4b,wong18-cifar-small-8px",
                   help="reference model names, or paths to train.py checkpoints")
    p.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels")
    p.add_argument("--n-examples", type=int, default=500, help="first n test points")
    args = p.parse_args()
    x, y = first_points(args.test_npz, args.n_examples)
    os.makedirs(args.out, exist_ok=True)
    print("| model | attack | kind | mean E(x) | mean E(x,y) | E(x) went down | success |\n|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, tag = classifier(name, args.shared)
        table, per_point = attacks_table(model, x, y, args.eps / 255)
        with open(os.path.join(args.out, f"energy_attacks-{tag}.json"), "w") as f:
            json.dump({"model": name, "n": len(y), "eps_pixels": args.eps, "attacks": table}, f, indent=2)
        plot_histograms(per_point, ("E_x", "E_xy"), os.path.join(args.out, f"energy_attacks-{tag}.png"),
                        f"{tag}: energies under attack, eps {args.eps:g}/255, {len(y)} test points")
        for attack, row in table.items():
            success = "" if row["success_rate"] is None else f"{100 * row['success_rate']:.1f}%"
            print(f"| {tag} | {attack} | {row['kind']} | {row['E_x']['mean']:.3f} | {row['E_xy']['mean']:.3f} | "
                  f"{100 * row['frac_E_x_down']:.1f}% | {success} |", flush=True)


if __name__ == "__main__":
    main()
