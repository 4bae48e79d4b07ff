"""Ferrari (feature unlearning by feature-sensitivity minimisation) and the feature metrics:
closed-form sensitivities of linear maps, a hand-counted attack success rate, the trigger
helper, and the method on a tiny MLP that learned a spurious feature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearn.data import ArrayData, split_request
from unlearn.data.core import Split
from unlearn.errors import InvalidRequestError, UnlearnError, UnsupportedRequestError
from unlearn.methods import UnlearnContext, get_method
from unlearn.metrics import attack_success_rate, feature_sensitivity, plant_trigger
from unlearn.metrics.feature import sensitivity_ratios
from unlearn.metrics.registry import METRICS
from unlearn.models import build_model
from unlearn.requests import ClassRequest, FeatureRequest, SampleRequest
from unlearn.tasks import ClassifierTask, TrainRecipe

from .conftest import weights

SPURIOUS = 4  # the column of the synthetic data that carries the spurious signal


def _linear(w: torch.Tensor, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias:
            lin.bias.uniform_(-1, 1)
    return lin


# ---------------------------------------------------------------- feature sensitivity
def test_one_feature_of_a_linear_map_has_the_norm_of_its_column():
    """f(x) = W x + b, noise d on feature j: ||W[:, j] d|| / |d| = ||W[:, j]|| for every draw."""
    lin = _linear(torch.randn(3, 5, generator=torch.Generator().manual_seed(0))).double()
    x = torch.randn(40, 5, dtype=torch.float64)
    for j in range(5):
        s = feature_sensitivity(lin, x, [j], n_draws=7, seed=j, batch_size=16)
        assert s == pytest.approx(float(lin.weight.detach()[:, j].norm()), rel=1e-9)


def test_several_features_lie_between_the_singular_values_of_their_columns():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, generator=g)
    feats = [1, 4]
    sv = torch.linalg.svdvals(w[:, feats])
    s = feature_sensitivity(_linear(w), torch.randn(50, 6, generator=g), feats, seed=0)
    assert float(sv.min()) <= s <= float(sv.max())
    # columns c * (orthonormal): every direction of noise is scaled by exactly c
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=g))
    w[:, feats] = 2.5 * q
    assert feature_sensitivity(_linear(w), torch.randn(30, 6), feats) == pytest.approx(2.5, 1e-5)
    # a feature the model ignores has sensitivity 0
    w[:, 0] = 0.0
    assert feature_sensitivity(_linear(w), torch.randn(30, 6), [0]) == 0.0


def test_probs_are_at_most_half_as_sensitive_as_the_logits_column():
    """The softmax's Jacobian has spectral norm <= 1/2."""
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    s = feature_sensitivity(_linear(w), torch.randn(64, 4), [2], output="probs")
    assert 0 < s <= 0.5 * float(w[:, 2].norm()) + 1e-6


