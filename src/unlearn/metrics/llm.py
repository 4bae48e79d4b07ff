"""Language-model unlearning metrics: TOFU and MUSE scores, text membership inference.

Everything here is a pure function: arrays or lists in, numbers out. Bad input (empty
arrays, mismatched lengths, non-finite values, log-probabilities above zero) raises
``ValueError``; nothing is caught and hidden.

Sources of the definitions:

* TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"): ROUGE-L
  recall, length-normalised answer probability, truth ratio, forget quality, model utility.
* MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
  Models"): PrivLeak.
* Carlini et al. 2021 ("Extracting Training Data from Large Language Models"): zlib ratio.
* Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language Models").
* Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training
  Data from Large Language Models").

Membership scores follow one convention: higher score means "more likely a member".
Token log-probabilities are natural-log probabilities of the observed tokens, one 1-D
array per sequence.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._checks import finite_vector

if TYPE_CHECKING:
    import torch

__all__ = [
    "rouge_l_recall",
    "mean_rouge_l_recall",
    "answer_probability",
    "normalised_answer_probability",
    "truth_ratio",
    "truth_ratio_score",
    "forget_quality",
    "harmonic_mean",
    "model_utility",
    "loss_scores",
    "zlib_scores",
    "min_k_scores",
    "min_k_plus_plus_scores",
    "token_stats_from_logits",
    "mia_auc",
    "privleak",
    "perplexity",
    "greedy_answer_correct",
    "answer_accuracy",
    "LOGPROB_TOL",
    "SIGMA_FLOOR",
]

#: Slack allowed above zero for log-probabilities (rounding in low-precision forward passes).
LOGPROB_TOL = 1e-4

#: Smallest standard deviation ``token_stats_from_logits`` returns (avoids division by zero).
SIGMA_FLOOR = 1e-6


# --------------------------------------------------------------------------- validation


def _check_logprobs(a: np.ndarray, name: str) -> np.ndarray:
    if np.any(a > LOGPROB_TOL):
        raise ValueError(
            f"{name} must be log-probabilities (<= 0), got a maximum of {float(a.max()):.6g}; "
            "did you pass a loss (negative log-likelihood)?"
        )
    return a


def _same_length(a: Sequence, b: Sequence, name_a: str, name_b: str) -> int:
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {len(a)} and {len(b)}"
        )
    if len(a) == 0:
        raise ValueError(f"{name_a} and {name_b} are empty")
    return len(a)


def _sequences(token_logprobs: Sequence[np.ndarray], name: str = "token_logprobs") -> list:
    """One validated float64 array of token log-probs per sequence."""
    if len(token_logprobs) == 0:
        raise ValueError(f"{name} holds no sequences")
    out = []
    for i, seq in enumerate(token_logprobs):
        a = np.asarray(seq, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(
                f"{name}[{i}] must be a 1-D array of one sequence's token log-probs, got shape "
                f"{a.shape} (pass a list of arrays, one per sequence)"
            )
        a = _check_logprobs(finite_vector(a, f"{name}[{i}]"), f"{name}[{i}]")
        out.append(a)
    return out


def _fraction(k: float) -> float:
    k = float(k)
    if not (0.0 < k <= 1.0):
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    return k


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the floor(k * T) smallest of ``values`` (at least one)."""
    # The small epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from flooring to 28.
    n = max(1, math.floor(k * len(values) + 1e-9))
    return float(np.mean(np.sort(values)[:n]))


