"""Membership-inference attacks and the challenge score, each on a case with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearn.attacks import mia

# --------------------------------------------------------------------------- logit confidence


def test_logit_confidence_matches_hand_computation():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    phi = mia.logit_confidence(logits, [0, 1])
    # row 0, label 0: 2 - log(e^1 + e^0)
    assert phi[0] == pytest.approx(2.0 - math.log(math.e + 1.0), abs=1e-12)
    # row 1, label 1: p = 1 / (2 + e^3); phi = log(p / (1 - p))
    p = 1.0 / (2.0 + math.exp(3.0))
    assert phi[1] == pytest.approx(math.log(p / (1.0 - p)), abs=1e-12)


def test_logit_confidence_is_stable_for_huge_logits():
    phi = mia.logit_confidence(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0]))
    np.testing.assert_allclose(phi, [1000.0, -1000.0])


@pytest.mark.parametrize(
    "logits, labels",
    [
        (np.zeros((2, 3)), [0, 3]),  # label out of range
        (np.zeros((2, 3)), [0]),  # one label missing
        (np.zeros((2, 1)), [0, 0]),  # one class
        (np.array([[np.nan, 0.0]]), [0]),
    ],
)
def test_logit_confidence_rejects_bad_input(logits, labels):
    with pytest.raises(ValueError):
        mia.logit_confidence(logits, labels)


# --------------------------------------------------------------------------- LiRA


def test_lira_log_ratio_matches_gaussian_densities():
    # in: mean 5, population std 1; out: mean 0, std 1; target 2
    s = mia.lira_scores([2.0], [[4.0, 6.0]], [[-1.0, 1.0]], fix_variance=False)
    assert s[0] == pytest.approx(-0.5 * 3.0**2 + 0.5 * 2.0**2, abs=1e-12)  # -2.5


def test_lira_fixed_variance_pools_within_example_spread():
    # in rows: [4, 6] (dev^2 1, 1) and [3, 7] (4, 4): pooled variance 10 / 4 = 2.5
    # out rows: [-1, 1] and [9, 11]: pooled variance 1
    t = np.array([2.0, 10.0])
    s = mia.lira_scores(t, [[4.0, 6.0], [3.0, 7.0]], [[-1.0, 1.0], [9.0, 11.0]])

    def logpdf(x, mu, var):
        return -0.5 * math.log(2 * math.pi * var) - (x - mu) ** 2 / (2 * var)

    assert s[0] == pytest.approx(logpdf(2, 5, 2.5) - logpdf(2, 0, 1), abs=1e-12)
    assert s[1] == pytest.approx(logpdf(10, 5, 2.5) - logpdf(10, 10, 1), abs=1e-12)


def test_lira_ignores_nan_and_accepts_ragged_rows():
    dense = mia.lira_scores(
        [1.0, 2.0], [[4.0, 6.0, np.nan], [3.0, 4.0, 8.0]], [[0.0, 1.0, 2.0]] * 2
    )
    ragged = mia.lira_scores([1.0, 2.0], [[4.0, 6.0], [3.0, 4.0, 8.0]], [[0.0, 1.0, 2.0]] * 2)
    np.testing.assert_allclose(dense, ragged)
    per_row = mia.lira_scores([1.0], [[4.0, 6.0]], [[0.0, 1.0, 2.0]], fix_variance=False)
    both = mia.lira_scores(
        [1.0, 2.0], [[4.0, 6.0, np.nan], [3.0, 4.0, 8.0]], [[0.0, 1.0, 2.0]] * 2, fix_variance=False
    )
    assert both[0] == pytest.approx(per_row[0])


def test_lira_refuses_examples_with_fewer_than_two_references():
    with pytest.raises(ValueError, match="example 1"):
        mia.lira_scores([0.0, 0.0], [[1.0, 2.0], [1.0, np.nan]], [[0.0, 1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="infinite"):
        mia.lira_scores([0.0], [[1.0, np.inf]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="zero spread"):
        mia.lira_scores([0.0], [[1.0, 1.0]], [[0.0, 1.0]], fix_variance=False)


def _lira_population(rng, n, k):
    """Per-example difficulty shift s_i; in ~ N(s_i + 5, 1), out ~ N(s_i, 1)."""
    shift = rng.normal(0.0, 3.0, size=n)
    ins = shift[:, None] + 5.0 + rng.normal(size=(n, k))
    outs = shift[:, None] + rng.normal(size=(n, k))
    return shift, ins, outs


@pytest.mark.parametrize("fix_variance", [True, False])
def test_lira_separates_members_drawn_from_the_in_distribution(fix_variance):
    rng = np.random.default_rng(0)
    n = 200
    shift, ins, outs = _lira_population(rng, 2 * n, 16)
    target = shift + rng.normal(size=2 * n)
    target[:n] += 5.0  # the first n are members
    s = mia.lira_scores(target, ins, outs, fix_variance=fix_variance)
    assert mia.roc_auc(s[:n], s[n:]) > 99.0
    off = mia.lira_offline_scores(target, outs, fix_variance=fix_variance)
    assert mia.roc_auc(off[:n], off[n:]) > 99.0
    # both groups drawn from the out distribution: nothing to find
    same = shift + rng.normal(size=2 * n)
    s = mia.lira_scores(same, ins, outs, fix_variance=fix_variance)
    assert 42.0 < mia.roc_auc(s[:n], s[n:]) < 58.0


def test_lira_offline_is_minus_log_one_sided_p_value():
    # out: mean 0, std 1; target 1: -log P(Z > 1)
    s = mia.lira_offline_scores([1.0, 40.0], [[-1.0, 1.0], [-1.0, 1.0]])
    assert s[0] == pytest.approx(-math.log(0.5 * math.erfc(1.0 / math.sqrt(2.0))), rel=1e-10)
    assert np.isfinite(s[1]) and s[1] > 700  # far in the tail, still finite and ordered


def test_ulira_is_lira_with_unlearned_as_in():
    rng = np.random.default_rng(1)
    t, u, r = rng.normal(size=5), rng.normal(2, 1, (5, 4)), rng.normal(0, 1, (5, 4))
    np.testing.assert_array_equal(mia.ulira_scores(t, u, r), mia.lira_scores(t, u, r))


# --------------------------------------------------------------------------- RMIA


def test_rmia_offline_hand_case():
    # Pr(x) = ((1 + 0.3) * 0.5 + 0.7) / 2 = 0.675 for x and every z
    # LR(x) = 0.8 / 0.675; LR(z) = (0.4, 0.6, 0.9) / 0.675; LR(x) / LR(z) = 2, 1.33, 0.89
    args = ([0.8], [[0.5, 0.5]], [0.4, 0.6, 0.9], [[0.5, 0.5]] * 3)
    assert mia.rmia_scores(*args)[0] == pytest.approx(2 / 3)
    assert mia.rmia_scores(*args, gamma=1.5)[0] == pytest.approx(1 / 3)
    assert mia.rmia_scores(*args, gamma=2.0)[0] == pytest.approx(1 / 3)  # ">=" counts ties
    assert mia.rmia_scores(*args, gamma=2.5)[0] == pytest.approx(0.0)


def test_rmia_offline_correction_changes_the_ranking_as_the_formula_says():
    # x has the same target probability (0.6) but different reference means (0.2 vs 0.8);
    # z: target 0.5, reference mean 0.5.
    # a = 1 (no correction): LR = 3.0 and 0.75 vs LR(z) = 1 -> scores 1, 0.
    # a = 0 (ignore references): Pr = 0.5 everywhere -> LR(x) = 1.2 >= 1 for both -> 1, 1.
    x, rx, z, rz = [0.6, 0.6], [[0.2, 0.2], [0.8, 0.8]], [0.5], [[0.5, 0.5]]
    np.testing.assert_allclose(mia.rmia_scores(x, rx, z, rz, a=1.0), [1.0, 0.0])
    np.testing.assert_allclose(mia.rmia_scores(x, rx, z, rz, a=0.0), [1.0, 1.0])


def test_rmia_online_uses_in_and_out_means():
    # x: refs IN 0.75, OUT 0.125 and 0.375 -> Pr(x) = (0.75 + 0.25) / 2 = 0.5; LR(x) = 0.25 / 0.5
    # z: Pr(z) = mean of all refs = 0.5; LR(z) = 0.5 and 0.55
    # LR(x) / LR(z) = 1 (counted) and 0.91 -> 1/2. (A plain mean over the three references
    # would give LR(x) = 0.6 and score 1.)
    mask = np.array([[True, False, False]])
    args = ([0.25], [[0.75, 0.125, 0.375]], [0.25, 0.275], [[0.5] * 3, [0.5] * 3])
    assert mia.rmia_scores(*args, ref_in_mask=mask)[0] == 0.5
    # the second reference IN instead: Pr(x) = (0.125 + 0.5625) / 2, LR(x) = 0.73 -> score 1
    assert mia.rmia_scores(*args, ref_in_mask=[[False, True, False]])[0] == 1.0
    with pytest.raises(ValueError, match="IN and an OUT"):
        mia.rmia_scores([0.5], [[0.5, 0.5]], [0.5], [[0.5, 0.5]], ref_in_mask=[[True, True]])


def test_rmia_separates_confident_members_from_medium_references():
    rng = np.random.default_rng(2)
    n, m, k = 200, 300, 8
    target = np.concatenate([rng.uniform(0.8, 0.95, n), rng.uniform(0.2, 0.4, n)])
    refs = rng.uniform(0.4, 0.6, (2 * n, k))
    tz, rz = rng.uniform(0.2, 0.4, m), rng.uniform(0.4, 0.6, (m, k))
    s = mia.rmia_scores(target, refs, tz, rz)
    assert mia.roc_auc(s[:n], s[n:]) > 99.0
    # target, references and population all from one distribution: chance
    same = rng.beta(2, 2, 2 * n)
    s = mia.rmia_scores(same, rng.beta(2, 2, (2 * n, k)), rng.beta(2, 2, m), rng.beta(2, 2, (m, k)))
    assert 42.0 < mia.roc_auc(s[:n], s[n:]) < 58.0


@pytest.mark.parametrize(
    "kwargs",
    [{"gamma": 0.0}, {"a": 1.5}, {"target_px": [1.2]}, {"ref_px": [[0.5]] * 2}],
)
def test_rmia_rejects_bad_input(kwargs):
    args = {"target_px": [0.5], "ref_px": [[0.5, 0.5]], "target_pz": [0.5], "ref_pz": [[0.5]]}
    args.update(kwargs)
    with pytest.raises(ValueError):
        mia.rmia_scores(**args)


# --------------------------------------------------------------------------- AUC and TPR


def test_roc_auc_and_tpr_on_hand_cases():
    assert mia.roc_auc([3, 4], [1, 2]) == 100.0
    assert mia.tpr_at_fpr([3, 4], [1, 2]) == 100.0
    assert mia.roc_auc([1, 2], [3, 4]) == 0.0
    assert mia.tpr_at_fpr([1, 2], [3, 4]) == 0.0
    assert mia.roc_auc([1.0], [1.0]) == 50.0
    # members 0.9, 0.8, 0.3 vs non-members 0.5, 0.1: 5 of 6 pairs ordered
    m, u = [0.9, 0.8, 0.3], [0.5, 0.1]
    assert mia.roc_auc(m, u) == pytest.approx(500 / 6)
    assert mia.tpr_at_fpr(m, u, 0.0) == pytest.approx(200 / 3)  # threshold above 0.5
    assert mia.tpr_at_fpr(m, u, 0.49) == pytest.approx(200 / 3)
    assert mia.tpr_at_fpr(m, u, 0.5) == 100.0  # threshold 0.3 lets 0.5 through: FPR 1/2


def test_auc_rejects_empty_or_nan():
    with pytest.raises(ValueError):
        mia.roc_auc([], [1.0])
    with pytest.raises(ValueError):
        mia.tpr_at_fpr([np.nan], [1.0])
    with pytest.raises(ValueError):
        mia.tpr_at_fpr([1.0], [0.0], fpr=1.5)


# --------------------------------------------------------------------------- MIA-NN

FORGOTTEN, A, B, C = 0, 3, 5, 10


def _dirichlet(rng, n, heavy):
    alpha = np.ones(C)
    for cls, weight in heavy.items():
        alpha[cls] = weight
    return rng.dirichlet(alpha, size=n)


def _original(rng, n):  # still predicts the forgotten class; neighbour A next
    return _dirichlet(rng, n, {FORGOTTEN: 20.0, A: 6.0, B: 3.0})


def _retrained(rng, n):  # never saw the class: mass on neighbour B
    return _dirichlet(rng, n, {FORGOTTEN: 0.2, A: 3.0, B: 20.0})


def test_nearest_classes_hand_case_and_checks():
    p = np.array([[0.7, 0.1, 0.2, 0.0], [0.5, 0.1, 0.3, 0.1]])
    assert mia.nearest_classes(p, 0, k=3) == [2, 1, 3]
    assert mia.nearest_classes(p, 2, k=1) == [0]
    with pytest.raises(ValueError):
        mia.nearest_classes(p, 4)
    with pytest.raises(ValueError):
        mia.nearest_classes(p, 0, k=4)
    with pytest.raises(ValueError):
        mia.nearest_classes(p * 2, 0)


def test_mia_nn_features_keep_neighbour_order():
    p = np.array([[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_array_equal(mia.mia_nn_features(p, [3, 1]), [[0.4, 0.2]])
    with pytest.raises(ValueError):
        mia.mia_nn_features(p, [1, 1])
    with pytest.raises(ValueError):
        mia.mia_nn_features(p, [4])


@pytest.mark.parametrize("classifier", ["logistic", "svm", "mlp"])
def test_mia_nn_scores_original_high_and_retrained_near_chance(classifier):
    rng = np.random.default_rng(3)
    n = 300
    neighbours = mia.nearest_classes(_original(rng, n), FORGOTTEN, k=3)
    assert neighbours[:2] == [A, B]

    def feats(p):
        return mia.mia_nn_features(p, neighbours)

    member, nonmember = feats(_original(rng, n)), feats(_retrained(rng, n))
    held_out_retrained = feats(_retrained(rng, n))
    original_like = mia.mia_nn_auc(
        member, nonmember, feats(_original(rng, n)), held_out_retrained, classifier=classifier
    )
    retrained_like = mia.mia_nn_auc(
        member, nonmember, feats(_retrained(rng, n)), held_out_retrained, classifier=classifier
    )
    assert original_like > 97.0
    assert 42.0 < retrained_like < 58.0


def test_mia_nn_auc_is_seeded_and_checks_widths():
    rng = np.random.default_rng(4)
    f = [rng.random((30, 3)) + shift for shift in (0.5, 0.0, 0.5, 0.0)]
    a = mia.mia_nn_auc(*f, seed=7, classifier="mlp")
    assert a == mia.mia_nn_auc(*f, seed=7, classifier="mlp")
    with pytest.raises(ValueError, match="width"):
        mia.mia_nn_auc(f[0], f[1], f[2][:, :2], f[3])
    with pytest.raises(ValueError, match="classifier"):
        mia.mia_nn_auc(*f, classifier="forest")


# --------------------------------------------------------------------------- challenge score


def test_per_example_epsilon_single_threshold_hand_case():
    # retrained (larger median) [2, 3, 4, 5] vs unlearned [0, 1, 2.5, 3.5]; the best threshold,
    # t = 3, has TPR 3/4, FPR 1/4: epsilon = log((1 - delta - 1/4) / (1/4)) = log(3 - 4 delta).
    # Thresholds with exactly one zero error rate (t <= 2 or t >= 4) are discarded.
    eps = mia.per_example_epsilon([[0.0, 1.0, 2.5, 3.5]], [[2.0, 3.0, 4.0, 5.0]], rules=("single",))
    assert eps[0] == pytest.approx(math.log(3.0 - 4e-5), abs=1e-12)
    eps = mia.per_example_epsilon(
        [[0.0, 1.0, 2.5, 3.5]], [[2.0, 3.0, 4.0, 5.0]], delta=0.0, rules=("single",)
    )
    assert eps[0] == pytest.approx(math.log(3.0), abs=1e-12)


def test_identical_models_give_epsilon_zero_and_full_quality():
    rng = np.random.default_rng(5)
    stats = rng.normal(size=(20, 32))
    eps = mia.per_example_epsilon(stats, stats.copy())
    np.testing.assert_array_equal(eps, 0.0)
    assert mia.forget_quality(eps, num_models=32) == 1.0


def test_separated_models_give_the_cap_and_zero_quality():
    rng = np.random.default_rng(6)
    u, r = rng.normal(0, 1, (20, 32)), rng.normal(10, 1, (20, 32))
    eps = mia.per_example_epsilon(u, r)
    np.testing.assert_array_equal(eps, mia.CHALLENGE_EPSILON_CAP)
    assert mia.forget_quality(eps, num_models=32) == 0.0
    # a spike (one model repeated) is scored as the worst case
    spike = np.repeat(u[:, :1], 32, axis=1)
    np.testing.assert_array_equal(mia.per_example_epsilon(spike, r), 50.0)


def test_same_distribution_scores_far_better_than_separated():
    rng = np.random.default_rng(7)
    n_models = 64
    u, r = rng.normal(0, 1, (40, n_models)), rng.normal(0, 1, (40, n_models))
    eps = mia.per_example_epsilon(u, r)
    assert np.all(eps < 3.5)
    assert np.median(eps) < 2.0
    shifted = mia.per_example_epsilon(rng.normal(1.5, 1, (40, n_models)), r)
    assert np.median(shifted) > np.median(eps) + 0.5
    fq_same = mia.forget_quality(eps, num_models=n_models)
    assert fq_same > 2 * mia.forget_quality(shifted, num_models=n_models)


def test_interval_rule_catches_a_narrow_unlearned_distribution():
    # same centre, unlearned 4x narrower: one threshold sees little, an interval sees more
    rng = np.random.default_rng(8)
    u, r = rng.normal(0, 0.25, (20, 64)), rng.normal(0, 1, (20, 64))
    single = mia.per_example_epsilon(u, r, rules=("single",))
    both = mia.per_example_epsilon(u, r)
    assert np.all(both >= single)
    assert np.median(both) > np.median(single) + 0.3


def test_per_example_epsilon_rejects_bad_input():
    with pytest.raises(ValueError):
        mia.per_example_epsilon(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        mia.per_example_epsilon(np.zeros((3, 1)), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        mia.per_example_epsilon(np.zeros((3, 4)), np.zeros((3, 4)), rules=("double",))
    with pytest.raises(ValueError):
        mia.per_example_epsilon([[np.nan, 1.0]], [[0.0, 1.0]])


def test_forget_quality_buckets_by_hand():
    # 512 models: buckets of 0.5 up to ceil(ln 511) = 7, i.e. 14 buckets worth 1, 1/2, ...
    eps = [0.0, 0.49, 0.5, 1.2, 6.9, 7.0, 50.0]
    expected = (1 + 1 + 0.5 + 0.25 + 2.0**-13 + 0 + 0) / 7
    assert mia.forget_quality(eps, num_models=512) == pytest.approx(expected)
    # without a model count the buckets do not stop
    assert mia.forget_quality([7.0], None) == pytest.approx(2.0**-14)
    with pytest.raises(ValueError):
        mia.forget_quality([-0.1])
    with pytest.raises(ValueError):
        mia.forget_quality([0.1], num_models=2)


def test_challenge_score_arithmetic():
    assert mia.challenge_score(0.5, 0.9, 1.0, 0.8, 0.85) == pytest.approx(0.5 * 0.9 * 0.8 / 0.85)
    assert mia.challenge_score(1.0, 90.0, 90.0, 80.0, 80.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mia.challenge_score(0.5, 0.9, 0.0, 0.8, 0.85)
    with pytest.raises(ValueError):
        mia.challenge_score(1.5, 0.9, 1.0, 0.8, 0.85)
