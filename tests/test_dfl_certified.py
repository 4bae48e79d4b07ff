"""Certified decentralized unlearning (federation/certified.py): influence of a client under
D-SGD, Fisher curvature and conjugate gradients, the Newton correction's sign on a convex
model, noise calibration, and the broadcast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unlearn.errors import UnlearnError
from unlearn.federation import (
    Client,
    TorchClient,
    complete,
    dsgd,
    erdos_renyi,
    get_parameters,
    metropolis,
    ring,
    torus,
)
from unlearn.federation.certified import (
    SOFTMAX_HESSIAN_LIPSCHITZ,
    broadcast_tree,
    conjugate_gradient,
    dfl_certified_unlearn,
    fisher_diagonal,
    fisher_vector_product,
    flatten_parameters,
    gaussian_sigma,
    gradient_residual_bound,
    influence_weights,
    mixing_bound,
    newton_correction,
)

DIM, CLASSES, N, WD = 5, 3, 200, 1e-2

# torch's forward-mode AD loads its decompositions through torch.jit.script once per process
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def softmax_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from a softmax model of the inputs (float64)."""
    gen = torch.Generator().manual_seed(0)
    w = 1.5 * torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
    x = torch.randn(N, DIM, generator=gen, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(x @ w.T, dim=1), 1, generator=gen).squeeze(1)
    return x, y


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(DIM, CLASSES).double()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 6), nn.Tanh(), nn.Linear(6, CLASSES)).double()


def _objective(model, theta, x, y):
    """Mean CE + WD/2 ||theta||^2 of a linear model at the flat ``theta`` (weight, bias)."""
    w = theta[: CLASSES * DIM].view(CLASSES, DIM)
    b = theta[CLASSES * DIM :]
    return F.cross_entropy(x @ w.T + b, y) + WD / 2 * (theta * theta).sum()


def fit_optimum(x, y) -> nn.Module:
    """The L2-regularised logistic regression optimum by plain Newton (torch.autograd only)."""
    model = linear_model()
    theta = flatten_parameters(model).clone()
    for _ in range(30):
        g = torch.autograd.functional.jacobian(lambda t: _objective(model, t, x, y), theta)
        if float(g.norm()) < 1e-13:
            break
        h = torch.autograd.functional.hessian(lambda t: _objective(model, t, x, y), theta)
        theta = theta - torch.linalg.solve(h, g)
    with torch.no_grad():
        model.weight.copy_(theta[: CLASSES * DIM].view(CLASSES, DIM))
        model.bias.copy_(theta[CLASSES * DIM :])
    return model


@pytest.fixture(scope="module")
def convex(softmax_data):
    x, y = softmax_data
    deleted = torch.arange(20)
    keep = torch.arange(20, N)
    full = fit_optimum(x, y)
    retrained = fit_optimum(x[keep], y[keep])
    return {
        "full": full,
        "theta": flatten_parameters(full),
        "oracle": flatten_parameters(retrained),
        "retained": (x[keep], y[keep]),
        "deleted": (x[deleted], y[deleted]),
    }


def _retained_grad_norm(theta, retained) -> float:
    x, y = retained
    g = torch.autograd.functional.jacobian(lambda t: _objective(None, t, x, y), theta)
    return float(g.norm())


def _per_example_loop(model, x, y) -> torch.Tensor:
    rows = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


# ---------------------------------------------------------------------------- influence


class _ConstantStep(Client):
    """A client whose local step is ``x - gamma * g`` with a fixed vector ``g``."""

    def __init__(self, g: np.ndarray, gamma: float):
        self.g, self.gamma = g, gamma

    def fit(self, parameters, config):
        return [parameters[0] - self.gamma * self.g], 1, {}


def test_influence_weights_match_the_dsgd_engine():
    graph, rounds, gamma = ring(5), 7, 0.1
    q = metropolis(graph)
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(5, 3))
    starts = [[rng.normal(size=3)] for _ in range(5)]
    result = dsgd([_ConstantStep(g, gamma) for g in steps], starts, q, rounds)
    x0 = np.stack([s[0] for s in starts])
    coef = np.stack([influence_weights(q, rounds, u) for u in range(5)], axis=1)  # (i, u)
    expected = np.linalg.matrix_power(q, rounds) @ x0 - gamma * coef @ steps
    got = np.stack([p[0] for p in result.node_parameters])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    per_round = influence_weights(graph, rounds, 2, per_round=True)
    assert per_round.shape == (rounds, 5)
    np.testing.assert_allclose(per_round.sum(axis=0), coef[:, 2])
    np.testing.assert_array_equal(per_round[-1], np.eye(5)[2])  # the last step is unmixed
    assert coef.sum(axis=0) == pytest.approx(np.full(5, rounds))  # doubly stochastic
    assert influence_weights(q, 0, 1).tolist() == [0.0] * 5


