"""SalUn for class-conditional DDPM (Fan et al., ICLR 2024; OPTML-Group/Unlearn-Saliency,
``DDPM``).

A weight-saliency mask keeps the ``mask_ratio`` share of weights with the largest
magnitude of the forget set's conditional denoising-loss gradient (top 50 % in the
paper); it is applied to the gradients before every optimiser step (the official order;
applying it after the step would change nothing). The forget loss makes the prediction
under the forgotten class ``k`` match the model's own (detached) prediction under another
class, ``(k + 1) mod K`` skipping forgotten classes, on noised forget images; a retain
denoising loss weighted ``alpha`` (1e-3 in the official code, whose issue 19 shows that
without it every class is erased) keeps the rest. Official defaults: Adam, lr 1e-4,
batch 128, 1000 iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import UnlearnError
from ..base import register
from ..loop import TrainConfig, TrainedMethod
from ..random_labels import saliency_masks
from ._common import forgotten_classes, other_class


@dataclass(frozen=True)
class SalUnDDPMConfig(TrainConfig):
    steps: int | None = 1000
    lr: float = 1e-4
    optimizer: str = "adam"
    batch_size: int = 128
    alpha: float = 1e-3  # weight of the retain denoising loss
    mask_ratio: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0 or not 0 < self.mask_ratio <= 1:
            raise UnlearnError("salun_ddpm needs alpha >= 0 and mask_ratio in (0, 1]")


@register
class SalUnDDPM(TrainedMethod):
    name = "salun_ddpm"
    summary = "SalUn for DDPM: forgotten class mapped to another's noise, salient weights only."
    request_kinds = ("class",)
    requires = ("loss", "denoise", "conditions")
    Config = SalUnDDPMConfig

    def grad_masks(self, model, ctx):
        forget, task = ctx.forget, ctx.task
        n = task.size(forget)
        gen = ctx.generator(21)

        def accumulate() -> None:
            for s in range(0, n, 512):
                x, y = task.take(forget, np.arange(s, min(s + 512, n)))
                (task.denoise_loss(model, x, y, reduction="none", gen=gen).sum() / n).backward()

        masks, kept = saliency_masks(model, accumulate, self.config.mask_ratio)
        self._extra["mask_kept"] = kept
        return masks

    def setup(self, model, ctx):
        forgotten = forgotten_classes(ctx, self.name)
        k = ctx.task.num_classes
        self._pseudo = torch.as_tensor([other_class(c, forgotten, k) if c in forgotten else c
                                        for c in range(k)])  # fmt: skip
        self._forget = self.stream(ctx, ctx.forget, 22)
        size = ctx.task.size(ctx.retain)
        self._retain = self.stream(ctx, ctx.retain, 23) if self.config.alpha and size else None

    def objective(self, model, ctx, t):
        task = ctx.task
        _, (x, y) = next(self._forget)
        x_t, ts, _ = task.noisy(x)
        with torch.no_grad():
            target = task.eps(model, x_t, ts, self._pseudo[y])
        loss = torch.nn.functional.mse_loss(task.eps(model, x_t, ts, y), target)
        if self._retain is not None:
            _, batch = next(self._retain)
            loss = loss + self.config.alpha * task.mean_loss(model, batch)
        return loss

    def touched(self) -> str:
        return f"{100 * self.config.mask_ratio:g}% most salient weights"
