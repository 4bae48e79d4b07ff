"""Every metric against a case computed by hand."""

import math

import numpy as np
import pytest

from unlearn.metrics import accuracy, avg_gap, js_divergence, loss_threshold_auc, mia_efficacy


def test_accuracy_hand_case():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert accuracy(p, [0, 1, 1, 1]) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="one label per sample"):
        accuracy(p, [0, 1])
    with pytest.raises(ValueError, match="probability distributions"):
        accuracy(np.array([[0.5, 0.7]]), [0])


def test_loss_auc_hand_case():
    # member losses 0.1, 0.2 against non-member 0.3, 0.05: each member beats 0.3, loses to
    # 0.05, so 2 of the 4 pairs are ordered correctly -> AUC 50.
    assert loss_threshold_auc([0.1, 0.2], [0.3, 0.05]) == pytest.approx(50.0)
    assert loss_threshold_auc([0.1, 0.2], [0.3, 0.4]) == pytest.approx(100.0)
    assert loss_threshold_auc([0.5], [0.3, 0.05]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="finite"):
        loss_threshold_auc([float("nan")], [0.1])


def test_js_divergence_hand_case():
    assert js_divergence([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(1.0)
    assert js_divergence([[0.3, 0.7]], [[0.3, 0.7]]) == pytest.approx(0.0)
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4):
    # KL(p||m) = log2(4/3); KL(q||m) = 1/2 log2(2/3) + 1/2 log2(2)
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_divergence([[1.0, 0.0]], [[0.5, 0.5]]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        js_divergence([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])


def _onehot_conf(conf, n_classes=2):
    # probability `conf` on class 0 (the label), the rest on class 1
    conf = np.asarray(conf, dtype=float)
    return np.stack([conf, 1 - conf], 1), np.zeros(len(conf), dtype=int)


def test_mia_efficacy_known_answers():
    retain_p, retain_y = _onehot_conf(np.full(50, 0.99))  # members: confident
    test_p, test_y = _onehot_conf(np.full(50, 0.30))  # non-members: unsure
    seen_p, seen_y = _onehot_conf(np.full(20, 0.99))
    unseen_p, unseen_y = _onehot_conf(np.full(20, 0.30))
    assert mia_efficacy(retain_p, retain_y, test_p, test_y, seen_p, seen_y) == 0.0
    assert mia_efficacy(retain_p, retain_y, test_p, test_y, unseen_p, unseen_y) == 100.0
    half_p = np.concatenate([seen_p[:10], unseen_p[:10]])
    assert mia_efficacy(retain_p, retain_y, test_p, test_y, half_p, np.zeros(20, int)) == 50.0


def test_avg_gap_hand_case():
    m = {"unlearn_acc": 10, "retain_acc": 98, "test_acc": 90, "mia_efficacy": 20}
    o = {"unlearn_acc": 8, "retain_acc": 100, "test_acc": 91, "mia_efficacy": 15}
    assert avg_gap(m, o) == pytest.approx((2 + 2 + 1 + 5) / 4)
    with pytest.raises(KeyError, match="mia_efficacy"):
        avg_gap({"unlearn_acc": 1, "retain_acc": 1, "test_acc": 1}, o)