# --------------------------------------------------------------------------- TOFU


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(reference: str, prediction: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference``, in [0, 1], as TOFU computes it.

    TOFU (Maini et al. 2024) uses the ``rouge_score`` package with the Porter stemmer and
    reports recall: the length of the longest common token subsequence divided by the number
    of reference tokens.
    """
    if not isinstance(reference, str) or not isinstance(prediction, str):
        raise ValueError(
            "reference and prediction must be strings, got "
            f"{type(reference).__name__} and {type(prediction).__name__}"
        )
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].recall)


def mean_rouge_l_recall(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Mean of :func:`rouge_l_recall` over paired references and predictions."""
    _same_length(references, predictions, "references", "predictions")
    return float(
        np.mean([rouge_l_recall(r, p) for r, p in zip(references, predictions, strict=True)])
    )


def answer_probability(logprob_sum, n_tokens) -> np.ndarray:
    """Length-normalised answer probability per item: exp(logprob_sum / n_tokens).

    TOFU (Maini et al. 2024) reports this on the retain and world sets ("Probability"):
    ``logprob_sum`` is the summed log-probability of the answer tokens given the question,
    ``n_tokens`` the number of answer tokens (> 0). Values lie in (0, 1].
    """
    s = _check_logprobs(finite_vector(logprob_sum, "logprob_sum"), "logprob_sum")
    n = finite_vector(n_tokens, "n_tokens")
    _same_length(s, n, "logprob_sum", "n_tokens")
    if np.any(n <= 0):
        raise ValueError("n_tokens must be positive")
    return np.exp(s / n)


def _answer_and_perturbed(answer, name: str, perturbed) -> tuple[np.ndarray, np.ndarray]:
    """Validated mean log-probs of one answer per item (n,) and of its k perturbed ones (n, k)."""
    ans = _check_logprobs(finite_vector(answer, name), name)
    pert = np.asarray(perturbed, dtype=np.float64)
    if pert.ndim != 2 or pert.shape[0] != len(ans) or pert.shape[1] == 0:
        raise ValueError(
            f"perturbed_logprob_mean must have shape (n, k) = ({len(ans)}, k >= 1), "
            f"got {pert.shape}"
        )
    if not np.all(np.isfinite(pert)):
        raise ValueError("perturbed_logprob_mean must be finite")
    _check_logprobs(pert, "perturbed_logprob_mean")
    return ans, pert


def normalised_answer_probability(answer_logprob_mean, perturbed_logprob_mean) -> np.ndarray:
    """TOFU's answer probability on the real-authors and world-facts sets, per item.

    The length-normalised probability of the true answer, P(a) = exp(mean per-token
    log p(a)), divided by the sum of it and those of the ``k`` perturbed answers:
    P(true) / (P(true) + sum_j P(perturbed_j)) (Maini et al. 2024, the authors'
    aggregation). ``answer_logprob_mean`` has shape (n,), ``perturbed_logprob_mean``
    (n, k). Values lie in (0, 1); 1 / (k + 1) is a model indifferent between the options.
    """
    true, pert = _answer_and_perturbed(
        answer_logprob_mean, "answer_logprob_mean", perturbed_logprob_mean
    )
    # a softmax over the options' mean log-probs, computed stably
    top = np.maximum(true, pert.max(axis=1))
    num = np.exp(true - top)
    return num / (num + np.exp(pert - top[:, None]).sum(axis=1))


def truth_ratio(para_logprob_mean, perturbed_logprob_mean) -> np.ndarray:
    """TOFU's truth ratio per item (Maini et al. 2024); lower means the model prefers the truth.

    ``para_logprob_mean`` (n,) is the mean per-token log-probability of the paraphrased
    (correct) answer; ``perturbed_logprob_mean`` (n, k) holds the same for each of the k
    perturbed (wrong) answers. With length-normalised probabilities
    P(a) = exp(mean per-token log p(a)),

        R_truth = (prod_j P(perturbed_j)) ** (1 / k) / P(paraphrase)
                = exp(mean_j perturbed_logprob_mean_j - para_logprob_mean).

    The raw ratio, in (0, inf), is returned; see :func:`truth_ratio_score` for the summary.
    """
    para, pert = _answer_and_perturbed(
        para_logprob_mean, "para_logprob_mean", perturbed_logprob_mean
    )
    return np.exp(pert.mean(axis=1) - para)


def _ratios(x, name: str) -> np.ndarray:
    r = finite_vector(x, name)
    if np.any(r <= 0):
        raise ValueError(f"{name} must be positive truth ratios")
    return r


def truth_ratio_score(ratios, forget: bool) -> float:
    """TOFU's summary of truth ratios ``R`` (Maini et al. 2024), in [0, 1].

    * Retain, real-authors and world-facts sets (``forget=False``): mean(max(0, 1 - R)).
      High when the model gives the paraphrased answer more probability than the wrong ones.
    * Forget set (``forget=True``): mean(min(R, 1 / R)). 1 when the model cannot tell the
      correct answer from the wrong ones, lower when it favours either side.
    """
    r = _ratios(ratios, "ratios")
    if forget:
        return float(np.mean(np.minimum(r, 1.0 / r)))
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(unlearned_ratios, oracle_ratios) -> float:
    """TOFU forget quality (Maini et al. 2024): a p-value in [0, 1], higher is better.

    The p-value of the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``,
    two-sided) between the forget-set truth ratios of the unlearned model and those of the
    oracle trained on the retain set only. A high value means the two distributions cannot be
    told apart.
    """
    from scipy.stats import ks_2samp

    u = _ratios(unlearned_ratios, "unlearned_ratios")
    o = _ratios(oracle_ratios, "oracle_ratios")
    return float(ks_2samp(u, o).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of non-negative finite values; 0 if any value is 0."""
    v = finite_vector(values, "values")
    if np.any(v < 0):
        raise ValueError("the harmonic mean needs non-negative values")
    if np.any(v == 0):
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


def model_utility(metrics: Mapping[str, float]) -> float:
    """TOFU model utility (Maini et al. 2024): harmonic mean of the given utility metrics.

    TOFU takes the probability, ROUGE-L recall and truth-ratio score on the retain,
    real-authors and world-facts sets (nine numbers, each in [0, 1]); pass whichever subset
    was measured. Values must be non-negative and finite; any 0 gives 0.
    """
    if len(metrics) == 0:
        raise ValueError("model_utility needs at least one metric")
    for key, value in metrics.items():
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"metric {key!r} must be finite and non-negative, got {v}")
    return harmonic_mean([float(v) for v in metrics.values()])


# --------------------------------------------------------------------------- membership inference


def loss_scores(token_logprobs: Sequence[np.ndarray]) -> np.ndarray:
    """LOSS attack score per sequence: mean token log-probability (minus the mean NLL)."""
    return np.array([float(np.mean(a)) for a in _sequences(token_logprobs)])


def zlib_scores(token_logprobs: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """zlib-ratio attack score per sequence (Carlini et al. 2021), higher = member.

    The attack ranks by the log-perplexity (mean token NLL) divided by the zlib entropy of
    the text (the length in bytes of ``zlib.compress(text.encode("utf-8"))``), low meaning
    member. The returned score is its negative, mean(token log-probs) / zlib_bytes.
    """
    seqs = _sequences(token_logprobs)
    _same_length(seqs, texts, "token_logprobs", "texts")
    out = []
    for i, (a, text) in enumerate(zip(seqs, texts, strict=True)):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] must be a string, got {type(text).__name__}")
        out.append(float(np.mean(a)) / len(zlib.compress(text.encode("utf-8"))))
    return np.array(out)


def min_k_scores(token_logprobs: Sequence[np.ndarray], k: float = 0.2) -> np.ndarray:
    """Min-K% Prob score per sequence (Shi et al. 2024, "Detecting pretraining data").

    The mean of the lowest ``k`` fraction of the sequence's token log-probabilities:
    floor(k * T) tokens, at least one.
    """
    k = _fraction(k)
    return np.array([_lowest_mean(a, k) for a in _sequences(token_logprobs)])


def min_k_plus_plus_scores(
    token_logprobs: Sequence[np.ndarray],
    token_mu: Sequence[np.ndarray],
    token_sigma: Sequence[np.ndarray],
    k: float = 0.2,
) -> np.ndarray:
    """Min-K%++ score per sequence (Zhang et al. 2024).

    Each token is standardised against the model's next-token distribution at its position,

        z_t = (log p(x_t | x_<t) - mu_t) / sigma_t,
        mu_t = E_{z ~ p(.|x_<t)}[log p(z | x_<t)],  sigma_t = the matching standard deviation,

    and the score is the mean of the lowest ``k`` fraction of z (floor(k * T), at least one).
    ``token_mu`` and ``token_sigma`` hold one array per sequence, aligned with
    ``token_logprobs``; :func:`token_stats_from_logits` computes all three from logits.
    """
    k = _fraction(k)
    lp = _sequences(token_logprobs)
    n = len(lp)
    if len(token_mu) != n or len(token_sigma) != n:
        raise ValueError(
            f"token_logprobs, token_mu and token_sigma must hold the same number of sequences, "
            f"got {n}, {len(token_mu)} and {len(token_sigma)}"
        )
    out = []
    for i, a in enumerate(lp):
        mu = _check_logprobs(finite_vector(token_mu[i], f"token_mu[{i}]"), f"token_mu[{i}]")
        sigma = finite_vector(token_sigma[i], f"token_sigma[{i}]")
        if len(mu) != len(a) or len(sigma) != len(a):
            raise ValueError(
                f"sequence {i}: token_logprobs, token_mu and token_sigma must have the same "
                f"length, got {len(a)}, {len(mu)} and {len(sigma)}"
            )
        if np.any(sigma <= 0):
            raise ValueError(f"token_sigma[{i}] must be positive")
        out.append(_lowest_mean((a - mu) / sigma, k))
    return np.array(out)


def token_stats_from_logits(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position (log p(target), mu, sigma) for Min-K%++ from next-token logits.

    ``logits`` (T, V) are the logits at the positions that predict ``targets`` (T,) (for a
    causal LM, ``logits[:-1]`` against ``input_ids[1:]``). Computed in float32 with
    ``log_softmax``: mu = sum_v p_v log p_v, sigma = sqrt(sum_v p_v (log p_v)^2 - mu^2),
    floored at :data:`SIGMA_FLOOR`. Logits of -inf (masked tokens) contribute nothing.
    Returns three float32 tensors of shape (T,).
    """
    import torch

    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (T, V), got {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape (T,) = ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits are empty, shape {tuple(logits.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer token ids, got dtype {targets.dtype}")
    if bool((targets < 0).any()) or bool((targets >= logits.shape[1]).any()):
        raise ValueError(f"targets must be token ids in [0, {logits.shape[1]})")
    x = logits.float()
    if bool(torch.isnan(x).any()) or bool(torch.isposinf(x).any()):
        raise ValueError("logits must not contain NaN or +inf")
    if not bool(torch.isfinite(x).any(dim=-1).all()):
        raise ValueError("every row of logits needs at least one finite value")
    logp = torch.log_softmax(x, dim=-1)
    p = logp.exp()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # p * log p is 0 where p = 0 (masked tokens), not NaN.
    plogp = torch.where(p > 0, p * logp, zero)
    plogp2 = torch.where(p > 0, p * logp * logp, zero)
    mu = plogp.sum(dim=-1)
    var = plogp2.sum(dim=-1) - mu * mu
    sigma = var.clamp_min(0.0).sqrt().clamp_min(SIGMA_FLOOR)
    token_logp = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return token_logp, mu, sigma


def mia_auc(member_scores, nonmember_scores) -> float:
    """ROC-AUC (percent) of a membership score, members labelled 1 (higher score = member).

    The classifier attacks' :func:`unlearn.attacks.mia.roc_auc`, on one score per sequence.
    """
    from ..attacks.mia import roc_auc

    m = finite_vector(member_scores, "member_scores")
    u = finite_vector(nonmember_scores, "nonmember_scores")
    return roc_auc(m, u)


def privleak(auc_unlearned: float, auc_retrain: float) -> float:
    """MUSE PrivLeak (Shi et al. 2024), in MUSE's own sign and denominator.

    Pass both AUCs in percent as :func:`mia_auc` gives them: the forget set labelled as
    members (1) against the holdout set, on the unlearned model and on the model retrained
    without the forget set. MUSE's code computes its AUC the other way round (forget set as
    the negative class), i.e. ``100 - a``, and reports
    ``(AUC'_unlearned - AUC'_retrain) / AUC'_retrain * 100`` on those, which here is
    ``(a_retrain - a_unlearned) / (100 - a_retrain) * 100``. OpenUnlearning's ``privleak``
    makes the same ``1 - x`` flip. Near 0 is good; **negative means under-unlearned** (the
    forget set still looks like members: doing nothing on a memorised set gives about -100),
    positive means over-unlearned. Example: attack AUCs 80 (unlearned) and 50 (retrained)
    give -60.
    """
    a, r = float(auc_unlearned), float(auc_retrain)
    if not (math.isfinite(a) and math.isfinite(r)):
        raise ValueError(f"AUCs must be finite, got {a} and {r}")
    if a < 0 or a > 100:
        raise ValueError(f"auc_unlearned must be a percentage in [0, 100], got {a}")
    if r < 0 or r >= 100:
        raise ValueError(
            f"auc_retrain must be a percentage in [0, 100), got {r} (at 100 MUSE's "
            "denominator 100 - auc_retrain is 0)"
        )
    return (r - a) / (100.0 - r) * 100.0


def perplexity(token_logprobs: Sequence[np.ndarray]) -> float:
    """exp of the mean NLL over all tokens of all sequences pooled (token-weighted)."""
    pooled = np.concatenate(_sequences(token_logprobs))
    return float(np.exp(-np.mean(pooled)))


# --------------------------------------------------------------------------- generation


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def greedy_answer_correct(prediction: str, key: str) -> bool:
    """Whether ``key`` occurs in ``prediction``, ignoring case and runs of whitespace."""
    if not isinstance(prediction, str) or not isinstance(key, str):
        raise ValueError(
            "prediction and key must be strings, got "
            f"{type(prediction).__name__} and {type(key).__name__}"
        )
    k = _normalise(key)
    if not k:
        raise ValueError("key is empty (it would match every answer)")
    return k in _normalise(prediction)


def answer_accuracy(predictions: Sequence[str], keys: Sequence[str]) -> float:
    """Share (percent) of predictions that contain their key (:func:`greedy_answer_correct`)."""
    _same_length(predictions, keys, "predictions", "keys")
    hits = [greedy_answer_correct(p, k) for p, k in zip(predictions, keys, strict=True)]
    return 100.0 * float(np.mean(hits))
