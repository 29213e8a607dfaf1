"""Attacks on classifiers that take [0, 1] images and return logits.

Gradients are taken with respect to the input only, so no parameter gradient is touched, and no attack
changes the model's train/eval mode: put the model in eval mode yourself, e.g.

    with eval_mode(model):
        x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)

What each returns, per point (all lie in [0, 1]; "checked": the eps-ball and box are verified on return):

| attack | returns | in the Linf eps-ball |
|---|---|---|
| pgd (default) | the first iterate that fools (reaches `target`), else the highest-objective one | checked |
| pgd(last_iterate=True) | the last iterate (Madry et al.'s PGD; SAT's training attack) | checked |
| trades_attack, mart_attack | the last iterate of sign ascent on the KL / CE (training attacks) | checked |
| apgd, apgd_targeted | the first fooling point, else the highest-loss one (`last_fooled`: the last fooling one, else x) | checked |
| fab, fab_targeted | the smallest fooling point within eps, else the last iterate projected into the ball | checked |
| square | the point that fooled, else the lowest-margin query | checked |
| cw_l2 | the smallest-L2 point that reached the target, else its last iterate | no: an L2 attack |

For robust accuracy (`autoattack`), a point counts as robust only if every attack failed on it.
"""
import math
import time
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from energy import kl_per_sample

PIXEL = 1 / 255  # command lines give eps and step sizes in pixels: 8 means 8/255
PGD_LOSSES = ("ce", "cw", "kl")  # the objective PGD maximises: cross-entropy, CW margin, or KL(p(.|x) || p(.|x'))
PGD20_STEPS, PGD20_STEP_SIZE = 20, 2 * PIXEL  # PGD-20: 20 steps of 2/255, CE, uniform start (TRADES' evaluation)
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


def outside_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """A 0-dim bool tensor on x's device: True if |x_adv - x|_inf > eps (+1e-6) or x_adv leaves [0, 1]."""
    return ((x_adv - x).abs().amax() > eps + BALL_TOLERANCE) | (x_adv.amin() < 0) | (x_adv.amax() > 1)


