"""Random labels (RL) and SalUn (Fan et al., ICLR 2024).

RL fine-tunes on the forget samples with alternative targets (for a classifier,
a random label that is never the sample's own; for class requests, one of the
remaining classes) together with retain samples. SalUn computes a weight-saliency
mask from the gradient of the forget loss and lets RL update only the most
salient weights (top ``mask_ratio`` by gradient magnitude, over the whole network).

Batching: by default each step draws ``batch_size`` relabelled forget samples and
``retain_batch`` retain samples and averages the loss over both, and ``epochs``
counts passes over the forget set. The reference code (OPTML-Group
Unlearn-Saliency, ``RL``) instead trains on the shuffled union of the relabelled
forget set and the retain set, an epoch being one pass over all of it: that is
``retain_pass: true`` (much more expensive; ``retain_batch`` is then unused).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.core import ArrayData
from ..errors import UnlearnError
from ..requests import ClassRequest
from .base import register
from .loop import TrainConfig, TrainedMethod


@dataclass(frozen=True)
class RandomLabelsConfig(TrainConfig):
    """Fan et al. (2024) RL/SalUn defaults: SGD, 10 epochs, lr 0.01 (0.013 for SalUn)."""

    epochs: float = 10.0  # passes over the forget set (over forget + retain with retain_pass)
    lr: float = 0.01
    batch_size: int = 64  # forget samples per step (all samples per step with retain_pass)
    retain_batch: int = 64  # retain samples per step (0: forget samples only)
    retain_pass: bool = False  # the reference's batching: epochs over the union

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retain_batch < 0:
            raise UnlearnError(f"retain_batch must be >= 0, got {self.retain_batch}")


def _union(a, b):
    """The two data sets one after the other (classifier arrays)."""
    if not (isinstance(a, ArrayData) and isinstance(b, ArrayData)):
        raise UnlearnError("retain_pass needs array data (a classifier task)")
    return ArrayData(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.classes, "forget+retain")


@register
class RandomLabels(TrainedMethod):
    name = "random_labels"
    summary = "Fine-tune on forget samples with random wrong labels, plus retain samples."
    requires = ("logprob", "alternatives:random_label")
    Config = RandomLabelsConfig

    def epoch_size(self, ctx):
        n = ctx.task.size(ctx.forget)
        return n + ctx.task.size(ctx.retain) if self.config.retain_pass else n

    def setup(self, model, ctx):
        cfg = self.config
        forgotten = ctx.request.classes if isinstance(ctx.request, ClassRequest) else ()
        relabelled = ctx.alternative("random_label", forgotten_classes=forgotten)
        if cfg.retain_pass:
            self._fb = self.stream(ctx, _union(relabelled, ctx.retain), 1)
            self._rb = None
            return
        self._fb = self.stream(ctx, relabelled, 1)
        use_retain = cfg.retain_batch > 0 and ctx.task.size(ctx.retain) > 0
        self._rb = self.stream(ctx, ctx.retain, 2, cfg.retain_batch) if use_retain else None

    def objective(self, model, ctx, t):
        _, (xf, yf) = next(self._fb)
        if self._rb is not None:
            _, (xr, yr) = next(self._rb)
            xf, yf = torch.cat([xf, xr]), torch.cat([yf, yr])
        return ctx.task.mean_loss(model, (xf, yf))


def saliency_masks(
    model: torch.nn.Module, accumulate, ratio: float
) -> tuple[dict[str, torch.Tensor], float]:
    """SalUn's weight-saliency masks: ``accumulate()`` backpropagates the forget loss into
    the gradients of ``model`` (in evaluation mode); the ``ratio`` share of weights with the
    largest gradient magnitude, over the whole network, get 1, the rest 0. Returns the
    masks by parameter name and the share kept (ties at the threshold are kept)."""
    model.zero_grad(set_to_none=True)
    was = model.training
    model.eval()
    try:
        accumulate()
    finally:
        model.train(was)
    grads = {
        name: p.grad.detach().abs() for name, p in model.named_parameters() if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    if not grads:
        raise UnlearnError("the forget loss reached no parameter: no saliency to mask by")
    flat = torch.cat([g.flatten() for g in grads.values()])
    k = max(1, int(round(ratio * flat.numel())))
    threshold = torch.topk(flat, k, sorted=True).values[-1]
    masks = {name: (g >= threshold).float() for name, g in grads.items()}
    return masks, sum(int(m.sum()) for m in masks.values()) / flat.numel()


@dataclass(frozen=True)
class SalUnConfig(RandomLabelsConfig):
    lr: float = 0.013
    mask_ratio: float = 0.5  # share of weights (largest forget-gradient magnitude) that may change

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_ratio <= 1.0:
            raise UnlearnError(f"salun mask_ratio must be in (0, 1], got {self.mask_ratio}")


@register
class SalUn(RandomLabels):
    name = "salun"
    summary = "Random labels restricted to the weights most salient for the forget loss."
    Config = SalUnConfig

    def grad_masks(self, model, ctx):
        forget, task = ctx.forget, ctx.task
        n = task.size(forget)

        def accumulate() -> None:
            for s in range(0, n, 512):
                batch = task.take(forget, np.arange(s, min(s + 512, n)))
                (task.per_example_loss(model, batch).sum() / n).backward()

        masks, kept = saliency_masks(model, accumulate, self.config.mask_ratio)
        self._extra["mask_kept"] = kept
        return masks

    def touched(self) -> str:
        return f"{100 * self.config.mask_ratio:g}% most salient weights"
