"""A classifier read as an energy-based model, and the TRADES / WEAT training losses.

For logits f(x) (Section 3 of the paper):

    E(x)   = -logsumexp_k f(x)[k]          marginal energy       energy_x
    E(x,y) = -f(x)[y]                      joint energy          energy_xy
    log p(y|x) = E(x) - E(x,y)

WEAT (Section 4) weights each sample by w(x) = 1 / log(1 + exp(|E(x)|)) inside a TRADES objective.
`trades_loss` is a drop-in replacement for `F.cross_entropy` in a training loop:

    loss = trades_loss(model(x), model(x_adv), y, beta=6.0, weat="adv")
"""
import torch
import torch.nn.functional as F

WEAT_CHOICES = (None, "nat", "adv")


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
    """KL(p(.|x) || p(.|x*)) per row, from logits (the TRADES regulariser)."""
    log_p_nat = F.log_softmax(logits_nat, dim=1)
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    return (log_p_nat.exp() * (log_p_nat - log_p_adv)).sum(dim=1)


def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                weat: str = None) -> torch.Tensor:
    """The TRADES / WEAT outer objective, averaged over the batch size B.

    weat=None  (TRADES, Zhang et al. 2019):  (1/B) sum_i CE(f(x_i), y_i) + beta (1/B) sum_i KL_i
    weat="nat" (WEAT-nat):  (1/B) sum_i w_i CE(f(x_i), y_i)  + beta (1/B) sum_i w_i KL_i
    weat="adv" (WEAT-adv):  (1/B) sum_i w_i CE(f(x*_i), y_i) + beta (1/B) sum_i w_i KL_i
    with KL_i = KL(p(.|x_i) || p(.|x*_i)) and w_i = weat_weights(f(x_i)) (detached, unnormalised),
    as in the authors' released code.
    """
    if weat not in WEAT_CHOICES:
        raise ValueError(f"weat must be one of {WEAT_CHOICES}, got {weat!r}")
    ce = F.cross_entropy(logits_adv if weat == "adv" else logits_nat, y, reduction="none")
    kl = kl_per_sample(logits_nat, logits_adv)
    if weat is None:
        return ce.mean() + beta * kl.mean()
    w = weat_weights(logits_nat)
    return (w * ce).mean() + beta * (w * kl).mean()
