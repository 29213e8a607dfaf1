"""A classifier read as an energy-based model, the TRADES / WEAT training losses, and the energy
analysis of Section 3 as a command.

For logits f(x) (Section 3 of the paper):

    E(x)   = -logsumexp_k f(x)[k]          marginal energy       energy_x
    E(x,y) = -f(x)[y]                      joint energy          energy_xy
    log p(y|x) = E(x) - E(x,y)

WEAT weights each sample by w(x) = 1 / log(1 + exp(|E(x)|)) inside a TRADES objective.
`trades_loss` is a drop-in replacement for `F.cross_entropy` in a training loop:

    loss = trades_loss(model(x), model(x_adv), y, beta=6.0, weat="adv")

The command (Section 3 figures):

    python energy.py attacks --ckpt runs/A/best.pt --n-examples 1000 --eps 8   # how attacks move E(x), E(x,y)
    python energy.py divergence --ckpt runs/A/best.pt                          # dE = E(x) - E(x*) per point
    python energy.py curves --log runs/A/log.jsonl runs/B/log.jsonl            # dE over epochs (overfitting)
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import attacks as A
from attacks import PIXEL, kl_per_sample
from data import DataError, split_of_run
from models import CheckpointError, load_model, resolve_device

WEAT_CHOICES = (None, "nat", "adv")
WEAT_TERMS = ("both", "ce", "kl")  # ablation: which terms carry the weight
WEIGHT_FNS = ("energy", "uniform")  # ablation: the paper's weights, or their batch mean for every sample


def energy_x(logits: torch.Tensor) -> torch.Tensor:
    """Marginal energy E(x) = -logsumexp_k f(x)[k], one value per row."""
    return -torch.logsumexp(logits, dim=1)


def energy_xy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Joint energy E(x, y) = -f(x)[y], one value per row."""
    return -logits.gather(1, y[:, None]).squeeze(1)


def weat_weights(logits: torch.Tensor) -> torch.Tensor:
    """WEAT sample weights w(x) = 1 / log(1 + exp(|E(x)|)), detached and not normalised.

    Written as 1 / softplus(|E|): log(1 + exp(|E|)) overflows in float32 for |E| > 88.
    """
    return 1.0 / F.softplus(energy_x(logits.detach()).abs())


def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                weat: str = None, terms: str = "both", normalize: bool = False,
                weight_fn: str = "energy") -> torch.Tensor:
    """The TRADES / WEAT outer objective, averaged over the batch size B.

    weat=None  (TRADES, Zhang et al. 2019):  (1/B) sum_i CE(f(x_i), y_i) + beta (1/B) sum_i KL_i
    weat="nat" (WEAT-nat):  (1/B) sum_i w_i CE(f(x_i), y_i)  + beta (1/B) sum_i w_i KL_i
    weat="adv" (WEAT-adv):  (1/B) sum_i w_i CE(f(x*_i), y_i) + beta (1/B) sum_i w_i KL_i
    with KL_i = KL(p(.|x_i) || p(.|x*_i)) and w_i = weat_weights(f(x_i)) (detached, unnormalised),
    as in the authors' released code. The defaults are the paper's; the ablations take it apart:

    terms      "both" (paper), "ce" or "kl": which terms carry w_i (the other gets w_i = 1);
               "kl" is the MAIL-TR-style placement.
    normalize  divide w by its batch mean, so that the weights average 1.
    weight_fn  "energy" (paper) or "uniform": every sample gets the batch mean of the energy weights,
               the same overall scale without the reweighting (a lower effective learning rate).
    """
    if weat not in WEAT_CHOICES or terms not in WEAT_TERMS or weight_fn not in WEIGHT_FNS:
        raise ValueError(f"weat in {WEAT_CHOICES}, terms in {WEAT_TERMS}, weight_fn in {WEIGHT_FNS}; "
                         f"got {weat!r}, {terms!r}, {weight_fn!r}")
    ce = F.cross_entropy(logits_adv if weat == "adv" else logits_nat, y, reduction="none")
    kl = kl_per_sample(logits_nat, logits_adv)
    if weat is None:
        return ce.mean() + beta * kl.mean()
    w = weat_weights(logits_nat)
    if weight_fn == "uniform":
        w = w.mean().expand_as(w)
    if normalize:
        w = w / w.mean()
    w_ce = w if terms in ("both", "ce") else 1.0
    w_kl = w if terms in ("both", "kl") else 1.0
    return (w_ce * ce).mean() + beta * (w_kl * kl).mean()


