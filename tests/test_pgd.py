"""PGD and the nearest-adversarial search, checked against a linear model's exact geometry.

For f(x) = W x + b with two classes, the decision boundary is the hyperplane
w.x + c = 0 with w = W1 - W0 and c = b1 - b0, so the nearest L2 point of the
other class lies at distance |w.x + c| / ||w|| along w.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn.attacks.pgd import nearest_adversarial, pgd_attack
from unlearn.errors import UnlearnError

DIM = 8


@pytest.fixture()
def linear():
    torch.manual_seed(0)
    model = nn.Linear(DIM, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, DIM))
        model.bias.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(40, DIM)
    with torch.no_grad():
        y = model(x).argmax(1)
    w = (model.weight[1] - model.weight[0]).detach()
    c = float((model.bias[1] - model.bias[0]).detach())
    dist = (x @ w + c).abs() / w.norm()
    keep = dist > 0.1  # eps0 = 0.04 must start below the boundary for the factor-2 check
    assert int(keep.sum()) >= 30
    return model, x[keep], y[keep], dist[keep]


def _pred(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_l2_pgd_flips_just_beyond_the_analytic_distance(linear):
    model, x, y, dist = linear
    adv = pgd_attack(model, x, y, eps=dist * 1.05)
    assert (_pred(model, adv) != y).all()
    adv = pgd_attack(model, x, y, eps=dist * 0.95)
    assert (_pred(model, adv) == y).all()


def test_l2_perturbation_stays_in_each_ball(linear):
    model, x, y, dist = linear
    eps = dist * torch.linspace(0.5, 3.0, len(dist))
    for random_start in (False, True):
        adv = pgd_attack(
            model, x, y, eps=eps, random_start=random_start, generator=torch.Generator()
        )
        norms = (adv - x).flatten(1).norm(dim=1)
        assert (norms <= eps * (1 + 1e-5)).all()


def test_linf_bound_and_scalar_eps():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(DIM, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(32, DIM)
    y = _pred(model, x)
    adv = pgd_attack(model, x, y, eps=0.1, norm="linf", steps=20, random_start=True)
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert not torch.equal(adv, x)


def test_targeted_reaches_the_target():
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    torch.manual_seed(2)
    x = torch.randn(30, 3)
    target = (_pred(model, x) + 1) % 3
    adv = pgd_attack(model, x, target, eps=10.0, targeted=True)
    assert (_pred(model, adv) == target).all()
    assert ((adv - x).flatten(1).norm(dim=1) <= 10.0 * (1 + 1e-5)).all()


def test_clamp_keeps_inputs_in_range(linear):
    model, _, _, _ = linear
    torch.manual_seed(3)
    x = torch.rand(16, DIM)
    y = _pred(model, x)
    for norm in ("l2", "linf"):
        adv = pgd_attack(model, x, y, eps=2.0, norm=norm, clamp=(0.0, 1.0))
        assert adv.min() >= 0.0 and adv.max() <= 1.0
    adv = pgd_attack(model, x, y, eps=0.5, clamp=(0.0, 1.0))
    assert ((adv - x).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-5)).all()


def test_parameters_grads_and_mode_are_untouched(linear):
    model, x, y, _ = linear
    model.train()
    pgd_attack(model, x, y, eps=1.0)
    nearest_adversarial(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_nearest_adversarial_is_within_a_factor_two(linear):
    model, x, y, dist = linear
    x_adv, y_adv, eps = nearest_adversarial(model, x, y, eps0=0.04, batch_size=7)
    assert (y_adv != y).all() and torch.equal(_pred(model, x_adv), y_adv)
    assert (eps >= dist).all() and (eps < 2 * dist).all()
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert (norms >= dist * (1 - 1e-4)).all() and (norms <= eps * (1 + 1e-5)).all()
    # eps is eps0 times a power of two
    k = torch.log2(eps / 0.04)
    assert torch.allclose(k, k.round(), atol=1e-4)


def test_misclassified_samples_are_their_own_adversarial(linear):
    model, x, y, _ = linear
    wrong = y.clone()
    wrong[:3] = 1 - wrong[:3]
    x_adv, y_adv, eps = nearest_adversarial(model, x, wrong)
    assert torch.equal(x_adv[:3], x[:3]) and (eps[:3] == 0).all()
    assert torch.equal(y_adv[:3], y[:3]) and (y_adv != wrong).all()


def test_too_few_doublings_is_an_error(linear):
    model, x, y, _ = linear
    with pytest.raises(UnlearnError, match=rf"{len(x)} of {len(x)} samples never changed"):
        nearest_adversarial(model, x, y, eps0=1e-3, max_doublings=2)


def test_bad_arguments_are_refused(linear):
    model, x, y, _ = linear
    with pytest.raises(UnlearnError, match="unknown PGD norm"):
        pgd_attack(model, x, y, eps=1.0, norm="l1")
    with pytest.raises(UnlearnError, match="eps must be"):
        pgd_attack(model, x, y, eps=torch.ones(3))
    with pytest.raises(UnlearnError, match="non-negative"):
        pgd_attack(model, x, y, eps=-1.0)
    with pytest.raises(UnlearnError, match="labels"):
        nearest_adversarial(model, x, y[:-1])


def test_nearest_adversarial_on_a_nonlinear_model():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    model.append(nn.Linear(32, 5))
    x = torch.randn(64, DIM)
    pred = _pred(model, x)
    x_adv, y_adv, eps = nearest_adversarial(model, x, pred, steps=20)
    assert (y_adv != pred).all()
    assert torch.equal(_pred(model, x_adv), y_adv)
    assert (eps > 0).all()
    assert ((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-5)).all()


def test_saturated_cross_entropy_falls_back_to_the_margin():
    """A margin of 400 logits makes the float32 cross-entropy gradient exactly zero."""
    w = torch.tensor([[0.0, 0.0], [200.0, 0.0]])
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.zero_()
    x = torch.tensor([[2.0, 0.5]])  # class 1, margin 400; the boundary is x0 = 0, at distance 2
    y = model(x).argmax(1)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xr), y), xr)
    assert float(g.abs().max()) == 0.0
    adv = pgd_attack(model, x, y, eps=2.1, norm="l2", steps=50)
    assert model(adv).argmax(1).item() != y.item()


def test_nearest_adversarial_can_report_failures_instead_of_raising():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    x = torch.tensor([[0.1, 0.0], [50.0, 0.0]])  # distances 0.1 and 50
    y = model(x).argmax(1)
    _, _, eps, found = nearest_adversarial(model, x, y, max_doublings=2, return_found=True)
    assert found.tolist() == [True, False]
    assert 0.1 <= float(eps[0]) < 0.2