@pytest.mark.parametrize(
    "graph",
    [ring(8), torus(3, 3), erdos_renyi(10, 0.4, seed=1), complete(6)],
    ids=["ring", "torus", "erdos_renyi", "complete"],
)
def test_mixing_bound_holds_and_coefficients_tend_to_the_share(graph):
    q = metropolis(graph)
    n = len(q)
    relative = []
    for rounds in (1, 5, 50, 500, 2000):
        dev = max(
            float(np.abs(influence_weights(q, rounds, u) - rounds / n).max()) for u in range(n)
        )
        bound = mixing_bound(q, rounds)
        assert dev <= bound + 1e-12 * rounds  # float summation over the rounds
        relative.append(dev / (rounds / n))
    assert relative == sorted(relative, reverse=True) and relative[-1] < 0.05
    # the oldest round's step has mixed to about 1/N everywhere
    oldest = influence_weights(q, 60, 0, per_round=True)[0]
    np.testing.assert_allclose(oldest, 1.0 / n, atol=1e-3)
    if graph.number_of_edges() == n * (n - 1) // 2:  # complete graph: Q = J/N, bound tight
        assert mixing_bound(q, 9) == pytest.approx(1 - 1 / n)
        assert dev == pytest.approx(1 - 1 / n)


# ---------------------------------------------------------------------------- curvature


def test_fisher_diagonal_and_products_match_brute_force(softmax_data):
    x, y = softmax_data[0][:40], softmax_data[1][:40]
    model = mlp()
    g = _per_example_loop(model, x, y)  # (n, P)
    dense = g.T @ g / len(y)
    diag = fisher_diagonal(model, x, y, batch_size=16)
    torch.testing.assert_close(diag, dense.diagonal(), rtol=1e-10, atol=1e-12)
    v = torch.randn(g.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fv = fisher_vector_product(model, x, y, v, batch_size=16)
    torch.testing.assert_close(fv, dense @ v, rtol=1e-10, atol=1e-12)
    lam = 1e-2
    a = dense + lam * torch.eye(len(v), dtype=torch.float64)
    cg = conjugate_gradient(
        lambda u: fisher_vector_product(model, x, y, u) + lam * u, v, max_iters=200, tol=1e-12
    )
    assert cg.converged and cg.relative_residual < 1e-10 and cg.matvecs == cg.iterations + 1
    torch.testing.assert_close(cg.solution, torch.linalg.solve(a, v), rtol=1e-7, atol=1e-9)
    assert model.training  # the caller's mode is restored


def test_conjugate_gradient_edge_cases():
    a = torch.diag(torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=torch.float64))
    b = torch.ones(4, dtype=torch.float64)
    short = conjugate_gradient(lambda v: a @ v, b, max_iters=1, tol=1e-12)
    assert not short.converged and short.iterations == 1 and short.residual > 0.1
    full = conjugate_gradient(lambda v: a @ v, b, max_iters=10, tol=1e-12)
    assert full.converged and full.iterations <= 6  # 4 in exact arithmetic
    torch.testing.assert_close(full.solution, b / a.diagonal())
    zero = conjugate_gradient(lambda v: a @ v, torch.zeros(4, dtype=torch.float64))
    assert zero.iterations == 0 and zero.solution.abs().sum() == 0
    with pytest.raises(UnlearnError, match="not positive definite"):
        conjugate_gradient(lambda v: -v, b)


# ---------------------------------------------------------------------------- Newton step


def test_exact_newton_step_lands_near_the_retrained_optimum(convex):
    theta, oracle = convex["theta"], convex["oracle"]
    before = float((theta - oracle).norm())
    args = (convex["full"], convex["retained"], convex["deleted"])
    step = newton_correction(*args, damping=0.0, curvature="exact", weight_decay=WD)
    after = float((theta + step.step - oracle).norm())
    assert after < 0.1 * before
    # the opposite sign moves away from the retrained model
    assert float((theta - step.step - oracle).norm()) > 1.5 * before
    # at the full optimum the deleted-gradient and retained-gradient forms are one step
    retained_form = newton_correction(
        *args, damping=0.0, curvature="exact", weight_decay=WD, gradient="retained"
    )
    torch.testing.assert_close(step.step, retained_form.step, rtol=1e-6, atol=1e-9)
    n_r, n_u, p = 180, 20, theta.numel()
    assert step.grad_evals == n_u + n_r * p and retained_form.grad_evals == n_r + n_r * p


