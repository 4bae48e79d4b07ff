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
from ._common import run_steps
from .base import Method, MethodConfig, forever, register


@dataclass(frozen=True)
class TRWConfig(MethodConfig):
    beta: float = 10.0  # tilt strength towards classes similar to the forgotten one
    temperature: float = 1.0  # softens q(c | x) before tilting
    epochs: float = 5.0  # passes over the forget set
    lr: float = 1e-3
    batch_size: int = 64
    retain_batch: int = 128  # retain samples per step (0: none)
    retain_weight: float = 1.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.beta < 0 or self.temperature <= 0:
            raise UnlearnError("trw needs beta >= 0 and temperature > 0")


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
class TRW(Method):
    name = "trw"
    summary = "Class unlearning: fit forget inputs to a similarity-tilted remaining-class target."
    request_kinds = ("class",)
    Config = TRWConfig

    def unlearn(self, model, ctx):
        cfg = self.config
        forgotten = list(ctx.request.classes)
        forget = ctx.forget
        logits = ctx.task.logits(ctx.original, forget)
        targets, sim = tilted_targets(logits, forgotten, cfg.beta, cfg.temperature)
        order = torch.argsort(sim, descending=True)
        self._extra["nearest_classes"] = [int(c) for c in order[:3]]
        self._extra["similarity"] = [round(float(s), 4) for s in sim]
        fb = forever_index(len(forget), cfg.batch_size, ctx.generator(1))
        rb = forever(ctx.retain, max(cfg.retain_batch, 1), ctx.generator(2))
        dev = ctx.task.device
        steps = self.steps_for(forget, cfg.batch_size, cfg.epochs)
        opt = self.optimizer(model, cfg)

        def loss_fn(t):
            b = next(fb)
            log_p = F.log_softmax(model(forget.x[b].to(dev)), dim=1)
            tgt = targets[b].to(dev)
            loss = F.kl_div(log_p, tgt, reduction="batchmean")
            if cfg.retain_batch > 0:
                xr, yr = next(rb)
                loss = loss + cfg.retain_weight * ctx.task.loss(model, xr, yr)
            return loss

        return run_steps(model, opt, steps, loss_fn, schedule=cfg.schedule)


def forever_index(n: int, batch_size: int, gen: torch.Generator):
    """Endless shuffled index batches over range(n)."""
    while True:
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            yield order[s : s + batch_size]


__all__ = ["TRW", "TRWConfig", "tilted_targets"]
