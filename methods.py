"""The training methods in one table: for each, its training attack, its loss, its default beta per data
set, its display name and the name of its run folder (the table's key).

train.py trains with it, analysis.py reruns a checkpoint's training attack from it, experiments.py builds
its run sets from it. Adding a method is one `Method` entry here, plus its loss function (energy.py
for the paper's equations) and its attack, if new.

    method = METHODS[method_key(vars(args))]               # args: train.py's settings
    x_adv, _ = training_attack(method.attack, model, x, y, eps, step_size, steps)
    loss, weights = method.loss(logits_nat, logits_adv, y, args, epoch)
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from attacks import mart_attack, pgd, predict_logits, trades_attack
from energy import (ablated_weights, der_loss, mail_trades_loss, mail_weights, mart_loss, trades_loss, weat_loss,
                    weat_weights)


def cross_entropy(logits_nat, logits_adv, y, args, epoch: int) -> tuple:
    """Cross-entropy on x*: SAT / PGD-AT (Madry et al. 2018), x* from PGD-CE; natural training, x* = x."""
    return F.cross_entropy(logits_adv, y), None


def trades(logits_nat, logits_adv, y, args, epoch: int) -> tuple:
    """TRADES (Zhang et al. 2019): energy.trades_loss."""
    return trades_loss(logits_nat, logits_adv, y, args.beta), None


def weat(logits_nat, logits_adv, y, args, epoch: int) -> tuple:
    """WEAT-nat / WEAT-adv (the paper): energy.weat_loss, with the ablations of --weat-terms,
    --weat-normalize and --weat-fn. Returns the paper's weights w(x) for the log (ablated or not)."""
    weights = ablated_weights(logits_nat, args.weat_fn, args.weat_normalize)
    loss = weat_loss(logits_nat, logits_adv, y, args.beta, args.weat, weights, args.weat_terms)
    return loss, weat_weights(logits_nat)


def mart(logits_nat, logits_adv, y, args, epoch: int) -> tuple:
    """MART (Wang et al. 2020): energy.mart_loss (beta is its lambda)."""
    return mart_loss(logits_nat, logits_adv, y, args.beta), None


def mail_tr(logits_nat, logits_adv, y, args, epoch: int) -> tuple:
    """MAIL-TR (Wang et al. 2021): TRADES until epoch --mail-burn-in, then the MAIL-weighted KL term."""
    weighted = epoch > args.mail_burn_in
    return (mail_trades_loss(logits_nat, logits_adv, y, args.beta, weighted),
            mail_weights(logits_adv, y) if weighted else None)


def sat_der(logits_nat, logits_adv, y, args, epoch: int) -> tuple:
    """SAT + the Delta Energy Regularizer (the authors' follow-up, arXiv 2505.22486): energy.der_loss, weight
    beta, hinge --der-gamma. The intervention on claim 1: SAT with its energies held together."""
    return der_loss(logits_nat, logits_adv, y, args.beta, args.der_gamma), None


@dataclass(frozen=True)
class Method:
    display: str  # as tables and figures write it
    flags: tuple  # the train.py flags that select it
    attack: str  # its training attack: a key of TRAINING_ATTACKS
    loss: Callable  # (logits_nat, logits_adv, y, args, epoch) -> (loss, sample weights for the log or None)
    beta: dict = None  # default beta per data set, "*" for the others; None: the loss has no beta
    natural_forward: bool = True  # the loss reads f(x) (one train-mode forward of the natural batch)
    natural_stats: bool = True  # that forward updates BatchNorm's running statistics (False: it leaves them as they are)

    def default_beta(self, dataset: str):
        return None if self.beta is None else self.beta.get(dataset, self.beta["*"])


