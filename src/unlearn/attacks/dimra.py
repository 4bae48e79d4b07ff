"""DiMRA, the diffusion-model relearning attack ("Towards irreversible machine unlearning
for diffusion models"): plain denoising fine-tuning of an unlearned model on an auxiliary
set that holds none of the forgotten class, tracking how often the forgotten class comes
back as the attack goes on.

The attacker knows nothing of what was unlearned: the objective is the ordinary
``E ||eps - eps_theta(x_t | c)||^2`` over the auxiliary images and their labels (with the
model's condition dropout). The auxiliary set is ``retain`` (the training images of the
kept classes) or ``generated`` (images the attacked model itself generates for the kept
classes, a data-free attacker). Public reimplementations on Stable Diffusion use Adam,
lr 1e-5, 200 steps, batch 8; a scenario states its own strength (steps, lr, batch).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.core import ArrayData
from ..errors import UnlearnError
from ..training import index_stream, make_optimizer, optimize
from ..validate import check_fields

__all__ = ["DiMRAConfig", "dimra"]


@dataclass(frozen=True)
class DiMRAConfig:
    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 32
    optimizer: str = "adam"
    every: int = 50  # checkpoints: the forgotten-class rate is measured every this many steps
    data: str = "retain"  # or "generated"
    generated_per_class: int = 64  # images per kept class of a generated auxiliary set
    samples: int = 100  # forgotten-class samples a benchmark judges at each checkpoint

    def __post_init__(self) -> None:
        check_fields(self, "dimra")
        if self.steps < 1 or self.batch_size < 1 or self.every < 1 or not self.lr > 0:
            raise UnlearnError("dimra needs steps, batch_size and every >= 1 and lr > 0")
        if self.data not in ("retain", "generated"):
            raise UnlearnError(f"dimra data must be retain or generated, got {self.data!r}")
        if self.generated_per_class < 1 or self.samples < 1:
            raise UnlearnError("dimra generated_per_class and samples must be >= 1")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise UnlearnError(
                f"dimra optimizer must be adam, adamw or sgd, got {self.optimizer!r}"
            )


def auxiliary_set(task, model, retain: ArrayData, kept: list[int], cfg: DiMRAConfig, seed: int):
    """The attack's auxiliary data: the retain images, or the model's own samples of the
    kept classes (labelled with the class they were asked for)."""
    if cfg.data == "retain":
        if len(retain) == 0:
            raise UnlearnError("dimra on retain data needs a non-empty retain set")
        return retain
    from ..tasks.diffusion import labels_for

    labels = labels_for(kept, cfg.generated_per_class)
    images = task.sample(model, labels, seed=seed)
    return ArrayData(images, labels, retain.classes, "generated", check_finite=False)


def dimra(
    task,
    model: torch.nn.Module,
    aux: ArrayData,
    cfg: DiMRAConfig,
    measure: Callable[[torch.nn.Module], dict],
    seed: int,
) -> tuple[torch.nn.Module, list[dict]]:
    """Fine-tune a copy of ``model`` on ``aux`` for ``cfg.steps`` steps; ``measure(model)``
    (the forgotten-class rate and whatever else a scenario tracks) is called before the
    first step and every ``cfg.every`` steps and after the last. Returns the attacked copy
    and the checkpoints ``[{"step": s, **measure(model)}, ...]``; ``model`` is unchanged."""
    attacked = copy.deepcopy(model)
    for p in attacked.parameters():
        p.requires_grad_(True)
    trace = [{"step": 0, **measure(attacked)}]
    gen = torch.Generator().manual_seed(int(seed))
    stream = index_stream(len(aux), cfg.batch_size, gen)
    opt = make_optimizer(attacked.parameters(), cfg.optimizer, cfg.lr)

    def loss_fn(t: int) -> torch.Tensor:
        return task.mean_loss(attacked, task.take(aux, next(stream)))

    def checkpoint(done: int) -> bool:
        if done % cfg.every == 0 or done == cfg.steps:
            trace.append({"step": done, **measure(attacked)})
        return False

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        optimize(attacked, opt, cfg.steps, loss_fn, stop=checkpoint)
    attacked.eval()
    return attacked, trace
