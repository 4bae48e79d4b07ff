"""The ``kind: llm`` benchmark end to end on a tiny random Llama, and its input checks."""

from __future__ import annotations

import json

import pytest

from unlearn.bench.llm import LMEvaluator, known_facts, parse_llm, replacement_answers, run_llm
from unlearn.data.fictitious import make_fictitious, world_knowledge
from unlearn.errors import ScenarioError, UnlearnError

TINY = {
    "name": "tiny-fictitious",
    "kind": "llm",
    "model": {"name": "tiny", "hidden": 64, "layers": 2},
    "data": {"people": 6, "per_person": 3, "holdout_people": 2, "seed": 0},
    "forget": {"fraction": 0.4, "probe": 0.5},
    "recipe": {"epochs": 20, "lr": 3e-3, "batch_size": 8, "lora_rank": 0},
    "eval": {"retain_items": 4, "max_new_tokens": 8},
    "seeds": [0],
    "cache_dir": None,
    "methods": [
        {"name": "llm_ga", "steps": 4, "lr": 1e-3, "target_forget_acc": 0.0, "check_every": 2},
        {"label": "lune-r4", "name": "lune", "steps": 3, "lr": 1e-2, "lora_rank": 4},
    ],
}

REQUIRED = (
    "forget_quality",
    "model_utility",
    "forget_rouge",
    "retain_rouge",
    "forget_answer_acc",
    "retain_answer_acc",
    "privleak",
    "seconds",
)


@pytest.fixture(scope="module")
def results():
    return run_llm(TINY)


def test_llm_results_layout(results):
    labels = [s["method"] for s in results["summary"]]
    assert labels == ["original", "retrain", "oracle_noise", "llm_ga", "lune-r4"]
    for row in results["rows"]:
        for key in REQUIRED:
            assert key in row["metrics"], (row["method"], key)
        if row["method"] in ("llm_ga", "lune-r4"):
            assert "peak_mem_mb" in row["metrics"] and "train_state_mb" in row["metrics"]
    retrain = next(r for r in results["rows"] if r["method"] == "retrain")["metrics"]
    # the oracle against itself is not measured: missing, never written in
    assert retrain["forget_quality"] is None and retrain["privleak"] is None
    lune = next(r for r in results["rows"] if r["method"] == "lune-r4")["metrics"]
    ga = next(r for r in results["rows"] if r["method"] == "llm_ga")["metrics"]
    assert lune["train_state_mb"] < ga["train_state_mb"] / 5
    json.dumps(results)  # serialisable as results.json


def test_the_stop_probe_reads_only_unscored_forget_items(results):
    from unlearn.bench.llm import probe_split

    info = results["info"]
    probe_qs = set(info["probe_questions_seed0"])
    # 2 of the 6 people (3 items each) are forgotten; half of their items are the probe
    assert len(probe_qs) == 3
    items = make_fictitious(6, 3, seed=0).items
    probe, scored = probe_split(items[:6], 0.5, seed=0)
    assert len(probe) == 3 and len(scored) == 3
    assert not {it.question for it in probe} & {it.question for it in scored}
    assert probe_split(items[:6], 0.5, seed=0) == (probe, scored)
    assert probe_split(items[:6], None, seed=0) == ([], list(items[:6]))
    ga = next(r for r in results["rows"] if r["method"] == "llm_ga")
    assert ga["record"]["extra"]["probe_seconds"] > 0
    from unlearn.bench.report import _probe_section

    section = _probe_section(results)
    assert "Early-stop probe" in section and all(q in section for q in probe_qs)


def test_forget_quality_separates_the_original_from_the_oracle(results):
    by = {s["method"]: s["mean"] for s in results["summary"]}
    # the tiny model memorises its people: the original's forget truth ratios and
    # membership scores differ from the model that never saw the forgotten people
    assert by["original"]["forget_prob"] > by["retrain"]["forget_prob"]
    assert by["original"]["mink_auc"] > by["retrain"]["mink_auc"]
    assert by["original"]["privleak"] < 0  # MUSE's sign: under-unlearned is negative


def test_llm_report_is_written(results, tmp_path):
    from unlearn.bench.report import write_outputs

    out = write_outputs(results, tmp_path / "r")
    md = (out / "report.md").read_text()
    assert "Forget quality" in md and "Model utility" in md
    assert (out / "forget_quality_vs_utility.png").is_file()


