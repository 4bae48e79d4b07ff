"""Retraining from scratch without the forget set: the oracle every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnlearnError
from .base import Method, MethodConfig, register


@dataclass(frozen=True)
class RetrainConfig(MethodConfig):
    """Retraining uses the context's training recipe; it has no options of its own."""


@register
class Retrain(Method):
    name = "retrain"
    summary = "Oracle: the same recipe and seed, trained from scratch on the retain set."
    request_kinds = ("samples", "class", "group")
    requires = ("fit",)
    Config = RetrainConfig

    def prepare(self, ctx):
        if ctx.model_factory is None and "reinit" not in ctx.task.provides:
            raise UnlearnError(
                f"retrain on {ctx.task.family} models needs a model_factory in the context "
                "(the untrained model to train on the retain set)"
            )
        if ctx.task.size(ctx.retain) == 0:
            raise UnlearnError("retrain needs a non-empty retain set")

    def unlearn(self, model, ctx):
        if ctx.model_factory is not None:
            fresh = ctx.model_factory(ctx.seed)
        else:
            fresh = ctx.task.fresh_model(model, ctx.seed)
        fresh = ctx.task.to_device(fresh)
        steps = ctx.task.fit(fresh, ctx.retain, ctx.recipe, ctx.seed)
        return fresh, steps

    def touched(self) -> str:
        return "all parameters (new network)"
