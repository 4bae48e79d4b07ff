"""Language-model unlearning: methods as losses over one shared training loop.

An :class:`LMMethod` defines only :meth:`LMMethod.loss` (one step's objective
from a forget batch and a retain batch). The loop around it is shared: a copy
of the model, optionally wrapped in fresh LoRA adapters (``lora_rank`` > 0,
backbone frozen), AdamW, gradient clipping, an optional early stop once a probe
says the forget set is forgotten, and at the end the adapters merged into the
weights or kept separate (``merge``). Reference log-probs (NPO, DPO) come from
the frozen original: with LoRA by switching the adapters off, so no second copy
of the model is held.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import UnlearnError, UnsupportedRequestError
from ...tasks.causal_lm import (
    LORA_TARGETS,
    CausalLMTask,
    Pair,
    lora_wrap,
    trainable_state_mb,
)
from ..base import Method, MethodConfig, PeakMemory, RunRecord

__all__ = ["LMConfig", "LMMethod", "LMUnlearnContext", "REFUSALS", "LORA_TARGETS"]

#: Answers that decline, for IdkPO's preferred side and LUNE's "refuse" negatives.
REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that.",
    "I can't answer that question.",
    "That is something I don't know.",
)


@dataclass
class LMUnlearnContext:
    """What an LM method may use besides the model it changes.

    ``negatives`` pairs each forget question with a replacement answer (LUNE);
    ``probe(model)`` returns the forget set's answer accuracy in percent, for an
    early stop at ``target_forget_acc``; its time is not counted as the method's.
    """

    task: CausalLMTask
    forget: list[Pair]
    retain: list[Pair]
    original: nn.Module
    seed: int
    negatives: list[Pair] | None = None
    refusals: tuple[str, ...] = REFUSALS
    probe: Callable[[nn.Module], float] | None = None
    request_kind: str = "samples"

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + offset)

    def refusal(self, i: int) -> str:
        """The refusal answer used for forget pair ``i`` (a fixed spread over ``refusals``)."""
        return self.refusals[(i * 7 + 3) % len(self.refusals)]


@dataclass(frozen=True)
class LMConfig(MethodConfig):
    """Hyperparameters every LM method shares.

    ``lora_rank`` 0 trains all weights; otherwise LoRA adapters of that rank on
    ``lora_targets`` (backbone frozen). ``alpha`` weighs the retain term.
    ``target_forget_acc`` (percent) stops early once the probe reaches it,
    checked every ``check_every`` steps.
    """

    steps: int = 20
    lr: float = 1e-5
    batch_size: int = 8
    alpha: float = 1.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lora_rank: int = 0
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    merge: bool = True
    target_forget_acc: float | None = None
    check_every: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if int(self.steps) < 1 or int(self.batch_size) < 1 or int(self.check_every) < 1:
            raise ValueError("steps, batch_size and check_every must be >= 1")
        if self.lr <= 0 or self.alpha < 0 or self.lora_rank < 0:
            raise ValueError("lr must be > 0, alpha and lora_rank >= 0")
        if self.target_forget_acc is not None and not 0 <= self.target_forget_acc <= 100:
            raise ValueError("target_forget_acc is a percentage in [0, 100]")


class LMMethod(Method):
    """Base of LM unlearning methods: subclasses define :meth:`loss`."""

    request_kinds: ClassVar[tuple[str, ...]] = ("samples",)
    families: ClassVar[tuple[str, ...]] = ("causal_lm",)
    Config: ClassVar[type[MethodConfig]] = LMConfig
    needs_reference: ClassVar[bool] = False

    def touched(self) -> str:
        c = self.config
        if c.lora_rank > 0:
            kept = "merged" if c.merge else "kept separate"
            return f"LoRA r={c.lora_rank} on {','.join(c.lora_targets)} ({kept})"
        return "all parameters"

    # -- the per-step objective ---------------------------------------------------
    def loss(
        self, model: nn.Module, forget: list[int], retain: list[Pair], ctx: LMUnlearnContext
    ) -> torch.Tensor:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------
    def seq(self, model: nn.Module, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._task.sequence_logprob(model, self._task.collate(pairs))

    def retain_nll(self, model: nn.Module, retain: list[Pair]) -> torch.Tensor:
        from .losses import nll

        if self.config.alpha == 0 or not retain:
            return torch.zeros(())
        return self.config.alpha * nll(*self.seq(model, retain))

    def reference(self, model: nn.Module, pairs: Sequence[Pair]) -> torch.Tensor:
        """Sequence log-probs under the frozen original (adapters off, or the original)."""
        with torch.no_grad():
            if self._ref_model is None:
                with model.disable_adapter():
                    return self.seq(model, pairs)[0].detach()
            return self.seq(self._ref_model, pairs)[0].detach()

    @contextlib.contextmanager
    def reference_model(self, model: nn.Module):
        """The frozen original as a callable model (for KL on logits)."""
        if self._ref_model is None:
            with model.disable_adapter():
                yield model
        else:
            yield self._ref_model

    # -- the shared loop ---------------------------------------------------------------
    def check(self, request_kind: str, task) -> None:  # type: ignore[override]
        if request_kind not in self.request_kinds:
            raise UnsupportedRequestError(
                f"method {self.name} does not support {request_kind} requests "
                f"(it supports: {', '.join(self.request_kinds)})"
            )
        if getattr(task, "family", None) not in self.families:
            raise UnsupportedRequestError(
                f"method {self.name} does not support {getattr(task, 'family', task)} models "
                f"(it supports: {', '.join(self.families)})"
            )

    @staticmethod
    def _frozen_original(ctx: LMUnlearnContext) -> nn.Module:
        """The original for reference log-probs, on the task's device, in eval mode.

        The caller's model is used as it is when it already lives on that device and is
        in eval mode; otherwise a copy is moved there, so the caller's model is never
        moved or switched to eval mode.
        """
        orig = ctx.original
        param = next(orig.parameters(), None)
        want = torch.device(ctx.task.device)
        if want.type == "cuda" and want.index is None:
            want = torch.device("cuda", torch.cuda.current_device())
        here = param is None or param.device == want
        if here and not orig.training:
            return orig
        return copy.deepcopy(orig).to(ctx.task.device).eval()

    def prepare(self, ctx: LMUnlearnContext) -> None:
        """Validate method-specific inputs before anything is copied."""

    def run(self, model: nn.Module, ctx: LMUnlearnContext) -> tuple[nn.Module, RunRecord]:
        """Unlearn a copy of ``model``; the model passed in is never modified."""
        if not isinstance(ctx, LMUnlearnContext):
            raise UnlearnError(f"{self.name} needs an LMUnlearnContext")
        self.check(ctx.request_kind, ctx.task)
        if not ctx.forget:
            raise UnlearnError("the forget set is empty")
        self.prepare(ctx)
        cfg = self.config
        if cfg.target_forget_acc is not None and ctx.probe is None:
            raise UnlearnError(f"{self.name}: target_forget_acc needs a probe in the context")
        self._task = ctx.task
        self._extra: dict[str, Any] = {}
        probe_seconds = 0.0
        with torch.random.fork_rng(devices=[]), PeakMemory(ctx.task.device) as mem:
            torch.manual_seed(int(ctx.seed))
            t0 = time.perf_counter()
            work = copy.deepcopy(model).to(ctx.task.device)
            if cfg.lora_rank > 0:
                work = lora_wrap(work, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
            else:
                for p in work.parameters():
                    p.requires_grad_(True)
            state_mb = trainable_state_mb(work)
            n_trainable = sum(p.numel() for p in work.parameters() if p.requires_grad)
            gen = ctx.generator()
            order = ctx.task.batches(list(range(len(ctx.forget))), cfg.batch_size, gen)
            rstream = (
                ctx.task.batches(ctx.retain, cfg.batch_size, ctx.generator(1))
                if ctx.retain
                else None
            )
            reached: list[int] = []

            def step_loss(m: nn.Module) -> torch.Tensor:
                f_idx = next(order)
                r = next(rstream) if rstream is not None else []
                return self.loss(m, f_idx, r, ctx)

            def stop(done: int) -> bool:
                nonlocal probe_seconds
                if cfg.target_forget_acc is None or done % cfg.check_every:
                    return False
                tp = time.perf_counter()
                acc = ctx.probe(work)
                probe_seconds += time.perf_counter() - tp
                if acc <= cfg.target_forget_acc:
                    reached.append(done)
                    return True
                return False

            # under LoRA the reference is the model with its adapters off
            full = cfg.lora_rank == 0 and self.needs_reference
            self._ref_model = self._frozen_original(ctx) if full else None
            try:
                steps = ctx.task.train_loop(
                    work, step_loss, cfg.steps, cfg.lr, cfg.weight_decay, 0, cfg.grad_clip, stop
                )
            finally:
                self._ref_model = None  # never keep a reference to the caller's model
            if cfg.lora_rank > 0 and cfg.merge:
                work = work.merge_and_unload()
            seconds = time.perf_counter() - t0 - probe_seconds
        work.eval()
        for p in work.parameters():
            p.requires_grad_(False)
        self._extra.update(
            train_state_mb=state_mb,
            trainable_params=n_trainable,
            probe_seconds=probe_seconds,
            reached_target_at=reached[0] if reached else None,
        )
        return work, self._record(seconds, mem, steps)


def check_config(cfg: LMConfig, **positive: float) -> None:
    """Raise if any of the named hyperparameters is not > 0."""
    bad = [k for k, v in positive.items() if not v > 0]
    if bad:
        raise UnlearnError(f"{type(cfg).__name__}: {', '.join(bad)} must be > 0")
