"""Pieces several methods share: re-initialisation."""

from __future__ import annotations

import copy

import torch
from torch import nn


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
