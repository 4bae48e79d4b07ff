"""The Python API: one call unlearns part of any model family's training data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.core import ArrayData, Split, split_request
from .errors import UnlearnError
from .methods.base import MethodConfig, RunRecord, UnlearnContext, get_method
from .requests import ForgetRequest, SampleRequest
from .tasks.base import Task
from .tasks.classifier import ClassifierTask, TrainRecipe

__all__ = ["unlearn", "unlearn_lm", "train_classifier"]


def _default_task(model: Any, data: Any, num_classes: int | None, device) -> Task:
    from .certified import CertifiedLogReg
    from .tasks.convex import ConvexTask, MatrixData

    if isinstance(model, CertifiedLogReg) or isinstance(data, MatrixData):
        return ConvexTask()
    if isinstance(model, nn.Module) and not isinstance(data, ArrayData):
        first = None
        try:
            first = data[0] if len(data) else None
        except (TypeError, KeyError, IndexError):
            first = None
        if isinstance(first, tuple | list) and len(first) == 2 and isinstance(first[0], str):
            raise UnlearnError(
                "question-answer data needs a language-model task: pass "
                "task=unlearn.tasks.CausalLMTask(tokenizer) (or use unlearn_lm)"
            )
    arr = ClassifierTask(2, device).as_data(data)
    return ClassifierTask(num_classes or arr.num_classes, device)


def unlearn(
    method: str,
    model: Any,
    train: Any,
    request: ForgetRequest,
    *,
    task: Task | None = None,
    seed: int = 0,
    config: dict | MethodConfig | None = None,
    recipe: Any = None,
    model_factory: Callable[[int], Any] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    probe: Callable[[Any], float] | None = None,
    alternatives: dict | None = None,
    proxies: dict | None = None,
) -> tuple[Any, RunRecord]:
    """Remove ``request`` from ``model`` (trained on ``train``) with the method named ``method``.

    ``task`` says how to handle the model family (:mod:`unlearn.tasks`); without one,
    a classifier task is assumed (a ``CertifiedLogReg`` model gets the convex task).
    ``train`` is the model's training data in the task's form: for a classifier an
    :class:`ArrayData`, a pair ``(x, y)`` of arrays/tensors, or a torch ``Dataset`` of
    ``(x, y)`` pairs; for a language model a ``PairData`` or a list of
    ``(question, answer)`` pairs. ``recipe`` and ``model_factory`` serve ``retrain``
    (the oracle); ``probe`` and ``alternatives`` are optional method inputs (an early
    stop, alternative targets such as LUNE's replacement answers); ``proxies`` names
    auxiliary models a method computes with in place of the target (R2F fits its
    gradient decoder on ``proxies["proxy"]``, e.g. the base model of a fine-tuned
    target). Returns a new model (``model`` itself and the proxies are never modified)
    and the run's record.
    """
    if not isinstance(request, ForgetRequest):
        raise UnlearnError(f"request must be a ForgetRequest, got {type(request).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UnlearnError(f"seed must be a non-negative integer, got {seed!r}")
    if task is None:
        task = _default_task(model, train, num_classes, device)
    elif not isinstance(task, Task):
        raise UnlearnError(f"task must be a unlearn Task, got {type(task).__name__}")
    task.check_model(model)
    data = task.as_data(train)
    runner = get_method(method, config, family=task.family)
    runner.check(request, task)
    split = split_request(data, request)
    ctx = UnlearnContext(
        task=task,
        split=split,
        request=request,
        original=model,
        seed=seed,
        recipe=task.parse_recipe(recipe),
        model_factory=model_factory,
        probe=probe,
        # raw lists become the task's data; data sets and structured targets (SIU's) pass
        alternatives={
            k: task.as_data(v) if isinstance(v, list | tuple) else v
            for k, v in (alternatives or {}).items()
        },
        proxies=_check_proxies(proxies),
    )
    return runner.run(model, ctx)


def _check_proxies(proxies: dict | None) -> dict:
    if proxies is None:
        return {}
    if not isinstance(proxies, dict) or not all(isinstance(k, str) for k in proxies):
        raise UnlearnError(
            f"proxies must map names to models, e.g. {{'proxy': base_model}}, got {proxies!r}"
        )
    return dict(proxies)


def train_classifier(
    model: nn.Module,
    train: ArrayData | tuple | torch.utils.data.Dataset,
    recipe: TrainRecipe | dict | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train ``model`` in place with ``recipe`` (the same loop the oracle uses)."""
    task = ClassifierTask(2, device)
    data = task.as_data(train)
    task = ClassifierTask(max(data.num_classes, 2), device)
    recipe = task.parse_recipe(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        task.fit(model, data, recipe, seed)
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
    probe: Callable[[Any], float] | None = None,
    paraphrases: list | None = None,
    proxy: nn.Module | None = None,
) -> tuple[nn.Module, RunRecord]:
    """A thin wrapper of :func:`unlearn` for a causal LM: forget the ``forget`` pairs,
    keep the ``retain`` pairs (optional).

    ``forget`` and ``retain`` are ``(question, answer)`` pairs, rendered with the
    tokenizer's chat template; ``negatives`` pairs each forget question with a
    replacement answer (LUNE's ``negatives: replace``). ``paraphrases`` gives each
    forget pair its paraphrased pairs (one pair or a list, in the forget set's order)
    and ``proxy`` the model R2F fits its decoder on. ``model`` is never modified;
    returns the unlearned model and its record.
    """
    from .tasks.causal_lm import CausalLMTask, PairData

    if not isinstance(model, nn.Module):
        raise UnlearnError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    f = PairData(forget, name="forget")
    r = PairData(retain or [], name="retain")
    alt = {"replace": PairData(negatives, name="negatives")} if negatives is not None else {}
    if paraphrases is not None:
        alt["paraphrases"] = list(paraphrases)
    task = CausalLMTask(tokenizer, device, system_prompt=system_prompt)
    runner = get_method(method, config, family=task.family)
    request = SampleRequest(indices=list(range(len(f)))) if len(f) else None
    if request is None:
        raise UnlearnError("the forget set is empty")
    runner.check(request, task)
    # the request is built here, so the split is too: a retain set may be empty (GA)
    split = Split(PairData.concat([f, r]), np.arange(len(f)), np.arange(len(f), len(f) + len(r)))
    ctx = UnlearnContext(
        task=task,
        split=split,
        request=request,
        original=model,
        seed=seed,
        probe=probe,
        alternatives=alt,
        proxies={} if proxy is None else {"proxy": proxy},
    )
    return runner.run(model, ctx)
