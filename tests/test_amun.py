"""AMUN on the tiny digits model: it runs, lowers forget confidence locally, keeps the rest."""

from __future__ import annotations

import math

import pytest
import torch

import unlearn.methods.amun as amun_module
from unlearn.data import split_request
from unlearn.errors import UnlearnError, UnsupportedRequestError
from unlearn.methods import UnlearnContext, get_method
from unlearn.requests import ClassRequest, SampleRequest
from unlearn.tasks import ClassifierTask

from .conftest import TINY_RECIPE, weights

# Small batches so the 30 forget samples give a few steps per epoch.
CFG = {"epochs": 10, "batch_size": 16, "retain_batch": 32, "lr": 3e-3, "optimizer": "adam"}


def _ctx(train, model, request=None, seed=0):
    request = request or SampleRequest(fraction=0.1, seed=0)
    return UnlearnContext(
        task=ClassifierTask(10),
        split=split_request(train, request),
        request=request,
        original=model,
        seed=seed,
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


# -- the authors' batching: one shuffled pass over retain + forget + adversarial ----------
UNION = {**CFG, "epochs": 2, "pgd_steps": 20, "batching": "union"}


def test_amun_union_runs_changes_the_model_and_follows_the_seed(digits_small, trained_tiny):
    train, _ = digits_small
    before = weights(trained_tiny)
    runs = [
        get_method("amun", UNION).run(trained_tiny, _ctx(train, trained_tiny, seed=s))
        for s in (0, 0, 1)
    ]
    (m0, r0), (m0b, _), (m1, _) = runs
    assert torch.equal(weights(trained_tiny), before)  # the input model is left alone
    assert not torch.allclose(weights(m0), before)
    assert torch.equal(weights(m0), weights(m0b))  # same seed, same model
    assert not torch.allclose(weights(m1), weights(m0))  # another seed, another order
    ctx = _ctx(train, trained_tiny)
    assert r0.config["batching"] == "union"
    n = len(ctx.retain) + 2 * len(ctx.forget)  # 270 + 30 + 30 adversarial
    assert r0.extra["union_size"] == n == 330
    assert r0.extra["union_retain"] == len(ctx.retain)
    assert r0.extra["union_forget"] == r0.extra["union_adversarial"] == len(ctx.forget)
    assert r0.steps == 2 * math.ceil(n / 16) == 42  # two passes over the union, 16 per step
    assert _confidence(ctx, m0, ctx.forget) < _confidence(ctx, trained_tiny, ctx.forget)


def _rows(x):
    """The rows of ``x`` as a sorted multiset (unique rows and their counts)."""
    return torch.unique(x.flatten(1), dim=0, return_counts=True)


@pytest.mark.parametrize(
    ("use_retain", "include_forget", "expect"),
    [(True, True, 330), (False, True, 60), (False, False, 30), (True, False, 300)],
)
def test_amun_union_epoch_is_one_pass_over_the_union(
    digits_small, trained_tiny, monkeypatch, use_retain, include_forget, expect
):
    train, _ = digits_small
    ctx = _ctx(train, trained_tiny)
    seen = []
    real = amun_module._union_batches

    def spy(*args, **kwargs):
        for item in real(*args, **kwargs):
            seen.append(item)
            yield item

    monkeypatch.setattr(amun_module, "_union_batches", spy)
    cfg = {**UNION, "epochs": 1, "use_retain": use_retain, "include_forget": include_forget}
    method = get_method("amun", cfg)
    _, record = method.run(trained_tiny, ctx)
    assert record.extra["union_size"] == expect
    assert record.steps == len(seen) == math.ceil(expect / 16)  # ceil: the last batch is short
    assert [len(y) for _, (_, y) in seen] == [16] * (expect // 16) + [expect % 16] * (
        expect % 16 > 0
    )
    # one pass: every item of the union exactly once ...
    idx = torch.cat([i for i, _ in seen])
    assert torch.equal(idx.sort().values, torch.arange(expect))
    # ... and the items are retain (if used), forget (if included) and adversarial samples
    adv, _ = get_method("amun", cfg).adversarial_set(trained_tiny, ctx)
    parts = [adv] + [ctx.forget] * include_forget + [ctx.retain] * use_retain
    want_x = torch.cat([p.x for p in parts])
    got_x = torch.cat([x for _, (x, _) in seen])
    for a, b in zip(_rows(got_x), _rows(want_x), strict=True):
        assert torch.equal(a, b)
    got_y = torch.cat([y for _, (_, y) in seen])
    assert torch.equal(got_y.sort().values, torch.cat([p.y for p in parts]).sort().values)
    if not use_retain:
        retain_rows = {tuple(r.tolist()) for r in ctx.retain.x.flatten(1)}
        assert not any(tuple(r.tolist()) in retain_rows for r in got_x.flatten(1))


def test_amun_union_ignores_retain_batch_and_counts_steps_with_epochs(digits_small, trained_tiny):
    train, _ = digits_small
    ctx = _ctx(train, trained_tiny)
    _, record = get_method("amun", UNION, epochs=1.5, retain_batch=0).run(trained_tiny, ctx)
    assert record.steps == round(1.5 * math.ceil(330 / 16)) == 32


def test_amun_paired_is_the_default():
    assert get_method("amun").config.batching == "paired"


@pytest.mark.parametrize("bad", ["mixed", "Union", ""])
def test_amun_rejects_an_unknown_batching(bad):
    with pytest.raises(UnlearnError, match=r"batching must be one of 'paired', 'union'"):
        get_method("amun", batching=bad)


def test_step_schedule_decays_the_rate_tenfold_every_epoch():
    import torch

    from unlearn.training import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = make_scheduler(opt, "step", 30, step_every=10)
    rates = []
    for _ in range(30):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == rates[9] == 0.01
    assert abs(rates[10] - 0.001) < 1e-12 and abs(rates[29] - 0.0001) < 1e-12


def test_shared_search_reuses_the_search_and_changes_no_result(digits_small, trained_tiny):
    """Within shared_adversarial_search, AMUN rows that search the same weights for the
    same forget samples with the same options reuse one search: same weights out as
    without the cache; outside the block every run searches again."""
    train, _ = digits_small
    paired = get_method("amun", CFG)
    union = get_method("amun", {**CFG, "batching": "union"})
    plain_p, rec_p = paired.run(trained_tiny, _ctx(train, trained_tiny))
    plain_u, _ = union.run(trained_tiny, _ctx(train, trained_tiny))
    assert "search_cached" not in rec_p.extra
    with amun_module.shared_adversarial_search():
        first, r1 = paired.run(trained_tiny, _ctx(train, trained_tiny))
        second, r2 = union.run(trained_tiny, _ctx(train, trained_tiny))
        other_seed, r3 = union.run(
            trained_tiny, _ctx(train, trained_tiny, SampleRequest(fraction=0.1, seed=1))
        )
    assert "search_cached" not in r1.extra and r2.extra["search_cached"] == 1
    assert r2.extra["search_seconds"] == 0.0 and r2.extra["eps_mean"] == r1.extra["eps_mean"]
    assert "search_cached" not in r3.extra  # another forget set: a new search
    assert torch.equal(weights(first), weights(plain_p))
    assert torch.equal(weights(second), weights(plain_u))
    again, r4 = union.run(trained_tiny, _ctx(train, trained_tiny))  # the block is over
    assert "search_cached" not in r4.extra and torch.equal(weights(again), weights(plain_u))
    assert amun_module._CACHE is None
