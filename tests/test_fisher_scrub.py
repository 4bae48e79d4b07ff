"""Fisher forgetting as its reference code computes it, and SCRUB's min phase.

The Fisher of a linear softmax layer has a closed form: for logits W x + b and
p = softmax, the cross-entropy gradient at label c is (p - e_c) x^T for W and
p - e_c for b, so the true Fisher (sum over c of p_c times the squared gradient)
is p_k (1 - p_k) x_j^2 for W[k, j] and p_k (1 - p_k) for b[k]. The tests below
compare the method with these formulas written out by hand, not with its own code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unlearn
from unlearn.data import ArrayData
from unlearn.errors import UnlearnError
from unlearn.methods import get_method
from unlearn.methods.fisher import (
    FisherConfig,
    diagonal_fisher,
    noise_distribution,
    output_parameters,
)
from unlearn.methods.scrub import ScrubConfig, _kl
from unlearn.requests import ClassRequest, SampleRequest
from unlearn.tasks import ClassifierTask


@dataclass
class Ctx:
    """The part of the unlearning context these two methods read, built by hand."""

    forget: ArrayData
    retain: ArrayData
    request: object
    original: nn.Module
    task: ClassifierTask
    seed: int = 0

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


def data(n: int, d: int, classes: int, seed: int = 0, ids: bool = False) -> ArrayData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    if ids:  # the first feature names the sample
        x[:, 0] = torch.arange(n, dtype=torch.float32)
    y = torch.arange(n) % classes
    return ArrayData(x, y, tuple(str(c) for c in range(classes)))


def linear(d: int = 5, classes: int = 3, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, classes)


def probs_of(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(x @ layer.weight.T + layer.bias, dim=1)


# -- the Fisher diagonal --------------------------------------------------------------


def test_true_fisher_of_a_linear_layer_matches_the_closed_form():
    layer, d = linear(), data(20, 5, 3)
    p = probs_of(layer, d.x)
    w = p * (1 - p)  # (n, classes)
    expected_w = (w[:, :, None] * d.x[:, None, :] ** 2).mean(0)
    expected_b = w.mean(0)
    fisher = diagonal_fisher(layer, d.x, d.y, 3)
    assert set(fisher) == {"weight", "bias"}
    torch.testing.assert_close(fisher["weight"], expected_w, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(fisher["bias"], expected_b, rtol=1e-5, atol=1e-8)


def test_batched_fisher_is_unlearn_sparse_estimate():
    """Batches of 8 in order (8, 8, 4): mean_i p_ic times the squared batch-mean gradient."""
    layer, d = linear(), data(20, 5, 3, seed=1)
    p = probs_of(layer, d.x)
    exp_w, exp_b, batches = torch.zeros(3, 5), torch.zeros(3), 0
    for s in range(0, 20, 8):
        pb, xb = p[s : s + 8], d.x[s : s + 8]
        for c in range(3):
            r = pb - F.one_hot(torch.tensor(c), 3).float()  # (b, classes)
            g_w = (r[:, :, None] * xb[:, None, :]).mean(0)
            g_b = r.mean(0)
            exp_w += pb[:, c].mean() * g_w**2
            exp_b += pb[:, c].mean() * g_b**2
        batches += 1
    fisher = diagonal_fisher(layer, d.x, d.y, 3, batch=8)
    torch.testing.assert_close(fisher["weight"], exp_w / batches, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(fisher["bias"], exp_b / batches, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(fisher["weight"], diagonal_fisher(layer, d.x, d.y, 3)["weight"])


def test_empirical_fisher_uses_the_labels():
    layer, d = linear(), data(12, 5, 3, seed=2)
    r = probs_of(layer, d.x) - F.one_hot(d.y, 3).float()
    fisher = diagonal_fisher(layer, d.x, d.y, 3, kind="empirical")
    torch.testing.assert_close(
        fisher["weight"], ((r[:, :, None] * d.x[:, None, :]) ** 2).mean(0), rtol=1e-5, atol=1e-8
    )
    torch.testing.assert_close(fisher["bias"], (r**2).mean(0), rtol=1e-5, atol=1e-8)


# -- the variance -----------------------------------------------------------------------

TINY = 1e-12  # a Fisher entry this small hits the caps


def mlp_and_fisher() -> tuple[nn.Sequential, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))  # hidden 4, 2 classes
    fisher = {
        "0.weight": torch.tensor([[1, 0.5, 0.25], [TINY, 1, 1], [1, 1, 1], [1, 1, 1]]),
        "0.bias": torch.tensor([1, 2, TINY, 4]),
        "2.weight": torch.tensor([[TINY, 1, 1, 1], [0.1, 0.1, 0.1, 0.1]]),
        "2.bias": torch.tensor([TINY, 0.5]),
    }
    return model, fisher


def test_output_layer_is_the_last_module_with_num_classes_rows():
    model, _ = mlp_and_fisher()
    assert output_parameters(model, 2) == {"2.weight", "2.bias"}
    assert output_parameters(model, 4) == set()  # the last layer does not have 4 rows
    assert output_parameters(nn.Linear(3, 2), 2) == {"weight", "bias"}


def test_reference_variance_by_hand():
    """alpha 1e-2: 1/F capped at 1e3 (1e2 on the output layer), times alpha, mean over the
    input dimension, times 10 on the output layer and on 1-D parameters."""
    model, fisher = mlp_and_fisher()
    dist = noise_distribution(model, fisher, FisherConfig(alpha=1e-2), num_classes=2)
    expected = {
        "0.weight": torch.tensor([7 / 3, 1002 / 3, 1, 1])[:, None].expand(4, 3) * 1e-2,
        "0.bias": torch.tensor([1, 0.5, 1e3, 0.25]) * 1e-2 * 10,
        "2.weight": torch.tensor([103 / 4, 10])[:, None].expand(2, 4) * 1e-2 * 10,
        "2.bias": torch.tensor([1e2, 2]) * 1e-2 * 10,
    }
    for name, p in model.named_parameters():
        mean, var = dist[name]
        torch.testing.assert_close(var, expected[name], rtol=1e-6, atol=0)
        assert torch.equal(mean, p.detach())


def test_convolution_variance_is_averaged_over_input_channels_only():
    """A (out, in, k) kernel: one variance per output channel and kernel position."""
    model = nn.Sequential(nn.Conv1d(2, 3, 2), nn.Flatten(), nn.Linear(3, 2))  # input length 2
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    fisher["0.weight"] = torch.tensor([[[1, 0.5], [0.25, 0.2]]]).repeat(3, 1, 1)  # 1/F: 1 2; 4 5
    var = noise_distribution(model, fisher, FisherConfig(alpha=1.0), 2)["0.weight"][1]
    expected = torch.tensor([[2.5, 3.5]]).expand(2, 2)  # (1 + 4) / 2 and (2 + 5) / 2
    torch.testing.assert_close(var, expected.unsqueeze(0).expand(3, 2, 2), rtol=1e-6, atol=0)


def test_forgotten_class_rows_by_hand():
    """Class 1 forgotten: its output rows get mean 0 and variance 1e-4 set after the alpha
    scaling, then the output layer's x10: 1e-3 whatever alpha is."""
    model, fisher = mlp_and_fisher()
    for alpha in (1e-2, 1e-6):
        dist = noise_distribution(model, fisher, FisherConfig(alpha=alpha), 2, classes=(1,))
        mean_w, var_w = dist["2.weight"]
        mean_b, var_b = dist["2.bias"]
        torch.testing.assert_close(var_w[1], torch.full((4,), 1e-3))
        torch.testing.assert_close(var_b[1], torch.tensor(1e-3))
        assert torch.equal(mean_w[1], torch.zeros(4)) and mean_b[1] == 0
        torch.testing.assert_close(var_w[0], torch.full((4,), 103 / 4 * alpha * 10))
        torch.testing.assert_close(var_b[0], torch.tensor(1e2 * alpha * 10))
        assert torch.equal(mean_w[0], model[2].weight[0].detach())
        torch.testing.assert_close(
            dist["0.bias"][1], torch.tensor([1, 0.5, 1e3, 0.25]) * alpha * 10
        )