def check_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Raise unless |x_adv - x|_inf <= eps (+1e-6) and x_adv lies in [0, 1]; returns x_adv."""
    if x_adv.shape != x.shape:
        raise RuntimeError(f"attack returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}")
    if x.numel() == 0:
        return x_adv
    if outside_ball(x_adv, x, eps):
        dist = (x_adv - x).abs().amax()
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


def trades_attack(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int,
                  start_std: float = KL_START_STD, check: bool = True, logits_nat: torch.Tensor = None) -> torch.Tensor:
    """The TRADES inner maximisation (Zhang et al. 2019): x* = argmax_{|x' - x|_inf <= eps} KL(p(.|x) || p(.|x')).

    p(.|x) comes from one forward of x without gradients (or from `logits_nat`, that forward done by the
    caller); x' starts at x + 0.001 N(0, I) and takes `steps` sign-gradient steps of `step_size`, each
    projected to the eps-ball and [0, 1]; the last iterate is returned. `check=False` leaves the eps-ball
    check to the caller (the training loop reads it later).
    """
    if logits_nat is None:
        logits_nat = predict_logits(model, x.detach())
    return sign_ascent(model, x, eps, step_size, steps, lambda logits: kl_per_sample(logits_nat, logits),
                       start_std, check)


def mart_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
                check: bool = True) -> torch.Tensor:
    """MART's inner maximisation (Wang et al. 2020, the authors' code): sign-gradient ascent on CE(f(x'), y)
    from x + 0.001 N(0, I), projected after each step; the last iterate."""
    return sign_ascent(model, x, eps, step_size, steps,
                       lambda logits: F.cross_entropy(logits, y, reduction="none"), KL_START_STD, check)


def sign_ascent(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int, objective,
                start_std: float, check: bool = True) -> torch.Tensor:
    """x' <- P(x' + step_size sign(grad_x' objective(f(x')).sum())) for `steps` steps from x + start_std N(0, I),
    P the projection to the eps-ball and [0, 1]; returns the last iterate."""
    x = x.detach()
    x_adv = project(x + start_std * torch.randn_like(x) if start_std else x.clone(), x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            grad = torch.autograd.grad(objective(model(x_adv)).sum(), x_adv)[0]
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return check_adversarial(x_adv, x, eps) if check else x_adv


def pgd_objective(logits, y, loss, target=None, logits_nat=None):
    """Per-point objective that PGD maximises, and whether each point is already fooled.

    Untargeted: CE(f(x'), y), the CW margin, or KL(p(.|x) || p(.|x')) (p(.|x) from `logits_nat`).
    Targeted: -CE(f(x'), t), or f_t - max_{j != t} f_j.
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
        last_iterate: bool = False, check: bool = True, seed: int = None) -> torch.Tensor:
    """Projected sign-gradient ascent (Madry et al. 2018) in the Linf ball of radius eps.

    alpha is the step size (Madry et al.'s symbol). Maximises CE(f(x'), y), the CW margin ("cw") or
    KL(p(.|x) || p(.|x')) ("kl"), or with `target` moves towards class t. Starts uniformly in the ball (if
    random_start). Returns, per point, the first iterate that fools the model (reaches `target`), else the
    highest-objective iterate: AutoAttack's rule, right for robust accuracy. `last_iterate=True` returns
    the last iterate instead: Madry et al.'s PGD, SAT's training attack and what torchattacks' PGD
    returns. (TRADES' own KL attack starts at x + 0.001 N(0, I) and keeps its last iterate: that is
    `trades_attack`.) `check=False` leaves the eps-ball check to the caller. `seed` draws the random start
    from its own generator (the evaluation's PGD-20: every batch seeded alike, so a resumed run ends as an
    uninterrupted one); without it, from torch's global generator (training).
    """
    if loss not in PGD_LOSSES:
        raise ValueError(f"loss must be one of {PGD_LOSSES}, got {loss!r}")
    if loss == "kl" and target is not None:
        raise ValueError("the KL objective is untargeted")
    x = x.detach()
    logits_nat = predict_logits(model, x) if loss == "kl" else None
    generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
    start = torch.empty_like(x).uniform_(-eps, eps, generator=generator) if random_start else None
    x_adv = project(x + start if random_start else x.clone(), x, eps)
    best = BestPoints(x_adv)
    # Without a random start the first iterate is x itself: score from the second, so that the clean
    # input is never handed back as the attack's point.
    first_scored_step = 0 if random_start else min(1, steps)
    for step in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            value, fooled = pgd_objective(model(x_adv), y, loss, target, logits_nat)
            grad = torch.autograd.grad(value.sum(), x_adv)[0]
        x_adv = x_adv.detach()
        if not last_iterate and step >= first_scored_step:
            best.update(x_adv, value.detach(), fooled)
        x_adv = project(x_adv + alpha * grad.sign(), x, eps)
    # deviation: for robust accuracy PGD hands back the first fooling iterate, else the best one (AutoAttack's
    # rule, never weaker); Madry et al.'s PGD, used for SAT training, returns the last iterate (last_iterate).
    if not last_iterate:  # one more forward scores the last iterate
        with torch.no_grad():
            best.update(x_adv, *pgd_objective(model(x_adv), y, loss, target, logits_nat))
        x_adv = best.x
    return check_adversarial(x_adv, x, eps) if check else x_adv


class BestPoints:
    """Per point: the first point seen that fools the model, else the highest-objective point seen (`x`);
    and the last point seen that fools it, else the point it started from (`x_last_fooled`)."""

    def __init__(self, x_start: torch.Tensor):
        self.x, self.x_last_fooled = x_start.clone(), x_start.clone()
        self.value = torch.full((len(x_start),), float("-inf"), device=x_start.device)
        self.fooled = torch.zeros(len(x_start), dtype=torch.bool, device=x_start.device)

    def update(self, x_adv: torch.Tensor, value: torch.Tensor, fooled: torch.Tensor, index=None,
               x_last_fooled: torch.Tensor = None) -> None:
        """Offer candidates for all points, or for the points `index` only (`x_last_fooled`: other
        candidates for the last fooling point, e.g. those of a finished run; default x_adv)."""
        index = torch.arange(len(self.x), device=self.x.device) if index is None else index
        better = ~self.fooled[index] & (fooled | (value > self.value[index]))
        chosen = index[better]
        self.x[chosen], self.value[chosen] = x_adv[better], value[better]
        self.x_last_fooled[index[fooled]] = (x_adv if x_last_fooled is None else x_last_fooled)[fooled]
        self.fooled[index] |= fooled

    def active(self) -> torch.Tensor:
        """Indices of the points not fooled yet."""
        return (~self.fooled).nonzero().squeeze(1)


# ---------------------------------------------------------------------------------------------------
# APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
# parameter-free attacks"), Linf.

APGD_MOMENTUM = 0.75  # alpha in x^(k+1) = P(x^(k) + alpha (z^(k+1) - x^(k)) + (1 - alpha)(x^(k) - x^(k-1)))
APGD_RHO = 0.75  # halve the step when the loss rose in at most 75% of the steps since the last checkpoint
APGD_P1, APGD_P_DECAY, APGD_P_MIN = 0.22, 0.03, 0.06  # checkpoint fractions p_1, interval shrink, min interval
DLR_EPS = 1e-12  # keeps the DLR denominators away from zero


def apgd_checkpoints(n_iter: int) -> list:
    """The iterations w_j after which APGD may halve its step: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = p_j N, in whole iterations as the official code
    counts them: intervals of int(0.22 N), each int(0.03 N) shorter, down to int(0.06 N) (each at least 1).
    For N = 100: 22, 41, 57, 70, 80, 87, 93, 99; torchattacks' APGD counts the same way at any N."""
    interval = max(int(APGD_P1 * n_iter), 1)
    shrink, shortest = max(int(APGD_P_DECAY * n_iter), 1), max(int(APGD_P_MIN * n_iter), 1)
    checkpoints = []
    while (checkpoints[-1] if checkpoints else 0) + interval <= n_iter:
        checkpoints.append((checkpoints[-1] if checkpoints else 0) + interval)
        interval = max(interval - shrink, shortest)
    return checkpoints


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), per point; higher is better for the attacker.

    untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    targeted:   -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), with z_pi the logits sorted decreasingly.
    """
    z = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        return margin(logits, y) / (z[:, 0] - z[:, 2] + DLR_EPS)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z[:, 0] - (z[:, 2] + z[:, 3]) / 2 + DLR_EPS)


def _loss_and_grad(model, x_adv, y, loss, target):
    """Per-point attack loss at x_adv, its input gradient and whether x_adv is misclassified: one forward
    and one input-gradient backward."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        if loss == "ce":
            value = F.cross_entropy(logits, y, reduction="none")
        else:
            value = dlr_loss(logits, y, target)
        grad = torch.autograd.grad(value.sum(), x_adv)[0]
    # deviation: APGD-T succeeds by misclassification (as AutoAttack counts it), not by reaching its target
    return value.detach(), grad, logits.argmax(1) != y


