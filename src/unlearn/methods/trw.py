"""Tilted ReWeighting (TRW) for class unlearning (Ebrahimpour-Boroojeny, Wang & Sundaram 2025,
"On the Necessity of Output Distribution Reweighting for Effective Class Unlearning"; also in
"Toward Reliable Machine Unlearning").

A model retrained without class f still sends f's inputs somewhere: to the classes that look
like f. TRW fine-tunes the model so that, on forget-class inputs, it predicts an approximation
of that distribution instead of a random or uniform one:

1. the original model's distribution over the *remaining* classes, q(c | x) = softmax over the
   logits with f removed (its "dark knowledge" about what x resembles besides f);
2. an inter-class similarity s_c between f and every remaining class c, estimated from the
   original model as the mean of q(c | x) over the forget samples;
3. the tilted target t(c | x) proportional to q(c | x) * exp(beta * s_c), with t(f | x) = 0
   (the maximum-entropy tilt of q towards classes similar to f).

The model is then fine-tuned with the KL divergence KL(t || p_theta) on forget samples plus
cross-entropy on retain batches. The paper's code was not available here: steps 1-3 are a
reconstruction from the paper's description (beta about 10, per our notes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UnlearnError
from .base import register
from .loop import TrainConfig, TrainedMethod


@dataclass(frozen=True)
class TRWConfig(TrainConfig):
    beta: float = 10.0  # tilt strength towards classes similar to the forgotten one
    temperature: float = 1.0  # softens q(c | x) before tilting
    epochs: float = 5.0  # passes over the forget set
    lr: float = 1e-3
    batch_size: int = 64
    retain_batch: int = 128  # retain samples per step (0: none)
    retain_weight: float = 1.0
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0 or self.temperature <= 0:
            raise UnlearnError("trw needs beta >= 0 and temperature > 0")
        if self.retain_batch < 0:
            raise UnlearnError("trw needs retain_batch >= 0")


def tilted_targets(
    logits: torch.Tensor, forgotten: list[int], beta: float, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """TRW targets for forget-class logits: returns (targets (n, C), similarity (C,))."""
    mask = torch.zeros(logits.shape[1], dtype=torch.bool)
    mask[forgotten] = True
    masked = (logits / temperature).masked_fill(mask, float("-inf"))
    q = torch.softmax(masked, dim=1)
    similarity = q.mean(0)
    tilted = torch.log(q.clamp_min(1e-30)) + beta * similarity
    tilted = tilted.masked_fill(mask, float("-inf"))
    return torch.softmax(tilted, dim=1), similarity


@register
class TRW(TrainedMethod):
    name = "trw"
    summary = "Class unlearning: fit forget inputs to a similarity-tilted remaining-class target."
    request_kinds = ("class",)
    requires = ("classes",)
    Config = TRWConfig

    def setup(self, model, ctx):
        cfg = self.config
        forgotten = list(ctx.request.classes)
        logits = ctx.task.logits(ctx.original, ctx.forget)
        self._targets, sim = tilted_targets(logits, forgotten, cfg.beta, cfg.temperature)
        order = torch.argsort(sim, descending=True)
        self._extra["nearest_classes"] = [int(c) for c in order[:3]]
        self._extra["similarity"] = [round(float(s), 4) for s in sim]
        self._fb = self.stream(ctx, ctx.forget, 1)
        self._rb = self.stream(ctx, ctx.retain, 2, max(cfg.retain_batch, 1))

    def objective(self, model, ctx, t):
        cfg = self.config
        dev = ctx.task.device
        idx, (x, _) = next(self._fb)
        log_p = F.log_softmax(model(x.to(dev)), dim=1)
        loss = F.kl_div(log_p, self._targets[idx].to(dev), reduction="batchmean")
        if cfg.retain_batch > 0:
            _, (xr, yr) = next(self._rb)
            loss = loss + cfg.retain_weight * ctx.task.loss(model, xr, yr)
        return loss


__all__ = ["TRW", "TRWConfig", "tilted_targets"]
