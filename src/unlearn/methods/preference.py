"""Preference-style objectives on the forget set, for every task with log-likelihoods:

- ``npo``: Negative Preference Optimization (Zhang et al. 2024), the forget
  examples as dispreferred answers against the frozen original;
- ``simnpo``: SimNPO (Fan et al. 2024), reference-free and length-normalised;
- ``idkpo``: DPO (Rafailov et al. 2023) preferring an alternative target (a
  refusal, for a language model) over the forget example's own target.

Each adds ``alpha`` times the retain loss. On a classifier the log-likelihood
of an example is that of its label (length 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnlearnError
from . import losses
from .base import register, register_alias
from .gradient_ascent import GradDiffConfig
from .loop import LM_PRESET, ForgetRetainMethod


@dataclass(frozen=True)
class PreferenceConfig(GradDiffConfig):
    """NPO's and IdkPO's options: ``beta``, the inverse temperature of the log-ratio to the
    reference model (0.1 in both papers)."""

    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise UnlearnError(f"beta must be > 0, got {self.beta}")


@register
class NPO(ForgetRetainMethod):
    name = "npo"
    summary = "NPO on forget (Zhang et al. 2024) plus retain loss (weight alpha)."
    requires = ("logprob",)
    presets = {"causal_lm": LM_PRESET}
    Config = PreferenceConfig
    needs_reference = True

    def objective(self, model, ctx, t):
        _, batch = self.next_forget()
        logp, _ = ctx.task.example_logprob(model, batch)
        ref = self.reference_logprob(model, ctx, batch)
        return losses.npo(logp, ref, self.config.beta) + self.retain_term(model, ctx)


@dataclass(frozen=True)
class SimNPOConfig(PreferenceConfig):
    beta: float = 2.5
    gamma: float = 0.0


@register
class SimNPO(ForgetRetainMethod):
    name = "simnpo"
    summary = "SimNPO on forget (Fan et al. 2024, reference-free) plus retain loss."
    requires = ("logprob",)
    presets = {"causal_lm": LM_PRESET}
    Config = SimNPOConfig

    def objective(self, model, ctx, t):
        _, batch = self.next_forget()
        logp, n = ctx.task.example_logprob(model, batch)
        loss = losses.simnpo(logp, n, self.config.beta, self.config.gamma)
        return loss + self.retain_term(model, ctx)


@register
class IdkPO(ForgetRetainMethod):
    name = "idkpo"
    summary = "DPO preferring a refusal over the forget answer, plus retain loss."
    requires = ("logprob", "alternatives:refusal")
    presets = {"causal_lm": LM_PRESET}
    Config = PreferenceConfig
    needs_reference = True

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self._chosen = ctx.alternative("refusal")

    def objective(self, model, ctx, t):
        idx, rejected = self.next_forget()
        chosen = ctx.task.take(self._chosen, idx)
        c, _ = ctx.task.example_logprob(model, chosen)
        r, _ = ctx.task.example_logprob(model, rejected)
        loss = losses.dpo(
            c,
            self.reference_logprob(model, ctx, chosen),
            r,
            self.reference_logprob(model, ctx, rejected),
            self.config.beta,
        )
        return loss + self.retain_term(model, ctx)


register_alias("llm_npo", "npo")
register_alias("llm_simnpo", "simnpo")
register_alias("llm_idkpo", "idkpo")
