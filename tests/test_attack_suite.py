"""The attack suite inside a benchmark run, and the cached reference models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn.attacks.reference import train_many, train_references
from unlearn.bench import parse_scenario, run_scenario
from unlearn.bench.attacks import AttackConfig, AttackSuite
from unlearn.data import ArrayData, split_request
from unlearn.errors import ScenarioError, UnlearnError
from unlearn.methods import UnlearnContext, get_method
from unlearn.models import build_model
from unlearn.requests import SampleRequest
from unlearn.tasks import ClassifierTask, TrainRecipe

FAST = TrainRecipe(
    epochs=3, batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, schedule="constant"
)
SPEC = {"name": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}


def test_references_are_balanced_cached_and_worker_independent(digits_small, tmp_path):
    pool, _ = digits_small
    pool = pool.subset(np.arange(120))
    refs = train_references(pool, SPEC, FAST, k=4, seed=0, cache_dir=tmp_path, workers=1)
    assert refs.in_mask.shape == (4, 120) and np.all(refs.in_mask.sum(0) == 2)
    assert len(list(tmp_path.iterdir())) == 1
    again = train_references(pool, SPEC, FAST, k=4, seed=0, cache_dir=tmp_path, workers=1)
    for a, b in zip(refs.states, again.states, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # each reference really was trained on its own half: it fits it better than the rest
    x, y = pool.x, pool.y
    m = refs.model(0)
    with torch.no_grad():
        acc = (m(x).argmax(1) == y).float()
    assert acc[refs.in_mask[0]].mean() > acc[~refs.in_mask[0]].mean()
    with pytest.raises(UnlearnError, match="even and >= 4"):
        train_references(pool, SPEC, FAST, k=3)


def test_retrained_models_are_cached_by_content(digits_small, tmp_path, monkeypatch):
    from unlearn.attacks import reference

    pool, _ = digits_small
    jobs = [(pool.subset(np.arange(60)), 1), (pool.subset(np.arange(60, 120)), 2)]
    first = reference.train_many_cached(jobs, SPEC, FAST, 1, tmp_path)
    assert [p.name.startswith("retrained-") for p in tmp_path.iterdir()] == [True]
    calls = []
    monkeypatch.setattr(reference, "train_many", lambda *a, **k: calls.append(1) or [])
    again = reference.train_many_cached(jobs, SPEC, FAST, 1, tmp_path)
    assert not calls  # loaded, not trained
    for a, b in zip(first, again, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # another seed, other data or no cache folder: trained again
    reference.train_many_cached([(jobs[0][0], 3), jobs[1]], SPEC, FAST, 1, tmp_path)
    reference.train_many_cached([(pool.subset(np.arange(59)), 1), jobs[1]], SPEC, FAST, 1, tmp_path)
    reference.train_many_cached(jobs, SPEC, FAST, 1, None)
    assert len(calls) == 3


def test_parallel_training_equals_serial(digits_small):
    pool, _ = digits_small
    jobs = [(pool.subset(np.arange(60)), 1), (pool.subset(np.arange(60, 120)), 2)]
    serial = train_many(jobs, SPEC, FAST, workers=1)
    parallel = train_many(jobs, SPEC, FAST, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


MEMORISE = {
    "name": "attack-suite",
    # few training samples and a wide MLP trained long: the model memorises them
    "data": {"name": "digits", "test_fraction": 0.8},
    "model": {"name": "mlp", "hidden": [256]},
    "train": {
        "epochs": 60,
        "batch_size": 32,
        "lr": 0.003,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "schedule": "constant",
    },
    "forget": {"kind": "random", "fraction": 0.2},
    "methods": [{"name": "finetune", "config": {"epochs": 1, "optimizer": "adam", "lr": 1e-4}}],
    "seeds": [0],
}


def test_attacks_tell_memorised_from_never_seen(tmp_path):
    """Random labels can only be memorised: members are obvious, non-members are not."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=gen)
    y = torch.randint(0, 4, (400,), generator=gen)
    classes = ("a", "b", "c", "d")
    train, test = ArrayData(x[:200], y[:200], classes), ArrayData(x[200:], y[200:], classes)
    spec = {"name": "mlp", "input_shape": [12], "num_classes": 4, "hidden": [128]}
    recipe = TrainRecipe(
        epochs=60, batch_size=32, lr=0.003, optimizer="adam", weight_decay=0.0, schedule="constant"
    )
    task = ClassifierTask(4)
    request = SampleRequest(fraction=0.2, seed=0)
    split = split_request(train, request)
    original = build_model(spec, seed=0)
    task.fit(original, train, recipe, 0)
    oracle = build_model(spec, seed=0)
    task.fit(oracle, split.retain, recipe, 0)
    cfg = AttackConfig(
        references=8,
        ulira=["original", "retrain", "ga"],
        rmia=True,
        workers=1,
        cache_dir=str(tmp_path),
    )
    ga = get_method("gradient_ascent", {"epochs": 1, "lr": 1e-4, "optimizer": "adam"})
    suite = AttackSuite(cfg, train, test, spec, recipe, task, {"ga": ga}, lambda msg: None)
    suite.prepare(seed=0)
    rows = [{"method": k, "metrics": {}} for k in ("original", "retrain", "ga")]
    ctx = UnlearnContext(
        task=task, split=split, request=request, original=original, seed=0, recipe=recipe
    )
    models = {"original": original, "retrain": oracle, "ga": ga.run(original, ctx)[0]}
    suite.evaluate(0, split, request, original, models, rows)
    # every metric the attacks add is declared in the registry (the runner checks it)
    from unlearn.metrics.registry import check_rows

    check_rows(rows, "classifier")
    m = {r["method"]: r["metrics"] for r in rows}
    assert m["original"]["ulira_auc"] > 80 and m["original"]["rmia_auc"] > 80
    assert m["original"]["ulira_tpr_1fpr"] > m["retrain"]["ulira_tpr_1fpr"]
    assert 30 < m["retrain"]["ulira_auc"] < 70 and 30 < m["retrain"]["rmia_auc"] < 70
    # a gentle gradient ascent, judged by references that ran it too, still looks memorised
    assert m["ga"]["ulira_auc"] > 70 and m["ga"]["rmia_auc"] > 70


