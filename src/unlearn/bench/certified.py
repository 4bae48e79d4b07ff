"""Benchmark of certified removal (Guo et al. 2020) against exact retraining.

A scenario mapping (``kind: certified``)::

    name: digits-certified
    kind: certified
    data: {name: digits}
    model: {lam: 0.2, sigma: 0.5, epsilon: 1.0, delta: 1.0e-5}
    fractions: [0.01, 0.05, 0.10]
    seeds: [0, 1, 2]
    # optional: noise_seed_offset (1000), repeats (5), threads (1), one_by_one (false)

For every seed the certified model (:class:`unlearn.certified.CertifiedLogReg`)
is trained on the training split; for every fraction a random forget set is
drawn (one permutation per seed, so the smaller forget sets are nested in the
larger ones) and four rows are written, each label carrying the fraction
(``newton_removal@5%``):

``original``
    the trained model before removal.
``retrain``
    the oracle: the same recipe and the same perturbation seed, retrained
    exactly on the retained samples.
``oracle_noise``
    the oracle retrained with another perturbation seed (``seed +
    noise_seed_offset``), scored against the oracle: the noise floor of the
    parameter distance.
``newton_removal``
    the Newton update of the original model (one batch step), with its
    certificate. If the accumulated bound would exceed the budget implied by
    ``(epsilon, delta, sigma)`` the model retrains instead (``retrained`` = 1).

Inputs are flattened, a constant 1 is appended (the bias), and each row is
scaled to unit Euclidean norm, as the paper's experiments normalise features
(the bounds assume ``||x|| <= 1``). The map is applied sample by sample on
purpose: standardising with training-set statistics would let the removed
samples shape the features of every other sample, outside what the Newton
update removes, and void the certificate.

Times: every timed step runs ``repeats`` times on one BLAS thread (``threads``)
and the median is reported; ``seconds`` of ``newton_removal`` is the removal
itself with the Hessians cached when the model was trained (the paper's
offline pre-computation), ``refresh_seconds`` the recomputation of that cache at
the new parameters (needed before the next removal), reported apart along
with ``time_vs_oracle_with_refresh``. The oracle is timed without building a
cache (it serves no removals).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np

from ..certified import CertifiedLogReg
from ..data import load_dataset
from ..errors import ScenarioError, UnlearnError
from .runner import _versions, summarise

__all__ = ["run_certified", "unit_features", "DEFAULT_MODEL"]

#: Model options a scenario leaves out (those of :class:`CertifiedLogReg`); data-set specific
#: choices belong in the scenario file (``benchmarks/digits-certified.yaml``).
DEFAULT_MODEL = {"lam": 1e-3, "sigma": 1.0, "epsilon": 1.0, "delta": 1e-5}

_KEYS = {
    "name",
    "kind",
    "description",
    "data",
    "model",
    "fractions",
    "seeds",
    "noise_seed_offset",
    "repeats",
    "threads",
    "one_by_one",
}
_MODEL_KEYS = {"lam", "sigma", "epsilon", "delta", "tol", "max_iter"}


ABOUT = """Rows per forget fraction: `original@f` (the certified model before removal),
`retrain@f` (the oracle: exact retraining on the retained samples with the same
perturbation seed), `oracle_noise@f` (the oracle with another perturbation seed:
the noise floor of the parameter distance) and `newton_removal@f` (one Newton
step with its certificate; `retrained` = 1 where the budget was spent and the
model retrained instead). `epsilon` is the smallest epsilon the accumulated
data-dependent residual bound certifies at `delta`; times are medians of
repeated runs on one thread, removal without the Hessian refresh."""


def unit_features(x) -> np.ndarray:
    """Flatten, append a constant 1 (bias) and scale every row to unit L2 norm (float64)."""
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    z = np.hstack([a, np.ones((a.shape[0], 1))])
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _label(method: str, fraction: float) -> str:
    return f"{method}@{100 * fraction:g}%"


def _check(spec: dict) -> dict:
    """Validate the scenario mapping; return it with defaults filled in."""
    if not isinstance(spec, dict):
        raise ScenarioError("a certified scenario must be a mapping")
    name = spec.get("name", "certified")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ScenarioError(
            f"scenario {name}: unknown key(s) {sorted(unknown)} (allowed: {sorted(_KEYS)})"
        )
    if spec.get("kind", "certified") != "certified":
        raise ScenarioError(f"scenario {name}: kind must be 'certified', got {spec['kind']!r}")
    if "data" not in spec:
        raise ScenarioError(f"scenario {name}: 'data' is required")
    model = dict(DEFAULT_MODEL)
    model.update(spec.get("model") or {})
    bad = set(model) - _MODEL_KEYS
    if bad:
        raise ScenarioError(f"scenario {name}: unknown model option(s) {sorted(bad)}")
    fractions = spec.get("fractions", [0.01, 0.05, 0.10])
    if (
        not isinstance(fractions, list)
        or not fractions
        or not all(isinstance(f, int | float) and 0 < f < 1 for f in fractions)
    ):
        raise ScenarioError(f"scenario {name}: 'fractions' must be a list of numbers in (0, 1)")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise ScenarioError(f"scenario {name}: 'seeds' must be a non-empty list of integers")
    repeats = spec.get("repeats", 5)
    threads = spec.get("threads", 1)
    offset = spec.get("noise_seed_offset", 1000)
    for key, val in (("repeats", repeats), ("threads", threads), ("noise_seed_offset", offset)):
        if type(val) is not int or val < (0 if key == "noise_seed_offset" else 1):
            raise ScenarioError(f"scenario {name}: '{key}' must be a positive integer")
    if offset == 0:
        raise ScenarioError(f"scenario {name}: 'noise_seed_offset' must not be 0")
    try:
        CertifiedLogReg(**model)  # validates the values
    except UnlearnError as exc:
        raise ScenarioError(f"scenario {name}: model: {exc}") from None
    return {
        "name": name,
        "model": model,
        "fractions": [float(f) for f in fractions],
        "seeds": seeds,
        "repeats": repeats,
        "threads": threads,
        "offset": offset,
        "one_by_one": bool(spec.get("one_by_one", False)),
    }


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    """Run ``fn`` ``repeats`` times; return the last result and the median wall time."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def _row(method: str, frac: float, seed: int, metrics: dict, record: dict | None = None) -> dict:
    row = {"method": _label(method, frac), "seed": seed, "metrics": metrics}
    if record is not None:
        row["record"] = record
    return row


