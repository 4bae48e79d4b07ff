"""Runs made of parts: one world per forgotten class (``forget: {each:}``) or per data size
(``grow:``); per-part targets; the by-class table and the cost-growth slopes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from unlearn.bench.core import run
from unlearn.bench.parts import class_table, growth
from unlearn.bench.scenario import parse_scenario, subset_train
from unlearn.bench.targets import evaluate, parse_targets
from unlearn.data import split_request
from unlearn.errors import ScenarioError

from .test_cli import TINY


def _tiny(**kw) -> dict:
    sc = copy.deepcopy(TINY)
    sc["seeds"] = [0]
    sc["methods"] = sc["methods"][1:]  # neggrad_plus as "ng"
    sc.update(kw)
    return sc


def test_each_class_runs_one_world_per_class_sharing_the_original():
    doc = run(_tiny(forget={"kind": "class", "each": [0, 3]}), "each")
    labels = [r["method"] for r in doc["rows"]]
    assert labels == [
        f"{m}@class{c}" for c in (0, 3) for m in ("original", "retrain", "oracle_noise", "ng")
    ]
    for r in doc["rows"]:
        assert r["forget_class"] == int(r["method"].split("@class")[1])
    by = {r["method"]: r["metrics"] for r in doc["rows"]}
    assert by["retrain@class0"]["forget_acc"] == 0 and by["retrain@class3"]["forget_acc"] == 0
    # one original per seed: both parts report the same training run
    assert by["original@class0"]["seconds"] == by["original@class3"]["seconds"]
    assert by["original@class0"]["forget_acc"] != by["original@class3"]["forget_acc"]
    assert doc["parts"] == [
        {"tag": "@class0", "forget_class": 0},
        {"tag": "@class3", "forget_class": 3},
    ]


def test_each_all_expands_to_every_class_of_the_data():
    from unlearn.bench.runner import ClassifierFamily

    fam = ClassifierFamily()
    sc = fam.parse(_tiny(forget={"kind": "class", "each": "all"}), "x", None)
    fam.setup(sc, lambda m: None)
    assert [v.fields["forget_class"] for v in fam.variants] == list(range(10))
    assert fam.ticks(sc) == 10 * 4


def test_grow_sizes_are_nested_subsets_with_the_declared_forget_size(digits_small):
    grow = [{"n_train": 100, "n_forget": 10}, {"n_train": 200, "n_forget": 10}]
    sc = parse_scenario(_tiny(forget={"kind": "random"}, grow=grow), "g")
    train, _ = digits_small
    small, big = (subset_train(train, v.n_train) for v in sc.all_variants())
    assert len(small) == 100 and len(big) == 200
    rows_small = {r.tobytes() for r in small.x.numpy()}
    assert rows_small <= {r.tobytes() for r in big.x.numpy()}  # nested
    for part, v in ((small, sc.all_variants()[0]), (big, sc.all_variants()[1])):
        assert len(split_request(part, sc.request(0, v)).forget) == 10


def test_grow_rows_carry_their_sizes():
    grow = [{"n_train": 400, "n_forget": 20}, {"n_train": 800, "n_forget": 20}]
    doc = run(_tiny(forget={"kind": "random"}, grow=grow), "g")
    sizes = {(r["metrics"]["n_train"], r["metrics"]["n_forget"]) for r in doc["rows"]}
    assert sizes == {(400, 20), (800, 20)}
    assert doc["rows"][0]["method"] == "original@n400f20"


@pytest.mark.parametrize(
    "change, match",
    [
        ({"forget": {"kind": "random", "fraction": 0.1, "each": "all"}}, "each is for class"),
        ({"forget": {"kind": "class", "classes": [1], "each": "all"}}, "replaces 'classes'"),
        ({"forget": {"kind": "class", "each": [1, 1]}}, "distinct classes"),
        ({"forget": {"kind": "class", "each": "some"}}, "distinct classes"),
        ({"forget": {"kind": "random", "fraction": 0.1}, "grow": [{"n_train": 9}]}, "kind: random"),
        ({"forget": {"kind": "random"}, "grow": []}, "must be a list"),
        ({"forget": {"kind": "random"}, "grow": [{"n_train": 100}]}, "entry 0 must be"),
        ({"forget": {"kind": "random"}, "grow": [{"n_train": 10, "n_forget": 10}]}, "n_forget <"),
        (
            {"forget": {"kind": "random"}, "grow": [{"n_train": 20, "n_forget": 2}] * 2},
            "repeats",
        ),
    ],
)
def test_bad_parts_are_refused(change, match):
    with pytest.raises(ScenarioError, match=match):
        parse_scenario(_tiny(**change), "bad")


def test_grow_larger_than_the_data_is_refused_before_training():
    from unlearn.bench.scenario import check_scenario

    sc = parse_scenario(
        _tiny(forget={"kind": "random"}, grow=[{"n_train": 10**5, "n_forget": 10}]), "big"
    )
    with pytest.raises(ScenarioError, match="exceeds the"):
        check_scenario(sc)


# ------------------------------------------------------------------ tables and targets, by hand


def _results(values: dict[str, dict[int, dict]]) -> dict:
    """A results dict from {label: {seed: metrics}} (summary = means over seeds)."""
    rows, summary = [], []
    for label, by_seed in values.items():
        for seed, m in by_seed.items():
            row = {"method": label, "seed": seed, "metrics": m}
            if "@class" in label:
                row["forget_class"] = int(label.split("@class")[1])
            rows.append(row)
        keys = next(iter(by_seed.values())).keys()
        summary.append(
            {
                "method": label,
                "n_seeds": len(by_seed),
                "mean": {k: float(np.mean([m[k] for m in by_seed.values()])) for k in keys},
                "std": {k: 0.0 for k in keys},
            }
        )
    return {"rows": rows, "summary": summary, "scenario_name": "hand"}


def _classes_case() -> dict:
    v = {}
    for c, (ua, ta, o_ta) in enumerate([(0.0, 90.0, 91.0), (0.5, 88.0, 91.0), (4.0, 91.0, 90.0)]):
        v[f"retrain@class{c}"] = {0: {"forget_acc": 0.0, "test_acc": o_ta, "avg_gap": 0.0}}
        v[f"m@class{c}"] = {
            0: {"forget_acc": ua, "test_acc": ta, "avg_gap": 1.0 + c},
            1: {"forget_acc": ua, "test_acc": ta, "avg_gap": 1.0 + c},
        }
    return _results(v)


def test_per_tag_target_judges_each_part_against_its_own_oracle():
    res = _classes_case()
    req = [
        {"metric": "forget_acc", "at_most": 1},
        {"metric": "test_acc", "distance_to": "retrain", "at_most": 2},
    ]
    # class 0: |90-91| = 1 ok; class 1: |88-91| = 3 fails; class 2: forget 4 fails
    (o1,) = evaluate(parse_targets([{"name": "a", "per_tag": 1, "require": req}]), res)
    (o2,) = evaluate(parse_targets([{"name": "b", "per_tag": 2, "require": req}]), res)
    assert o1.status == "met" and "1 of 3 parts" in o1.text
    assert o2.status == "NOT met" and "@class1" in o2.text and "@class2" in o2.text
    (o3,) = evaluate(
        parse_targets([{"name": "c", "per_tag": 2, "mode": "any", "require": req[:1]}]), res
    )
    assert o3.status == "met" and "`m`: 2 of 3" in o3.text


def test_per_tag_needs_require_and_a_positive_count():
    with pytest.raises(ScenarioError, match="per_tag"):
        parse_targets([{"name": "x", "per_tag": 0, "require": [{"metric": "a", "at_most": 1}]}])
    with pytest.raises(ScenarioError, match="needs `require`"):
        parse_targets([{"name": "x", "per_tag": 2, "show": ["a"]}])


def test_class_table_means_and_worst_class_by_hand():
    text = class_table(_classes_case())
    line = next(ln for ln in text.splitlines() if ln.startswith("| m |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # forget acc mean (0 + 0.5 + 4) / 3 = 1.5, worst 4 (class 2)
    assert cells[1:3] == ["1.50", "4.00 (2)"]
    # test acc mean (90 + 88 + 91) / 3 = 89.67, worst 88 (class 1)
    assert cells[3:5] == ["89.67", "88.00 (1)"]
    # |test - oracle| = 1, 3, 1: mean 1.67, worst 3 (class 1)
    assert cells[5:7] == ["1.67", "3.00 (1)"]
    assert cells[7:9] == ["2.00", "3.00 (2)"]


def test_growth_slopes_by_hand():
    v = {}
    for n, f in [(1000, 100), (2000, 100), (4000, 100), (4000, 200), (4000, 400)]:
        tag = f"@n{n}f{f}"
        v[f"retrain{tag}"] = {
            0: {"seconds": 0.01 * n, "peak_mem_mb": 5.0, "n_train": n, "n_forget": f}
        }
        v[f"m{tag}"] = {
            0: {"seconds": 0.5 * f**0.5, "peak_mem_mb": 0.1 * f, "n_train": n, "n_forget": f}
        }
    g = growth(_results(v))
    assert g["retrain"]["n_train"]["seconds_slope"] == pytest.approx(1.0)
    assert g["retrain"]["n_forget"]["seconds_slope"] == pytest.approx(0.0, abs=1e-9)
    assert g["m"]["n_forget"]["seconds_slope"] == pytest.approx(0.5)
    assert g["m"]["n_forget"]["peak_mem_mb_slope"] == pytest.approx(1.0)
    assert g["m"]["n_train"]["seconds_slope"] == pytest.approx(0.0, abs=1e-9)
    assert g["m"]["n_forget"]["fixed"] == {"n_train": 4000}
    assert g["m"]["n_train"]["fixed"] == {"n_forget": 100}


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"forget": {"kind": "class", "each": [0, 1]}, "attacks": {"mia_nn": True}},
            "cannot run on a run made of parts",
        ),
        (
            {
                "forget": {"kind": "random"},
                "grow": [{"n_train": 100, "n_forget": 10}],
                "checkpoint": "x.safetensors",
            },
            "drop 'checkpoint'",
        ),
        ({"methods": [{"name": "finetune", "label": "ft@a"}]}, "must not hold '@'"),
    ],
)
def test_parts_refuse_what_they_cannot_serve(change, match, tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(ScenarioError, match=match):
        parse_scenario(_tiny(**change), "bad", tmp_path)


def test_grow_trains_each_original_on_its_own_size():
    grow = [{"n_train": 400, "n_forget": 20}, {"n_train": 800, "n_forget": 20}]
    doc = run(_tiny(forget={"kind": "random"}, grow=grow), "g")
    steps = {r["method"]: r["metrics"]["steps"] for r in doc["rows"] if "steps" in r["metrics"]}
    # 4 epochs of batches of 64: ceil(400/64) = 7 and ceil(800/64) = 13 steps per epoch
    assert steps["original@n400f20"] == 4 * 7 and steps["original@n800f20"] == 4 * 13
