import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.optimize import linprog

import attacks as A
from attacks import eval_mode, margin, pgd, trades_attack
from energy import kl_per_sample
from models import build_model

EPS, ALPHA = 8 / 255, 2 / 255


@pytest.fixture(scope="module")
def bn_model():
    """A tiny ResNet with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=4)
    with torch.no_grad():
        model.train()(torch.rand(64, 3, 16, 16))  # move the running statistics away from their init
    return model.eval()


def batch(n=12, size=16):
    return torch.rand(n, 3, size, size), torch.randint(0, 10, (n,))


@pytest.mark.parametrize("loss,targeted", [("ce", False), ("ce", True), ("cw", False), ("cw", True),
                                          ("kl", False)])
def test_pgd_stays_in_the_ball_and_box_and_leaves_the_model_alone(bn_model, loss, targeted):
    x, y = batch()
    x[0] = 0.0  # corners of the box
    x[1] = 1.0
    before = {k: v.clone() for k, v in bn_model.state_dict().items()}
    target = (y + 1) % 10 if targeted else None
    x_adv = pgd(bn_model, x, y, EPS, ALPHA, steps=5, loss=loss, target=target)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    assert not bn_model.training
    assert all(torch.equal(v, bn_model.state_dict()[k]) for k, v in before.items())  # BN stats included
    assert all(p.grad is None for p in bn_model.parameters())  # input gradients only


def test_pgd_keeps_train_mode_and_bn_stats_when_called_in_train_mode(bn_model):
    bn_model.train()
    try:
        before = {k: v.clone() for k, v in bn_model.state_dict().items()}
        with eval_mode(bn_model):
            pgd(bn_model, *batch(), EPS, ALPHA, steps=3, loss="kl")
            assert not bn_model.training
        assert bn_model.training
        assert all(torch.equal(v, bn_model.state_dict()[k]) for k, v in before.items())
    finally:
        bn_model.eval()


def test_pgd_returns_a_fooling_point_else_the_best_iterate_and_the_trades_attack_starts_near_x(bn_model):
    x = torch.rand(12, 3, 16, 16)
    with torch.no_grad():  # callers may hold no_grad: the attack takes its input gradients anyway
        y = bn_model(x).argmax(1)  # every point starts correctly classified
        x_best = pgd(bn_model, x, y, EPS, ALPHA, steps=10, random_start=False)
        x_last = pgd(bn_model, x, y, EPS, ALPHA, steps=10, random_start=False, last_iterate=True)
        ce = lambda z: nn.functional.cross_entropy(bn_model(z), y, reduction="none")
        fooled = bn_model(x_best).argmax(1) != y
        assert (fooled | (ce(x_best) >= ce(x_last))).all() and ce(x_best).mean() > ce(x).mean()
        assert ((x_best - x).abs().flatten(1).amax(1) > 0).all()  # never the clean input unchanged
    torch.manual_seed(1)
    x_kl0 = trades_attack(bn_model, x, EPS, ALPHA, steps=0)
    assert 0 < (x_kl0 - x).abs().max() < 0.01  # 0.001 N(0, I) start, as TRADES
    x_pgd_kl = pgd(bn_model, x, y, EPS, ALPHA, steps=3, loss="kl")  # PGD on the KL: uniform start, best point
    with torch.no_grad():
        assert (kl_per_sample(bn_model(x), bn_model(x_pgd_kl)) > 0).all() and (x_pgd_kl - x).abs().max() > 0.01


def test_linear_model_worst_case_is_reached():
    """For f(x) = W x + b with two classes, the Linf worst case of the margin is x - eps sign(w_y - w_j)."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = 0.25 + 0.5 * torch.rand(8, 3, 4, 4)  # far from the box edges
    y = torch.randint(0, 2, (8,))
    w = linear[1].weight.detach()
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    worst = margin(linear(x + EPS * direction), y)
    x_adv = pgd(linear, x, y, EPS, ALPHA, steps=10, loss="cw", random_start=False, last_iterate=True)
    torch.testing.assert_close(margin(linear(x_adv), y), worst)


def test_pgd_reports_points_that_fool_and_refuses_bad_arguments(bn_model):
    x, y = batch()
    with pytest.raises(ValueError, match="loss"):
        pgd(bn_model, x, y, EPS, ALPHA, 1, loss="l2")
    with pytest.raises(ValueError, match="untargeted"):
        pgd(bn_model, x, y, EPS, ALPHA, 1, loss="kl", target=y)


