"""AMUN on the tiny digits model: it runs, lowers forget confidence locally, keeps the rest."""

from __future__ import annotations

import pytest
import torch

from unlearn.data import split_request
from unlearn.errors import UnlearnError, UnsupportedRequestError
from unlearn.methods import UnlearnContext, get_method
from unlearn.requests import ClassRequest, SampleRequest
from unlearn.tasks import ClassifierTask

from .conftest import TINY_RECIPE

# Small batches so the 30 forget samples give a few steps per epoch.
CFG = {"epochs": 10, "batch_size": 16, "retain_batch": 32, "lr": 3e-3, "optimizer": "adam"}


def _ctx(train, model, request=None):
    request = request or SampleRequest(fraction=0.1, seed=0)
    return UnlearnContext(
        task=ClassifierTask(10),
        split=split_request(train, request),
        request=request,
        original=model,
        seed=0,
        recipe=TINY_RECIPE,
    )


def _confidence(ctx, model, data):
    probs = ctx.task.probs(model, data)
    return float(probs[torch.arange(len(data)), data.y].mean())


def _accuracy(ctx, model, data):
    return float((ctx.task.logits(model, data).argmax(1) == data.y).float().mean())


@pytest.mark.parametrize("use_retain", [True, False])
def test_amun_lowers_forget_confidence_and_keeps_retain(digits_small, trained_tiny, use_retain):
    train, test = digits_small
    ctx = _ctx(train, trained_tiny)
    model, record = get_method("amun", CFG, use_retain=use_retain).run(trained_tiny, ctx)
    before = _confidence(ctx, trained_tiny, ctx.forget)
    after = _confidence(ctx, model, ctx.forget)
    assert after < before - 0.01, f"forget confidence {before:.3f} -> {after:.3f}"
    assert _accuracy(ctx, model, ctx.retain) > 0.95
    assert _accuracy(ctx, model, test) > _accuracy(ctx, trained_tiny, test) - 0.05
    extra = record.extra
    assert 0 < extra["eps_mean"] <= extra["eps_max"]
    assert extra["adv_label_changed"] == 1.0  # the search stops only once the label is lost
    assert record.steps == 40  # 10 passes over 30 adversarial + 30 forget samples, 16 per step
    assert record.config["use_retain"] is use_retain


def test_amun_adversarial_set_is_near_and_mislabelled(digits_small, trained_tiny):
    train, _ = digits_small
    ctx = _ctx(train, trained_tiny)
    adv, stats = get_method("amun", pgd_steps=20).adversarial_set(trained_tiny, ctx)
    assert len(adv) == len(ctx.forget)
    assert (adv.y != ctx.forget.y).all()
    assert torch.equal(ctx.task.logits(trained_tiny, adv).argmax(1), adv.y)
    dist = (adv.x - ctx.forget.x).flatten(1).norm(dim=1)
    assert (dist <= stats["eps_max"] * (1 + 1e-5)).all()
    assert stats["delta_l2_mean"] == pytest.approx(float(dist.mean()), rel=1e-5)
    assert stats["already_misclassified"] == 0.0  # the tiny model fits its training set


def test_amun_adversarial_examples_only(digits_small, trained_tiny):
    train, _ = digits_small
    ctx = _ctx(train, trained_tiny)
    _, record = get_method("amun", CFG, include_forget=False).run(trained_tiny, ctx)
    assert record.steps == 20  # 10 passes over 30 adversarial samples, 16 per step


def test_amun_refuses_class_requests(digits_small, trained_tiny):
    train, _ = digits_small
    ctx = _ctx(train, trained_tiny, ClassRequest(classes=[3]))
    with pytest.raises(UnsupportedRequestError, match="amun does not support class"):
        get_method("amun", CFG).run(trained_tiny, ctx)


@pytest.mark.parametrize(
    "bad",
    [{"retain_batch": 0}, {"norm": "l1"}, {"clamp": (1.0, 0.0)}, {"epochs": 0}],
)
def test_amun_rejects_bad_settings(digits_small, trained_tiny, bad):
    train, _ = digits_small
    with pytest.raises(UnlearnError):
        get_method("amun", {**CFG, "pgd_steps": 5, **bad}).run(
            trained_tiny, _ctx(train, trained_tiny)
        )
