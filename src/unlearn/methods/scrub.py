"""SCRUB (Kurmanji et al., NeurIPS 2023): teacher-student min-max unlearning.

The original model is the teacher. Each epoch the student first (during the
first ``max_epochs`` epochs) takes *max* steps that push its predictions on
the forget set away from the teacher's (maximise the KL divergence), then
*min* steps on retain data that keep it close to the teacher and correct:
``gamma * CE + alpha * KL``. KL is computed at temperature ``temperature``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.core import iterate_batches
from .base import Method, MethodConfig, forever, register


@dataclass(frozen=True)
class ScrubConfig(MethodConfig):
    """Kurmanji et al. (2023) defaults: SGD lr 5e-4, 3 epochs of which 2 with max steps,
    KL weight 0.001 and cross-entropy weight 0.99 in the min step, temperature 4."""

    epochs: int = 3
    max_epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 64
    retain_batches: int = 50  # min steps per epoch
    alpha: float = 0.001  # KL weight in the min step
    gamma: float = 0.99  # cross-entropy weight in the min step
    temperature: float = 4.0
    optimizer: str = "sgd"
    momentum: float = 0.9


def _kl(student_logits, teacher_logits, temperature):
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
    ) * (t * t)


@register
class Scrub(Method):
    name = "scrub"
    summary = "Teacher-student min-max: diverge from the original on forget, match it on retain."
    Config = ScrubConfig

    def unlearn(self, model, ctx):
        cfg = self.config
        dev = ctx.task.device
        teacher = copy.deepcopy(ctx.original).to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        opt = self.optimizer(model, cfg)
        retain = forever(ctx.retain, cfg.batch_size, ctx.generator(1))
        gen_f = ctx.generator(2)
        steps = 0
        model.train()
        for epoch in range(cfg.epochs):
            if epoch < cfg.max_epochs:
                for xb, _ in iterate_batches(ctx.forget, cfg.batch_size, gen_f):
                    xb = xb.to(dev)
                    with torch.no_grad():
                        t_logits = teacher(xb)
                    loss = -_kl(model(xb), t_logits, cfg.temperature)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    steps += 1
            for _ in range(cfg.retain_batches):
                xb, yb = next(retain)
                xb, yb = xb.to(dev), yb.to(dev)
                with torch.no_grad():
                    t_logits = teacher(xb)
                out = model(xb)
                loss = cfg.gamma * F.cross_entropy(out, yb) + cfg.alpha * _kl(
                    out, t_logits, cfg.temperature
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
        model.eval()
        return steps