# --- APGD, FAB-T, Square, the cascade -------------------------------------------------------------

SMALL = {"apgd-ce": dict(n_iter=5), "apgd-dlr": dict(n_iter=5), "apgd-t": dict(n_iter=5, n_target_classes=3),
         "fab-t": dict(n_iter=5, n_target_classes=3), "square": dict(n_queries=30), "pgd-20": {}}


@pytest.mark.parametrize("name", list(SMALL))
def test_every_attack_stays_in_the_ball_and_box_and_leaves_the_model_alone(bn_model, name):
    x, y = batch()
    x[0], x[1] = 0.0, 1.0
    before = {k: v.clone() for k, v in bn_model.state_dict().items()}
    x_adv = A.attack_by_name(name, **SMALL[name])(bn_model, x, y, EPS, 0)
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    moved = (x_adv - x).flatten(1).abs().amax(1) > 0
    if name == "fab-t":  # a minimal-norm attack: zero is the answer for points misclassified to begin with
        moved |= A.predict(bn_model, x) != y
    assert moved.all()  # never the clean input unchanged
    assert not bn_model.training and all(p.grad is None for p in bn_model.parameters())
    assert all(torch.equal(v, bn_model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "fab-t", "square"])
def test_attacks_are_seeded(bn_model, name):
    x, y = batch()
    run = lambda seed: A.attack_by_name(name, **SMALL[name])(bn_model, x, y, EPS, seed)
    assert torch.equal(run(3), run(3))


def test_apgd_checkpoints_follow_the_paper():
    assert A.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_square_schedule_halves_p_at_the_published_query_counts():
    fractions = [A.square_fraction(0.8, q, 10000) for q in (1, 10, 11, 50, 51, 8000, 8001)]
    assert fractions == [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512]
    # AutoAttack standard (5,000 queries, resc_schedule=False) halves at the counts themselves; the Square paper's
    # code and torchattacks stretch them to the budget, halving twice as early on 5,000 queries
    assert [A.square_fraction(0.8, q, 5000) for q in (10, 11, 51, 4001)] == [0.8, 0.4, 0.2, 0.8 / 128]
    assert [A.square_fraction(0.8, q, 5000, rescale_schedule=True) for q in (5, 6, 26, 2001)] == [0.8, 0.4, 0.2, 0.8 / 128]


