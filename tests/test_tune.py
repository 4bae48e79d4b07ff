"""``unlearn tune``: the tune block is validated, the search is reproducible under its seed,
never runs on a reported seed, and writes its outputs; the CLI refuses bad input."""

from __future__ import annotations

import copy
import csv
import json

import pytest
import yaml

from unlearn.bench.scenario import parse_scenario
from unlearn.cli import main
from unlearn.errors import ScenarioError
from unlearn.tune import holdout_comparison, run_tune

from .test_cli import TINY

SPACE = {
    "ng": {
        "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "alpha": {"low": 0.5, "high": 0.99},
        "epochs": {"choices": [1, 2]},
    }
}


def _scenario(**tune) -> dict:
    sc = copy.deepcopy(TINY)
    sc["methods"] = sc["methods"][1:]
    sc["tune"] = {"seeds": [10, 11], "space": SPACE, **tune}
    return sc


@pytest.mark.parametrize(
    "tune, match",
    [
        ({"seeds": [0, 10]}, r"tuning seeds \[0\] are also reported"),
        ({"seeds": []}, "'seeds' must list"),
        ({"colour": 1}, "unknown key"),
        ({"space": {"nope": {"lr": {"low": 1, "high": 2}}}}, "not a method label"),
        ({"space": {"ng": {"lr": {"low": 2, "high": 1}}}}, "need low < high"),
        ({"space": {"ng": {"lr": {"low": 0, "high": 1, "log": True}}}}, "log range needs low > 0"),
        ({"space": {"ng": {"lr": {"low": 0.1}}}}, "'high' must be a finite number"),
        ({"space": {"ng": {"epochs": {"choices": []}}}}, "non-empty list"),
        ({"space": {"ng": {"epochs": {"choices": [1], "low": 1}}}}, "excludes"),
        ({"space": {"ng": {"steps": {"low": 1.5, "high": 3, "int": True}}}}, "integer low"),
        ({"objective": "seconds"}, "not a classifier metric of the model"),
        ({"objective": {"metric": "avg_gap", "direction": "up"}}, "minimize or maximize"),
        ({"classes": [1]}, "'classes' is for class requests"),
        ({"sampler_seed": -1}, "'sampler_seed'"),
    ],
)
def test_bad_tune_block_is_refused(tune, match):
    with pytest.raises(ScenarioError, match=match):
        parse_scenario(_scenario(**tune), "t")


def test_search_is_reproducible_and_holds_out_the_reported_seeds():
    kw = dict(source="t", base_dir=None, label="ng", trials=4, holdout_seeds=[0])
    a = run_tune(_scenario(), **kw)
    b = run_tune(_scenario(), **kw)
    assert a["best_config"] == b["best_config"] and a["best_value"] == b["best_value"]
    assert a["worlds"] == ["seed10", "seed11"]
    assert [t["number"] for t in a["trials"]] == [0, 1, 2, 3]
    for t in a["trials"]:
        assert 1e-4 <= t["params"]["lr"] <= 1e-2 and t["params"]["epochs"] in (1, 2)
        assert len(t["values"]) == 2 and t["value"] == pytest.approx(sum(t["values"]) / 2)
    best = min(a["trials"], key=lambda t: t["value"])
    assert a["best_value"] == best["value"]
    assert a["best_config"] == {**TINY["methods"][1]["config"], **best["params"]}
    # the held-out run is the one runner's, on the held-out seed only, with both configs
    assert {r["seed"] for r in a["holdout"]["rows"]} == {0}
    assert {r["method"] for r in a["holdout"]["rows"]} >= {"committed", "tuned", "retrain"}
    cmp = holdout_comparison(a)
    assert cmp["verdict"].startswith("inconclusive")  # one held-out seed
    c = run_tune(_scenario(sampler_seed=5), **kw)
    assert [t["params"] for t in c["trials"]] != [t["params"] for t in a["trials"]]


def test_class_tuning_forgets_each_tuning_class(tmp_path):
    sc = _scenario(classes=[1, 4])
    sc["forget"] = {"kind": "class", "classes": [3]}
    res = run_tune(sc, "t", None, "ng", 2, None)
    assert res["worlds"] == ["seed10@class1", "seed10@class4", "seed11@class1", "seed11@class4"]
    assert res["holdout"] is None


