"""The energy analysis of Section 3 of the paper, as a command: how attacks move E(x) and E(x, y), the
natural-adversarial energy gap of a checkpoint, its WEAT weights, energies over training, and
RobustBench models. The equations themselves are in energy.py.

    python analysis.py attacks --ckpt runs/A/best.pt --n-examples 1000     # how attacks move E(x), E(x,y) (Fig. 2)
    python analysis.py divergence --ckpt runs/A/best.pt                    # dE, dE(x,y) per point
    python analysis.py weights --ckpt runs/A/best.pt                       # WEAT weight against E(x)
    python analysis.py curves --log runs/A/log.jsonl --epochs 1,50,100     # dE over epochs; Fig. 1 b-d
    python analysis.py zoo Wong2020Fast Engstrom2019Robustness --test-npz cifar10_test.npz   # RobustBench models
"""
import argparse
import itertools
import json
import os

import numpy as np
import scipy.stats
import torch

import attacks as A
from attacks import PIXEL
from data import DataError, split_of_run, to_unit
from energy import energy_x, energy_xy, weat_weights
from methods import METHODS, method_key, method_name, training_attack
from models import (DEFAULT_IN_HELP, CheckpointError, add_classifier_flags, add_zoo_flags, load_classifier,
                    resolve_device, run_command, write_json)

# ---------------------------------------------------------------------------------------------------
# Energy analysis (Section 3): library functions that apply to any classifier

UNTARGETED = ("pgd-ce", "trades-pgd", "apgd-ce", "apgd-dlr", "fab", "square")
TARGETED = ("apgd-t", "cw-l2", "pgd-target", "cw-target")
# Not an attack: a perturbation as large as the attacks' (Linf eps) that reads no model, the baseline an
# attack's energy shift is read against (does any eps-sized change move E(x) this way?). Not in the paper.
BASELINES = ("noise",)
RANDOM_TARGET = ("cw-l2", "pgd-target", "cw-target")  # towards a class drawn uniformly among the others
POINT_RULES = ("final", "first-adversarial")
ANALYSIS_STEPS = 10  # the notebook's K: PGD, TPGD, APGD, FAB and CW run K iterations (step 2/255)
SQUARE_QUERIES = 1000  # the notebook's Square budget
CW_C, CW_KAPPA, CW_LR = 1.0, 0.0, 0.01  # the notebook's torchattacks.CW(c=1, kappa=0, lr=0.01)
# What each attack name means, for the command's help (attack_points runs them).
ATTACK_TEXT = {
    "pgd-ce": "PGD on the cross-entropy loss",
    "trades-pgd": "TRADES' attack: sign-gradient ascent on the KL divergence from the clean prediction",
    "apgd-ce": "auto-PGD (APGD) on the cross-entropy loss",
    "apgd-dlr": "APGD on the difference-of-logits-ratio (DLR) loss",
    "fab": "FAB, the fast adaptive boundary attack (untargeted)",
    "square": f"Square, a black-box random search ({SQUARE_QUERIES} queries)",
    "apgd-t": "targeted APGD on the DLR loss, towards each of the 9 next most likely classes in turn",
    "cw-l2": "the Carlini-Wagner L2 attack towards a random other class (not bounded by --eps)",
    "pgd-target": "PGD on the cross-entropy loss towards a random other class",
    "cw-target": "PGD on the Carlini-Wagner margin loss towards a random other class (not the Carlini-Wagner attack)",
    "noise": "the baseline, not an attack: every pixel moved by +eps or -eps at random, reading no model",
}
# Which point each attack hands back. "final": what the paper's tool (torchattacks, as the authors'
# Energy_analysis_sec_3.ipynb calls it) returns; "first-adversarial": the robust-accuracy rule of
# attacks.py (the first fooling point, else the highest-loss one).
POINTS = {
    "pgd-ce": ("last iterate", "first fooling iterate, else the highest-CE one"),
    "trades-pgd": ("last iterate", "last iterate (KL ascent has no fooling point)"),
    "apgd-ce": ("last misclassified iterate, x itself if none", "first fooling iterate, else the highest-loss one"),
    "apgd-dlr": ("last misclassified iterate, x itself if none", "first fooling iterate, else the highest-loss one"),
    "apgd-t": ("last misclassified iterate, x itself if none", "first fooling iterate, else the highest-loss one"),
    "fab": ("smallest adversarial point within eps, x itself if none", "the same, else its last iterate"),
    "square": ("the query point that fooled, x itself if none", "the same, else the lowest-margin point"),
    "cw-l2": ("smallest-L2 point reaching the target, x itself if none", "the same, else its last iterate"),
    "pgd-target": ("last iterate", "first iterate reaching the target, else the highest-objective one"),
    "cw-target": ("last iterate", "first iterate reaching the target, else the highest-objective one"),
    "noise": ("x + eps x a random sign per pixel, clipped to [0, 1]", "the same"),
}