def random_linf_start(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A random point on the surface of the eps-ball (as AutoAttack starts APGD), clamped to [0, 1]."""
    t = 2 * torch.rand(x.shape, generator=generator, device=x.device) - 1
    t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    return (x + eps * t).clamp(0, 1)


def _apgd_run(model, x, y, eps, n_iter, loss, target, generator):
    """One APGD run from a random start; returns BestPoints (first fooling point, else highest loss)."""
    checkpoints = apgd_checkpoints(n_iter)
    step = torch.full((len(x),) + (1,) * (x.dim() - 1), 2 * eps, device=x.device)  # eta^(0) = 2 eps
    x_adv = random_linf_start(x, eps, generator)
    value, grad, fooled = _loss_and_grad(model, x_adv, y, loss, target)
    returned, x_max, grad_max, value_max = BestPoints(x_adv), x_adv.clone(), grad.clone(), value.clone()
    returned.update(x_adv, value, fooled)
    x_prev, rises, value_max_at_check = x_adv.clone(), torch.zeros_like(value), value_max.clone()
    reduced_at_check, last_check = torch.zeros_like(fooled), 0
    for k in range(n_iter):
        z = project(x_adv + step * grad.sign(), x, eps)
        a = APGD_MOMENTUM if k > 0 else 1.0
        x_prev, x_adv = x_adv, project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps)
        new_value, grad, fooled = _loss_and_grad(model, x_adv, y, loss, target)
        returned.update(x_adv, new_value, fooled)
        rises += (new_value > value).float()
        value = new_value
        improved = value > value_max
        x_max[improved], grad_max[improved], value_max = x_adv[improved], grad[improved], torch.maximum(value, value_max)
        if k + 1 in checkpoints:
            oscillating = rises <= APGD_RHO * (k + 1 - last_check)
            stalled = ~reduced_at_check & (value_max <= value_max_at_check)
            reduce = oscillating | stalled
            step[reduce] /= 2
            x_adv[reduce], grad[reduce] = x_max[reduce], grad_max[reduce]  # restart from the best point
            reduced_at_check, value_max_at_check, last_check = reduce, value_max.clone(), k + 1
            rises.zero_()
    return returned


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_iter: int = 100, loss: str = "ce",
         n_restarts: int = 1, seed: int = 0, on_run=None, last_fooled: bool = False) -> torch.Tensor:
    """APGD-CE / APGD-DLR, untargeted: momentum 0.75, step 2 eps halved at checkpoints; each restart
    runs only on the points not fooled yet. `on_run(n)` is called after each restart with the number of
    points not fooled yet (for progress bars). `last_fooled=True` returns what torchattacks' APGD does
    instead: the last iterate at which each point was misclassified, and x itself where none was."""
    if loss not in ("ce", "dlr"):
        raise ValueError(f"apgd loss must be 'ce' or 'dlr', got {loss!r}")
    x = x.detach()
    best, generator = BestPoints(x), torch.Generator(device=x.device).manual_seed(seed)
    for _ in range(n_restarts):
        index = best.active()
        if len(index):
            run = _apgd_run(model, x[index], y[index], eps, n_iter, loss, None, generator)
            best.update(run.x, run.value, run.fooled, index, run.x_last_fooled)
        report_run(on_run, best)
    return check_adversarial(returned_points(best, x, last_fooled), x, eps)


def returned_points(best: "BestPoints", x: torch.Tensor, last_fooled: bool) -> torch.Tensor:
    """The robust-accuracy rule (first fooling point, else highest loss) or torchattacks' (last fooling
    iterate, else x itself)."""
    return torch.where(best.fooled.view(-1, *[1] * (x.dim() - 1)), best.x_last_fooled, x) if last_fooled else best.x


def report_run(on_run, best: "BestPoints") -> None:
    """Tell a progress callback how many points are not fooled yet (a host sync: once per run, not per step)."""
    if on_run is not None:
        on_run(int((~best.fooled).sum()))


def target_classes(model: nn.Module, x: torch.Tensor, n_target_classes: int) -> torch.Tensor:
    """(n_target_classes, N): for ranks r = 2, 3, ..., the class with the r-th largest clean logit
    (the classes other than the true one, for a correctly classified point)."""
    with torch.no_grad():
        order = model(x).argsort(dim=1, descending=True)
    return order[:, 1:1 + n_target_classes].T


def apgd_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_iter: int = 100,
                  n_target_classes: int = 9, seed: int = 0, on_run=None, last_fooled: bool = False) -> torch.Tensor:
    """APGD-T: targeted DLR towards each of the top `n_target_classes` other classes in turn, one run
    each (AutoAttack "standard"), each only on the points not yet misclassified; `on_run` and
    `last_fooled` as in `apgd`."""
    x = x.detach()
    best, generator = BestPoints(x), torch.Generator(device=x.device).manual_seed(seed)
    for target in target_classes(model, x, n_target_classes):
        index = best.active()
        if len(index):
            run = _apgd_run(model, x[index], y[index], eps, n_iter, "dlr", target[index], generator)
            best.update(run.x, run.value, run.fooled, index, run.x_last_fooled)
        report_run(on_run, best)
    return check_adversarial(returned_points(best, x, last_fooled), x, eps)


# ---------------------------------------------------------------------------------------------------
# FAB-T (Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
# attack"), Linf, targeted: AutoAttack "standard" settings.

FAB_ETA, FAB_BETA, FAB_ALPHA_MAX = 1.05, 0.9, 0.1  # overshoot, backward step, max bias towards x_orig


def linf_boundary_step(x: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smallest-Linf step d with w.d = c and x + d in [0, 1], per point (our derivation).

    Moving coordinate i by s sign(w_i) t_i (s = sign c, 0 <= t_i <= u_i, u_i the room to the box edge in
    that direction) changes s w.d by |w_i| t_i, so the best step has t_i = min(r, u_i) and the smallest r
    with g(r) = sum_i |w_i| min(r, u_i) = |c|. g is piecewise linear in r: sort u, and solve on the piece
    that crosses |c|. Where even the whole box cannot reach |c|, it returns the step to the box corner.
    """
    shape, x, w, c = x.shape, x.flatten(1), w.flatten(1), c.view(-1, 1)
    s = torch.where(c >= 0, 1.0, -1.0)
    direction = s * w.sign()
    room = torch.where(direction > 0, 1 - x, x)  # u_i >= 0
    u, order = room.sort(dim=1)
    a = w.abs().gather(1, order)
    saturated = torch.cumsum(a * u, 1) - a * u  # sum_{j<k} a_j u_j
    slope = a.flip(1).cumsum(1).flip(1)  # sum_{j>=k} a_j
    g_at_u = saturated + u * slope  # g(u_k), non-decreasing in k
    k = torch.searchsorted(g_at_u.contiguous(), c.abs()).clamp_max(u.shape[1] - 1)
    r = (c.abs() - saturated.gather(1, k)) / slope.gather(1, k).clamp_min(1e-12)
    r = torch.where(g_at_u[:, -1:] < c.abs(), torch.full_like(r, float("inf")), r)
    return (direction * torch.minimum(room, r)).view(shape)


