"""Language-model metrics against cases computed by hand."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from unlearn.metrics.llm import (
    SIGMA_FLOOR,
    answer_accuracy,
    answer_probability,
    forget_quality,
    greedy_answer_correct,
    harmonic_mean,
    loss_scores,
    mean_rouge_l_recall,
    mia_auc,
    min_k_plus_plus_scores,
    min_k_scores,
    model_utility,
    normalised_answer_probability,
    perplexity,
    privleak,
    rouge_l_recall,
    token_stats_from_logits,
    truth_ratio,
    truth_ratio_score,
    zlib_scores,
)


def test_rouge_l_recall_hand_case():
    # LCS of "the cat sat on the mat" and "the cat on a mat" is "the cat on mat": 4 of 6.
    assert rouge_l_recall("the cat sat on the mat", "the cat on a mat") == pytest.approx(4 / 6)
    # The Porter stemmer maps running -> run, dogs -> dog.
    assert rouge_l_recall("running dogs", "run dog") == pytest.approx(1.0)
    assert rouge_l_recall("alpha beta", "gamma") == pytest.approx(0.0)
    refs = ["the cat sat on the mat", "alpha beta"]
    preds = ["the cat on a mat", "beta"]
    assert mean_rouge_l_recall(refs, preds) == pytest.approx((4 / 6 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="same length"):
        mean_rouge_l_recall(refs, preds[:1])
    with pytest.raises(ValueError, match="empty"):
        mean_rouge_l_recall([], [])
    with pytest.raises(ValueError, match="must be strings"):
        rouge_l_recall("a", None)


def test_answer_probability_hand_case():
    p = answer_probability([-2.0, 0.0, -3.0], [4, 1, 2])
    np.testing.assert_allclose(p, [math.exp(-0.5), 1.0, math.exp(-1.5)])
    with pytest.raises(ValueError, match="positive"):
        answer_probability([-1.0], [0])
    with pytest.raises(ValueError, match="same length"):
        answer_probability([-1.0, -2.0], [1])
    with pytest.raises(ValueError, match="finite"):
        answer_probability([float("nan")], [1])
    with pytest.raises(ValueError, match="log-probabilities"):
        answer_probability([2.0], [1])  # a loss passed instead of a log-prob


def test_normalised_answer_probability_hand_case():
    # P(true) = e^-1, perturbed e^-2 and e^-1: e^-1 / (2 e^-1 + e^-2)
    p = normalised_answer_probability([-1.0, -700.0], [[-2.0, -1.0], [-700.0, -700.0]])
    e1, e2 = math.exp(-1.0), math.exp(-2.0)
    np.testing.assert_allclose(p, [e1 / (2 * e1 + e2), 1.0 / 3.0])  # stable at tiny probs
    with pytest.raises(ValueError, match="shape"):
        normalised_answer_probability([-1.0], [-1.0])
    with pytest.raises(ValueError, match="shape"):
        normalised_answer_probability([-1.0, -2.0], [[-1.0]])
    with pytest.raises(ValueError, match="finite"):
        normalised_answer_probability([-1.0], [[float("nan")]])
    with pytest.raises(ValueError, match="log-probabilities"):
        normalised_answer_probability([-1.0], [[0.5]])


def test_truth_ratio_and_scores_hand_case():
    para = [-1.0, -2.0]
    pert = [[-2.0, -4.0], [-1.0, -1.0]]
    # mean perturbed log-probs -3 and -1, so R = exp(-3 + 1), exp(-1 + 2).
    r = truth_ratio(para, pert)
    np.testing.assert_allclose(r, [math.exp(-2.0), math.exp(1.0)])
    # retain: mean(max(0, 1 - R)) = (1 - e^-2 + 0) / 2
    assert truth_ratio_score(r, forget=False) == pytest.approx((1 - math.exp(-2.0)) / 2)
    # forget: mean(min(R, 1/R)) = (e^-2 + e^-1) / 2
    assert truth_ratio_score(r, forget=True) == pytest.approx((math.exp(-2.0) + math.exp(-1.0)) / 2)
    assert truth_ratio_score([1.0, 1.0], forget=True) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"shape \(n, k\)"):
        truth_ratio(para, [[-1.0], [-1.0], [-1.0]])
    with pytest.raises(ValueError, match="shape"):
        truth_ratio(para, [-1.0, -2.0])
    with pytest.raises(ValueError, match="finite"):
        truth_ratio(para, [[-1.0], [float("-inf")]])
    with pytest.raises(ValueError, match="positive"):
        truth_ratio_score([0.5, 0.0], forget=True)
    with pytest.raises(ValueError, match="empty"):
        truth_ratio_score([], forget=False)


def test_forget_quality_hand_case():
    a = np.array([0.2, 0.5, 0.9, 1.3])
    assert forget_quality(a, a.copy()) == pytest.approx(1.0)
    # Fully separated samples of sizes 3 and 3: exact two-sided p = 2 / C(6, 3) = 0.1.
    assert forget_quality([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]) == pytest.approx(0.1)
    far = forget_quality(np.linspace(0.01, 0.2, 20), np.linspace(5.0, 9.0, 20))
    assert far == pytest.approx(2 / math.comb(40, 20))
    assert far < 1e-6
    with pytest.raises(ValueError, match="empty"):
        forget_quality([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        forget_quality([1.0, float("inf")], [1.0])


def test_harmonic_mean_and_model_utility():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.25]) == pytest.approx(0.25)
    assert harmonic_mean([0.9, 0.0, 0.4]) == 0.0
    assert model_utility({"retain_prob": 1.0, "retain_rouge": 0.5}) == pytest.approx(2 / 3)
    assert model_utility({"a": 0.5, "b": 0.5, "c": 0.0}) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        harmonic_mean([0.5, -0.1])
    with pytest.raises(ValueError, match="finite"):
        harmonic_mean([0.5, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        harmonic_mean([])
    with pytest.raises(ValueError, match="'world_rouge'"):
        model_utility({"retain_prob": 0.5, "world_rouge": -1.0})
    with pytest.raises(ValueError, match="at least one"):
        model_utility({})


def test_loss_and_perplexity_hand_case():
    seqs = [np.array([-1.0, -2.0]), np.array([-3.0])]
    np.testing.assert_allclose(loss_scores(seqs), [-1.5, -3.0])
    # Pooled over three tokens: mean NLL (1 + 2 + 3) / 3 = 2 (per-sequence averaging gives 2.25).
    assert perplexity(seqs) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="no sequences"):
        loss_scores([])
    with pytest.raises(ValueError, match="empty"):
        perplexity([np.array([-1.0]), np.array([])])
    with pytest.raises(ValueError, match="1-D array of one sequence"):
        loss_scores(np.array([-1.0, -2.0]))  # one sequence not wrapped in a list
    with pytest.raises(ValueError, match="finite"):
        perplexity([np.array([-1.0, float("-inf")])])


def test_zlib_scores_hand_case():
    texts = ["hello hello hello hello", "xq"]
    z0 = len(zlib.compress(texts[0].encode("utf-8")))
    z1 = len(zlib.compress(texts[1].encode("utf-8")))
    s = zlib_scores([np.array([-1.0, -2.0, -3.0]), np.array([-0.5])], texts)
    np.testing.assert_allclose(s, [-2.0 / z0, -0.5 / z1])  # mean log-prob / zlib bytes
    with pytest.raises(ValueError, match="same length"):
        zlib_scores([np.array([-1.0])], texts)
    with pytest.raises(ValueError, match="string"):
        zlib_scores([np.array([-1.0])], [b"bytes"])


def test_min_k_hand_case():
    x = np.array([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])
    # k = 0.2 of 10 tokens: the two lowest, -5 and -3.
    np.testing.assert_allclose(min_k_scores([x]), [-4.0])
    # 0.05 * 10 floors to 0 tokens: at least one is kept.
    np.testing.assert_allclose(min_k_scores([x], k=0.05), [-5.0])
    np.testing.assert_allclose(min_k_scores([x], k=1.0), [x.mean()])
    np.testing.assert_allclose(min_k_scores([x[:3]], k=0.5), [-5.0])
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
            min_k_scores([x], k=bad)


def test_token_stats_and_min_k_plus_plus_hand_case():
    ln3 = math.log(3.0)
    # Rows 0 and 1: p = (1/4, 3/4, 0); row 2: uniform over three tokens.
    logits = torch.tensor(
        [[0.0, ln3, float("-inf")], [0.0, ln3, float("-inf")], [0.0, 0.0, 0.0]],
        dtype=torch.float16,
    )
    targets = torch.tensor([0, 1, 2])
    lp, mu, sigma = token_stats_from_logits(logits, targets)
    assert lp.dtype == mu.dtype == sigma.dtype == torch.float32
    mu_two = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    # Two-point distribution: sigma = sqrt(p (1 - p)) * |log(3/4) - log(1/4)| = sqrt(3)/4 ln 3.
    sigma_two = math.sqrt(3) / 4 * ln3
    tol = dict(rtol=2e-3, atol=2e-3)  # the logits were rounded to float16
    np.testing.assert_allclose(lp.numpy(), [math.log(0.25), math.log(0.75), -ln3], **tol)
    np.testing.assert_allclose(mu.numpy(), [mu_two, mu_two, -ln3], **tol)
    np.testing.assert_allclose(sigma[:2].numpy(), [sigma_two, sigma_two], **tol)
    # Uniform row: zero spread, floored.
    assert float(sigma[2]) == pytest.approx(SIGMA_FLOOR, rel=0.5)

    # Exact values by hand: z = (-3/4 ln 3) / sigma_two = -sqrt(3); (1/4 ln 3) / sigma_two
    # = 1/sqrt(3); the uniform row gives 0 / floor = 0.
    lp_e = [np.array([math.log(0.25), math.log(0.75), -ln3])]
    mu_e = [np.array([mu_two, mu_two, -ln3])]
    sig_e = [np.array([sigma_two, sigma_two, SIGMA_FLOOR])]
    z = [-math.sqrt(3), 1 / math.sqrt(3), 0.0]
    np.testing.assert_allclose(min_k_plus_plus_scores(lp_e, mu_e, sig_e, k=0.34), [z[0]])
    np.testing.assert_allclose(
        min_k_plus_plus_scores(lp_e, mu_e, sig_e, k=0.67), [(z[0] + z[2]) / 2], atol=1e-12
    )
    np.testing.assert_allclose(min_k_plus_plus_scores(lp_e, mu_e, sig_e, k=1.0), [np.mean(z)])
    # The torch helper's output feeds the scorer directly (rows 0 and 1 only: row 2's z is
    # a rounding error divided by the floor).
    got = min_k_plus_plus_scores([lp[:2].numpy()], [mu[:2].numpy()], [sigma[:2].numpy()], k=0.5)
    np.testing.assert_allclose(got, [-math.sqrt(3)], rtol=1e-2)

    with pytest.raises(ValueError, match="same length"):
        min_k_plus_plus_scores(lp_e, [mu_e[0][:2]], sig_e)
    with pytest.raises(ValueError, match="same number of sequences"):
        min_k_plus_plus_scores(lp_e, mu_e, [])
    with pytest.raises(ValueError, match="positive"):
        min_k_plus_plus_scores(lp_e, mu_e, [np.array([1.0, 0.0, 1.0])])
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        token_stats_from_logits(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        token_stats_from_logits(logits, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="NaN"):
        token_stats_from_logits(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="integer token ids"):
        token_stats_from_logits(logits, torch.tensor([0.0, 1.0, 2.0]))


def test_mia_auc_and_privleak_hand_case():
    # Pairs (member, non-member): 0.9 beats 0.5 and 0.1, 0.4 beats only 0.1 -> 3 of 4.
    assert mia_auc([0.9, 0.4], [0.5, 0.1]) == pytest.approx(75.0)
    assert mia_auc([0.9, 0.8], [0.5, 0.1]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="empty"):
        mia_auc([], [0.1])
    # MUSE's definition, by hand: its AUC labels the forget set 0 and the holdout set 1 on a
    # membership score, and PrivLeak = (AUC_unlearned - AUC_retrain) / AUC_retrain * 100.
    # Unlearned model: forget scores [0.9, 0.4], holdout [0.5, 0.1]: conventional AUC 75, so
    # MUSE's AUC is 25 (of the 4 (holdout, forget) pairs, only 0.5 > 0.4 ranks the holdout
    # item higher). Retrained model: forget [0.3, 0.6], holdout [0.5, 0.4]: conventional 50,
    # MUSE's 50. MUSE: (25 - 50) / 50 * 100 = -50 (under-unlearned is negative).
    from sklearn.metrics import roc_auc_score

    def muse_auc(forget, holdout):
        return 100 * roc_auc_score([0] * len(forget) + [1] * len(holdout), forget + holdout)

    assert muse_auc([0.9, 0.4], [0.5, 0.1]) == pytest.approx(25.0)
    assert muse_auc([0.3, 0.6], [0.5, 0.4]) == pytest.approx(50.0)
    a_u = mia_auc([0.9, 0.4], [0.5, 0.1])
    a_r = mia_auc([0.3, 0.6], [0.5, 0.4])
    assert (a_u, a_r) == (pytest.approx(75.0), pytest.approx(50.0))
    assert privleak(a_u, a_r) == pytest.approx(-50.0)
    # The case: attack AUCs 80 (unlearned) and 50 (retrained) -> MUSE reports -60.
    assert privleak(80.0, 50.0) == pytest.approx(-60.0)
    assert privleak(40.0, 50.0) == pytest.approx(20.0)  # over-unlearned: positive
    # The denominator is MUSE's (100 - a_retrain), not a_retrain: 70 vs 60 -> -10/40.
    assert privleak(70.0, 60.0) == pytest.approx(-25.0)
    assert privleak(100.0, 31.25) == pytest.approx(-100.0)  # doing nothing, fully memorised
    assert privleak(50.0, 50.0) == 0.0
    with pytest.raises(ValueError, match="auc_retrain"):
        privleak(50.0, 100.0)
    with pytest.raises(ValueError, match="percentage"):
        privleak(150.0, 50.0)
    with pytest.raises(ValueError, match="finite"):
        privleak(float("nan"), 50.0)


def test_answer_accuracy_hand_case():
    assert greedy_answer_correct("The capital is  PARIS,\n  France.", "paris, france")
    assert greedy_answer_correct("she lives in new york city", "New   York")
    assert not greedy_answer_correct("The capital is Paris.", "Lyon")
    preds = ["It was 1999.", "Born in Oslo", "no idea", "Blue"]
    keys = ["1999", "oslo", "Bergen", "red"]
    assert answer_accuracy(preds, keys) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="key is empty"):
        greedy_answer_correct("anything", "  ")
    with pytest.raises(ValueError, match="same length"):
        answer_accuracy(preds, keys[:2])
