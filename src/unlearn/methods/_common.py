"""Pieces several methods share: re-initialisation, random relabelling, loops."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..data.core import ArrayData
from ..errors import UnlearnError


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer re-initialised (seeded): a fresh network."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


def random_other_labels(
    data: ArrayData, num_classes: int, gen: torch.Generator, allowed: list[int] | None = None
) -> torch.Tensor:
    """One random label per sample, never the sample's own (from ``allowed`` classes if given)."""
    y = data.y
    if allowed is not None:
        pool = torch.tensor(allowed, dtype=torch.long)
        pick = torch.randint(len(pool), (len(y),), generator=gen)
        return pool[pick]
    shift = torch.randint(1, num_classes, (len(y),), generator=gen)
    return (y + shift) % num_classes


def run_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    loss_fn: Callable[[int], torch.Tensor],
    after_backward: Callable[[], None] | None = None,
    schedule: str = "constant",
) -> int:
    """``steps`` optimiser steps on ``loss_fn(step)``; returns the count.

    ``schedule`` is ``constant`` or ``cosine`` (learning rate annealed to 0).
    """
    sched = None
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    elif schedule != "constant":
        raise UnlearnError(f"unknown learning-rate schedule {schedule!r} (constant or cosine)")
    model.train()
    for t in range(steps):
        loss = loss_fn(t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        if sched is not None:
            sched.step()
    model.eval()
    return steps