class _Scorer:
    """Metrics of one model for one seed and forget set, against that set's oracle."""

    def __init__(self, X, y, Xt, yt, keep, forget, oracle: CertifiedLogReg, o_sec: float):
        self.X, self.y, self.Xt, self.yt = X, y, Xt, yt
        self.keep, self.forget, self.oracle, self.o_sec = keep, forget, oracle, o_sec

    def score(
        self, mdl: CertifiedLogReg, seconds: float, retrained: int, certified: bool = False
    ) -> dict:
        X, y = self.X, self.y
        out = {
            "test_acc": mdl.accuracy(self.Xt, self.yt),
            "retain_acc": mdl.accuracy(X[self.keep], y[self.keep]),
            "forget_acc": mdl.accuracy(X[self.forget], y[self.forget]),
            "delta": mdl.delta,
            "param_distance_to_oracle": float(np.linalg.norm(mdl.coef_ - self.oracle.coef_)),
            "seconds": seconds,
            "time_vs_oracle": seconds / self.o_sec,
            "retrained": float(retrained),
        }
        if certified:  # an exact (re)training: only the optimiser's leftover gradient
            out.update(epsilon=mdl.epsilon_spent_, residual_bound=mdl.residual_bound_)
        return out


def _newton(original: CertifiedLogReg, forget: np.ndarray, cfg: dict, reps: int):
    """Remove ``forget`` from copies of ``original`` ``reps`` times; the last model, its
    report, and the median removal and cache-refresh seconds."""
    reports = []
    unlearned = original
    for _ in range(reps):
        unlearned = copy.deepcopy(original)
        reports.append(unlearned.remove(forget, one_by_one=cfg["one_by_one"], refresh=True))
    rep = reports[-1]
    if not rep.grad_residual_norm <= rep.residual_bound * (1 + 1e-9):
        raise AssertionError(  # the certificate's premise; never expected
            f"measured gradient residual {rep.grad_residual_norm} exceeds its bound "
            f"{rep.residual_bound}"
        )
    sec = float(np.median([r.seconds for r in reports]))
    refresh = float(np.median([r.refresh_seconds for r in reports]))
    return unlearned, rep, sec, refresh


