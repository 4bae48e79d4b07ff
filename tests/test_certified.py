"""Certified removal (Guo et al. 2020): exactness, bounds, accounting, errors, benchmark layout."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from unlearn import certified
from unlearn.bench.certified import run_certified, unit_features
from unlearn.bench.report import write_outputs
from unlearn.certified import (
    CertifiedLogReg,
    certificate_c,
    certified_epsilon,
    sigma_for,
)
from unlearn.errors import ScenarioError, UnlearnError


def _toy(n: int = 80, d: int = 5, classes: int = 2, seed: int = 0):
    """Rows of norm <= 1 (the paper's assumption) with labels from a noisy linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True) * rng.uniform(1.0, 2.0, size=(n, 1))
    scores = X @ rng.normal(size=(d, classes)) + 0.3 * rng.normal(size=(n, classes))
    y = scores.argmax(1) if classes > 2 else (scores[:, 0] > 0).astype(int)
    return X, y


def test_certificate_constants():
    # c = sqrt(2 ln(1.5 / delta)) (Theorem 3)
    assert certificate_c(1e-5) == pytest.approx(math.sqrt(2 * math.log(1.5e5)))
    assert certificate_c(1e-5) == pytest.approx(4.8823, abs=1e-4)
    eps = certified_epsilon(0.3, sigma=2.0, delta=1e-5)
    assert eps == pytest.approx(certificate_c(1e-5) * 0.3 / 2.0)
    assert sigma_for(0.3, eps, 1e-5) == pytest.approx(2.0)
    assert certified_epsilon(0.0, 0.0, 1e-5) == 0.0
    assert certified_epsilon(1e-3, 0.0, 1e-5) == math.inf


def test_newton_removal_of_one_sample_lands_on_the_retrain():
    X, y = _toy()
    kw = dict(lam=1.0, sigma=0.0, epsilon=math.inf, seed=0)
    model = CertifiedLogReg(**kw).fit(X, y)
    rep = model.remove([7])
    keep = np.delete(np.arange(len(y)), 7)
    oracle = CertifiedLogReg(**kw).fit(X[keep], y[keep], classes=[0, 1])
    assert np.linalg.norm(model.coef_ - oracle.coef_) < 1e-5
    assert not rep.retrained and rep.newton_steps == 1 and rep.n_remaining == len(y) - 1
    # measured residual <= data-dependent bound (Corollary 1) <= worst case (Theorem 1)
    assert rep.grad_residual_norm <= rep.residual_bound <= rep.data_independent_bound
    assert rep.grad_residual_norm == pytest.approx(model.grad_residual_norm())


@pytest.mark.parametrize("one_by_one", [False, True])
def test_multiclass_perturbed_removal_bounds_hold(one_by_one):
    X, y = _toy(n=120, d=6, classes=3, seed=1)
    kw = dict(lam=0.5, sigma=0.5, epsilon=math.inf, seed=3)
    model = CertifiedLogReg(**kw).fit(X, y)
    assert model.coef_.shape == (6, 3)
    forget = [0, 5, 17, 40, 99]
    rep = model.remove(forget, one_by_one=one_by_one)
    assert rep.newton_steps == (len(forget) if one_by_one else 1)
    assert rep.grad_residual_norm <= rep.residual_bound <= rep.data_independent_bound
    keep = np.setdiff1d(np.arange(len(y)), forget)
    oracle = CertifiedLogReg(**kw).fit(X[keep], y[keep], classes=[0, 1, 2])
    np.testing.assert_array_equal(oracle.b_, model.b_)  # same seed, same perturbation
    noise = CertifiedLogReg(**{**kw, "seed": 4}).fit(X[keep], y[keep], classes=[0, 1, 2])
    dist = np.linalg.norm(model.coef_ - oracle.coef_)
    assert dist < 0.05 * np.linalg.norm(noise.coef_ - oracle.coef_)
    assert rep.epsilon_spent == pytest.approx(
        certificate_c(kw_delta := model.delta) * rep.residual_bound / kw["sigma"]
    )
    assert kw_delta == rep.delta


def test_epsilon_accounting_is_monotone_in_removals():
    X, y = _toy(n=150, d=5, seed=2)
    model = CertifiedLogReg(lam=0.3, sigma=1.0, epsilon=math.inf, seed=0).fit(X, y)
    spent, bounds, indep = [model.epsilon_spent_], [model.residual_bound_], []
    for i in range(6):
        rep = model.remove([3 * i, 3 * i + 1])
        assert not rep.retrained
        assert rep.grad_residual_norm <= rep.residual_bound
        assert rep.step_bound > 0
        spent.append(rep.epsilon_spent)
        bounds.append(rep.residual_bound)
        indep.append(rep.data_independent_bound)
    assert np.all(np.diff(spent) > 0) and np.all(np.diff(bounds) > 0)
    assert np.all(np.diff(indep) > 0)
    assert model.n_remaining == 150 - 12


def test_budget_spent_triggers_retraining():
    X, y = _toy(n=150, d=5, seed=4)
    probe = CertifiedLogReg(lam=0.3, sigma=1.0, epsilon=math.inf, seed=0).fit(X, y)
    b0 = probe.b_.copy()
    one = probe.remove([0, 1, 2]).residual_bound
    two = probe.remove([3, 4, 5]).residual_bound
    # a budget that covers the first removal but not the second
    eps = certified_epsilon(0.5 * (one + two), 1.0, 1e-5)
    model = CertifiedLogReg(lam=0.3, sigma=1.0, epsilon=eps, seed=0).fit(X, y)
    first = model.remove([0, 1, 2])
    assert not first.retrained and first.epsilon_spent <= eps
    second = model.remove([3, 4, 5])
    assert second.retrained and second.newton_steps == 0 and second.step_bound == 0.0
    assert second.epsilon_spent < 1e-6  # accounting restarts at the fresh optimum
    assert second.grad_residual_norm <= second.residual_bound
    assert model.n_remaining == 144 and model.removed_mask[:6].all()
    # retrained from scratch on the remaining rows, with a fresh perturbation
    assert not np.array_equal(model.b_, b0)
    third = model.remove([6])
    assert not third.retrained and third.grad_residual_norm <= third.residual_bound


def test_stale_cache_path_matches_cached_path():
    X, y = _toy(n=100, d=4, seed=5)
    model = CertifiedLogReg(lam=0.5, sigma=0.5, epsilon=math.inf, seed=1).fit(X, y)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    a.remove([1, 2])
    b.remove([1, 2], refresh=True)
    ra, rb = a.remove([10]), b.remove([10])  # a recomputes the Hessians, b uses its cache
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-10)
    # without the refresh, ||X'|| and max ||x_i|| are the (larger) values before removal
    assert rb.residual_bound <= ra.residual_bound <= 1.01 * rb.residual_bound
    assert ra.grad_residual_norm == pytest.approx(rb.grad_residual_norm, rel=1e-6)
    assert rb.refresh_seconds == 0.0 and ra.refresh_seconds == 0.0