MART_BOOST_ONE = 1.0001  # MART code: -log(1.0001 - max_{k != y} p_k(x*)) (Wang et al. 2020)
MART_TRUE_ONE = 1.0000001  # MART code: the KL term's weight 1.0000001 - p_y(x)
MAIL_BIAS, MAIL_SLOPE, MAIL_SCALE = -1.5, 1.0, 3.0  # MAIL code defaults (Wang et al. 2021): 3 sigmoid(PM - 1.5)


def mart_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART (Wang et al. 2020), averaged over the batch size B, as the authors' code computes it:

        (1/B) sum_i [CE(f(x*_i), y_i) - log(1.0001 - max_{k != y_i} p_k(x*_i))]
        + beta (1/B) sum_i KL(p(.|x_i) || p(.|x*_i)) (1.0000001 - p_{y_i}(x_i))

    The first bracket is the boosted cross-entropy on x*; the KL weight 1 - p_y(x) is not detached.
    """
    p_adv, p_nat = F.softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1)
    runner_up = p_adv.scatter(1, y[:, None], float("-inf")).argmax(1)
    boosted = (F.cross_entropy(logits_adv, y, reduction="none")
               - torch.log(MART_BOOST_ONE - p_adv.gather(1, runner_up[:, None]).squeeze(1)))
    p_true = p_nat.gather(1, y[:, None]).squeeze(1)
    return boosted.mean() + beta * (kl_per_sample(logits_nat, logits_adv) * (MART_TRUE_ONE - p_true)).mean()


def mail_weights(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MAIL weights (Wang et al. 2021): 3 sigmoid(slope (PM + bias)), PM = max_{k != y} p_k(x*) - p_y(x*),
    the probabilistic margin of the adversarial point; detached, slope 1 and bias -1.5 as in their code."""
    p = F.softmax(logits_adv.detach(), dim=1)
    margin = p.scatter(1, y[:, None], float("-inf")).amax(1) - p.gather(1, y[:, None]).squeeze(1)
    return MAIL_SCALE * torch.sigmoid(MAIL_SLOPE * (margin + MAIL_BIAS))


def mail_trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                     weighted: bool = True) -> torch.Tensor:
    """MAIL-TR, the TRADES form of MAIL (Wang et al. 2021), averaged over the batch size B:

        (1/B) sum_i CE(f(x_i), y_i) + beta (1/B) sum_i w_i KL(p(.|x_i) || p(.|x*_i)),  w = mail_weights(f(x*), y)

    `weighted=False` is TRADES itself (w = 1): MAIL trains that way during its burn-in epochs.
    """
    kl = kl_per_sample(logits_nat, logits_adv)
    w = mail_weights(logits_adv, y) if weighted else torch.ones_like(kl)
    return F.cross_entropy(logits_nat, y) + beta * (w * kl).mean()


def method_name(settings: dict) -> str:
    """sat, trades, mart, mail-tr, weat-nat or weat-adv from a run's settings (train.py's args, e.g. its
    args.json), with the WEAT ablations that differ from the paper appended: weat-adv-kl-only-normalized-uniform."""
    if settings.get("loss", "trades") != "trades" or settings.get("weat", "none") == "none":
        return settings.get("loss", "trades")
    ablations = [f"{settings['weat_terms']}-only" if settings.get("weat_terms", "both") != "both" else "",
                 "normalized" if settings.get("weat_normalize") else "",
                 settings["weat_fn"] if settings.get("weat_fn", "energy") != "energy" else ""]
    return "-".join(["weat", settings["weat"]] + [a for a in ablations if a])

