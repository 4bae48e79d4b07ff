"""A new family is one task module: the toy regression task runs the shared methods
through the one API without any change to methods, API, runner or CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unlearn
from unlearn.errors import UnsupportedRequestError
from unlearn.methods import available_methods
from unlearn.requests import SampleRequest

from .toy_regression import RegressionTask, make_regression


@pytest.fixture(scope="module")
def world():
    data = make_regression()
    # the forget set is shifted: the trained model fits it, a model without it does not
    data.y[:20] += 3.0
    task = RegressionTask()
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    task.fit(model, data, None, seed=0)
    return task, data, model


@pytest.mark.parametrize("name", ["gradient_ascent", "neggrad_plus", "kl", "graddiff", "npo"])
def test_shared_methods_run_on_the_new_family(world, name):
    task, data, model = world
    assert "toy_regression" in available_methods()[name].families()
    request = SampleRequest(indices=list(range(20)))
    before = [p.detach().clone() for p in model.parameters()]
    cfg = {"epochs": 5, "lr": 0.01, "optimizer": "adam", "batch_size": 10}
    out, rec = unlearn.unlearn(name, model, data, request, task=task, config=cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))
    forget = data.subset(np.arange(20))
    assert task.membership_scores(out, forget).mean() > task.membership_scores(model, forget).mean()
    assert rec.method == name and rec.train_state_mb > 0


def test_the_oracle_runs_on_the_new_family(world):
    task, data, model = world
    request = SampleRequest(indices=list(range(20)))
    oracle, rec = unlearn.unlearn("retrain", model, data, request, task=task)
    forget = data.subset(np.arange(20))
    assert task.membership_scores(oracle, forget).mean() > 2.0  # the shift is not learnt


def test_methods_that_need_more_refuse_the_new_family(world):
    task, data, model = world
    request = SampleRequest(indices=list(range(20)))
    with pytest.raises(UnsupportedRequestError, match="needs a task with classes"):
        unlearn.unlearn("scrub", model, data, request, task=task)
    with pytest.raises(UnsupportedRequestError, match="alternatives:random_label"):
        unlearn.unlearn("salun", model, data, request, task=task)


def test_the_new_family_runs_through_the_one_runner_and_the_cli(tmp_path, capsys):
    """With one benchmark plugin (in the test module), `unlearn bench` runs the family:
    original, oracle, noise floor and the shared methods, with no change to the CLI."""
    import json

    import yaml

    from unlearn.cli import main

    scenario = {
        "kind": "toy_regression",
        "name": "toy",
        "seeds": [0, 1],
        "forget": 20,
        "methods": [
            {"name": "gradient_ascent", "config": {"epochs": 5, "lr": 0.01, "optimizer": "adam"}},
            {"name": "neggrad_plus", "config": {"epochs": 2, "lr": 0.01, "optimizer": "adam"}},
            {"name": "kl", "config": {"epochs": 5, "lr": 0.01, "optimizer": "adam"}},
        ],
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(scenario))
    assert main(["bench", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    summ = {s["method"]: s["mean"] for s in res["summary"]}
    assert list(summ) == [
        "original",
        "retrain",
        "oracle_noise",
        "gradient_ascent",
        "neggrad_plus",
        "kl",
    ]
    # a linear model fits the shifted forget targets only partly; the oracle not at all
    assert summ["retrain"]["forget_mse"] > summ["original"]["forget_mse"] + 1.0
    for name in ("gradient_ascent", "neggrad_plus", "kl"):
        assert summ[name]["forget_mse"] > summ["original"]["forget_mse"], name