def test_per_weight_variance_is_the_earlier_form():
    model, fisher = mlp_and_fisher()
    cfg = FisherConfig(alpha=1e-2, variance="per_weight")
    dist = noise_distribution(model, fisher, cfg, 2, classes=(1,))
    for name in fisher:
        var = (1 / (fisher[name] + 1e-8)).clamp(max=1e3) * 1e-2
        if name.startswith("2."):
            var[1] = 1e-4 * 1e-2
        torch.testing.assert_close(dist[name][1], var, rtol=1e-6, atol=0)


# -- the whole method ------------------------------------------------------------------


def fisher_ctx(request, seed: int = 0, strong_class: int | None = None):
    layer = linear(6, 4, seed=3)
    if strong_class is not None:
        with torch.no_grad():
            layer.weight[strong_class] = 5.0
            layer.bias[strong_class] = 5.0
    d = data(40, 6, 4, seed=4)
    if isinstance(request, ClassRequest):
        forget_mask = torch.isin(d.y, torch.tensor(request.classes))
    else:
        forget_mask = torch.zeros(40, dtype=torch.bool)
        forget_mask[:4] = True
    forget = ArrayData(d.x[forget_mask], d.y[forget_mask], d.classes)
    retain = ArrayData(d.x[~forget_mask], d.y[~forget_mask], d.classes)
    return layer, Ctx(forget, retain, request, copy.deepcopy(layer), ClassifierTask(4), seed)


