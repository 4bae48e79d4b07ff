"""Vision-language models: concepts, the task, SIU and the core methods on a tiny LLaVA."""

import math

import numpy as np
import pytest
import torch

from unlearn.api import unlearn
from unlearn.data.concepts import NAMING_QUESTIONS, make_concepts
from unlearn.errors import UnlearnError
from unlearn.methods.vlm.siu import SIUTargets, masked_kl
from unlearn.requests import GroupRequest

pytest.importorskip("transformers")

from unlearn.models.hf import tiny_tokenizer  # noqa: E402
from unlearn.tasks.vlm import ImageQAData, VLMTask, lm_lora_targets, tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def concepts():
    return make_concepts(4, 3, size=16, seed=0, unseen=3)


@pytest.fixture(scope="module")
def setup(concepts):
    texts = [concepts.naming_answer(c) for c in range(4)] + list(NAMING_QUESTIONS)
    texts += [q + " " + a for f in concepts.facts for q, a in f] + ["Describe this image."]
    texts += [concepts.description(c) for c in range(4)] + concepts.unseen_names
    tok = tiny_tokenizer(texts * 3)
    image_token = len(tok)
    model = tiny_llava(len(tok) + 1, image_token, image_size=16, patch=4, seed=0)
    task = VLMTask(tok, image_token, 16)
    items, groups = [], []
    for c in range(4):
        for i in range(3):
            for q in NAMING_QUESTIONS[:2]:
                items.append((concepts.images[c][i], q, concepts.naming_answer(c)))
                groups.append(c)
        for q, a in concepts.facts[c]:
            items.append((None, q, a))
            groups.append(c)
    return tok, task, model, ImageQAData(items, {"concept": groups})


def test_concepts_are_seeded_distinct_and_checked(concepts):
    again = make_concepts(4, 3, size=16, seed=0, unseen=3)
    assert again.names == concepts.names
    assert all(torch.equal(a, b) for a, b in zip(again.images, concepts.images, strict=True))
    assert len({(lk["shape"], lk["fg"]) for lk in concepts.looks}) == 4
    assert not set(concepts.unseen_names) & set(concepts.names)
    assert concepts.images[0].shape == (3, 3, 16, 16)
    assert float(concepts.images[0].min()) >= 0 and float(concepts.images[0].max()) <= 1
    assert not torch.equal(concepts.images[0][0], concepts.images[0][1])  # varied drawings
    other = make_concepts(4, 3, size=16, seed=1, unseen=3)
    assert other.names != concepts.names
    with pytest.raises(UnlearnError, match="n_concepts"):
        make_concepts(1)


def test_the_task_places_image_tokens_and_scores_mixed_batches(setup):
    tok, task, model, data = setup
    batch = task.collate([data[0], data[6]])  # one item with an image, one without
    assert int((batch["input_ids"][0] == task.image_token_id).sum()) == 16
    assert int((batch["input_ids"][1] == task.image_token_id).sum()) == 0
    assert batch["pixel_values"].shape == (1, 3, 16, 16)
    logp, n = task.example_logprob(model, [data[0], data[6]])
    assert logp.shape == (2,) and bool((logp < 0).all()) and bool((n > 0).all())
    # the image matters: another image changes the answer's log-probability
    other = (data[3][0], data[0][1], data[0][2])
    assert not torch.isclose(task.example_logprob(model, [other])[0], logp[:1]).all()
    answers = task.generate(
        model, [data[0][1], data[6][1]], max_new_tokens=3, images=[data[0][0], None]
    )
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert task.membership_scores(model, data.subset([0, 1])).shape == (2,)
    assert all("language_model" in t for t in lm_lora_targets(model))
    with pytest.raises(UnlearnError, match="one image"):
        task.generate(model, ["a", "b"], images=[None])


def test_masked_kl_matches_a_hand_computed_case():
    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    ref = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]])
    keep = torch.tensor([[True, False]])
    out = masked_kl(logits, ref, keep, torch.tensor([2]))
    # position 0 only, token 2 removed: q = softmax(1, 0), p = softmax(0, 1)
    q = np.exp([1, 0]) / np.exp([1, 0]).sum()
    p = np.exp([0, 1]) / np.exp([0, 1]).sum()
    assert float(out) == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-5)
    assert float(masked_kl(logits, logits, keep, torch.tensor([], dtype=torch.long))) == 0


