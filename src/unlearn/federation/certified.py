"""Certified unlearning in decentralized federated learning: the numerical core.

A reconstruction of Wu et al., "Certified Unlearning in Decentralized Federated Learning"
(no public code). What comes from the paper (through ``shared/papers/NOTES.md``): the
unrolled D-SGD influence of one client, the Newton-style correction at the consensus model
``x_new = x + H_r^{-1} (1/n_r) sum_{z in D_u} grad f(x; z)`` with the empirical Fisher plus
``lambda I`` as curvature (diagonal, or conjugate gradients on Fisher-vector products), Gaussian
noise ``sigma = (Delta / epsilon) sqrt(2 ln(1.25 / delta))`` and a broadcast of the result to
every node. What is *reconstructed* here, and documented where it is done: the residual bound
that sets ``Delta`` (derived below for linear softmax models), the step from a gradient bound
to a parameter-distance sensitivity (strong convexity), the cost accounting (gradient
evaluations; model transfers along a BFS tree) and every default.

Objective and sign convention
-----------------------------
The training objective on a data set ``D`` is the mean regularised loss
``L_D(x) = (1/|D|) sum_{z in D} f(x; z)`` with ``f(x; z) = CE(model_x(z)) + (wd/2) ||x||^2``
(``wd`` = ``weight_decay``, on every trainable parameter; 0 by default). Splitting ``D`` into
the retained ``D_r`` (``n_r`` points) and deleted ``D_u`` (``n_u``) gives
``n L_D = n_r L_r + sum_{D_u} f``, so at a minimiser ``x`` of ``L_D``

    grad L_r(x) = -(1/n_r) sum_{z in D_u} grad f(x; z).

One Newton step on ``L_r`` from ``x`` is therefore ``x - H_r^{-1} grad L_r(x) =
x + H_r^{-1} (1/n_r) sum_{D_u} grad f(x; z)``: the paper's update, with a *plus* sign, and
``sum_{D_u} grad f`` includes ``n_u * wd * x`` (the deleted points' share of the weight
decay, the ``lam * m * w`` of Guo et al. 2020). ``gradient="retained"`` uses the left-hand
side instead (``-grad L_r(x)``, as zhangbinchi/certified-deep-unlearning does); the two agree
at an exact minimiser of ``L_D`` and the retained form stays a true Newton step elsewhere.
The tests check the sign on L2-regularised logistic regression: the step from the full
optimum lands next to the retained optimum.

Curvature ``H_r`` is ``C + (wd + damping) I`` with ``C`` the empirical Fisher of the retained
loss ``mean_z g_z g_z^T`` (``g_z`` the per-example CE gradient), either its diagonal
(``"diag"``) or applied by Fisher-vector products inside conjugate gradients (``"cg"``), or
the exact Hessian of the mean retained CE (``"exact"``, a dense ``P x P`` matrix for small
convex checks). ``damping`` shapes the step only; it is not part of the objective.

Certificate (convex case)
-------------------------
For a model whose logits are linear in its parameters (one ``nn.Linear``), ``L_r`` is
``wd``-strongly convex, so any ``x'`` satisfies ``||x' - x_r*|| <= ||grad L_r(x')|| / wd``
(``x_r*`` the retained optimum, the exact retrain). :func:`gradient_residual_bound` bounds
``||grad L_r(x + s)||`` after a step ``s`` by

    ||grad L_r(x) + H_r(x) s||  +  (M / 2) (1/n_r) sum_i ||x~_i|| ||u_i||^2,

the first term measured exactly (one gradient and one Hessian-vector pass over ``D_r``; it
holds the approximate curvature's error, the solver's residual and whatever gradient the
optimiser left), the second a bound on the Taylor remainder: ``u_i`` is the change of
example ``i``'s logits under ``s``, ``x~_i`` its input (with a 1 appended for a trainable
bias), and ``M = 1/sqrt(2)`` a Lipschitz constant of the softmax cross-entropy Hessian in
the logits (derived at :data:`SOFTMAX_HESSIAN_LIPSCHITZ`). It plays the role of Guo et al.'s
data-dependent Corollary 1, derived here for multiclass softmax. ``Delta = bound / wd`` is
then a sensitivity for the Gaussian mechanism: the unlearned model plus ``N(0, sigma^2 I)``
and the retrained optimum plus the same noise are ``(epsilon, delta)``-indistinguishable.
Caveats: ``sigma`` is computed from the data (as any data-dependent certificate), and the
reference is the exact retained optimum, the convex theory's stand-in for retraining the
whole DFL system. For other models no bound is derived: pass ``sensitivity``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jvp, vjp, vmap
from torch.nn import functional as F

from ..errors import UnlearnError
from ._checks import check_float, check_int, check_seed
from .engine import (
    _as_xy,
    _average,
    _check_mixing,
    _check_parameters,
    _node_lists,
    get_parameters,
    set_parameters,
)

__all__ = [
    "CURVATURES",
    "CGResult",
    "DFLCertifiedResult",
    "EXACT_MAX_PARAMETERS",
    "NewtonCorrection",
    "ResidualBound",
    "SOFTMAX_HESSIAN_LIPSCHITZ",
    "broadcast_tree",
    "conjugate_gradient",
    "dfl_certified_unlearn",
    "fisher_diagonal",
    "fisher_vector_product",
    "flatten_parameters",
    "load_flat_parameters",
    "gaussian_sigma",
    "gradient_residual_bound",
    "influence_weights",
    "mixing_bound",
    "newton_correction",
]

Parameters = list[np.ndarray]

CURVATURES = ("diag", "cg", "hessian_cg", "exact")
GRADIENTS = ("deleted", "retained")

#: Largest trainable-parameter count for which ``curvature="exact"`` forms the dense Hessian.
EXACT_MAX_PARAMETERS = 5000

#: ``M``: for softmax cross-entropy ``l(z) = logsumexp(z) - z_y`` the Hessian in the logits is
#: the covariance of the softmax ``p``, and its derivative along ``w`` is the third central
#: moment ``E_p[(u - E_p u)^2 (w - E_p w)]`` for a unit ``u``. That is at most
#: ``Var_p(u) * max_a |w_a - E_p w| <= (range(u)^2 / 4) * range(w)`` (Popoviciu), and a range is
#: at most ``sqrt(2)`` times the Euclidean norm, so ``||H(z + h) - H(z)||_op <= ||h|| / sqrt(2)``
#: for any number of classes. The integral form of Taylor's theorem then bounds the gradient
#: remainder by ``(M / 2) ||h||^2``.
SOFTMAX_HESSIAN_LIPSCHITZ = 1.0 / math.sqrt(2.0)


# ---------------------------------------------------------------------------- influence


def _check_node(node, n: int, name: str = "node") -> int:
    node = check_int(name, node, low=0)
    if node >= n:
        raise UnlearnError(f"{name} must be a node of the graph (0..{n - 1}), got {node}")
    return node


def _mixing(mixing) -> np.ndarray:
    """A square row-stochastic mixing matrix (a graph becomes its Metropolis matrix)."""
    if isinstance(mixing, nx.Graph):
        k = mixing.number_of_nodes()
    else:
        shape = np.shape(mixing)
        if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
            raise UnlearnError(f"mixing must be a square non-empty matrix, got shape {shape}")
        k = shape[0]
    return _check_mixing(mixing, k)


def influence_weights(mixing, rounds: int, node: int, per_round: bool = False) -> np.ndarray:
    """How much of client ``node``'s gradient steps every node holds after ``rounds`` rounds.

    D-SGD as run by :func:`~unlearn.federation.engine.dsgd` (mix, then a local step) unrolls to
    ``x_K = Q^K x_0 - gamma * sum_{k<K} Q^(K-1-k) g_k``, so node ``i`` holds client ``u``'s
    round-``k`` step with weight ``[Q^(K-1-k)]_{i,u}`` (the last round's step is not yet mixed).
    Returns the totals ``c_i = sum_k [Q^(K-1-k)]_{i,node}``, shape ``(N,)``, or with
    ``per_round`` the ``(rounds, N)`` array whose row ``k`` is ``[Q^(K-1-k)]_{:,node}``. For a
    doubly stochastic ``Q`` the totals sum to ``rounds`` and tend to ``rounds / N`` on every
    node (relatively; :func:`mixing_bound` bounds the gap). The weights are exact bookkeeping
    of the additive updates; that ``g_k`` itself depends on the state is not modelled.
    ``mixing`` is a row-stochastic matrix or a graph (its Metropolis matrix).
    """
    q = _mixing(mixing)
    n = q.shape[0]
    rounds = check_int("rounds", rounds, low=0)
    node = _check_node(node, n)
    weights = np.zeros((rounds, n), dtype=np.float64)
    column = np.zeros(n, dtype=np.float64)
    column[node] = 1.0  # Q^0 e_node
    for m in range(rounds):  # row K-1-m holds Q^m e_node
        weights[rounds - 1 - m] = column
        column = q @ column
    return weights if per_round else weights.sum(axis=0)


def mixing_bound(mixing, rounds: int) -> float:
    """An upper bound on ``max_{i,u} |c_i - rounds/N|`` for the totals of :func:`influence_weights`.

    For a symmetric doubly stochastic ``Q`` with eigenpairs ``(lambda_j, v_j)``,
    ``v_1 = 1/sqrt(N)``, ``Q^m - 11^T/N = sum_{j>=2} lambda_j^m v_j v_j^T``; by Cauchy-Schwarz
    an entry is at most ``lambda^m (1 - 1/N)`` in magnitude, with ``lambda`` the second
    largest ``|eigenvalue|`` (``1 - spectral_gap``). Summing over ``m = 0..K-1`` gives
    ``(1 - 1/N) (1 - lambda^K) / (1 - lambda)`` (``K (1 - 1/N)`` when ``lambda = 1``). The bound
    stays finite as ``K`` grows, so ``c_i / (K/N) -> 1``; it is attained on the complete graph.
    """
    q = _mixing(mixing)
    rounds = check_int("rounds", rounds, low=0)
    if not np.allclose(q, q.T, rtol=0.0, atol=1e-10):
        raise UnlearnError("mixing must be symmetric (doubly stochastic) for mixing_bound")
    n = q.shape[0]
    if n == 1 or rounds == 0:
        return 0.0
    lam = float(np.sort(np.abs(np.linalg.eigvalsh(q)))[::-1][1])
    lam = min(lam, 1.0)
    geometric = float(rounds) if lam >= 1.0 - 1e-15 else (1.0 - lam**rounds) / (1.0 - lam)
    return (1.0 - 1.0 / n) * geometric


# ---------------------------------------------------------------------------- model plumbing


def _trainable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(k, p) for k, p in model.named_parameters() if p.requires_grad]


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """The trainable parameters as one detached vector, in ``named_parameters`` order.

    Every flat vector in this module (gradients, Fisher diagonals, steps) uses this order.
    """
    params = _trainable(model)
    if not params:
        raise UnlearnError("model has no trainable parameters")
    return torch.cat([p.detach().reshape(-1) for _, p in params])


def load_flat_parameters(model: nn.Module, theta: torch.Tensor) -> None:
    """Write a flat vector (:func:`flatten_parameters` order) into the model's trainable
    parameters in place, cast to their dtype."""
    with torch.no_grad():
        offset = 0
        for _, p in _trainable(model):
            k = p.numel()
            p.copy_(theta[offset : offset + k].view_as(p))
            offset += k


class _Objective:
    """Per-example cross-entropy of ``model`` as a function of its flat trainable parameters.

    Functions of ``theta`` run the model through :func:`torch.func.functional_call` with the
    frozen parameters and buffers held fixed, in evaluation mode (set by the caller).
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise UnlearnError(f"model must be an nn.Module, got {type(model).__name__}")
        params = _trainable(model)
        if not params:
            raise UnlearnError("model has no trainable parameters")
        self.model = model
        self.names = [k for k, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.sizes = [p.numel() for _, p in params]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in params])
        trainable = set(self.names)
        self.fixed = {k: p.detach() for k, p in model.named_parameters() if k not in trainable}
        self.fixed.update({k: b.detach() for k, b in model.named_buffers()})

    @property
    def dim(self) -> int:
        return self.theta.numel()

    def _unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = theta.split(self.sizes)
        return {k: t.view(s) for k, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (self._unflatten(theta), self.fixed), (x,))

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(theta, x), y, reduction="none")

    def _one(self, theta: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return self.losses(theta, xi.unsqueeze(0), yi.unsqueeze(0))[0]

    def per_example_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, P)``: one gradient row per example (``vmap`` of ``grad``)."""
        return vmap(grad(self._one), in_dims=(None, 0, 0))(self.theta, x, y)

    def sum_grad(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return grad(lambda t: self.losses(t, x, y).sum())(theta)


def _batches(n: int, batch_size: int):
    for s in range(0, n, batch_size):
        yield slice(s, min(n, s + batch_size))


def _data(
    data, what: str, obj: _Objective, like: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` checked, on the model's device, floating inputs in the model's dtype."""
    x, y = _as_xy(data, what)
    ref = obj.theta
    if torch.is_floating_point(x):
        x = x.to(dtype=ref.dtype)
    x, y = x.to(ref.device), y.to(ref.device)
    if like is not None and tuple(x.shape[1:]) != tuple(like.shape[1:]):
        raise UnlearnError(
            f"{what}: inputs have shape {tuple(x.shape[1:])} per row, the retained data "
            f"{tuple(like.shape[1:])}"
        )
    if int(y.min()) < 0:
        raise UnlearnError(f"{what}: labels must be >= 0, got {int(y.min())}")
    with torch.no_grad():
        out = obj.logits(obj.theta, x[:1])
    if out.ndim != 2:
        raise UnlearnError(
            f"{what}: the model must return (batch, classes) logits, got {out.ndim}-D output"
        )
    if int(y.max()) >= out.shape[1]:
        raise UnlearnError(
            f"{what}: label {int(y.max())} is out of range for a model with {out.shape[1]} classes"
        )
    return x, y


