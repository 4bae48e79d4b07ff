"""Gradient ascent on the forget set (GA) and NegGrad+ (ascent on forget, descent on retain)."""

from __future__ import annotations

from dataclasses import dataclass

from ._common import run_steps
from .base import Method, MethodConfig, forever, register


@dataclass(frozen=True)
class GradientAscentConfig(MethodConfig):
    """Defaults in the range of Jia et al. (2023): SGD, 5 epochs over the forget set."""

    epochs: float = 5.0
    lr: float = 1e-4
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "constant"


@register
class GradientAscent(Method):
    name = "gradient_ascent"
    summary = "Maximise the loss on the forget set."
    Config = GradientAscentConfig

    def unlearn(self, model, ctx):
        cfg = self.config
        steps = self.steps_for(ctx.forget, cfg.batch_size, cfg.epochs)
        batches = forever(ctx.forget, cfg.batch_size, ctx.generator())
        opt = self.optimizer(model, cfg)

        def loss_fn(t):
            xb, yb = next(batches)
            return -ctx.task.loss(model, xb, yb)

        return run_steps(model, opt, steps, loss_fn, schedule=self.config.schedule)


@dataclass(frozen=True)
class NegGradPlusConfig(MethodConfig):
    """Kurmanji et al. (2023) NegGrad+; alpha weighs retain against forget."""

    epochs: float = 5.0  # passes over the retain set
    lr: float = 0.01
    batch_size: int = 64
    alpha: float = 0.99  # weight of the retain loss; 1 - alpha on the (negated) forget loss
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "constant"


@register
class NegGradPlus(Method):
    name = "neggrad_plus"
    summary = "alpha * retain loss - (1 - alpha) * forget loss, one batch of each per step."
    Config = NegGradPlusConfig

    def unlearn(self, model, ctx):
        cfg = self.config
        steps = self.steps_for(ctx.retain, cfg.batch_size, cfg.epochs)
        retain = forever(ctx.retain, cfg.batch_size, ctx.generator(1))
        forget = forever(ctx.forget, cfg.batch_size, ctx.generator(2))
        opt = self.optimizer(model, cfg)

        def loss_fn(t):
            xr, yr = next(retain)
            xf, yf = next(forget)
            return cfg.alpha * ctx.task.loss(model, xr, yr) - (1 - cfg.alpha) * ctx.task.loss(
                model, xf, yf
            )

        return run_steps(model, opt, steps, loss_fn, schedule=self.config.schedule)
