"""The diffusion family: the task, the judge and Frechet distance, ESD / SalUn-DDPM / DiMUM,
the DiMRA attack and the ``kind: diffusion`` benchmark, on tiny randomly initialised UNets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from unlearn import unlearn  # noqa: E402
from unlearn.attacks.dimra import DiMRAConfig, auxiliary_set, dimra  # noqa: E402
from unlearn.data import ArrayData  # noqa: E402
from unlearn.errors import ScenarioError, UnlearnError, UnsupportedRequestError  # noqa: E402
from unlearn.metrics.generation import class_rates, frechet_distance, train_judge  # noqa: E402
from unlearn.requests import ClassRequest, SampleRequest  # noqa: E402
from unlearn.tasks import ClassifierTask, DiffusionRecipe, DiffusionTask  # noqa: E402
from unlearn.tasks.diffusion import class_unet, upsample  # noqa: E402

K = 4


@pytest.fixture()
def images() -> ArrayData:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(K).repeat_interleave(12)
    # each class a different mean brightness, so a judge can tell them apart
    x = (y.float()[:, None, None, None] / (K - 1)) * 1.6 - 0.8
    x = (x + 0.1 * torch.randn(len(y), 1, 8, 8, generator=gen)).clamp(-1, 1)
    return ArrayData(x, y, tuple(str(i) for i in range(K)), "toy")


@pytest.fixture()
def task() -> DiffusionTask:
    return DiffusionTask(K, timesteps=50, sample_steps=5, guidance=2.0)


@pytest.fixture()
def unet() -> torch.nn.Module:
    return class_unet(K, size=8, block_out_channels=(8, 16), seed=0).eval()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# -- metrics ----------------------------------------------------------------------------
def test_frechet_distance_matches_the_hand_computed_gaussian_case():
    # 1-D: a = [0, 2] (mean 1, var 2), b = [1, 5] (mean 3, var 8):
    # (1 - 3)^2 + 2 + 8 - 2 sqrt(2 * 8) = 4 + 10 - 8 = 6
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6)
    # 2-D, diagonal covariances: sum over the axes of the 1-D formula
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])  # var 4/3 and 16/3
    b = a * np.array([3.0, 1.0]) + np.array([1.0, -1.0])  # var 12 and 16/3, means shifted
    va, vb = 4 / 3, 12.0
    want = (1 - 4) ** 2 + (2 - 1) ** 2 + va + vb - 2 * np.sqrt(va * vb)
    assert frechet_distance(a, b) == pytest.approx(want)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    with pytest.raises(UnlearnError, match="two samples"):
        frechet_distance(a[:1], b)
    with pytest.raises(UnlearnError, match="one d"):
        frechet_distance(a, b[:, :1])


def test_class_rates_count_the_asked_class_only():
    rates = class_rates(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 0, 0, 2, 2, 1]), [0, 1, 2])
    assert rates == {0: pytest.approx(200 / 3), 1: 0.0, 2: 100.0}
    with pytest.raises(UnlearnError, match="class 3"):
        class_rates(np.array([0]), np.array([0]), [3])


def test_judge_learns_the_toy_classes(images):
    judge = train_judge(images.x, images.y, K, seed=0, epochs=40, batch_size=16)
    assert (judge.predict(images.x) == images.y.numpy()).mean() > 0.9
    assert judge.embed(images.x).shape == (len(images), 64)


# -- the task ---------------------------------------------------------------------------
def test_noising_matches_diffusers_and_the_loss_is_per_example(task, unet, images):
    t = torch.tensor([0, 10, 49, 25])
    x = images.x[:4]
    torch.manual_seed(3)
    x_t, _, noise = task.noisy(x, t)
    ref = task.scheduler.add_noise(x, noise, t)
    assert torch.allclose(x_t, ref, atol=1e-6)
    per = task.denoise_loss(unet, images.x, images.y, reduction="none")
    assert per.shape == (len(images),) and bool((per > 0).all())
    assert task.drop_conditions(images.y, torch.Generator().manual_seed(0)).eq(K).any()
    assert torch.equal(DiffusionTask(K, cond_dropout=0.0).drop_conditions(images.y), images.y)


def test_sampling_is_seeded_guided_and_can_stop_partway(task, unet):
    a = task.sample(unet, [0, 1, 2], seed=5)
    b = task.sample(unet, [0, 1, 2], seed=5)
    c = task.sample(unet, [0, 1, 2], seed=6)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    # guidance 0 is the unconditional model alone: the null class asked for directly. One
    # step agrees to float precision; after the sampler's 5 steps the two runs differ only
    # by the convolutions' batch-size-dependent rounding (2e-4 seen on one thread)
    z = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.full((3,), 30, dtype=torch.long)
    e0 = task.guided_eps(unet, z, 30, torch.tensor([0, 1, 2]), 0.0)
    assert torch.allclose(e0, task.eps(unet, z, t, torch.full((3,), K)), atol=1e-5)
    u = task.sample(unet, [0, 1, 2], seed=5, guidance=0.0)
    assert torch.allclose(u, task.sample(unet, [K, K, K], seed=5, guidance=1.0), atol=2e-3)
    assert int(task.ddim(5).timesteps[0]) == task.timesteps - 1  # from pure noise
    assert not torch.equal(a, task.sample(unet, [0, 1, 2], seed=5, guidance=1.0))
    noise = task.sample(unet, [0, 1], seed=5, stop_at=0)  # nothing denoised: the start noise
    start = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    assert torch.equal(noise, start)


def test_fit_lowers_the_denoising_loss(task, unet, images):
    gen = torch.Generator().manual_seed(1)
    before = task.denoise_loss(unet, images.x, images.y, gen=gen).item()
    model = copy.deepcopy(unet)
    task.fit(model, images, DiffusionRecipe(steps=60, batch_size=16, lr=3e-3), seed=0)
    gen = torch.Generator().manual_seed(1)
    after = task.denoise_loss(model, images.x, images.y, gen=gen).item()
    assert after < 0.7 * before
    with pytest.raises(UnlearnError, match="null class"):
        bad = ArrayData(images.x, torch.full_like(images.y, K), tuple("abcde"))
        task.fit(model, bad, DiffusionRecipe(steps=1), seed=0)


def test_ema_and_membership_scores(task, unet, images):
    plain, ema = copy.deepcopy(unet), copy.deepcopy(unet)
    task.fit(plain, images, DiffusionRecipe(steps=5, batch_size=8), seed=0)
    task.fit(ema, images, DiffusionRecipe(steps=5, batch_size=8, ema_decay=0.9), seed=0)
    assert not _same(plain, ema) and not _same(ema, unet)
    a = task.membership_scores(plain, images, draws=2, seed=3)
    assert a.shape == (len(images),) and np.array_equal(
        a, task.membership_scores(plain, images, draws=2, seed=3)
    )
    assert not np.array_equal(a, task.membership_scores(plain, images, draws=2, seed=4))


def test_reference_cache_keys_follow_the_recipe_not_the_sampler(tmp_path, images):
    from unlearn.bench.diffusion import ModelSpec, reference_model

    spec = ModelSpec(block_out_channels=(8, 16))
    for t in (
        DiffusionTask(K, timesteps=50, sample_steps=3),
        DiffusionTask(K, timesteps=50, sample_steps=5, guidance=3.0),  # same key: a hit
    ):
        _, _, hit = reference_model(t, spec, 8, 1, images, DiffusionRecipe(steps=2), 0, tmp_path)
    assert hit and len(list(tmp_path.glob("diffusion-*"))) == 1
    t = DiffusionTask(K, timesteps=50)
    _, _, hit = reference_model(t, spec, 8, 1, images, DiffusionRecipe(steps=3), 0, tmp_path)
    assert not hit and len(list(tmp_path.glob("diffusion-*"))) == 2
    _, _, hit = reference_model(t, spec, 8, 1, images, DiffusionRecipe(steps=3), 1, tmp_path)
    assert not hit and len(list(tmp_path.glob("diffusion-*"))) == 3


def test_a_model_without_a_null_class_is_refused(task):
    small = class_unet(K - 1, size=8, block_out_channels=(8, 16))  # K class embeddings
    with pytest.raises(UnlearnError, match="null"):
        task.check_model(small)
    with pytest.raises(UnlearnError, match="halved"):
        class_unet(K, size=6, block_out_channels=(8, 16, 16))
    with pytest.raises(UnlearnError, match="bilinear|shape"):
        upsample(torch.zeros(3, 8, 8), 16)


# -- methods ------------------------------------------------------------------------------
METHODS = {
    "finetune": {"steps": 4, "batch_size": 8},
    "esd": {"steps": 3, "batch_size": 2, "ddim_steps": 4, "lr": 1e-3},
    "salun_ddpm": {"steps": 3, "batch_size": 8, "lr": 1e-3},
    "dimum": {"steps": 3, "batch_size": 8, "lr": 1e-3},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_on_a_user_unet_and_leaves_it_alone(name, task, images):
    # a UNet of another shape than the scenario's (attention in its last block)
    user = class_unet(K, size=8, block_out_channels=(8, 16), attention=True, seed=2).eval()
    before = copy.deepcopy(user)
    out, rec = unlearn(
        name, user, images, ClassRequest(classes=(1,)), task=task, config=METHODS[name]
    )
    assert _same(user, before)
    assert not _same(out, before)
    assert rec.steps == METHODS[name]["steps"] and rec.seconds > 0


def test_salun_ddpm_changes_only_the_salient_half(task, unet, images):
    out, rec = unlearn(
        "salun_ddpm", unet, images, ClassRequest(classes=(0,)), task=task,
        config={"steps": 3, "batch_size": 8, "lr": 1e-2},
    )  # fmt: skip
    changed = sum(
        int((p != q).sum()) for p, q in zip(out.parameters(), unet.parameters(), strict=True)
    )
    total = sum(p.numel() for p in unet.parameters())
    assert rec.extra["mask_kept"] == pytest.approx(0.5, abs=0.01)
    assert 0.3 * total < changed <= rec.extra["mask_kept"] * total + 1


def test_esd_trains_towards_the_negatively_guided_unconditional(task, unet, images, monkeypatch):
    from unlearn.data.core import split_request
    from unlearn.methods import UnlearnContext, get_method

    x_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    asked = {}

    def fake_sample(model, labels, **kw):
        asked.update(kw, labels=labels)
        return x_t.clone()

    monkeypatch.setattr(task, "sample", fake_sample)
    eta = 1.5
    method = get_method("esd", {"steps": 1, "batch_size": 4, "eta": eta, "ddim_steps": 4})
    request = ClassRequest(classes=(2,))
    ctx = UnlearnContext(task, split_request(images, request), request, unet, seed=0)
    frozen = class_unet(K, size=8, block_out_channels=(8, 16), seed=7).eval()  # the original
    method._ref = frozen
    method.setup(unet, ctx)
    loss = method.objective(unet, ctx, 0)
    assert asked["guidance"] == 3.0 and asked["labels"].tolist() == [2, 2, 2, 2]
    t = torch.full((4,), int(task.ddim(4).timesteps[asked["stop_at"]]))
    with torch.no_grad():
        e_c = task.eps(frozen, x_t, t, torch.full((4,), 2))
        e_u = task.eps(frozen, x_t, t, torch.full((4,), K))
        pred = task.eps(unet, x_t, t, torch.full((4,), 2))
    want = ((pred - (e_u - eta * (e_c - e_u))) ** 2).mean()  # the paper's / official target
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)


def test_dimum_alternatives(task, unet, images):
    for alt in ("class", "noise", "pattern"):
        out, rec = unlearn(
            "dimum", unet, images, ClassRequest(classes=(3,)), task=task,
            config={"steps": 2, "batch_size": 4, "alternative": alt, "alt_size": 10},
        )  # fmt: skip
        assert rec.extra["alternative_images"] == (12 if alt == "class" else 10)
    with pytest.raises(UnlearnError, match="kept class"):
        unlearn("dimum", unet, images, ClassRequest(classes=(3,)), task=task,
                config={"steps": 1, "alt_class": 3})  # fmt: skip


def test_refusals_name_the_problem(task, unet, images):
    with pytest.raises(UnsupportedRequestError, match="class"):
        unlearn("esd", unet, images, SampleRequest(indices=[0, 1]), task=task)
    with pytest.raises(UnsupportedRequestError, match="denoise"):
        unlearn("esd", torch.nn.Linear(64, K), images, ClassRequest(classes=(0,)),
                task=ClassifierTask(K))  # fmt: skip
    with pytest.raises(UnsupportedRequestError, match="logprob"):
        unlearn("gradient_ascent", unet, images, ClassRequest(classes=(0,)), task=task)
    with pytest.raises(UnlearnError, match="images"):
        task.as_data(ArrayData(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ("a",)))


# -- DiMRA --------------------------------------------------------------------------------
def test_dimra_tracks_checkpoints_and_leaves_the_model(task, unet, images):
    before = copy.deepcopy(unet)
    calls = []

    def measure(m):
        calls.append(1)
        return {"forgotten_class_rate": float(len(calls))}

    cfg = DiMRAConfig(steps=5, every=2, batch_size=8)
    attacked, trace = dimra(task, unet, images, cfg, measure, seed=0)
    assert [t["step"] for t in trace] == [0, 2, 4, 5]
    assert _same(unet, before) and not _same(attacked, before)
    aux = auxiliary_set(task, unet, images, [0, 2], DiMRAConfig(data="generated",
                        generated_per_class=3), seed=1)  # fmt: skip
    assert sorted(set(aux.y.tolist())) == [0, 2] and len(aux) == 6
    with pytest.raises(UnlearnError, match="retain or generated"):
        DiMRAConfig(data="forget")


# -- the benchmark --------------------------------------------------------------------------
def _scenario(tmp_path, **over) -> dict:
    raw = {
        "name": "tiny-diffusion",
        "kind": "diffusion",
        "data": {"name": "digits"},
        "image": {"size": 8},
        "model": {"block_out_channels": [8, 16]},
        "diffusion": {"timesteps": 50, "sample_steps": 3},
        "recipe": {"steps": 15, "batch_size": 16},
        "judge": {"epochs": 2},
        "eval": {"per_class": 3, "forget_samples": 4},
        "forget": {"class": "random"},
        "seeds": [0],
        "cache_dir": str(tmp_path / "cache"),
        "methods": [
            {"name": "esd", "steps": 2, "batch_size": 2, "ddim_steps": 3},
            {"name": "dimum", "steps": 2, "batch_size": 8},
        ],
        "attacks": {"dimra": {"steps": 3, "every": 2, "batch_size": 8}},
    }
    raw.update(over)
    return raw


def test_the_benchmark_scores_every_row_and_caches_its_references(tmp_path):
    from unlearn.bench import core
    from unlearn.bench.report import write_outputs

    res = core.run(_scenario(tmp_path))
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == ["original", "retrain", "oracle_noise", "esd", "dimum"]
    assert rows["original"]["metrics"]["frechet_retained"] == pytest.approx(1.0)
    for label in ("retrain", "esd", "dimum"):
        assert [t["step"] for t in rows[label]["dimra"]] == [0, 2, 3]
        assert "dimra_forgotten_class_rate" in rows[label]["metrics"]
    assert "dimra" not in rows["original"]
    seed = res["base_models"]["0"]
    assert seed["forget_class"] == rows["esd"]["forgotten_class"]
    assert rows["esd"]["metrics"]["base_min_class_acc"] == min(seed["per_class_acc"].values())
    cached = sorted((tmp_path / "cache").glob("diffusion-*.safetensors"))
    assert len(cached) == 3  # base, oracle, noise floor
    again = core.run(_scenario(tmp_path))
    assert [r["metrics"]["forgotten_class_rate"] for r in again["rows"]] == [
        r["metrics"]["forgotten_class_rate"] for r in res["rows"]
    ]
    assert again["rows"][0]["metrics"]["seconds"] == res["rows"][0]["metrics"]["seconds"]
    out = write_outputs(res, tmp_path / "out")
    report = (out / "report.md").read_text()
    assert "## DiMRA" in report and "## Judge and base models" in report
    assert (out / "dimra.png").is_file()


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"forget": {"class": 12}}, "forget class 12"),
        ({"forget": {"samples": [1]}}, "forget must be"),
        ({"image": {"size": 10}}, "multiple of 4"),
        ({"methods": [{"name": "gradient_ascent"}]}, "logprob"),
        ({"methods": [{"name": "esd", "eta": -1}]}, "eta"),
        ({"attacks": {"dimra": {"data": "forget"}}}, "retain or generated"),
        ({"diffusion": {"sample_steps": 0}}, "sample_steps"),
        ({"bogus": 1}, "unknown key"),
    ],
)
def test_bad_scenarios_fail_before_any_training(tmp_path, over, match):
    from unlearn.bench import core

    with pytest.raises(ScenarioError, match=match):
        core.run(_scenario(tmp_path, **over))
    assert not (tmp_path / "cache").exists()


def test_esd_on_the_class_embedding_alone_changes_only_the_forgotten_row(task, unet, images):
    out, rec = unlearn(
        "esd", unet, images, ClassRequest(classes=(1,)), task=task,
        config={"steps": 2, "batch_size": 2, "ddim_steps": 3, "lr": 1e-2,
                "train_only": ["class_embedding"]},
    )  # fmt: skip
    changed = {
        n for (n, p), q in zip(out.named_parameters(), unet.parameters(), strict=True)
        if not torch.equal(p, q)
    }  # fmt: skip
    assert changed == {"class_embedding.weight"} and "class_embedding" in rec.touched
    rows = (out.class_embedding.weight != unet.class_embedding.weight).any(1)
    assert rows.nonzero().flatten().tolist() == [1]
    with pytest.raises(UnlearnError, match="no trainable parameters whose name"):
        unlearn("esd", unet, images, ClassRequest(classes=(1,)), task=task,
                config={"steps": 1, "train_only": ["nothing_has_this"]})  # fmt: skip
