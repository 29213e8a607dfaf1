"""Linf attacks on classifiers that take [0, 1] images and return logits.

Every attack returns a perturbed point for every input: one that fools the model (reaches the target)
where it found one, else the highest-loss point it found. Outputs lie in the eps-ball around x and in
[0, 1] (checked); gradients are taken with respect to the input only, so no parameter gradient is
touched; no attack changes the model's train/eval mode. Put the model in eval mode yourself, e.g.

    with eval_mode(model):
        x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from energy import kl_per_sample

PGD_LOSSES = ("ce", "cw", "kl")
KL_START_STD = 0.001  # TRADES inner maximisation starts at x + 0.001 N(0, I) (Zhang et al. 2019 code)
BALL_TOLERANCE = 1e-6


@contextmanager
def eval_mode(model: nn.Module):
    """Run a block with the model in eval mode, then restore the mode it had before."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Raise unless |x_adv - x|_inf <= eps (+1e-6) and x_adv lies in [0, 1]; returns x_adv."""
    dist = (x_adv - x).abs().amax() if x.numel() else torch.tensor(0.0)
    if dist > eps + BALL_TOLERANCE or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"attack left the eps-ball or the box: |x_adv - x|_inf = {dist:.3g} (eps {eps:.3g}), "
                           f"range [{x_adv.min():.3g}, {x_adv.max():.3g}]")
    return x_adv


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the Linf ball of radius eps around x, then clamp to [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW margin max_{j != y} f_j - f_y per row; positive means the point is misclassified."""
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - logits.gather(1, y[:, None]).squeeze(1)


def pgd_objective(logits, y, loss, target=None, logits_nat=None):
    """Per-point objective that PGD maximises, and whether each point is already fooled.

    Untargeted: CE(f(x'), y), or the CW margin. Targeted: -CE(f(x'), t), or f_t - max_{j != t} f_j.
    KL: KL(p(.|x) || p(.|x')) against the natural prediction (given by its logits, logits_nat).
    """
    if loss == "kl":
        return kl_per_sample(logits_nat, logits), logits.argmax(1) != y
    if target is not None:
        value = -F.cross_entropy(logits, target, reduction="none") if loss == "ce" else -margin(logits, target)
        return value, logits.argmax(1) == target
    value = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else margin(logits, y)
    return value, logits.argmax(1) != y


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        loss: str = "ce", random_start: bool = True, target: torch.Tensor = None,
        keep_best: bool = None) -> torch.Tensor:
    """Projected sign-gradient ascent (Madry et al. 2018) in the Linf ball of radius eps.

    loss "ce" / "cw": uniform random start in the ball (if random_start); returns, per point, the first
    iterate that fools the model (or reaches `target`), else the highest-objective iterate.
    loss "kl": the TRADES inner maximisation: start x + 0.001 N(0, I), ascend KL(p(.|x) || p(.|x')),
    return the last iterate, as TRADES does. `keep_best` overrides the choice (False = last iterate,
    the plain Madry PGD used for SAT training).
    """
    if loss not in PGD_LOSSES:
        raise ValueError(f"loss must be one of {PGD_LOSSES}, got {loss!r}")
    if target is not None and loss == "kl":
        raise ValueError("the KL attack is untargeted")
    keep_best = loss != "kl" if keep_best is None else keep_best
    x = x.detach()
    logits_nat = None
    if loss == "kl":
        with torch.no_grad():
            logits_nat = model(x)
        x_adv = x + KL_START_STD * torch.randn_like(x) if random_start else x.clone()
    else:
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps) if random_start else x.clone()
    x_adv = project(x_adv, x, eps)
    x_best, best, fooled = x_adv.clone(), None, None
    first_scored = 0 if random_start else min(1, steps)  # never hand back the clean input itself
    for step in range(steps + keep_best):  # with keep_best, one more forward scores the last iterate
        last = step == steps
        x_adv.requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            value, now_fooled = pgd_objective(model(x_adv), y, loss, target, logits_nat)
            grad = None if last else torch.autograd.grad(value.sum(), x_adv)[0]
        x_adv = x_adv.detach()
        if keep_best and step >= first_scored:
            best, fooled = _update_best(x_best, x_adv, value.detach(), now_fooled, best, fooled)
        if grad is not None:
            x_adv = project(x_adv + alpha * grad.sign(), x, eps)
    return check_adversarial(x_best if keep_best else x_adv, x, eps)


def _update_best(x_best, x_adv, value, now_fooled, best, fooled):
    """Keep, per point, the first fooling iterate, else the highest-objective one (x_best in place)."""
    if best is None:
        x_best.copy_(x_adv)
        return value.clone(), now_fooled.clone()
    better = ~fooled & (now_fooled | (value > best))
    x_best[better] = x_adv[better]
    best = torch.where(better, value, best)
    return best, fooled | now_fooled