def _boundary_and_grad(model, x_adv, y, target):
    """f_y - f_t at x_adv and its input gradient (the linearised decision boundary)."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        diff = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
        grad = torch.autograd.grad(diff.sum(), x_adv)[0]
    return diff.detach(), grad


def _closest_boundary_and_grad(model, x_adv, y):
    """Untargeted FAB's choice: over the classes j != y, the linearised boundary f_y - f_j nearest in Linf
    (smallest |f_y - f_j| / ||grad (f_y - f_j)||_1); its value and input gradient. One backward per class."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        grads = torch.stack([torch.autograd.grad(logits[:, k].sum(), x_adv, retain_graph=k < logits.shape[1] - 1)[0]
                             for k in range(logits.shape[1])], 1)  # (N, K, C, H, W)
    rows = torch.arange(len(y), device=y.device)
    diff = logits.detach()[rows, y][:, None] - logits.detach()  # f_y - f_j
    w = grads[rows, y][:, None] - grads
    distance = diff.abs() / w.flatten(2).abs().sum(2).clamp_min(1e-12)
    distance[rows, y] = float("inf")
    j = distance.argmin(1)
    return diff[rows, j], w[rows, j]


def _fab_run(model, x, y, target, eps, n_iter):
    """One FAB run from x_orig towards `target` (None: the nearest boundary at every iterate); returns
    BestPoints with value = -||x_adv - x||_inf (smallest found)."""
    best, x_i = BestPoints(x), x.clone()
    view = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(n_iter):
        diff, w = (_closest_boundary_and_grad(model, x_i, y) if target is None
                   else _boundary_and_grad(model, x_i, y, target))
        d1 = linf_boundary_step(x_i, w, -diff)  # from the current point onto the hyperplane
        d2 = linf_boundary_step(x, w, -(diff + (w * (x - x_i)).flatten(1).sum(1)))  # from x_orig onto it
        n1, n2 = d1.flatten(1).abs().amax(1), d2.flatten(1).abs().amax(1)
        to_origin = (n1 / (n1 + n2).clamp_min(1e-12)).clamp(0, FAB_ALPHA_MAX).view(view)  # FAB's alpha
        x_i = ((1 - to_origin) * (x_i + FAB_ETA * d1) + to_origin * (x + FAB_ETA * d2)).clamp(0, 1)
        with torch.no_grad():  # deviation: a second forward per iteration decides the step back (as the reference code)
            is_adv = model(x_i).argmax(1) != y
        norm = (x_i - x).flatten(1).abs().amax(1)
        found = is_adv & (-norm > best.value)
        best.x[found], best.value[found] = x_i[found], -norm[found]
        x_i[is_adv] = x[is_adv] + FAB_BETA * (x_i[is_adv] - x[is_adv])  # step back towards x_orig
    best.fooled = best.value >= -eps - BALL_TOLERANCE
    best.x = project(torch.where(torch.isinf(best.value).view(view), x_i, best.x), x, eps)
    return best


