"""Classifier unlearning metrics (percentages unless stated otherwise)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._checks import finite_vector

__all__ = [
    "accuracy",
    "mia_efficacy",
    "loss_threshold_auc",
    "js_divergence",
    "avg_gap",
    "AVG_GAP_KEYS",
]

#: Metrics averaged by Avg.Gap (Jia et al. 2023; Fan et al. 2024): UA, RA, TA, MIA-efficacy.
AVG_GAP_KEYS = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")


def _probs(p, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be a (samples, classes) array, got shape {p.shape}")
    if p.size and (np.any(p < -1e-9) or not np.allclose(p.sum(1), 1.0, atol=1e-4)):
        raise ValueError(f"{name} rows must be probability distributions")
    return np.clip(p, 0.0, 1.0)


def _labels(y, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{name} must hold one label per sample ({n}), got shape {y.shape}")
    return y.astype(np.int64)


def accuracy(probs, labels) -> float:
    """Share of samples whose most probable class is the label, in percent."""
    p = _probs(probs, "probs")
    y = _labels(labels, len(p), "labels")
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return 100.0 * float(np.mean(p.argmax(1) == y))


def _confidence(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return p[np.arange(len(y)), y]


def mia_efficacy(
    retain_probs,
    retain_labels,
    test_probs,
    test_labels,
    forget_probs,
    forget_labels,
    seed: int = 0,
) -> float:
    """SalUn's MIA-efficacy: share (percent) of forget samples an attack calls non-members.

    The attack (Jia et al. 2023; Fan et al. 2024) is an RBF support-vector
    classifier (C = 3, gamma = "auto") on the model's confidence in the true
    label, trained on retain samples (members) against test samples
    (non-members); retain samples are subsampled to the test set's size with
    ``seed`` so the two classes are balanced.
    """
    from sklearn.svm import SVC

    pr, pt, pf = (
        _probs(retain_probs, "retain_probs"),
        _probs(test_probs, "test_probs"),
        _probs(forget_probs, "forget_probs"),
    )
    yr = _labels(retain_labels, len(pr), "retain_labels")
    yt = _labels(test_labels, len(pt), "test_labels")
    yf = _labels(forget_labels, len(pf), "forget_labels")
    if min(len(pr), len(pt), len(pf)) == 0:
        raise ValueError("MIA-efficacy needs non-empty retain, test and forget sets")
    rng = np.random.default_rng(seed)
    n = min(len(pr), len(pt))
    ri = rng.choice(len(pr), size=n, replace=False)
    ti = rng.choice(len(pt), size=n, replace=False)
    x = np.concatenate([_confidence(pr[ri], yr[ri]), _confidence(pt[ti], yt[ti])])[:, None]
    target = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, target)
    pred = clf.predict(_confidence(pf, yf)[:, None])
    return 100.0 * float(np.mean(pred == 0))


def loss_threshold_auc(member_losses, nonmember_losses) -> float:
    """ROC-AUC (percent) of the loss-threshold attack: lower loss means "member".

    50 means forget samples (``member_losses``) look exactly like unseen ones.
    """
    from ..attacks.mia import roc_auc

    m = finite_vector(np.asarray(member_losses, dtype=np.float64).ravel(), "member_losses")
    u = finite_vector(np.asarray(nonmember_losses, dtype=np.float64).ravel(), "nonmember_losses")
    return roc_auc(-m, -u)


def js_divergence(p, q) -> float:
    """Mean Jensen-Shannon divergence (bits, in [0, 1]) between rows of ``p`` and ``q``."""
    p, q = _probs(p, "p"), _probs(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    if len(p) == 0:
        raise ValueError("JS divergence of empty sets is undefined")
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(a > 0, a * (np.log2(a) - np.log2(np.where(b > 0, b, 1.0))), 0.0)
        return t.sum(1)

    return float(np.mean(0.5 * kl(p, m) + 0.5 * kl(q, m)))


def avg_gap(
    metrics: Mapping[str, float],
    oracle: Mapping[str, float],
    keys: Sequence[str] = AVG_GAP_KEYS,
) -> float:
    """Mean absolute difference to the oracle over ``keys`` (points)."""
    missing = [k for k in keys if k not in metrics or k not in oracle]
    if missing:
        raise KeyError(f"avg_gap needs {missing} in both the metrics and the oracle's")
    return float(np.mean([abs(float(metrics[k]) - float(oracle[k])) for k in keys]))