# ---------------------------------------------------------------------------------------------------
# Checkpoint selection from the energy log (train.py --select energy)

ENERGY_BAND_EPOCHS = 5  # the band: delta_E of the 5 epochs up to the learning rate's decay,
ENERGY_BAND_WIDTH = 3.0  # their mean +- 3 standard deviations,
ENERGY_BAND_FLOOR = 1e-3  # the standard deviation taken as at least 0.001;
ENERGY_BAND_PATIENCE = 2  # delta_E has left the band once it stays outside for 2 epochs in a row
LR_DECAYED = 0.5  # the decay: the first epoch whose logged learning rate is below half the peak


def lr_decay_index(history: list):
    """Index of the first logged epoch whose learning rate (as logged after it) is below half the peak
    so far: the last epoch trained at the high rate (None: no decay yet)."""
    lrs = [row["lr"] for row in history]
    return next((i for i, lr in enumerate(lrs) if lr < LR_DECAYED * max(lrs[:i + 1])), None)


def energy_pick(history: list) -> int:
    """The epoch `--select energy` keeps, from the log alone (no validation attack).

    Robust overfitting shows as a divergence of natural and adversarial energies once the learning rate
    has decayed. The band is the mean +- 3 std of dE = E(x) - E(x*) (training batches, eval mode) over the
    5 epochs up to the decay; the pick is the last epoch after it before dE leaves the band for 2 epochs
    in a row (the newest in-band epoch while it has not). Before the decay, the newest epoch. Causal:
    it reads only the epochs logged so far.
    """
    decay = lr_decay_index(history)
    if decay is None:
        return history[-1]["epoch"]
    band = torch.tensor([row["delta_E"] for row in history[max(0, decay + 1 - ENERGY_BAND_EPOCHS):decay + 1]],
                        dtype=torch.float64)
    spread = ENERGY_BAND_WIDTH * max(band.std().item() if len(band) > 1 else 0.0, ENERGY_BAND_FLOOR)
    inside = [abs(row["delta_E"] - band.mean().item()) <= spread for row in history]
    pick, outside_run = decay, 0
    for i in range(decay + 1, len(history)):
        outside_run = 0 if inside[i] else outside_run + 1
        if outside_run >= ENERGY_BAND_PATIENCE:
            break
        if inside[i]:
            pick = i
    return history[pick]["epoch"]


# ---------------------------------------------------------------------------------------------------
# Energy analysis (Section 3): library functions that apply to any classifier


UNTARGETED = ("pgd-ce", "apgd-ce", "trades-kl")
TARGETED = ("apgd-t", "pgd-target", "cw-target")
PGD_STEPS = 20  # PGD-20 with step eps/4 (2/255 at eps 8/255) for the PGD-based attacks


def attack_points(model, x, y, attack: str, eps: float, seed: int = 0, n_iter: int = 100) -> tuple:
    """x* from a named attack, and the attack's goal per point: the random target class of the targeted
    PGD attacks, else None. Untargeted: pgd-ce, apgd-ce, trades-kl (the TRADES KL attack, K = 10);
    targeted: apgd-t, pgd-target (CE towards a random class), cw-target (CW margin towards it)."""
    torch.manual_seed(seed)  # PGD's random starts
    with A.eval_mode(model):
        target = random_targets(model, x, y, seed) if attack in ("pgd-target", "cw-target") else None
        runs = {
            "clean": lambda: x,
            "pgd-ce": lambda: A.pgd(model, x, y, eps, eps / 4, PGD_STEPS),
            "apgd-ce": lambda: A.apgd(model, x, y, eps, n_iter, seed=seed),
            "trades-kl": lambda: A.trades_attack(model, x, eps, eps / 4, 10),
            "apgd-t": lambda: A.apgd_targeted(model, x, y, eps, n_iter, seed=seed),
            "pgd-target": lambda: A.pgd(model, x, y, eps, eps / 4, PGD_STEPS, target=target),
            "cw-target": lambda: A.pgd(model, x, y, eps, eps / 4, PGD_STEPS, loss="cw", target=target),
        }
        if attack not in runs:
            raise ValueError(f"unknown attack {attack!r}; choose from {', '.join(runs)}")
        return runs[attack](), target