def attack_points(model, x, y, attack: str, eps: float, steps: int = ANALYSIS_STEPS, points: str = "final",
                  seed: int = 0) -> tuple:
    """x* of a named attack (see POINTS for which point each rule hands back) and its random target
    class (None for attacks without one). The notebook's settings: step 2/255, `steps` iterations, Square
    1000 queries, CW c = 1, kappa 0, Adam lr 0.01. cw-l2 is an L2 attack: its x* is not in the eps-ball."""
    if attack not in POINTS or points not in POINT_RULES:
        raise ValueError(f"attack in {', '.join(POINTS)} and points in {POINT_RULES}; got {attack!r}, {points!r}")
    torch.manual_seed(seed)  # PGD's random starts
    final, step_size = points == "final", A.PGD20_STEP_SIZE
    with A.eval_mode(model):
        target = random_targets(model, x, y, seed) if attack in RANDOM_TARGET else None
        x_adv = {
            "pgd-ce": lambda: A.pgd(model, x, y, eps, step_size, steps, last_iterate=final),
            "trades-pgd": lambda: A.trades_attack(model, x, eps, step_size, steps),
            "apgd-ce": lambda: A.apgd(model, x, y, eps, steps, "ce", seed=seed, last_fooled=final),
            "apgd-dlr": lambda: A.apgd(model, x, y, eps, steps, "dlr", seed=seed, last_fooled=final),
            "apgd-t": lambda: A.apgd_targeted(model, x, y, eps, steps, seed=seed, last_fooled=final),
            "fab": lambda: A.fab(model, x, y, eps, steps),
            "square": lambda: A.square(model, x, y, eps, SQUARE_QUERIES, seed=seed, rescale_schedule=True),  # torchattacks
            "cw-l2": lambda: A.cw_l2(model, x, y, CW_C, CW_KAPPA, steps, CW_LR, target),
            "pgd-target": lambda: A.pgd(model, x, y, eps, step_size, steps, target=target, last_iterate=final),
            "cw-target": lambda: A.pgd(model, x, y, eps, step_size, steps, loss="cw", target=target, last_iterate=final),
            "noise": lambda: random_corners(x, eps, seed),
        }[attack]()
        if final and attack in ("fab", "square", "cw-l2"):  # torchattacks hands back x where it failed
            reached = A.predict(model, x_adv) == target if target is not None else A.predict(model, x_adv) != y
            x_adv = torch.where(reached.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
    return x_adv, target


def random_corners(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """x moved by +eps or -eps in every pixel, each sign drawn with `seed` (a corner of the Linf ball, as far
    as an attack may go), clipped to the image range."""
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype) * 2 - 1
    return (x + eps * signs).clamp(0, 1)


@torch.no_grad()
def random_targets(model, x, y, seed: int) -> torch.Tensor:
    """A class other than y for each point, drawn uniformly with `seed` (model in eval mode)."""
    num_classes = model(x[:1]).shape[1]
    offset = torch.randint(1, num_classes, (len(y),), generator=torch.Generator().manual_seed(seed))
    return (y + offset.to(y.device)) % num_classes


@torch.no_grad()
def point_energies(model, x, y, batch_size: int = 500) -> dict:
    """E(x), E(x, y) and the prediction of each point, as CPU tensors (model in eval mode)."""
    with A.eval_mode(model):
        logits = torch.cat([model(xb) for xb in x.split(batch_size)])
    return {"E_x": energy_x(logits).cpu(), "E_xy": energy_xy(logits, y).cpu(), "pred": logits.argmax(1).cpu()}


def attack_energies(model, x, y, attack: str, eps: float, steps: int = ANALYSIS_STEPS, points: str = "final",
                    seed: int = 0) -> dict:
    """Per-point energies of x* = attack(x), whether the attack succeeded on each point (cw-l2,
    pgd-target, cw-target: reached its target; otherwise: misclassified) and how far x* moved."""
    x_adv, target = attack_points(model, x, y, attack, eps, steps, points, seed)
    out = point_energies(model, x_adv, y)
    out["success"] = out["pred"] == target.cpu() if target is not None else out["pred"] != y.cpu()
    out["linf"] = (x_adv - x).flatten(1).abs().amax(1).cpu()
    out["l2"] = (x_adv - x).flatten(1).norm(dim=1).cpu()
    return out


def summary(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": v.mean().item(), "std": v.std().item() if len(v) > 1 else 0.0, "median": v.median().item()}


BOOTSTRAP_DRAWS = 2000


def mean_shift(clean: torch.Tensor, attacked: torch.Tensor, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """Mean of attacked - clean over points, with its 95% bootstrap interval (percentile, resampling
    points with replacement, a fixed seed): a shift counts as a move only if the interval excludes 0."""
    d = (attacked.double() - clean.double()).cpu()
    g = torch.Generator().manual_seed(seed)
    means = d[torch.randint(len(d), (draws, len(d)), generator=g)].mean(1)
    lo, hi = means.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": d.mean().item(), "lo": lo, "hi": hi}


def kind_of(attack: str) -> str:
    return "baseline" if attack in BASELINES else "untargeted" if attack in UNTARGETED else "targeted"


DETERMINISTIC = ("fab",)  # the one attack here with no random start, restart or target: run once


def attacks_table(model, x, y, eps: float, attacks=BASELINES + UNTARGETED + TARGETED, steps: int = ANALYSIS_STEPS,
                  points: str = "final", seeds=(0,)) -> tuple:
    """Per-attack energy statistics (the JSON of `analysis.py attacks`) and the per-point energies (of the
    first seed). Each attack with randomness (a random start, restart or target) runs once per seed: the
    shift of the mean E(x) is then that of the per-point E(x*) averaged over the seeds, its bootstrap
    interval resamples points (so it holds what is left of the attack's randomness after the averaging),
    and E_x_shift_by_seed lists each seed's own shift. One seed gives the single-run figures."""
    clean = point_energies(model, x, y)
    per_point, table = {"clean": clean}, {"clean": {"kind": "clean", "E_x": summary(clean["E_x"]),
                                                    "E_xy": summary(clean["E_xy"])}}
    for name in attacks:
        runs = [attack_energies(model, x, y, name, eps, steps, points, seed)
                for seed in (seeds[:1] if name in DETERMINISTIC else seeds)]
        out = per_point[name] = runs[0]
        over_seeds = lambda key: torch.stack([r[key] for r in runs]).double().mean(0)  # noqa: E731
        fraction = lambda test: float(np.mean([test(r).double().mean().item() for r in runs]))  # noqa: E731
        table[name] = {"kind": kind_of(name), "point": POINTS[name][points == "first-adversarial"],
                       "threat": "L2, unbounded (not in the Linf ball)" if name == "cw-l2" else f"Linf, eps {eps * 255:g}/255",
                       "seeds": list(seeds[:len(runs)]), "E_x": summary(out["E_x"]), "E_xy": summary(out["E_xy"]),
                       "E_x_shift": mean_shift(clean["E_x"], over_seeds("E_x")),
                       "E_xy_shift": mean_shift(clean["E_xy"], over_seeds("E_xy")),
                       "E_x_shift_by_seed": [(r["E_x"].double() - clean["E_x"].double()).mean().item() for r in runs],
                       "frac_E_x_down": fraction(lambda r: r["E_x"] < clean["E_x"]),
                       "frac_E_xy_down": fraction(lambda r: r["E_xy"] < clean["E_xy"]),
                       "success_rate": fraction(lambda r: r["success"]),
                       "mean_linf": out["linf"].double().mean().item(), "mean_l2": out["l2"].double().mean().item()}
    return table, per_point


def divergence(model, x, y, attack: tuple, seed: int = 0) -> dict:
    """dE = E(x) - E(x*) and dE(x, y) = E(x, y) - E(x*, y) per point, x* from `attack` = (name, eps, steps,
    step size), a methods.TRAINING_ATTACKS name: a checkpoint's own training attack (`checkpoint_attack`),
    last iterate as during training."""
    name, eps, steps, step_size = attack
    torch.manual_seed(seed)
    with A.eval_mode(model):
        x_adv, _ = training_attack(name, model, x, y, eps, step_size, steps)
    clean, adv = point_energies(model, x, y), point_energies(model, x_adv, y)
    return {"attack": name, "eps": eps, "steps": steps, "step_size": step_size, "dE": clean["E_x"] - adv["E_x"],
            "dExy": clean["E_xy"] - adv["E_xy"], "E_x": clean["E_x"], "E_x_adv": adv["E_x"],
            "E_xy": clean["E_xy"], "E_xy_adv": adv["E_xy"]}


# divergence's x* for a model trained without an attack: RobustBench models (whose training attack is not
# recorded) and --loss natural checkpoints (x* = x would make every gap 0): the TRADES attack, eps 8/255,
# K = 10, step 2/255
NO_TRAINING_ATTACK = ("trades-kl", 8 * PIXEL, ANALYSIS_STEPS, A.PGD20_STEP_SIZE)


def checkpoint_attack(info: dict) -> tuple:
    """The attack a train.py checkpoint was trained with, (name, eps, steps, step size), from its stored
    args and the methods table; NO_TRAINING_ATTACK for a model without one (RobustBench, natural training)."""
    a = info["args"]
    if "loss" not in a or METHODS[method_key(a)].attack == "none":
        return NO_TRAINING_ATTACK
    return METHODS[method_key(a)].attack, a["eps"] * PIXEL, a["steps"], a["step_size"] * PIXEL


def weight_analysis(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """WEAT weight against E(x) for a set of points, and the share of high- and low-energy points
    (E(x) above / at or below the set's median) among the correctly and wrongly classified ones."""
    e, w = energy_x(logits.detach()), weat_weights(logits)
    high = e > e.median()
    correct = logits.argmax(1) == y
    share = lambda mask: {"n": int(mask.sum()), "high_energy": (high & mask).sum().item() / max(int(mask.sum()), 1),  # noqa: E731
                          "low_energy": (~high & mask).sum().item() / max(int(mask.sum()), 1)}
    return {"E_x": e.cpu(), "weight": w.cpu(), "correct_mask": correct.cpu(), "median_E_x": e.median().item(),
            "correct": share(correct), "wrong": share(~correct)}


# ---------------------------------------------------------------------------------------------------
# Figures

CLEAN_COLOR, ATTACK_COLOR = "lightblue", "red"  # the paper's Fig. 2 colours
LABELS = {"E_x": "E(x)", "E_xy": "E(x, y)", "dE": "dE = E(x) - E(x*)", "dExy": "dE(x,y) = E(x,y) - E(x*,y)"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported only where a figure is drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


PANELS_PER_ROW = 5
FIGURE_WIDTH_IN, FIGURE_DPI = 9.0, 100  # 900 px: a docs page's width, so that the fonts below show at their size
FONT_PT = 10  # every label of the attack figures, at FIGURE_DPI and FIGURE_WIDTH_IN


def plot_attack_panels(per_point: dict, table: dict, path: str, title: str) -> None:
    """The paper's Fig. 2 as two figures, each one panel per attack: E(x) at `path`, E(x, y) beside it
    (`-xy` before the extension). Clean and attacked points as overlaid histograms on shared bins, their
    means as lines, the mean shift with its 95% bootstrap interval (from `table`, the attacks_table of the
    same points) in each title; at most PANELS_PER_ROW a row. With several attack seeds the histograms and
    the attacked mean are the first seed's and the title's shift is the table's (over the seeds): the
    figure's title says so."""
    attacks = [name for name in per_point if name != "clean"]
    if any(len(table[name]["seeds"]) > 1 for name in attacks):
        title += "; histograms: the first attack seed; shifts: averaged over the seeds"
    root, ext = os.path.splitext(path)
    for key, out in (("E_x", path), ("E_xy", f"{root}-xy{ext}")):
        plot_energy_panels(per_point, table, attacks, key, out, f"{LABELS[key]}: {title}")


def plot_energy_panels(per_point: dict, table: dict, attacks: list, key: str, path: str, title: str) -> None:
    """One energy (`key`) of plot_attack_panels: a histogram panel per attack, FIGURE_WIDTH_IN wide, every
    label FONT_PT."""
    import textwrap
    plt = pyplot()
    cols = min(PANELS_PER_ROW, len(attacks))
    rows = -(-len(attacks) // cols)
    with plt.rc_context({"font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT,
                         "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT}):
        fig, axes = plt.subplots(rows, cols, figsize=(FIGURE_WIDTH_IN, 2.1 * rows + 1.1), squeeze=False,
                                 sharey=True, layout="constrained")
        values = torch.cat([v[key] for v in per_point.values()]).double().numpy()
        bins = np.linspace(*np.percentile(values, [0.5, 99.5]), 30) if len(values) > 1 else 10
        clean = per_point["clean"][key].double()
        for i, ax in enumerate(axes.flat):
            if i >= len(attacks):
                ax.axis("off")
                continue
            name, attacked = attacks[i], per_point[attacks[i]][key].double()
            ax.hist(clean.numpy(), bins=bins, color=CLEAN_COLOR, alpha=0.9, label="clean")
            ax.hist(attacked.numpy(), bins=bins, color=ATTACK_COLOR, alpha=0.55, label="attacked")
            ax.axvline(clean.mean().item(), color="tab:blue", lw=1.2, label="clean mean")
            ax.axvline(attacked.mean().item(), color="darkred", lw=1.2, ls="--", label="attacked mean")
            shift = table[name][f"{key}_shift"]
            ax.set_title(f"{name} {shift['mean']:+.3f}\n[{shift['lo']:+.3f}, {shift['hi']:+.3f}]")
            ax.xaxis.set_major_locator(plt.MaxNLocator(3))
            ax.yaxis.set_major_locator(plt.MaxNLocator(3))
            if i % cols == 0:
                ax.set_ylabel("points")
            if i // cols == rows - 1 or i + cols >= len(attacks):
                ax.set_xlabel(LABELS[key])
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=4, frameon=False)
        fig.suptitle(textwrap.fill(title + "; above each panel: the shift of the mean and its 95% interval", 105),
                     fontsize=FONT_PT)
        fig.savefig(path, dpi=FIGURE_DPI)
        plt.close(fig)


def plot_histograms(per_point: dict, keys: tuple, path: str, title: str) -> None:
    """One panel per key (dE, dExy, E_x ...), one step histogram per entry."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = torch.cat([v[key] for v in per_point.values()]).double().numpy()
        bins = np.linspace(*np.percentile(values, [0.5, 99.5]), 50) if len(values) > 1 else 10
        for name, out in per_point.items():
            ax.hist(out[key].double().numpy(), bins=bins, histtype="step", linewidth=1.6, label=name)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set(xlabel=LABELS.get(key, key), ylabel="points")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_log(path: str) -> tuple:
    """(label, rows) of a train.py log.jsonl; the label is the run's method from args.json beside it."""
    not_a_log = DataError(f"{path} is not a train.py log.jsonl (each line a JSON object with epoch, lr, delta_E, ...)")
    with open(path) as f:
        try:
            rows = [json.loads(line) for line in f if line.strip()]
        except json.JSONDecodeError:
            raise not_a_log from None
    if not rows:
        raise DataError(f"{path} holds no epochs")
    if not all(isinstance(row, dict) and {"epoch", "lr", "delta_E"} <= set(row) for row in rows):
        raise not_a_log
    folder = os.path.dirname(os.path.abspath(path))
    label = os.path.basename(folder)
    if os.path.isfile(os.path.join(folder, "args.json")):
        with open(os.path.join(folder, "args.json")) as f:
            label = f"{method_name(json.load(f))} ({label})"
    return label, rows


def plot_curves(runs: list, path: str) -> None:
    """Left: dE (solid) and dE(x,y) (dotted) per epoch, validation PGD-20 accuracy (dashed) on a second
    axis. Right: E_nat (solid) and E_adv (dashed) per epoch. One colour per run."""
    plt = pyplot()
    import matplotlib.ticker
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    acc_axis = left.twinx()
    for i, (label, rows) in enumerate(runs):
        color, epochs = f"C{i}", [r["epoch"] for r in rows]
        left.plot(epochs, [r["delta_E"] for r in rows], color=color, marker="o", ms=3, label=label)
        if all("delta_Exy" in r for r in rows):
            left.plot(epochs, [r["delta_Exy"] for r in rows], color=color, linestyle=":")
        acc_axis.plot(epochs, [100 * r["val_pgd_acc"] if r["val_pgd_acc"] is not None else np.nan for r in rows],
                      color=color, linestyle="--")
        right.plot(epochs, [r["E_nat"] for r in rows], color=color, label=f"{label}: E(x)")
        right.plot(epochs, [r["E_adv"] for r in rows], color=color, linestyle="--", label=f"{label}: E(x*)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.set(xlabel="epoch", ylabel="dE = E(x) - E(x*) (solid), dE(x,y) (dotted)", title="energy divergence")
    acc_axis.set_ylabel("validation PGD-20 accuracy % (dashed)")
    right.set(xlabel="epoch", ylabel="mean energy", title="natural (solid) and adversarial (dashed) energy")
    left.legend(fontsize=8, loc="upper left")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def snapshot_path(log_path: str, epoch: int) -> str:
    """The energy snapshot file (train.py --energy-snapshot) of one epoch of the run beside log_path; DataError
    if there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(log_path)), "energy-snapshots", f"epoch-{epoch:04d}.npz")
    if not os.path.isfile(path):
        raise DataError(f"no energy snapshot of epoch {epoch}: {path} (train with --energy-snapshot N)")
    return path


def read_snapshot(log_path: str, epoch: int) -> dict:
    """The energy snapshot (train.py --energy-snapshot) of one epoch of the run beside log_path."""
    path = snapshot_path(log_path, epoch)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def plot_snapshots(runs: list, epochs: list, path: str) -> None:
    """The paper's Fig. 1 b-d: E(x, y) against E(x) of the snapshot's training points at chosen epochs (a
    row per run, a column per epoch); natural points in blue, their attack points in red."""
    plt = pyplot()
    fig, axes = plt.subplots(len(runs), len(epochs), figsize=(3.6 * len(epochs), 3.4 * len(runs)), squeeze=False)
    for row, (label, log_path) in enumerate(runs):
        for col, epoch in enumerate(epochs):
            snap, ax = read_snapshot(log_path, epoch), axes[row, col]
            ax.scatter(snap["E_x"], snap["E_xy"], s=4, color="C0", alpha=0.5, label="x")
            ax.scatter(snap["E_x_adv"], snap["E_xy_adv"], s=4, color="C3", alpha=0.5, label="x*")
            ax.set_title(f"{label}, epoch {epoch}", fontsize=8)
            ax.set_xlabel("E(x)", fontsize=8)
            ax.set_ylabel("E(x, y)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_weights(analyses: dict, path: str) -> None:
    """Left: WEAT weight against E(x) (correct points blue, wrong ones red), one marker per split. Right:
    the share of high-energy points among correct and wrong ones, per split."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (split, a), marker in zip(analyses.items(), ("o", "x")):
        ok = a["correct_mask"]
        left.scatter(a["E_x"][ok], a["weight"][ok], s=5, marker=marker, color="C0", alpha=0.4, label=f"{split}, correct")
        left.scatter(a["E_x"][~ok], a["weight"][~ok], s=5, marker=marker, color="C3", alpha=0.4, label=f"{split}, wrong")
    left.set(xlabel="E(x)", ylabel="WEAT weight 1 / log(1 + exp(|E(x)|))", title="weight against energy")
    left.legend(fontsize=7)
    names = [f"{split}\n{kind}" for split in analyses for kind in ("correct", "wrong")]
    shares = [100 * analyses[split][kind]["high_energy"] for split in analyses for kind in ("correct", "wrong")]
    right.bar(names, shares, color=["C0", "C3"] * len(analyses))
    right.axhline(50, color="grey", linestyle=":")
    right.set(ylabel="% with E(x) above the split's median", title="high-energy points among correct / wrong")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_zoo(rows: list, path: str) -> None:
    """The zoo figure: mean dE(x) and dE(x, y) of each model against its robust accuracy."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("dE", "dExy")):
        for r in rows:
            ax.scatter(100 * r["robust_accuracy"], r[key]["mean"], s=25)
            ax.annotate(r["model"], (100 * r["robust_accuracy"], r[key]["mean"]), fontsize=7)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(xlabel="robust accuracy % (PGD-20, eps 8/255)", ylabel=f"mean {LABELS[key]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# The command


def load_points(args, device: str, train: bool = False) -> tuple:
    """(model, x, y, info): the classifier of --ckpt / --robustbench and the first --n-examples points of
    its data set's test split (training split with `train`), x in [0, 1] on `device`."""
    model, info = load_classifier(args, device)
    split = split_of_run(info["args"], train, args.data_dir, args.test_npz if not train else args.train_npz,
                         info["model_config"]["num_classes"])
    n = min(args.n_examples, len(split))
    return model, to_unit(split.images[:n].to(device)), split.labels[:n].to(device), info


ENERGY_DIR = os.path.join("runs", "energy")  # the default output folder of RobustBench models: ENERGY_DIR/NAME
EXAMPLES = "examples:\n" + "\n".join(line for line in __doc__.splitlines() if line.lstrip().startswith("python "))
DESCRIPTIONS = {
    "attacks": "E(x) and E(x, y) of clean test points and of the points each attack moves them to (the paper's "
               "Fig. 2), with the settings of the authors' notebook: step 2/255, --steps iterations, Square "
               f"{SQUARE_QUERIES} queries, CW c = {CW_C:g}, kappa {CW_KAPPA:g}, lr {CW_LR:g}. Writes energy_attacks.json "
               "(per attack: mean, std and median of both energies, the shift of their means from the clean "
               "points with a 95% bootstrap interval, the share of points whose energy went down, the success "
               "rate) and the histograms energy_attacks.png (E(x)) and energy_attacks-xy.png (E(x, y)).",
    "divergence": "The energy gaps dE = E(x) - E(x*) and dE(x, y) = E(x, y) - E(x*, y) of each test point, x* "
                  "from the attack the checkpoint was trained with (its last iterate, as in training). Where "
                  "there is no training attack to use (RobustBench models, whose training attack is not recorded, "
                  "and --loss natural checkpoints, whose x* would be x itself and every gap 0), x* comes from the "
                  "TRADES attack: eps 8/255, 10 steps of 2/255. Writes energy_divergence.json and "
                  "energy_divergence.png.",
    "weights": "The WEAT weight 1 / log(1 + exp(|E(x)|)) against E(x) of the first --n-examples training points "
               "and the first --n-examples test points, and the share of high-energy points (E(x) above the "
               "split's median) among the correctly and the wrongly classified ones. Writes energy_weights.json "
               "and energy_weights.png.",
    "zoo": "For each RobustBench model: the mean dE and dE(x, y) under PGD on the cross-entropy (last iterate, "
           "eps 8/255, 10 steps of 2/255) against its PGD-20 robust accuracy, on the same test points. Writes "
           "energy_zoo.json and energy_zoo.png.",
    "curves": "From train.py logs: dE, dE(x, y) and the mean energies over epochs, with the validation PGD-20 "
              "accuracy (energy_curves.json, energy_curves.png); with --epochs, E(x, y) against E(x) of each "
              "run's energy snapshot points at those epochs, the paper's Fig. 1 b-d (energy_snapshots.png; the "
              "runs must have saved snapshots at those epochs, train.py --energy-snapshot).",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults appended to the flags' help; the description and the examples printed as written."""


def add_point_flags(parser, n_text: str, zoo: bool = False) -> None:
    """The flags of the modes that analyse test points (and training points: weights) of a model."""
    parser.add_argument("--n-examples", type=int, default=1000, help=n_text)
    parser.add_argument("--seed", type=int, default=0, help="seeds the attacks")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    if zoo:
        parser.add_argument("--data-dir", default="data", help="the folder the test set is read from")
    else:
        parser.add_argument("--data-dir", default=None, help="the folder the data set is read from (default: with "
                            "--ckpt, the one stored in the checkpoint; with --robustbench, data)" + DEFAULT_IN_HELP)
    parser.add_argument("--test-npz", default=None, help="test points from this npz instead of the data set's")
    if zoo:
        parser.add_argument("--out", default=os.path.join(ENERGY_DIR, "zoo"), help="output folder")
    else:
        parser.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder; with "
                            f"--robustbench NAME: {os.path.join(ENERGY_DIR, 'NAME')})" + DEFAULT_IN_HELP)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Energy analysis of robust classifiers (Section 3 of the paper).\n"
                                "`analysis.py MODE --help` describes a mode and its flags.",
                                epilog=EXAMPLES, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)

    def mode(name: str, text: str, n_text: str = None):
        parser = sub.add_parser(name, help=text, description=DESCRIPTIONS[name],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if n_text:
            add_point_flags(parser, n_text, zoo=name == "zoo")
            if name != "zoo":
                add_classifier_flags(parser)
        return parser

    a = mode("attacks", "E(x) and E(x,y) of clean points, of untargeted / targeted attacks (the paper's Fig. 2) and of random eps noise",
             "the first n test points")
    a.add_argument("--eps", type=float, default=8.0, help="Linf radius in pixels")
    a.add_argument("--steps", type=int, default=ANALYSIS_STEPS, help="iterations K of every iterative attack")
    a.add_argument("--points", choices=POINT_RULES, default="final",
                   help="which point of each attack is analysed. final: the one the paper's tool (torchattacks) "
                        "returns: the last iterate of the PGD attacks, the last misclassified iterate of APGD, "
                        "and x itself where APGD, FAB, Square or CW-L2 fail. first-adversarial: the point robust "
                        "accuracy is measured on: the first one that fools the model (targeted attacks: that "
                        "reaches the target), else the attack's own fallback (the highest-loss iterate for PGD and APGD; "
                        "docs/analysis.md has a table per attack)")
    a.add_argument("--attack-seeds", type=int, default=1,
                   help="run each attack that uses random numbers (a random start, restart or target: all but fab) "
                        "N times, with seeds --seed to --seed + N - 1; the energy shifts reported are then those of "
                        "each point's energy averaged over the N runs, and the histograms show the first run")
    a.add_argument("--attacks", default=",".join(BASELINES + UNTARGETED + TARGETED),
                   help="comma-separated names (default: all of them): "
                        + "; ".join(f"{name}: {text}" for name, text in ATTACK_TEXT.items()) + DEFAULT_IN_HELP)
    mode("divergence", "dE and dE(x,y) per test point, x* from the checkpoint's training attack (the TRADES attack "
         "for RobustBench models and naturally trained ones)", "the first n test points")
    w = mode("weights", "WEAT weight against E(x), high- and low-energy points among correct and wrong, train and test",
             "the first n training points and the first n test points")
    w.add_argument("--train-npz", default=None, help="training points from this npz instead of the data set's")
    z = mode("zoo", "dE(x), dE(x,y) of several RobustBench models against their robust accuracy",
             "the first n test points")
    z.add_argument("names", nargs="+", help="RobustBench model names")
    add_zoo_flags(z, given="")
    c = mode("curves", "dE and mean energies over epochs from train.py logs; energy snapshots at --epochs")
    c.add_argument("--log", nargs="+", required=True, help="log.jsonl files of train.py runs")
    c.add_argument("--epochs", default=None,
                   help="comma-separated epoch numbers, e.g. 1,50,100: E(x,y) against E(x) of the runs' snapshots")
    c.add_argument("--out", default=None, help="output folder (default: the first log's folder)" + DEFAULT_IN_HELP)
    return p


def run_attacks(args, device) -> dict:
    model, x, y, info = load_points(args, device)
    attacks = args.attacks  # check_args made it a list
    seeds = tuple(range(args.seed, args.seed + args.attack_seeds))
    table, per_point = attacks_table(model, x, y, args.eps * PIXEL, attacks, args.steps, args.points, seeds)
    report = {"model": info["source"], "n": len(y), "eps_pixels": args.eps, "steps": args.steps,
              "step_size": A.PGD20_STEP_SIZE, "points": args.points, "seed": args.seed, "attack_seeds": list(seeds),
              "attacks": table}
    write_json(os.path.join(args.out, "energy_attacks.json"), report)
    plot_attack_panels({k: per_point[k] for k in ["clean"] + attacks}, table, os.path.join(args.out, "energy_attacks.png"),
                       f"clean (blue) and attacked (red) energies, eps {args.eps:g}/255, K = {args.steps}, "
                       f"points: {args.points}, {len(y)} test points")
    print(f"{'attack':<11}{'kind':>11}{'mean E(x)':>11}{'median':>9}{'E(x) down':>11}{'mean E(x,y)':>13}{'success':>9}")
    for name, row in table.items():
        down, success = (f"{100 * row[k]:.1f}%" if k in row else "" for k in ("frac_E_x_down", "success_rate"))
        print(f"{name:<11}{row['kind']:>11}{row['E_x']['mean']:>11.3f}{row['E_x']['median']:>9.3f}{down:>11}"
              f"{row['E_xy']['mean']:>13.3f}{success:>9}")
    return report


def run_divergence(args, device) -> dict:
    model, x, y, info = load_points(args, device)
    out = divergence(model, x, y, checkpoint_attack(info), args.seed)
    quantiles = lambda v: dict(zip(("q05", "q25", "q75", "q95"), v.double().quantile(  # noqa: E731
        torch.tensor([.05, .25, .75, .95], dtype=torch.float64)).tolist()))
    report = {"model": info["source"], "n": len(y), "attack": out["attack"], "eps": out["eps"], "steps": out["steps"],
              "step_size": out["step_size"], "seed": args.seed, "dE": summary(out["dE"]), "dE_quantiles": quantiles(out["dE"]),
              "dExy": summary(out["dExy"]), "dExy_quantiles": quantiles(out["dExy"]),
              **{k: summary(out[k]) for k in ("E_x", "E_x_adv", "E_xy", "E_xy_adv")},
              "per_point": {k: out[k].tolist() for k in ("dE", "dExy")}}
    write_json(os.path.join(args.out, "energy_divergence.json"), report)
    plot_histograms({out["attack"]: out}, ("dE", "dExy"), os.path.join(args.out, "energy_divergence.png"),
                    f"energy gaps under the training attack ({out['attack']}), {len(y)} test points")
    print(f"under {report['attack']} ({report['n']} points): dE = E(x) - E(x*) mean {report['dE']['mean']:.4f} "
          f"median {report['dE']['median']:.4f}; dE(x,y) mean {report['dExy']['mean']:.4f} median {report['dExy']['median']:.4f}")
    return report


def run_weights(args, device) -> dict:
    analyses = {}
    for split in ("train", "test"):
        model, x, y, info = load_points(args, device, train=split == "train")
        with torch.no_grad():
            logits = torch.cat([model(xb) for xb in x.split(500)])
        analyses[split] = weight_analysis(logits, y)
    report = {"model": info["source"], **{split: {k: a[k] for k in ("median_E_x", "correct", "wrong")} | {
        "weight": summary(a["weight"]), "E_x": summary(a["E_x"])} for split, a in analyses.items()}}
    write_json(os.path.join(args.out, "energy_weights.json"), report)
    plot_weights(analyses, os.path.join(args.out, "energy_weights.png"))
    for split in analyses:
        r = report[split]
        print(f"{split}: mean weight {r['weight']['mean']:.3f}; E(x) above the median for "
              f"{100 * r['correct']['high_energy']:.1f}% of {r['correct']['n']} correct and "
              f"{100 * r['wrong']['high_energy']:.1f}% of {r['wrong']['n']} wrong points")
    return report


ZOO_MIN_MODELS = 5  # the fewest models whose exact rank test can reach p < 0.05 (n = 4: at best 2/24)
ZOO_EXACT_UP_TO = 8  # every ordering of up to 8 models (8! = 40,320); more: ZOO_DRAWS random orderings
ZOO_DRAWS = 100_000


def zoo_trend(rows: list, key: str = "dE", seed: int = 0) -> dict:
    """Claim 4 as a test over the models: Spearman's rank correlation rho between robust accuracy and the size
    |mean dE| (the paper: the more robust, the closer dE to 0, so rho < 0), with a two-sided permutation
    p-value: the share of orderings of the models whose |rho| reaches the observed one, exact over every
    ordering up to ZOO_EXACT_UP_TO models, else over ZOO_DRAWS random ones ((count + 1) / (draws + 1)).
    Ties take average ranks, as in scipy.stats.spearmanr. Verdict: holds (rho < 0, p < 0.05), reversed
    (rho > 0, p < 0.05), not shown, too few models (under ZOO_MIN_MODELS), or no variation to rank."""
    n = len(rows)
    if n < ZOO_MIN_MODELS:
        return {"n": n, "rho": None, "p": None, "method": None,
                "verdict": f"too few models ({n}; a trend needs {ZOO_MIN_MODELS})"}
    accuracy = scipy.stats.rankdata([r["robust_accuracy"] for r in rows])
    size = scipy.stats.rankdata(np.abs([r[key]["mean"] for r in rows]))
    a, b = accuracy - accuracy.mean(), size - size.mean()
    if not a.any() or not b.any():
        return {"n": n, "rho": None, "p": None, "method": None,
                "verdict": "not shown (every model has the same robust accuracy or the same |dE|: nothing to rank)"}
    scale = np.sqrt((a @ a) * (b @ b))
    rho = float(a @ b / scale)
    if n <= ZOO_EXACT_UP_TO:
        orders, method = np.array(list(itertools.permutations(range(n)))), "exact"
    else:
        orders = np.argsort(np.random.default_rng(seed).random((ZOO_DRAWS, n)), axis=1)
        method = f"{ZOO_DRAWS:,} random orderings"
    reached = int(np.sum(np.abs(b[orders] @ a / scale) >= abs(rho) - 1e-12))
    p = reached / len(orders) if method == "exact" else (reached + 1) / (len(orders) + 1)
    verdict = "not shown" if p >= 0.05 else "holds" if rho < 0 else "reversed"
    return {"n": n, "rho": rho, "p": p, "method": method, "verdict": verdict}


def run_zoo(args, device) -> dict:
    rows = []
    for name in args.names:
        args.robustbench, args.ckpt = name, None
        model, x, y, info = load_points(args, device)
        out = divergence(model, x, y, ("pgd-ce", 8 * PIXEL, ANALYSIS_STEPS, A.PGD20_STEP_SIZE), args.seed)
        with A.eval_mode(model):
            x_adv = A.pgd(model, x, y, 8 * PIXEL, A.PGD20_STEP_SIZE, A.PGD20_STEPS)
        rows.append({"model": name, "robust_accuracy": (A.predict(model, x_adv) == y).double().mean().item(),
                     "dE": summary(out["dE"]), "dExy": summary(out["dExy"])})
        print(f"{name}: PGD-20 {100 * rows[-1]['robust_accuracy']:.1f}%, mean dE {rows[-1]['dE']['mean']:.4f}, "
              f"mean dE(x,y) {rows[-1]['dExy']['mean']:.4f}", flush=True)
    trend = {key: zoo_trend(rows, key) for key in ("dE", "dExy")}
    for key, t in trend.items():
        print(f"robust accuracy against |mean {key}| over {t['n']} model{'s' * (t['n'] != 1)}: " + (
            f"Spearman rho {t['rho']:+.2f}, p {t['p']:.3f} ({t['method']}): " if t["rho"] is not None else "") + t["verdict"])
    report = {"n": len(y), "attack": "PGD-CE, last iterate, eps 8/255, K = 10, step 2/255", "models": rows,
              "trend": trend}
    write_json(os.path.join(args.out, "energy_zoo.json"), report)
    plot_zoo(rows, os.path.join(args.out, "energy_zoo.png"))
    return report


def run_curves(args) -> dict:
    runs = [read_log(path) for path in args.log]
    keys = ("epoch", "delta_E", "delta_Exy", "E_nat", "E_adv", "val_pgd_acc", "test_pgd_acc")
    report = {label: [{k: r.get(k) for k in keys} for r in rows] for label, rows in runs}
    for path in args.log if args.epochs else ():  # a missing snapshot stops the run before anything is written
        for epoch in args.epochs:
            snapshot_path(path, epoch)
    write_json(os.path.join(args.out, "energy_curves.json"), report)
    plot_curves(runs, os.path.join(args.out, "energy_curves.png"))
    if args.epochs:
        plot_snapshots([(label, path) for (label, _), path in zip(runs, args.log)], args.epochs,
                       os.path.join(args.out, "energy_snapshots.png"))
    return report


def parse_epochs(text: str) -> list:
    """--epochs "1,50,100" as [1, 50, 100] (ValueError unless every entry is an epoch number, 1 or more)."""
    try:
        epochs = [int(e) for e in text.split(",")]
    except ValueError:
        epochs = None
    if not epochs or min(epochs) < 1:
        raise ValueError(f"--epochs: expected comma-separated epoch numbers (1 or more), e.g. 1,50,100; got {text!r}")
    return epochs


def check_args(args) -> None:
    """Defaults that depend on the mode, and values checked before any work (ValueError on bad input)."""
    if args.out is None:
        if args.mode == "curves":
            args.out = os.path.dirname(os.path.abspath(args.log[0]))
        elif args.ckpt:
            args.out = os.path.dirname(os.path.abspath(args.ckpt))
        else:  # --robustbench NAME: a folder per model
            args.out = os.path.join(ENERGY_DIR, args.robustbench)
    for key in ("n_examples", "steps", "eps", "attack_seeds"):
        if getattr(args, key, 1) <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {getattr(args, key)}")
    if getattr(args, "attacks", None) is not None:  # turned into the list of names run_attacks runs, in order
        args.attacks = list(dict.fromkeys(a.strip() for a in args.attacks.split(",") if a.strip()))
        if not args.attacks or set(args.attacks) - set(POINTS):
            wrong = f"unknown {', '.join(sorted(set(args.attacks) - set(POINTS)))}" if args.attacks else "no attack named"
            raise ValueError(f"--attacks: {wrong}; choose from {', '.join(POINTS)}")
    if getattr(args, "epochs", None) is not None:
        args.epochs = parse_epochs(args.epochs)


def run(args) -> dict:
    os.makedirs(args.out, exist_ok=True)
    device = resolve_device(getattr(args, "device", "auto"))
    modes = {"attacks": run_attacks, "divergence": run_divergence, "weights": run_weights, "zoo": run_zoo}
    report = run_curves(args) if args.mode == "curves" else modes[args.mode](args, device)
    print(f"written to {args.out}")
    return report


def main(argv=None) -> None:
    run_command("analysis.py", build_parser(), argv, check_args, run, (CheckpointError, DataError, OSError))


if __name__ == "__main__":
    main()