def fab_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_iter: int = 100,
                 n_target_classes: int = 9, seed: int = 0, on_run=None) -> torch.Tensor:
    """FAB-T: the minimal Linf adversarial point towards each of the top other classes in turn (one run
    from x_orig each, as AutoAttack "standard"); a point is broken where the one found lies within eps.
    Deterministic (no random restarts); `seed` is accepted for a uniform interface. Being a minimal-norm
    attack, it returns x itself for points misclassified to begin with (the cascade never sends it any).
    Where nothing was found within eps, it returns the last iterate projected into the ball. `on_run` as
    in `apgd`."""
    x = x.detach()
    best = BestPoints(x)
    for target in target_classes(model, x, n_target_classes):
        index = best.active()
        if len(index):
            run = _fab_run(model, x[index], y[index], target[index], eps, n_iter)
            best.update(run.x, run.value, run.fooled, index)
        report_run(on_run, best)
    return check_adversarial(best.x, x, eps)


def fab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_iter: int = 100,
        seed: int = 0) -> torch.Tensor:
    """FAB, untargeted (Croce & Hein 2020), Linf: one run from x_orig that at every iterate projects onto
    the nearest linearised decision boundary. Returns the smallest adversarial point found where it lies
    within eps, else the last iterate projected into the ball; x itself for points misclassified to begin
    with. Deterministic (`seed` for a uniform interface)."""
    x = x.detach()
    best = BestPoints(x)
    index = (predict(model, x) == y).nonzero().squeeze(1)
    if len(index):
        run = _fab_run(model, x[index], y[index], None, eps, n_iter)
        best.update(run.x, run.value, run.fooled, index)
    return check_adversarial(best.x, x, eps)


