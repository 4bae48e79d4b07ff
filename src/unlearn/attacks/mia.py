"""Membership-inference attacks and unlearning audits as pure functions: arrays in, numbers out.

Nothing here trains a model. The caller trains the target, the reference ("shadow") models
and, for the unlearning audits, reference models that were unlearned or retrained, queries
them, and passes the per-example statistics in. Every function validates its input and
raises :class:`ValueError` on anything it cannot score; none of them swallows an error.

Conventions
    * A higher attack score means "more likely a member" (for the unlearning audits: "more
      likely unlearned rather than never seen").
    * AUC and TPR are percentages, as in :mod:`unlearn.metrics.classification`.
    * Reference statistics are ``(examples, reference models)`` matrices. In the LiRA family
      a NaN entry means "this reference model does not provide this example".

Contents
    * :func:`logit_confidence` -- LiRA's logit-scaled confidence (Carlini et al. 2022).
    * :func:`lira_scores`, :func:`lira_offline_scores` -- LiRA, online and offline
      (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022).
    * :func:`ulira_scores` -- U-LiRA (Hayes et al. 2024, "Inexact Unlearning Needs More
      Careful Evaluations to Avoid a False Sense of Privacy").
    * :func:`rmia_scores` -- RMIA (Zarifzadeh et al., "Low-Cost High-Power Membership
      Inference Attacks", ICML 2024).
    * :func:`roc_auc`, :func:`tpr_at_fpr` -- attack summaries.
    * :func:`nearest_classes`, :func:`mia_nn_features`, :func:`mia_nn_auc` -- MIA-NN for
      class unlearning (Ebrahimpour-Boroojeny et al.), as reconstructed below.
    * :func:`per_example_epsilon`, :func:`forget_quality`, :func:`challenge_score` -- the
      NeurIPS 2023 machine unlearning challenge score (Triantafillou et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special, stats

from ..metrics._checks import finite_vector

__all__ = [
    "logit_confidence",
    "lira_scores",
    "lira_offline_scores",
    "ulira_scores",
    "rmia_scores",
    "roc_auc",
    "tpr_at_fpr",
    "nearest_classes",
    "mia_nn_features",
    "mia_nn_auc",
    "per_example_epsilon",
    "forget_quality",
    "challenge_score",
    "CHALLENGE_DELTA",
    "CHALLENGE_EPSILON_CAP",
]

#: delta of the (epsilon, delta) estimate in the NeurIPS 2023 challenge's released metric.
CHALLENGE_DELTA = 1e-5
#: Largest per-example epsilon the challenge's released metric reports.
CHALLENGE_EPSILON_CAP = 50.0

# ---------------------------------------------------------------------------------------------
# input checks


def _matrix(x, name: str, rows: int | None = None) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a two-dimensional array, got shape {m.shape}")
    if rows is not None and m.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per example), got {m.shape[0]}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {m.shape})")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite")
    return m


def _probabilities(v: np.ndarray, name: str) -> np.ndarray:
    if np.any(v < 0.0) or np.any(v > 1.0):
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return v


def _reference_matrix(ref, n: int, name: str) -> np.ndarray:
    """``(n, k)`` float matrix, NaN where a reference model does not provide an example.

    Accepts a two-dimensional array (NaN allowed) or a sequence of ``n`` one-dimensional
    arrays of any lengths (padded with NaN). Infinite values are rejected: only NaN means
    "missing". Every row needs at least two finite values to fit a Gaussian.
    """
    if isinstance(ref, np.ndarray) and ref.ndim == 2:
        m = ref.astype(np.float64)
    else:
        try:
            rows = [np.asarray(r, dtype=np.float64).ravel() for r in ref]
        except TypeError as exc:
            raise ValueError(f"{name} must be a 2-D array or a sequence of arrays") from exc
        if len(rows) != n:
            raise ValueError(f"{name} must hold one row per example ({n}), got {len(rows)}")
        width = max((len(r) for r in rows), default=0)
        m = np.full((n, width), np.nan)
        for i, r in enumerate(rows):
            m[i, : len(r)] = r
    if m.ndim != 2 or m.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n}, references), got {m.shape}")
    if np.any(np.isinf(m)):
        raise ValueError(f"{name} has infinite values; only NaN may mark a missing entry")
    counts = np.sum(np.isfinite(m), axis=1)
    bad = np.flatnonzero(counts < 2)
    if bad.size:
        raise ValueError(
            f"{name}: example {int(bad[0])} has {int(counts[bad[0]])} finite reference "
            f"value(s); at least 2 are needed ({bad.size} example(s) affected)"
        )
    return m


# ---------------------------------------------------------------------------------------------
# LiRA / U-LiRA


def logit_confidence(logits, labels) -> np.ndarray:
    """LiRA's logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` per example.

    Computed from the logits without forming probabilities, so it stays exact where
    ``p_y`` rounds to 0 or 1: ``phi = z_y - logsumexp_{j != y} z_j`` (Carlini et al. 2022,
    Sec. IV; the same statistic scores the NeurIPS 2023 unlearning challenge).

    Args:
        logits: ``(n, C)`` finite logits, ``C >= 2``.
        labels: ``(n,)`` integer labels in ``[0, C)``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be a (samples, classes) array, got shape {z.shape}")
    n, c = z.shape
    if c < 2:
        raise ValueError("logit-scaled confidence needs at least two classes")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must hold one label per sample ({n}), got shape {y.shape}")
    if n and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integers")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}), got range [{y.min()}, {y.max()}]")
    rows = np.arange(n)
    z_true = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return z_true - special.logsumexp(others, axis=1)


