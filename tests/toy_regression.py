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


# -- a benchmark plugin for the one scenario runner (and so for `unlearn bench`) ----------
from unlearn.bench.core import Family, World, register_family  # noqa: E402
from unlearn.bench.scenario import check_common  # noqa: E402
from unlearn.data.core import split_request  # noqa: E402
from unlearn.methods import UnlearnContext, get_method  # noqa: E402
from unlearn.metrics.registry import MetricSpec, declare_for, register_metric  # noqa: E402
from unlearn.requests import SampleRequest  # noqa: E402

for _split in ("forget", "retain", "test"):
    register_metric(
        MetricSpec(f"{_split}_mse", ("toy_regression",), ("outputs",), "", "oracle", _split)
    )
declare_for(
    "toy_regression",
    "seconds",
    "peak_mem_mb",
    "baseline_mem_mb",
    "steps",
    "train_state_mb",
    "time_vs_oracle",
)


class _Run:
    def __init__(self, raw, source):
        c = check_common(raw, source)
        self.raw, self.name, self.seeds = raw, c.name, c.seeds
        self.noise_seed_offset = c.noise_seed_offset
        self.n_forget = int(raw.get("forget", 20))
        self.methods = [
            (m["name"], get_method(m["name"], m.get("config", {}), family="toy_regression"))
            for m in raw["methods"]
        ]


@register_family
class RegressionFamily(Family):
    kind = "toy_regression"
    task_family = "toy_regression"

    def parse(self, raw, source, base_dir):
        return _Run(raw, source)

    def setup(self, sc, say):
        self.task = RegressionTask()
        self.train = make_regression(seed=0)
        self.train.y[: sc.n_forget] += 3.0
        self.test = make_regression(n=100, seed=1)

    def worlds(self, sc, seed):
        torch.manual_seed(seed)
        model = nn.Linear(5, 1)
        steps = self.task.fit(model, self.train, None, seed)
        request = SampleRequest(indices=list(range(sc.n_forget)))
        ctx = UnlearnContext(
            self.task,
            split_request(self.train, request),
            request,
            model,
            seed,
            model_factory=lambda s: (torch.manual_seed(s), nn.Linear(5, 1))[1],
        )
        yield World(seed=seed, ctx=ctx, original_cost={"seconds": 0.0, "steps": float(steps)})

    def score(self, sc, world, model, row):
        sets = {"forget": world.ctx.forget, "retain": world.ctx.retain, "test": self.test}
        return {
            f"{k}_mse": float(2 * self.task.membership_scores(model, d).mean() - np.log(2 * np.pi))
            for k, d in sets.items()
        }

    def document(self, sc):
        return {
            "scenario": sc.raw,
            "scenario_name": sc.name,
            "request": f"the first {sc.n_forget} samples (their targets shifted by 3)",
            "model_spec": {"name": "linear"},
            "train_recipe": {},
            "methods": {
                label: {"method": m.name, "config": vars(m.config)} for label, m in sc.methods
            },
        }