# ---------------------------------------------------------------------------------------------------
# Carlini-Wagner L2 (Carlini & Wagner 2017), with one fixed c as torchattacks runs it: an L2 attack, not
# confined to an Linf ball.

CW_TANH_EDGE = 1e-6  # atanh(2x - 1) is infinite at x in {0, 1}: start a hair inside the box


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: float = 1.0, kappa: float = 0.0, steps: int = 50,
          lr: float = 0.01, target: torch.Tensor = None) -> torch.Tensor:
    """x' = (tanh(w) + 1) / 2 and Adam (lr) on w for ||x' - x||_2^2 + c max(f_y(x') - max_{j != y} f_j(x'), -kappa)
    (with `target` t: c max(max_{j != t} f_j(x') - f_t(x'), -kappa)); stops early when the cost rose over a
    tenth of the steps, as torchattacks' CW does. Returns the smallest-L2 iterate that fooled the model
    (reached t), else the last iterate; always in [0, 1], never projected to an Linf ball."""
    x = x.detach()
    # deviation: torchattacks starts at atanh(2x - 1) exactly, infinite (and stuck) at pixels 0 and 1
    w = torch.atanh((2 * x - 1).clamp(-1 + CW_TANH_EDGE, 1 - CW_TANH_EDGE)).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
    previous_cost = float("inf")
    for step in range(steps):
        with torch.enable_grad():
            x_adv = (torch.tanh(w) + 1) / 2
            logits = model(x_adv)
            l2 = (x_adv - x).flatten(1).pow(2).sum(1)
            f = (margin(logits, target) if target is not None else -margin(logits, y)).clamp_min(-kappa)
            cost = l2.sum() + c * f.sum()
            w.grad = torch.autograd.grad(cost, w)[0]  # input gradient only: the model's parameters stay untouched
        optimizer.step()
        reached = logits.argmax(1) == target if target is not None else logits.argmax(1) != y
        closer = reached & (l2.detach() < best_l2)
        best[closer], best_l2[closer] = x_adv.detach()[closer], l2.detach()[closer]
        if step % max(steps // 10, 1) == 0:
            if cost.item() > previous_cost:
                break
            previous_cost = cost.item()
    return torch.where(torch.isinf(best_l2).view(-1, *[1] * (x.dim() - 1)), x_adv.detach(), best)


# ---------------------------------------------------------------------------------------------------
# Square attack (Andriushchenko et al. 2020), Linf, untargeted, margin loss.

# p schedule: the fraction p_init is halved at these query counts (Andriushchenko et al. 2020). AutoAttack's
# "standard" version runs Square with resc_schedule=False: the counts as they are; the Square paper's code and
# torchattacks (rescale_schedule=True) stretch them to the budget, as if it were 10,000 queries.
SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, query: int, n_queries: int, rescale_schedule: bool = False) -> float:
    """The piecewise-constant share of pixels changed at `query` (Andriushchenko et al. 2020)."""
    it = int(query / n_queries * 10000) if rescale_schedule else query
    return p_init / 2 ** sum(it > h for h in SQUARE_HALVINGS)


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_queries: int = 5000,
           p_init: float = 0.8, seed: int = 0, rescale_schedule: bool = False) -> torch.Tensor:
    """Random search on the margin f_y - max_{j != y} f_j: vertical-stripe start, then squares of side
    ~sqrt(p h w) set to +-eps per channel; a change is kept where it lowers the margin. Only points not
    yet fooled are queried; n_queries counts forwards per point, the first one included. The schedule of p is
    AutoAttack standard's by default (rescale_schedule=True: the Square paper's code and torchattacks')."""
    x = x.detach()
    g = torch.Generator(device=x.device).manual_seed(seed)
    sign = lambda *shape: 2.0 * torch.randint(0, 2, shape, generator=g, device=x.device) - 1
    B, C, H, W = x.shape
    x_best = (x + eps * sign(B, C, 1, W)).clamp(0, 1)
    with torch.no_grad():
        best_margin = -margin(model(x_best), y)  # > 0 while correctly classified
    for query in range(1, n_queries):
        index = (best_margin > 0).nonzero().squeeze(1)
        if not len(index):
            break
        side = min(max(int(round(math.sqrt(square_fraction(p_init, query, n_queries, rescale_schedule) * H * W))), 1), H - 1)
        top, left = (int(torch.randint(0, n - side + 1, (1,), generator=g, device=x.device)) for n in (H, W))
        x_new = x_best[index].clone()
        window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        s, x_window = sign(len(index), C, 1, 1), x[index][window]
        proposal = (x_window + eps * s).clamp(0, 1)
        unchanged = (proposal - x_new[window]).abs().flatten(1).amax(1) < 1e-7
        proposal[unchanged] = (x_window[unchanged] - eps * s[unchanged]).clamp(0, 1)  # no-op: flip instead
        x_new[window] = proposal
        with torch.no_grad():
            new_margin = -margin(model(x_new), y[index])
        improved = new_margin < best_margin[index]
        x_best[index[improved]], best_margin[index[improved]] = x_new[improved], new_margin[improved]
    return check_adversarial(x_best, x, eps)


