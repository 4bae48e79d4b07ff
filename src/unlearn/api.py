"""The Python API: unlearn part of a classifier's training data, or facts from a causal LM,
in one call."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .data.core import ArrayData, as_array_data, split_request
from .errors import UnlearnError
from .methods.base import MethodConfig, RunRecord, UnlearnContext, get_method
from .requests import ForgetRequest
from .tasks.classifier import ClassifierTask, TrainRecipe

__all__ = ["unlearn", "unlearn_lm", "train_classifier"]


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


def unlearn_lm(
    method: str,
    model: nn.Module,
    tokenizer,
    forget: list[tuple[str, str]],
    retain: list[tuple[str, str]] | None = None,
    *,
    seed: int = 0,
    config: dict | MethodConfig | None = None,
    negatives: list[tuple[str, str]] | None = None,
    system_prompt: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, RunRecord]:
    """Make a causal LM forget question-answer pairs with the LM method named ``method``.

    ``forget`` and ``retain`` are ``(question, answer)`` pairs, rendered with the
    tokenizer's chat template; ``negatives`` pairs each forget question with a
    replacement answer (LUNE's ``negatives: replace``). ``model`` is never
    modified; returns the unlearned model and its record.
    """
    from .methods.llm.base import LMUnlearnContext
    from .tasks.causal_lm import CausalLMTask

    if not isinstance(model, nn.Module):
        raise UnlearnError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, pairs in (
        ("forget", forget),
        ("retain", retain or []),
        ("negatives", negatives or []),
    ):
        bad = [
            p
            for p in pairs
            if not (
                isinstance(p, tuple | list) and len(p) == 2 and all(isinstance(t, str) for t in p)
            )
        ]
        if bad:
            raise UnlearnError(f"{name} must hold (question, answer) string pairs, got {bad[0]!r}")
    runner = get_method(method, config)
    if "causal_lm" not in runner.families:
        raise UnlearnError(f"method {method!r} is not a language-model method")
    task = CausalLMTask(tokenizer, device, system_prompt=system_prompt)
    ctx = LMUnlearnContext(
        task,
        [tuple(p) for p in forget],
        [tuple(p) for p in (retain or [])],
        model,
        seed,
        negatives=[tuple(p) for p in negatives] if negatives is not None else None,
    )
    return runner.run(model, ctx)