def test_recompute_privleak_restores_stored_values_from_their_aucs(results, tmp_path):
    """benchmarks/recompute_privleak.py on a real results folder whose PrivLeak holds the
    pre-issue-12 formula gives back what the bench itself computes now."""
    import copy
    import importlib.util
    from pathlib import Path

    from unlearn.bench.report import write_outputs

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "recompute_privleak.py"
    spec = importlib.util.spec_from_file_location("recompute_privleak", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    old = copy.deepcopy(results)
    oracle = {r["seed"]: r["metrics"]["mink_auc"] for r in old["rows"] if r["method"] == "retrain"}
    for r in old["rows"]:
        m = r["metrics"]
        if m.get("privleak") is not None:
            m["privleak"] = (m["mink_auc"] - oracle[r["seed"]]) / oracle[r["seed"]] * 100
    out = write_outputs(old, tmp_path / "old")
    assert mod.main([str(out)]) == 0
    new = json.loads((out / "results.json").read_text())
    want = [r["metrics"].get("privleak") for r in results["rows"]]
    got = [r["metrics"].get("privleak") for r in new["rows"]]
    assert got == pytest.approx(want)
    assert any(v is not None for v in got)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": {"name": "gpt5"}}, "model name"),
        ({"benchmark": "tofu"}, "benchmark"),
        ({"forget": {"fraction": 1.5}}, "fraction"),
        ({"methods": [{"name": "salun"}]}, "not a language-model method"),
        ({"methods": [{"name": "llm_npo", "no_such_option": 2}]}, "unknown option"),
        (
            {"forget": {"fraction": 0.2}, "methods": [{"name": "npo", "target_forget_acc": 10}]},
            "declare the probe split",
        ),
        ({"forget": {"fraction": 0.2, "probe": 1.0}}, "probe must be a fraction"),
        ({"methods": [{"name": "llm_ga", "label": "retrain"}]}, "reserved"),
        ({"surprise": 1}, "unknown key"),
        ({"eval": {"retain": 3}}, "unknown eval key"),
        ({"data": {"persons": 3}}, "unknown data key"),
        ({"seeds": []}, "seeds"),
        ({"eval": {"mink": 0}}, "mink"),
        ({"eval": {"perturbed": 0}}, "perturbed"),
        ({"model": {"name": "tiny", "width": 3}}, "unknown model key"),
        ({"model": {"name": "smollm2", "layers": 3}}, "unknown model key"),
    ],
)
def test_bad_llm_scenarios_are_named(change, message):
    with pytest.raises((ScenarioError, UnlearnError), match=message):
        parse_llm({**TINY, **change})


def test_replacement_answers_swap_the_fact_for_another_value():
    facts = make_fictitious(6, 3, seed=1)
    forget = [it for it in facts.items if it.person_id == facts.people[0].id]
    pool = [it for it in facts.items if it.person_id != facts.people[0].id]
    kinds = {it.kind for it in pool}
    swapped = 0
    for it, (q, neg) in zip(forget, replacement_answers(forget, pool), strict=True):
        assert q == it.question and it.key.lower() not in neg.lower() and neg != it.answer
        if it.kind in kinds:  # same sentence, another value of the same attribute
            swapped += 1
            assert neg.split()[:2] == it.answer.split()[:2]
        else:  # no other value known: a refusal
            assert "know" in neg or "answer" in neg or "information" in neg or "sure" in neg
    assert swapped >= 1


def test_known_facts_keeps_only_facts_answered_right():
    class Echo:
        """A stand-in task whose 'model' answers the capital questions right."""

        def generate(self, model, qs, new, bs):
            return ["Paris" if "France" in q else "no idea" for q in qs]

    world = world_knowledge()
    kept = known_facts(Echo(), None, world, {"max_new_tokens": 4, "batch_size": 4})
    assert [it.key for it in kept] == ["Paris"]
    assert LMEvaluator is not None


def test_packaged_llm_scenario_parses():
    # the files under benchmarks/ are parsed by tests/test_scenario_files.py
    import yaml

    from unlearn.bench.scenario import LLM_SCENARIO

    sc = parse_llm(yaml.safe_load(LLM_SCENARIO.read_text()), str(LLM_SCENARIO))
    assert sc.model["name"] == "smollm2" and sc.methods


