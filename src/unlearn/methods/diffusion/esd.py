"""Erased Stable Diffusion (ESD; Gandikota et al., ICCV 2023) for a class condition.

The model is trained so that its prediction under the forgotten condition ``c`` matches
the frozen original's negatively guided one: the target is
``eps_0(x_t, null) - eta * (eps_0(x_t, c) - eps_0(x_t, null))``, the paper's equation and
the official code's (its ``e_0 - negative_guidance * (e_p - e_0)``, ``e_0`` the empty
prompt's prediction). The issue that asked for ESD wrote ``eps_0(x_t, c)`` as the base
term; that is this target with ``eta - 1`` in place of ``eta``. As the official code does
(rohitgandikota/erasing), ``x_t`` is not a noised training image: each step draws a DDIM
step index ``i`` uniformly and samples ``x_t`` from the model being trained, conditioned on
``c`` with guidance ``start_guidance``, for ``i`` of the ``ddim_steps`` steps; the loss is
taken at that timestep. No data is read. Defaults: the official code's as checked in
``../shared/papers/NOTES.md`` (eta 2, 200 iterations, lr 5e-5, Adam) and its sampling
guidance 3; the official trains on one image per iteration, a batch here. With no text
cross-attention in a class-conditional UNet every weight trains (there is no ESD-x /
ESD-u choice of layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import UnlearnError
from ..base import register
from ..loop import TrainConfig, TrainedMethod
from ._common import forgotten_classes


@dataclass(frozen=True)
class ESDConfig(TrainConfig):
    steps: int | None = 200
    lr: float = 5e-5
    optimizer: str = "adam"
    batch_size: int = 8
    eta: float = 2.0  # the negative guidance of the target
    start_guidance: float = 3.0  # guidance of the partial sampling that makes x_t
    ddim_steps: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eta > 0 or self.start_guidance < 0 or self.ddim_steps < 1:
            raise UnlearnError("esd needs eta > 0, start_guidance >= 0 and ddim_steps >= 1")


@register
class ESD(TrainedMethod):
    name = "esd"
    summary = "Erase a condition: match the original's negatively guided noise (ESD)."
    request_kinds = ("class",)
    requires = ("denoise", "conditions", "sampling")
    Config = ESDConfig
    needs_reference = True

    def setup(self, model, ctx):
        self._classes = forgotten_classes(ctx, self.name)
        self._gen = ctx.generator(11)
        self._ddim = ctx.task.ddim(self.config.ddim_steps)

    def objective(self, model, ctx, t):
        cfg, task = self.config, ctx.task
        n = cfg.batch_size
        pick = torch.randint(len(self._classes), (n,), generator=self._gen)
        c = torch.as_tensor(self._classes)[pick]
        i = int(torch.randint(cfg.ddim_steps, (1,), generator=self._gen))
        seed = int(torch.randint(2**31 - 1, (1,), generator=self._gen))
        x_t = task.sample(
            model,
            c,
            guidance=cfg.start_guidance,
            steps=cfg.ddim_steps,
            seed=seed,
            stop_at=i,
            shape=task.image_shape(ctx.original),
        )
        model.train()
        ts = torch.full((n,), int(self._ddim.timesteps[i]), dtype=torch.long)
        with torch.no_grad(), self.reference_model(model) as ref:
            null = torch.full_like(c, task.null_class)
            e = task.eps(ref, torch.cat([x_t, x_t]), torch.cat([ts, ts]), torch.cat([c, null]))
            e_c, e_u = e.chunk(2)
            target = e_u - cfg.eta * (e_c - e_u)
        pred = task.eps(model, x_t, ts, c)
        return torch.nn.functional.mse_loss(pred, target)