def run_certified(spec: dict, progress: Callable[[str], None] | None = None) -> dict:
    """Run a ``kind: certified`` scenario; return the ``results.json`` document."""
    from threadpoolctl import threadpool_limits

    say = progress or (lambda msg: None)
    cfg = _check(spec)
    t_start = time.perf_counter()
    train, test = load_dataset(spec["data"])
    X, y = unit_features(train.x.numpy()), train.y.numpy()
    Xt, yt = unit_features(test.x.numpy()), test.y.numpy()
    classes = list(range(train.num_classes))
    n = len(y)
    model, reps = cfg["model"], cfg["repeats"]
    sizes = [max(1, round(f * n)) for f in cfg["fractions"]]
    if max(sizes) >= n:
        raise ScenarioError(f"scenario {cfg['name']}: a fraction leaves no training sample")

    def fit(seed: int, rows: np.ndarray, prepare: bool) -> CertifiedLogReg:
        return CertifiedLogReg(**model, seed=seed).fit(X[rows], y[rows], classes, prepare)

    rows: list[dict] = []
    total = len(cfg["seeds"]) * (1 + 3 * len(sizes))
    done = 0

    def tick(msg: str) -> None:
        nonlocal done
        done += 1
        say(f"[{done}/{total}] {msg}")

    everything = np.arange(n)
    with threadpool_limits(limits=cfg["threads"]):
        for seed in cfg["seeds"]:
            original, orig_seconds = _median_time(lambda s=seed: fit(s, everything, True), reps)
            tick(f"seed {seed}: original trained ({orig_seconds:.3f}s)")
            perm = np.random.default_rng(seed).permutation(n)
            for frac, m in zip(cfg["fractions"], sizes, strict=True):
                forget = np.sort(perm[:m])
                keep = np.setdiff1d(everything, forget)
                oracle, o_sec = _median_time(lambda s=seed, k=keep: fit(s, k, False), reps)
                tick(f"seed {seed} {_label('retrain', frac)}: oracle ({o_sec:.3f}s)")
                noise, n_sec = _median_time(
                    lambda s=seed, k=keep: fit(s + cfg["offset"], k, False), reps
                )
                ctx = _Scorer(X, y, Xt, yt, keep, forget, oracle, o_sec)
                rows.append(_row("original", frac, seed, ctx.score(original, orig_seconds, 0)))
                rows.append(_row("retrain", frac, seed, ctx.score(oracle, o_sec, 1, True)))
                rows.append(_row("oracle_noise", frac, seed, ctx.score(noise, n_sec, 1, True)))
                tick(
                    f"seed {seed} {_label('oracle_noise', frac)}: distance "
                    f"{rows[-1]['metrics']['param_distance_to_oracle']:.4f}"
                )
                unlearned, rep, sec, refresh = _newton(original, forget, cfg, reps)
                metrics = ctx.score(unlearned, sec, int(rep.retrained))
                metrics.update(
                    epsilon=rep.epsilon_spent,
                    residual_bound=rep.residual_bound,
                    grad_residual_norm=rep.grad_residual_norm,
                    data_independent_bound=rep.data_independent_bound,
                    refresh_seconds=refresh,
                    time_vs_oracle_with_refresh=(sec + refresh) / o_sec,
                )
                rows.append(_row("newton_removal", frac, seed, metrics, rep.to_dict()))
                tick(
                    f"seed {seed} {_label('newton_removal', frac)}: eps {rep.epsilon_spent:.3f}, "
                    f"distance {metrics['param_distance_to_oracle']:.2e}, "
                    f"{o_sec / sec:.0f}x faster"
                    + (" (retrained: budget spent)" if rep.retrained else "")
                )

    # group the rows by method label (all seeds of a label together, fractions in order)
    order = [
        _label(meth, f)
        for f in cfg["fractions"]
        for meth in ("original", "retrain", "oracle_noise", "newton_removal")
    ]
    rows.sort(key=lambda r: (order.index(r["method"]), r["seed"]))
    pct = ", ".join(f"{100 * f:g}%" for f in cfg["fractions"])
    config = {**model, "one_by_one": cfg["one_by_one"]}
    return {
        "scenario": dict(spec),
        "scenario_name": cfg["name"],
        "request": (
            f"random {pct} of the {n} training samples (one permutation per seed; "
            "smaller forget sets are nested in larger ones)"
        ),
        "model_spec": {
            "name": "certified_logreg",
            **model,
            "features": "flattened + bias, rows scaled to unit L2 norm",
            "input_shape": [int(X.shape[1])],
            "num_classes": len(classes),
            "c": math.sqrt(2 * math.log(1.5 / model["delta"])),
            "budget": CertifiedLogReg(**model).budget,
        },
        "train_recipe": {
            "optimizer": "scipy L-BFGS-B then Newton polish (exact minimiser)",
            "tol": CertifiedLogReg(**model).tol,
            "repeats": reps,
            "threads": cfg["threads"],
            "noise_seed_offset": cfg["offset"],
        },
        "methods": {
            _label("newton_removal", f): {"method": "certified_newton", "config": config}
            for f in cfg["fractions"]
        },
        "seeds": cfg["seeds"],
        "about": ABOUT,
        "versions": _versions(),
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
        "summary": summarise(rows),
    }