def test_cli_runs_an_llm_scenario_and_refuses_two_scenarios(tmp_path, capsys):
    import yaml

    from unlearn.cli import main

    path = tmp_path / "tiny.yaml"
    small = {**TINY, "methods": [{"name": "llm_simnpo", "steps": 2}], "seeds": [3]}
    path.write_text(yaml.safe_dump(small))
    assert main(["bench", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["seeds"] == [3] and res["kind"] == "llm"
    assert main(["bench", str(path), "--llm", "--out", str(tmp_path / "o2")]) == 2
    assert "not both" in capsys.readouterr().err


def test_finetuned_models_are_cached_as_adapters(tmp_path):
    from unlearn.bench.llm import finetuned, load_base
    from unlearn.tasks.causal_lm import CausalLMTask, LMRecipe

    facts = make_fictitious(4, 2, seed=2)
    pairs = [(it.question, it.answer) for it in facts.items]
    texts = [t for p in pairs for t in p]
    base, tok, ident = load_base({"name": "tiny", "hidden": 32}, texts, None)
    task = CausalLMTask(tok)
    recipe = LMRecipe(epochs=2, lr=3e-3, lora_rank=4, lora_targets=("q_proj", "v_proj"))
    a, sec_a, hit_a = finetuned(task, base, ident, pairs, recipe, 0, tmp_path)
    b, sec_b, hit_b = finetuned(task, base, ident, pairs, recipe, 0, tmp_path)
    assert (hit_a, hit_b) == (False, True) and sec_a == pytest.approx(sec_b)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert (v - w).abs().max() < 1e-6, k
    c, _, hit_c = finetuned(task, base, ident, pairs[1:], recipe, 0, tmp_path)  # other data
    assert not hit_c and len(list(tmp_path.glob("lm-adapter-*.safetensors"))) == 2


def test_real_facts_flow_without_an_oracle(monkeypatch, tmp_path):
    import unlearn.bench.llm as bench
    from unlearn.bench.report import write_outputs
    from unlearn.data.real_facts import real_facts

    raw = {
        **TINY,
        "benchmark": "real_facts",
        "forget": {"fraction": 0.3},
        "methods": [{"name": "llm_graddiff", "steps": 2, "lr": 1e-3}],
    }
    raw.pop("data")
    with pytest.raises(UnlearnError, match="real facts right"):
        bench.run_llm(raw)  # a random tiny model knows none of them
    monkeypatch.setattr(bench, "known_facts", lambda task, model, items, ev: real_facts()[:10])
    res = bench.run_llm(raw)
    assert [s["method"] for s in res["summary"]] == ["original", "llm_graddiff"]
    m = res["rows"][0]["metrics"]
    assert "forget_quality" not in m and "world_answer_acc" in m and "model_utility" in m
    out = write_outputs(res, tmp_path / "rf")
    assert (out / "forget_vs_retain_answers.png").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": [{"name": "retrain"}]}, "retrain is the oracle"),
        ({"methods": 5}, "methods must be a list"),
        ({"methods": [{"name": "npo", "label": ["x"]}]}, "must be strings"),
        ({"data": 3}, "data must be a mapping"),
        ({"eval": "ab"}, "eval must be a mapping"),
        ({"cache_dir": 5}, "cache_dir must be a string"),
        ({"seeds": [-1]}, "seeds"),
        ({"model": {"name": "tiny", "hidden": -1}}, "hidden"),
        ({"model": [1]}, "model must be a mapping"),
        ({"methods": [{"name": "npo", "lr": 10**400}]}, "lr"),
    ],
)
def test_more_bad_llm_scenarios_are_named(change, message):
    with pytest.raises(UnlearnError, match=message):
        parse_llm({**TINY, **change})


def test_an_impossible_probe_split_fails_before_any_fine_tuning(monkeypatch):
    import unlearn.bench.llm as bench

    def refuse(*a, **k):
        raise AssertionError("fine-tuned before the probe split was checked")

    monkeypatch.setattr(bench, "finetuned", refuse)
    raw = {
        **TINY,
        "data": {"people": 6, "per_person": 1, "holdout_people": 2, "seed": 0},
        "forget": {"fraction": 0.1, "probe": 0.5},
    }
    with pytest.raises(UnlearnError, match="at least two forget items"):
        run_llm(raw)


def test_eval_can_leave_out_verbmem_and_paraphrased_questions():
    from unlearn.bench.llm import parse_llm
    from unlearn.errors import ScenarioError

    base = {
        "name": "t",
        "kind": "llm",
        "model": {"name": "tiny"},
        "seeds": [0],
        "methods": [{"name": "gradient_ascent", "steps": 1}],
    }
    sc = parse_llm({**base, "eval": {"verbmem": False, "paraphrased_questions": False}})
    assert sc.eval["verbmem"] is False and sc.eval["paraphrased_questions"] is False
    assert parse_llm(base).eval["verbmem"] is True
    with pytest.raises(ScenarioError, match="verbmem must be true or false"):
        parse_llm({**base, "eval": {"verbmem": "no"}})
    res = run_llm(
        {
            **TINY,
            "eval": {**TINY["eval"], "verbmem": False, "paraphrased_questions": False},
            "methods": TINY["methods"][:1],
        }
    )
    for row in res["rows"]:
        assert "verbmem_forget" not in row["metrics"]
        assert "forget_answer_acc" in row["metrics"]
