"""Unlearning objectives for language models, as pure functions of sequence log-probs.

Each takes per-sequence sums of answer-token log-probs (``logp``, differentiable),
answer lengths (``n``) and, where the objective needs one, the same sums under
the frozen reference model (``ref``); each returns a scalar to *minimise*.
Definitions follow the papers named on each function; the retain terms
(NLL or KL on the retain set) are added by the methods.
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
    "token_kl",
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


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of ``KL(p_ref || p)`` between next-token distributions."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    lr = torch.log_softmax(ref_logits.float(), dim=-1)
    kl = (lr.exp() * (lr - lp)).sum(-1)
    m = mask.float()
    return (kl * m).sum() / m.sum().clamp_min(1.0)
