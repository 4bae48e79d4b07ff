"""The relearning attack (RTT protocol): folds, recovery, and the LLM bench's attack rows."""

from __future__ import annotations

import json

import pytest

from unlearn.attacks.relearn import BENIGN_PAIRS, RelearnConfig, make_folds, relearn_metrics
from unlearn.bench.llm import parse_llm, run_llm
from unlearn.data.fictitious import make_fictitious
from unlearn.errors import ScenarioError, UnlearnError

from .test_llm_bench import TINY


def test_folds_hold_out_whole_people_and_never_ask_probe_items():
    facts = make_fictitious(10, 3, seed=0)
    items = list(facts.items)
    groups = [it.person_id for it in items]
    scored = [i % 4 != 0 for i in range(len(items))]  # every fourth item is a probe item
    cfg = RelearnConfig(splits=5, folds=3)
    folds = make_folds(items, groups, scored, cfg, seed=0)
    assert [f.held for f in folds] == [0, 1, 2]
    asked_people = []
    for f in folds:
        trained = {q for q, _ in f.train_pairs}
        held = [it for it in items if it.question in f.questions]
        people = {it.person_id for it in held}
        assert len(people) == 2  # 10 people in 5 splits
        asked_people.append(people)
        # nothing about a held-out person is trained on, everyone else's every item is
        assert not any(it.question in trained for it in items if it.person_id in people)
        assert len(f.train_pairs) == sum(1 for it in items if it.person_id not in people)
        # probe items are never asked; the paraphrase is asked beside the question
        for i, it in enumerate(items):
            if it.person_id in people:
                assert (it.question in f.questions) == scored[i]
        assert len(f.questions) == 2 * len(held) == len(f.keys)
    assert not (asked_people[0] & asked_people[1])
    again = make_folds(items, groups, scored, cfg, seed=0)
    assert [f.questions for f in again] == [f.questions for f in folds]
    other = make_folds(items, groups, scored, cfg, seed=1)
    assert [f.questions for f in other] != [f.questions for f in folds]


def test_too_few_people_for_the_splits_is_named():
    facts = make_fictitious(3, 2, seed=0)
    items = list(facts.items)
    with pytest.raises(UnlearnError, match="5 splits need at least 5"):
        make_folds(items, [it.person_id for it in items], [True] * len(items), RelearnConfig(), 0)


def test_recovery_by_hand():
    # held-out accuracy: original 80 / 60 on two folds (mean 70); unlearned 10 / 10;
    # after the attack at lr 1e-5: 40 / 50 (mean 45), at 1e-4: 30 / 30 (mean 30).
    result = {
        "before": {"folds": [10.0, 10.0], "all": 10.0},
        "after": {"1e-05": [40.0, 50.0], "0.0001": [30.0, 30.0]},
        "benign": {"1e-05": 20.0, "0.0001": 15.0},
    }
    original = {"folds": [80.0, 60.0], "all": 70.0}
    m, d = relearn_metrics(result, original, RelearnConfig())
    assert m["relearn_before_acc"] == 10.0
    assert m["relearn_answer_acc"] == 45.0  # the attacker's best rate
    assert m["relearn_recovery"] == pytest.approx((45 - 10) / (70 - 10))
    assert d["best_lr"] == 1e-5
    assert m["relearn_benign_answer_acc"] == 20.0
    assert m["relearn_benign_recovery"] == pytest.approx((20 - 10) / 60)
    # unlearning that removed (almost) nothing: recovery is undefined, so missing
    flat = {**result, "before": {"folds": [79.0, 59.0], "all": 69.0}}
    assert relearn_metrics(flat, original, RelearnConfig())[0]["relearn_recovery"] is None


def test_bad_attack_settings_are_named():
    with pytest.raises(UnlearnError, match="folds"):
        RelearnConfig(splits=3, folds=4)
    with pytest.raises(UnlearnError, match="lrs"):
        RelearnConfig(lrs=())
    with pytest.raises(UnlearnError, match="original is not attacked"):
        RelearnConfig(rows=("original",))
    assert len(BENIGN_PAIRS) == 10


def _scenario(**relearn):
    sc = json.loads(json.dumps(TINY))
    sc["data"] = {"people": 10, "per_person": 2, "holdout_people": 2, "seed": 0}
    sc["forget"] = {"fraction": 0.5, "probe": 0.2}
    sc["methods"] = [
        {"name": "gradient_ascent", "steps": 3, "lr": 3e-3},
        {"name": "kunbr", "steps": 2, "lr": 3e-3, "rounds": 1, "blocks": 2},
    ]
    sc["attacks"] = {
        "relearn": {"splits": 5, "folds": 2, "lrs": [1e-3, 3e-3], "epochs": 2, **relearn}
    }
    return sc


