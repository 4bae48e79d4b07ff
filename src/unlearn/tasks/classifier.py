"""The classifier task: cross-entropy loss, batched prediction, and the training recipe."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..data.core import ArrayData, iterate_batches
from ..errors import UnlearnError
from ..models.spectral import SpectralClipper

__all__ = ["ClassifierTask", "TrainRecipe", "make_optimizer"]


@dataclass(frozen=True)
class TrainRecipe:
    """How the original model and the oracle are trained (the same recipe for both).

    ``spectral_clip``, when set, keeps the spectral norm of every dense and
    convolutional layer at or below that value during training (FastClip-style
    clipping after each optimiser step, see :mod:`unlearn.models.spectral`), with
    ``spectral_iters`` warm-started power iterations per layer and step, and a
    more thorough clip (ten times the iterations) after the last step.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "onecycle"
    spectral_clip: float | None = None
    spectral_iters: int = 2

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UnlearnError("training recipe needs epochs >= 1, batch_size >= 1 and lr > 0")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise UnlearnError(f"unknown optimizer {self.optimizer!r} (adamw, adam or sgd)")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise UnlearnError(f"unknown schedule {self.schedule!r} (onecycle, cosine, constant)")
        clip = self.spectral_clip
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, int | float) or not 0 < clip < math.inf
        ):
            raise UnlearnError(f"spectral_clip must be a positive number or None, got {clip!r}")
        iters = self.spectral_iters
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise UnlearnError(f"spectral_iters must be an integer >= 1, got {iters!r}")

    @classmethod
    def from_dict(cls, spec: dict | None) -> TrainRecipe:
        spec = dict(spec or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UnlearnError(f"unknown training option(s) {unknown} (known: {sorted(known)})")
        return cls(**spec)

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise UnlearnError(f"unknown optimizer {name!r} (adamw, adam or sgd)")


class ClassifierTask:
    """Loss, prediction and training for a model that maps inputs to class logits."""

    family = "classifier"

    def __init__(
        self, num_classes: int, device: str | torch.device = "cpu", eval_batch: int = 1024
    ):
        if num_classes < 2:
            raise UnlearnError("a classifier needs at least two classes")
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.eval_batch = int(eval_batch)

    # -- losses -----------------------------------------------------------
    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        return F.cross_entropy(model(x.to(self.device)), y.to(self.device), reduction=reduction)

    # -- prediction ---------------------------------------------------------
    @torch.no_grad()
    def logits(self, model: nn.Module, data: ArrayData) -> torch.Tensor:
        was_training = model.training
        model.eval()
        # on the model's own device: the original a method reads (TRW) may stay where the
        # caller keeps it while the working copy trains on ``self.device``
        param = next(model.parameters(), None)
        dev = self.device if param is None else param.device
        try:
            out = [
                model(xb.to(dev)).float().cpu()
                for xb, _ in iterate_batches(data, self.eval_batch, shuffle=False)
            ]
        finally:
            model.train(was_training)
        if not out:
            return torch.zeros(0, self.num_classes)
        return torch.cat(out)

    def probs(self, model: nn.Module, data: ArrayData) -> torch.Tensor:
        return torch.softmax(self.logits(model, data), dim=1)

    def per_sample_loss(self, model: nn.Module, data: ArrayData) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, data), data.y, reduction="none")

    # -- training -----------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        data: ArrayData,
        recipe: TrainRecipe,
        seed: int,
    ) -> int:
        """Train ``model`` on ``data`` with ``recipe``; returns the number of optimiser steps."""
        model.to(self.device).train()
        gen = torch.Generator().manual_seed(int(seed))
        opt = make_optimizer(
            model.parameters(), recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum
        )
        steps_per_epoch = -(-len(data) // recipe.batch_size)
        total = recipe.epochs * steps_per_epoch
        sched = None
        if recipe.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total)
        elif recipe.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        steps = 0
        clipper = None
        for _ in range(recipe.epochs):
            for xb, yb in iterate_batches(data, recipe.batch_size, gen):
                if recipe.spectral_clip is not None and clipper is None:
                    clipper = SpectralClipper(
                        model, xb.to(self.device), recipe.spectral_clip, recipe.spectral_iters
                    )
                loss = self.loss(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if clipper is not None:
                    clipper.clip_()
                if sched is not None:
                    sched.step()
                steps += 1
        if clipper is not None:
            # A last, more thorough clip, so that the trained model itself meets the bound.
            clipper.clip_(iters=10 * recipe.spectral_iters, rounds=20)
        model.eval()
        return steps
