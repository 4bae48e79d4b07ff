"""The `targets:` blocks of the scenario files, judged on small synthetic results dicts.

Each test builds the smallest results that put one scenario's checks on either side of
their thresholds (boundaries included) and asserts the verdicts benchmarks/make_results.py
gave before the targets moved into the scenario files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unlearn.bench.targets import evaluate, parse_targets, target_lines
from unlearn.errors import UnlearnError

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
CLASSIFIER = [
    "mnist1d-random10",
    "mnist1d-class",
    "mnist1d-random10-attacks",
    "mnist1d-random10-attacks-fastclip",
    "mnist1d-class-trw",
]


def results(means: dict[str, dict], seeds: dict[str, list[dict]] | None = None) -> dict:
    """A results dict: one seed per row from ``means``, or the rows of ``seeds`` (label:
    [metrics of seed 0, of seed 1, ...]) with their mean."""
    seeds = {**{k: [v] for k, v in means.items()}, **(seeds or {})}
    rows, summary = [], []
    for label, per_seed in seeds.items():
        rows += [{"method": label, "seed": s, "metrics": m} for s, m in enumerate(per_seed)]
        mean = {
            k: None
            if any(m[k] is None for m in per_seed)
            else sum(m[k] for m in per_seed) / len(per_seed)
            for k in per_seed[0]
        }
        summary.append({"method": label, "n_seeds": len(per_seed), "mean": mean, "std": {}})
    return {"rows": rows, "summary": summary}


def judged(name: str, res: dict) -> list[tuple[str, str]]:
    """(target name, status) of every line of the scenario file ``name``'s targets."""
    raw = yaml.safe_load((BENCH / f"{name}.yaml").read_text())["targets"]
    return [(o.name, o.status) for o in evaluate(parse_targets(raw, name), res)]


def statuses(name: str, res: dict, contains: str) -> list[str]:
    return [s for n, s in judged(name, res) if contains in n]


def outcomes(name: str, res: dict, contains: str):
    raw = yaml.safe_load((BENCH / f"{name}.yaml").read_text())["targets"]
    return [o for o in evaluate(parse_targets(raw, name), res) if contains in o.name]


# ---------------------------------------------------------------- classifier scenarios


@pytest.mark.parametrize("name", CLASSIFIER)
@pytest.mark.parametrize(("acc", "status"), [(90.0, "met"), (89.99, "NOT met"), (None, "missing")])
def test_original_test_accuracy_at_least_90(name, acc, status):
    res = results({"original": {} if acc is None else {"test_acc": acc}})
    [o] = outcomes(name, res, "original model test accuracy")
    assert o.status == status
    assert ("the target is for the unclipped scenarios" in o.text) == name.endswith("fastclip")


def _gaps(**methods) -> dict:
    base = {"original": {"avg_gap": 5.16}, "retrain": {}, "oracle_noise": {"avg_gap": 1.31}}
    return {**base, **{k: {"avg_gap": g, "time_vs_oracle": t} for k, (g, t) in methods.items()}}


@pytest.mark.parametrize(
    ("methods", "status", "best"),
    [
        ({"a": (1.5, 0.1), "b": (2.0, 0.2)}, "met", "a"),
        ({"a": (2.0, 0.2), "b": (2.5, 0.1)}, "met", "a"),  # on the boundaries
        ({"a": (2.01, 0.1)}, "NOT met", "a"),
        ({"a": (1.0, 0.21)}, "NOT met", "a"),
        # the best by Avg.Gap is judged, not any row that would meet both limits
        ({"slow": (1.0, 0.5), "fast": (1.5, 0.1)}, "NOT met", "slow"),
        ({"a": (1.0, 0.1), "b": (1.0, 0.5)}, "met", "a"),  # ties: the first row
    ],
)
def test_random10_best_method_by_avg_gap_in_time(methods, status, best):
    res = results(_gaps(**methods))
    [o] = outcomes("mnist1d-random10", res, "best method by Avg.Gap")
    assert (o.status, o.row) == (status, best)
    [info] = outcomes("mnist1d-random10", res, "noise floor")
    assert info.status == "info" and "5.16" in info.text and "1.31" in info.text


