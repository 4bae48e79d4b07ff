"""Influence unlearning: one Newton step that removes the forget set's contribution.

At the trained weights w the retained objective L_r has gradient
-(n_f / n_r) * g_f, where g_f is the mean gradient of the forget samples, so
one Newton step on L_r is  w <- w + (n_f / n_r) * H_r^{-1} g_f  (Koh & Liang
2017; Guo et al. 2020; the "IU" baseline of Jia et al. 2023). H_r is the
empirical Fisher of a retain subsample plus damping, inverted exactly
through the Woodbury identity (a WoodFisher-style approximation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._persample import flatten, per_sample_grads
from .base import Method, MethodConfig, register


@dataclass(frozen=True)
class InfluenceConfig(MethodConfig):
    damping: float = 1e-3  # lambda in (F + lambda I)
    samples: int = 512  # retain samples for the Fisher
    scale: float = 1.0  # multiplies the Newton step
    max_norm: float | None = 10.0  # clip the step's L2 norm (None: no clip)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.damping > 0 or self.samples < 1:
            raise ValueError("influence needs damping > 0 and samples >= 1")
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError("max_norm must be > 0 or None")


@register
class Influence(Method):
    name = "influence"
    summary = "Newton step w + (n_f/n_r) H_r^-1 g_f with a damped empirical-Fisher Hessian."
    Config = InfluenceConfig

    def unlearn(self, model, ctx):
        cfg = self.config
        dev = ctx.task.device
        forget, retain = ctx.forget, ctx.retain
        gf_parts = []
        for s in range(0, len(forget), 512):
            g = flatten(
                per_sample_grads(
                    model, forget.x[s : s + 512].to(dev), forget.y[s : s + 512].to(dev)
                )
            )
            gf_parts.append(g.sum(0))
        gf = torch.stack(gf_parts).sum(0) / len(forget)
        idx = torch.randperm(len(retain), generator=ctx.generator(1))[: cfg.samples]
        G = flatten(per_sample_grads(model, retain.x[idx].to(dev), retain.y[idx].to(dev)))
        n, lam = G.shape[0], cfg.damping
        # (lam I + G^T G / n)^-1 v = (v - G^T (n lam I + G G^T)^-1 G v) / lam
        K = G @ G.T + n * lam * torch.eye(n, device=G.device, dtype=G.dtype)
        Gv = G @ gf
        sol = torch.linalg.solve(K, Gv)
        step = (gf - G.T @ sol) / lam
        step = step * (len(forget) / len(retain)) * cfg.scale
        norm = float(step.norm())
        if cfg.max_norm is not None and norm > cfg.max_norm:
            step = step * (cfg.max_norm / norm)
        self._extra["step_norm"] = norm
        with torch.no_grad():
            offset = 0
            for p in model.parameters():
                if not p.requires_grad:
                    continue
                k = p.numel()
                p.add_(step[offset : offset + k].view_as(p))
                offset += k
        return 1
