"""Retraining from scratch without the forget set: the oracle every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from ._common import reinitialise
from .base import Method, MethodConfig, register


@dataclass(frozen=True)
class RetrainConfig(MethodConfig):
    """Retraining uses the context's training recipe; it has no options of its own."""


@register
class Retrain(Method):
    name = "retrain"
    summary = "Oracle: the same recipe and seed, trained from scratch on the retain set."
    Config = RetrainConfig

    def unlearn(self, model, ctx):
        fresh = ctx.model_factory(ctx.seed) if ctx.model_factory else reinitialise(model, ctx.seed)
        fresh.to(ctx.task.device)
        steps = ctx.task.fit(fresh, ctx.retain, ctx.recipe, ctx.seed)
        return fresh, steps

    def touched(self) -> str:
        return "all parameters (new network)"
