"""Certified removal for L2-regularised logistic regression (Guo et al., ICML 2020).

Reference: Chuan Guo, Tom Goldstein, Awni Hannun, Laurens van der Maaten,
"Certified Data Removal from Machine Learning Models", ICML 2020
(arXiv:1911.03030). Everything below follows the paper's Section 3; the
paper's numbering of results is used in the comments.

Objective (sum normalisation, as in the paper)::

    L_b(w; D) = sum_i l(w^T x_i, y_i) + (lam * n / 2) ||w||^2 + b^T w,   b ~ N(0, sigma^2 I)

with ``l(z, y) = log(1 + exp(-y z))`` and ``y in {-1, +1}``. Dividing by ``n``
gives the mean form ``mean_i l + lam/2 ||w||^2 + b^T w / n`` that the authors'
released code optimises; the two have the same minimiser, so "b^T w" (sum
form) and "b^T w / n" (mean form) are the same perturbation.

Removal (Newton update, Section 3): for a batch ``R`` of ``m`` samples leaving
``D'`` (``n' = n - m`` samples),

    Delta = lam * m * w + sum_{j in R} grad l(w^T x_j, y_j)
    H     = hessian of L(.; D') at w  (= X'^T diag(l'') X' + lam * n' I)
    w-    = w + H^{-1} Delta

(``m = 1`` is the single-sample update; ``m > 1`` the paper's batch removal,
also in Section 3). ``Delta`` is minus the gradient of the
retained objective at ``w`` when ``w`` is its exact minimiser, so the step is
one Newton step on ``L_b(.; D')``.

Gradient residual bounds on ``||grad L_b(w-; D')||``:

* worst case (Theorem 1; batch form with ``m^2``), assuming ``||x_i|| <= 1``,
  ``|l'| <= C`` and ``l''`` ``gamma``-Lipschitz: ``4 gamma C^2 m^2 / (lam^2 (n - m))``.
  Logistic loss has ``C = 1`` and ``gamma = 1/4``.
* data dependent (Corollary 1): ``gamma * ||X'||_2 * ||H^{-1} Delta|| * ||X' H^{-1} Delta||``.

Both are derived for ``||x_i|| <= 1``. Here the feature norm ``R = max ||x_i||``
is kept explicit so that the bounds stay valid for any input: the Taylor
remainder of sample ``i`` is at most ``gamma (x_i^T s)^2`` and
``|x_i^T s| <= R ||s||``, which gives ``gamma R ||X'|| ||s|| ||X' s||``
(Corollary 1 times ``R``) and, with ``||w|| <= C R / lam``,
``4 gamma C^2 R^5 m^2 / (lam^2 n')`` (Theorem 1's figure times ``R^5``). With
rows of unit norm both reduce to the paper's formulas exactly.

Certificate (Theorem 3): if ``b ~ N(0, sigma^2 I)`` and the removal leaves a
gradient residual of norm at most ``eps'``, the removal is
``(epsilon, delta)``-certified with ``sigma = c * eps' / epsilon`` and
``delta = 1.5 * exp(-c^2 / 2)``, i.e. ``c = sqrt(2 ln(1.5 / delta))``. For a
fixed ``sigma`` the smallest certified epsilon is therefore
``epsilon = c * beta / sigma`` and the removal budget is ``beta <= sigma * epsilon / c``.

Repeated removals (Algorithm 2, repeated removal of data batches): the
residual bounds add up (after a Newton step ``w-`` is the exact minimiser of
the objective with ``b`` shifted by the residual, so the next step's residual
adds to the shift); the accumulated
``beta`` is compared with the budget and the model is retrained from scratch
(Algorithm 1, a fresh ``b``) when the next removal would exceed it. As in the
paper's step, ``Delta`` ignores the residual already accumulated, so the
actual gradient of the perturbed retained objective is bounded by the
*accumulated* bound, which :class:`RemovalReport` shows side by side.

Multiclass problems are one-vs-rest with an independent perturbation column per
class (the paper's MNIST set-up; the released code draws ``b`` of shape
``(d, K)``). The K binary objectives are one separable, strongly convex
objective over ``R^{d x K}`` with an isotropic Gaussian ``b``, so Theorem 3
applies to the stacked parameters: the accumulated bound of class ``k`` is kept
separately and the joint bound is their Euclidean norm (the authors' code adds
the class bounds, which is looser). The tiny gradient left by the training
optimiser is counted in the accumulated bound from the start, so
``actual residual <= residual_bound`` holds without assuming an exact optimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy.linalg import lapack
from scipy.optimize import minimize
from scipy.special import expit

from .errors import UnlearnError

__all__ = [
    "CertifiedLogReg",
    "RemovalReport",
    "certificate_c",
    "certified_epsilon",
    "sigma_for",
    "GAMMA_LOGISTIC",
    "C_LOGISTIC",
]

#: Lipschitz constant of the second derivative of the logistic loss (max |l'''| = 1/(6 sqrt 3) <
#: 1/4; the paper uses 1/4).
GAMMA_LOGISTIC = 0.25
#: Bound on |l'| of the logistic loss.
C_LOGISTIC = 1.0


def certificate_c(delta: float) -> float:
    """``c`` of Theorem 3: ``delta = 1.5 exp(-c^2 / 2)``, so ``c = sqrt(2 ln(1.5 / delta))``."""
    if not 0.0 < delta < 1.0:
        raise UnlearnError(f"delta must lie in (0, 1), got {delta}")
    return math.sqrt(2.0 * math.log(1.5 / delta))


def certified_epsilon(residual: float, sigma: float, delta: float) -> float:
    """Smallest epsilon certified for a gradient residual bound ``residual`` (Theorem 3)."""
    if residual < 0:
        raise UnlearnError(f"a residual bound cannot be negative, got {residual}")
    if residual == 0:
        return 0.0
    if sigma <= 0:
        return math.inf
    return certificate_c(delta) * residual / sigma


def sigma_for(residual: float, epsilon: float, delta: float) -> float:
    """Perturbation std that certifies a residual bound at ``(epsilon, delta)`` (Theorem 3)."""
    if epsilon <= 0:
        raise UnlearnError(f"epsilon must be positive, got {epsilon}")
    return certificate_c(delta) * residual / epsilon


@dataclass
class RemovalReport:
    """What one call of :meth:`CertifiedLogReg.remove` did and what it certifies.

    ``residual_bound`` is the accumulated data-dependent bound (Corollary 1,
    summed over removals since the last (re)training, plus the training
    optimiser's own residual); ``data_independent_bound`` is the accumulated
    worst-case bound (Theorem 1) over the same removals; ``epsilon_spent`` is
    the smallest epsilon that ``residual_bound`` certifies at ``delta`` and the
    model's ``sigma``; ``grad_residual_norm`` is the measured
    ``||grad L_b(w; D')||`` at the new parameters, never larger than
    ``residual_bound``. ``step_bound`` is the part of ``residual_bound`` this
    call added. ``seconds`` times the removal itself (Newton step(s), bounds,
    bookkeeping, or the retraining it fell back to); ``refresh_seconds`` the
    optional recomputation of the Hessian cache afterwards; neither includes
    measuring ``grad_residual_norm``.
    """

    removed: int
    n_remaining: int
    residual_bound: float
    step_bound: float
    data_independent_bound: float
    epsilon_spent: float
    delta: float
    retrained: bool
    seconds: float
    refresh_seconds: float
    grad_residual_norm: float
    newton_steps: int

    def to_dict(self) -> dict:
        return asdict(self)


def _spd_solve(H: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``H[k] x = B[:, k]`` for each class ``k``, each ``H[k]`` positive definite.

    A Cholesky solve per class (LAPACK ``posv``): about 1.5x faster than the batched
    LU of ``np.linalg.solve`` at the 65 x 65 size of the benchmark.
    """
    out = np.empty_like(B)
    for j in range(H.shape[0]):
        _, x, info = lapack.dposv(H[j], B[:, j], lower=1)
        if info != 0:
            raise UnlearnError(
                f"the retained Hessian of class {j} is not positive definite (LAPACK info "
                f"{info}); lam must be > 0"
            )
        out[:, j] = x
    return out


#: Relative residual ``||H' s - Delta|| / ||Delta||`` (Frobenius, all classes) at which the
#: iterative Newton solve stops.
PCG_RTOL = 1e-8
#: Iterations after which the iterative solve gives up and the direct (factorising) one runs.
PCG_MAX_ITER = 25


def _pcg_solve(
    H: np.ndarray, H_inv: np.ndarray, shift: float, Xg: np.ndarray, Dg: np.ndarray, B: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Solve ``H'_k s_k = B[:, k]`` per class by conjugate gradients, preconditioned by ``H_k^-1``.

    ``H'_k = H_k - shift I - Xg^T diag(Dg[:, k]) Xg`` is the cached Hessian ``H_k``
    with ``m`` removed rows (``Xg``, curvatures ``Dg``) and their ``lam`` terms taken
    out. It is applied without being formed: ``O(K (d^2 + m d))`` per iteration instead
    of the ``O(K m d^2)`` downdate and ``O(K d^3)`` factorisation of the direct solve.
    The classes form one block-diagonal SPD system, solved by one CG with a
    block-diagonal preconditioner. The preconditioned matrix ``H_k^-1 H'_k =
    I - H_k^-1 (H_k - H'_k)`` has its eigenvalues near ``1 - m / n`` when the removed
    rows are a representative (say random) sample, so a few iterations reach
    ``PCG_RTOL`` (three on digits at 1-10 %); removing a whole class, or a small
    ``lam``, takes more (about a dozen).
    ``H p`` is carried by recursion (``H z = r``), so each iteration applies ``H^-1``
    once and never ``H``; the residual is carried the same way. Since ``H_inv`` inverts
    ``H`` only up to about ``cond(H) * eps``, the residual returned is recomputed from
    ``H`` once the recursion meets the tolerance.

    Returns ``(S, residual_norms, iterations)`` with ``S`` of shape ``(d, K)`` and the
    per-class norms of the residual ``B - H' S`` (they enter the certificate's bound),
    or ``None`` when ``PCG_MAX_ITER`` iterations do not reach the
    tolerance (large removals; the caller then solves directly).
    """
    Bt = np.ascontiguousarray(B.T)  # (K, d)
    Dt, Xt = np.ascontiguousarray(Dg.T), np.ascontiguousarray(Xg.T)  # (K, m), (d, m)

    def removed_part(p: np.ndarray) -> np.ndarray:  # (H - H') p for every class at once
        return shift * p + (Dt * (p @ Xt)) @ Xg

    stop = PCG_RTOL**2 * float(np.vdot(Bt, Bt))
    if stop == 0.0:  # nothing to solve
        return np.zeros_like(B), np.zeros(B.shape[1]), 0
    # One CG on the block-diagonal system of all classes (scalar step sizes: fewer
    # array operations per iteration than a CG per class, same few iterations).
    s = np.zeros_like(Bt)
    r = Bt.copy()
    p = np.matmul(H_inv, r[:, :, None])[:, :, 0]  # z = H^-1 r, the first direction
    Hp = r.copy()  # H p, kept by recursion: H z = r, so H p_new = r + beta H p_old
    rz = float(np.vdot(r, p))
    for it in range(1, PCG_MAX_ITER + 1):
        q = Hp - removed_part(p)  # H' p
        alpha = rz / float(np.vdot(p, q))
        s += alpha * p
        r -= alpha * q
        if float(np.vdot(r, r)) <= stop:
            # The recursions assume H z = r, exact only as far as H_inv inverts H (an error of
            # about cond(H) * eps): the residual that enters the bound is recomputed from H.
            res = Bt - np.matmul(H, s[:, :, None])[:, :, 0] + removed_part(s)
            return s.T, np.sqrt(np.einsum("kd,kd->k", res, res)), it
        z = np.matmul(H_inv, r[:, :, None])[:, :, 0]
        rz_new = float(np.vdot(r, z))
        beta = rz_new / rz
        p = z + beta * p
        Hp = r + beta * Hp
        rz = rz_new
    return None


def _as_indices(indices, n: int) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise UnlearnError("indices must be a one-dimensional sequence of integers")
    if arr.size == 0:
        raise UnlearnError("nothing to remove: the index list is empty")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise UnlearnError(f"indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n:
        bad = arr[(arr < 0) | (arr >= n)]
        raise UnlearnError(
            f"index {int(bad[0])} is out of range for a training set of {n} samples "
            f"(valid: 0..{n - 1})"
        )
    return arr  # duplicates are caught by the caller's mask count (one call fewer)


class CertifiedLogReg:
    """L2-regularised logistic regression that supports certified removal (Guo et al. 2020).

    Binary labels train one classifier; more classes train one-vs-rest
    classifiers with an independent perturbation per class. The model keeps its
    training data (the Newton update needs the retained samples' Hessian).
    Indices given to :meth:`remove` refer to rows of the ``X`` given to
    :meth:`fit`.

    Cost: :meth:`fit` minimises the objective with L-BFGS and then computes the
    Hessians at the minimiser and their inverses (:meth:`prepare`; the "offline"
    work that makes the next removal cheap). A removal of ``m`` rows then solves
    the retained Newton system per class by conjugate gradients preconditioned
    with the cached inverse, applying the retained Hessian as the cached one minus
    the removed rows' terms (``O(d^2 + m d)`` per class and iteration, a few
    iterations; the ``O(m d^2 + d^3)`` downdate and factorisation only where that
    does not converge), and evaluates the bound (``O(d^2 + m d)`` per class, from
    the cached Gram matrix ``X^T X``); the retained rows are not touched. The
    Newton step moves ``w``, so the cache is stale afterwards: the next removal
    recomputes the Hessians itself (counted in its time) unless
    :meth:`prepare` ran in between (``remove(..., refresh=True)`` does that and
    reports its time separately).

    Parameters
    ----------
    lam:
        L2 strength in the mean form (``lam/2 ||w||^2`` per sample; the paper's ``lambda``).
    sigma:
        Standard deviation of each entry of the loss perturbation ``b`` (0: no perturbation,
        nothing is certified).
    epsilon, delta:
        The certificate to keep. Removals keep the accumulated residual bound below
        ``sigma * epsilon / c``; beyond it the model retrains. ``epsilon=math.inf`` turns
        the automatic retraining off.
    seed:
        Seed of the perturbation (the same seed and shape give the same ``b``).
    tol:
        Training stops when the mean-form gradient norm is at most ``tol``.
    """

    def __init__(
        self,
        lam: float = 1e-3,
        sigma: float = 1.0,
        epsilon: float = 1.0,
        delta: float = 1e-5,
        seed: int = 0,
        tol: float = 1e-10,
        max_iter: int = 2000,
    ) -> None:
        if not (isinstance(lam, int | float) and lam > 0 and math.isfinite(lam)):
            raise UnlearnError(f"lam must be a positive number (strong convexity), got {lam!r}")
        if not (isinstance(sigma, int | float) and sigma >= 0 and math.isfinite(sigma)):
            raise UnlearnError(f"sigma must be a finite number >= 0, got {sigma!r}")
        if not (isinstance(epsilon, int | float) and epsilon > 0):
            raise UnlearnError(f"epsilon must be positive, got {epsilon!r}")
        certificate_c(delta)  # validates delta
        if not (tol > 0 and max_iter >= 1):
            raise UnlearnError("tol must be positive and max_iter at least 1")
        self.lam = float(lam)
        self.sigma = float(sigma)
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.seed = int(seed)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.coef_: np.ndarray | None = None
        # filled by prepare(): Hessians, their inverses, per-row terms at w, X'^T X'
        self._H: np.ndarray | None = None
        self._H_inv = self._row_grad = self._row_curv = self._gram = None

    # ------------------------------------------------------------------ set-up
    def get_params(self) -> dict:
        return {
            "lam": self.lam,
            "sigma": self.sigma,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "seed": self.seed,
            "tol": self.tol,
            "max_iter": self.max_iter,
        }

    @property
    def c(self) -> float:
        """``c = sqrt(2 ln(1.5 / delta))`` of Theorem 3."""
        return certificate_c(self.delta)

    @property
    def budget(self) -> float:
        """Largest accumulated residual bound the certificate allows: ``sigma * epsilon / c``."""
        if math.isinf(self.epsilon):
            return math.inf
        return self.sigma * self.epsilon / self.c

    def _check_fitted(self) -> None:
        if self.coef_ is None:
            raise UnlearnError("the model is not fitted yet: call fit(X, y) first")

    def fit(self, X, y, classes=None, prepare: bool = True) -> CertifiedLogReg:
        """Algorithm 1: draw ``b`` from ``seed`` and minimise ``L_b`` on all of ``(X, y)``.

        ``classes`` fixes the label set (default: the labels present in ``y``), so
        that models trained on different subsets have parameters of the same
        shape. ``prepare=False`` skips caching the Hessians (a model that will
        not serve removals, such as a retrained reference, does not need them).
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2:
            raise UnlearnError(f"X must be a 2-D array (samples x features), got shape {X.shape}")
        if y.ndim != 1:
            raise UnlearnError(f"y must be one label per sample, got shape {y.shape}")
        if X.shape[0] != y.shape[0]:
            raise UnlearnError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        if X.shape[0] < 2:
            raise UnlearnError("at least two training samples are needed")
        if not np.all(np.isfinite(X)):
            raise UnlearnError("X contains NaN or infinite values")
        classes = np.unique(y) if classes is None else np.asarray(list(classes))
        if classes.size < 2 or np.unique(classes).size != classes.size:
            raise UnlearnError("logistic regression needs at least two distinct classes")
        if not np.all(np.isin(y, classes)):
            raise UnlearnError("y holds labels that are not among the given classes")
        self.classes_ = classes
        if classes.size == 2:
            Y = np.where(y == classes[1], 1.0, -1.0)[:, None]
        else:
            Y = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
        self._X, self._Y = X, Y
        self._row_norm = np.linalg.norm(X, axis=1)
        self._active = np.ones(X.shape[0], dtype=bool)
        self._rng = np.random.default_rng(self.seed)
        self._train()
        if prepare:
            self.prepare()
        return self

    def _train(self) -> None:
        """Draw a perturbation and minimise ``L_b`` on the active rows (L-BFGS, then Newton)."""
        d, k = self._X.shape[1], self._Y.shape[1]
        self.b_ = self.sigma * self._rng.standard_normal((d, k))
        X, Y = self._X[self._active], self._Y[self._active]
        n = X.shape[0]
        lam_n = self.lam * n

        def fun(wf: np.ndarray) -> tuple[float, np.ndarray]:
            W = wf.reshape(d, k)
            M = Y * (X @ W)
            loss = np.logaddexp(0.0, -M).sum() + 0.5 * lam_n * np.sum(W * W) + np.sum(self.b_ * W)
            G = X.T @ (-Y * expit(-M)) + lam_n * W + self.b_
            return loss / n, (G / n).ravel()

        res = minimize(
            fun,
            np.zeros(d * k),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 0.0, "maxcor": 20},
        )
        W = res.x.reshape(d, k).copy()
        # L-BFGS-B stops on the largest gradient entry; should it stop short of ``tol``
        # (line-search failure, iteration cap), Newton steps on the d x d systems finish the
        # job. Whatever gradient remains is counted in the residual bound below.
        for _ in range(20):
            G = self._grad(W, X, Y)
            if np.abs(G).max() <= self.tol * n:
                break
            W -= np.linalg.solve(self._hessians(W, X, Y), G.T[:, :, None])[:, :, 0].T
        self.coef_ = W
        self.n_iter_ = int(res.nit)
        self._xnorm = math.sqrt(max(float(np.linalg.eigvalsh(X.T @ X)[-1]), 0.0))
        self._rmax = float(self._row_norm[self._active].max())
        self._invalidate_cache()
        # The optimiser's leftover gradient counts towards the residual from the start.
        self._acc = np.linalg.norm(self._grad(W, X, Y), axis=0)
        self._acc_indep = float(np.linalg.norm(self._acc))

    def _invalidate_cache(self) -> None:
        """Drop everything :meth:`prepare` caches (it describes another ``w`` or row set)."""
        self._H = self._H_inv = self._row_grad = self._row_curv = self._gram = None

    def prepare(self) -> float:
        """Cache the Hessians of the retained objective at the current ``w``; return seconds.

        Also caches their inverses (the preconditioner of the iterative Newton
        solve), the Gram matrix ``X'^T X'`` of the retained rows, ``||X'||_2`` and
        ``max ||x_i||``.
        """
        self._check_fitted()
        t0 = time.perf_counter()
        a = self._active
        Xa = self._X[a]
        self._H = self._hessians(self.coef_, Xa, self._Y[a])
        # per-row terms at w, for all rows (indexed as X)
        self._row_grad, self._row_curv = self._row_terms(self.coef_, self._X, self._Y)
        # the preconditioner: its error slows the iteration; the residual is checked with H
        self._H_inv = np.linalg.inv(self._H)
        # exact again (between preparations they are upper bounds that only loosen)
        self._gram = Xa.T @ Xa
        self._xnorm = math.sqrt(max(float(np.linalg.eigvalsh(self._gram)[-1]), 0.0))
        self._rmax = float(self._row_norm[a].max())
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ calculus
    def _grad(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Gradient of the sum-form ``L_b(W; (X, Y))``, one column per class."""
        M = Y * (X @ W)
        return X.T @ (-Y * expit(-M)) + self.lam * X.shape[0] * W + self.b_

    def _row_terms(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray):
        """Per row and class: ``y * sigmoid(-y w^T x)`` (minus the loss gradient's factor)
        and ``l''``, both ``(n, K)``."""
        sig = expit(-(Y * (X @ W)))
        return Y * sig, sig * (1.0 - sig)

    def _curvature(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        P = expit(Y * (X @ W))
        return P * (1.0 - P)

    def _hessians(self, W: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Hessians of the sum-form objective per class, shape ``(K, d, d)``."""
        D = self._curvature(W, X, Y)
        d, k = W.shape
        H = np.empty((k, d, d))
        for j in range(k):
            H[j] = (X * D[:, j : j + 1]).T @ X
            H[j][np.diag_indices(d)] += self.lam * X.shape[0]
        return H

    def grad_residual_norm(self) -> float:
        """Measured ``||grad L_b(w; D_active)||`` (Frobenius norm over all classes)."""
        self._check_fitted()
        a = self._active
        return float(np.linalg.norm(self._grad(self.coef_, self._X[a], self._Y[a])))

    # ------------------------------------------------------------------ certificate
    @property
    def residual_bound_(self) -> float:
        """Accumulated data-dependent residual bound since the last (re)training."""
        self._check_fitted()
        return float(np.linalg.norm(self._acc))

    @property
    def data_independent_bound_(self) -> float:
        """Accumulated worst-case residual bound (Theorem 1) since the last (re)training."""
        self._check_fitted()
        return self._acc_indep

    @property
    def epsilon_spent_(self) -> float:
        """Smallest epsilon the accumulated bound certifies at ``delta`` and ``sigma``."""
        return certified_epsilon(self.residual_bound_, self.sigma, self.delta)

    @property
    def n_remaining(self) -> int:
        self._check_fitted()
        return int(self._active.sum())

    @property
    def removed_mask(self) -> np.ndarray:
        """Boolean mask over the rows given to :meth:`fit`: True where removed."""
        self._check_fitted()
        return ~self._active

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[0]:
            raise UnlearnError(
                f"X must have shape (n, {self.coef_.shape[0]}), got {tuple(X.shape)}"
            )
        return X @ self.coef_

    def predict(self, X) -> np.ndarray:
        s = self.decision_function(X)
        if s.shape[1] == 1:
            return self.classes_[(s[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(s, axis=1)]

    def accuracy(self, X, y) -> float:
        """Accuracy in percent (as the toolkit's metrics)."""
        X, y = np.asarray(X), np.asarray(y)
        if X.shape[0] != y.shape[0]:
            raise UnlearnError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        if y.size == 0:
            raise UnlearnError("cannot score an empty set")
        return float(100.0 * np.mean(self.predict(X) == y))

    # ------------------------------------------------------------------ removal
    def _newton_step(self, group: np.ndarray, keep: np.ndarray):
        """Newton update removing rows ``group``; ``keep`` marks the rows retained after it.

        With a fresh Hessian cache it uses only cached quantities and the removed
        rows, so its cost does not grow with the number of retained samples: the
        retained Hessian ``H'_k = H_k - lam m I - X_g^T diag(l''_k) X_g`` is applied
        by preconditioned conjugate gradients (:func:`_pcg_solve`; the downdated
        Hessians are factorised only if that does not converge),
        ``||X' s||^2 = s^T (X^T X) s - ||X_g s||^2``, and ``||X'||_2`` and
        ``max ||x_i||`` are bounded by their values for the rows present at the
        last :meth:`prepare` (removing rows cannot increase either). Without a cache
        the retained Hessians are built from the retained rows and factorised.

        Whatever the path, the norm of the linear solve's own residual
        ``Delta - H' s`` (about ``PCG_RTOL * ||Delta||`` for the iterative one, rounding
        for the direct ones) is added to the class's bound: the gradient after the
        step is ``-(Delta - H' s)`` plus the Taylor remainder that Corollary 1 bounds.
        """
        W = self.coef_
        d, k = W.shape
        m, n_keep = group.size, int(keep.sum())
        Xg = self._X[group]
        if self._H is not None:  # the per-row terms at w were cached with the Hessians
            row_grad, Dg = self._row_grad[group], self._row_curv[group]
        else:
            row_grad, Dg = self._row_terms(W, Xg, self._Y[group])
        # Delta = lam * m * w + sum_j grad l(w^T x_j, y_j), one column per class
        Delta = self.lam * m * W - Xg.T @ row_grad
        solved = None
        if self._H is not None:
            solved = _pcg_solve(self._H, self._H_inv, self.lam * m, Xg, Dg, Delta)
            if solved is None:  # slow convergence (a large share removed): factorise
                A = np.sqrt(Dg).T[:, :, None] * Xg[None, :, :]  # (K, m, d)
                H = self._H - np.matmul(A.transpose(0, 2, 1), A)
                H[:, np.arange(d), np.arange(d)] -= self.lam * m
        else:
            H = self._hessians(W, self._X[keep], self._Y[keep])
        if solved is None:
            S = _spd_solve(H, Delta)  # H'_k^{-1} Delta_k per class
            res = Delta - np.matmul(H, S.T[:, :, None])[:, :, 0].T
            res_norm = np.linalg.norm(res, axis=0)
        else:
            S, res_norm, _ = solved
        if self._H is not None:
            XgS = Xg @ S
            xs2 = np.einsum("dk,dk->k", S, self._gram @ S) - np.einsum("mk,mk->k", XgS, XgS)
        else:
            XkS = self._X[keep] @ S
            xs2 = np.einsum("nk,nk->k", XkS, XkS)
        # ||s|| * ||X' s|| per class
        s_xs = np.sqrt(np.einsum("dk,dk->k", S, S) * np.maximum(xs2, 0.0))
        # Corollary 1 (times R, see the module docstring) plus the solve's residual, per class
        step = GAMMA_LOGISTIC * self._rmax * self._xnorm * s_xs + res_norm
        # Theorem 1, batch form, per class; Euclidean norm over the classes
        R = self._rmax
        indep = 4.0 * GAMMA_LOGISTIC * C_LOGISTIC**2 * R**5 * m**2 / (self.lam**2 * n_keep)
        return W + S, step, indep * math.sqrt(k)

    def remove(self, indices, one_by_one: bool = False, refresh: bool = False) -> RemovalReport:
        """Remove training rows ``indices`` with the Newton update (Algorithm 2).

        All rows go in one batch step, or with ``one_by_one=True`` in successive
        single-sample steps (their bounds add up). If the accumulated bound would
        exceed the budget ``sigma * epsilon / c``, the model is instead retrained
        from scratch on the remaining rows with a fresh perturbation
        (``retrained=True``) and the accounting restarts. ``refresh=True``
        recomputes the Hessian cache at the new ``w`` afterwards, timed apart
        (``refresh_seconds``).
        """
        self._check_fitted()
        t0 = time.perf_counter()
        idx = _as_indices(indices, self._X.shape[0])
        n_active = int(self._active.sum())
        left = self._active.copy()
        left[idx] = False
        if int(left.sum()) != n_active - idx.size:  # a row already gone, or listed twice
            gone = idx[~self._active[idx]]
            if gone.size:
                raise UnlearnError(f"sample {int(gone[0])} was already removed")
            uniq, counts = np.unique(idx, return_counts=True)
            raise UnlearnError(f"index {int(uniq[counts > 1][0])} is listed more than once")
        if idx.size >= n_active:
            raise UnlearnError(
                f"cannot remove all {n_active} remaining samples: nothing would be left to train on"
            )
        groups = [idx[i : i + 1] for i in range(idx.size)] if one_by_one else [idx]
        retrained, steps = False, 0
        acc_before = self._acc.copy()
        budget = self.budget
        for group in groups:
            if len(groups) == 1:
                keep = left
            else:
                keep = self._active.copy()
                keep[group] = False
            W_new, step, indep = self._newton_step(group, keep)
            acc_new = self._acc + step
            if math.sqrt(float(acc_new @ acc_new)) > budget:
                self._active[idx] = False
                self._train()
                self.prepare()
                retrained = True
                break
            self.coef_, self._acc, self._active = W_new, acc_new, keep
            self._acc_indep += indep
            self._invalidate_cache()  # w moved: the cached Hessians no longer apply
            steps += 1
        seconds = time.perf_counter() - t0
        refresh_seconds = self.prepare() if refresh and self._H is None else 0.0
        return RemovalReport(
            removed=int(idx.size),
            n_remaining=self.n_remaining,
            residual_bound=self.residual_bound_,
            step_bound=0.0 if retrained else float(np.linalg.norm(self._acc - acc_before)),
            data_independent_bound=self._acc_indep,
            epsilon_spent=self.epsilon_spent_,
            delta=self.delta,
            retrained=retrained,
            seconds=seconds,
            refresh_seconds=refresh_seconds,
            grad_residual_norm=self.grad_residual_norm(),
            newton_steps=steps,
        )
