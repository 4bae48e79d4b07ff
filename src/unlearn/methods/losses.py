"""The family-agnostic unlearning objectives, as pure functions of example log-likelihoods.

Each takes per-example target log-likelihoods (``logp``, differentiable: the sum
of an answer's token log-probs for a language model, the log-probability of
the label for a classifier), their lengths (``n``: answer tokens, or 1) and,
where the objective needs one, the same under the frozen reference model
(``ref``); each returns a scalar to *minimise*. Definitions follow the papers
named on each function; the methods add the retain terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "nll",
    "gradient_ascent",
    "npo",
    "simnpo",
    "dpo",
]


def nll(logp: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Mean per-token negative log-likelihood of the answers (ordinary fine-tuning)."""
    return -(logp / n).mean()


def gradient_ascent(logp: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on the forget answers: minimise their mean per-token log-likelihood."""
    return (logp / n).mean()


def npo(logp: torch.Tensor, ref: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al. 2024):
    ``-(2/beta) E[log sigmoid(-beta log(pi(y|x) / pi_ref(y|x)))]`` on the forget pairs."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref)).mean()


def simnpo(logp: torch.Tensor, n: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO with margin ``gamma``:
    ``-(2/beta) E[log sigmoid(-(beta/|y|) log pi(y|x) - gamma)]``."""
    return -(2.0 / beta) * F.logsigmoid(-beta * logp / n - gamma).mean()


def dpo(
    chosen: torch.Tensor,
    chosen_ref: torch.Tensor,
    rejected: torch.Tensor,
    rejected_ref: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Direct Preference Optimization (Rafailov et al. 2023), scaled by ``2/beta`` as NPO:
    prefer ``chosen`` (e.g. a refusal) over ``rejected`` (the fact to forget)."""
    margin = (chosen - chosen_ref) - (rejected - rejected_ref)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()
