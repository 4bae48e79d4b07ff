"""KUnBR: blocks, the two selection rules, and what the re-insertion rounds change."""

from __future__ import annotations

import pytest
import torch

from unlearn.data.core import split_request
from unlearn.errors import UnlearnError
from unlearn.methods import UnlearnContext, get_method
from unlearn.methods.llm.kunbr import KUnBRConfig, block_order, layer_blocks

from .test_methods_common import lm_world  # noqa: F401  (the fixture)


def test_layer_blocks_cover_every_layer_once():
    assert layer_blocks(30, 6) == [list(range(i, i + 5)) for i in range(0, 30, 5)]
    assert layer_blocks(32, 8) == [list(range(i, i + 4)) for i in range(0, 32, 4)]
    assert layer_blocks(5, 2) == [[0, 1], [2, 3, 4]]  # as even as possible
    assert layer_blocks(2, 6) == [[0], [1]]  # at most one block per layer
    assert layer_blocks(7, 1, block_size=3) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(UnlearnError, match="no layers"):
        layer_blocks(0, 2)


def test_released_order_never_reaches_the_last_blocks():
    # the released run: 8 blocks, 3 visits each, 18 rounds -> blocks 0-5 only
    cfg = KUnBRConfig(select="released", rounds=18, visits=3)
    order = block_order([0.0] * 8, cfg)
    assert order == [b for b in range(6) for _ in range(3)]
    assert 6 not in order and 7 not in order


def test_density_order_cycles_the_densest_blocks():
    cfg = KUnBRConfig(select="density", rounds=5, top_k=2)
    assert block_order([0.1, 0.9, 0.3, 0.5], cfg) == [1, 3, 1, 3, 1]
    assert block_order([0.2, 0.2], KUnBRConfig(rounds=2, top_k=1)) == [0, 0]  # ties: lower


def test_bad_options_are_named():
    with pytest.raises(UnlearnError, match="select"):
        KUnBRConfig(select="random")
    with pytest.raises(UnlearnError, match="density_on"):
        KUnBRConfig(density_on="both")
    with pytest.raises(UnlearnError, match="top_k"):
        KUnBRConfig(top_k=0)


def _ctx(w, seed=0):
    return UnlearnContext(
        task=w["task"],
        split=split_request(w["data"], w["request"]),
        request=w["request"],
        original=w["model"],
        seed=seed,
    )


def _layer_diff(task, a, b) -> list[float]:
    out = []
    for la, lb in zip(task.layers(a), task.layers(b), strict=True):
        out.append(
            sum(
                float((pa - pb).abs().sum())
                for pa, pb in zip(la.parameters(), lb.parameters(), strict=True)
            )
        )
    return out


def test_rounds_change_only_the_chosen_blocks_and_are_recorded(lm_world):  # noqa: F811
    w = lm_world
    task = w["task"]
    opts = {"steps": 2, "lr": 3e-3, "blocks": 2, "round_steps": 2, "top_k": 1}
    stage1, _ = get_method("kunbr", {**opts, "rounds": 0}, family="causal_lm").run(
        w["model"], _ctx(w)
    )
    full, rec = get_method("kunbr", {**opts, "rounds": 2}, family="causal_lm").run(
        w["model"], _ctx(w)
    )
    info = rec.extra["kunbr"]
    assert info["blocks"] == [[0, 0], [1, 1]] and len(info["density"]) == 2
    assert all(d > 0 for d in info["density"])
    chosen = info["order"]
    assert chosen == [max(range(2), key=lambda b: info["density"][b])] * 2
    assert info["stage1_steps"] == 2 and rec.steps == 2 + 2 * 2
    diff = _layer_diff(task, stage1, full)
    for b in range(2):
        if b in chosen:
            assert diff[b] > 0, "the re-inserted block was not trained"
        else:
            assert diff[b] == 0, "a block that was never re-inserted changed"
    # the embeddings and head are never trained in the rounds
    for (n, p), (_, q) in zip(stage1.named_parameters(), full.named_parameters(), strict=True):
        if ".layers." not in n:
            assert torch.equal(p, q), n


def test_lora_is_refused(lm_world):  # noqa: F811
    with pytest.raises(UnlearnError, match="lora_rank 0"):
        get_method("kunbr", {"steps": 1, "lora_rank": 4}, family="causal_lm").run(
            lm_world["model"], _ctx(lm_world)
        )


def test_a_model_without_decoder_layers_is_refused(lm_world):  # noqa: F811
    with pytest.raises(UnlearnError, match="decoder layers"):
        lm_world["task"].layers(torch.nn.Linear(2, 2))
