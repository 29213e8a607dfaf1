import math

import pytest
import torch
import torch.nn.functional as F

from energy import energy_x, energy_xy, kl_per_sample, trades_loss, weat_weights


def random_logits(n=16, k=10, scale=3.0, dtype=torch.float64):
    return scale * torch.randn(n, k, dtype=dtype)


def test_energy_x_is_minus_logsumexp():
    logits = random_logits()
    expected = torch.tensor([-math.log(sum(math.exp(v) for v in row)) for row in logits.tolist()], dtype=torch.float64)
    torch.testing.assert_close(energy_x(logits), expected)


def test_energy_xy_is_minus_the_label_logit_and_log_p_identity():
    logits, y = random_logits(), torch.randint(0, 10, (16,))
    torch.testing.assert_close(energy_xy(logits, y), -logits[torch.arange(16), y])
    # log p(y|x) = E(x) - E(x, y)
    torch.testing.assert_close(F.log_softmax(logits, 1)[torch.arange(16), y], energy_x(logits) - energy_xy(logits, y))


def test_weat_weights_match_the_paper_formula_and_are_detached():
    logits = random_logits().requires_grad_(True)
    w = weat_weights(logits)
    e = energy_x(logits.detach())
    torch.testing.assert_close(w, 1 / torch.log(1 + torch.exp(e.abs())))
    assert not w.requires_grad
    assert (w > 0).all() and (w <= 1 / math.log(2) + 1e-12).all()  # the largest weight is at E = 0


def test_weat_weights_stay_finite_where_the_naive_formula_overflows():
    logits = torch.full((2, 10), 200.0)  # |E| ~ 202: exp overflows float32
    naive = 1 / torch.log(1 + torch.exp(energy_x(logits).abs()))
    assert (naive == 0).all()  # exp(202) = inf in float32: the naive weight collapses to 0
    w = weat_weights(logits)
    assert torch.isfinite(w).all() and (w > 0).all()
    torch.testing.assert_close(w, 1 / energy_x(logits).abs(), rtol=1e-6, atol=0)  # softplus(t) ~ t for large t


def hand_kl(logits_nat, logits_adv):
    """KL(p(.|x_i) || p(.|x*_i)) for each row, written out term by term."""
    p, log_q = F.softmax(logits_nat, 1), F.log_softmax(logits_adv, 1)
    return torch.stack([(p[i] * (p[i].log() - log_q[i])).sum() for i in range(len(p))])


def test_trades_loss_without_weat_is_the_trades_formula():
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    B = 16
    kl_div = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_nat, 1), reduction="sum") / B
    expected = F.cross_entropy(logits_nat, y) + 6.0 * kl_div
    torch.testing.assert_close(trades_loss(logits_nat, logits_adv, y, beta=6.0), expected)


@pytest.mark.parametrize("weat", ["nat", "adv"])
def test_weat_loss_weights_both_terms_unnormalised(weat):
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    kl = hand_kl(logits_nat, logits_adv)
    e = -torch.logsumexp(logits_nat, 1)
    w = 1 / torch.log(1 + torch.exp(e.abs()))
    ce = F.cross_entropy(logits_adv if weat == "adv" else logits_nat, y, reduction="none")
    expected = (w * ce).sum() / 16 + 7.0 * (w * kl).sum() / 16
    torch.testing.assert_close(trades_loss(logits_nat, logits_adv, y, beta=7.0, weat=weat), expected)


@pytest.mark.parametrize("terms,normalize,weight_fn", [
    ("ce", False, "energy"), ("kl", False, "energy"), ("both", True, "energy"), ("both", False, "uniform"),
    ("kl", True, "uniform")])
def test_weat_ablations_match_their_formulas(terms, normalize, weight_fn):
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    kl, ce = hand_kl(logits_nat, logits_adv), F.cross_entropy(logits_adv, y, reduction="none")
    w = 1 / torch.log(1 + torch.exp((-torch.logsumexp(logits_nat, 1)).abs()))
    if weight_fn == "uniform":
        w = torch.full_like(w, w.mean().item())
    if normalize:
        w = w / w.mean()
    w_ce, w_kl = (w if terms != "kl" else 1), (w if terms != "ce" else 1)
    expected = (w_ce * ce).sum() / 16 + 6.0 * (w_kl * kl).sum() / 16
    got = trades_loss(logits_nat, logits_adv, y, 6.0, "adv", terms=terms, normalize=normalize, weight_fn=weight_fn)
    torch.testing.assert_close(got, expected)


def test_uniform_weights_keep_the_scale_of_the_energy_weights():
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    paper = trades_loss(logits_nat, logits_adv, y, 6.0, "adv")
    uniform = trades_loss(logits_nat, logits_adv, y, 6.0, "adv", weight_fn="uniform")
    plain = trades_loss(logits_nat, logits_adv, y, 6.0, "adv", normalize=True, weight_fn="uniform")
    w_mean = weat_weights(logits_nat).mean()
    # uniform weights are TRADES-adv scaled by the mean weight; normalised uniform weights are TRADES-adv itself
    torch.testing.assert_close(uniform, w_mean * plain)
    assert not torch.allclose(paper, uniform)


def test_trades_kl_term_is_zero_when_adv_equals_nat_and_gradient_flows_through_both():
    logits_nat = random_logits().requires_grad_(True)
    logits_adv = logits_nat.detach().clone().requires_grad_(True)
    y = torch.randint(0, 10, (16,))
    torch.testing.assert_close(trades_loss(logits_nat, logits_adv, y, beta=6.0), F.cross_entropy(logits_nat, y))
    trades_loss(logits_nat, logits_adv + 1e-3 * torch.randn_like(logits_adv), y, beta=6.0).backward()
    assert logits_nat.grad.abs().sum() > 0 and logits_adv.grad.abs().sum() > 0


def test_kl_per_sample_matches_definition():
    a, b = random_logits(), random_logits()
    p, q = F.softmax(a, 1), F.softmax(b, 1)
    torch.testing.assert_close(kl_per_sample(a, b), (p * (p / q).log()).sum(1))


def test_unknown_weat_is_refused():
    with pytest.raises(ValueError, match="weat"):
        trades_loss(random_logits(), random_logits(), torch.zeros(16, dtype=torch.long), 6.0, weat="both")
