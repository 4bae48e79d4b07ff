"""Fine-tuning on the retain set (FT) and its l1-sparse variant (Jia et al., 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import run_steps
from .base import Method, MethodConfig, forever, register


@dataclass(frozen=True)
class FinetuneConfig(MethodConfig):
    """Defaults of Jia et al. (2023) for FT: SGD, 10 epochs, lr 0.01."""

    epochs: float = 10.0
    lr: float = 0.01
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "constant"
    weight_decay: float = 5e-4


@register
class Finetune(Method):
    name = "finetune"
    summary = "Fine-tune on the retain set only (catastrophic forgetting of the rest)."
    Config = FinetuneConfig

    def penalty(self, model, t: int, steps: int) -> torch.Tensor | None:
        return None

    def unlearn(self, model, ctx):
        cfg = self.config
        steps = self.steps_for(ctx.retain, cfg.batch_size, cfg.epochs)
        batches = forever(ctx.retain, cfg.batch_size, ctx.generator())
        opt = self.optimizer(model, cfg)

        def loss_fn(t):
            xb, yb = next(batches)
            loss = ctx.task.loss(model, xb, yb)
            extra = self.penalty(model, t, steps)
            return loss if extra is None else loss + extra

        return run_steps(model, opt, steps, loss_fn, schedule=self.config.schedule)


@dataclass(frozen=True)
class L1SparseConfig(FinetuneConfig):
    alpha: float = 5e-4  # l1 weight (Jia et al. 2023) at the first step, decayed linearly to 0


@register
class L1Sparse(Finetune):
    name = "l1_sparse"
    summary = "Fine-tune on the retain set with a linearly decaying l1 penalty (sparsity-aided)."
    Config = L1SparseConfig

    def penalty(self, model, t, steps):
        weight = self.config.alpha * (1.0 - t / steps)
        return weight * sum(p.abs().sum() for p in model.parameters())
