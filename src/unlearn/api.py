"""The Python API: unlearn part of a classifier's training data in one call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .data.core import ArrayData, as_array_data, split_request
from .errors import UnlearnError
from .methods.base import MethodConfig, RunRecord, UnlearnContext, get_method
from .requests import ForgetRequest
from .tasks.classifier import ClassifierTask, TrainRecipe

__all__ = ["unlearn", "train_classifier"]


def unlearn(
    method: str,
    model: nn.Module,
    train: ArrayData | tuple | torch.utils.data.Dataset,
    request: ForgetRequest,
    *,
    seed: int = 0,
    config: dict | MethodConfig | None = None,
    recipe: TrainRecipe | dict | None = None,
    model_factory: Callable[[int], nn.Module] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, RunRecord]:
    """Remove ``request`` from ``model`` (trained on ``train``) with the method named ``method``.

    ``train`` is the model's training data: an :class:`ArrayData`, a pair
    ``(x, y)`` of arrays/tensors, or a torch ``Dataset`` of ``(x, y)`` pairs.
    ``recipe`` and ``model_factory`` are only used by ``retrain`` (the
    oracle); without a factory, retraining re-initialises a copy of ``model``.
    Returns a new model (``model`` itself is never modified) and its record.
    """
    if not isinstance(model, nn.Module):
        raise UnlearnError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(request, ForgetRequest):
        raise UnlearnError(f"request must be a ForgetRequest, got {type(request).__name__}")
    data = as_array_data(train)
    n_cls = num_classes or data.num_classes
    task = ClassifierTask(n_cls, device)
    runner = get_method(method, config)
    runner.check(request, task)
    split = split_request(data, request)
    if not isinstance(recipe, TrainRecipe):
        recipe = TrainRecipe.from_dict(recipe)
    ctx = UnlearnContext(
        task=task,
        split=split,
        request=request,
        original=model,
        seed=seed,
        recipe=recipe,
        model_factory=model_factory,
    )
    return runner.run(model, ctx)


def train_classifier(
    model: nn.Module,
    train: ArrayData | tuple | torch.utils.data.Dataset,
    recipe: TrainRecipe | dict | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train ``model`` in place with ``recipe`` (the same loop the oracle uses)."""
    data = as_array_data(train)
    if not isinstance(recipe, TrainRecipe):
        recipe = TrainRecipe.from_dict(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ClassifierTask(data.num_classes, device).fit(model, data, recipe, seed)
    return model
