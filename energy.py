"""The paper's equations: a classifier read as an energy-based model, and the WEAT training loss.

This file stands alone (it imports torch and nothing else of this repo): copy it into your own code.
For logits f(x) (Section 3 of the paper):

    E(x)   = -logsumexp_k f(x)[k]          marginal energy       energy_x
    E(x,y) = -f(x)[y]                      joint energy          energy_xy
    log p(y|x) = E(x) - E(x,y)

WEAT (the paper's method) weights each sample by w(x) = 1 / log(1 + exp(|E(x)|)) (weat_weights) inside a TRADES
objective (weat_loss); TRADES is its special case with unit weights (trades_loss). In a training loop,
with x_adv from the TRADES attack (KL ascent, model in eval mode):

    loss = weat_loss(model(x), model(x_adv), y, beta=6.0)      # WEAT-adv, the paper's method
    loss = trades_loss(model(x), model(x_adv), y, beta=6.0)    # TRADES (Zhang et al. 2019)

Also here: the MART and MAIL-TR losses the paper compares with, the Delta Energy Regularizer of the
authors' follow-up (`der_loss`: SAT with the natural and adversarial energies held together), and the
energy-based checkpoint pick (`energy_pick`, our own rule, not the paper's). The Section 3 analysis command is analysis.py.
"""
import torch
import torch.nn.functional as F


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