@torch.no_grad()
def random_targets(model, x, y, seed: int) -> torch.Tensor:
    """A class other than y for each point, drawn uniformly with `seed` (model in eval mode)."""
    num_classes = model(x[:1]).shape[1]
    offset = torch.randint(1, num_classes, (len(y),), generator=torch.Generator().manual_seed(seed))
    return (y + offset.to(y.device)) % num_classes


@torch.no_grad()
def point_energies(model, x, y) -> dict:
    """E(x), E(x, y) and the prediction of each point, as CPU tensors (model in eval mode)."""
    with A.eval_mode(model):
        logits = model(x)
    return {"E_x": energy_x(logits).cpu(), "E_xy": energy_xy(logits, y).cpu(), "pred": logits.argmax(1).cpu()}


def attack_energies(model, x, y, attack: str, eps: float, seed: int = 0, n_iter: int = 100) -> dict:
    """Per-point energies of x* = attack(x) and whether the attack succeeded on each point (for
    pgd-target / cw-target: reached its target; otherwise: misclassified)."""
    x_adv, target = attack_points(model, x, y, attack, eps, seed, n_iter)
    out = point_energies(model, x_adv, y)
    out["success"] = out["pred"] == target.cpu() if target is not None else out["pred"] != y.cpu()
    return out


def summary(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0, "median": v.median().item()}


