"""The standard LLM unlearning baselines, each a loss over the shared loop of ``base``.

As in TOFU and OpenUnlearning: gradient ascent, gradient difference, gradient
ascent with a KL term on the retain set, NPO, SimNPO and IdkPO (DPO towards a
refusal). Each works with full fine-tuning (``lora_rank`` 0) or LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UnlearnError
from ...tasks.causal_lm import Pair
from ..base import register
from . import losses
from .base import LMConfig, LMMethod, LMUnlearnContext, check_config


def _pairs(ctx: LMUnlearnContext, idx: list[int]) -> list[Pair]:
    return [ctx.forget[i] for i in idx]


@register
class LMGradientAscent(LMMethod):
    name = "llm_ga"
    summary = "Gradient ascent on the forget answers (no retain term)"

    def loss(self, model, forget, retain, ctx):
        return losses.gradient_ascent(*self.seq(model, _pairs(ctx, forget)))


@register
class LMGradDiff(LMMethod):
    name = "llm_graddiff"
    summary = "Gradient difference: ascent on forget, descent (weight alpha) on retain"

    def loss(self, model, forget, retain, ctx):
        ga = losses.gradient_ascent(*self.seq(model, _pairs(ctx, forget)))
        return ga + self.retain_nll(model, retain)


@register
class LMKL(LMMethod):
    name = "llm_kl"
    summary = "Gradient ascent on forget plus KL to the original on retain (weight alpha)"
    needs_reference = True

    def loss(self, model, forget, retain, ctx):
        ga = losses.gradient_ascent(*self.seq(model, _pairs(ctx, forget)))
        if not retain or self.config.alpha == 0:
            return ga
        batch = self._task.collate(retain)
        _, mask, logits = self._task.token_logprobs(model, batch)
        with torch.no_grad(), self.reference_model(model) as ref:
            _, _, ref_logits = self._task.token_logprobs(ref, batch)
        return ga + self.config.alpha * losses.token_kl(logits, ref_logits, mask)


@dataclass(frozen=True)
class PreferenceConfig(LMConfig):
    """NPO's and IdkPO's options: ``beta``, the inverse temperature of the log-ratio to the
    reference model (0.1 in both papers)."""

    beta: float = 0.1


@register
class LMNPO(LMMethod):
    name = "llm_npo"
    summary = "NPO on forget (Zhang et al. 2024) plus retain NLL (weight alpha)"
    Config = PreferenceConfig
    needs_reference = True

    def prepare(self, ctx):
        check_config(self.config, beta=self.config.beta)

    def loss(self, model, forget, retain, ctx):
        pairs = _pairs(ctx, forget)
        logp, _ = self.seq(model, pairs)
        ref = self.reference(model, pairs)
        return losses.npo(logp, ref, self.config.beta) + self.retain_nll(model, retain)


@dataclass(frozen=True)
class SimNPOConfig(LMConfig):
    beta: float = 2.5
    gamma: float = 0.0


@register
class LMSimNPO(LMMethod):
    name = "llm_simnpo"
    summary = "SimNPO on forget (Fan et al. 2024, reference-free) plus retain NLL"
    Config = SimNPOConfig

    def prepare(self, ctx):
        check_config(self.config, beta=self.config.beta)

    def loss(self, model, forget, retain, ctx):
        logp, n = self.seq(model, _pairs(ctx, forget))
        return losses.simnpo(logp, n, self.config.beta, self.config.gamma) + self.retain_nll(
            model, retain
        )


@register
class LMIdkPO(LMMethod):
    name = "llm_idkpo"
    summary = "IdkPO: DPO preferring a refusal over the forget answer, plus retain NLL"
    Config = PreferenceConfig
    needs_reference = True

    def prepare(self, ctx):
        check_config(self.config, beta=self.config.beta)
        if not ctx.refusals:
            raise UnlearnError("llm_idkpo needs refusal answers in the context")

    def loss(self, model: nn.Module, forget, retain, ctx):
        pairs = _pairs(ctx, forget)
        idk = [(q, ctx.refusal(i)) for (q, _), i in zip(pairs, forget, strict=True)]
        chosen, _ = self.seq(model, idk)
        rejected, _ = self.seq(model, pairs)
        loss = losses.dpo(
            chosen,
            self.reference(model, idk),
            rejected,
            self.reference(model, pairs),
            self.config.beta,
        )
        return loss + self.retain_nll(model, retain)