def test_dlr_loss_known_values():
    logits = torch.tensor([[5.0, 3.0, 1.0, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([1])
    assert A.dlr_loss(logits, y).item() == pytest.approx(-(5 - 3) / (5 - 1))
    assert A.dlr_loss(logits, y, t).item() == pytest.approx(-(5 - 3) / (5 - 0.5))


def test_linf_boundary_step_is_the_linear_programme_optimum():
    torch.manual_seed(0)
    for _ in range(10):
        n = 6
        x, w, c = torch.rand(1, n).double(), torch.randn(1, n).double(), 0.5 * torch.randn(1).double()
        d = A.linf_boundary_step(x, w, c)
        # min r s.t. -r <= d_i <= r, w.d = c, 0 <= x + d <= 1; variables (d, r)
        eye, ones = np.eye(n), np.ones((n, 1))
        lp = linprog(np.r_[np.zeros(n), 1], A_ub=np.block([[eye, -ones], [-eye, -ones]]), b_ub=np.zeros(2 * n),
                     A_eq=np.r_[w[0].numpy(), 0][None], b_eq=[c.item()],
                     bounds=[(-v, 1 - v) for v in x[0].tolist()] + [(0, None)])
        if lp.status == 0:
            assert d.abs().max().item() == pytest.approx(lp.fun, abs=1e-9)
            assert (w * d).sum().item() == pytest.approx(c.item(), abs=1e-9)
        assert ((x + d) >= -1e-12).all() and ((x + d) <= 1 + 1e-12).all()


def linear_two_class():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = 0.25 + 0.5 * torch.rand(8, 3, 4, 4)
    y = torch.randint(0, 2, (8,))
    w = linear[1].weight.detach()
    return linear, x, y, margin(linear(x + EPS * (w[1 - y] - w[y]).sign().view_as(x)), y)


def test_apgd_reaches_the_linear_worst_case():
    linear, x, y, worst = linear_two_class()
    x_adv = A.apgd(linear, x, y, EPS, n_iter=20)
    fooled = linear(x_adv).argmax(1) != y
    # where not fooled, APGD must have found the corner itself (where fooled it may stop earlier)
    torch.testing.assert_close(margin(linear(x_adv), y)[~fooled], worst[~fooled])
    assert (fooled == (worst > 0)).all()


def test_fab_finds_the_exact_minimal_perturbation_of_a_linear_model():
    """For a linear binary classifier far from the box edges, the minimal Linf distance to the boundary
    is |f_y - f_j| / ||w_y - w_j||_1; FAB's projection is exact there."""
    linear, x, y, _ = linear_two_class()
    w = linear[1].weight.detach()
    gap = (linear(x).gather(1, y[:, None]) - linear(x).gather(1, 1 - y[:, None])).squeeze(1)
    distance = gap / (w[y] - w[1 - y]).abs().sum(1)
    eps = float(distance.max().detach()) * 1.1
    x_adv = A.fab_targeted(linear, x, y, eps, n_iter=10, n_target_classes=1)
    found = (x_adv - x).flatten(1).abs().amax(1)
    fooled = linear(x_adv).argmax(1) != y
    assert fooled[gap > 0].all()
    torch.testing.assert_close(found[gap > 0], distance[gap > 0].detach(), rtol=0.06, atol=1e-6)


def test_targeted_pgd_hits_its_targets():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    x = torch.rand(16, 3, 4, 4)
    y = linear(x).argmax(1).detach()
    target = (y + 1 + torch.randint(0, 9, (16,))) % 10
    for loss in ("ce", "cw"):
        x_adv = pgd(linear, x, y, 0.5, 0.05, 50, loss=loss, target=target)
        assert (linear(x_adv).argmax(1) == target).all()


def test_apgd_is_at_least_as_strong_as_pgd_on_a_trained_model(trained_model):
    model, x, y = trained_model
    eps = 16 / 255  # where this model's robust accuracy is neither 0 nor 1
    robust = lambda x_adv: (A.predict(model, x_adv) == y).float().mean().item()
    pgd_acc = robust(pgd(model, x, y, eps, eps / 4, 20))
    apgd_acc = robust(A.apgd(model, x, y, eps, n_iter=20))
    assert 0.1 < pgd_acc < 0.9 and apgd_acc <= pgd_acc


def test_cascade_mask_is_the_and_of_the_single_attacks(trained_model):
    model, x, y = trained_model
    x, y = x[:40], y[:40]

    # Each fake attack "fools" a fixed set of points by moving them to a point of another class.
    donors = {int(c): x[(y != c).nonzero()[0, 0]] for c in y.unique()}
    def make(broken):
        def attack(m, xs, ys, eps, seed):
            out = xs.clone()
            for i, (xi, yi) in enumerate(zip(xs, ys)):
                key = xi.sum().item()
                if key in broken:
                    out[i] = xi + (donors[int(yi)] - xi).clamp(-eps, eps)
            return out.clamp(0, 1)
        return attack
    keys = [v.sum().item() for v in x]
    eps = 1.0
    fakes = [make(set(keys[0:10])), make(set(keys[5:20])), make(set(keys[30:35]))]
    single = [A.predict(model, f(model, x, y, eps, 0)) == y for f in fakes]
    expected = (A.predict(model, x) == y) & single[0] & single[1] & single[2]
    report = []
    _, robust = A.autoattack(model, x, y, eps, attacks=fakes, batch_size=16, report=report)
    assert torch.equal(robust, expected) and expected.sum() < 40 - 5
    assert [r["robust"] for r in report] == sorted([r["robust"] for r in report], reverse=True)


def test_real_cascade_is_no_weaker_than_each_of_its_attacks(trained_model):
    model, x, y = trained_model
    x, y = x[:60], y[:60]
    eps = 16 / 255
    _, robust = A.autoattack(model, x, y, eps, attacks=("apgd-ce", "square"), n_iter=10, n_queries=20)
    for name in ("apgd-ce", "square"):
        single = A.predict(model, A.attack_by_name(name, n_iter=10, n_queries=20)(model, x, y, eps, 0)) == y
        assert not (robust & ~single).any()  # robust in the cascade implies robust to each attack alone


class Noisy(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) + torch.randn(len(x), 10)


class Rounded(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)  # piecewise constant: zero input gradient


def test_sanity_flags_fire_on_canaries_and_stay_quiet_on_a_normal_model(trained_model):
    model, x, y = trained_model
    x, y = x[:20], y[:20]
    assert not any(A.sanity_checks(model, x, y).values())
    assert A.sanity_checks(Noisy(model), x, y)["randomized_outputs"]
    assert A.sanity_checks(nn.Sequential(model, nn.Softmax(dim=1)), x, y)["softmax_outputs"]
    assert A.sanity_checks(Rounded(model), x, y)["zero_gradients"]
    report = [{"attack": "apgd-ce", "robust": 50}, {"attack": "square", "robust": 49}]
    assert A.square_flag(report, n=100) and not A.square_flag(report, n=1000)


# --- the energy analysis's attacks: untargeted FAB, CW-L2, MART's and TRADES' inner attacks (issue 14) ----

def scaled_linear(classes: int):
    """A linear classifier on 4x4 images with large weights (so that CW with c = 1 can cross its
    boundary), points far from the box edges, labelled by the model itself."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, classes))
    with torch.no_grad():
        linear[1].weight.mul_(5)
    x = 0.25 + 0.5 * torch.rand(8, 3, 4, 4)
    y = linear(x).argmax(1).detach()
    return linear, x, y, linear[1].weight.detach(), linear(x).detach()


def test_cw_l2_reaches_the_closed_form_l2_distance_of_a_linear_binary_model():
    linear, x, y, w, f = scaled_linear(2)
    j = 1 - y
    rows = torch.arange(8)
    distance = (f[rows, y] - f[rows, j]) / (w[y] - w[j]).norm(dim=1)  # |f_y - f_j| / ||w_y - w_j||_2
    x_adv = A.cw_l2(linear, x, y, c=1.0, kappa=0.0, steps=1000, lr=0.01)
    assert (linear(x_adv).argmax(1) != y).all()
    torch.testing.assert_close((x_adv - x).flatten(1).norm(dim=1), distance, rtol=0.02, atol=0)


def test_untargeted_fab_finds_the_nearest_boundary_of_a_linear_model():
    linear, x, y, w, f = scaled_linear(3)
    distance = torch.stack([min((f[i, y[i]] - f[i, j]) / (w[y[i]] - w[j]).abs().sum() for j in range(3) if j != y[i])
                            for i in range(8)])  # min_j |f_y - f_j| / ||w_y - w_j||_1
    x_adv = A.fab(linear, x, y, eps=1.0, n_iter=20)
    assert (linear(x_adv).argmax(1) != y).all()
    torch.testing.assert_close((x_adv - x).flatten(1).abs().amax(1), distance, rtol=0.01, atol=0)


@pytest.mark.parametrize("name", ["fab", "cw-l2", "mart", "trades", "apgd-last-fooled"])
def test_the_analysis_attacks_keep_their_invariants(bn_model, name):
    x, y = batch()
    x[0], x[1] = 0.0, 1.0
    before = {k: v.clone() for k, v in bn_model.state_dict().items()}
    x_adv = {"fab": lambda: A.fab(bn_model, x, y, EPS, n_iter=3),
             "cw-l2": lambda: A.cw_l2(bn_model, x, y, steps=5, target=(y + 1) % 10),
             "mart": lambda: A.mart_attack(bn_model, x, y, EPS, ALPHA, 3),
             "trades": lambda: A.trades_attack(bn_model, x, EPS, ALPHA, 3),
             "apgd-last-fooled": lambda: A.apgd(bn_model, x, y, EPS, n_iter=5, last_fooled=True)}[name]()
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    if name != "cw-l2":  # the L2 attack is not confined to the Linf ball
        assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert not bn_model.training and all(p.grad is None for p in bn_model.parameters())
    assert all(torch.equal(v, bn_model.state_dict()[k]) for k, v in before.items())


def test_apgd_last_fooled_returns_misclassified_points_or_x_itself(trained_model):
    model, x, y = trained_model
    x, y = x[:60], y[:60]
    x_adv = A.apgd(model, x, y, 16 / 255, n_iter=10, last_fooled=True)
    fooled = A.predict(model, x_adv) != y
    unchanged = (x_adv == x).flatten(1).all(1)
    assert 0 < fooled.sum() < len(y) and (fooled | unchanged).all()  # a misclassified iterate, else x itself
    robust_rule = A.apgd(model, x, y, 16 / 255, n_iter=10)
    assert torch.equal(A.predict(model, robust_rule) != y, fooled)  # the same points broken under both rules


def test_apgd_checkpoints_match_the_official_integer_schedule_at_other_budgets():
    assert A.apgd_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # intervals 2, then 1 (0.06 N rounds down to 0)
    assert A.apgd_checkpoints(20) == [4, 7, 9] + list(range(10, 21))
