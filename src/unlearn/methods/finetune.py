"""Fine-tuning on the retain set (FT) and its l1-sparse variant (Jia et al., 2023), for
every task with a loss."""

from __future__ import annotations

from dataclasses import dataclass

from .base import register
from .loop import LM_PRESET, TrainConfig, TrainedMethod


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Defaults of Jia et al. (2023) for FT: SGD, 10 epochs over the retain set, lr 0.01."""

    epochs: float = 10.0
    lr: float = 0.01
    weight_decay: float = 5e-4


@register
class Finetune(TrainedMethod):
    name = "finetune"
    summary = "Fine-tune on the retain set only (catastrophic forgetting of the rest)."
    requires = ("loss",)
    presets = {
        "causal_lm": {**LM_PRESET, "weight_decay": 0.0},
        # denoising fine-tuning, as DiMRA and the diffusion papers' baselines run it
        "diffusion": {
            "steps": 500,
            "lr": 1e-4,
            "optimizer": "adam",
            "batch_size": 64,
            "weight_decay": 0.0,
        },  # fmt: skip
    }
    Config = FinetuneConfig
    epochs_over = "retain"

    def prepare(self, ctx):
        super().prepare(ctx)
        if ctx.task.size(ctx.retain) == 0:
            from ..errors import UnlearnError

            raise UnlearnError(f"{self.name} needs a non-empty retain set")

    def setup(self, model, ctx):
        self._batches = self.stream(ctx, ctx.retain, 0)
        self._steps = self.budget(ctx)

    def penalty(self, model, t: int):
        return None

    def objective(self, model, ctx, t):
        _, batch = next(self._batches)
        loss = ctx.task.mean_loss(model, batch)
        extra = self.penalty(model, t)
        return loss if extra is None else loss + extra


@dataclass(frozen=True)
class L1SparseConfig(FinetuneConfig):
    alpha: float = 5e-4  # l1 weight (Jia et al. 2023) at the first step, decayed linearly to 0


@register
class L1Sparse(Finetune):
    name = "l1_sparse"
    summary = "Fine-tune on the retain set with a linearly decaying l1 penalty (sparsity-aided)."
    Config = L1SparseConfig

    def penalty(self, model, t):
        weight = self.config.alpha * (1.0 - t / self._steps)
        return weight * sum(p.abs().sum() for p in model.parameters() if p.requires_grad)