def test_random10_packaged_copy_declares_the_same_targets():
    packaged = BENCH.parent / "src" / "unlearn" / "bench" / "scenarios"
    for path in packaged.glob("*.yaml"):
        mine = yaml.safe_load(path.read_text())["targets"]
        assert mine == yaml.safe_load((BENCH / path.name).read_text())["targets"]


def _class(**methods) -> dict:
    rows = {"original": {"test_acc": 91.8}, "retrain": {"test_acc": 90.0}, "oracle_noise": {}}
    for k, (forget, test, gap) in methods.items():
        rows[k] = {"forget_acc": forget, "test_acc": test, "avg_gap": gap}
    return results(rows)


@pytest.mark.parametrize(
    ("methods", "status", "best", "also"),
    [
        # forget acc, test acc (the oracle's: 90), Avg.Gap
        ({"a": (0.5, 89.0, 3.0), "b": (1.0, 92.0, 2.0), "c": (0.0, 95.0, 0.1)}, "met", "b", "a"),
        ({"a": (1.01, 90.0, 1.0), "b": (0.0, 87.99, 1.0)}, "NOT met", None, None),
        ({"a": (0.0, 87.9, 0.5), "b": (0.2, 88.0, 9.0)}, "met", "b", None),
    ],
)
def test_class_forgets_and_keeps_the_oracles_test_accuracy(methods, status, best, also):
    [o] = outcomes("mnist1d-class", _class(**methods), "forget accuracy at most 1 %")
    assert (o.status, o.row) == (status, best)
    assert ("also meeting the conditions" in o.text) == (also is not None)
    if also:
        assert o.text.endswith(f"also meeting the conditions: `{also}`")


def _attacks(amun: float, no_retain: float | None, oracle: float, gaps=(1.0, 2.0)) -> dict:
    rows = {
        "original": {"ulira_auc": 58.9},
        "retrain": {"ulira_auc": oracle},
        "amun": {"ulira_auc": amun, "avg_gap": gaps[0]},
        "salun": {"ulira_auc": 60.0, "avg_gap": gaps[1]},
    }
    if no_retain is not None:
        rows["amun-no-retain"] = {"ulira_auc": no_retain, "avg_gap": 1.0}
    return results(rows)


def test_attacks_ulira_within_3_of_50_and_of_the_oracle():
    name = "mnist1d-random10-attacks"
    res = _attacks(amun=53.0, no_retain=47.0, oracle=50.0)
    assert statuses(name, res, "U-LiRA AUC within 3") == ["met", "met"]
    res = _attacks(amun=53.0, no_retain=53.01, oracle=50.0)
    assert statuses(name, res, "U-LiRA AUC within 3") == ["met", "NOT met"]
    res = _attacks(amun=52.0, no_retain=48.0, oracle=55.5)  # within 3 of 50, not of the oracle
    assert statuses(name, res, "U-LiRA AUC within 3") == ["NOT met", "NOT met"]
    res = _attacks(amun=52.0, no_retain=None, oracle=50.0)
    assert statuses(name, res, "U-LiRA AUC within 3") == ["met", "missing"]
    fastclip = "mnist1d-random10-attacks-fastclip"
    assert statuses(fastclip, res, "U-LiRA AUC within 3") == ["met"]  # no amun-no-retain row


@pytest.mark.parametrize("name", ["mnist1d-random10-attacks", "mnist1d-random10-attacks-fastclip"])
@pytest.mark.parametrize(("gaps", "status"), [((1.0, 2.0), "met"), ((2.0, 2.0), "met"),
                                              ((2.01, 2.0), "NOT met")])  # fmt: skip
def test_attacks_amun_avg_gap_at_most_saluns(name, gaps, status):
    res = _attacks(amun=50.0, no_retain=50.0, oracle=50.0, gaps=gaps)
    assert statuses(name, res, "Avg.Gap at most SalUn's") == [status]


