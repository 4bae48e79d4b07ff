"""Every registered method through the same checks (in the spirit of check_estimator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn.data import split_request
from unlearn.errors import UnlearnError, UnsupportedRequestError
from unlearn.methods import UnlearnContext, available_methods, get_method
from unlearn.models import build_model
from unlearn.requests import ClassRequest, FeatureRequest, SampleRequest
from unlearn.tasks import ClassifierTask

from .conftest import TINY_RECIPE, weights

# Small, fast settings: every method's own defaults with shortened loops.
FAST = {
    "retrain": {},
    "finetune": {"epochs": 1, "lr": 1e-3, "optimizer": "adam"},
    "l1_sparse": {"epochs": 1, "lr": 1e-3, "optimizer": "adam"},
    "gradient_ascent": {"epochs": 2, "lr": 1e-3, "optimizer": "adam"},
    "neggrad_plus": {"epochs": 1, "lr": 1e-3, "optimizer": "adam"},
    "random_labels": {"epochs": 3, "lr": 1e-3, "optimizer": "adam"},
    "salun": {"epochs": 3, "lr": 1e-3, "optimizer": "adam"},
    "scrub": {"epochs": 2, "max_epochs": 1, "retain_batches": 3, "lr": 1e-3, "optimizer": "adam"},
    "fisher": {"samples": 64, "alpha": 1e-6},
    "influence": {"samples": 64, "damping": 0.05},
    "amun": {"epochs": 2, "pgd_steps": 10, "lr": 1e-3, "optimizer": "adam"},
    "trw": {"epochs": 2, "lr": 1e-3},
}
# Language-model methods have their own common checks in test_llm.py.
METHODS = sorted(n for n, c in available_methods().items() if "classifier" in c.families)
REQUESTS = {"samples": SampleRequest(fraction=0.1, seed=0), "class": ClassRequest(classes=[3])}


def test_every_registered_method_is_covered():
    assert set(METHODS) == set(FAST), "add new methods to FAST so the common checks cover them"


def _ctx(train, request, original, spec, seed=0):
    task = ClassifierTask(10)
    split = split_request(train, request)
    return UnlearnContext(
        task=task,
        split=split,
        request=request,
        original=original,
        seed=seed,
        recipe=TINY_RECIPE,
        model_factory=lambda s: build_model(spec, seed=s),
    )


@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name, digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    cls = available_methods()[name]
    assert cls.name == name and cls.summary and cls.request_kinds
    before = weights(trained_tiny).clone()
    for kind, request in REQUESTS.items():
        if kind not in cls.request_kinds:
            with pytest.raises(UnsupportedRequestError, match=f"does not support {kind}"):
                get_method(name, FAST[name]).run(
                    trained_tiny, _ctx(train, request, trained_tiny, tiny_spec)
                )
            continue
        method = get_method(name, FAST[name])
        model, record = method.run(trained_tiny, _ctx(train, request, trained_tiny, tiny_spec))
        after = weights(model)
        # it changed the model, and left the caller's model alone
        assert not torch.allclose(after, before), f"{name} did not change the model ({kind})"
        assert torch.equal(weights(trained_tiny), before), f"{name} modified its input"
        assert torch.isfinite(after).all()
        assert record.method == name and record.seconds > 0 and record.peak_mem_mb > 0
        assert record.steps >= 0 and record.config == {**record.config, **FAST[name]}
        # deterministic under a seed
        model2, _ = get_method(name, FAST[name]).run(
            trained_tiny, _ctx(train, request, trained_tiny, tiny_spec)
        )
        assert torch.equal(weights(model2), after), f"{name} is not deterministic ({kind})"


@pytest.mark.parametrize("name", METHODS)
def test_method_refuses_unsupported_requests(name, digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    method = get_method(name, FAST[name])
    request = FeatureRequest(features=[0, 1])
    assert "feature" not in method.request_kinds
    with pytest.raises(UnsupportedRequestError, match=f"{name} does not support feature"):
        method.run(trained_tiny, _ctx(train, request, trained_tiny, tiny_spec))


@pytest.mark.parametrize("name", METHODS)
def test_method_rejects_unknown_options(name):
    with pytest.raises(UnlearnError, match="unknown option"):
        get_method(name, {"no_such_option": 1})


def test_unknown_method_is_named():
    with pytest.raises(UnlearnError, match="unknown method 'nope'"):
        get_method("nope")


def test_seed_changes_stochastic_methods(digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    req = REQUESTS["samples"]
    a, _ = get_method("salun", FAST["salun"]).run(
        trained_tiny, _ctx(train, req, trained_tiny, tiny_spec, seed=0)
    )
    b, _ = get_method("salun", FAST["salun"]).run(
        trained_tiny, _ctx(train, req, trained_tiny, tiny_spec, seed=1)
    )
    assert not torch.equal(weights(a), weights(b))


def test_salun_mask_limits_the_update(digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    method = get_method(
        "salun", {**FAST["salun"], "mask_ratio": 0.2, "optimizer": "sgd", "momentum": 0.0}
    )
    model, rec = method.run(trained_tiny, _ctx(train, REQUESTS["samples"], trained_tiny, tiny_spec))
    changed = (weights(model) != weights(trained_tiny)).float().mean().item()
    assert changed <= 0.21 and rec.extra["mask_kept"] == pytest.approx(0.2, abs=0.01)


def test_retrain_is_the_oracle(digits_small, trained_tiny, tiny_spec):
    """Retraining equals training the same recipe and seed on the retain set by hand."""
    train, _ = digits_small
    ctx = _ctx(train, REQUESTS["class"], trained_tiny, tiny_spec)
    model, _ = get_method("retrain").run(trained_tiny, ctx)
    manual = build_model(tiny_spec, seed=0)
    ClassifierTask(10).fit(manual, ctx.retain, TINY_RECIPE, seed=0)
    assert torch.equal(weights(model), weights(manual))
    forget_acc = (ctx.task.logits(model, ctx.forget).argmax(1) == ctx.forget.y).float().mean()
    assert forget_acc == 0.0  # a class never seen is never predicted


def test_class_forgetting_reaches_the_oracle_on_forget_accuracy(
    digits_small, trained_tiny, tiny_spec
):
    """Influence and random labels drive a forgotten class's accuracy down like the oracle."""
    train, _ = digits_small
    ctx = _ctx(train, REQUESTS["class"], trained_tiny, tiny_spec)
    orig = (ctx.task.logits(trained_tiny, ctx.forget).argmax(1) == ctx.forget.y).float().mean()
    assert orig > 0.9
    for name, cfg in [
        ("random_labels", {"epochs": 20, "lr": 3e-3, "optimizer": "adam"}),
        ("influence", {"samples": 128, "damping": 0.01}),
    ]:
        model, _ = get_method(name, cfg).run(trained_tiny, ctx)
        acc = (ctx.task.logits(model, ctx.forget).argmax(1) == ctx.forget.y).float().mean()
        assert acc < 0.2, f"{name} left forget accuracy at {acc:.2f}"
        keep = (ctx.task.logits(model, ctx.retain).argmax(1) == ctx.retain.y).float().mean()
        assert keep > 0.8, f"{name} destroyed the retained classes ({keep:.2f})"


def test_empty_class_forget_set_is_refused(digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    keep = np.flatnonzero(train.targets() != 3)
    data = train.subset(keep)
    with pytest.raises(UnlearnError, match="class 3 does not occur"):
        split_request(data, ClassRequest(classes=[3]))
