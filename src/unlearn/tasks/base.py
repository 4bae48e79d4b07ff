"""The task protocol every model family implements.

A task knows how to handle one family's models and data; methods only talk to
a task, never ask which family it is. What a task can do is declared in
``provides`` (capability names), and a method declares what it ``requires``;
:meth:`Task.missing` tells which requirements a task lacks, so a method refuses
with a message naming them.

Capabilities (the names methods may require):

- ``logprob``: :meth:`example_logprob`, the differentiable log-likelihood of each
  example's target (a label, an answer), with its length; the per-example loss,
  gradient ascent, gradient difference, NPO and SimNPO are built on it.
- ``loss``: :meth:`mean_loss`, the differentiable training loss of a batch (what
  fine-tuning minimises: cross-entropy, the answers' negative log-likelihood, or a
  diffusion model's denoising loss).
- ``kl``: :meth:`kl`, the mean KL divergence ``KL(p_ref || p)`` of the model's
  output distributions to a reference model's on a batch.
- ``alternatives:<kind>``: :meth:`alternative_targets` builds the forget set with
  other targets (``random_label`` for classifiers, ``refusal`` for language models).
- ``fit``: :meth:`fit` trains a model with the oracle's recipe (retraining).
- ``membership``: :meth:`membership_scores`, a per-example loss without gradients,
  for loss-based membership attacks.
- ``reinit``: :meth:`fresh_model`, an untrained copy of a model's architecture.
- ``lora``: :meth:`lora` wraps a model in fresh LoRA adapters (``peft``).
- ``layers``: ``layers(model)``, the model's stack of blocks (decoder layers), input
  side first, for methods that work block by block (KUnBR).
- ``classes``: a classifier over a fixed label set (``num_classes``, ``logits``,
  ``loss(model, x, y)``), for methods that only make sense on one (SCRUB, Fisher,
  AMUN, TRW, the influence step).
- ``convex``: a model with a closed-form removal (certified Newton removal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import UnlearnError, UnsupportedRequestError
from ..training import index_stream
from ..validate import dataclass_from_mapping

__all__ = ["Task", "register_task", "available_tasks"]


class Task:
    """Base of every task; subclasses implement the capabilities they list in ``provides``."""

    family: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset()
    #: the dataclass of the oracle's training recipe (None: the model is its own recipe)
    recipe_type: ClassVar[type | None] = None
    device: torch.device = torch.device("cpu")

    def parse_recipe(self, spec: Any) -> Any:
        """A recipe from ``None`` (the defaults), a mapping or a recipe instance."""
        rt = self.recipe_type
        if rt is None or isinstance(spec, rt):
            return spec
        return dataclass_from_mapping(rt, spec, "training")

    def check_model(self, model: Any) -> None:
        """Raise if ``model`` is not a model of this family."""
        if not isinstance(model, nn.Module):
            raise UnlearnError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    def as_data(self, data: Any) -> Any:
        """``data`` as this family's data set type."""
        return data

    # -- data -------------------------------------------------------------------
    def size(self, data: Any) -> int:
        return len(data)

    def take(self, data: Any, idx: torch.Tensor | Sequence[int]) -> Any:
        """The batch of ``data`` at positions ``idx`` (the family's own batch type)."""
        raise NotImplementedError

    def stream(
        self, data: Any, batch_size: int, gen: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, Any]]:
        """Endless shuffled ``(indices, batch)`` pairs over ``data``."""
        for idx in index_stream(self.size(data), batch_size, gen):
            yield idx, self.take(data, idx)

    # -- objectives ---------------------------------------------------------------
    def example_logprob(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logp, n)``: each example's target log-likelihood (differentiable) and its
        length (1 for a label, the answer's token count for a sequence)."""
        raise NotImplementedError

    def per_example_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Length-normalised negative log-likelihood of each example (differentiable)."""
        logp, n = self.example_logprob(model, batch)
        return -(logp / n)

    def mean_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The batch's mean per-example loss (what fine-tuning minimises)."""
        return self.per_example_loss(model, batch).mean()

    def kl(self, model: nn.Module, batch: Any, reference: Callable) -> torch.Tensor:
        """Mean ``KL(p_ref || p)`` on ``batch``; ``reference()`` is a context manager that
        yields the reference model (entered after the model's own forward pass, so a
        LoRA model can serve as its own reference with its adapters off)."""
        raise NotImplementedError

    def alternative_targets(self, data: Any, kind: str, gen: torch.Generator, **info) -> Any:
        raise NotImplementedError

    def membership_scores(self, model: nn.Module, data: Any) -> np.ndarray:
        raise NotImplementedError

    def fit(self, model: nn.Module, data: Any, recipe: Any, seed: int) -> int:
        raise NotImplementedError

    def lora(self, model: nn.Module, rank: int, alpha: float, targets: Sequence[str]):
        raise NotImplementedError

    def fresh_model(self, model: Any, seed: int) -> Any:
        """An untrained model like ``model`` (capability ``reinit``), for retraining."""
        raise NotImplementedError

    # -- models ---------------------------------------------------------------------
    def to_device(self, model: Any) -> Any:
        """The model on this task's device (a torch module is moved in place)."""
        return model.to(self.device) if isinstance(model, nn.Module) else model

    def finish(self, model: Any) -> Any:
        """Put a finished model in evaluation mode."""
        if isinstance(model, nn.Module):
            model.eval()
        return model

    # -- requirements -----------------------------------------------------------------
    @classmethod
    def missing(cls, requires: Sequence[str]) -> list[str]:
        return [r for r in requires if r not in cls.provides]

    @classmethod
    def require(cls, requires: Sequence[str], who: str) -> None:
        """Raise :class:`UnsupportedRequestError` naming what ``who`` needs and this task lacks."""
        lack = cls.missing(requires)
        if lack:
            fams = [t.family for t in available_tasks().values() if not t.missing(requires)]
            raise UnsupportedRequestError(
                f"{who} needs a task with {', '.join(lack)}, which {cls.family} models do not "
                f"provide (it runs on: {', '.join(fams) or 'no registered family'})"
            )


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task family known (for listings and error messages)."""
    if not cls.family:
        raise TypeError(f"{cls.__name__} has no family")
    _TASKS[cls.family] = cls
    return cls


def available_tasks() -> dict[str, type[Task]]:
    from . import _load_all

    _load_all()
    return dict(_TASKS)