@pytest.mark.parametrize(
    ("trw", "ga", "rl", "status"),
    # the oracle's AUC is 73.8; distances 0.2 < 6.2, 3.8; 1.2 > 1.0; 0.2 = 0.2; 0.8 < 13.8, 16.2
    [(74.0, 80.0, 70.0, "met"), (75.0, 76.0, 72.8, "NOT met"), (74.0, 74.0, 90.0, "NOT met"),
     (73.0, 60.0, 90.0, "met")],
)  # fmt: skip
def test_trw_closer_to_the_oracle_than_gradient_ascent_and_random_labels(trw, ga, rl, status):
    res = results(
        {
            "original": {"test_acc": 91.8},
            "retrain": {"mia_nn_auc": 73.8},
            "trw": {"mia_nn_auc": trw},
            "gradient_ascent": {"mia_nn_auc": ga},
            "random_labels": {"mia_nn_auc": rl},
        }
    )
    assert statuses("mnist1d-class-trw", res, "closer to the oracle") == [status]


# ---------------------------------------------------------------- certified removal


def _certified(acc_diff: float, retrain_s: list[float], newton_s: list[float]) -> dict:
    seeds = {}
    for f in ("1%", "5%", "10%"):
        seeds[f"original@{f}"] = [{"test_acc": 87.0} for _ in retrain_s]
        seeds[f"retrain@{f}"] = [{"test_acc": 87.0, "seconds": s} for s in retrain_s]
        seeds[f"newton_removal@{f}"] = [
            {"test_acc": 87.0 + acc_diff, "seconds": s, "param_distance_to_oracle": 1e-6,
             "epsilon": 0.04, "delta": 1e-5}
            for s in newton_s
        ]  # fmt: skip
    return results({}, seeds)


def test_certified_accuracy_within_half_a_point_and_speed_up_on_mean_times():
    res = _certified(-0.5, retrain_s=[1.0, 3.0], newton_s=[0.04, 0.06])  # 2.0 / 0.05 = 40x
    assert set(statuses("digits-certified", res, "")) == {"met"}
    assert len(judged("digits-certified", res)) == 6
    res = _certified(0.51, retrain_s=[1.0, 1.0], newton_s=[0.05, 0.05])  # 20x exactly
    assert statuses("digits-certified", res, "test accuracy") == ["NOT met"] * 3
    assert statuses("digits-certified", res, "faster") == ["met"] * 3
    # the mean times decide (19.6x), although one seed is 39x faster
    res = _certified(0.0, retrain_s=[1.95, 0.01], newton_s=[0.05, 0.05])
    [o, *_] = outcomes("digits-certified", res, "faster")
    assert o.status == "NOT met" and "(per seed: 39, 0.2)" in o.text


# ---------------------------------------------------------------- language models


def _fictitious(**methods) -> dict:
    rows = {
        "original": {"forget_quality": 0.0448, "forget_answer_acc": 72.0},
        "retrain": {"model_utility": 0.592, "forget_quality": 1.0},
        "oracle_noise": {"forget_quality": 0.98},
    }
    for k, (fq, mu) in methods.items():
        rows[k] = {"forget_quality": fq, "model_utility": mu, "forget_answer_acc": 6.0}
    return results(rows)


def test_fictitious_forget_quality_and_utility_per_method_and_met_by():
    name = "smollm2-fictitious-forget10"
    mu = 0.95 * 0.592
    res = _fictitious(llm_ga=(0.185, 0.447), llm_kl=(0.05, mu), llm_npo=(0.0499, 0.6))
    assert statuses(name, res, "(on the means)") == ["NOT met", "met", "NOT met"]
    [o] = outcomes(name, res, "by at least one method")
    assert o.status == "met" and o.text == "by `llm_kl`"
    res = _fictitious(llm_ga=(0.185, 0.447), llm_npo=(0.0499, 0.6))
    assert statuses(name, res, "by at least one method") == ["NOT met"]
    # the LUNE-vs-full scenario judges each method but has no 'met by' line
    assert statuses("smollm2-lune-vs-full", res, "by at least one method") == []
    assert statuses("smollm2-lune-vs-full", res, "(on the means)") == ["NOT met", "NOT met"]


def test_fictitious_forget_quality_is_listed_per_seed():
    res = results(
        {"retrain": {"model_utility": 0.592}, "oracle_noise": {"forget_quality": 0.98}},
        {"original": [{"forget_quality": 0.087}, {"forget_quality": 0.00249}]},
    )
    [o] = outcomes("smollm2-fictitious-forget10", res, "noise floor and of doing nothing")
    assert o.status == "info" and "(per seed: 0.087, 0.00249)" in o.text