@pytest.mark.parametrize("curvature", ["cg", "diag"])
def test_fisher_newton_steps_get_closer_with_damping(convex, curvature):
    theta, oracle = convex["theta"], convex["oracle"]
    args = (convex["full"], convex["retained"], convex["deleted"])
    step = newton_correction(*args, damping=0.05, curvature=curvature, weight_decay=WD, tol=1e-10)
    assert float((theta + step.step - oracle).norm()) < 0.7 * float((theta - oracle).norm())
    if curvature == "cg":
        assert step.cg.converged and step.grad_evals == 20 + 180 * step.cg.matvecs
    else:
        assert step.cg is None and step.grad_evals == 20 + 180


@pytest.mark.parametrize("curvature", ["exact", "cg", "diag"])
def test_residual_bound_holds_and_bounds_the_distance(convex, curvature):
    theta, oracle, retained = convex["theta"], convex["oracle"], convex["retained"]
    damping = 0.0 if curvature == "exact" else 0.05
    step = newton_correction(
        convex["full"], retained, convex["deleted"], damping, curvature, weight_decay=WD
    )
    rb = gradient_residual_bound(convex["full"], retained, step.step, WD)
    measured = _retained_grad_norm(theta + step.step, retained)
    assert rb.measured == pytest.approx(measured, rel=1e-8)
    assert measured <= rb.bound and rb.bound == pytest.approx(rb.first_order + rb.remainder)
    # strong convexity: the distance to the retrained optimum is at most bound / weight decay
    assert float((theta + step.step - oracle).norm()) <= rb.bound / WD
    if curvature == "exact":
        assert rb.first_order < 1e-8  # the solve is exact and the start optimal
    # the remainder term by hand: M/2 * mean ||(x, 1)|| ||change of logits||^2
    x = retained[0]
    w = step.step[: CLASSES * DIM].view(CLASSES, DIM)
    u = x @ w.T + step.step[CLASSES * DIM :]
    hand = SOFTMAX_HESSIAN_LIPSCHITZ / 2 * ((x * x).sum(1) + 1).sqrt() @ (u * u).sum(1) / len(x)
    assert rb.remainder == pytest.approx(float(hand), rel=1e-10)


def test_softmax_hessian_lipschitz_constant_holds():
    """||H(z + h) - H(z)||_op <= M ||h|| for H(z) = diag(p) - p p^T, on random draws."""
    gen = torch.Generator().manual_seed(0)

    def hess(z):
        p = torch.softmax(z, dim=-1)
        return torch.diag_embed(p) - p[..., :, None] * p[..., None, :]

    worst = 0.0
    for k in (2, 3, 10):
        z = 3 * torch.randn(2000, k, generator=gen, dtype=torch.float64)
        h = torch.randn(2000, k, generator=gen, dtype=torch.float64) * torch.rand(
            2000, 1, generator=gen, dtype=torch.float64
        )
        gap = torch.linalg.matrix_norm(hess(z + h) - hess(z), ord=2) / h.norm(dim=1)
        worst = max(worst, float(gap.max()))
    assert worst <= SOFTMAX_HESSIAN_LIPSCHITZ


# ---------------------------------------------------------------------------- noise


def test_gaussian_sigma_by_hand():
    # ln(1.25 / 1e-5) = ln 1.25 + 5 ln 10 = 0.2231436 + 11.5129255 = 11.7360691
    assert gaussian_sigma(0.5, 0.5, 1e-5) == pytest.approx(math.sqrt(2 * 11.7360691), rel=1e-7)
    assert gaussian_sigma(0.5, 0.5, 1e-5) == pytest.approx(4.84480, abs=1e-5)
    assert gaussian_sigma(2.0, 0.25, 1e-5) == pytest.approx(8 * 4.84480, abs=1e-4)
    assert gaussian_sigma(0.0, 0.5, 1e-5) == 0.0


# ---------------------------------------------------------------------------- end to end