def run_fisher(request, config: dict, seed: int = 0, strong_class: int | None = None):
    layer, ctx = fisher_ctx(request, seed, strong_class)
    model = copy.deepcopy(layer)
    steps = get_method("fisher", config).unlearn(model, ctx)
    assert steps == 0
    return layer, model, ctx


def test_unlearn_redraws_each_weight_from_the_reference_distribution():
    """Whole retain set, then theta = mean + sqrt(var) * N(0, 1), one seeded draw per parameter."""
    request = ClassRequest(classes=[2])
    layer, model, ctx = run_fisher(request, {"alpha": 1e-4})
    fisher = diagonal_fisher(layer, ctx.retain.x, ctx.retain.y, 4)
    dist = noise_distribution(layer, fisher, FisherConfig(alpha=1e-4), 4, classes=(2,))
    gen = ctx.generator(2)
    for name, p in model.named_parameters():
        mean, var = dist[name]
        noise = torch.randn(p.shape, generator=gen)
        torch.testing.assert_close(p.detach(), mean + var.sqrt() * noise, rtol=1e-6, atol=1e-7)


def test_forgotten_class_is_removed_whatever_alpha():
    request = ClassRequest(classes=[2])
    original, small, _ = run_fisher(request, {"alpha": 1e-6}, strong_class=2)
    _, large, _ = run_fisher(request, {"alpha": 1e-3}, strong_class=2)
    for p_small, p_large, p0 in zip(
        small.parameters(), large.parameters(), original.parameters(), strict=True
    ):
        row_small, row_large = p_small.detach()[2], p_large.detach()[2]
        assert torch.equal(row_small, row_large)  # variance 1e-3 set after the alpha scaling
        assert row_small.abs().max() < 5 * 1e-3**0.5  # the row of 5.0 is gone
        assert not torch.equal(p_small.detach()[0], p_large.detach()[0])
        assert p0.detach()[2].min() == 5.0
    # a sample request leaves the class's rows in place (only noise is added)
    _, kept, _ = run_fisher(SampleRequest(indices=[0]), {"alpha": 1e-6}, strong_class=2)
    assert kept.weight.detach()[2].min() > 4.0


