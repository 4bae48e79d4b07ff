"""Random labels (RL) and SalUn (Fan et al., ICLR 2024).

RL fine-tunes on the forget samples relabelled at random (never their own
label; for class requests, a remaining class) together with retain samples.
SalUn computes a weight-saliency mask from the gradient of the forget loss
and lets RL update only the most salient weights (top ``mask_ratio`` by
gradient magnitude, over the whole network).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..requests import ClassRequest
from ._common import random_other_labels, run_steps
from .base import Method, MethodConfig, forever, register


@dataclass(frozen=True)
class RandomLabelsConfig(MethodConfig):
    """Fan et al. (2024) RL/SalUn defaults: SGD, 10 epochs, lr 0.01 (0.013 for SalUn)."""

    epochs: float = 10.0  # passes over the forget set
    lr: float = 0.01
    batch_size: int = 64  # forget samples per step
    retain_batch: int = 64  # retain samples per step (0: forget samples only)
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "constant"


@register
class RandomLabels(Method):
    name = "random_labels"
    summary = "Fine-tune on forget samples with random wrong labels, plus retain samples."
    Config = RandomLabelsConfig

    def mask(self, model, ctx) -> dict[str, torch.Tensor] | None:
        return None

    def unlearn(self, model, ctx):
        cfg = self.config
        allowed = None
        if isinstance(ctx.request, ClassRequest):
            allowed = [c for c in range(ctx.task.num_classes) if c not in ctx.request.classes]
        forget = ctx.forget
        labels = random_other_labels(forget, ctx.task.num_classes, ctx.generator(3), allowed)
        masks = self.mask(model, ctx)
        steps = self.steps_for(forget, cfg.batch_size, cfg.epochs)
        fb = forever(forget, cfg.batch_size, ctx.generator(1), labels=labels)
        rb = forever(ctx.retain, max(cfg.retain_batch, 1), ctx.generator(2))
        opt = self.optimizer(model, cfg)

        def loss_fn(t):
            xf, yf = next(fb)
            if cfg.retain_batch > 0:
                xr, yr = next(rb)
                xf, yf = torch.cat([xf, xr]), torch.cat([yf, yr])
            return ctx.task.loss(model, xf, yf)

        after = None
        if masks is not None:
            named = dict(model.named_parameters())

            def after():
                for n, m in masks.items():
                    if named[n].grad is not None:
                        named[n].grad.mul_(m)

        return run_steps(model, opt, steps, loss_fn, after, schedule=cfg.schedule)


@dataclass(frozen=True)
class SalUnConfig(RandomLabelsConfig):
    lr: float = 0.013
    mask_ratio: float = 0.5  # share of weights (largest forget-gradient magnitude) that may change


@register
class SalUn(RandomLabels):
    name = "salun"
    summary = "Random labels restricted to the weights most salient for the forget loss."
    Config = SalUnConfig

    def mask(self, model, ctx):
        ratio = self.config.mask_ratio
        if not 0.0 < ratio <= 1.0:
            from ..errors import UnlearnError

            raise UnlearnError(f"salun mask_ratio must be in (0, 1], got {ratio}")
        model.zero_grad(set_to_none=True)
        model.eval()
        forget = ctx.forget
        for start in range(0, len(forget), 512):
            xb, yb = forget.x[start : start + 512], forget.y[start : start + 512]
            loss = ctx.task.loss(model, xb, yb, reduction="sum") / len(forget)
            loss.backward()
        grads = {
            n: p.grad.detach().abs() for n, p in model.named_parameters() if p.grad is not None
        }
        model.zero_grad(set_to_none=True)
        flat = torch.cat([g.flatten() for g in grads.values()])
        k = max(1, int(round(ratio * flat.numel())))
        threshold = torch.topk(flat, k, sorted=True).values[-1]
        masks = {n: (g >= threshold).float() for n, g in grads.items()}
        kept = sum(int(m.sum()) for m in masks.values())
        self._extra["mask_kept"] = kept / flat.numel()
        return masks

    def touched(self) -> str:
        return f"{100 * self.config.mask_ratio:g}% most salient weights"