@pytest.mark.parametrize("group", [[5], [3, 40, 77, 101], list(range(0, 150, 4))])
def test_iterative_solve_matches_the_direct_solves(group, monkeypatch):
    # with a fresh cache the Newton system is solved by preconditioned CG; without a cache
    # the retained Hessians are rebuilt from the rows and factorised; with CG capped at
    # no iteration the cached Hessians are downdated and factorised: the same step
    X, y = _toy(n=150, d=12, classes=3, seed=7)
    model = CertifiedLogReg(lam=0.3, sigma=0.5, epsilon=math.inf, seed=2).fit(X, y)
    iterative, rebuilt, downdated = (copy.deepcopy(model) for _ in range(3))
    rebuilt._invalidate_cache()
    calls: list[str] = []
    pcg, spd = certified._pcg_solve, certified._spd_solve

    def spy_pcg(*args):
        out = pcg(*args)
        calls.append("pcg" if out is not None else "pcg gave up")
        return out

    def spy_spd(*args):
        calls.append("direct")
        return spd(*args)

    monkeypatch.setattr(certified, "_pcg_solve", spy_pcg)
    monkeypatch.setattr(certified, "_spd_solve", spy_spd)
    ra = iterative.remove(group)
    assert calls == ["pcg"]
    rb = rebuilt.remove(group)
    assert calls[1:] == ["direct"]
    monkeypatch.setattr(certified, "PCG_MAX_ITER", 0)
    rc = downdated.remove(group)
    assert calls[2:] == ["pcg gave up", "direct"]
    for other, rep in ((rebuilt, rb), (downdated, rc)):
        np.testing.assert_allclose(iterative.coef_, other.coef_, rtol=0, atol=1e-9)
        # the iterative solve adds its residual (about PCG_RTOL * ||Delta||) to the bound
        assert ra.residual_bound == pytest.approx(rep.residual_bound, rel=1e-5)
    assert ra.grad_residual_norm <= ra.residual_bound