# ---------------------------------------------------------------------------------------------------
# The AutoAttack-style cascade and its sanity checks (Croce & Hein 2020).

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
SQUARE_GAIN_FLAG = 0.002  # Square beating the white-box attacks by more than 0.2 points hints at masking


def attack_by_name(name: str, n_iter: int = 100, n_queries: int = 5000, n_target_classes: int = 9,
                   n_restarts: int = 1):
    """A function (model, x, y, eps, seed, on_run=None) -> x_adv for a cascade entry; settings of
    AutoAttack "standard". Its `runs` attribute: the runs (restarts, target classes) of one call. A name
    means the same attack as in analysis.py (fab: untargeted FAB, fab-t: targeted; pgd-ce = pgd-20)."""
    attacks = {
        "apgd-ce": (lambda m, x, y, eps, seed, on_run=None: apgd(m, x, y, eps, n_iter, "ce", n_restarts, seed, on_run),
                    n_restarts),
        "apgd-dlr": (lambda m, x, y, eps, seed, on_run=None: apgd(m, x, y, eps, n_iter, "dlr", n_restarts, seed, on_run),
                     n_restarts),
        "apgd-t": (lambda m, x, y, eps, seed, on_run=None: apgd_targeted(m, x, y, eps, n_iter, n_target_classes, seed,
                                                                         on_run), n_target_classes),
        "fab-t": (lambda m, x, y, eps, seed, on_run=None: fab_targeted(m, x, y, eps, n_iter, n_target_classes, seed,
                                                                       on_run), n_target_classes),
        "square": (lambda m, x, y, eps, seed, on_run=None: square(m, x, y, eps, n_queries, seed=seed), 1),
        "fab": (lambda m, x, y, eps, seed, on_run=None: fab(m, x, y, eps, n_iter, seed), 1),
        "pgd-20": (lambda m, x, y, eps, seed, on_run=None: pgd(m, x, y, eps, PGD20_STEP_SIZE, PGD20_STEPS, seed=seed), 1),
    }
    attacks["pgd-ce"] = attacks["pgd-20"]  # the analysis' name of the same attack (PGD on the CE; here 20 steps)
    if name not in attacks:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(attacks)}")
    fn, fn.runs = attacks[name]
    return fn