def test_dfl_convex_unlearning_broadcasts_a_calibrated_model(convex):
    theta = convex["theta"]
    full = get_parameters(convex["full"])
    rng = np.random.default_rng(0)
    offsets = [[rng.normal(scale=1e-3, size=a.shape) for a in full] for _ in range(4)]
    mean = [np.mean([o[k] for o in offsets], axis=0) for k in range(len(full))]
    nodes = [[a + o[k] - mean[k] for k, a in enumerate(full)] for o in offsets]
    kw = dict(
        mixing=ring(4),
        model_factory=linear_model,
        retained=convex["retained"],
        deleted=convex["deleted"],
        epsilon=0.5,
        delta=1e-5,
        damping=0.0,
        curvature="exact",
        weight_decay=WD,
        requester=2,
        rounds=10,
    )
    res = dfl_certified_unlearn(nodes, seed=3, **kw)
    assert res.bound == "convex" and res.strong_convexity == WD
    assert res.sensitivity == pytest.approx(res.residual_bound / WD)
    assert res.sigma == pytest.approx(gaussian_sigma(res.residual_bound / WD, 0.5, 1e-5))
    assert res.measured_residual <= res.residual_bound
    for node in res.node_parameters:  # every node holds the same model
        for a, b in zip(node, res.parameters, strict=True):
            np.testing.assert_array_equal(a, b)
    assert res.broadcast_transfers == 3 and res.gather_transfers == 3
    assert res.model_transfers == 6 and res.broadcast_edges[0][0] == 2
    assert res.grad_evals == 20 + 180 * theta.numel() + 3 * 180
    assert res.influence["share"] == 2.5
    assert res.influence["max_deviation"] <= res.influence["mixing_bound"]
    # the released model is the consensus, the Newton step, and seeded Gaussian noise
    same = dfl_certified_unlearn(nodes, seed=3, **kw)
    other = dfl_certified_unlearn(nodes, seed=4, **kw)
    np.testing.assert_array_equal(same.parameters[0], res.parameters[0])
    assert not np.array_equal(other.parameters[0], res.parameters[0])
    released = torch.cat([torch.as_tensor(a).reshape(-1) for a in res.parameters])
    step = newton_correction(
        convex["full"], convex["retained"], convex["deleted"], 0.0, "exact", weight_decay=WD
    )
    noise = released - theta - step.step
    assert float(noise.norm()) == pytest.approx(res.noise_norm, rel=1e-6)
    assert float(noise.std()) == pytest.approx(res.sigma, rel=0.5)  # 18 draws
    # a given consensus costs no gather
    alone = dfl_certified_unlearn(full, seed=3, **kw)
    assert alone.gather_transfers == 0 and alone.model_transfers == 3


def test_dfl_mlp_after_dsgd_with_a_given_sensitivity(softmax_data):
    x, y = (t.float() if t.is_floating_point() else t for t in softmax_data)
    parts = np.array_split(np.arange(N), 4)

    def factory():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(DIM, 8), nn.ReLU(), nn.Linear(8, CLASSES))

    clients = [TorchClient(factory, (x[p], y[p]), lr=0.1, seed=i) for i, p in enumerate(parts)]
    trained = dsgd(clients, get_parameters(factory()), ring(4), rounds=3)
    keep = torch.from_numpy(np.concatenate(parts[1:]))
    kw = dict(
        model_factory=factory,
        retained=(x[keep], y[keep]),
        deleted=(x[parts[0]], y[parts[0]]),
        epsilon=0.9,
        delta=1e-5,
        damping=0.1,
        seed=0,
        rounds=3,
    )
    with pytest.raises(UnlearnError, match="sensitivity"):
        dfl_certified_unlearn(trained.node_parameters, ring(4), **kw)
    for curvature in ("diag", "cg"):
        res = dfl_certified_unlearn(
            trained.node_parameters, ring(4), curvature=curvature, sensitivity=0.01, **kw
        )
        again = dfl_certified_unlearn(
            trained.node_parameters, ring(4), curvature=curvature, sensitivity=0.01, **kw
        )
        assert res.bound == "given" and res.residual_bound is None
        assert res.sigma == pytest.approx(gaussian_sigma(0.01, 0.9, 1e-5))
        assert all(
            np.array_equal(a, b)
            for node in res.node_parameters
            for a, b in zip(node, res.parameters, strict=True)
        )
        assert all(
            np.array_equal(a, b) for a, b in zip(res.parameters, again.parameters, strict=True)
        )
        assert res.parameters[0].dtype == np.float32 and res.model_transfers == 6