def test_cli_writes_the_outputs_and_refuses_bad_input(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario()))
    out = tmp_path / "tuned"
    args = ["tune", str(path), "--method", "ng", "--trials", "3", "--out", str(out), "--quiet"]
    assert main([*args, "--holdout-seeds", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "best.yaml",
        "holdout.json",
        "report.md",
        "trials.csv",
        "tune.json",
    ]
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["method"]["name"] == "neggrad_plus" and best["found_by"]["tuning_seeds"] == [10, 11]
    lines = list(csv.reader((out / "trials.csv").open()))
    assert len(lines) == 4 and lines[0][:3] == ["number", "state", "avg_gap"]
    json.loads((out / "holdout.json").read_text())
    assert "## Held-out seeds [1]" in (out / "report.md").read_text()
    capsys.readouterr()

    def bad(argv, match):
        assert main(argv) == 2
        assert match in capsys.readouterr().err

    bad([*args[:3], "nope", *args[4:]], "is not a method label")
    bad([*args, "--holdout-seeds", "10"], "must not share a seed")
    bad([*args[:5], "0", *args[6:]], "--trials must be a positive integer")
    bad(["tune", str(path), "--method", "ng", "--out", str(tmp_path)], "would replace the input")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(TINY))
    bad(["tune", str(plain), "--method", "ng", "--out", str(tmp_path / "o2")], "no 'tune:' block")
    assert not (tmp_path / "o2").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    bad([*args[:-2], str(tmp_path / "busy"), "--quiet"], "not a search's results")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "tune, forget, match",
    [
        ({"seeds": [1000]}, None, "noise-floor seeds"),
        ({}, {"kind": "random", "fraction": 0.1, "seed": 3}, "forget set is fixed"),
        ({"objective": "forget_acc"}, None, "closest to the oracle"),
        ({"objective": "ulira_auc"}, None, "attack and cost metrics"),
    ],
)
def test_tune_refuses_what_would_leak_or_cannot_be_scored(tune, forget, match):
    sc = _scenario(**tune)
    if forget:
        sc["forget"] = forget
    with pytest.raises(ScenarioError, match=match):
        parse_scenario(sc, "t")


def test_objective_direction_follows_the_metric():
    assert parse_scenario(_scenario(objective="js_to_oracle"), "t").tune.direction == "minimize"
    explicit = {"metric": "test_acc", "direction": "maximize"}
    assert parse_scenario(_scenario(objective=explicit), "t").tune.direction == "maximize"


def test_a_diverging_trial_is_pruned_and_the_search_goes_on():
    sc = _scenario()
    sc["methods"][0]["config"]["optimizer"] = "sgd"
    sc["tune"]["space"] = {"ng": {"lr": {"choices": [1.0e-3, 1.0e30]}}}
    res = run_tune(sc, "t", None, "ng", 6, None)
    lrs = [t["params"]["lr"] for t in res["trials"]]
    assert 1.0e-3 in lrs and 1.0e30 in lrs  # TPE's first trials are random: both tried
    for t in res["trials"]:
        if t["params"]["lr"] == 1.0e30:  # diverges: recorded with its error, not fatal
            assert t["state"] == "PRUNED" and "loss became" in t["error"]
        else:
            assert t["state"] == "COMPLETE"
    assert res["best_config"]["lr"] == 1.0e-3


def test_bad_holdout_seeds_fail_before_the_search(monkeypatch):
    import unlearn.tune as tune_mod

    def no_search(*a, **k):  # pragma: no cover - reached only if validation failed late
        raise AssertionError("the search started")

    monkeypatch.setattr(tune_mod, "_sub_scenario", tune_mod._sub_scenario)
    monkeypatch.setattr("optuna.create_study", no_search)
    from unlearn.errors import UnlearnError

    with pytest.raises(UnlearnError, match="--holdout-seeds"):
        run_tune(_scenario(), "t", None, "ng", 2, [0, 1000])


def test_holdout_comparison_pairs_the_parts_of_each_seed():
    def rows(label, vals):
        return [
            {"method": f"{label}@class{c}", "seed": s, "metrics": {"avg_gap": v}}
            for (s, c), v in vals.items()
        ]

    committed = {(0, 1): 4.0, (0, 2): 2.0, (1, 1): 5.0, (1, 2): 3.0}  # seed means 3, 4
    tuned = {(0, 1): 1.0, (0, 2): 1.0, (1, 1): 2.0, (1, 2): 2.0}  # seed means 1, 2
    result = {
        "objective": "avg_gap",
        "direction": "minimize",
        "holdout": {"rows": rows("committed", committed) + rows("tuned", tuned)},
    }
    cmp = holdout_comparison(result)
    assert cmp["seeds"] == [0, 1] and cmp["parts"] == 2
    assert cmp["committed"] == [3.0, 4.0] and cmp["tuned"] == [1.0, 2.0]
    assert cmp["gain"] == pytest.approx(2.0)
    assert cmp["verdict"] == "beats"  # 2 > sd(3, 4) = 0.707
    tuned_bad = {k: v + 3.0 for k, v in committed.items()}
    result["holdout"]["rows"] = rows("committed", committed) + rows("tuned", tuned_bad)
    assert holdout_comparison(result)["verdict"] == "is worse than"
    one = {k: v for k, v in committed.items() if k[0] == 0}
    result["holdout"]["rows"] = rows("committed", one) + rows("tuned", one)
    assert holdout_comparison(result)["verdict"].startswith("inconclusive")