def test_mia_nn_and_challenge_in_a_run(tmp_path):
    raw = {
        **MEMORISE,
        "forget": {"kind": "class", "classes": [3]},
        "attacks": {"mia_nn": True, "workers": 1, "cache_dir": str(tmp_path)},
    }
    res = run_scenario(parse_scenario(raw))
    m = {r["method"]: r["metrics"] for r in res["rows"]}
    assert m["original"]["mia_nn_auc"] > 90
    assert 25 < m["retrain"]["mia_nn_auc"] < 75
    raw = {
        **MEMORISE,
        "attacks": {
            "challenge": {"models": 3, "rows": ["finetune", "retrain"]},
            "workers": 1,
            "cache_dir": str(tmp_path),
        },
    }
    res = run_scenario(parse_scenario(raw))
    m = {r["method"]: r["metrics"] for r in res["rows"]}
    assert 0 <= m["finetune"]["challenge_score"] <= m["finetune"]["forget_quality"] * 1.2
    assert m["retrain"]["forget_quality"] >= m["finetune"]["forget_quality"]


@pytest.mark.parametrize(
    "attacks, match",
    [
        ({"references": 5}, "even"),
        ({"ulira": ["nope"]}, "not a row"),
        ({"bogus": 1}, "unknown attack option"),
        ({"challenge": {"models": 1, "rows": ["finetune"]}}, "models >= 3"),
    ],
)
def test_attack_options_are_validated(attacks, match):
    with pytest.raises(ScenarioError, match=match):
        run_scenario(parse_scenario({**MEMORISE, "attacks": attacks}))


def test_mia_nn_needs_a_class_request():
    with pytest.raises(ScenarioError, match="class requests"):
        run_scenario(parse_scenario({**MEMORISE, "attacks": {"mia_nn": True}}))