@pytest.mark.parametrize("name", ["smollm2-fictitious-forget10", "smollm2-lune-vs-full"])
@pytest.mark.parametrize(
    ("lune", "full", "memory", "time"),
    [((27.9, 14.0), (1539.0, 23.0), "met", "met"), ((50.0, 23.0), (1000.0, 23.0), "met", "NOT met"),
     ((50.01, 30.0), (1000.0, 23.0), "NOT met", "NOT met")],
)  # fmt: skip
def test_lune_training_state_memory_and_time_against_full_fine_tuning(
    name, lune, full, memory, time
):
    rows = {"original": {"forget_answer_acc": 72.0}, "retrain": {"model_utility": 0.6}}
    for label, (mb, sec) in (("lune", lune), ("lune-full", full)):
        rows[label] = {"train_state_mb": mb, "seconds": sec, "peak_mem_mb": 6000.0, "steps": 3.0}
        rows[label].update(forget_quality=0.05, model_utility=0.6, forget_answer_acc=0.0)
    res = results(rows)
    assert statuses(name, res, "training-state memory") == [memory]
    assert statuses(name, res, "wall time to the target") == [time]


@pytest.mark.parametrize(
    ("forget", "retain", "status"),
    [
        (10.0, 95.0, "met"),
        (10.01, 100.0, "NOT met"),
        (0.0, 94.99, "NOT met"),
        (6.2, 35.4, "NOT met"),
    ],
)
def test_real_facts_forget_at_most_10_and_retain_within_5_of_the_original(forget, retain, status):
    res = results(
        {
            "original": {"retain_answer_acc": 100.0, "world_answer_acc": 68.0},
            "lune": {
                "forget_answer_acc": forget,
                "retain_answer_acc": retain,
                "world_answer_acc": 36.0,
            },
        }
    )
    assert judged("smollm2-real-facts", res) == [
        ("forgotten facts answered right at most 10 % and retained at least the original's minus 5 "
         "points", status),
        ("world facts outside the retain set (a side effect, no target)", "info"),
    ]  # fmt: skip


# ---------------------------------------------------------------- the schema itself


def one(target: dict, res: dict):
    return evaluate(parse_targets([{"name": "t", **target}]), res)


def test_missing_values_are_missing_not_met_or_failed():
    res = results({"a": {"x": 1.0}, "b": {"x": None}, "c": {}})
    cond = [{"metric": "x", "at_least": 2}]
    assert [o.status for o in one({"rows": ["a", "b", "c", "d"], "require": cond}, res)] == [
        "NOT met", "missing", "missing", "missing"]  # fmt: skip
    # one row fails, another cannot be judged: 'any' does not know, so it is missing
    assert one({"rows": ["a", "b"], "mode": "any", "require": cond}, res)[0].status == "missing"
    assert one({"rows": ["a"], "mode": "any", "require": cond}, res)[0].status == "NOT met"
    assert one({"rows": ["b", "c"], "pick": {"lowest": "x"}}, res)[0].status == "missing"
    assert one({"rows": ["a", "b"], "pick": {"highest": "x"}}, res)[0].row == "a"
    # a reference row whose value is missing
    ref = [{"metric": "x", "at_most": {"row": "b", "times": 2}}]
    assert one({"rows": "a", "require": ref}, res)[0].status == "missing"
    # no method rows at all
    assert one({"require": cond}, results({"original": {"x": 1.0}}))[0].status == "missing"


def test_methods_are_the_rows_that_are_not_references():
    res = results({"original@5%": {"x": 1}, "retrain": {"x": 1}, "m@5%": {"x": 3}, "n": {"x": 0}})
    out = one({"require": [{"metric": "x", "above": 1}]}, res)
    assert [(o.row, o.status) for o in out] == [("m@5%", "met"), ("n", "NOT met")]


