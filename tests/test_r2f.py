"""R2F: the LoRA sketch identity, the decoders' maths, and the method on a tiny Llama."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from unlearn.data.core import split_request
from unlearn.data.fictitious import make_fictitious
from unlearn.errors import UnlearnError
from unlearn.methods import UnlearnContext, get_method
from unlearn.methods.llm.r2f import (
    R2FConfig,
    cosine,
    lora_sketch,
    map_layer,
    pinv_decoder,
    ridge_decoder,
)
from unlearn.models.hf import tiny_llama
from unlearn.tasks import LMRecipe

from .conftest import weights
from .test_methods_common import lm_world  # noqa: F401  (the fixture)

FAST = {"steps": 3, "lr": 0.05, "lora_rank": 8, "fit_batches": 8}


@pytest.fixture(scope="module")
def proxy(lm_world):  # noqa: F811
    """The target's own initialisation trained less (5 epochs instead of 30): a stand-in
    for the base model of a fine-tuned target."""
    w = lm_world
    model = w["factory"](0)
    w["task"].fit(model, w["data"], LMRecipe(epochs=5, lr=3e-3, lora_rank=0, batch_size=6), 0)
    return model.eval()


def _ctx(w, proxy=None, seed=0, **alternatives):
    return UnlearnContext(
        task=w["task"],
        split=split_request(w["data"], w["request"]),
        request=w["request"],
        original=w["model"],
        seed=seed,
        alternatives=alternatives,
        proxies={} if proxy is None else {"proxy": proxy},
    )


def _forget_loss(w, model) -> float:
    ctx = _ctx(w)
    return float(np.mean(w["task"].membership_scores(model, ctx.forget)))


# ---------------------------------------------------------------------- the maths
def test_zero_b_lora_gradient_is_the_sketch_of_the_full_gradient(lm_world):  # noqa: F811
    w = lm_world
    task = w["task"]
    model = task.lora(copy.deepcopy(w["model"]), 4, 8.0, ("q_proj", "down_proj"))
    gen = torch.Generator().manual_seed(0)
    mods = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    assert len(mods) == 4  # two targets in each of two layers
    tensors = []
    with torch.no_grad():
        for m in mods:
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=gen))
            b.zero_()
            for p in (a, b, m.base_layer.weight):
                p.requires_grad_(True)
            tensors += [a, b, m.base_layer.weight]
    loss = task.mean_loss(model, list(_ctx(w).forget))
    grads = torch.autograd.grad(loss, tensors)
    for k, m in enumerate(mods):
        d_a, d_b, g = grads[3 * k : 3 * k + 3]
        assert torch.count_nonzero(d_a) == 0  # dL/dA = 0 while B = 0
        scale = m.scaling["default"]
        assert scale == pytest.approx(8.0 / 4)
        want = lora_sketch(g, m.lora_A["default"].weight.detach(), scale)
        assert torch.allclose(d_b, want, rtol=1e-4, atol=1e-7)
        assert float(g.norm()) > 0


def test_pseudo_inverse_recovers_sqrt_r_over_d_of_an_isotropic_gradient():
    gen = torch.Generator().manual_seed(0)
    r, d_in, d_out, scale = 8, 576, 64, 2.0
    cos = []
    for _ in range(5):
        g = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
        a = torch.randn(r, d_in, generator=gen, dtype=torch.float64)
        decoded = lora_sketch(g, a, scale) @ pinv_decoder(a, scale)
        cos.append(cosine(decoded, g))
        # the pseudo-inverse decode is the projection of the rows onto A's row space
        proj = g @ a.T @ torch.linalg.solve(a @ a.T, a)
        assert torch.allclose(decoded, proj, atol=1e-10)
    assert np.mean(cos) == pytest.approx(math.sqrt(r / d_in), abs=0.01)  # 0.118


def _fit_moments(gen, basis, a, scale, batches, noise, d_out=64):
    """Ridge moments from gradients whose rows lie (up to noise) in span(basis)."""
    r = a.shape[0]
    c_gb = torch.zeros(a.shape[1], r, dtype=torch.float64)
    c_bb = torch.zeros(r, r, dtype=torch.float64)
    for _ in range(batches):
        g = _gradient(gen, basis, noise, d_out)
        b = lora_sketch(g, a, scale)
        c_gb += g.T @ b
        c_bb += b.T @ b
    return c_gb, c_bb


def _gradient(gen, basis, noise, d_out=64):
    k, d_in = basis.shape[1], basis.shape[0]
    spread = torch.linspace(3.0, 1.0, k, dtype=torch.float64)  # unequal energies
    coef = torch.randn(d_out, k, generator=gen, dtype=torch.float64) * spread
    return coef @ basis.T + noise * torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)


def test_ridge_decoder_recovers_gradients_of_a_low_dimensional_subspace():
    gen = torch.Generator().manual_seed(1)
    d_in, r, k, scale = 576, 8, 4, 2.0
    basis, _ = torch.linalg.qr(torch.randn(d_in, k, generator=gen, dtype=torch.float64))
    a = torch.randn(r, d_in, generator=gen, dtype=torch.float64) / math.sqrt(d_in)
    c_gb, c_bb = _fit_moments(gen, basis, a, scale, batches=20, noise=0.01)
    dec = ridge_decoder(c_gb, c_bb, 1e-4)
    assert dec.shape == (r, d_in)
    for _ in range(3):  # fresh gradients of the same statistics
        g = _gradient(gen, basis, noise=0.01)
        ridge_cos = cosine(lora_sketch(g, a, scale) @ dec, g)
        pinv_cos = cosine(lora_sketch(g, a, scale) @ pinv_decoder(a, scale), g)
        assert ridge_cos > 0.9 and pinv_cos < 0.3
    with pytest.raises(UnlearnError, match="vanish"):
        ridge_decoder(c_gb * 0, c_bb * 0, 1e-3)


def test_layer_maps_for_a_shallower_proxy():
    assert [map_layer(j, 4, 4, "clamp") for j in range(4)] == [0, 1, 2, 3]
    assert [map_layer(j, 30, 10, "clamp") for j in (0, 9, 10, 29)] == [0, 9, 9, 9]
    assert [map_layer(j, 30, 10, "proportional") for j in (0, 2, 3, 29)] == [0, 0, 1, 9]


# ---------------------------------------------------------------------- the method
def test_r2f_unlearns_through_decoded_gradients_only(lm_world, proxy):  # noqa: F811
    w = lm_world
    model = w["model"]
    before, proxy_before = weights(model).clone(), weights(proxy).clone()
    out, rec = get_method("r2f", FAST, family="causal_lm").run(model, _ctx(w, proxy))
    assert type(out).__name__ == "LlamaForCausalLM"  # the adapters are gone
    assert torch.equal(weights(model), before) and torch.equal(weights(proxy), proxy_before)
    assert not torch.equal(weights(out), before)
    assert _forget_loss(w, out) > _forget_loss(w, model)
    # only the adapted linear layers change: embeddings and norms stay
    emb = model.get_input_embeddings().weight
    assert torch.equal(out.get_input_embeddings().weight, emb)
    for lo, lm in zip(out.model.layers, model.model.layers, strict=True):
        assert torch.equal(lo.input_layernorm.weight, lm.input_layernorm.weight)
        assert not torch.equal(lo.mlp.down_proj.weight, lm.mlp.down_proj.weight)
    x = rec.extra
    assert x["full_grad_evals"] == 0
    assert x["lora_grad_evals"] == 3 and rec.steps == 3
    assert x["diagnostic_full_grad_evals"] == 1 and x["proxy_full_grad_evals"] == 8
    assert x["fit_on"] == "retain" and x["layer_map"] == {0: 0, 1: 1}
    assert x["adapted_layers"] == 14 and rec.train_state_mb > 0
    cos = x["cosine"]
    assert set(cos["ridge"]["per_layer"]) == set(cos["pinv"]["per_layer"])
    assert "layers.1.mlp.down_proj" in cos["ridge"]["per_layer"]
    assert cos["isotropic_pinv"] == pytest.approx(math.sqrt(8 / 64))
    # the learned decoder beats the projection with this proxy (about 0.45 against 0.34)
    assert cos["ridge"]["median"] >= cos["pinv"]["median"]
    assert 0 < cos["pinv"]["median"] < 0.6
    assert set(x["seconds"]) == {"setup", "fit", "update", "diagnostic"}
    again, _ = get_method("r2f", FAST, family="causal_lm").run(model, _ctx(w, proxy))
    assert torch.equal(weights(again), weights(out))
    other, _ = get_method("r2f", FAST, family="causal_lm").run(model, _ctx(w, proxy, seed=1))
    assert not torch.equal(weights(other), weights(out))


def test_diagnostics_never_enter_the_update(lm_world, proxy):  # noqa: F811
    w = lm_world
    opts = {**FAST, "steps": 2, "diagnose_steps": 2}
    a, rec_a = get_method("r2f", opts).run(w["model"], _ctx(w, proxy))
    b, rec_b = get_method("r2f", {**opts, "diagnose": False}).run(w["model"], _ctx(w, proxy))
    assert torch.equal(weights(a), weights(b))
    assert rec_a.extra["diagnostic_full_grad_evals"] == 2
    assert rec_b.extra["diagnostic_full_grad_evals"] == 0 and "cosine" not in rec_b.extra
    assert rec_b.extra["full_grad_evals"] == 0


def test_pinv_decoder_pca_sketch_and_retain_term_run(lm_world, proxy):  # noqa: F811
    w = lm_world
    loss0 = _forget_loss(w, w["model"])
    records = {}
    for key, opts in {
        "pinv": {"decoder": "pinv"},
        "pca": {"sketch": "proxy_pca"},
        "retain": {"alpha": 1.0, "shrink": 0.3},
    }.items():
        out, records[key] = get_method("r2f", {**FAST, **opts}).run(w["model"], _ctx(w, proxy))
        assert records[key].extra["full_grad_evals"] == 0, key
        assert _forget_loss(w, out) > loss0, key
    # the proxy's dominant directions as the sketch: both decoders are about the projection
    pca = records["pca"].extra["cosine"]
    assert pca["ridge"]["median"] == pytest.approx(pca["pinv"]["median"], abs=0.02)
    assert pca["pinv"]["median"] > pca["isotropic_pinv"]


def test_paraphrases_and_fit_pairs(lm_world, proxy):  # noqa: F811
    w = lm_world
    ctx = _ctx(w)
    facts = make_fictitious(6, 3, seed=0)  # the fixture's facts: their paraphrased questions
    items = [facts.items[i] for i in ctx.split.forget_idx]
    assert [(it.question, it.answer) for it in items] == list(ctx.forget)
    para = [(it.paraphrased_question, it.answer) for it in items]
    _, rec = get_method("r2f", FAST).run(w["model"], _ctx(w, proxy, paraphrases=para))
    assert rec.extra["prompts_per_forget_item"] == 2.0
    two = [[p, p] for p in para]  # several paraphrases per pair
    _, rec = get_method("r2f", FAST).run(w["model"], _ctx(w, proxy, paraphrases=two))
    assert rec.extra["prompts_per_forget_item"] == 3.0
    with pytest.raises(UnlearnError, match="paraphrases hold 1 items"):
        get_method("r2f", FAST).run(w["model"], _ctx(w, proxy, paraphrases=para[:1]))
    fit = list(ctx.retain)[:4]
    _, rec = get_method("r2f", FAST).run(w["model"], _ctx(w, proxy, fit_pairs=fit))
    assert rec.extra["fit_on"] == "fit_pairs" and rec.extra["fit_items"] == 4
    with pytest.raises(UnlearnError, match="disjoint from the forget set"):
        get_method("r2f", FAST).run(w["model"], _ctx(w, proxy, fit_pairs=fit + [ctx.forget[0]]))
    with pytest.raises(UnlearnError, match="disjoint from the forget set"):  # a paraphrase too
        get_method("r2f", FAST).run(
            w["model"], _ctx(w, proxy, paraphrases=para, fit_pairs=fit + [para[0]])
        )


def test_a_truncated_proxy_maps_layers_by_index(lm_world):  # noqa: F811
    w = lm_world
    short = tiny_llama(w["task"].tokenizer, layers=1)
    for how in ("clamp", "proportional"):
        _, rec = get_method("r2f", {**FAST, "steps": 1, "layer_map": how}).run(
            w["model"], _ctx(w, short)
        )
        assert rec.extra["layer_map"] == {0: 0, 1: 0}


def test_missing_or_mismatched_proxy_is_named(lm_world):  # noqa: F811
    w = lm_world
    with pytest.raises(UnlearnError, match=r"needs a proxy model in the context"):
        get_method("r2f", FAST).run(w["model"], _ctx(w))
    narrow = tiny_llama(w["task"].tokenizer, hidden=32)
    with pytest.raises(UnlearnError, match="proxy's embedding has shape"):
        get_method("r2f", FAST).run(w["model"], _ctx(w, narrow))
    wide_mlp = copy.deepcopy(w["model"])
    layer = wide_mlp.model.layers[1].mlp
    layer.down_proj = torch.nn.Linear(256, 64, bias=False)
    with pytest.raises(
        UnlearnError, match=r"shape mismatch: the proxy's layers\.1\.mlp\.down_proj"
    ):
        get_method("r2f", FAST).run(w["model"], _ctx(w, wide_mlp))
    with pytest.raises(UnlearnError, match="must be a torch module"):
        get_method("r2f", FAST).run(w["model"], _ctx(w, "base model"))
    with pytest.raises(UnlearnError, match="no linear layer named w_proj"):
        get_method("r2f", {**FAST, "lora_targets": ("q_proj", "w_proj")}).run(
            w["model"], _ctx(w, w["model"])
        )


def test_bad_options_are_named():
    for opts, field in [
        ({"decoder": "mlp"}, "decoder"),
        ({"sketch": "gaussian"}, "sketch"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"shrink": 1.5}, "shrink"),
        ({"proxy": "none"}, "proxy"),
        ({"layer_map": "reverse"}, "layer_map"),
        ({"target_forget_acc": 120}, "target_forget_acc"),
        ({"check_every": 0}, "check_every"),
    ]:
        with pytest.raises(UnlearnError, match=field):
            R2FConfig(**opts)


def test_r2f_runs_in_the_llm_bench_with_the_base_model_as_proxy():
    """In a fictitious-facts scenario the pretrained base is R2F's proxy and the forget
    items' paraphrased questions its paraphrases; its cosines and its count of full
    weight gradients on the target are metrics of its row."""
    import json as _json

    from unlearn.bench.llm import run_llm

    from .test_llm_bench import TINY

    sc = _json.loads(_json.dumps(TINY))
    sc["methods"] = [
        {"name": "r2f", "steps": 2, "lr": 0.05, "fit_batches": 4},
        {
            "label": "r2f-cut",
            "name": "r2f",
            "steps": 2,
            "lr": 0.05,
            "fit_batches": 4,
            "proxy_layers": 1,
        },
    ]
    res = run_llm(sc)
    row = next(r for r in res["rows"] if r["method"] == "r2f")
    m = row["metrics"]
    assert m["full_grad_evals"] == 0
    assert -1 <= m["decoded_cosine"] <= 1 and -1 <= m["decoded_cosine_pinv"] <= 1
    assert row["record"]["extra"]["prompts_per_forget_item"] == 2  # question + paraphrase
    assert "weight_change" in row
    # the truncated base: its one layer serves both target layers
    cut = next(r for r in res["rows"] if r["method"] == "r2f-cut")
    assert cut["record"]["extra"]["layer_map"] == {0: 0, 1: 0}
    assert cut["metrics"]["decoded_cosine"] != m["decoded_cosine"]


def test_proxy_layers_is_checked_before_any_work():
    import json as _json

    from unlearn.bench.llm import parse_llm
    from unlearn.errors import ScenarioError

    from .test_llm_bench import TINY

    sc = _json.loads(_json.dumps(TINY))
    for entry, msg in [
        ({"name": "llm_ga", "proxy_layers": 1}, "an option of r2f"),
        ({"name": "r2f", "proxy_layers": 0}, "positive integer"),
        ({"name": "r2f", "proxy_layers": "half"}, "positive integer"),
    ]:
        sc["methods"] = [entry]
        with pytest.raises(ScenarioError, match=msg):
            parse_llm(sc)


def test_truncate_layers_keeps_the_first_layers_and_leaves_the_model(lm_world):  # noqa: F811
    from unlearn.tasks.causal_lm import truncate_layers

    w = lm_world
    before = weights(w["model"])
    cut = truncate_layers(w["model"], 1)
    assert len(cut.model.layers) == 1 and cut.config.num_hidden_layers == 1
    assert len(w["model"].model.layers) == 2 and w["model"].config.num_hidden_layers == 2
    assert torch.equal(
        cut.model.layers[0].mlp.down_proj.weight, w["model"].model.layers[0].mlp.down_proj.weight
    )
    batch = w["task"].collate([("q?", "a")])
    assert cut(input_ids=batch["input_ids"]).logits.shape[-1] == w["model"].config.vocab_size
    assert torch.equal(weights(w["model"]), before)
    for bad in (0, 3, 1.5):
        with pytest.raises(UnlearnError, match="keeps 1 to 2 decoder layers"):
            truncate_layers(w["model"], bad)


def test_r2f_stops_on_the_probe(lm_world, proxy):  # noqa: F811
    w = lm_world
    calls = []

    def probe(m):
        calls.append(1)
        return 0.0 if len(calls) >= 2 else 100.0

    ctx = _ctx(w, proxy)
    ctx.probe = probe
    _, rec = get_method("r2f", {**FAST, "steps": 10, "target_forget_acc": 0, "check_every": 2}).run(
        w["model"], ctx
    )
    assert rec.steps == 4 and rec.extra["reached_target_at"] == 4 and len(calls) == 2
    assert rec.extra["lora_grad_evals"] == 4
    with pytest.raises(UnlearnError, match="needs a probe"):
        get_method("r2f", {**FAST, "target_forget_acc": 10}).run(w["model"], _ctx(w, proxy))


def test_the_api_passes_the_proxy_and_paraphrases(lm_world, proxy):  # noqa: F811
    import unlearn

    w = lm_world
    data = w["data"]
    split = split_request(data, w["request"])
    forget = [data[int(i)] for i in split.forget_idx]
    retain = [data[int(i)] for i in split.retain_idx]
    para = [(q + " Please answer.", a) for q, a in forget]
    _, rec = unlearn.unlearn_lm(
        "r2f",
        w["model"],
        w["task"].tokenizer,
        forget,
        retain,
        config=FAST,
        paraphrases=para,
        proxy=proxy,
    )
    assert rec.extra["full_grad_evals"] == 0 and rec.extra["prompts_per_forget_item"] == 2
    _, rec2 = unlearn.unlearn(
        "r2f",
        w["model"],
        data,
        w["request"],
        task=w["task"],
        config=FAST,
        proxies={"proxy": proxy},
    )
    assert rec2.extra["full_grad_evals"] == 0
    with pytest.raises(UnlearnError, match="needs a proxy"):
        unlearn.unlearn("r2f", w["model"], data, w["request"], task=w["task"], config=FAST)
    with pytest.raises(UnlearnError, match="proxies must map names"):
        unlearn.unlearn("r2f", w["model"], data, w["request"], task=w["task"], proxies=[proxy])
