"""The one training loop of trainable methods, with its hooks.

A :class:`TrainedMethod` defines :meth:`TrainedMethod.setup` (its batch streams
and anything computed once) and :meth:`TrainedMethod.objective` (one step's loss).
The loop around them is shared by every family: optional LoRA adapters
(``lora_rank`` > 0, backbone frozen, merged or kept at the end), the optimizer
and schedule, gradient masks (``grad_masks``, SalUn), post-step projections
(``after_step_hooks``), gradient clipping, an early stop on a probe
(``target_forget_acc``, checked every ``check_every`` steps; the probe's time is
not counted), and the training-state memory of what it trains. Reference
outputs (KL, NPO, DPO) come from the frozen original: under LoRA, the model
with its adapters switched off, so no second copy is held.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UnlearnError
from ..training import (
    OPTIMIZERS,
    epochs_to_steps,
    make_optimizer,
    optimize,
    optimizer_slots,
    train_state_mb,
)
from .base import Method, MethodConfig, UnlearnContext

__all__ = ["TrainConfig", "TrainedMethod"]


@dataclass(frozen=True)
class TrainConfig(MethodConfig):
    """Options of the shared loop.

    The run takes ``steps`` optimiser steps if given, else ``epochs`` passes (of
    ``batch_size``) over the set the method counts epochs on (the forget set for
    most methods, the retain set for fine-tuning and NegGrad+). ``schedule`` is
    ``constant``, ``cosine`` or ``step`` (x0.1 after every epoch, as the AMUN authors
    run); ``grad_clip`` > 0 clips the gradient norm.
    ``lora_rank`` > 0 trains LoRA adapters of that rank on ``lora_targets`` (the
    task's defaults when empty) instead of all weights, ``merge``-d into the
    weights at the end or kept. ``target_forget_acc`` stops once the context's
    probe reports at most that many percent, checked every ``check_every`` steps.
    """

    epochs: float = 5.0
    steps: int | None = None
    lr: float = 1e-4
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    grad_clip: float = 0.0
    lora_rank: int = 0
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = ()
    merge: bool = True
    #: train only the parameters whose name contains one of these (empty: all), e.g.
    #: ``class_embedding`` for ESD on a class-conditional UNet (ESD-x trains only the
    #: layers the condition enters through)
    train_only: tuple[str, ...] = ()
    target_forget_acc: float | None = None
    check_every: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = []
        if not self.epochs > 0:
            bad.append(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            bad.append(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            bad.append(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.check_every < 1:
            bad.append("batch_size and check_every must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            bad.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "step"):
            bad.append(f"schedule must be 'constant', 'cosine' or 'step', got {self.schedule!r}")
        if self.weight_decay < 0 or self.grad_clip < 0 or not 0 <= self.momentum < 1:
            bad.append("weight_decay and grad_clip must be >= 0, momentum in [0, 1)")
        if self.lora_rank < 0 or not self.lora_alpha > 0:
            bad.append("lora_rank must be >= 0 and lora_alpha > 0")
        if self.train_only and self.lora_rank > 0:
            bad.append("train_only and lora_rank > 0 exclude each other")
        t = self.target_forget_acc
        if t is not None and not 0 <= t <= 100:
            bad.append(f"target_forget_acc is a percentage in [0, 100], got {t}")
        if bad:
            raise UnlearnError("; ".join(bad))


class TrainedMethod(Method):
    """Base of methods that train: subclasses define :meth:`setup` and :meth:`objective`."""

    Config: ClassVar[type[MethodConfig]] = TrainConfig
    #: which set ``epochs`` counts passes over: "forget" or "retain"
    epochs_over: ClassVar[str] = "forget"
    #: whether :meth:`objective` reads the frozen original (KL, NPO, DPO)
    needs_reference: ClassVar[bool] = False

    def requirements(self) -> tuple[str, ...]:
        extra = ("lora",) if self.config.lora_rank > 0 else ()
        return tuple(self.requires) + extra

    def touched(self) -> str:
        c = self.config
        if c.train_only and c.lora_rank == 0:
            return "parameters named " + " or ".join(f"*{k}*" for k in c.train_only)
        if c.lora_rank > 0:
            kept = "merged" if c.merge else "kept separate"
            where = ",".join(c.lora_targets) if c.lora_targets else "the task's default layers"
            return f"LoRA r={c.lora_rank} on {where} ({kept})"
        return "all parameters"

    # -- what subclasses define ------------------------------------------------------
    def setup(self, model: nn.Module, ctx: UnlearnContext) -> None:
        """Build the batch streams and whatever the objective needs (called once)."""

    def objective(self, model: nn.Module, ctx: UnlearnContext, t: int) -> torch.Tensor:
        raise NotImplementedError

    def grad_masks(self, model: nn.Module, ctx: UnlearnContext) -> dict[str, torch.Tensor] | None:
        """Per-parameter 0/1 masks applied to the gradients (None: no mask)."""
        return None

    def after_step_hooks(self, model: nn.Module, ctx: UnlearnContext) -> list[Callable[[], None]]:
        return []

    # -- helpers for subclasses -------------------------------------------------------
    def stream(self, ctx: UnlearnContext, data: Any, offset: int, batch_size: int | None = None):
        """Endless ``(indices, batch)`` pairs over ``data``, seeded by the context."""
        bs = self.config.batch_size if batch_size is None else batch_size
        return ctx.task.stream(data, bs, ctx.generator(offset))

    def epoch_size(self, ctx: UnlearnContext) -> int:
        """How many items one epoch passes over (the forget or retain set by default)."""
        return ctx.task.size(ctx.retain if self.epochs_over == "retain" else ctx.forget)

    def budget(self, ctx: UnlearnContext) -> int:
        cfg = self.config
        if cfg.steps is not None:
            return int(cfg.steps)
        n = self.epoch_size(ctx)
        if n == 0:
            raise UnlearnError(
                f"{self.name} counts epochs over the {self.epochs_over} set, which is empty"
            )
        return epochs_to_steps(n, cfg.batch_size, cfg.epochs)

    def epoch_steps(self, ctx: UnlearnContext) -> int:
        """Optimiser steps in one epoch (the ``step`` schedule decays the rate after each)."""
        return max(1, epochs_to_steps(self.epoch_size(ctx), self.config.batch_size, 1.0))

    @contextlib.contextmanager
    def reference_model(self, model: nn.Module) -> Iterator[nn.Module]:
        """The frozen original as a callable model."""
        if self._ref is None:
            with model.disable_adapter():
                yield model
        else:
            yield self._ref

    def reference_logprob(self, model: nn.Module, ctx: UnlearnContext, batch) -> torch.Tensor:
        """Per-example target log-likelihoods under the frozen original."""
        with torch.no_grad(), self.reference_model(model) as ref:
            return ctx.task.example_logprob(ref, batch)[0].detach()

    @staticmethod
    def _frozen_original(ctx: UnlearnContext) -> nn.Module:
        """The original on the task's device in eval mode: the caller's model itself when
        it is already there and in eval mode, otherwise a copy (the caller's model is
        never moved or switched to eval mode)."""
        orig = ctx.original
        param = next(orig.parameters(), None)
        want = torch.device(ctx.task.device)
        if want.type == "cuda" and want.index is None:
            want = torch.device("cuda", torch.cuda.current_device())
        if (param is None or param.device == want) and not orig.training:
            return orig
        return copy.deepcopy(orig).to(ctx.task.device).eval()

    # -- the loop ----------------------------------------------------------------------
    def prepare(self, ctx: UnlearnContext) -> None:
        if self.config.target_forget_acc is not None and ctx.probe is None:
            raise UnlearnError(f"{self.name}: target_forget_acc needs a probe in the context")

    def unlearn(self, model: nn.Module, ctx: UnlearnContext):
        cfg = self.config
        lora = cfg.lora_rank > 0
        if lora:
            model = ctx.task.lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        else:
            for name, p in model.named_parameters():
                p.requires_grad_(not cfg.train_only or any(k in name for k in cfg.train_only))
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise UnlearnError(
                "the model has no trainable parameters"
                + (f" whose name contains any of {list(cfg.train_only)}" if cfg.train_only else "")
            )
        self._train_state_mb = train_state_mb(model, optimizer_slots(cfg.optimizer, cfg.momentum))
        self._extra["trainable_params"] = sum(p.numel() for p in params)
        masks = self.grad_masks(model, ctx)
        self.setup(model, ctx)
        opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
        after_backward = []
        if masks is not None:
            named = dict(model.named_parameters())

            def apply_masks() -> None:
                for n, m in masks.items():
                    if named[n].grad is not None:
                        named[n].grad.mul_(m)

            after_backward.append(apply_masks)
        reached: list[int] = []

        def stop(done: int) -> bool:
            if cfg.target_forget_acc is None or done % cfg.check_every:
                return False
            tp = time.perf_counter()
            acc = ctx.probe(model)
            self._probe_seconds += time.perf_counter() - tp
            if acc <= cfg.target_forget_acc:
                reached.append(done)
                return True
            return False

        # under LoRA the reference is the model with its adapters off
        self._ref = self._frozen_original(ctx) if self.needs_reference and not lora else None
        try:
            steps = optimize(
                model,
                opt,
                self.budget(ctx),
                lambda t: self.objective(model, ctx, t),
                schedule=cfg.schedule,
                step_every=self.epoch_steps(ctx) if cfg.schedule == "step" else None,
                grad_clip=cfg.grad_clip,
                after_backward=after_backward,
                after_step=self.after_step_hooks(model, ctx),
                stop=stop,
            )
        finally:
            self._ref = None  # never keep a reference to the caller's model
        if lora and cfg.merge:
            model = model.merge_and_unload()
        if cfg.target_forget_acc is not None:
            self._extra.update(
                probe_seconds=self._probe_seconds,
                reached_target_at=reached[0] if reached else None,
            )
        return model, steps


#: Defaults of the LM unlearning papers' set-ups (TOFU, NPO): a few AdamW steps at a
#: small learning rate with gradient clipping, batches of 8; a method's ``presets``
#: use them for the ``causal_lm`` family unless an option is set.
LM_PRESET = {
    "steps": 20,
    "lr": 1e-5,
    "batch_size": 8,
    "optimizer": "adamw",
    "weight_decay": 0.0,
    "grad_clip": 1.0,
}


class ForgetRetainMethod(TrainedMethod):
    """A trained method that draws one forget batch and (if there is a retain set and
    the method uses one) one retain batch per step; ``alpha`` weighs the retain term."""

    forget_offset: ClassVar[int] = 0
    retain_offset: ClassVar[int] = 1
    uses_retain: ClassVar[bool] = True

    def setup(self, model, ctx):
        self._forget = self.stream(ctx, ctx.forget, self.forget_offset)
        use = self.uses_retain and getattr(self.config, "alpha", 1.0) != 0
        self._retain = (
            self.stream(ctx, ctx.retain, self.retain_offset)
            if use and ctx.task.size(ctx.retain)
            else None
        )

    def next_forget(self):
        return next(self._forget)

    def retain_term(self, model, ctx) -> torch.Tensor:
        """``alpha`` times the mean loss of the next retain batch (0 without one)."""
        if self._retain is None:
            return torch.zeros((), device=ctx.task.device)
        _, batch = next(self._retain)
        return self.config.alpha * ctx.task.mean_loss(model, batch)