@pytest.mark.parametrize(
    "change, message",
    [
        ({"attacks": {"relearn": {"folds": 9}}}, "folds"),
        ({"attacks": {"relearn": {"rows": ["nobody"]}}}, "not rows of this scenario"),
        ({"attacks": {"relearn": {"lr": 1e-3}}}, "unknown attacks relearn option"),
        ({"attacks": {"mia": {}}}, "one key, relearn"),
        ({"attacks": {"relearn": {"lrs": [0.0]}}}, "lrs"),
    ],
)
def test_bad_relearn_scenarios_are_named(change, message):
    with pytest.raises(ScenarioError, match=message):
        parse_llm({**_scenario(), **change})


@pytest.fixture(scope="module")
def attacked():
    return run_llm(_scenario())


def test_attack_rows_and_controls(attacked):
    by = {r["method"]: r for r in attacked["rows"]}
    keys = ("relearn_before_acc", "relearn_answer_acc", "relearn_recovery")
    for name in ("retrain", "gradient_ascent", "kunbr"):
        m = by[name]["metrics"]
        for k in (*keys, "relearn_benign_answer_acc", "relearn_benign_recovery"):
            assert k in m, (name, k)
        assert 0 <= m["relearn_answer_acc"] <= 100
        rl = by[name]["relearn"]
        assert set(rl["after"]) == {"0.001", "0.003"} and len(rl["before_folds"]) == 2
        assert rl["best_lr"] in (1e-3, 3e-3)
    for name in ("original", "oracle_noise"):  # not attacked: the keys are absent
        assert "relearn_answer_acc" not in by[name]["metrics"]
    assert attacked["attacks"]["relearn"]["folds"] == 2
    assert attacked["info"]["relearn_held_out_questions_seed0"]
    json.dumps(attacked, allow_nan=False)


def test_weight_change_per_block(attacked):
    by = {r["method"]: r for r in attacked["rows"]}
    assert "weight_change" not in by["original"]
    for name in ("retrain", "oracle_noise", "gradient_ascent", "kunbr"):
        wc = by[name]["weight_change"]
        assert wc["blocks"] == [[0, 0], [1, 1]] and len(wc["relative"]) == 2
        assert all(v > 0 for v in wc["relative"]) and wc["other"] >= 0
    kb = by["kunbr"]["record"]["extra"]["kunbr"]
    assert len(kb["density"]) == 2 and len(kb["order"]) == 1


def test_attack_report_sections(attacked, tmp_path):
    from unlearn.bench.report import write_outputs

    md = (write_outputs(attacked, tmp_path / "r") / "report.md").read_text()
    assert "Relearning attack" in md and "Weight change per block" in md
    assert "KUnBR" in md
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h2>Relearning attack</h2>" in page and "<h2>KUnBR blocks</h2>" in page


def test_results_md_section_carries_the_attack_tables(attacked, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "make_results.py"
    spec = importlib.util.spec_from_file_location("make_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "checks", lambda name, res: ["- (targets)"])
    text = mod.section("tiny", attacked)
    assert "\n### Relearning attack\n" in text and "\n### KUnBR blocks\n" in text
    assert "\n## " not in text.split("\n", 1)[1]  # one section per scenario in results.md


def test_weight_change_by_hand():
    import copy

    import torch

    from unlearn.bench.llm import weight_change
    from unlearn.models.hf import tiny_llama, tiny_tokenizer
    from unlearn.tasks import CausalLMTask

    tok = tiny_tokenizer(["a b c", "d e f"])
    task = CausalLMTask(tok)
    original = tiny_llama(tok, layers=3)
    model = copy.deepcopy(original)
    with torch.no_grad():
        for p in task.layers(model)[2].parameters():
            p.mul_(1.1)  # ||1.1 W - W|| / ||W|| = 0.1 for the last layer's block
    wc = weight_change(task, original, model, blocks=3)
    assert wc["blocks"] == [[0, 0], [1, 1], [2, 2]]
    assert wc["relative"][:2] == [0.0, 0.0] and wc["relative"][2] == pytest.approx(0.1)
    assert wc["other"] == 0.0
    two = weight_change(task, original, model, blocks=2)  # layers 0-1 and 2
    assert two["blocks"] == [[0, 1], [2, 2]] and two["relative"] == [0.0, pytest.approx(0.1)]
    with torch.no_grad():
        for p in task.layers(model)[1].parameters():
            p.mul_(1.2)  # block 0-1: sqrt(0.2^2 ||W1||^2 / (||W0||^2 + ||W1||^2))
    n0 = sum(float((p.detach() ** 2).sum()) for p in task.layers(original)[0].parameters())
    n1 = sum(float((p.detach() ** 2).sum()) for p in task.layers(original)[1].parameters())
    got = weight_change(task, original, model, blocks=2)["relative"][0]
    assert got == pytest.approx((0.04 * n1 / (n0 + n1)) ** 0.5)