class CascadeBar:
    """The progress bar of one attack of the cascade: a tick per run (restart, target class) of every
    batch, with the robust accuracy so far in its postfix."""

    def __init__(self, name: str, batches: int, runs: int, n: int, enabled: bool):
        self.bar = tqdm(total=batches * runs, desc=name, disable=not enabled, leave=False, dynamic_ncols=True)
        self.runs, self.n, self.batches_done, self.robust_before = runs, n, 0, 0
        self.in_batch = 0

    def start_batch(self, robust_before: int, batch_size: int) -> None:
        self.robust_before, self.in_batch = robust_before, batch_size

    def on_run(self, not_fooled: int) -> None:
        """After a run: `not_fooled` of the batch's points still stand."""
        self.bar.update(1)
        self.show(self.robust_before - self.in_batch + not_fooled)

    def end_batch(self, robust: int) -> None:
        self.batches_done += 1
        self.bar.update(self.batches_done * self.runs - self.bar.n)  # attacks that do not tick per run
        self.show(robust)

    def show(self, robust: int) -> None:
        self.bar.set_postfix_str(f"robust {100 * robust / self.n:.1f}%", refresh=False)

    def close(self) -> None:
        self.bar.close()


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return predict_logits(model, x).argmax(1)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks=STANDARD_ATTACKS,
               seed: int = 0, batch_size: int = None, report: list = None, progress: bool = False,
               resume: dict = None, on_batch=None, **settings) -> tuple:
    """Run the attacks in turn, each only on the points still robust; returns (x_adv, robust_mask).

    A point is robust only if it is classified correctly and every attack failed on it. `attacks` holds
    names (see `attack_by_name`, whose keyword settings pass through) or functions
    (model, x, y, eps, seed) -> x_adv. Each attack runs over the robust points in batches of
    `batch_size` (all at once if None). Points misclassified to begin with are returned unchanged.
    If `report` is a list, one dict per attack is appended: name, points attacked, robust after, seconds.

    Interruption: after every batch `on_batch(state)` gets a state dict (CPU tensors and plain data);
    `resume=state` continues from it with the same result as an uninterrupted run (every batch is seeded
    alike). x_adv holds x for the points attacked before the resume.
    """
    x = x.detach()
    batch_size = batch_size or len(x)
    # deviation: points misclassified to begin with are returned unchanged (every attack run returns a perturbed point)
    state = resume or {"stage": 0, "attacked": None, "batch": 0, "seconds": 0.0, "report": [],
                       "robust": torch.cat([predict(model, xb) == yb for xb, yb in zip(x.split(batch_size),
                                                                                       y.split(batch_size))]).cpu()}
    robust, x_adv, rows = state["robust"].to(x.device).clone(), x.clone(), [dict(r) for r in state["report"]]
    for stage in range(state["stage"], len(attacks)):
        fn = attack_by_name(attacks[stage], **settings) if isinstance(attacks[stage], str) else attacks[stage]
        name = getattr(attacks[stage], "__name__", attacks[stage])
        resuming = stage == state["stage"] and state["attacked"] is not None
        attacked = state["attacked"].to(x.device) if resuming else robust.nonzero().squeeze(1)
        done, start = (state["batch"], time.time() - state["seconds"]) if resuming else (0, time.time())
        batches = attacked.split(batch_size)
        bar = CascadeBar(name, len(batches) - done, getattr(fn, "runs", 1), len(x), progress)
        for j in range(done, len(batches)):
            index = batches[j]
            bar.start_batch(int(robust.sum()), len(index))
            kwargs = {"on_run": bar.on_run} if hasattr(fn, "runs") else {}
            x_found = check_adversarial(fn(model, x[index], y[index], eps, seed, **kwargs), x[index], eps)
            x_adv[index] = x_found
            robust[index[predict(model, x_found) != y[index]]] = False
            bar.end_batch(int(robust.sum()))
            if on_batch is not None:
                on_batch({"stage": stage, "attacked": attacked.cpu(), "batch": j + 1, "seconds": time.time() - start,
                          "robust": robust.cpu(), "report": rows})
        bar.close()
        rows.append({"attack": name, "attacked": len(attacked), "robust": int(robust.sum()), "seconds": time.time() - start})
        if on_batch is not None:
            on_batch({"stage": stage + 1, "attacked": None, "batch": 0, "seconds": 0.0, "robust": robust.cpu(),
                      "report": rows})
    if report is not None:
        report.extend(rows)
    return x_adv, robust


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """AutoAttack's checks on a model, as flags (True = suspicious): outputs that change between
    identical forward passes, outputs that look like probabilities instead of logits, and points whose
    input gradient of the cross-entropy is exactly zero."""
    x = x.detach()
    with torch.no_grad():
        first, second = model(x), model(x)
    probabilities = bool(((first >= 0) & (first <= 1)).all() and torch.allclose(first.sum(1), torch.ones(len(x)).to(first)))
    x_grad = x.clone().requires_grad_(True)
    with torch.enable_grad():
        grad = torch.autograd.grad(F.cross_entropy(model(x_grad), y, reduction="sum"), x_grad)[0]
    return {"randomized_outputs": not torch.equal(first, second), "softmax_outputs": probabilities,
            "zero_gradients": bool((grad.flatten(1).abs().sum(1) == 0).any())}


def square_flag(report: list, n: int) -> bool:
    """True when Square lowered robust accuracy by more than 0.2 points after the white-box attacks."""
    before = [r["robust"] for r in report if r["attack"] != "square"]
    after = [r["robust"] for r in report if r["attack"] == "square"]
    return bool(before and after and (min(before) - after[0]) / n > SQUARE_GAIN_FLAG)
