"""The classifier task: cross-entropy loss, batched prediction, and the training recipe."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.core import ArrayData, iterate_batches
from ..errors import UnlearnError
from ..models.spectral import SpectralClipper
from ..training import index_stream, make_optimizer, optimize
from ..validate import check_fields, dataclass_from_mapping, resolve_device
from .base import Task, register_task

__all__ = ["ClassifierTask", "TrainRecipe", "make_optimizer"]  # make_optimizer: from training


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
        check_fields(self, "training recipe")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UnlearnError("training recipe needs epochs >= 1, batch_size >= 1 and lr > 0")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise UnlearnError(f"unknown optimizer {self.optimizer!r} (adamw, adam or sgd)")
        if not self.weight_decay >= 0 or not 0 <= self.momentum < 1:
            raise UnlearnError(
                "training recipe needs weight_decay >= 0 and momentum in [0, 1), got "
                f"{self.weight_decay!r} and {self.momentum!r}"
            )
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
        return dataclass_from_mapping(cls, spec, "training")

    def to_dict(self) -> dict:
        return asdict(self)


@register_task
class ClassifierTask(Task):
    """Loss, prediction and training for a model that maps inputs to class logits.

    Data is an :class:`ArrayData`; a batch is a pair ``(x, y)`` of tensors.
    """

    family = "classifier"
    recipe_type = TrainRecipe
    provides = frozenset(
        {
            "logprob",
            "loss",
            "kl",
            "alternatives:random_label",
            "fit",
            "reinit",
            "membership",
            "classes",
        }
    )

    def __init__(
        self, num_classes: int, device: str | torch.device = "cpu", eval_batch: int = 1024
    ):
        if num_classes < 2:
            raise UnlearnError("a classifier needs at least two classes")
        self.num_classes = int(num_classes)
        self.device = resolve_device(device)
        self.eval_batch = int(eval_batch)

    # -- losses -----------------------------------------------------------
    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        return F.cross_entropy(model(x.to(self.device)), y.to(self.device), reduction=reduction)

    # -- the task protocol ------------------------------------------------------
    def as_data(self, data) -> ArrayData:
        from ..data.core import as_array_data

        return as_array_data(data)

    def take(self, data: ArrayData, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return data.x[idx], data.y[idx]

    def example_logprob(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logp = -self.loss(model, x, y, reduction="none")
        return logp, torch.ones_like(logp)

    def mean_loss(self, model: nn.Module, batch) -> torch.Tensor:
        return self.loss(model, *batch)

    def kl(self, model: nn.Module, batch, reference) -> torch.Tensor:
        x = batch[0].to(self.device)
        log_p = F.log_softmax(model(x), dim=1)
        with torch.no_grad(), reference() as ref:
            p_ref = torch.softmax(ref(x), dim=1)
        return F.kl_div(log_p, p_ref, reduction="batchmean")

    def alternative_targets(
        self, data: ArrayData, kind: str, gen: torch.Generator, forgotten_classes=()
    ) -> ArrayData:
        """``random_label``: every sample relabelled at random, never with its own label
        (for a class request, with one of the remaining classes)."""
        if kind != "random_label":
            raise UnlearnError(f"a classifier has no {kind!r} alternative targets")
        if forgotten_classes:
            pool = torch.tensor(
                [c for c in range(self.num_classes) if c not in forgotten_classes],
                dtype=torch.long,
            )
            labels = pool[torch.randint(len(pool), (len(data),), generator=gen)]
        else:
            shift = torch.randint(1, self.num_classes, (len(data),), generator=gen)
            labels = (data.y + shift) % self.num_classes
        return ArrayData(data.x, labels, data.classes, f"{data.name}-relabelled")

    def fresh_model(self, model: nn.Module, seed: int) -> nn.Module:
        from ..methods._common import reinitialise

        return reinitialise(model, seed)

    def membership_scores(self, model: nn.Module, data: ArrayData):
        return self.per_sample_loss(model, data).numpy()

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
        total = recipe.epochs * -(-len(data) // recipe.batch_size)
        stream = index_stream(len(data), recipe.batch_size, gen)
        clipper: SpectralClipper | None = None

        def loss_fn(t: int) -> torch.Tensor:
            nonlocal clipper
            xb, yb = self.take(data, next(stream))
            if recipe.spectral_clip is not None and clipper is None:
                clipper = SpectralClipper(
                    model, xb.to(self.device), recipe.spectral_clip, recipe.spectral_iters
                )
            return self.loss(model, xb, yb)

        def clip() -> None:
            if clipper is not None:
                clipper.clip_()

        steps = optimize(model, opt, total, loss_fn, schedule=recipe.schedule, after_step=[clip])
        if clipper is not None:
            # A last, more thorough clip, so that the trained model itself meets the bound.
            clipper.clip_(iters=10 * recipe.spectral_iters, rounds=20)
        model.eval()
        return steps