def test_sensitivity_is_seeded_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).train()
    before = weights(model).clone()
    x = torch.randn(33, 6)
    a = feature_sensitivity(model, x, [0, 5], n_draws=3, seed=4, batch_size=10)
    assert a == feature_sensitivity(model, x, [0, 5], n_draws=3, seed=4, batch_size=10)
    assert a != feature_sensitivity(model, x, [0, 5], n_draws=3, seed=5, batch_size=10)
    assert model.training and torch.equal(weights(model), before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": [6]}, "feature index 6 is out of range for inputs of 6 values"),
        ({"features": [-1]}, "feature index -1 is negative"),
        ({"features": []}, "non-empty"),
        ({"features": [0.5]}, "integer indices"),
        ({"n_draws": 0}, "n_draws"),
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"sigma_min": 2.0}, "must not exceed sigma_max"),
        ({"sigma_max": float("inf")}, "sigma_max"),
        ({"output": "softmax"}, "output must be one of logits, probs"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_sensitivity_refuses_bad_arguments(kwargs, match):
    args = {"features": [0], **kwargs}
    with pytest.raises(ValueError, match=match):
        feature_sensitivity(nn.Linear(6, 2), torch.randn(4, 6), **args)


def test_detached_and_exact_gradients_of_the_ratio():
    """For f(x) = W x + b the exact gradient of the ratio reaches only W's feature columns
    (b and the other columns cancel in f(x) - f(x + d)); holding f(x + d) fixed, as the
    official code does, sends gradient to b and to every column."""
    lin = _linear(torch.randn(3, 5)).double()
    x = torch.randn(16, 5, dtype=torch.float64)
    grads = {}
    for detach in (True, False):
        lin.zero_grad()
        gen = torch.Generator().manual_seed(0)
        r = sensitivity_ratios(lin, x, torch.tensor([2]), 4, 0.05, 1.0, gen, detach_noisy=detach)
        r.mean().backward()
        grads[detach] = (lin.weight.grad.clone(), lin.bias.grad.clone())
    w_exact, b_exact = grads[False]
    assert torch.allclose(b_exact, torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(
        w_exact[:, [0, 1, 3, 4]], torch.zeros(3, 4, dtype=torch.float64), atol=1e-10
    )
    assert w_exact[:, 2].abs().sum() > 0
    w_det, b_det = grads[True]
    assert b_det.abs().sum() > 1e-3 and w_det[:, 0].abs().sum() > 1e-3


# ---------------------------------------------------------------- backdoor helpers
class _Argmax(nn.Module):
    """Predicts the position of the largest input: the inputs are the logits."""

    def forward(self, x):
        return x.reshape(len(x), -1)


def test_attack_success_rate_by_hand():
    # predictions 0, 0, 1, 2, 0, 2; true labels 0, 1, 1, 2, 2, 1
    x = torch.eye(3)[[0, 0, 1, 2, 0, 2]]
    y = torch.tensor([0, 1, 1, 2, 2, 1])
    # target 0: the first input is of class 0 and left out; 2 of the other 5 hit 0
    assert attack_success_rate(_Argmax(), x, 0, y) == 40.0
    # target 2: inputs 3 and 4 are left out; of the other 4, only the last hits 2
    assert attack_success_rate(_Argmax(), x, 2, y, batch_size=2) == 25.0
    with pytest.raises(ValueError, match="every triggered input is of the target class 1"):
        attack_success_rate(_Argmax(), x[:1], 1, torch.tensor([1]))
    with pytest.raises(ValueError, match="one integer label per input"):
        attack_success_rate(_Argmax(), x, 0, y[:3])


def test_plant_trigger_copies_and_sets_the_features():
    x = torch.rand(4, 1, 3, 3)
    keep = x.clone()
    out = plant_trigger(x, [8, 0], 1.0)
    assert torch.equal(x, keep) and out.shape == x.shape
    flat = out.reshape(4, -1)
    assert torch.all(flat[:, [0, 8]] == 1.0) and torch.equal(
        flat[:, 1:8], keep.reshape(4, -1)[:, 1:8]
    )
    per = plant_trigger(x, [8, 0], [5.0, 7.0]).reshape(4, -1)
    assert torch.all(per[:, 8] == 5.0) and torch.all(per[:, 0] == 7.0)
    with pytest.raises(ValueError, match="out of range for inputs of 9 values"):
        plant_trigger(x, [9], 1.0)
    with pytest.raises(ValueError, match="one value per feature"):
        plant_trigger(x, [0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="duplicates"):
        plant_trigger(x, [1, 1], 0.0)


def test_the_registry_declares_the_feature_metrics():
    s, a = METRICS["feature_sensitivity"], METRICS["attack_success_rate"]
    # classifiers, and federations (Ferrari runs at a client; the rows are the federation's)
    assert s.families == ("classifier", "federated") and s.better == "lower"
    assert a.families == ("classifier", "federated") and a.better == "lower" and a.unit == "%"


# ---------------------------------------------------------------- the method
def _spurious(n: int, seed: int, spurious: bool = True) -> ArrayData:
    """Label: the sign of x0 + x1 (x2, x3 are noise). Column 4 agrees with the label 90 % of
    the time during training (a shortcut); ``spurious=False`` replaces it by noise."""
    g = torch.Generator().manual_seed(seed)
    sig = torch.randn(n, 4, generator=g)
    y = (sig[:, 0] + sig[:, 1] > 0).long()
    shown = torch.where(torch.rand(n, generator=g) < 0.9, y, 1 - y)
    col = (2 * shown - 1).float() * 1.5 + 0.3 * torch.randn(n, generator=g)
    if not spurious:
        col = 1.5 * torch.randn(n, generator=g)
    return ArrayData(torch.cat([sig, col[:, None]], 1), y, ("neg", "pos"))


@pytest.fixture(scope="module")
def world():
    train = _spurious(256, 0)
    model = build_model({"name": "mlp", "input_shape": [5], "num_classes": 2, "hidden": [32]}, 0)
    recipe = TrainRecipe(
        epochs=10, batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, schedule="constant"
    )
    ClassifierTask(2).fit(model, train, recipe, seed=0)
    return {"train": train, "clean": _spurious(512, 1, spurious=False), "model": model}


def _ctx(world, request=None, seed=0):
    request = request or FeatureRequest(features=[SPURIOUS])
    split = split_request(world["train"], request)
    return UnlearnContext(ClassifierTask(2), split, request, world["model"], seed)


def _acc(model, data) -> float:
    return float((ClassifierTask(2).logits(model, data).argmax(1) == data.y).float().mean())


FAST = {"epochs": 5, "lr": 1e-2, "optimizer": "adam", "batch_size": 32, "n_draws": 5}


def test_ferrari_removes_the_spurious_feature_and_keeps_the_signal(world):
    model, train, clean = world["model"], world["train"], world["clean"]
    s0 = feature_sensitivity(model, train.x, [SPURIOUS])
    acc0 = _acc(model, clean)
    out, rec = get_method("ferrari", FAST).run(model, _ctx(world))
    s1 = feature_sensitivity(out, train.x, [SPURIOUS])
    assert s1 < 0.3 * s0, f"sensitivity {s0:.3f} -> {s1:.3f}"
    # accuracy on the true signal (the spurious column replaced by noise) stays
    assert _acc(out, clean) >= min(0.85, acc0 - 0.05), (acc0, _acc(out, clean))
    assert rec.steps == 5 * 8 and rec.extra["first_batch_sensitivity"] > 0
    assert rec.extra["last_batch_sensitivity"] < rec.extra["first_batch_sensitivity"]


def test_mean_and_sum_differ_by_the_batch_size_in_the_first_step(world):
    """One plain SGD step: summing the ratios over a batch of B moves the weights B times as
    far as averaging them; the official rate on the sum equals B times it on the mean."""
    b, lr = 32, 1e-3
    base = {"steps": 1, "batch_size": b, "n_draws": 3, "momentum": 0.0, "optimizer": "sgd"}
    w0 = weights(world["model"])
    runs = {}
    for red, rate in [("mean", lr), ("sum", lr), ("mean", lr * b)]:
        out, _ = get_method("ferrari", {**base, "reduction": red, "lr": rate}).run(
            world["model"], _ctx(world)
        )
        runs[red, rate] = weights(out) - w0
    d_mean, d_sum = runs["mean", lr], runs["sum", lr]
    assert d_mean.abs().max() > 0
    assert torch.allclose(d_sum, b * d_mean, rtol=1e-3, atol=1e-6)
    assert torch.allclose(runs["mean", lr * b], d_sum, rtol=1e-3, atol=1e-6)


def test_ferrari_is_seeded_and_never_modifies_its_input(world):
    model = world["model"]
    before = weights(model).clone()
    cfg = {**FAST, "epochs": 1}
    a, _ = get_method("ferrari", cfg).run(model, _ctx(world))
    b, _ = get_method("ferrari", cfg).run(model, _ctx(world))
    c, _ = get_method("ferrari", cfg).run(model, _ctx(world, seed=1))
    assert torch.equal(weights(a), weights(b)) and not torch.equal(weights(a), weights(c))
    assert torch.equal(weights(model), before) and not torch.equal(weights(a), before)
    assert not a.training


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"n_draws": 0}, "n_draws"),
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"sigma_min": 0.5, "sigma_max": 0.1}, "sigma_max"),
        ({"reduction": "max"}, "reduction"),
        ({"output": "softmax"}, "output"),
        ({"lr": -1.0}, "lr"),
        ({"epochs": 0.0}, "epochs"),
        ({"detach_noisy": "yes"}, "detach_noisy"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(opts, field):
    with pytest.raises(UnlearnError, match=field):
        get_method("ferrari", opts)


def test_bad_requests_and_data_are_refused(world):
    model = world["model"]
    with pytest.raises(InvalidRequestError, match=r"feature index 5 is out of range.*\(5,\)"):
        get_method("ferrari").run(model, _ctx(world, FeatureRequest(features=[1, 5])))
    for req, kind in [
        (SampleRequest(fraction=0.1), "samples"),
        (ClassRequest(classes=[1]), "class"),
    ]:
        with pytest.raises(UnsupportedRequestError, match=f"ferrari does not support {kind}"):
            get_method("ferrari").run(model, _ctx(world, req))

    class Rows:  # data whose inputs are not tensors
        x = [[0.0] * 5]

        def __len__(self):
            return 1

        def subset(self, idx, name=None):
            return self

    req = FeatureRequest(features=[0])
    ctx = UnlearnContext(
        ClassifierTask(2), Split(Rows(), np.zeros(0, int), np.zeros(1, int)), req, model, 0
    )
    with pytest.raises(UnlearnError, match="inputs are tensors"):
        get_method("ferrari").run(model, ctx)


def test_official_settings_run(world):
    """The official objective (sum, detached noisy passes, lr 1e-5) runs and barely moves."""
    cfg = {"reduction": "sum", "lr": 1e-5, "detach_noisy": True}
    out, rec = get_method("ferrari", cfg).run(world["model"], _ctx(world))
    assert rec.steps == math.ceil(256 / 128) and rec.config["detach_noisy"] is True
    change = (weights(out) - weights(world["model"])).abs().max()
    assert 0 < change < 1e-2
