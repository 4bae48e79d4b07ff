"""Gradient ascent (GA), gradient difference, NegGrad+ and GA with a KL retain term:
the ascent family, one class each for every task that provides log-likelihoods.

- ``gradient_ascent``: maximise the forget set's loss (Jia et al. 2023 for
  classifiers; the TOFU baseline for language models);
- ``graddiff``: ascent on forget plus ``alpha`` times the retain loss (TOFU);
- ``neggrad_plus``: ``alpha`` times the retain loss minus ``1 - alpha`` times the
  forget loss, epochs counted over the retain set (Kurmanji et al. 2023);
- ``kl``: ascent on forget plus ``alpha`` times KL(original || model) on retain
  batches (TOFU's KL baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import register, register_alias
from .loop import LM_PRESET, ForgetRetainMethod, TrainConfig


@dataclass(frozen=True)
class GradientAscentConfig(TrainConfig):
    """Classifier defaults in the range of Jia et al. (2023): SGD, 5 epochs over the
    forget set, lr 1e-4; language models: the LM preset (20 AdamW steps, lr 1e-5)."""


@register
class GradientAscent(ForgetRetainMethod):
    name = "gradient_ascent"
    summary = "Maximise the loss on the forget set."
    requires = ("logprob",)
    presets = {"causal_lm": LM_PRESET}
    Config = GradientAscentConfig
    uses_retain = False

    def objective(self, model, ctx, t):
        _, batch = self.next_forget()
        return -ctx.task.mean_loss(model, batch)


@dataclass(frozen=True)
class GradDiffConfig(TrainConfig):
    alpha: float = 1.0  # weight of the retain loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            from ..errors import UnlearnError

            raise UnlearnError(f"alpha must be >= 0, got {self.alpha}")


@register
class GradDiff(ForgetRetainMethod):
    name = "graddiff"
    summary = "Gradient difference: ascent on forget, descent (weight alpha) on retain."
    requires = ("logprob",)
    presets = {"causal_lm": LM_PRESET}
    Config = GradDiffConfig

    def objective(self, model, ctx, t):
        _, batch = self.next_forget()
        return -ctx.task.mean_loss(model, batch) + self.retain_term(model, ctx)


@dataclass(frozen=True)
class NegGradPlusConfig(GradDiffConfig):
    """Kurmanji et al. (2023) NegGrad+; ``alpha`` weighs retain against forget."""

    epochs: float = 5.0  # passes over the retain set
    lr: float = 0.01
    alpha: float = 0.99  # weight of the retain loss; 1 - alpha on the (negated) forget loss


@register
class NegGradPlus(ForgetRetainMethod):
    name = "neggrad_plus"
    summary = "alpha * retain loss - (1 - alpha) * forget loss, one batch of each per step."
    requires = ("logprob",)
    presets = {"causal_lm": LM_PRESET}
    Config = NegGradPlusConfig
    epochs_over = "retain"
    forget_offset = 2
    retain_offset = 1

    def prepare(self, ctx):
        super().prepare(ctx)
        if ctx.task.size(ctx.retain) == 0:
            from ..errors import UnlearnError

            raise UnlearnError("neggrad_plus needs a non-empty retain set")

    def setup(self, model, ctx):
        self._retain = self.stream(ctx, ctx.retain, self.retain_offset)
        self._forget = self.stream(ctx, ctx.forget, self.forget_offset)

    def objective(self, model, ctx, t):
        _, rb = next(self._retain)
        _, fb = self.next_forget()
        a = self.config.alpha
        return a * ctx.task.mean_loss(model, rb) - (1 - a) * ctx.task.mean_loss(model, fb)


@register
class KLRetain(ForgetRetainMethod):
    name = "kl"
    summary = "Gradient ascent on forget plus KL to the original on retain (weight alpha)."
    requires = ("logprob", "kl")
    presets = {"causal_lm": LM_PRESET}
    Config = GradDiffConfig
    needs_reference = True

    def objective(self, model, ctx, t):
        _, batch = self.next_forget()
        loss = -ctx.task.mean_loss(model, batch)
        if self._retain is None:
            return loss
        _, rb = next(self._retain)
        return loss + self.config.alpha * ctx.task.kl(
            model, rb, lambda: self.reference_model(model)
        )


register_alias("llm_ga", "gradient_ascent")
register_alias("llm_graddiff", "graddiff")
register_alias("llm_kl", "kl")
