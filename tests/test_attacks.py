import pytest
import torch
import torch.nn as nn

from attacks import eval_mode, margin, pgd
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


def test_pgd_returns_a_fooling_point_else_the_best_iterate_and_kl_starts_near_x(bn_model):
    x = torch.rand(12, 3, 16, 16)
    with torch.no_grad():  # callers may hold no_grad: the attack takes its input gradients anyway
        y = bn_model(x).argmax(1)  # every point starts correctly classified
        x_best = pgd(bn_model, x, y, EPS, ALPHA, steps=10, random_start=False)
        x_last = pgd(bn_model, x, y, EPS, ALPHA, steps=10, random_start=False, keep_best=False)
        ce = lambda z: nn.functional.cross_entropy(bn_model(z), y, reduction="none")
        fooled = bn_model(x_best).argmax(1) != y
        assert (fooled | (ce(x_best) >= ce(x_last))).all() and ce(x_best).mean() > ce(x).mean()
        assert ((x_best - x).abs().flatten(1).amax(1) > 0).all()  # never the clean input unchanged
    torch.manual_seed(1)
    x_kl0 = pgd(bn_model, x, y, EPS, ALPHA, steps=0, loss="kl")
    assert 0 < (x_kl0 - x).abs().max() < 0.01  # 0.001 N(0, I) start, as TRADES


def test_linear_model_worst_case_is_reached():
    """For f(x) = W x + b with two classes, the Linf worst case of the margin is x - eps sign(w_y - w_j)."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = 0.25 + 0.5 * torch.rand(8, 3, 4, 4)  # far from the box edges
    y = torch.randint(0, 2, (8,))
    w = linear[1].weight.detach()
    direction = (w[1 - y] - w[y]).sign().view_as(x)
    worst = margin(linear(x + EPS * direction), y)
    x_adv = pgd(linear, x, y, EPS, ALPHA, steps=10, loss="cw", random_start=False, keep_best=False)
    torch.testing.assert_close(margin(linear(x_adv), y), worst)


def test_pgd_reports_points_that_fool_and_refuses_bad_arguments(bn_model):
    x, y = batch()
    with pytest.raises(ValueError, match="loss"):
        pgd(bn_model, x, y, EPS, ALPHA, 1, loss="l2")
    with pytest.raises(ValueError, match="untargeted"):
        pgd(bn_model, x, y, EPS, ALPHA, 1, loss="kl", target=y)