class _EvalMode:
    """Evaluation mode for the duration of a ``with`` block, the training flags restored after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag


def _batch_size(batch_size) -> int:
    return check_int("batch_size", batch_size, low=1)


# ---------------------------------------------------------------------------- curvature


def _fisher_diag(obj: _Objective, x, y, batch_size: int) -> torch.Tensor:
    total = torch.zeros_like(obj.theta)
    for sl in _batches(len(y), batch_size):
        g = obj.per_example_grads(x[sl], y[sl])
        total += (g * g).sum(dim=0)
    return total / len(y)


def _fvp(obj: _Objective, x, y, v: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(1/n) sum_z g_z (g_z . v)``: ``G v`` by forward mode, then ``G^T (G v)`` by reverse."""
    total = torch.zeros_like(obj.theta)
    for sl in _batches(len(y), batch_size):
        xb, yb = x[sl], y[sl]

        def losses(t, xb=xb, yb=yb):
            return obj.losses(t, xb, yb)

        _, dots = jvp(losses, (obj.theta,), (v,))
        _, pull = vjp(losses, obj.theta)
        total += pull(dots.detach())[0]
    return total / len(y)


def _hvp(obj: _Objective, x, y, v: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Hessian of the mean CE at ``theta`` times ``v`` (forward over reverse)."""
    total = torch.zeros_like(obj.theta)
    for sl in _batches(len(y), batch_size):
        xb, yb = x[sl], y[sl]
        _, hv = jvp(lambda t, xb=xb, yb=yb: obj.sum_grad(t, xb, yb), (obj.theta,), (v,))
        total += hv
    return total / len(y)


def _mean_grad(obj: _Objective, x, y, batch_size: int) -> torch.Tensor:
    total = torch.zeros_like(obj.theta)
    for sl in _batches(len(y), batch_size):
        total += obj.sum_grad(obj.theta, x[sl], y[sl])
    return total / len(y)


def _exact_hessian(obj: _Objective, x, y, batch_size: int) -> torch.Tensor:
    if obj.dim > EXACT_MAX_PARAMETERS:
        raise UnlearnError(
            f"curvature 'exact' forms the dense Hessian; the model has {obj.dim} trainable "
            f"parameters (at most {EXACT_MAX_PARAMETERS}): use 'cg' or 'diag'"
        )
    total = torch.zeros(obj.dim, obj.dim, dtype=obj.theta.dtype, device=obj.theta.device)
    for sl in _batches(len(y), batch_size):
        xb, yb = x[sl], y[sl]
        total += hessian(lambda t, xb=xb, yb=yb: obj.losses(t, xb, yb).sum())(obj.theta)
    return total / len(y)


def fisher_diagonal(model: nn.Module, x, y, batch_size: int = 256) -> torch.Tensor:
    """Diagonal of the empirical Fisher ``mean_z g_z * g_z`` of the cross-entropy at ``model``.

    Per-example gradients come from ``torch.func`` (``vmap`` of ``grad`` over
    ``functional_call``), ``batch_size`` examples at a time, with the model in evaluation mode
    (``len(y)`` gradient evaluations). Returns a flat vector (:func:`flatten_parameters` order).
    """
    obj = _Objective(model)
    with _EvalMode(model):
        xs, ys = _data((x, y), "data", obj)
        return _fisher_diag(obj, xs, ys, _batch_size(batch_size))


def fisher_vector_product(model: nn.Module, x, y, v, batch_size: int = 256) -> torch.Tensor:
    """``F v = mean_z g_z (g_z . v)`` for the empirical Fisher, without forming ``F``.

    Per batch, the directional derivatives ``g_z . v`` come from one forward-mode pass
    (``torch.func.jvp``) and their weighted sum of gradients from one reverse pass
    (``torch.func.vjp``): memory ``O(P + batch)``, no per-example gradient matrix. ``v`` is a
    flat vector in :func:`flatten_parameters` order. Costs ``len(y)`` gradient evaluations.
    """
    obj = _Objective(model)
    v = _vector(v, obj, "v")
    with _EvalMode(model):
        xs, ys = _data((x, y), "data", obj)
        return _fvp(obj, xs, ys, v, _batch_size(batch_size))


def _vector(v, obj: _Objective, name: str) -> torch.Tensor:
    v = torch.as_tensor(v)
    if v.shape != obj.theta.shape:
        raise UnlearnError(
            f"{name} must be a flat vector of {obj.dim} entries, got shape {tuple(v.shape)}"
        )
    if not torch.is_floating_point(v) or not bool(torch.isfinite(v).all()):
        raise UnlearnError(f"{name} must be a finite floating-point vector")
    return v.to(dtype=obj.theta.dtype, device=obj.theta.device)


@dataclass
class CGResult:
    """A conjugate-gradient solve of ``A d = b``.

    ``residual`` is the true ``||b - A d||`` (recomputed with one more product, not the
    recursion's estimate), ``relative_residual`` that over ``||b||``; ``converged`` says the
    recursion met ``tol`` within ``max_iters``; ``matvecs`` counts the products with ``A``.
    """

    solution: torch.Tensor
    iterations: int
    residual: float
    relative_residual: float
    converged: bool
    matvecs: int


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b,
    max_iters: int = 100,
    tol: float = 1e-6,
) -> CGResult:
    """Solve ``A d = b`` for a symmetric positive definite ``A`` given as ``matvec(v) = A v``.

    Plain conjugate gradients from ``d = 0``, stopped when the recursive residual drops to
    ``tol * ||b||`` or after ``max_iters`` iterations (then ``converged`` is False; the
    iterate is still returned). A direction with ``p^T A p <= 0`` means ``A`` is not positive
    definite, which is an error (raise the damping).
    """
    if not callable(matvec):
        raise UnlearnError("matvec must be a callable v -> A v")
    b = torch.as_tensor(b)
    if b.ndim != 1 or not torch.is_floating_point(b) or not bool(torch.isfinite(b).all()):
        raise UnlearnError("b must be a finite floating-point vector")
    max_iters = check_int("max_iters", max_iters, low=1)
    tol = check_float("tol", tol, low=0.0)
    b_norm = float(torch.linalg.vector_norm(b))
    d = torch.zeros_like(b)
    if b_norm == 0.0:
        return CGResult(d, 0, 0.0, 0.0, True, 0)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    matvecs, converged, it = 0, False, 0
    for it in range(1, max_iters + 1):
        ap = matvec(p)
        matvecs += 1
        pap = float(p @ ap)
        if not pap > 0.0:
            raise UnlearnError(
                f"conjugate_gradient: the matrix is not positive definite (p^T A p = {pap:.3g} "
                f"at iteration {it}); raise damping"
            )
        alpha = rr / pap
        d = d + alpha * p
        r = r - alpha * ap
        rr_new = float(r @ r)
        if math.sqrt(rr_new) <= tol * b_norm:
            converged = True
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    true = float(torch.linalg.vector_norm(b - matvec(d)))
    matvecs += 1
    return CGResult(d, it, true, true / b_norm, converged, matvecs)


# ---------------------------------------------------------------------------- correction


@dataclass
class NewtonCorrection:
    """A Newton-style unlearning step ``s`` (add it to the model's trainable parameters).

    ``step``: flat, in :func:`flatten_parameters` order. ``rhs``: the right-hand side ``b``
    solved against (``(1/n_r) sum_{D_u} grad f`` or ``-grad L_r``). ``grad_evals``:
    per-example gradient evaluations spent (see :func:`newton_correction`). ``cg``: the
    solve's report with ``curvature="cg"``, else None.
    """

    step: torch.Tensor
    rhs: torch.Tensor
    curvature: str
    gradient: str
    damping: float
    weight_decay: float
    n_retained: int
    n_deleted: int
    grad_evals: int
    cg: CGResult | None = None

    @property
    def step_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.step))


def _choice(name: str, value, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise UnlearnError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def newton_correction(
    model: nn.Module,
    retained,
    deleted,
    damping: float,
    curvature: str = "cg",
    *,
    weight_decay: float = 0.0,
    gradient: str = "deleted",
    max_iters: int = 100,
    tol: float = 1e-6,
    batch_size: int = 256,
) -> NewtonCorrection:
    """The step ``s = (C_r + (weight_decay + damping) I)^{-1} b`` that unlearns ``deleted``.

    ``b = (1/n_r) sum_{z in deleted} grad f(x; z) = (n_u / n_r) * (mean deleted CE gradient +
    weight_decay * x)`` (``gradient="deleted"``, the paper's form) or ``b = -grad L_r(x)``
    (``"retained"``); see the module docstring for why ``x + s`` is a Newton step on the
    retained objective. ``C_r`` is the retained data's empirical Fisher: its diagonal
    (``"diag"``), or Fisher-vector products in :func:`conjugate_gradient` (``"cg"``,
    ``max_iters`` and ``tol``); or, in place of the Fisher, the Hessian of the mean retained
    CE: by Hessian-vector products in conjugate gradients (``"hessian_cg"``, the inverse-
    Hessian Newton step of Zhang et al.'s certified deep unlearning, not the DFL paper's
    Fisher) or dense (``"exact"``, at most :data:`EXACT_MAX_PARAMETERS` parameters,
    Cholesky-solved). All but ``"exact"`` need ``weight_decay + damping > 0``. ``model`` (at
    the consensus ``x``) is not modified; it is evaluated in eval mode.

    ``grad_evals`` counts per-example gradient work as the engine does (one per example a
    gradient pass touches): ``n_u`` (or ``n_r`` for ``"retained"``) for ``b``; ``n_r`` for the
    diagonal; ``n_r`` per Fisher- or Hessian-vector product for ``"cg"`` and ``"hessian_cg"``
    (its iterations plus one for the true residual); ``n_r * P`` for ``"exact"`` (a dense
    Hessian is ``P`` Hessian-vector products).
    """
    obj = _Objective(model)
    curvature = _choice("curvature", curvature, CURVATURES)
    gradient = _choice("gradient", gradient, GRADIENTS)
    damping = check_float("damping", damping, low=0.0)
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    batch_size = _batch_size(batch_size)
    max_iters = check_int("max_iters", max_iters, low=1)
    tol = check_float("tol", tol, low=0.0)
    shift = weight_decay + damping
    if curvature in ("diag", "cg", "hessian_cg") and not shift > 0.0:
        raise UnlearnError(
            f"damping: the empirical Fisher and the cross-entropy Hessian are only positive "
            f"semidefinite, so curvature {curvature!r} needs weight_decay + damping > 0"
        )
    with _EvalMode(model):
        xr, yr = _data(retained, "retained", obj)
        xu, yu = _data(deleted, "deleted", obj, like=xr)
        n_r, n_u = len(yr), len(yu)
        theta = obj.theta
        if gradient == "deleted":
            b = (n_u / n_r) * (_mean_grad(obj, xu, yu, batch_size) + weight_decay * theta)
            evals = n_u
        else:
            b = -(_mean_grad(obj, xr, yr, batch_size) + weight_decay * theta)
            evals = n_r
        cg = None
        if curvature == "diag":
            step = b / (_fisher_diag(obj, xr, yr, batch_size) + shift)
            evals += n_r
        elif curvature == "cg":
            cg = conjugate_gradient(
                lambda v: _fvp(obj, xr, yr, v, batch_size) + shift * v, b, max_iters, tol
            )
            step = cg.solution
            evals += n_r * cg.matvecs
        elif curvature == "hessian_cg":
            cg = conjugate_gradient(
                lambda v: _hvp(obj, xr, yr, v, batch_size) + shift * v, b, max_iters, tol
            )
            step = cg.solution
            evals += n_r * cg.matvecs
        else:
            h = _exact_hessian(obj, xr, yr, batch_size)
            h.diagonal().add_(shift)
            chol, info = torch.linalg.cholesky_ex(h)
            if int(info) != 0:
                raise UnlearnError(
                    "damping: the retained Hessian plus (weight_decay + damping) I is not "
                    "positive definite; raise damping or weight_decay"
                )
            step = torch.cholesky_solve(b.unsqueeze(1), chol).squeeze(1)
            evals += n_r * obj.dim
    return NewtonCorrection(
        step=step.detach(),
        rhs=b.detach(),
        curvature=curvature,
        gradient=gradient,
        damping=damping,
        weight_decay=weight_decay,
        n_retained=n_r,
        n_deleted=n_u,
        grad_evals=int(evals),
        cg=cg,
    )


# ---------------------------------------------------------------------------- noise and bounds


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """Noise scale of the classic Gaussian mechanism: ``(Delta/epsilon) sqrt(2 ln(1.25/delta))``.

    Adding ``N(0, sigma^2 I)`` to two outputs at most ``Delta`` apart (Euclidean) makes them
    ``(epsilon, delta)``-indistinguishable (Dwork and Roth 2014, Theorem A.1). That theorem is
    proven for ``0 < epsilon < 1`` only, so ``epsilon >= 1`` is refused rather than given a
    noise scale nothing certifies (the analytic Gaussian mechanism of Balle and Wang 2018
    would cover it; not implemented). ``delta`` must lie in ``(0, 1)``; ``Delta = 0`` needs no
    noise and gives 0.
    """
    sensitivity = check_float("sensitivity", sensitivity, low=0.0)
    epsilon = check_float("epsilon", epsilon, low=0.0, low_open=True)
    if epsilon >= 1.0:
        raise UnlearnError(
            f"epsilon must be < 1: the classic Gaussian mechanism's bound is proven for "
            f"0 < epsilon < 1 only; got {epsilon}"
        )
    delta = check_float("delta", delta, low=0.0, low_open=True)
    if delta >= 1.0:
        raise UnlearnError(f"delta must lie in (0, 1), got {delta}")
    return sensitivity / epsilon * math.sqrt(2.0 * math.log(1.25 / delta))


@dataclass
class ResidualBound:
    """A bound on ``||grad L_r(x + s)||`` for a linear softmax model (module docstring).

    ``bound = first_order + remainder``: ``first_order`` is the measured
    ``||grad L_r(x) + H_r(x) s||``, ``remainder`` the Taylor-remainder bound
    ``(M / 2) mean_i ||x~_i|| ||u_i||^2``. ``measured`` is the actual ``||grad L_r(x + s)||``,
    never above ``bound``, reported to show how loose the bound is (for a linear model it is
    itself a valid data-dependent figure; the noise here is calibrated to ``bound``).
    ``grad_evals``: ``3 n_r`` (gradient passes at ``x`` and ``x + s`` and a Hessian-vector pass
    over the retained data).
    """

    bound: float
    first_order: float
    remainder: float
    measured: float
    grad_evals: int


def _linear_layer(model: nn.Module) -> nn.Linear | None:
    """The model's only ``nn.Linear`` if the model is one: a bare ``nn.Linear``, or a
    ``Sequential`` of ``Flatten`` / ``Identity`` layers, one ``nn.Linear``, then ``Identity``."""
    if isinstance(model, nn.Linear):
        return model
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model)
    found = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    if len(found) != 1:
        return None
    before, after = layers[: found[0]], layers[found[0] + 1 :]
    if all(isinstance(m, (nn.Flatten, nn.Identity)) for m in before) and all(
        isinstance(m, nn.Identity) for m in after
    ):
        return layers[found[0]]
    return None


def gradient_residual_bound(
    model: nn.Module,
    retained,
    step,
    weight_decay: float = 0.0,
    batch_size: int = 256,
) -> ResidualBound:
    """Bound the retained objective's gradient norm at ``x + step`` (convex, linear models).

    ``model`` holds ``x`` and must be one ``nn.Linear`` (or a ``Sequential`` of ``Flatten`` /
    ``Identity`` layers and one final ``nn.Linear``), so that the cross-entropy objective is
    convex and the remainder bound of the module docstring applies; ``step`` is a flat vector
    (:func:`flatten_parameters` order). Computed on a float64 copy of the model. Dividing the
    bound by ``weight_decay`` bounds the distance of ``x + step`` to the retained optimum.
    """
    layer = _linear_layer(model)
    if layer is None:
        raise UnlearnError(
            "model: the convex residual bound needs a linear model (one nn.Linear, optionally "
            "after Flatten); for other models pass a sensitivity of your own"
        )
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    batch_size = _batch_size(batch_size)
    obj0 = _Objective(model)
    step = _vector(step, obj0, "step")
    wide = copy.deepcopy(model).double()
    obj = _Objective(wide)
    s = step.to(torch.float64)
    with _EvalMode(wide):
        x, y = _data(retained, "retained", obj)
        g = _mean_grad(obj, x, y, batch_size) + weight_decay * obj.theta
        hs = _hvp(obj, x, y, s, batch_size) + weight_decay * s
        first = float(torch.linalg.vector_norm(g + hs))
        # ||x~_i||: the norm of example i's parameter Jacobian (input row, and 1 for a bias)
        rows = x.reshape(len(y), -1)
        norms_sq = torch.zeros(len(y), dtype=torch.float64, device=x.device)
        if layer.weight.requires_grad:
            norms_sq = norms_sq + (rows * rows).sum(dim=1)
        if layer.bias is not None and layer.bias.requires_grad:
            norms_sq = norms_sq + 1.0
        remainder = 0.0
        with torch.no_grad():
            for sl in _batches(len(y), batch_size):
                u = obj.logits(obj.theta + s, x[sl]) - obj.logits(obj.theta, x[sl])
                remainder += float((norms_sq[sl].sqrt() * (u * u).sum(dim=1)).sum())
        remainder *= SOFTMAX_HESSIAN_LIPSCHITZ / 2.0 / len(y)
        moved = copy.copy(obj)
        moved.theta = obj.theta + s
        measured = float(
            torch.linalg.vector_norm(
                _mean_grad(moved, x, y, batch_size) + weight_decay * moved.theta
            )
        )
    return ResidualBound(first + remainder, first, remainder, measured, 3 * len(y))


def _gaussian_noise(like: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``sigma * N(0, I)`` shaped like ``like``, from a CPU ``torch.Generator`` seeded by ``seed``
    (drawn in float64, so the same seed gives the same noise whatever the model's dtype)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(like.numel(), generator=gen, dtype=torch.float64)
    return (sigma * z).to(dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------- decentralized


def broadcast_tree(mixing, root: int) -> list[tuple[int, int]]:
    """The directed edges ``(parent, child)`` of a breadth-first tree of the gossip graph.

    The graph links ``i`` and ``j`` where ``Q[i, j] > 0`` or ``Q[j, i] > 0`` (``i != j``);
    flooding a model from ``root`` along this tree reaches every node in ``N - 1`` transfers,
    the fewest that can (every other node must receive it once). A disconnected graph is an
    error.
    """
    q = _mixing(mixing)
    n = q.shape[0]
    root = _check_node(root, n, "requester")
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    rows, cols = np.nonzero((q > 0) | (q.T > 0))
    graph.add_edges_from((int(i), int(j)) for i, j in zip(rows, cols, strict=True) if i != j)
    tree = [(int(a), int(b)) for a, b in nx.bfs_edges(graph, root)]
    if len(tree) != n - 1:
        raise UnlearnError(
            f"mixing: the gossip graph is disconnected; from node {root} only "
            f"{len(tree) + 1} of {n} nodes can be reached"
        )
    return tree


@dataclass
class DFLCertifiedResult:
    """What :func:`dfl_certified_unlearn` did and certifies.

    ``parameters``: the unlearned model every node now holds (:func:`get_parameters` order);
    ``node_parameters``: one copy per node. ``sensitivity``: the ``Delta`` of the Gaussian
    mechanism (``residual_bound / strong_convexity`` with ``bound="convex"``, the caller's
    value with ``bound="given"``); ``sigma`` the noise scale from :func:`gaussian_sigma`.
    ``residual_bound`` (with its ``first_order`` and ``remainder`` parts), the
    ``measured_residual`` it bounds and ``strong_convexity`` are None for ``bound="given"``.
    Costs: ``grad_evals`` (correction plus bound), ``model_transfers = gather_transfers +
    broadcast_transfers`` along ``broadcast_edges``; ``seconds`` the wall time of the call.
    ``influence``: with ``rounds``, the requester's influence spread (``{"rounds", "share",
    "max_deviation", "mixing_bound"}``: ``K/N``, ``max_i |c_i - K/N|`` and its bound).
    """

    parameters: Parameters
    node_parameters: list[Parameters]
    epsilon: float
    delta: float
    sigma: float
    sensitivity: float
    bound: str
    residual_bound: float | None
    first_order: float | None
    remainder: float | None
    measured_residual: float | None
    strong_convexity: float | None
    curvature: str
    gradient: str
    damping: float
    weight_decay: float
    step_norm: float
    noise_norm: float
    cg_iterations: int | None
    cg_residual: float | None
    grad_evals: int
    model_transfers: int
    gather_transfers: int
    broadcast_transfers: int
    broadcast_edges: list[tuple[int, int]]
    requester: int
    n_retained: int
    n_deleted: int
    seed: int
    seconds: float
    influence: dict | None = None

    def to_dict(self) -> dict:
        """Everything but the parameter arrays, as plain Python values."""
        skip = {"parameters", "node_parameters"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}


def _nodes_or_consensus(node_parameters, n: int) -> tuple[Parameters, bool]:
    """The consensus (plain average of the nodes) and whether per-node lists were given."""
    nodes = _node_lists(node_parameters, n, "node_parameters", f"the mixing matrix's {n} nodes")
    if nodes is not None:
        return _average(nodes), True
    return _check_parameters(node_parameters, "node_parameters"), False


def dfl_certified_unlearn(
    node_parameters,
    mixing,
    model_factory: Callable[[], nn.Module],
    retained,
    deleted,
    epsilon: float,
    delta: float,
    damping: float = 0.0,
    curvature: str = "cg",
    seed: int = 0,
    *,
    weight_decay: float = 0.0,
    sensitivity: float | None = None,
    requester: int = 0,
    gradient: str = "deleted",
    rounds: int | None = None,
    max_iters: int = 100,
    tol: float = 1e-6,
    batch_size: int = 256,
    device: str = "cpu",
) -> DFLCertifiedResult:
    """Certified removal of ``deleted`` from a decentralized model, broadcast to every node.

    1. Consensus: ``node_parameters`` is one parameter list per node (from
       :func:`get_parameters`, e.g. a D-SGD result's ``node_parameters``), averaged in float64,
       or a single list taken as the consensus. ``mixing`` (matrix or graph) gives the nodes.
    2. Correction: :func:`newton_correction` on ``model_factory()`` loaded with the consensus,
       with the ``retained`` and ``deleted`` pairs ``(x, y)``, ``damping``, ``curvature``,
       ``weight_decay`` (the training objective's L2 strength) and ``gradient``.
    3. Noise: ``sigma = gaussian_sigma(Delta, epsilon, delta)``, ``Delta`` from ``sensitivity``
       when given (``bound="given"``: the caller vouches for it, e.g. for a non-convex model),
       else ``gradient_residual_bound(...) / weight_decay`` (``bound="convex"``: a linear
       model and ``weight_decay > 0`` required). The noise ``sigma * N(0, I)`` on the
       trainable parameters is drawn once from a ``torch.Generator`` seeded with ``seed``.
    4. Broadcast: every node gets the same parameters. Costs: the update floods from
       ``requester`` along a BFS tree, ``N - 1`` directed transfers (:func:`broadcast_tree`);
       when per-node parameters are given the consensus must first reach the requester, counted
       as ``N - 1`` more (a convergecast of subtree sums up the same tree); a given consensus
       costs nothing to gather. The curvature is computed where ``retained`` is: whatever moves
       that data or its Fisher products between nodes is not counted.

    ``rounds`` (optional: the D-SGD rounds trained) adds the requester's influence spread
    (:func:`influence_weights`, :func:`mixing_bound`) to the result.
    """
    t0 = time.perf_counter()
    q = _mixing(mixing)
    n = q.shape[0]
    requester = _check_node(requester, n, "requester")
    seed = check_seed(seed)
    if seed >= 2**64:
        raise UnlearnError(f"seed must be < 2**64 (a torch.Generator seed), got {seed}")
    if sensitivity is not None:
        sensitivity = check_float("sensitivity", sensitivity, low=0.0)
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    if rounds is not None:
        rounds = check_int("rounds", rounds, low=0)
    gaussian_sigma(0.0, epsilon, delta)  # check epsilon and delta before any work
    if not callable(model_factory):
        raise UnlearnError("model_factory must be a callable returning an nn.Module")
    consensus, per_node = _nodes_or_consensus(node_parameters, n)
    edges = broadcast_tree(q, requester)
    model = model_factory()
    if not isinstance(model, nn.Module):
        raise UnlearnError("model_factory must return an nn.Module")
    model = model.to(torch.device(device))
    if sensitivity is None:
        if _linear_layer(model) is None:
            raise UnlearnError(
                "sensitivity: no bound is derived for this model (the convex bound needs one "
                "nn.Linear); pass sensitivity"
            )
        if not weight_decay > 0.0:
            raise UnlearnError(
                "weight_decay must be > 0 for the convex certificate (the distance to the "
                "retained optimum is the gradient bound over the strong convexity), or pass "
                "sensitivity"
            )
    set_parameters(model, consensus)
    corr = newton_correction(
        model,
        retained,
        deleted,
        damping,
        curvature,
        weight_decay=weight_decay,
        gradient=gradient,
        max_iters=max_iters,
        tol=tol,
        batch_size=batch_size,
    )
    evals = corr.grad_evals
    residual = None
    if sensitivity is None:
        residual = gradient_residual_bound(model, retained, corr.step, weight_decay, batch_size)
        evals += residual.grad_evals
        delta_param = residual.bound / weight_decay
        bound = "convex"
    else:
        delta_param = sensitivity
        bound = "given"
    sigma = gaussian_sigma(delta_param, epsilon, delta)
    noise = _gaussian_noise(corr.step, sigma, seed)
    load_flat_parameters(model, flatten_parameters(model) + corr.step + noise)
    out = get_parameters(model)
    gather = n - 1 if per_node else 0
    influence = None
    if rounds is not None:
        weights = influence_weights(q, rounds, requester)
        symmetric = np.allclose(q, q.T, rtol=0.0, atol=1e-10)
        influence = {
            "rounds": int(rounds),
            "share": rounds / n,
            "max_deviation": float(np.abs(weights - rounds / n).max()),
            "mixing_bound": mixing_bound(q, rounds) if symmetric else None,
        }
    return DFLCertifiedResult(
        parameters=out,
        node_parameters=[[a.copy() for a in out] for _ in range(n)],
        epsilon=float(epsilon),
        delta=float(delta),
        sigma=sigma,
        sensitivity=float(delta_param),
        bound=bound,
        residual_bound=None if residual is None else residual.bound,
        first_order=None if residual is None else residual.first_order,
        remainder=None if residual is None else residual.remainder,
        measured_residual=None if residual is None else residual.measured,
        strong_convexity=weight_decay if residual is not None else None,
        curvature=corr.curvature,
        gradient=corr.gradient,
        damping=corr.damping,
        weight_decay=weight_decay,
        step_norm=corr.step_norm,
        noise_norm=float(torch.linalg.vector_norm(noise)),
        cg_iterations=None if corr.cg is None else corr.cg.iterations,
        cg_residual=None if corr.cg is None else corr.cg.residual,
        grad_evals=int(evals),
        model_transfers=gather + len(edges),
        gather_transfers=gather,
        broadcast_transfers=len(edges),
        broadcast_edges=edges,
        requester=requester,
        n_retained=corr.n_retained,
        n_deleted=corr.n_deleted,
        seed=seed,
        seconds=time.perf_counter() - t0,
        influence=influence,
    )
