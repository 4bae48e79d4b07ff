"""GUIDE (Seo et al., CVPR 2024, "Generative Unlearning for Any Identity"), the baseline:
one fixed surrogate latent per forgotten identity, ``w_avg - d (w_u - w_avg) / ||w_u -
w_avg||`` (the identity's direction from the average latent, reflected to distance ``d``),
and the shared fine-tuning towards it (:mod:`._common`) with GUIDE's global preservation:
random retained latents keep the source generator's images (MSE, weight ``preserve``).
``d`` is ``distance`` times the latents' median distance from ``w_avg`` (the official
d = 30 is in EG3D's latent units, which this generator does not share).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import UnlearnError
from ..base import register
from ._common import SurrogateConfig, SurrogateMethod


@dataclass(frozen=True)
class GUIDEConfig(SurrogateConfig):
    preserve: float = 1.0
    preserve_latents: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preserve < 0 or self.preserve_latents < 1:
            raise UnlearnError("guide needs preserve >= 0 and preserve_latents >= 1")


@register
class GUIDE(SurrogateMethod):
    name = "guide"
    summary = "GUIDE: each forgotten identity's latent renders a fixed reflected surrogate."
    Config = GUIDEConfig

    def surrogates(self, model, src, ctx, ids):
        w_avg = model.w_avg
        away = F.normalize(model.latents[torch.as_tensor(ids)] - w_avg, dim=1)
        return w_avg - self.config.distance * self._radius * away

    def preservation(self, model, ctx):
        cfg = self.config
        return self.retained_preservation(model, ctx, cfg.preserve, cfg.preserve_latents)