def _gaussian_fit(ref: np.ndarray, fix_variance: bool, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.nanmean(ref, axis=1)
    if fix_variance:
        # one variance shared by all examples: maximum-likelihood pooled within-example variance
        dev = ref - mu[:, None]
        pooled = np.nansum(dev**2) / np.sum(np.isfinite(ref))
        sd = np.full(len(mu), math.sqrt(pooled))
    else:
        sd = np.sqrt(np.nanvar(ref, axis=1))
    flat = np.flatnonzero(sd <= 0.0)
    if flat.size:
        hint = "" if fix_variance else "; fix_variance=True pools the spread over examples"
        raise ValueError(
            f"{name}: the reference values of example {int(flat[0])} have zero spread{hint}"
        )
    return mu, sd


def lira_scores(target_phi, in_phi, out_phi, fix_variance: bool = True) -> np.ndarray:
    """Online LiRA: per-example log likelihood ratio of "in" against "out" (Carlini et al. 2022).

    For example ``i`` a Gaussian is fitted to the "in" reference statistics (models trained on
    it) and another to the "out" ones (models not trained on it); the score is
    ``log N(target_phi_i; mu_in, sd_in) - log N(target_phi_i; mu_out, sd_out)``.

    The same test is U-LiRA (Hayes et al. 2024) when "in" holds reference models that trained
    on the example and then *unlearned* it with the method under audit, and "out" holds models
    retrained without it; :func:`ulira_scores` is this function under those names.

    Args:
        target_phi: ``(n,)`` statistic of the target model (e.g. :func:`logit_confidence`).
        in_phi, out_phi: ``(n, k)`` reference statistics, or sequences of ``n`` arrays of any
            lengths. NaN marks a reference model that does not provide that example (means and
            spreads are NaN-aware); every example needs at least 2 finite values in each.
        fix_variance: use one variance per distribution ("in", "out") shared by all examples,
            the maximum-likelihood pooled within-example variance, as LiRA recommends with few
            reference models; otherwise each example's own spread (population std).

    Returns:
        ``(n,)`` scores in nats; higher means "in" (member / unlearned) is more likely.
    """
    t = finite_vector(target_phi, "target_phi")
    ins = _reference_matrix(in_phi, len(t), "in_phi")
    outs = _reference_matrix(out_phi, len(t), "out_phi")
    mu_in, sd_in = _gaussian_fit(ins, fix_variance, "in_phi")
    mu_out, sd_out = _gaussian_fit(outs, fix_variance, "out_phi")
    return stats.norm.logpdf(t, mu_in, sd_in) - stats.norm.logpdf(t, mu_out, sd_out)


def lira_offline_scores(target_phi, out_phi, fix_variance: bool = True) -> np.ndarray:
    """Offline LiRA: how far the target's statistic lies above the "out" Gaussian.

    Carlini et al. (2022) score an example by ``1 - Pr[Z > phi]`` with ``Z ~ N(mu_out,
    sd_out^2)``, a one-sided test. This returns the monotone equivalent
    ``-log Pr[Z > phi]`` (``-log`` of the one-sided p-value), which ranks examples the same
    way and does not saturate at 1 for large ``phi``.

    Args as in :func:`lira_scores`.
    """
    t = finite_vector(target_phi, "target_phi")
    outs = _reference_matrix(out_phi, len(t), "out_phi")
    mu_out, sd_out = _gaussian_fit(outs, fix_variance, "out_phi")
    return -stats.norm.logsf(t, mu_out, sd_out)


def ulira_scores(target_phi, unlearned_phi, retrained_phi, fix_variance: bool = True) -> np.ndarray:
    """U-LiRA (Hayes et al. 2024): :func:`lira_scores` with unlearned vs retrained references.

    ``unlearned_phi[i]`` come from reference models that trained on example ``i`` and then
    unlearned it with the method under audit; ``retrained_phi[i]`` from reference models that
    never trained on it. A high score says the target looks like it unlearned the example
    rather than never having seen it; an AUC near 50 over forget vs held-out targets means the
    method is indistinguishable from retraining for this attacker.
    """
    return lira_scores(target_phi, unlearned_phi, retrained_phi, fix_variance=fix_variance)


# ---------------------------------------------------------------------------------------------
# RMIA


def rmia_scores(
    target_px,
    ref_px,
    target_pz,
    ref_pz,
    gamma: float = 1.0,
    a: float = 0.3,
    ref_in_mask=None,
) -> np.ndarray:
    """RMIA (Zarifzadeh et al., ICML 2024): share of population samples that ``x`` dominates.

    With ``p(x|theta)`` the model's probability of the true label of ``x``:

    * ``LR(x) = p(x|theta) / Pr(x)`` where ``Pr(x)`` is the average of ``p(x|theta')`` over
      reference models ``theta'``; ``LR(z)`` likewise for every population sample ``z``.
    * ``score(x) = |{z : LR(x) / LR(z) >= gamma}| / m``.

    ``Pr(x)``:

    * offline (``ref_in_mask is None``: no reference model trained on any target or
      population sample): the paper's linear approximation from the OUT average,
      ``Pr(x) = ((1 + a) * mean_out(x) + (1 - a)) / 2``, for targets and population alike
      (a = 0.3 is the paper's offline default; the same form appears in the authors'
      ``privacytrustlab/ml_privacy_meter``, ``modules/mia/attacks/rmia.py``);
    * online (``ref_in_mask`` given): ``Pr(x) = (mean_in(x) + mean_out(x)) / 2``, the average
      over a balanced set of IN and OUT models (``a`` is unused), and ``Pr(z)`` the plain
      average of ``ref_pz`` over all reference models, as in the paper where ``z`` is drawn
      from the pool the reference models were trained on.

    Args:
        target_px: ``(n,)`` target model's true-label probabilities on the examples scored.
        ref_px: ``(n, k)`` the same under ``k`` reference models.
        target_pz: ``(m,)`` target model's true-label probabilities on population samples.
        ref_pz: ``(m, k')`` the same under reference models.
        gamma: the likelihood-ratio threshold (``> 0``; the paper's default is 1).
        a: offline correction in ``[0, 1]`` (1 means "no correction").
        ref_in_mask: ``(n, k)`` bool, True where reference model ``j`` trained on example
            ``i`` (note: examples by models, the transpose of a ``(models, pool)`` mask);
            each example needs at least one IN and one OUT reference.

    Returns:
        ``(n,)`` scores in ``[0, 1]``; higher means "member".
    """
    px = _probabilities(finite_vector(target_px, "target_px"), "target_px")
    rx = _probabilities(_matrix(ref_px, "ref_px", rows=len(px)), "ref_px")
    pz = _probabilities(finite_vector(target_pz, "target_pz"), "target_pz")
    rz = _probabilities(_matrix(ref_pz, "ref_pz", rows=len(pz)), "ref_pz")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive number, got {gamma}")
    if ref_in_mask is None:
        if not (0.0 <= a <= 1.0):
            raise ValueError(f"a must lie in [0, 1], got {a}")
        pr_x = ((1.0 + a) * rx.mean(axis=1) + (1.0 - a)) / 2.0
        pr_z = ((1.0 + a) * rz.mean(axis=1) + (1.0 - a)) / 2.0
    else:
        mask = np.asarray(ref_in_mask)
        if mask.shape != rx.shape:
            raise ValueError(f"ref_in_mask must have ref_px's shape {rx.shape}, got {mask.shape}")
        if mask.dtype != bool:
            if not np.all(np.isin(mask, (0, 1))):
                raise ValueError("ref_in_mask must be boolean")
            mask = mask.astype(bool)
        n_in = mask.sum(axis=1)
        lacking = np.flatnonzero((n_in == 0) | (n_in == mask.shape[1]))
        if lacking.size:
            raise ValueError(
                f"online RMIA needs an IN and an OUT reference for every example; example "
                f"{int(lacking[0])} has {int(n_in[lacking[0]])} IN of {mask.shape[1]}"
            )
        mean_in = np.where(mask, rx, 0.0).sum(axis=1) / n_in
        mean_out = np.where(mask, 0.0, rx).sum(axis=1) / (mask.shape[1] - n_in)
        pr_x = (mean_in + mean_out) / 2.0
        pr_z = rz.mean(axis=1)
    for pr, name in ((pr_x, "examples"), (pr_z, "population samples")):
        zero = np.flatnonzero(pr <= 0.0)
        if zero.size:
            raise ValueError(
                f"Pr(x) is 0 for {zero.size} {name} (every reference gives probability 0); "
                "RMIA's ratio is undefined there"
            )
    lr_x = px / pr_x
    lr_z = np.sort(pz / pr_z)
    # LR(x) / LR(z) >= gamma  <=>  LR(z) <= LR(x) / gamma  (all ratios are >= 0, gamma > 0)
    return np.searchsorted(lr_z, lr_x / gamma, side="right") / len(lr_z)


# ---------------------------------------------------------------------------------------------
# summaries


def _two_samples(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    m = finite_vector(np.asarray(member_scores, dtype=np.float64).ravel(), "member_scores")
    u = finite_vector(np.asarray(nonmember_scores, dtype=np.float64).ravel(), "nonmember_scores")
    return m, u


def roc_auc(member_scores, nonmember_scores) -> float:
    """ROC-AUC (percent) of "higher score means member"; ties count one half. 50 = chance."""
    from sklearn.metrics import roc_auc_score

    m, u = _two_samples(member_scores, nonmember_scores)
    truth = np.concatenate([np.ones(len(m)), np.zeros(len(u))])
    return 100.0 * float(roc_auc_score(truth, np.concatenate([m, u])))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01) -> float:
    """True-positive rate (percent) at a false-positive rate of at most ``fpr``.

    The attack says "member" when ``score >= t``. Over all thresholds ``t`` (the ROC curve with
    every point kept, from "nobody" to "everybody"), this is the largest TPR among the
    thresholds whose FPR is ``<= fpr``; no interpolation between ROC points. With ``u``
    non-members, any ``fpr < 1/u`` asks for zero false positives.
    """
    from sklearn.metrics import roc_curve

    if not (math.isfinite(fpr) and 0.0 <= fpr <= 1.0):
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    m, u = _two_samples(member_scores, nonmember_scores)
    truth = np.concatenate([np.ones(len(m)), np.zeros(len(u))])
    fprs, tprs, _ = roc_curve(truth, np.concatenate([m, u]), drop_intermediate=False)
    return 100.0 * float(np.max(tprs[fprs <= fpr]))


# ---------------------------------------------------------------------------------------------
# MIA-NN (class unlearning)


def _prob_rows(p, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be a (samples, classes) array, got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(p)) or np.any(p < -1e-9) or np.any(p > 1 + 1e-9):
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{name} rows must sum to 1")
    return p


def nearest_classes(original_probs_on_forget, forgotten: int, k: int = 3) -> list[int]:
    """The ``k`` classes nearest the forgotten one, nearest first.

    Nearest = highest mean probability on the forget-class samples, the forgotten class
    itself excluded; ties go to the lower class index. Pass the original model's
    probabilities (what an auditor holding the original model sees) or those of retrained
    reference models (which the MIA-NN paper is reported to use to pick the neighbour).

    Args:
        original_probs_on_forget: ``(n, C)`` probabilities on samples of the forgotten class.
        forgotten: the forgotten class.
        k: how many neighbours, ``1 <= k <= C - 1``.
    """
    p = _prob_rows(original_probs_on_forget, "original_probs_on_forget")
    c = p.shape[1]
    if isinstance(forgotten, bool) or not isinstance(forgotten, int | np.integer):
        raise ValueError(f"forgotten must be a class index, got {forgotten!r}")
    if not 0 <= forgotten < c:
        raise ValueError(f"forgotten class {forgotten} is outside [0, {c})")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= c - 1:
        raise ValueError(f"k must be an integer in [1, {c - 1}], got {k!r}")
    mean = p.mean(axis=0)
    mean[forgotten] = -np.inf
    order = np.argsort(-mean, kind="stable")
    return [int(j) for j in order[:k]]


def mia_nn_features(probs, neighbours: Sequence[int]) -> np.ndarray:
    """MIA-NN features: the probabilities given to ``neighbours``, in that fixed order.

    Returns ``(n, K)``; column ``j`` is the probability of class ``neighbours[j]``.
    """
    p = _prob_rows(probs, "probs")
    idx = np.asarray(list(neighbours))
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError("neighbours must be a non-empty list of class indices")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("neighbours must be integer class indices")
    if idx.min() < 0 or idx.max() >= p.shape[1]:
        raise ValueError(f"neighbours must lie in [0, {p.shape[1]}), got {idx.tolist()}")
    if len(set(idx.tolist())) != idx.size:
        raise ValueError(f"neighbours must be distinct, got {idx.tolist()}")
    return p[:, idx]


def mia_nn_auc(
    train_member_feats,
    train_nonmember_feats,
    target_feats,
    reference_feats,
    seed: int = 0,
    classifier: str = "logistic",
) -> float:
    """MIA-NN score (percent): how well a trained attack tells the target from retraining.

    **Reconstruction.** The MIA-NN paper (Ebrahimpour-Boroojeny et al., "Toward Reliable
    Machine Unlearning" / "On the Necessity of Output Distribution Reweighting for Effective
    Class Unlearning", arXiv 2506.20893) describes the attack as using "the probabilities the
    model assigns to neighboring classes to detect unlearned samples"; its exact procedure was
    not available to us (reviews of the paper describe a nearest neighbour found from
    retrained models and an SVM on model outputs). This function implements:

    1. features = probabilities on the ``K`` classes nearest the forgotten one
       (:func:`nearest_classes`, :func:`mia_nn_features`), computed on forget-class samples;
    2. an attack classifier trained to separate features produced by a model that trained on
       the class (``train_member_feats``, label 1; e.g. the original model) from features
       produced by a retrained model that never saw it (``train_nonmember_feats``, label 0);
    3. the ROC-AUC of the attack's score on ``target_feats`` (the model under audit, positive)
       against ``reference_feats`` from a held-out retrained model (negative).

    A target distributed like the retrained models scores about 50; one that still behaves
    like the original model scores near 100.

    Args:
        train_member_feats, train_nonmember_feats: ``(n1, K)`` and ``(n0, K)`` attack
            training features.
        target_feats: ``(n_t, K)`` features of the audited model.
        reference_feats: ``(n_r, K)`` features of a retrained model not used for training the
            attack.
        seed: seeds the classifier (and nothing else).
        classifier: ``"logistic"`` (standardised logistic regression), ``"svm"`` (RBF SVM,
            C = 1) or ``"mlp"`` (one hidden layer of 32 units).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    xs = [
        _matrix(f, name)
        for f, name in (
            (train_member_feats, "train_member_feats"),
            (train_nonmember_feats, "train_nonmember_feats"),
            (target_feats, "target_feats"),
            (reference_feats, "reference_feats"),
        )
    ]
    widths = {x.shape[1] for x in xs}
    if len(widths) != 1:
        raise ValueError(f"all feature matrices must have the same width, got {sorted(widths)}")
    if classifier == "logistic":
        head = LogisticRegression(max_iter=1000, random_state=seed)
    elif classifier == "svm":
        head = SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    elif classifier == "mlp":
        head = MLPClassifier(hidden_layer_sizes=(32,), max_iter=2000, random_state=seed)
    else:
        raise ValueError(f"classifier must be 'logistic', 'svm' or 'mlp', got {classifier!r}")
    member, nonmember, target, reference = xs
    x = np.concatenate([member, nonmember])
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    attack = make_pipeline(StandardScaler(), head).fit(x, y)
    if classifier == "mlp":
        score = lambda f: attack.predict_proba(f)[:, 1]  # noqa: E731
    else:
        score = attack.decision_function
    return roc_auc(score(target), score(reference))


# ---------------------------------------------------------------------------------------------
# NeurIPS 2023 unlearning challenge


def _epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """Per decision rule: inf where both error rates are 0, NaN where exactly one is (the rule
    is discarded as a sign of too few samples), else the (epsilon, delta) lower bound
    ``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)`` clipped at 0."""
    out = np.full(fpr.shape, np.nan)
    both = (fpr == 0) & (fnr == 0)
    usable = (fpr > 0) & (fnr > 0)
    out[both] = np.inf
    f, g = fpr[usable], fnr[usable]
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(1.0 - delta - f) - np.log(g)
        e2 = np.log(1.0 - delta - g) - np.log(f)
    out[usable] = np.clip(np.fmax(e1, e2), 0.0, None)  # NaN only where both logs are undefined
    return out


def _single_threshold_rates(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rule "positive iff s >= t", with t at every observed value (every achievable rule)."""
    t = np.unique(np.concatenate([pos, neg]))
    ps, ns = np.sort(pos), np.sort(neg)
    tpr = (len(ps) - np.searchsorted(ps, t, side="left")) / len(ps)
    fpr = (len(ns) - np.searchsorted(ns, t, side="left")) / len(ns)
    return fpr, 1.0 - tpr


