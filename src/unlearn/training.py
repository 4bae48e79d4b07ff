"""The one optimisation loop and the one batch stream, shared by every task and method.

Training the original and the oracle (a task's ``fit``) and every trainable
unlearning method run :func:`optimize`: ``steps`` optimiser steps on a loss
that draws its own batches, with hooks for gradient masks (after backward),
projections (after the step, e.g. FastClip), and an early stop. Batches come
from :func:`index_stream`: endless shuffled index batches (reshuffled each
pass) that a task turns into its own batch type with ``task.take``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .errors import UnlearnError

__all__ = [
    "epochs_to_steps",
    "index_stream",
    "make_optimizer",
    "make_scheduler",
    "optimize",
    "optimizer_slots",
    "train_state_mb",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "step")


def index_stream(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over ``range(n)``; a new permutation every pass."""
    if n <= 0:
        raise UnlearnError("cannot draw batches from an empty set")
    if batch_size < 1:
        raise UnlearnError(f"batch size must be >= 1, got {batch_size}")
    while True:
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            yield order[s : s + batch_size]


def epochs_to_steps(n: int, batch_size: int, epochs: float) -> int:
    """Optimiser steps for ``epochs`` passes over ``n`` items in batches (at least one)."""
    return max(1, int(round(epochs * -(-int(n) // int(batch_size)))))


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
    raise UnlearnError(f"unknown optimizer {name!r} ({', '.join(OPTIMIZERS)})")


def optimizer_slots(name: str, momentum: float = 0.9) -> int:
    """Per-parameter state tensors the optimizer keeps (Adam: two moments)."""
    if name in ("adam", "adamw"):
        return 2
    return 1 if momentum else 0


def train_state_mb(model: nn.Module, slots: int) -> float:
    """Training-state memory in MB: one gradient plus ``slots`` optimizer tensors per
    trainable parameter (sizes of the trainable tensors)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return n * (1 + slots) / 2**20


def make_scheduler(
    opt: torch.optim.Optimizer,
    name: str,
    steps: int,
    warmup_steps: int = 0,
    step_every: int | None = None,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``constant`` (with an optional linear warm-up), ``cosine`` to 0 over ``steps``,
    ``onecycle``, or ``step``: the rate times 0.1 every ``step_every`` steps (one epoch:
    the AMUN authors' ``StepLR(step_size=1, gamma=0.1)`` stepped per epoch)."""
    if name == "constant":
        if warmup_steps > 0:
            return torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / warmup_steps)
            )
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if name == "step":
        if not step_every or step_every < 1:
            raise UnlearnError("the 'step' schedule needs the steps of one epoch (step_every >= 1)")
        return torch.optim.lr_scheduler.StepLR(opt, step_size=step_every, gamma=0.1)
    if name == "onecycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(steps, 1))
    raise UnlearnError(f"unknown learning-rate schedule {name!r} ({', '.join(SCHEDULES)})")


def optimize(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    loss_fn: Callable[[int], torch.Tensor],
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    step_every: int | None = None,
    grad_clip: float = 0.0,
    after_backward: Sequence[Callable[[], None]] = (),
    after_step: Sequence[Callable[[], None]] = (),
    stop: Callable[[int], bool] | None = None,
) -> int:
    """Run up to ``steps`` optimiser steps on ``loss_fn(step)``; returns the steps taken.

    Per step: loss, backward, ``after_backward`` hooks (gradient masks), gradient-norm
    clipping (``grad_clip`` > 0), the optimiser step, ``after_step`` hooks (projections),
    the schedule, then ``stop(done)``. A non-finite loss ends the run with an error.
    """
    sched = make_scheduler(opt, schedule, steps, warmup_steps, step_every)
    params = [p for g in opt.param_groups for p in g["params"]]
    model.train()
    done = 0
    try:
        for t in range(int(steps)):
            loss = loss_fn(t)
            if not bool(torch.isfinite(loss.detach()).all()):
                raise UnlearnError(
                    f"the loss became {float(loss.detach())} at step {t}: lower the learning "
                    "rate or check the data"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for hook in after_backward:
                hook()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            for hook in after_step:
                hook()
            if sched is not None:
                sched.step()
            done += 1
            if stop is not None and stop(done):
                break
    finally:
        model.eval()
    return done
