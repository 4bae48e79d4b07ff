"""Unlearning as ablation (kind: llm_ablation) on a tiny Llama and a small family."""

from __future__ import annotations

import copy
import json

import pytest

from unlearn.bench.ablation import parse_ablation, run_ablation
from unlearn.data import kinship as K
from unlearn.errors import ScenarioError

TINY = {
    "name": "tiny-ablation",
    "kind": "llm_ablation",
    "model": {"name": "tiny", "hidden": 64, "layers": 2},
    "data": {"people": 12, "seed": 0, "biographies": True},
    "forget": {"targets": 4, "group": 2, "search_seeds": 20},
    "recipe": {"epochs": 12, "lr": 3e-3, "batch_size": 8, "lora_rank": 0},
    "eval": {"unrelated": 6, "max_new_tokens": 8},
    "seeds": [0],
    "cache_dir": None,
    "methods": [{"name": "gradient_ascent", "steps": 4, "lr": 1e-3}],
    "attacks": {"relearn": {"splits": 2, "folds": 1, "lrs": [1e-3], "epochs": 1, "benign": False}},
}


@pytest.fixture(scope="module")
def results():
    return run_ablation(copy.deepcopy(TINY))


def test_rows_per_mode_are_means_over_groups(results):
    rows = {(r["method"], r["seed"]): r for r in results["rows"]}
    assert set(rows) == {
        ("original@target", 0),
        ("gradient_ascent@target", 0),
        ("original@minimal", 0),
        ("gradient_ascent@minimal", 0),
    }
    ga = rows[("gradient_ascent@target", 0)]
    assert [g["group"] for g in ga["groups"]] == [0, 1]
    per = [g["metrics"]["target_recall"] for g in ga["groups"]]
    assert ga["metrics"]["target_recall"] == pytest.approx(sum(per) / 2)
    assert ga["metrics"]["seconds"] == pytest.approx(
        sum(g["metrics"]["seconds"] for g in ga["groups"])
    )
    for key in ("target_recall", "closure_recall", "unrelated_acc", "rederivation_rate",
                "deep_recall", "relearn_recovery"):  # fmt: skip
        assert key in ga["metrics"]
    # the original is the same model in both modes: the same scores
    o_t, o_m = rows[("original@target", 0)], rows[("original@minimal", 0)]
    for key in ("target_recall", "closure_recall", "unrelated_acc", "rederivation_rate"):
        assert o_t["metrics"][key] == o_m["metrics"][key]
    # the minimal mode forgets more items than the target mode
    assert rows[("gradient_ascent@minimal", 0)]["metrics"]["n_forget"] > ga["metrics"]["n_forget"]
    assert "relearn_groups" in ga
    json.dumps(results, allow_nan=False)


def test_the_targets_minimal_sets_and_closure_follow_the_knowledge_base():
    from unlearn.bench.ablation import AblationFamily

    fam = AblationFamily()
    sc = fam.parse(copy.deepcopy(TINY), "t", None)
    fam.setup(sc, lambda m: None)
    groups = fam._groups(sc, 0)
    assert len(groups) == 2 and all(len(g.targets) == 2 for g in groups)
    facts = set(fam.kb.facts)
    for g in groups:
        for t, m in zip(g.targets, g.minimal, strict=True):
            assert t in m and m <= facts
            assert not K.is_derivable(t, facts - m, fam.rules, genders=fam.genders)
        assert not set(g.targets) & set(g.closure)
        unrelated_facts = {it.fact for it in g.unrelated if hasattr(it, "fact")}
        assert not unrelated_facts & (set(g.closure) | set(g.targets))
        for prompt, key in g.rederive:
            assert prompt.startswith("Facts: ") and key in {t.subject for t in g.targets}


def test_bad_ablation_scenarios_are_named():
    for change, msg in [
        ({"forget": {"targets": 5, "group": 2}}, "multiple of forget group"),
        ({"modes": ["target", "deep"]}, "modes must be"),
        ({"forget": {"rules": "mine"}}, "forget rules"),
        ({"data": {"people": 3}}, "data people"),
        ({"eval": {"unrelated": 0}}, "eval unrelated"),
        ({"methods": [{"name": "npo", "target_forget_acc": 10}]}, "no early stop"),
        ({"methods": [{"name": "npo", "label": "a@b"}]}, "without '@'"),
        ({"attacks": {"relearn": {"splits": 3, "folds": 1}}}, "targets per group"),
        ({"attacks": {"relearn": {"rows": ["kunbr"]}}}, "not method labels"),
        ({"extra": 1}, "unknown key"),
    ]:
        raw = {**copy.deepcopy(TINY), **change}
        with pytest.raises(ScenarioError, match=msg):
            parse_ablation(raw)
