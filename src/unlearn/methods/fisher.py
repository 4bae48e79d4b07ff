"""Fisher forgetting (Golatkar et al., CVPR 2020).

Scrubs the model by adding Gaussian noise whose variance is the inverse of
the diagonal Fisher information of the *retain* data: weights the retain set
does not pin down are randomised, which destroys what only the forget set
determined. For class requests the forgotten classes' output units are
zeroed first (their information is carried by no retain sample), as in the
reference implementation of Jia et al. (2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..requests import ClassRequest
from ._persample import per_sample_grads
from .base import Method, MethodConfig, register


@dataclass(frozen=True)
class FisherConfig(MethodConfig):
    alpha: float = 1e-6  # noise scale: variance = alpha / (Fisher + eps)
    max_var: float = 1e3  # cap on the inverse Fisher (weights the retain set never touches)
    samples: int = 512  # retain samples used to estimate the Fisher
    fisher: str = "true"  # "true" (expectation over the model's predictions) or "empirical"


@register
class FisherForgetting(Method):
    name = "fisher"
    summary = "Add noise with variance ~ inverse diagonal Fisher of the retain set."
    Config = FisherConfig

    def diagonal_fisher(self, model, ctx) -> dict[str, torch.Tensor]:
        cfg = self.config
        retain = ctx.retain
        gen = ctx.generator(1)
        n = min(cfg.samples, len(retain))
        idx = torch.randperm(len(retain), generator=gen)[:n]
        x, y = retain.x[idx].to(ctx.task.device), retain.y[idx].to(ctx.task.device)
        if cfg.fisher == "empirical":
            g = per_sample_grads(model, x, y)
            return {k: (v**2).mean(0) for k, v in g.items()}
        if cfg.fisher != "true":
            from ..errors import UnlearnError

            raise UnlearnError(f"fisher must be 'true' or 'empirical', got {cfg.fisher!r}")
        with torch.no_grad():
            probs = torch.softmax(model.eval()(x), dim=1)
        total: dict[str, torch.Tensor] = {}
        for c in range(ctx.task.num_classes):
            g = per_sample_grads(model, x, torch.full_like(y, c))
            w = probs[:, c]
            for k, v in g.items():
                contrib = (w.view(-1, *[1] * (v.ndim - 1)) * v**2).mean(0)
                total[k] = total.get(k, 0) + contrib
        return total

    def unlearn(self, model, ctx):
        cfg = self.config
        fisher = self.diagonal_fisher(model, ctx)
        gen = ctx.generator(2)
        classes = ctx.request.classes if isinstance(ctx.request, ClassRequest) else ()
        num_classes = ctx.task.num_classes
        with torch.no_grad():
            for name, p in model.named_parameters():
                var = (1.0 / (fisher[name] + 1e-8)).clamp(max=cfg.max_var)
                if classes and p.shape[0] == num_classes and _is_output(model, name):
                    p[list(classes)] = 0.0
                    var[list(classes)] = 1e-4
                noise = torch.randn(p.shape, generator=gen).to(p.device)
                p.add_(torch.sqrt(cfg.alpha * var) * noise)
        return 0

    def touched(self) -> str:
        return "all parameters (noise)"


def _is_output(model, name: str) -> bool:
    """True for the last layer's weight and bias."""
    names = [n for n, _ in model.named_parameters()]
    last = names[-1].rsplit(".", 1)[0]
    return name.rsplit(".", 1)[0] == last