# SAT + DER's default beta: the smallest of 0.3, 0.5, 1 that brought SAT's last-epoch dE on claims-cpu's seed 0 to
# TRADES' level or below (-0.33, -0.20, -0.02 against TRADES' -0.14; docs/claims.md, results/claims-cpu-der-trials.json)
DER_BETA = 1.0
# deviation: MART and MAIL-TR train with the WEAT authors' schedule (OneCycle, lr 0.1, weight decay 5e-4), not
# their own papers' (lr 0.01, weight decay 3.5e-3, 120 epochs); their loss settings are their code's
METHODS = {  # the key is the run folder's name (runs/<dataset>-<model>-<key>-<seed>, experiments' <key>-s<seed>)
    "natural": Method("natural", ("--loss", "natural"), "none", cross_entropy, natural_forward=False),
    "sat": Method("SAT", ("--loss", "sat"), "pgd-ce", cross_entropy, natural_forward=False),
    "trades": Method("TRADES", (), "trades-kl", trades, {"*": 6.0}),
    # our choice: f(x) is read without moving BatchNorm's running statistics, so that the eval-mode attacks see
    # the statistics SAT would have and beta 0 is SAT exactly; beta chosen on one calibration run (docs/claims.md)
    "sat-der": Method("SAT + DER", ("--loss", "sat-der"), "pgd-ce", sat_der, {"*": DER_BETA}, natural_stats=False),
    "mart": Method("MART", ("--loss", "mart"), "mart-ce", mart, {"*": 5.0}),
    "mail-tr": Method("MAIL-TR", ("--loss", "mail-tr"), "trades-kl", mail_tr, {"*": 5.0}),
    "weat-nat": Method("WEAT-nat", ("--weat", "nat"), "trades-kl", weat, {"*": 6.0, "cifar100": 7.0}),
    "weat-adv": Method("WEAT-adv", ("--weat", "adv"), "trades-kl", weat, {"*": 6.0, "cifar100": 7.0}),
}
# train.py --loss: every method selected by --loss, and TRADES (no flag); --weat nat|adv picks WEAT (with trades)
LOSSES = ("trades",) + tuple(m.flags[1] for m in METHODS.values() if m.flags[:1] == ("--loss",))


def method_key(settings: dict) -> str:
    """The METHODS key of a run from train.py's settings (vars(args), or a run's args.json)."""
    weat_variant = settings.get("weat", "none")
    return f"weat-{weat_variant}" if weat_variant != "none" else settings.get("loss", "trades")


def method_name(settings: dict) -> str:
    """The run's method key with the WEAT ablations that differ from the paper appended, e.g.
    weat-adv-kl-only-normalized-uniform (run folders and figure labels)."""
    key = method_key(settings)
    if not key.startswith("weat"):
        return key
    ablations = [f"{settings['weat_terms']}-only" if settings.get("weat_terms", "both") != "both" else "",
                 "normalized" if settings.get("weat_normalize") else "",
                 settings["weat_fn"] if settings.get("weat_fn", "energy") != "energy" else ""]
    return "-".join([key] + [a for a in ablations if a])


# The training attacks, each as its method's paper runs it (model in eval mode, the caller's job):
TRAINING_ATTACKS = {
    "none": "x itself (natural training)",
    "pgd-ce": "PGD-CE from a uniform start, its last iterate (Madry et al.; SAT)",
    "mart-ce": "CE sign ascent from x + 0.001 N(0, I), its last iterate (MART's code)",
    "trades-kl": "KL sign ascent from x + 0.001 N(0, I), its last iterate (TRADES' code; TRADES, WEAT, MAIL-TR)",
}


def training_attack(name: str, model, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
                    check: bool = True) -> tuple:
    """(x*, logits of x or None) of a training attack (see TRAINING_ATTACKS) with the model as it is (put it
    in eval mode first); the logits of x where the attack computed them (the TRADES attack's KL target).
    `check=False` leaves the eps-ball check to the caller (the training loop reads it without a sync)."""
    if name == "none":
        return x, None
    if name == "pgd-ce":
        return pgd(model, x, y, eps, step_size, steps, last_iterate=True, check=check), None
    if name == "mart-ce":
        return mart_attack(model, x, y, eps, step_size, steps, check=check), None
    if name == "trades-kl":
        logits_nat = predict_logits(model, x)
        return trades_attack(model, x, eps, step_size, steps, check=check, logits_nat=logits_nat), logits_nat
    raise ValueError(f"unknown training attack {name!r}; choose from {', '.join(TRAINING_ATTACKS)}")