def kl_per_sample(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p(.|x) || p(.|x*)) per row, from logits (the TRADES regulariser and its attack's objective).

    In energies (the paper's Proposition 1): since log p(k|x) = E(x) - E(x, k),

        KL(p(.|x) || p(.|x*)) = [E(x) - E(x*)] - sum_k p(k|x) [E(x, k) - E(x*, k)]

    the marginal energy gap minus the expected joint energy gap: TRADES' KL term is small when the natural
    and adversarial energies move together.
    """
    # deviation: the exact log-softmax; the authors' code takes log(softmax(f(x*)) + 1e-12) (a difference below 1e-10 here)
    log_p_nat = F.log_softmax(logits_nat, dim=1)
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    return (log_p_nat.exp() * (log_p_nat - log_p_adv)).sum(dim=1)


WEAT_VARIANTS = ("adv", "nat")  # which logits the cross-entropy term reads: f(x*) (WEAT-adv) or f(x) (WEAT-nat)
WEAT_TERMS = ("both", "ce", "kl")  # ablation: which terms carry the weight
WEIGHT_FNS = ("energy", "uniform")  # ablation: the paper's weights, or their batch mean for every sample


def weat_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
              variant: str = "adv", weights: torch.Tensor = None, terms: str = "both") -> torch.Tensor:
    """The WEAT objective (the paper's method), averaged over the batch size B:

        WEAT-adv:  (1/B) sum_i w_i CE(f(x*_i), y_i) + beta (1/B) sum_i w_i KL(p(.|x_i) || p(.|x*_i))
        WEAT-nat:  (1/B) sum_i w_i CE(f(x_i), y_i)  + beta (1/B) sum_i w_i KL(p(.|x_i) || p(.|x*_i))

    with w_i = weat_weights(f(x_i)) (detached, not normalised), as in the authors' released code.
    `weights` replaces w (e.g. ones: TRADES, see `trades_loss`; or `ablated_weights`); `terms` is an
    ablation: "ce" or "kl" puts w on that term alone, the other gets weight 1 ("kl" is MAIL-TR's placement).
    """
    if variant not in WEAT_VARIANTS or terms not in WEAT_TERMS:
        raise ValueError(f"variant in {WEAT_VARIANTS} and terms in {WEAT_TERMS}; got {variant!r}, {terms!r}")
    w = weat_weights(logits_nat) if weights is None else weights
    ce = F.cross_entropy(logits_adv if variant == "adv" else logits_nat, y, reduction="none")
    w_ce = w if terms in ("both", "ce") else 1.0
    w_kl = w if terms in ("both", "kl") else 1.0
    return (w_ce * ce).mean() + beta * (w_kl * kl_per_sample(logits_nat, logits_adv)).mean()


def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES (Zhang et al. 2019): (1/B) sum_i CE(f(x_i), y_i) + beta (1/B) sum_i KL(p(.|x_i) || p(.|x*_i)),
    i.e. WEAT-nat with unit weights."""
    return weat_loss(logits_nat, logits_adv, y, beta, "nat", weights=torch.ones_like(y, dtype=logits_nat.dtype))


def ablated_weights(logits_nat: torch.Tensor, weight_fn: str = "energy", normalize: bool = False) -> torch.Tensor:
    """The WEAT weights taken apart (for `weat_loss(..., weights=...)`): weight_fn "energy" is the paper's
    w(x); "uniform" gives every sample the batch mean of w(x), the same overall scale without the
    reweighting (a lower effective learning rate); `normalize` divides by the batch mean (weights average 1)."""
    if weight_fn not in WEIGHT_FNS:
        raise ValueError(f"weight_fn in {WEIGHT_FNS}, got {weight_fn!r}")
    w = weat_weights(logits_nat)
    if weight_fn == "uniform":
        w = w.mean().expand_as(w)
    return w / w.mean() if normalize else w


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
    # deviation: the exact KL (MART's code takes log(p(x*) + 1e-12), a difference below 1e-10 here)
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


def delta_energy_penalty(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                         gamma: float = 0.0) -> torch.Tensor:
    """The Delta Energy Regularizer (DER; Mirza et al. 2025, arXiv 2505.22486), averaged over the batch size B:

        (1/B) sum_i max(||(dE_i, dExy_i)||_2 - gamma, 0),
        dE_i = E(x_i) - E(x*_i),  dExy_i = E(x_i, y_i) - E(x*_i, y_i)

    the per-sample natural-minus-adversarial energy gaps, whose divergence the paper reads as robust
    overfitting. Our reading of the published formula: the norm is per sample over the two gaps, the hinge
    per sample, then the mean (the paper leaves the reduction open; its beta and gamma are not published).
    """
    gaps = torch.stack([energy_x(logits_nat) - energy_x(logits_adv),
                        energy_xy(logits_nat, y) - energy_xy(logits_adv, y)], dim=1)
    return F.relu(torch.linalg.vector_norm(gaps, dim=1) - gamma).mean()


def der_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
             gamma: float = 0.0) -> torch.Tensor:
    """SAT with the Delta Energy Regularizer: (1/B) sum_i CE(f(x*_i), y_i) + beta * delta_energy_penalty,
    x* from PGD-CE as in SAT; beta = 0 is SAT itself."""
    return F.cross_entropy(logits_adv, y) + beta * delta_energy_penalty(logits_nat, logits_adv, y, gamma)


# ---------------------------------------------------------------------------------------------------
# Checkpoint selection from the energy log (train.py --select energy)

ENERGY_BAND_EPOCHS = 5  # the band: the gap over 5 epochs (which 5: `band` below),
ENERGY_BAND_WIDTH = 3.0  # their mean +- 3 standard deviations,
ENERGY_BAND_FLOOR = 1e-3  # the standard deviation taken as at least 0.001;
ENERGY_BAND_PATIENCE = 2  # the gap has left the band once it stays outside for 2 epochs in a row
ENERGY_BURN_IN = 5  # band="start": the epochs skipped before the band (the gaps swing while the net starts to learn)
LR_DECAYED = 0.5  # the decay: the first epoch whose logged learning rate is below half the peak
ENERGY_GAPS = ("delta_E", "delta_Exy")  # dE = E(x) - E(x*), dE(x, y) = E(x, y) - E(x*, y), as train.py logs them
ENERGY_BANDS = ("decay", "start")


def fit_band(values) -> tuple:
    """(centre, half-width) of a band fitted to a few values of a logged curve: their mean +- 3 standard
    deviations (the standard deviation taken as at least 0.001). energy_pick reads the energy gap against
    it; the claims analysis reads each curve against the band of its peak epochs."""
    values = torch.as_tensor(values, dtype=torch.float64)
    spread = values.std().item() if len(values) > 1 else 0.0
    return values.mean().item(), ENERGY_BAND_WIDTH * max(spread, ENERGY_BAND_FLOOR)


def lr_decay_index(history: list):
    """Index of the first logged epoch whose learning rate (as logged after it) is below half the peak
    so far: the last epoch trained at the high rate (None: no decay yet)."""
    lrs = [row["lr"] for row in history]
    return next((i for i, lr in enumerate(lrs) if lr < LR_DECAYED * max(lrs[:i + 1])), None)


def energy_pick(history: list, gap: str = "delta_E", band: str = "start") -> int:
    """The epoch `--select energy` keeps, from the log alone (no validation attack).

    Robust overfitting shows as a divergence of natural and adversarial energies: the gap (`gap`, on
    the training batches, eval mode) leaves the band it held before. The band is the mean +- 3 std of
    the gap over 5 epochs: with band="start" (the default) the 5 epochs after a burn-in of 5, with
    band="decay" (the first design) the 5 epochs up to the learning rate's decay (before it, the pick is
    the newest epoch). The pick is the last epoch after the band before the gap leaves it for 2 epochs
    in a row (the newest in-band epoch while it has not). Causal: it reads only the epochs logged so far.

    The first design assumed that overfitting starts after the decay; on the claims-cpu runs it starts
    before it, and the band from the start with dE picked closest to the validation pick of the four
    candidates (docs/claims.md). It was fixed before the runs of the second regime.
    """
    if gap not in ENERGY_GAPS or band not in ENERGY_BANDS:
        raise ValueError(f"gap in {ENERGY_GAPS} and band in {ENERGY_BANDS}; got {gap!r}, {band!r}")
    if band == "decay":
        end = lr_decay_index(history)
        if end is None:
            return history[-1]["epoch"]
    else:
        end = ENERGY_BURN_IN + ENERGY_BAND_EPOCHS - 1
        if end >= len(history):
            return history[-1]["epoch"]
    values = [row[gap] for row in history]
    centre, spread = fit_band(values[max(0, end + 1 - ENERGY_BAND_EPOCHS):end + 1])
    inside = [abs(v - centre) <= spread for v in values]
    pick, outside_run = end, 0
    for i in range(end + 1, len(history)):
        outside_run = 0 if inside[i] else outside_run + 1
        if outside_run >= ENERGY_BAND_PATIENCE:
            break
        if inside[i]:
            pick = i
    return history[pick]["epoch"]


def _check_on_random_logits() -> str:
    """What `python energy.py` prints: the equations checked on random logits (a copy of this file alone runs it)."""
    torch.manual_seed(0)
    logits_nat, logits_adv, y = 3 * torch.randn(8, 10), 3 * torch.randn(8, 10), torch.randint(0, 10, (8,))
    log_p = F.log_softmax(logits_nat, dim=1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(log_p, energy_x(logits_nat) - energy_xy(logits_nat, y), atol=1e-5)
    assert torch.allclose(trades_loss(logits_nat, logits_adv, y, 6.0),
                          weat_loss(logits_nat, logits_adv, y, 6.0, "nat", torch.ones(8)))
    return (f"energy.py: log p(y|x) = E(x) - E(x, y) holds on random logits; WEAT-adv loss {weat_loss(logits_nat, logits_adv, y, 6.0):.4f}, "
            f"TRADES {trades_loss(logits_nat, logits_adv, y, 6.0):.4f}, mean w(x) {weat_weights(logits_nat).mean():.4f}")


if __name__ == "__main__":  # alone: check the equations; with arguments: the analysis command is analysis.py
    import sys
    if len(sys.argv) > 1:
        print("energy.py: error: the energy analysis of Section 3 is analysis.py in the WEAT repository, with the same "
              "modes and flags: python analysis.py " + " ".join(sys.argv[1:]), file=sys.stderr)
        sys.exit(2)
    print(_check_on_random_logits())
