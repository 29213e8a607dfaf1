import math

import pytest
import torch
import torch.nn.functional as F

from energy import (ablated_weights, delta_energy_penalty, der_loss, energy_x, energy_xy, kl_per_sample, trades_loss,
                    weat_loss, weat_weights)


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


@pytest.mark.parametrize("variant", ["nat", "adv"])
def test_weat_loss_weights_both_terms_unnormalised(variant):
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    kl = hand_kl(logits_nat, logits_adv)
    e = -torch.logsumexp(logits_nat, 1)
    w = 1 / torch.log(1 + torch.exp(e.abs()))
    ce = F.cross_entropy(logits_adv if variant == "adv" else logits_nat, y, reduction="none")
    expected = (w * ce).sum() / 16 + 7.0 * (w * kl).sum() / 16
    torch.testing.assert_close(weat_loss(logits_nat, logits_adv, y, beta=7.0, variant=variant), expected)


def test_trades_is_weat_nat_with_unit_weights():
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    ones = torch.ones(16, dtype=torch.float64)
    assert torch.equal(trades_loss(logits_nat, logits_adv, y, 6.0), weat_loss(logits_nat, logits_adv, y, 6.0, "nat", ones))


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
    got = weat_loss(logits_nat, logits_adv, y, 6.0, "adv", ablated_weights(logits_nat, weight_fn, normalize), terms)
    torch.testing.assert_close(got, expected)


def test_uniform_weights_keep_the_scale_of_the_energy_weights():
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    paper = weat_loss(logits_nat, logits_adv, y, 6.0, "adv")
    uniform = weat_loss(logits_nat, logits_adv, y, 6.0, "adv", ablated_weights(logits_nat, "uniform"))
    plain = weat_loss(logits_nat, logits_adv, y, 6.0, "adv", ablated_weights(logits_nat, "uniform", normalize=True))
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


def test_unknown_weat_variant_terms_or_weight_fn_is_refused():
    logits, y = random_logits(), torch.zeros(16, dtype=torch.long)
    with pytest.raises(ValueError, match="variant"):
        weat_loss(logits, logits, y, 6.0, variant="both")
    with pytest.raises(ValueError, match="terms"):
        weat_loss(logits, logits, y, 6.0, terms="all")
    with pytest.raises(ValueError, match="weight_fn"):
        ablated_weights(logits, "softmax")


# --- MART and MAIL-TR (issue 16): the losses against their formulas written out by hand -----------------

def hand_mart(logits_nat, logits_adv, y, beta):
    """MART as Wang et al.'s code computes it, term by term, one sample at a time."""
    total_boosted, total_kl = 0.0, 0.0
    for i in range(len(y)):
        p_adv, p_nat = logits_adv[i].softmax(0), logits_nat[i].softmax(0)
        others = [k for k in range(len(p_adv)) if k != y[i]]
        runner_up = max(others, key=lambda k: p_adv[k])
        total_boosted += -torch.log(p_adv[y[i]]) - torch.log(1.0001 - p_adv[runner_up])
        kl = sum(p_nat[k] * (torch.log(p_nat[k]) - torch.log(p_adv[k])) for k in range(len(p_nat)))
        total_kl += kl * (1.0000001 - p_nat[y[i]])
    return total_boosted / len(y) + beta * total_kl / len(y)


