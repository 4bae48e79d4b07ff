"""Per-sample gradients with ``torch.func`` (the model runs in eval mode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def per_sample_grads(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256
) -> dict[str, torch.Tensor]:
    """Gradients of the cross-entropy of each sample, stacked: name -> (N, *param.shape)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    try:
        parts = [g(params, x[s : s + chunk], y[s : s + chunk]) for s in range(0, len(x), chunk)]
    finally:
        model.train(was_training)
    return {n: torch.cat([p[n] for p in parts]) for n in params}


def flatten(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, P) matrix from a per-sample gradient dict."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)
