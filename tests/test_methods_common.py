"""Every registered method of every family through the same checks (in the spirit of
scikit-learn's check_estimator): it runs, changes the model, leaves the input model
unchanged, is deterministic under a seed and (where it draws anything at random)
different under another, refuses request kinds and tasks it does not support with a
message naming what it needs, and moves the forget set's loss in the forgetting
direction on a tiny model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearn.bench.certified import unit_features
from unlearn.certified import CertifiedLogReg
from unlearn.data import split_request
from unlearn.data.fictitious import make_fictitious, world_knowledge
from unlearn.errors import UnlearnError, UnsupportedRequestError
from unlearn.methods import UnlearnContext, available_methods, get_method
from unlearn.models import build_model
from unlearn.models.hf import tiny_llama, tiny_tokenizer
from unlearn.requests import ClassRequest, FeatureRequest, GroupRequest, SampleRequest
from unlearn.tasks import CausalLMTask, ClassifierTask, ConvexTask, LMRecipe, PairData
from unlearn.tasks.convex import MatrixData

from .conftest import TINY_RECIPE, weights

# Small, fast settings per (method, family): each method's own defaults, shortened.
CLS = {
    "retrain": {},
    "finetune": {"epochs": 3, "lr": 3e-3, "optimizer": "adam"},
    "l1_sparse": {"epochs": 3, "lr": 3e-3, "optimizer": "adam"},
    "gradient_ascent": {"epochs": 2, "lr": 1e-3, "optimizer": "adam"},
    "graddiff": {"epochs": 2, "lr": 1e-3, "optimizer": "adam"},
    "neggrad_plus": {"epochs": 1, "lr": 1e-3, "optimizer": "adam", "alpha": 0.8},
    "kl": {"epochs": 2, "lr": 1e-3, "optimizer": "adam"},
    "npo": {"epochs": 3, "lr": 1e-3, "optimizer": "adam"},
    "simnpo": {"epochs": 3, "lr": 1e-3, "optimizer": "adam"},
    "random_labels": {"epochs": 3, "lr": 1e-3, "optimizer": "adam"},
    "salun": {"epochs": 3, "lr": 1e-3, "optimizer": "adam"},
    "scrub": {"epochs": 2, "max_epochs": 1, "retain_batches": 3, "lr": 1e-3, "optimizer": "adam"},
    "fisher": {"samples": 64, "alpha": 1e-6},
    "influence": {"samples": 64, "damping": 0.05},
    "amun": {"epochs": 2, "pgd_steps": 10, "lr": 1e-3, "optimizer": "adam"},
    "trw": {"epochs": 2, "lr": 1e-3},
    "lune": {"epochs": 3, "lr": 1e-3, "optimizer": "adam", "lora_rank": 0},
    "ferrari": {"epochs": 3, "lr": 1e-3, "optimizer": "adam", "n_draws": 4},
}
LM = {name: {"steps": 3, "lr": 3e-3} for name in [*CLS, "idkpo"]} | {
    "retrain": {},
    "lune": {"steps": 3, "lr": 1e-2, "lora_rank": 4},
    # fine-tuning on the retain set forgets only by drift: more, larger steps
    "finetune": {"steps": 10, "lr": 1e-2},
    "l1_sparse": {"steps": 10, "lr": 1e-2},
    "neggrad_plus": {"steps": 3, "lr": 3e-3, "alpha": 0.5},
    "kunbr": {"steps": 3, "lr": 3e-3, "rounds": 2, "blocks": 2},
    # its decoder fitted on a copy of the target itself (tests only): tests/test_r2f.py
    "r2f": {"steps": 3, "lr": 0.05, "lora_rank": 4, "fit_batches": 4, "proxy": "self_copy"},
}
CONVEX = {"retrain": {}, "certified_newton": {}}
FED = {
    "dfl_certified": {"curvature": "hessian_cg", "damping": 0.0, "newton_steps": 2, "tol": 0.1},
    "fed_finetune": {"rounds": 10},
    "fed_pga": {"epochs": 2, "post_rounds": 1},
}
FAST = {"classifier": CLS, "causal_lm": LM, "convex": CONVEX, "federated": FED}
# methods whose result does not depend on the seed (no random choice at all)
SEED_FREE = {("certified_newton", "convex")}
# methods that need alternative targets a benchmark gives (LUNE's replacement answers)
NEEDS_REPLACE = {"lune"}


def _cases():
    out = []
    for name, cls in available_methods().items():
        # the package's own families (test modules may register toy ones)
        for fam in cls.families():
            if fam in FAST:
                out.append((name, fam))
    return out


CASES = _cases()


def test_every_method_and_family_is_covered():
    missing = [(n, f) for n, f in CASES if n not in FAST[f]]
    assert not missing, f"add these (method, family) pairs to FAST: {missing}"
    for name, cls in available_methods().items():
        assert cls.families(), f"{name} runs on no registered task family"


# ---------------------------------------------------------------------- fixtures per family
@pytest.fixture(scope="module")
def lm_world():
    facts = make_fictitious(6, 3, seed=0)
    texts = []
    for it in list(facts.items) + world_knowledge():
        texts += [it.question, it.paraphrased_question, it.answer, it.paraphrased_answer]
        texts += list(it.perturbed_answers)
    tok = tiny_tokenizer(texts)
    task = CausalLMTask(tok)
    data = PairData(
        [(it.question, it.answer) for it in facts.items],
        {"person": [it.person_id for it in facts.items]},
    )
    recipe = LMRecipe(epochs=30, lr=3e-3, lora_rank=0, batch_size=6)
    model = tiny_llama(tok)
    task.fit(model, data, recipe, seed=0)
    model.eval()
    request = GroupRequest(groups=(facts.people[0].id,), by="person")
    split = split_request(data, request)
    alt = PairData(
        [
            (it.question, it.perturbed_answers[0])
            for it in (facts.items[i] for i in split.forget_idx)
        ]
    )
    small = LMRecipe(epochs=3, lr=3e-3, lora_rank=0, batch_size=6)
    return {
        "task": task,
        "data": data,
        "model": model,
        "request": request,
        "alt": {"replace": alt},
        "recipe": small,
        "factory": lambda s: tiny_llama(tok, seed=s),
    }


@pytest.fixture(scope="module")
def convex_world(digits_small):
    train, _ = digits_small
    data = MatrixData(unit_features(train.x.numpy()), train.y.numpy())
    model = CertifiedLogReg(lam=1e-2, sigma=0.1, epsilon=1e6).fit(data.X, data.y)
    return {"task": ConvexTask(classes=np.arange(10)), "data": data, "model": model}


@pytest.fixture(scope="module")
def fed_world(digits_small):
    """Four clients of the small digits set (IID), a linear model trained by D-SGD on a ring."""
    from unlearn.federation import iid_partition
    from unlearn.tasks.federated import FederatedData, FederatedTask

    train, _ = digits_small
    owner = np.empty(len(train), dtype=np.int64)
    for c, idx in enumerate(iid_partition(len(train), 4, 0)):
        owner[idx] = c
    data = FederatedData(train.x, train.y, owner, train.classes)
    task = FederatedTask(
        lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
        {"rounds": 200, "lr": 0.5, "weight_decay": 0.001, "batch_size": 16},
    )
    return {"task": task, "data": data, "model": task.train(data, range(4), seed=0)}


def _world(fam, request, digits_small, trained_tiny, tiny_spec, lm_world, convex_world, fed=None):
    if fam == "classifier":
        train, _ = digits_small
        return (
            ClassifierTask(10),
            train,
            trained_tiny,
            request,
            TINY_RECIPE,
            lambda s: build_model(tiny_spec, seed=s),
            {},
        )
    if fam == "causal_lm":
        w = lm_world
        return w["task"], w["data"], w["model"], w["request"], w["recipe"], w["factory"], w["alt"]
    if fam == "federated":
        return fed["task"], fed["data"], fed["model"], request, None, None, {}
    w = convex_world
    return w["task"], w["data"], w["model"], request, None, None, {}


def _ctx(task, data, model, request, recipe, factory, alt, seed=0):
    return UnlearnContext(
        task=task,
        split=split_request(data, request),
        request=request,
        original=model,
        seed=seed,
        recipe=recipe,
        model_factory=factory,
        alternatives=alt,
    )


def _params(model) -> torch.Tensor:
    from unlearn.tasks.federated import FedModel

    if isinstance(model, FedModel):
        return torch.as_tensor(np.concatenate([np.ravel(p) for p in model.parameters]))
    if isinstance(model, CertifiedLogReg):
        return torch.as_tensor(model.coef_.copy())
    return weights(model)


def _forget_loss(task, model, ctx) -> float:
    return float(np.mean(task.membership_scores(model, ctx.forget)))


REQUESTS = {"samples": SampleRequest(fraction=0.1, seed=0), "class": ClassRequest(classes=[3])}


@pytest.mark.parametrize(("name", "fam"), CASES)
def test_method_contract(
    name, fam, digits_small, trained_tiny, tiny_spec, lm_world, convex_world, fed_world
):
    cls = available_methods()[name]
    assert cls.name == name and cls.summary and cls.request_kinds and cls.requires
    kinds = ["samples"] if fam == "causal_lm" else ["samples", "class"]
    for kind in kinds:
        w = _world(
            fam,
            REQUESTS[kind],
            digits_small,
            trained_tiny,
            tiny_spec,
            lm_world,
            convex_world,
            fed_world,
        )
        task, data, model, request = w[:4]
        if request.kind not in cls.request_kinds:
            with pytest.raises(UnsupportedRequestError, match=f"does not support {request.kind}"):
                get_method(name, FAST[fam][name]).run(model, _ctx(*w))
            continue
        before = _params(model).clone()
        ctx = _ctx(*w)
        loss0 = _forget_loss(task, model, ctx)
        out, rec = get_method(name, FAST[fam][name]).run(model, ctx)
        after = _params(out)
        assert not torch.allclose(after, before), f"{name} did not change the model ({fam})"
        assert torch.equal(_params(model), before), f"{name} modified its input ({fam})"
        assert torch.isfinite(after).all()
        assert rec.method == name and rec.seconds > 0 and rec.steps >= 0
        assert rec.peak_mem_mb >= 0 and rec.baseline_mem_mb > 0
        assert rec.config == {**rec.config, **FAST[fam][name]}
        # the forget set's loss moves in the forgetting direction
        loss1 = _forget_loss(task, out, ctx)
        assert loss1 > loss0, f"{name} ({fam}, {kind}): forget loss {loss0:.4f} -> {loss1:.4f}"
        # deterministic under a seed, different under another
        again, _ = get_method(name, FAST[fam][name]).run(model, _ctx(*w))
        assert torch.equal(_params(again), after), f"{name} is not deterministic ({fam})"
        if (name, fam) not in SEED_FREE:
            other, _ = get_method(name, FAST[fam][name]).run(model, _ctx(*w, seed=1))
            assert not torch.equal(_params(other), after), f"{name} ignores the seed ({fam})"


@pytest.mark.parametrize(("name", "fam"), CASES)
def test_method_refuses_feature_requests(
    name, fam, digits_small, trained_tiny, tiny_spec, lm_world, convex_world
):
    if fam != "classifier":
        pytest.skip("feature requests are checked on classifier data")
    if "feature" in available_methods()[name].request_kinds:
        pytest.skip("serves feature requests: checked by test_feature_method_contract")
    w = _world(
        fam,
        FeatureRequest(features=[0, 1]),
        digits_small,
        trained_tiny,
        tiny_spec,
        lm_world,
        convex_world,
    )
    with pytest.raises(UnsupportedRequestError, match=f"{name} does not support feature"):
        get_method(name, FAST[fam][name]).run(w[2], _ctx(*w))


FEATURE_METHODS = sorted(
    n
    for n, c in available_methods().items()
    if "feature" in c.request_kinds and "classifier" in c.families()
)
# a 2x2 block of pixels in the middle of the 8x8 digits
CENTRE = FeatureRequest(features=[27, 28, 35, 36])


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_feature_method_contract(name, digits_small, trained_tiny, tiny_spec):
    """A method that serves feature requests runs, changes the model, leaves the input
    alone, is seeded, and lowers the model's sensitivity to the features (their forgetting
    direction: no sample is forgotten, so there is no forget loss to raise)."""
    from unlearn.metrics import feature_sensitivity

    w = _world("classifier", CENTRE, digits_small, trained_tiny, tiny_spec, None, None)
    data, model = w[1], w[2]
    before = _params(model).clone()
    cfg = FAST["classifier"][name]
    out, rec = get_method(name, cfg).run(model, _ctx(*w))
    after = _params(out)
    assert not torch.allclose(after, before), f"{name} did not change the model"
    assert torch.equal(_params(model), before), f"{name} modified its input"
    assert torch.isfinite(after).all() and rec.method == name and rec.seconds > 0
    assert rec.config == {**rec.config, **cfg}
    feats = list(CENTRE.features)
    s0 = feature_sensitivity(model, data.x, feats, n_draws=5)
    s1 = feature_sensitivity(out, data.x, feats, n_draws=5)
    assert s1 < s0, f"{name}: feature sensitivity {s0:.4f} -> {s1:.4f}"
    again, _ = get_method(name, cfg).run(model, _ctx(*w))
    assert torch.equal(_params(again), after), f"{name} is not deterministic"
    other, _ = get_method(name, cfg).run(model, _ctx(*w, seed=1))
    assert not torch.equal(_params(other), after), f"{name} ignores the seed"


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_method_refuses_tasks_it_cannot_run_on(
    name, digits_small, trained_tiny, tiny_spec, lm_world, convex_world
):
    """On a family that lacks what it requires, a method names the missing capability."""
    cls = available_methods()[name]
    for fam in ("classifier", "causal_lm", "convex"):
        if fam in cls.families():
            continue
        w = _world(
            fam, REQUESTS["samples"], digits_small, trained_tiny, tiny_spec, lm_world, convex_world
        )
        lack = w[0].missing(cls.requires)
        assert lack
        with pytest.raises(UnsupportedRequestError, match=f"needs a task with {lack[0]}"):
            get_method(name).run(w[2], _ctx(*w))


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_method_rejects_unknown_and_mistyped_options(name):
    with pytest.raises(UnlearnError, match="unknown option"):
        get_method(name, {"no_such_option": 1})
    cfg = get_method(name).config
    for field, value in vars(cfg).items():
        if isinstance(value, float) and not isinstance(value, bool):
            with pytest.raises(UnlearnError, match=field):
                get_method(name, {field: "fast"})
            with pytest.raises(UnlearnError, match=field):
                get_method(name, {field: float("nan")})
        elif isinstance(value, int) and not isinstance(value, bool):
            with pytest.raises(UnlearnError, match=field):
                get_method(name, {field: 1.5})


def test_unknown_method_is_named():
    with pytest.raises(UnlearnError, match="unknown method 'nope'"):
        get_method("nope")


def test_old_lm_names_are_deprecated_aliases():
    with pytest.warns(DeprecationWarning, match="use 'npo'"):
        m = get_method("llm_npo", family="causal_lm")
    assert m.name == "npo" and m.config.lr == 1e-5 and m.config.optimizer == "adamw"


def test_family_presets_apply_only_to_unset_options(lm_world):
    m = get_method("gradient_ascent", {"lr": 0.5})
    assert m.config.lr == 0.5 and m.config.optimizer == "sgd"
    m.bind(lm_world["task"])
    assert m.config.lr == 0.5 and m.config.optimizer == "adamw" and m.config.steps == 20


def test_salun_mask_limits_the_update(digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    w = (ClassifierTask(10), train, trained_tiny, REQUESTS["samples"], TINY_RECIPE, None, {})
    method = get_method(
        "salun", {**CLS["salun"], "mask_ratio": 0.2, "optimizer": "sgd", "momentum": 0.0}
    )
    model, rec = method.run(trained_tiny, _ctx(*w))
    changed = (weights(model) != weights(trained_tiny)).float().mean().item()
    assert changed <= 0.21 and rec.extra["mask_kept"] == pytest.approx(0.2, abs=0.01)


def test_random_labels_full_retain_pass(digits_small, trained_tiny):
    """The reference's batching: an epoch is a pass over relabelled forget + retain."""
    train, _ = digits_small
    w = (ClassifierTask(10), train, trained_tiny, REQUESTS["samples"], TINY_RECIPE, None, {})
    ctx = _ctx(*w)
    n = len(train)
    _, rec = get_method("random_labels", epochs=2, batch_size=50, retain_pass=True).run(
        trained_tiny, ctx
    )
    assert rec.steps == 2 * -(-n // 50)
    _, rec = get_method("random_labels", epochs=2, batch_size=50).run(trained_tiny, ctx)
    assert rec.steps == 2 * -(-len(ctx.forget) // 50)


def test_retrain_is_the_oracle(digits_small, trained_tiny, tiny_spec):
    """Retraining equals training the same recipe and seed on the retain set by hand."""
    train, _ = digits_small
    w = (
        ClassifierTask(10),
        train,
        trained_tiny,
        REQUESTS["class"],
        TINY_RECIPE,
        lambda s: build_model(tiny_spec, seed=s),
        {},
    )
    ctx = _ctx(*w)
    model, _ = get_method("retrain").run(trained_tiny, ctx)
    manual = build_model(tiny_spec, seed=0)
    ClassifierTask(10).fit(manual, ctx.retain, TINY_RECIPE, seed=0)
    assert torch.equal(weights(model), weights(manual))
    forget_acc = (ctx.task.logits(model, ctx.forget).argmax(1) == ctx.forget.y).float().mean()
    assert forget_acc == 0.0  # a class never seen is never predicted


def test_certified_newton_records_its_certificate(convex_world):
    w = convex_world
    req = SampleRequest(fraction=0.05, seed=0)
    ctx = UnlearnContext(w["task"], split_request(w["data"], req), req, w["model"], 0)
    out, rec = get_method("certified_newton").run(w["model"], ctx)
    assert rec.extra["removed"] == len(ctx.forget) and rec.extra["epsilon_spent"] > 0
    oracle = copy.deepcopy(w["model"])
    oracle.fit(ctx.retain.X, ctx.retain.y, classes=np.arange(10), prepare=False)
    # the Newton step lands closer to the oracle than the original was
    d0 = np.linalg.norm(w["model"].coef_ - oracle.coef_)
    d1 = np.linalg.norm(out.coef_ - oracle.coef_)
    assert d1 < 0.1 * d0


def test_class_forgetting_reaches_the_oracle_on_forget_accuracy(digits_small, trained_tiny):
    """Influence and random labels drive a forgotten class's accuracy down like the oracle."""
    train, _ = digits_small
    ctx = _ctx(ClassifierTask(10), train, trained_tiny, REQUESTS["class"], TINY_RECIPE, None, {})
    orig = (ctx.task.logits(trained_tiny, ctx.forget).argmax(1) == ctx.forget.y).float().mean()
    assert orig > 0.9
    for name, cfg in [
        ("random_labels", {"epochs": 20, "lr": 3e-3, "optimizer": "adam"}),
        ("influence", {"samples": 128, "damping": 0.01}),
    ]:
        model, _ = get_method(name, cfg).run(trained_tiny, ctx)
        acc = (ctx.task.logits(model, ctx.forget).argmax(1) == ctx.forget.y).float().mean()
        assert acc < 0.2, f"{name} left forget accuracy at {acc:.2f}"
        keep = (ctx.task.logits(model, ctx.retain).argmax(1) == ctx.retain.y).float().mean()
        assert keep > 0.8, f"{name} destroyed the retained classes ({keep:.2f})"


def test_empty_class_forget_set_is_refused(digits_small):
    train, _ = digits_small
    keep = np.flatnonzero(train.targets() != 3)
    data = train.subset(keep)
    with pytest.raises(UnlearnError, match="class 3 does not occur"):
        split_request(data, ClassRequest(classes=[3]))


def test_presets_never_override_a_budget_given_in_epochs(lm_world):
    m = get_method("npo", {"epochs": 3}, family="causal_lm")
    assert m.config.steps is None and m.config.epochs == 3 and m.config.optimizer == "adamw"
    assert get_method("npo", family="causal_lm").config.steps == 20


def test_a_method_built_without_a_family_follows_the_task_it_runs_on(lm_world):
    m = get_method("gradient_ascent")
    m.bind(lm_world["task"])
    assert m.config.optimizer == "adamw"
    m.bind(ClassifierTask(10))
    assert m.config.optimizer == "sgd" and m.config.steps is None


def test_every_trainable_classifier_method_reports_its_training_state(
    digits_small, trained_tiny, tiny_spec
):
    train, _ = digits_small
    w = (ClassifierTask(10), train, trained_tiny, REQUESTS["samples"], TINY_RECIPE, None, {})
    for name in ("scrub", "amun", "salun", "neggrad_plus"):
        _, rec = get_method(name, CLS[name]).run(trained_tiny, _ctx(*w))
        assert rec.train_state_mb and rec.train_state_mb > 0, name
    for name in ("fisher", "influence"):
        _, rec = get_method(name, CLS[name]).run(trained_tiny, _ctx(*w))
        assert rec.train_state_mb is None, name