def test_reference_arithmetic_and_per_seed_ratio():
    res = results(
        {"r": {"x": 10.0}}, {"a": [{"x": 4.0}, {"x": 2.0}], "r": [{"x": 10.0}, {"x": 8.0}]}
    )
    plus = [{"metric": "x", "at_least": {"row": "r", "plus": -6}}]  # 3 >= 9 - 6
    assert one({"rows": "a", "require": plus}, res)[0].status == "met"
    times = [{"metric": "x", "above": {"row": "r", "times": 0.34}}]  # 3 > 3.06
    assert one({"rows": "a", "require": times}, res)[0].status == "NOT met"
    ratio = [{"metric": "x", "times_less_than": "r", "at_least": 3, "per_seed": True}]  # 9 / 3
    [o] = one({"rows": "a", "require": ratio}, res)
    assert o.status == "met" and "= 3 (per seed: 2.5, 4)" in o.text
    dist = [{"metric": "x", "distance_to": "r", "below": {"row": "a"}}]  # |a - r| < |a - a|
    assert one({"rows": "a", "require": dist}, res)[0].status == "NOT met"


def test_lines_of_a_results_dict_come_from_its_own_scenario():
    res = results({"original": {"test_acc": 92.27}})
    res["scenario"] = {"targets": [{"name": "acc", "rows": "original", "show": ["test_acc"]}]}
    assert target_lines(res) == ["- acc: `original`: test_acc 92.27"]
    res["scenario"] = {}
    assert target_lines(res) == []


@pytest.mark.parametrize(
    ("block", "named"),
    [
        ({"name": "t", "rows": "a", "requires": []}, "'requires'"),
        ({"name": "t", "rows": "a", "require": [{"metric": "x", "atleast": 1}]}, "'atleast'"),
        ({"name": "t", "rows": "a", "require": [{"metric": "x", ">=": 1}]}, "'>='"),
        ({"name": "t", "require": [{"metric": "x", "at_most": {"row": "b", "time": 2}}]}, "'time'"),
        ({"name": "t", "pick": {"smallest": "x"}}, "'smallest'"),
        ({"name": "t", "mode": "all", "require": [{"metric": "x", "at_most": 1}]}, "'all'"),
        ({"name": "t", "show": [{"metric": "x", "per_seeds": True}]}, "'per_seeds'"),
        ({"name": "t", "require": [{"metric": "x", "at_most": 1, "below": 2}]}, "exactly one"),
        ({"name": "t", "require": [{"metric": "x"}]}, "exactly one operator"),
        ({"name": "t", "require": [{"at_most": 1}]}, "`metric` is required"),
        ({"name": "t", "require": [{"metric": "x", "at_most": "1"}]}, "finite number"),
        ({"name": "t", "require": [{"metric": "x", "at_most": float("nan")}]}, "finite number"),
        ({"name": "t", "require": [{"metric": "x", "at_most": True}]}, "finite number"),
        ({"name": "t", "require": []}, "non-empty list"),
        ({"name": "t", "rows": [], "show": ["x"]}, "rows"),
        ({"name": "t", "rows": "a"}, "would say nothing"),
        ({"name": "t", "pick": {"lowest": "x"}, "mode": "each"}, "`mode` does not apply"),
        ({"name": "t", "mode": "any", "pick": {"lowest": "x"}}, "`mode` does not apply"),
        ({"name": "t", "show": ["x"], "mode": "any"}, "need `require` or `pick`"),
        ({"name": "t", "mode": "any", "pick": {"lowest": "x"}, "show": ["x"]}, "does not apply"),
        ({"name": "t", "where": [{"metric": "x", "at_most": 1}], "show": ["x"]}, "`where`"),
        ({"rows": "a", "show": ["x"]}, "`name`"),
        ({"name": "t", "show": [{"metric": "x", "distance_to": 1, "times_less_than": "a"}]},
         "exclude each other"),
    ],
)  # fmt: skip
def test_malformed_targets_are_unlearn_errors_naming_the_problem(block, named):
    with pytest.raises(UnlearnError, match="targets\\[0\\]") as err:
        parse_targets([block], "s.yaml")
    assert named in str(err.value)
    assert str(err.value).startswith("s.yaml: ")


def test_a_targets_block_is_a_list():
    with pytest.raises(UnlearnError, match="expected a list of targets"):
        parse_targets({"name": "t"}, "s.yaml")
    assert parse_targets(None) == ()