def _targets(concepts, c):
    return SIUTargets(
        concepts.names[c],
        concepts.unseen_names[0],
        concepts.description(c + 1),
        tuple(concepts.facts[c]),
    )


def _forget_one_image(setup, concepts, c=0):
    """The forget set: one training image of concept ``c`` with its naming questions;
    the retain set: every other concept's items."""
    tok, task, model, data = setup
    groups = data.group_labels("concept")
    keep = [i for i in range(len(data)) if groups[i] != c]
    forget = [
        i
        for i in range(len(data))
        if groups[i] == c
        and data[i][0] is not None
        and torch.equal(data[i][0], concepts.images[c][0])
    ]
    sub = data.subset(forget + keep)
    labels = np.array(["forget"] * len(forget) + ["keep"] * len(keep))
    return ImageQAData(sub.items, {"concept": labels})


@pytest.mark.parametrize("method", ["siu", "siu_no_dmkl"])
def test_siu_runs_on_one_image_and_changes_the_model(setup, concepts, method):
    tok, task, model, data = setup
    train = _forget_one_image(setup, concepts)
    cfg = {"steps": 3, "lora_rank": 4, "lora_alpha": 8, "lr": 1e-2, "preserve": 2}
    new, rec = unlearn(
        method,
        model,
        train,
        GroupRequest(groups=("forget",), by="concept"),
        task=task,
        config=cfg,
        alternatives={"siu": _targets(concepts, 0)},
    )
    assert rec.steps == 3 and rec.method == method
    diff = sum(
        float((a - b).detach().abs().sum())
        for a, b in zip(new.parameters(), model.parameters(), strict=True)
    )
    assert diff > 0
    before = task.example_logprob(model, [train[0]])[0]
    after = task.example_logprob(new, [train[0]])[0]
    assert math.isfinite(float(after.detach())) and float(after.detach()) != float(before.detach())


def test_siu_masks_the_contradicting_phrase_and_the_name(setup, concepts):
    from unlearn.methods.base import get_method

    tok, task, model, data = setup
    train = _forget_one_image(setup, concepts)
    m = get_method("siu", {"steps": 1})
    from unlearn.data.core import split_request
    from unlearn.methods.base import UnlearnContext

    ctx = UnlearnContext(
        task=task,
        split=split_request(train, GroupRequest(groups=("forget",), by="concept")),
        request=None,
        original=model,
        seed=0,
        alternatives={"siu": _targets(concepts, 0)},
    )
    m._make_targets(ctx)
    items = list(m._items)
    assert items[0][2] == f"This is the {concepts.unseen_names[0]}."
    assert items[-1][0] is None  # facts by name carry no image
    batch = task.collate(items[:1])
    contra = m._contradicting(ctx, items[:1], m._spans[:1], batch)[0]
    marked = tok.decode(batch["input_ids"][0][contra].tolist())
    assert marked.strip() == concepts.unseen_names[0]
    name_ids = set(tok(" " + concepts.names[0], add_special_tokens=False)["input_ids"])
    assert name_ids <= set(m._vocab_out.tolist())


def test_siu_refuses_what_it_cannot_serve(setup, concepts):
    tok, task, model, data = setup
    train = _forget_one_image(setup, concepts)
    req = GroupRequest(groups=("forget",), by="concept")
    with pytest.raises(UnlearnError, match="SIU targets"):
        unlearn("siu", model, train, req, task=task, config={"steps": 1})
    two = ImageQAData(
        [
            (concepts.images[0][0], "q", "a"),
            (concepts.images[0][1], "q", "a"),
            (concepts.images[1][0], "q", "b"),
        ],
        {"concept": ["f", "f", "k"]},
    )
    with pytest.raises(UnlearnError, match="single image"):
        unlearn(
            "siu",
            model,
            two,
            GroupRequest(groups=("f",), by="concept"),
            task=task,
            config={"steps": 1},
            alternatives={"siu": _targets(concepts, 0)},
        )
    with pytest.raises(UnlearnError, match="kl_weight must be 0"):
        unlearn(
            "siu_no_dmkl",
            model,
            train,
            req,
            task=task,
            config={"kl_weight": 0.5},
            alternatives={"siu": _targets(concepts, 0)},
        )
    with pytest.raises(UnlearnError, match="differ"):
        SIUTargets("abc", "abc", "x")