def test_pcg_solve_reports_its_true_residual():
    rng = np.random.default_rng(0)
    d, m, k = 6, 4, 2
    Xg = rng.standard_normal((m, d))
    Dg = rng.uniform(0.05, 0.25, (m, k))
    base = rng.standard_normal((k, 30, d))
    H = np.matmul(base.transpose(0, 2, 1), base) + 20.0 * np.eye(d)
    B = rng.standard_normal((d, k))
    B[:, 1] = 0.0  # a class with nothing to move
    S, res, iters = certified._pcg_solve(H, np.linalg.inv(H), 0.5, Xg, Dg, B)
    for j in range(k):
        Hp = H[j] - 0.5 * np.eye(d) - (Xg * Dg[:, j : j + 1]).T @ Xg
        np.testing.assert_allclose(S[:, j], np.linalg.solve(Hp, B[:, j]), atol=1e-9)
        assert res[j] == pytest.approx(np.linalg.norm(B[:, j] - Hp @ S[:, j]), abs=1e-12)
    assert np.all(S[:, 1] == 0.0) and 1 <= iters <= certified.PCG_MAX_ITER
    S0, res0, it0 = certified._pcg_solve(H, np.linalg.inv(H), 0.5, Xg, Dg, np.zeros((d, k)))
    assert it0 == 0 and not S0.any() and not res0.any()
    # an inexact preconditioner (the inverse of another SPD matrix) breaks the recursions'
    # premise H z = r; the residual reported is still B - H' S of the S returned
    out = certified._pcg_solve(H, np.linalg.inv(H + 5.0 * np.eye(d)), 0.5, Xg, Dg, B)
    if out is not None:  # a fallback to the direct solve is a legitimate answer too
        S2, res2, _ = out
        for j in range(k):
            Hp = H[j] - 0.5 * np.eye(d) - (Xg * Dg[:, j : j + 1]).T @ Xg
            want = np.linalg.norm(B[:, j] - Hp @ S2[:, j])
            assert res2[j] == pytest.approx(want, rel=1e-9, abs=1e-14)


def test_removal_errors():
    X, y = _toy(n=30, d=3)
    with pytest.raises(UnlearnError, match="rows but y"):
        CertifiedLogReg().fit(X, y[:-1])
    with pytest.raises(UnlearnError, match="not fitted"):
        CertifiedLogReg().remove([0])
    model = CertifiedLogReg(lam=0.5, epsilon=math.inf).fit(X, y)
    with pytest.raises(UnlearnError, match="out of range"):
        model.remove([30])
    with pytest.raises(UnlearnError, match="out of range"):
        model.remove([-1])
    with pytest.raises(UnlearnError, match="more than once"):
        model.remove([2, 2])
    with pytest.raises(UnlearnError, match="integers"):
        model.remove([0.5])
    with pytest.raises(UnlearnError, match="empty"):
        model.remove([])
    with pytest.raises(UnlearnError, match="all 30 remaining"):
        model.remove(np.arange(30))
    model.remove([4])
    before = (model.coef_.copy(), model._acc.copy(), model.removed_mask.copy())
    with pytest.raises(UnlearnError, match="already removed"):
        model.remove([3, 4])
    with pytest.raises(UnlearnError, match="more than once"):
        model.remove([7, 8, 7])
    with pytest.raises(UnlearnError, match="all 29 remaining"):
        model.remove(np.delete(np.arange(30), 4))
    # a refused request changes nothing
    assert model.n_remaining == 29
    for was, now in zip(before, (model.coef_, model._acc, model.removed_mask), strict=True):
        np.testing.assert_array_equal(was, now)
    with pytest.raises(UnlearnError, match="lam"):
        CertifiedLogReg(lam=0.0)
    with pytest.raises(UnlearnError, match="delta"):
        CertifiedLogReg(delta=1.0)
    with pytest.raises(UnlearnError, match="two distinct classes"):
        CertifiedLogReg().fit(X, np.zeros(30, dtype=int))
    with pytest.raises(UnlearnError, match="shape"):
        model.predict(np.zeros((2, 7)))


