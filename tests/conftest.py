"""Shared fixtures: a tiny data set and a tiny trained classifier (fast, deterministic)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from unlearn.data import ArrayData, load_sklearn
from unlearn.models import build_model
from unlearn.tasks import ClassifierTask, TrainRecipe

torch.set_num_threads(1)
# The suite runs benchmarks in this process unless a test asks for workers
# (tests/test_executor.py): monkeypatches then reach the code under test.
os.environ.setdefault("UNLEARN_WORKERS", "1")

TINY_RECIPE = TrainRecipe(
    epochs=15, batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, schedule="constant"
)


@pytest.fixture(scope="session")
def digits_small() -> tuple[ArrayData, ArrayData]:
    train, test = load_sklearn("digits")
    rng = np.random.default_rng(0)
    tr = rng.choice(len(train), 300, replace=False)
    te = rng.choice(len(test), 150, replace=False)
    return train.subset(tr, "digits-small"), test.subset(te, "digits-small-test")


@pytest.fixture(scope="session")
def tiny_spec(digits_small) -> dict:
    train, _ = digits_small
    return {
        "name": "mlp",
        "input_shape": list(train.input_shape),
        "num_classes": 10,
        "hidden": [32],
    }


@pytest.fixture(scope="session")
def trained_tiny(digits_small, tiny_spec) -> torch.nn.Module:
    train, _ = digits_small
    model = build_model(tiny_spec, seed=0)
    ClassifierTask(10).fit(model, train, TINY_RECIPE, seed=0)
    return model


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])
