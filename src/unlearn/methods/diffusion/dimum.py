"""DiMUM: unlearning by memorising alternative data ("Towards irreversible machine
unlearning for diffusion models"). The paper has no public code; this is reconstructed
from its description: the retain set's denoising loss plus ``lam`` times the denoising loss
of *alternative* images paired with the forgotten condition, so the condition learns to
produce the alternative instead (and, the paper argues, a fine-tuning attack that never
shows the forgotten class has nothing to bring back).

The alternative (``alternative``): ``class`` (training images of another class,
``alt_class``, by default the next class that is kept), ``noise`` (fixed Gaussian-noise
images, seeded) or ``pattern`` (one fixed checkerboard), or images given in the context as
``alternatives["dimum"]`` (an ``ArrayData`` whose labels are ignored). Each step draws a
batch of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.core import ArrayData
from ...errors import UnlearnError
from ..base import register
from ..loop import TrainConfig, TrainedMethod
from ._common import forgotten_classes, other_class


@dataclass(frozen=True)
class DiMUMConfig(TrainConfig):
    steps: int | None = 500
    lr: float = 1e-4
    optimizer: str = "adam"
    batch_size: int = 64
    lam: float = 1.0
    alternative: str = "class"
    alt_class: int | None = None
    alt_size: int = 256  # images of a noise or pattern alternative

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alternative not in ("class", "noise", "pattern"):
            raise UnlearnError(
                f"dimum alternative must be class, noise or pattern, got {self.alternative!r}"
            )
        if not self.lam > 0 or self.alt_size < 1:
            raise UnlearnError("dimum needs lam > 0 and alt_size >= 1")
        if self.alt_class is not None and self.alternative != "class":
            raise UnlearnError("alt_class is for alternative: class")


@register
class DiMUM(TrainedMethod):
    name = "dimum"
    summary = "The forgotten condition memorises alternative images; retain loss keeps the rest."
    request_kinds = ("class",)
    requires = ("loss", "denoise", "conditions")
    Config = DiMUMConfig
    epochs_over = "retain"

    def alternative_images(self, ctx) -> torch.Tensor:
        cfg = self.config
        if "dimum" in ctx.alternatives:
            alt = ctx.alternatives["dimum"]
            return alt.x if isinstance(alt, ArrayData) else torch.as_tensor(alt).float()
        shape = tuple(ctx.forget.x.shape[1:])
        if cfg.alternative == "noise":
            gen = ctx.generator(31)
            return torch.randn((cfg.alt_size, *shape), generator=gen).clamp(-1, 1)
        if cfg.alternative == "pattern":
            h, w = shape[-2:]
            board = ((torch.arange(h)[:, None] // 2 + torch.arange(w)[None, :] // 2) % 2) * 2 - 1
            return board.float().expand(cfg.alt_size, *shape).clone()
        forgotten = self._classes
        k = ctx.task.num_classes
        alt = (
            cfg.alt_class if cfg.alt_class is not None else other_class(forgotten[0], forgotten, k)
        )
        if alt in forgotten or not 0 <= alt < k:
            raise UnlearnError(f"dimum alt_class {alt} must be a kept class")
        x = ctx.retain.x[ctx.retain.y == alt]
        if len(x) == 0:
            raise UnlearnError(f"the retain set has no images of alternative class {alt}")
        return x

    def setup(self, model, ctx):
        self._classes = forgotten_classes(ctx, self.name)
        alt = self.alternative_images(ctx)
        if tuple(alt.shape[1:]) != tuple(ctx.forget.x.shape[1:]):
            raise UnlearnError(
                f"alternative images have shape {tuple(alt.shape[1:])}, the data "
                f"{tuple(ctx.forget.x.shape[1:])}"
            )
        gen = ctx.generator(32)
        labels = torch.as_tensor(self._classes)[
            torch.randint(len(self._classes), (len(alt),), generator=gen)
        ]
        self._extra["alternative_images"] = len(alt)
        self._alt = self.stream(ctx, ArrayData(alt, labels, ctx.forget.classes, "alternative"), 33)
        self._retain = self.stream(ctx, ctx.retain, 34)

    def objective(self, model, ctx, t):
        task = ctx.task
        _, retain = next(self._retain)
        _, (xa, ca) = next(self._alt)
        return task.mean_loss(model, retain) + self.config.lam * task.denoise_loss(model, xa, ca)