def weight_analysis(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """WEAT weight against E(x) for a set of points, and the share of high- and low-energy points
    (E(x) above / at or below the set's median) among the correctly and wrongly classified ones."""
    e, w = energy_x(logits.detach()), weat_weights(logits)
    high = e > e.median()
    correct = logits.argmax(1) == y
    share = lambda mask: {"n": int(mask.sum()), "high_energy": (high & mask).sum().item() / max(int(mask.sum()), 1),
                          "low_energy": (~high & mask).sum().item() / max(int(mask.sum()), 1)}
    return {"E_x": e.cpu(), "weight": w.cpu(), "median_E_x": e.median().item(), "correct": share(correct),
            "wrong": share(~correct)}


# ---------------------------------------------------------------------------------------------------
# The command


CLEAN_COLOR = "black"


def load_test_points(ckpt_path: str, n_examples: int, device: str, data_dir=None, test_npz=None) -> tuple:
    """(model in eval mode, x, y, checkpoint) for the first n test points of a train.py checkpoint."""
    model, ckpt = load_model(ckpt_path, device)
    test = split_of_run(ckpt.get("args"), False, data_dir, test_npz, ckpt["model_config"]["num_classes"])
    n = min(n_examples, len(test))
    return model.eval(), test.images[:n].to(device).float() / 255, test.labels[:n].to(device), ckpt


def attacks_table(model, x, y, eps: float, attacks=("clean",) + UNTARGETED + TARGETED, seed=0, n_iter=100) -> tuple:
    """Per-attack energy statistics (the JSON of `energy.py attacks`) and the per-point energies."""
    clean = point_energies(model, x, y)
    per_point, table = {}, {}
    for name in attacks:
        out = clean if name == "clean" else attack_energies(model, x, y, name, eps, seed, n_iter)
        per_point[name] = out
        kind = "clean" if name == "clean" else ("untargeted" if name in UNTARGETED else "targeted")
        table[name] = {"kind": kind, "E_x": summary(out["E_x"]), "E_xy": summary(out["E_xy"]),
                       "frac_E_x_down": (out["E_x"] < clean["E_x"]).double().mean().item(),
                       "success_rate": None if name == "clean" else out["success"].double().mean().item()}
    return table, per_point


def plot_histograms(per_point: dict, keys: tuple, path: str, title: str) -> None:
    """One panel per key (E_x, E_xy, dE ...), one step histogram per entry; 'clean' in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    labels = {"E_x": "marginal energy E(x)", "E_xy": "joint energy E(x, y)", "dE": "dE = E(x) - E(x*)"}
    for ax, key in zip(axes[0], keys):
        values = torch.cat([v[key] for v in per_point.values()]).double().numpy()
        bins = np.linspace(*np.percentile(values, [0.5, 99.5]), 50) if len(values) > 1 else 10
        for name, out in per_point.items():
            style = {"color": CLEAN_COLOR, "linewidth": 2.2} if name == "clean" else {"linewidth": 1.4}
            ax.hist(out[key].double().numpy(), bins=bins, histtype="step", label=name, **style)
        ax.set_xlabel(labels.get(key, key))
        ax.set_ylabel("points")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_attack(ckpt: dict) -> tuple:
    """The attack a checkpoint was trained with: (name, eps, steps, step size) from its stored args."""
    a = ckpt["args"]
    return ("pgd-ce" if a.get("loss") == "sat" else "trades-kl"), a["eps"] * PIXEL, a["steps"], a["step_size"] * PIXEL


def divergence(model, x, y, ckpt: dict, seed: int = 0) -> dict:
    """dE = E(x) - E(x*) per test point with x* from the checkpoint's training-time attack."""
    name, eps, steps, alpha = training_attack(ckpt)
    torch.manual_seed(seed)
    with A.eval_mode(model):
        x_adv = (A.pgd(model, x, y, eps, alpha, steps, last_iterate=True) if name == "pgd-ce"
                 else A.trades_attack(model, x, eps, alpha, steps))  # as during training: the last iterate
    clean, adv = point_energies(model, x, y), point_energies(model, x_adv, y)
    return {"attack": name, "eps": eps, "steps": steps, "step_size": alpha, "dE": clean["E_x"] - adv["E_x"],
            "E_x": clean["E_x"], "E_x_adv": adv["E_x"]}


def read_log(path: str) -> tuple:
    """(label, rows) of a train.py log.jsonl; the label is the run's method from args.json beside it."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise DataError(f"{path} holds no epochs")
    args_path = os.path.join(os.path.dirname(os.path.abspath(path)), "args.json")
    label = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if os.path.isfile(args_path):
        with open(args_path) as f:
            a = json.load(f)
        label = f"{method_name(a)} ({os.path.basename(os.path.dirname(os.path.abspath(path)))})"
    return label, rows


def plot_curves(runs: list, path: str) -> None:
    """Left: dE per epoch with validation PGD-20 accuracy (dashed) on a second axis. Right: E_nat
    (solid) and E_adv (dashed) per epoch. One colour per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    acc_axis = left.twinx()
    for i, (label, rows) in enumerate(runs):
        color, epochs = f"C{i}", [r["epoch"] for r in rows]
        left.plot(epochs, [r["delta_E"] for r in rows], color=color, marker="o", ms=3, label=label)
        acc_axis.plot(epochs, [100 * r["val_pgd_acc"] for r in rows], color=color, linestyle="--")
        right.plot(epochs, [r["E_nat"] for r in rows], color=color, label=f"{label}: E(x)")
        right.plot(epochs, [r["E_adv"] for r in rows], color=color, linestyle="--", label=f"{label}: E(x*)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.set(xlabel="epoch", ylabel="dE = E(x) - E(x*) (solid)", title="energy divergence")
    acc_axis.set_ylabel("validation PGD-20 accuracy % (dashed)")
    right.set(xlabel="epoch", ylabel="mean energy", title="natural (solid) and adversarial (dashed) energy")
    left.legend(fontsize=8, loc="upper left")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Energy analysis of robust classifiers (Section 3 of the paper).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
    common.add_argument("--n-examples", type=int, default=1000, help="first n test points")
    common.add_argument("--seed", type=int, default=0, help="seeds the attacks")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    common.add_argument("--data-dir", default=None, help="default: the one stored in the checkpoint")
    common.add_argument("--test-npz", default=None, help="default: the one stored in the checkpoint")
    common.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    a = sub.add_parser("attacks", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="E(x) and E(x,y) of clean points and of untargeted / targeted attacks")
    a.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels")
    a.add_argument("--n-iter", type=int, default=100, help="APGD iterations")
    sub.add_parser("divergence", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                   help="dE = E(x) - E(x*) per test point, x* from the checkpoint's training attack")
    c = sub.add_parser("curves", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="dE and mean energies over epochs from train.py logs")
    c.add_argument("--log", nargs="+", required=True, help="log.jsonl files of train.py runs")
    c.add_argument("--out", default=None, help="output folder (default: the first log's folder)")
    return p


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def run_attacks(args, device) -> dict:
    model, x, y, _ = load_test_points(args.ckpt, args.n_examples, device, args.data_dir, args.test_npz)
    table, per_point = attacks_table(model, x, y, args.eps * PIXEL, seed=args.seed, n_iter=args.n_iter)
    report = {"checkpoint": os.path.abspath(args.ckpt), "n": len(y), "eps_pixels": args.eps, "seed": args.seed,
              "attacks": table}
    write_json(os.path.join(args.out, "energy_attacks.json"), report)
    plot_histograms(per_point, ("E_x", "E_xy"), os.path.join(args.out, "energy_attacks.png"),
                    f"energies under attack, eps {args.eps:g}/255, {len(y)} test points")
    return report


def run_divergence(args, device) -> dict:
    model, x, y, ckpt = load_test_points(args.ckpt, args.n_examples, device, args.data_dir, args.test_npz)
    out = divergence(model, x, y, ckpt, args.seed)
    d = out["dE"].double()
    report = {"checkpoint": os.path.abspath(args.ckpt), "n": len(y), "attack": out["attack"], "eps": out["eps"],
              "steps": out["steps"], "step_size": out["step_size"], "seed": args.seed, "dE": summary(out["dE"]),
              "dE_quantiles": dict(zip(("q05", "q25", "q75", "q95"), d.quantile(d.new_tensor([.05, .25, .75, .95])).tolist())),
              "E_x": summary(out["E_x"]), "E_x_adv": summary(out["E_x_adv"])}
    write_json(os.path.join(args.out, "energy_divergence.json"), report)
    plot_histograms({out["attack"]: {"dE": out["dE"]}}, ("dE",), os.path.join(args.out, "energy_divergence.png"),
                    f"dE under the training attack ({out['attack']}), {len(y)} test points")
    return report


def run_curves(args) -> dict:
    runs = [read_log(path) for path in args.log]
    report = {label: [{k: r[k] for k in ("epoch", "delta_E", "E_nat", "E_adv", "val_pgd_acc")} for r in rows]
              for label, rows in runs}
    write_json(os.path.join(args.out, "energy_curves.json"), report)
    plot_curves(runs, os.path.join(args.out, "energy_curves.png"))
    return report


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = os.path.dirname(os.path.abspath(args.ckpt if args.mode != "curves" else args.log[0]))
    os.makedirs(args.out, exist_ok=True)
    device = resolve_device(getattr(args, "device", "auto"))
    try:
        if args.mode == "attacks":
            report = run_attacks(args, device)
            for name, row in report["attacks"].items():
                success = "" if row["success_rate"] is None else f"  success {100 * row['success_rate']:.1f}%"
                print(f"{name:<11} E(x) {row['E_x']['mean']:8.3f} +- {row['E_x']['std']:.3f}   E(x,y) "
                      f"{row['E_xy']['mean']:8.3f}   E(x) went down for {100 * row['frac_E_x_down']:5.1f}%{success}")
        elif args.mode == "divergence":
            report = run_divergence(args, device)
            print(f"dE = E(x) - E(x*) under {report['attack']}: mean {report['dE']['mean']:.4f}, "
                  f"std {report['dE']['std']:.4f}, median {report['dE']['median']:.4f} ({report['n']} points)")
        else:
            run_curves(args)
    except (CheckpointError, DataError, OSError) as e:
        print(f"energy.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