def test_unit_features_adds_a_bias_and_normalises_rows():
    x = np.random.default_rng(0).uniform(size=(5, 1, 8, 8))
    z = unit_features(x)
    assert z.shape == (5, 65)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0)
    assert np.all(z[:, -1] > 0)


def test_run_certified_tiny_spec_writes_the_results_layout(tmp_path):
    spec = {
        "name": "digits-certified-tiny",
        "kind": "certified",
        "data": {"name": "digits"},
        "model": {"lam": 0.1, "sigma": 1.0, "epsilon": 1.0, "delta": 1e-5},
        "fractions": [0.02],
        "seeds": [0],
        "repeats": 1,
    }
    messages: list[str] = []
    res = run_certified(spec, messages.append)
    assert set(res) == {
        "scenario",
        "scenario_name",
        "request",
        "model_spec",
        "train_recipe",
        "methods",
        "seeds",
        "about",
        "execution",
        "versions",
        "total_seconds",
        "rows",
        "summary",
    }
    labels = [r["method"] for r in res["rows"]]
    assert labels == ["original@2%", "retrain@2%", "oracle_noise@2%", "newton_removal@2%"]
    assert [s["method"] for s in res["summary"]] == labels
    assert list(res["methods"]) == ["newton_removal@2%"]
    m = {r["method"]: r["metrics"] for r in res["rows"]}
    for key in (
        "test_acc",
        "retain_acc",
        "forget_acc",
        "delta",
        "param_distance_to_oracle",
        "seconds",
        "time_vs_oracle",
        "retrained",
    ):
        assert all(key in mm for mm in m.values()), key
    newton = m["newton_removal@2%"]
    assert newton["retrained"] == 0.0 and 0 < newton["epsilon"] <= 1.0
    assert newton["grad_residual_norm"] <= newton["residual_bound"]
    assert abs(newton["test_acc"] - m["retrain@2%"]["test_acc"]) <= 0.5
    assert newton["param_distance_to_oracle"] < m["oracle_noise@2%"]["param_distance_to_oracle"]
    assert m["retrain@2%"]["param_distance_to_oracle"] == 0.0
    assert len(messages) == 4
    out = write_outputs(res, tmp_path / "out")
    assert json.loads((out / "results.json").read_text())["scenario_name"] == spec["name"]
    assert (out / "report.md").exists() and (out / "forget_vs_test.png").exists()


def test_run_certified_rejects_bad_specs():
    base = {"name": "x", "kind": "certified", "data": {"name": "digits"}}
    with pytest.raises(ScenarioError, match="kind"):
        run_certified({**base, "kind": "classifier"})
    with pytest.raises(ScenarioError, match="unknown key"):
        run_certified({**base, "methods": []})
    with pytest.raises(ScenarioError, match="fractions"):
        run_certified({**base, "fractions": [1.5]})
    with pytest.raises(ScenarioError, match="model"):
        run_certified({**base, "model": {"lam": -1}})
    with pytest.raises(ScenarioError, match="seeds"):
        run_certified({**base, "seeds": []})
    for bad, match in [
        ({"seeds": [-1]}, "seeds"),
        ({"data": {"name": "foo"}}, "data"),
        ({"model": [1]}, "'model' must be a mapping"),
        ({"model": {"tol": [1]}}, "'tol' must be a number"),
        ({"model": {"max_iter": 1.5}}, "'max_iter' must be a number"),
        ({"one_by_one": "no"}, "one_by_one"),
        ({"repeats": 10**6}, "repeats"),
    ]:
        with pytest.raises(ScenarioError, match=match):
            run_certified({**base, **bad})