# ---------------------------------------------------------------------------- bad input


def test_broadcast_tree_is_a_spanning_tree():
    tree = broadcast_tree(torus(3, 3), 4)
    assert len(tree) == 8 and tree[0][0] == 4
    assert {child for _, child in tree} == set(range(9)) - {4}
    q = np.eye(3)
    with pytest.raises(UnlearnError, match="disconnected"):
        broadcast_tree(q, 0)


def _bad_calls(convex):
    full, r, d = convex["full"], convex["retained"], convex["deleted"]
    p = get_parameters(full)
    ok = dict(
        mixing=ring(3),
        model_factory=linear_model,
        retained=r,
        deleted=d,
        epsilon=0.5,
        delta=1e-5,
        weight_decay=WD,
    )
    return [
        (lambda: influence_weights(ring(3), -1, 0), "rounds"),
        (lambda: influence_weights(ring(3), 2, 3), "node"),
        (lambda: influence_weights(np.ones((2, 3)), 2, 0), "mixing"),
        (lambda: influence_weights(np.full((2, 2), 0.7), 2, 0), "mixing"),
        (lambda: mixing_bound(np.array([[0.5, 0.5], [0.2, 0.8]]), 3), "symmetric"),
        (lambda: newton_correction(full, r, d, -1.0), "damping"),
        (lambda: newton_correction(full, r, d, 0.0, "cg"), "damping"),
        (lambda: newton_correction(full, r, d, 0.1, "newton"), "curvature"),
        (lambda: newton_correction(full, r, d, 0.1, gradient="all"), "gradient"),
        (lambda: newton_correction(full, r, d, 0.1, batch_size=0), "batch_size"),
        (lambda: newton_correction(full, r, d, 0.1, max_iters=0), "max_iters"),
        (lambda: newton_correction(full, r, (d[0][:, :3], d[1]), 0.1), "deleted"),
        (lambda: newton_correction(full, (r[0], r[1] + 5), d, 0.1), "retained"),
        (lambda: newton_correction(full, (r[0], r[1].double()), d, 0.1), "retained"),
        (lambda: newton_correction(full, r, (d[0][:0], d[1][:0]), 0.1), "deleted"),
        (lambda: newton_correction(full, r, d, 0.0, "exact"), "damping"),
        (lambda: newton_correction(mlp_big(), r, d, 0.1, "exact"), "exact"),
        (lambda: fisher_vector_product(full, *r, torch.ones(3)), "v"),
        (lambda: gradient_residual_bound(mlp(), r, torch.zeros(57)), "model"),
        (lambda: gradient_residual_bound(full, r, torch.zeros(18), -1.0), "weight_decay"),
        (lambda: conjugate_gradient(3, torch.ones(2)), "matvec"),
        (lambda: conjugate_gradient(lambda v: v, torch.ones(2), tol=-1.0), "tol"),
        (lambda: gaussian_sigma(-0.1, 0.5, 1e-5), "sensitivity"),
        (lambda: gaussian_sigma(0.1, 0.0, 1e-5), "epsilon"),
        (lambda: gaussian_sigma(0.1, 1.0, 1e-5), "epsilon must be < 1"),
        (lambda: gaussian_sigma(0.1, 0.5, 0.0), "delta"),
        (lambda: gaussian_sigma(0.1, 0.5, 1.0), "delta"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "epsilon": 2.0}), "epsilon"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "weight_decay": 0.0}), "weight_decay"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "requester": 3}), "requester"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "seed": -1}), "seed"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "rounds": -1}), "rounds"),
        (lambda: dfl_certified_unlearn([p, p], **ok), "node_parameters"),
        (lambda: dfl_certified_unlearn([p, p, p[:1]], **ok), "node_parameters"),
        (lambda: dfl_certified_unlearn(p[:1], **ok), "parameters"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "model_factory": 3}), "model_factory"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "sensitivity": -1.0}), "sensitivity"),
        (lambda: dfl_certified_unlearn(p, **{**ok, "mixing": np.eye(3)}), "disconnected"),
    ]


def mlp_big() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, 1000), nn.ReLU(), nn.Linear(1000, CLASSES)).double()


def test_bad_inputs_name_the_argument(convex):
    for call, name in _bad_calls(convex):
        with pytest.raises(UnlearnError, match=name):
            call()