def _interval_rates(
    pos: np.ndarray, neg: np.ndarray, buffer: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rule "the peakier group iff l <= s <= r" for intervals of width ``w +- buffer``.

    ``w`` is the peakier (narrower) group's range. Rates change only when the set of values
    inside ``[l, r]`` changes, so every achievable rule is a run ``v[i..j]`` of the sorted
    distinct values that some interval of allowed width holds alone:
    ``v[j] - v[i] <= w + buffer`` and ``v[j+1] - v[i-1] > w - buffer``.
    """
    if np.ptp(pos) > np.ptp(neg):  # make ``pos`` the peakier (narrower) group
        pos, neg = neg, pos
    w = float(np.ptp(pos))
    v = np.unique(np.concatenate([pos, neg]))
    ps, ns = np.sort(pos), np.sort(neg)
    le_p, lt_p = np.searchsorted(ps, v, side="right"), np.searchsorted(ps, v, side="left")
    le_n, lt_n = np.searchsorted(ns, v, side="right"), np.searchsorted(ns, v, side="left")
    i, j = np.triu_indices(len(v))  # run v[i..j]
    padded = np.concatenate([[-np.inf], v, [np.inf]])
    inner = v[j] - v[i]
    outer = padded[j + 2] - padded[i]  # v[j+1] - v[i-1]
    keep = (inner <= w + buffer) & (outer > w - buffer)
    i, j = i[keep], j[keep]
    tpr = (le_p[j] - lt_p[i]) / len(ps)
    fpr = (le_n[j] - lt_n[i]) / len(ns)
    return fpr, 1.0 - tpr


def _example_epsilon(
    u: np.ndarray,
    r: np.ndarray,
    delta: float,
    cap: float,
    rules: tuple[str, ...],
    buffer: float,
    i: int,
) -> float:
    # Per example, the "positive" group is the one with the larger median.
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    spread_p, spread_n = float(np.ptp(pos)), float(np.ptp(neg))
    largest, smallest = max(spread_p, spread_n), min(spread_p, spread_n)
    if largest == 0.0:  # both groups constant
        return 0.0 if pos[0] == neg[0] else cap
    if smallest / largest < 0.01:  # one group is a spike: scored as the worst case
        return cap
    eps = []
    if "single" in rules:
        eps.append(_epsilon_from_rates(*_single_threshold_rates(pos, neg), delta))
    if "interval" in rules:
        eps.append(_epsilon_from_rates(*_interval_rates(pos, neg, buffer), delta))
    e = np.concatenate(eps)
    e = e[~np.isnan(e)]
    if e.size == 0:
        raise ValueError(
            f"example {i}: every decision rule has exactly one zero error rate, so no "
            "epsilon can be estimated (too few models?)"
        )
    return float(min(np.max(e), cap))


def per_example_epsilon(
    unlearned_stats,
    retrained_stats,
    delta: float = CHALLENGE_DELTA,
    cap: float = CHALLENGE_EPSILON_CAP,
    rules: Sequence[str] = ("single", "interval"),
    interval_buffer: float = 2.0,
) -> np.ndarray:
    """Per forget example, an empirical epsilon separating unlearned from retrained models.

    Follows the NeurIPS 2023 unlearning challenge (Triantafillou et al. 2024, "Are we making
    progress in unlearning?", arXiv 2406.09073) as released by its organisers
    (``google-deepmind/unlearning_evaluation``, ``metric.py``):

    * the statistic is the logit-scaled confidence (:func:`logit_confidence`) of each forget
      example under each of ``N`` unlearned and ``N`` retrained models;
    * per example, the group with the larger median is "positive"; if the smaller of the two
      groups' ranges is below 1% of the larger (one group is a spike) the example gets ``cap``;
    * decision rules: one threshold ("positive iff s >= t"), and an interval ("the peakier
      group iff l <= s <= r") whose width is within ``interval_buffer`` of the peakier
      group's range;
    * per rule, with FPR / FNR its error rates: FPR = FNR = 0 gives infinity; exactly one of
      them 0 discards the rule; otherwise ``epsilon = max(log(1 - delta - FPR) - log(FNR),
      log(1 - delta - FNR) - log(FPR))`` clipped below at 0;
    * the example's epsilon is the largest over rules, clipped to ``[0, cap]``.

    Defaults are the released metric's: ``delta = 1e-5``, ``cap = 50``, interval buffer 2 (in
    the statistic's units, there logit-scaled confidences).

    Difference from the released code: it scans a grid of 100 thresholds per unit (and
    interval end points on such grids, at positions near the peakier group); here every
    achievable rule of each family is enumerated exactly (thresholds at observed values,
    intervals at any position). The estimate can only be equal or slightly larger.

    With finitely many models the estimate is not 0 even when both groups come from the same
    distribution, because the largest of many noisy ratios is kept (for 16 to 256 models per
    side drawn from one normal distribution the median is about log 5 = 1.6, a forget quality
    near 0.17); exactly equal groups give 0.

    Args:
        unlearned_stats: ``(n, N_u)`` statistic per forget example (rows) and unlearned model.
        retrained_stats: ``(n, N_r)`` the same for retrained models; ``N_u, N_r >= 2``.
        delta: the delta of the (epsilon, delta) bound, in ``[0, 1)``.
        cap: the largest epsilon reported (> 0).
        rules: any of ``"single"``, ``"interval"``.
        interval_buffer: allowed deviation (>= 0) of an interval's width from the peakier
            group's range.

    Returns:
        ``(n,)`` epsilons in ``[0, cap]``.
    """
    u = _matrix(unlearned_stats, "unlearned_stats")
    r = _matrix(retrained_stats, "retrained_stats", rows=u.shape[0])
    if u.shape[1] < 2 or r.shape[1] < 2:
        raise ValueError("each side needs at least 2 models per example")
    if not (math.isfinite(delta) and 0.0 <= delta < 1.0):
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be a positive number, got {cap}")
    if not (math.isfinite(interval_buffer) and interval_buffer >= 0):
        raise ValueError(f"interval_buffer must be a non-negative number, got {interval_buffer}")
    rules = tuple(rules)
    unknown = set(rules) - {"single", "interval"}
    if not rules or unknown:
        raise ValueError(f"rules must be a non-empty subset of ('single', 'interval'), got {rules}")
    return np.array(
        [_example_epsilon(u[i], r[i], delta, cap, rules, interval_buffer, i) for i in range(len(u))]
    )


def forget_quality(epsilons, num_models: int | None = None, bucket_size: float = 0.5) -> float:
    """The challenge's forgetting quality: mean over forget examples of ``H(epsilon)``.

    Epsilons fall into buckets ``[0, b), [b, 2b), ...`` (``b = 0.5``) worth ``1, 1/2, 1/4,
    ...`` points, i.e. ``H = 2 / 2^k`` for the k-th bucket (Triantafillou et al. 2024). In
    the released metric the buckets stop at ``ceil(ln(N - 1))``, the largest epsilon ``N``
    models per side can resolve; an epsilon beyond the last bucket earns 0. Pass
    ``num_models = N`` for that rule; without it the buckets never stop (an epsilon at the
    cap of 50 then earns ``2^-100``, i.e. nothing).

    Returns a number in ``[0, 1]``; 1 = no example distinguishable.
    """
    e = np.asarray(epsilons, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("forget quality of an empty forget set is undefined")
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("epsilons must be non-negative numbers")
    if not (math.isfinite(bucket_size) and bucket_size > 0):
        raise ValueError(f"bucket_size must be positive, got {bucket_size}")
    k = np.floor(e / bucket_size)  # bucket index; inf stays inf
    points = np.power(0.5, np.minimum(k, 2000.0))
    if num_models is not None:
        if isinstance(num_models, bool) or not isinstance(num_models, int | np.integer):
            raise ValueError(f"num_models must be an integer, got {num_models!r}")
        if num_models < 3:
            raise ValueError(f"num_models must be >= 3 for any bucket, got {num_models}")
        max_eps = math.ceil(math.log(num_models - 1))
        n_buckets = int(math.floor(max_eps / bucket_size + 1e-9))
        if n_buckets == 0:
            raise ValueError(f"no bucket of size {bucket_size} fits below epsilon {max_eps}")
        points = np.where(k < n_buckets, points, 0.0)
    return float(np.mean(points))


def challenge_score(
    forget_quality: float,
    ra_unlearned: float,
    ra_retrained: float,
    ta_unlearned: float,
    ta_retrained: float,
) -> float:
    """The challenge's final score: ``F * (RA_u / RA_r) * (TA_u / TA_r)``.

    ``F`` is :func:`forget_quality`; RA / TA are retain / test accuracies averaged over the
    unlearned (``_u``) and the retrained (``_r``) models, in any one unit (fractions or
    percentages). As in the organisers' released ``main.py`` (Triantafillou et al. 2024).
    """
    vals = {
        "forget_quality": forget_quality,
        "ra_unlearned": ra_unlearned,
        "ra_retrained": ra_retrained,
        "ta_unlearned": ta_unlearned,
        "ta_retrained": ta_retrained,
    }
    for name, v in vals.items():
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"{name} must be a non-negative number, got {v}")
    if float(forget_quality) > 1:
        raise ValueError(f"forget_quality must lie in [0, 1], got {forget_quality}")
    if float(ra_retrained) == 0 or float(ta_retrained) == 0:
        raise ValueError("the retrained accuracies must be positive")
    return float(
        forget_quality
        * (float(ra_unlearned) / float(ra_retrained))
        * (float(ta_unlearned) / float(ta_retrained))
    )
