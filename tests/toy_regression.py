"""A test-only model family: linear regression with a Gaussian likelihood.

It exists to show that a new family is one task module: nothing in the methods,
the API, the runner or the command line knows about it, yet gradient ascent,
NegGrad+ and KL run on it. It implements the task protocol's ``logprob``, ``kl``,
``fit``, ``reinit`` and ``membership`` capabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unlearn.tasks.base import Task, register_task
from unlearn.training import index_stream, make_optimizer, optimize


class RegressionData:
    """Inputs ``x`` (n, d) and real targets ``y`` (n,)."""

    def __init__(self, x, y, name: str = "regression"):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.float32)
        self.name = name

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx, name: str | None = None) -> RegressionData:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return RegressionData(self.x[idx], self.y[idx], name or self.name)


def make_regression(n: int = 200, d: int = 5, seed: int = 0) -> RegressionData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = x @ w + 0.3 * torch.randn(n, generator=g)
    return RegressionData(x, y)


@register_task
class RegressionTask(Task):
    family = "toy_regression"
    provides = frozenset({"logprob", "kl", "fit", "reinit", "membership"})

    def __init__(self, epochs: int = 60, lr: float = 0.05):
        self.device = torch.device("cpu")
        self.epochs, self.lr = epochs, lr

    def take(self, data, idx):
        return data.x[idx], data.y[idx]

    def example_logprob(self, model, batch):
        x, y = batch
        mu = model(x).squeeze(-1)
        logp = -0.5 * (y - mu) ** 2 - 0.5 * np.log(2 * np.pi)
        return logp, torch.ones_like(logp)

    def kl(self, model, batch, reference):
        x = batch[0]
        mu = model(x).squeeze(-1)
        with torch.no_grad(), reference() as ref:
            mu_ref = ref(x).squeeze(-1)
        return (0.5 * (mu - mu_ref) ** 2).mean()  # two unit-variance Gaussians

    def membership_scores(self, model, data):
        with torch.no_grad():
            return (-self.example_logprob(model, (data.x, data.y))[0]).numpy()

    def fresh_model(self, model, seed):
        torch.manual_seed(seed)
        return nn.Linear(model.in_features, 1)

    def fit(self, model, data, recipe, seed):
        gen = torch.Generator().manual_seed(seed)
        stream = index_stream(len(data), 32, gen)
        steps = self.epochs * -(-len(data) // 32)
        opt = make_optimizer(model.parameters(), "adam", self.lr)
        return optimize(
            model, opt, steps, lambda t: self.mean_loss(model, self.take(data, next(stream)))
        )