def test_fisher_is_deterministic_under_a_seed():
    request = SampleRequest(indices=[0, 1])
    _, a, _ = run_fisher(request, {"alpha": 1e-4}, seed=5)
    _, b, _ = run_fisher(request, {"alpha": 1e-4}, seed=5)
    _, c, _ = run_fisher(request, {"alpha": 1e-4}, seed=6)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_fisher_through_the_public_api_is_deterministic():
    d = data(60, 6, 4, seed=7)
    model = linear(6, 4, seed=8)
    runs = [
        unlearn.unlearn("fisher", model, (d.x, d.y), ClassRequest(classes=[1]), seed=s)[0]
        for s in (0, 0, 1)
    ]
    w = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in runs]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_fisher_samples_subsample_the_retain_set():
    request = SampleRequest(indices=[0])
    _, full, ctx = run_fisher(request, {"alpha": 1e-4})
    _, same, _ = run_fisher(request, {"alpha": 1e-4, "samples": len(ctx.retain)})
    _, few, _ = run_fisher(request, {"alpha": 1e-4, "samples": 5})
    torch.testing.assert_close(full.weight, same.weight)  # all samples, another order
    assert not torch.allclose(full.weight, few.weight)


@pytest.mark.parametrize(
    "config",
    [
        {"samples": 0},
        {"batch": 0},
        {"alpha": -1.0},
        {"variance": "row"},
        {"fisher": "exact"},
        {"boost": 0.0},
    ],
)
def test_fisher_rejects_bad_options(config):
    with pytest.raises(UnlearnError):
        get_method("fisher", config)


# -- SCRUB -------------------------------------------------------------------------------


def scrub_run(config: dict) -> tuple[int, list[list[int]]]:
    """Steps and, per student forward, the ids of the samples it saw (negative: forget)."""
    full = data(110, 4, 3, ids=True)
    forget = ArrayData(full.x[100:], full.y[100:], full.classes)
    retain = ArrayData(full.x[:100], full.y[:100], full.classes)
    torch.manual_seed(0)
    original = nn.Linear(4, 3)
    model = copy.deepcopy(original)
    seen: list[list[int]] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 0].long().tolist()))
    ctx = Ctx(
        forget, retain, SampleRequest(indices=list(range(100, 110))), original, ClassifierTask(3)
    )
    cfg = {"epochs": 3, "max_epochs": 2, "batch_size": 32, **config}
    steps = get_method("scrub", cfg).unlearn(model, ctx)
    return steps, seen


def test_scrub_full_retain_pass_per_min_epoch():
    """retain_batches None: each epoch = (max: all 10 forget samples) then (min: 100 retain
    samples in ceil(100 / 32) = 4 batches, each exactly once)."""
    steps, seen = scrub_run({"retain_batches": None})
    assert steps == 2 * 1 + 3 * 4
    assert len(seen) == steps
    layout = [("f", 1), ("r", 4), ("f", 1), ("r", 4), ("r", 4)]
    pos = 0
    for kind, count in layout:
        ids = [i for batch in seen[pos : pos + count] for i in batch]
        if kind == "f":
            assert sorted(ids) == list(range(100, 110))
        else:
            assert sorted(ids) == list(range(100)), "each retain sample once per min epoch"
            assert [len(b) for b in seen[pos : pos + count]] == [32, 32, 32, 4]
        pos += count


def test_scrub_capped_min_phase_continues_the_stream():
    """retain_batches 5 with 4 batches per pass: each min epoch picks up the shuffled stream
    where the previous one stopped."""
    steps, seen = scrub_run({"retain_batches": 5})
    assert steps == 2 * 1 + 3 * 5
    sizes = [len(b) for b in seen]
    assert sizes == [10, 32, 32, 32, 4, 32] + [10, 32, 32, 4, 32, 32] + [32, 4, 32, 32, 32]
    first_pass = [i for b in seen[1:5] for i in b]
    assert sorted(first_pass) == list(range(100))


def test_scrub_default_cap_and_bad_cap():
    assert ScrubConfig().retain_batches == 50  # the benchmarks' numbers were measured so
    for bad in (0, -3):
        with pytest.raises(UnlearnError):
            get_method("scrub", {"retain_batches": bad})


def test_scrub_kl_is_teacher_to_student_at_temperature():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    temp = 4.0
    ps, pt = torch.softmax(s / temp, 1), torch.softmax(t / temp, 1)
    expected = (pt * (pt.log() - ps.log())).sum(1).mean() * temp**2
    torch.testing.assert_close(_kl(s, t, temp), expected)