def hand_mail_trades(logits_nat, logits_adv, y, beta, weighted):
    total_ce, total_kl = 0.0, 0.0
    for i in range(len(y)):
        p_adv, p_nat = logits_adv[i].softmax(0), logits_nat[i].softmax(0)
        margin = max(p_adv[k] for k in range(len(p_adv)) if k != y[i]) - p_adv[y[i]]
        w = 3 * torch.sigmoid(1.0 * (margin - 1.5)) if weighted else 1.0
        total_ce += -torch.log(p_nat[y[i]])
        total_kl += w * sum(p_nat[k] * (torch.log(p_nat[k]) - torch.log(p_adv[k])) for k in range(len(p_nat)))
    return total_ce / len(y) + beta * total_kl / len(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mart_loss_is_the_formula_of_its_authors_code(seed):
    from energy import mart_loss
    torch.manual_seed(seed)
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    torch.testing.assert_close(mart_loss(logits_nat, logits_adv, y, 5.0), hand_mart(logits_nat, logits_adv, y, 5.0),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed,weighted", [(0, True), (1, True), (2, True), (3, False)])
def test_mail_trades_loss_is_the_formula_of_its_authors_code(seed, weighted):
    from energy import mail_trades_loss, mail_weights
    torch.manual_seed(seed)
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    torch.testing.assert_close(mail_trades_loss(logits_nat, logits_adv, y, 5.0, weighted),
                               hand_mail_trades(logits_nat, logits_adv, y, 5.0, weighted), rtol=1e-6, atol=1e-6)
    w = mail_weights(logits_adv.requires_grad_(True), y)
    assert not w.requires_grad and ((0 < w) & (w < 3)).all()
    if not weighted:  # MAIL's burn-in epochs are TRADES itself
        torch.testing.assert_close(mail_trades_loss(logits_nat, logits_adv, y, 5.0, False),
                                   trades_loss(logits_nat, logits_adv, y, 5.0))


def test_energy_pick_finds_the_last_epoch_before_the_gap_leaves_its_band():
    from energy import energy_pick
    # lr 0.1 for 10 epochs, then 0.01; dE jitters around -0.05 until epoch 14, then drifts away
    dE = [-0.05 + 0.002 * (-1) ** e for e in range(1, 15)] + [-0.05 - 0.02 * k for k in range(1, 7)]
    log = [{"epoch": e, "lr": 0.1 if e < 10 else 0.01, "delta_E": d} for e, d in enumerate(dE, start=1)]
    first_design = lambda rows: energy_pick(rows, band="decay")  # noqa: E731
    assert first_design(log) == 14
    assert first_design(log[:15]) == 14  # epoch 15 alone outside: not yet confirmed, 14 stays the pick
    assert first_design(log[:12]) == 12  # still inside the band: the newest epoch
    assert first_design(log[:9]) == 9  # no decay yet: the newest epoch
    blip = [dict(row) for row in log]
    blip[14]["delta_E"] = -0.2  # one epoch out, then back in: no departure
    blip[15:] = [dict(row, delta_E=-0.05) for row in blip[15:]]
    assert first_design(blip) == 20
    assert energy_pick(log) == energy_pick(log, "delta_E", "start") == 14  # the default: dE, the band after the burn-in


def test_energy_pick_with_the_band_from_the_start_and_the_joint_gap():
    from energy import energy_pick
    # no decay in 20 epochs; dE(x, y) swings in the burn-in (epochs 1-5), jitters around -0.3 over epochs
    # 6-12 (the band: epochs 6-10), then drifts away from epoch 13 on
    gap = [1.0, -2.0, 0.5, -0.8, 0.2] + [-0.3 + 0.004 * (-1) ** e for e in range(6, 13)] + [-0.3 - 0.05 * k for k in range(1, 9)]
    log = [{"epoch": e, "lr": 0.1, "delta_E": 0.0, "delta_Exy": g} for e, g in enumerate(gap, start=1)]
    assert energy_pick(log, gap="delta_Exy", band="start") == 12
    assert energy_pick(log[:9], gap="delta_Exy", band="start") == 9  # the band is not complete yet: the newest
    assert energy_pick(log, gap="delta_Exy", band="decay") == 20  # no decay: the first design keeps the newest
    assert energy_pick(log, gap="delta_E", band="start") == 20  # dE stays put: no departure
    with pytest.raises(ValueError, match="gap in"):
        energy_pick(log, gap="E_nat")


def test_delta_energy_penalty_is_the_hinge_of_the_per_sample_norm_of_both_gaps():
    # two classes, logits chosen so the gaps are known: sample 0 has E(x) = -log(e^1 + e^1), E(x*) = -log(e^0 + e^0)
    logits_nat = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    logits_adv = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # sample 0: dE = -(1 + log 2) + log 2 = -1, dExy = -1 - 0 = -1, norm sqrt(2); sample 1: both gaps 0
    torch.testing.assert_close(delta_energy_penalty(logits_nat, logits_adv, y),
                               torch.tensor(math.sqrt(2) / 2, dtype=torch.float64))
    torch.testing.assert_close(delta_energy_penalty(logits_nat, logits_adv, y, gamma=1.0),
                               torch.tensor((math.sqrt(2) - 1) / 2, dtype=torch.float64))
    assert delta_energy_penalty(logits_nat, logits_adv, y, gamma=2.0) == 0


def test_der_loss_is_ce_on_x_adv_plus_beta_times_the_penalty_and_has_finite_gradients_at_zero_gaps():
    logits_nat, logits_adv, y = random_logits(), random_logits(), torch.randint(0, 10, (16,))
    ce = F.cross_entropy(logits_adv, y)
    torch.testing.assert_close(der_loss(logits_nat, logits_adv, y, beta=0.0), ce)
    torch.testing.assert_close(der_loss(logits_nat, logits_adv, y, beta=2.5, gamma=0.1),
                               ce + 2.5 * delta_energy_penalty(logits_nat, logits_adv, y, 0.1))
    same = random_logits().requires_grad_(True)
    der_loss(same, same.detach().clone(), y, beta=1.0).backward()  # every gap exactly 0: the norm's kink
    assert torch.isfinite(same.grad).all()


def test_kl_per_sample_is_the_marginal_minus_the_expected_joint_energy_gap():
    """Proposition 1 of the paper, as kl_per_sample's docstring writes it."""
    logits_nat, logits_adv = random_logits(), random_logits()
    k = torch.arange(10)
    joint = lambda logits: torch.stack([energy_xy(logits, torch.full((16,), int(c))) for c in k], 1)  # noqa: E731
    expected = (energy_x(logits_nat) - energy_x(logits_adv)) - (F.softmax(logits_nat, 1) * (joint(logits_nat) - joint(logits_adv))).sum(1)
    torch.testing.assert_close(kl_per_sample(logits_nat, logits_adv), expected)
