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
    "seeds": [0, 2, 3],
    "cache_dir": None,
    "methods": [{"name": "gradient_ascent", "steps": 4, "lr": 1e-3}],
    "attacks": {"relearn": {"splits": 2, "folds": 1, "lrs": [1e-3], "epochs": 1, "benign": False}},
}


@pytest.fixture(scope="module")
def results():
    return run_ablation(copy.deepcopy(TINY))


def test_rows_per_mode_are_means_over_groups(results):
    rows = {(r["method"], r["seed"]): r for r in results["rows"]}
    labels = ("original@target", "gradient_ascent@target", "original@minimal",
              "gradient_ascent@minimal")  # fmt: skip
    assert set(rows) == {(lab, s) for lab in labels for s in (0, 2, 3)}
    ga = rows[("gradient_ascent@target", 0)]
    assert [g["group"] for g in ga["groups"]] == [0, 1]
    per = [g["metrics"]["target_recall"] for g in ga["groups"]]
    assert ga["metrics"]["target_recall"] == pytest.approx(sum(per) / 2)
    assert ga["metrics"]["seconds"] == pytest.approx(
        sum(g["metrics"]["seconds"] for g in ga["groups"])
    )
    for key in ("target_recall", "closure_recall", "unrelated_acc", "deep_recall"):
        assert 0 <= ga["metrics"][key] <= 100
    assert "relearn_answer_acc" in ga["metrics"] and "relearn" in ga["groups"][0]
    # the original's fine-tune is counted once per seed, not once per group
    o_t = rows[("original@target", 0)]
    assert o_t["metrics"]["seconds"] == pytest.approx(o_t["groups"][0]["metrics"]["seconds"])
    # deep recall counts facts the original knew and no longer answers: 0 on the original
    assert all(rows[(lab, s)]["metrics"]["deep_recall"] in (0.0, None)
               for lab in ("original@target", "original@minimal") for s in (0, 2, 3))  # fmt: skip
    # the minimal mode forgets more items than the target mode
    assert rows[("gradient_ascent@minimal", 0)]["metrics"]["n_forget"] > ga["metrics"]["n_forget"]
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
        for i, prompt, key in g.rederive:
            assert prompt.startswith("Facts: ") and key == g.targets[i].relation
            premises = prompt.split("\nQuestion:")[0]
            assert key not in premises  # the relation asked for is not stated


def test_attack_folds_never_train_on_what_a_held_out_target_follows_from():
    from unlearn.attacks.relearn import RelearnConfig
    from unlearn.bench.ablation import AblationFamily, _target_folds

    fam = AblationFamily()
    sc = fam.parse(copy.deepcopy(TINY), "t", None)
    fam._knowledge(sc)
    cfg = RelearnConfig(splits=2, folds=2, lrs=(1e-3,), epochs=1)
    for seed in (0, 1, 2, 3):
        for g in fam._groups(sc, seed):
            items = [fam.qa[f] for f in sorted(set(g.targets).union(*g.minimal))]
            try:
                folds = _target_folds(g, items, cfg, seed)
            except ScenarioError as exc:
                assert "nothing to train on" in str(exc)
                continue
            for fold in folds:
                held = [t for t in g.targets if fam.qa[t].question in fold.questions]
                assert held
                trained = {q for q, _ in fold.train_pairs}
                for t in held:
                    i = g.targets.index(t)
                    near = {t, *g.supports[i], *g.minimal[i]}
                    assert not trained & {fam.qa[f].question for f in near}


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


def test_what_the_knowledge_base_cannot_supply_is_named_before_any_work():
    from unlearn.bench.ablation import AblationFamily

    for change, msg in [
        ({"forget": {"targets": 200, "group": 2}}, "exceeds the"),
        ({"eval": {"unrelated": 60}}, "eval unrelated asks for 60"),
    ]:
        fam = AblationFamily()
        sc = fam.parse({**copy.deepcopy(TINY), **change}, "t", None)
        with pytest.raises(ScenarioError, match=msg):
            fam.check(sc)