@pytest.mark.parametrize("method", ["gradient_ascent", "kl", "idkpo"])
def test_the_core_methods_run_on_a_vision_language_model(setup, concepts, method):
    tok, task, model, data = setup
    train = _forget_one_image(setup, concepts)
    new, rec = unlearn(
        method,
        model,
        train,
        GroupRequest(groups=("forget",), by="concept"),
        task=task,
        config={"steps": 2, "lr": 1e-3},
    )
    assert rec.steps == 2
    assert float(task.example_logprob(new, [train[0]])[0]) != float(
        task.example_logprob(model, [train[0]])[0]
    )


TINY_SCENARIO = {
    "name": "vlm-tiny",
    "kind": "vlm",
    "model": {"name": "tiny", "patch": 4, "vision_hidden": 32, "vision_layers": 2},
    "data": {"concepts": 4, "images": 3, "train_images": 2, "size": 16, "seed": 0},
    "recipe": {
        "epochs": 1,
        "batch_size": 8,
        "lora_rank": 4,
        "warmup_steps": 1,
        "vision_pretrain_epochs": 2,
    },
    "forget": {"concepts": 1},
    "eval": {"max_new_tokens": 4, "other_images": 1},
    "seeds": [0],
    "cache_dir": None,
    "methods": [
        {"name": "siu", "steps": 2, "lora_rank": 4, "lora_alpha": 8, "preserve": 2},
        {"name": "siu_no_dmkl", "steps": 2, "lora_rank": 4, "lora_alpha": 8, "preserve": 2},
        {"name": "gradient_ascent", "steps": 1},
    ],
}


def test_the_vlm_benchmark_runs_every_row_with_the_mmubench_metrics():
    from unlearn.bench.core import run

    res = run(TINY_SCENARIO)
    rows = {r["method"].split("@")[0]: r for r in res["rows"]}
    assert set(rows) == {
        "original",
        "retrain",
        "oracle_noise",
        "siu",
        "siu_no_dmkl",
        "gradient_ascent",
    }
    for r in rows.values():
        m = r["metrics"]
        for k in (
            "efficacy",
            "generality",
            "specificity",
            "facts_by_name_acc",
            "diversity",
            "mia_auc",
            "base_naming_acc",
        ):
            assert k in m and 0 <= m[k] <= 100, (r["method"], k)
    assert rows["siu"]["metrics"]["steps"] == 2
    assert res["info"]["forgotten_seed0"] and res["kind"] == "vlm"


def test_vlm_scenarios_are_checked():
    from unlearn.bench.core import family_for
    from unlearn.errors import ScenarioError

    fam = family_for(TINY_SCENARIO)
    for change, msg in [
        ({"forget": {"concepts": 3}}, "forget.concepts"),
        ({"data": {"concepts": 4, "images": 2, "train_images": 2}}, "held out"),
        ({"model": {"name": "big"}}, "smollm2 or tiny"),
        ({"methods": [{"name": "trw"}]}, "methods"),
        ({"bogus": 1}, "unknown key"),
    ]:
        with pytest.raises(ScenarioError, match=msg):
            fam.parse({**TINY_SCENARIO, **change}, "t", None)


def test_the_vision_encoder_can_be_pretrained_to_tell_concepts_apart(setup):
    from unlearn.bench.vlm import VLMRecipe, pretrain_vision

    tok, task, model, data = setup
    import copy

    m = copy.deepcopy(model)
    acc = pretrain_vision(m, data, VLMRecipe(vision_pretrain_epochs=40), seed=0)
    assert acc == 100.0  # 4 concepts, 3 images each: learnable
    before = dict(model.model.vision_tower.named_parameters())
    changed = any(not torch.equal(p, before[n]) for n, p in m.model.vision_tower.named_parameters())
    assert changed
