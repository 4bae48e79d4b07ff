"""The generator family: identity data, the generator and recogniser, inversion, GUIDE and
SUGAR, and the ``kind: generator`` benchmark, on small seeded models."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearn import unlearn
from unlearn.data.identities import make_identities
from unlearn.errors import ScenarioError, UnlearnError, UnsupportedRequestError
from unlearn.requests import ClassRequest, GroupRequest
from unlearn.tasks.generator import (
    GeneratorRecipe,
    GeneratorTask,
    IdentityGenerator,
    train_recogniser,
)

N = 24


@pytest.fixture(scope="module")
def world():
    data = make_identities(N, 6, seed=0)
    judge = train_recogniser(data.data.x, data.data.y, N, seed=0, epochs=12)
    id_loss = train_recogniser(data.data.x, data.data.y, N, seed=1, epochs=12)
    task = GeneratorTask(judge)
    gen = IdentityGenerator(N, seed=0)
    task.fit(gen, data, GeneratorRecipe(steps=400), seed=0)
    return data, task, gen, id_loss


def _sim(task, model, data, ids, latents=None):
    cent = task.centroids(data)
    ids_t = torch.as_tensor(ids)
    lat = model.latents[ids_t] if latents is None else latents
    v = task.views(len(ids) * 4, torch.Generator().manual_seed(3))
    e = task.embed(task.generate(model, lat.repeat_interleave(4, 0), v))
    return float((e * cent[ids_t.repeat_interleave(4)]).sum(1).mean())


def test_identity_data_is_seeded_and_views_differ():
    a, b = make_identities(5, 3, seed=1), make_identities(5, 3, seed=1)
    assert torch.equal(a.data.x, b.data.x) and a.data.x.shape == (15, 1, 16, 16)
    assert not torch.equal(a.data.x, make_identities(5, 3, seed=2).data.x)
    assert float(a.data.x.abs().max()) <= 1 and not torch.equal(a.data.x[0], a.data.x[1])
    sub = a.subset([0, 4], "two")
    assert sub.data.y.tolist() == [0, 1] and len(sub) == 2
    with pytest.raises(UnlearnError, match="identities"):
        make_identities(1, 3)


def test_recogniser_generator_and_inversion_know_the_identities(world):
    data, task, gen, _ = world
    cent = task.centroids(data)
    e = task.embed(data.data.x)
    own = (e * cent[data.data.y]).sum(1).mean()
    assert own > 0.6 and float((cent @ cent.T).fill_diagonal_(0).abs().mean()) < 0.3
    assert _sim(task, gen, data, list(range(N))) > 0.5  # the generator draws who it is asked
    w = task.invert(gen, data.data.x[data.data.y == 5], steps=150)
    radius = float((gen.latents - gen.w_avg).norm(dim=1).median())
    assert float((w - gen.latents[5]).norm()) < radius  # nearer its own latent than typical
    assert _sim(task, gen, data, [5], w[None]) > 0.5


@pytest.mark.parametrize("name", ["guide", "sugar"])
def test_methods_move_forgotten_identities_and_leave_the_model_and_latents(name, world):
    data, task, gen, id_loss = world
    before = copy.deepcopy(gen)
    forget = [0, 1, 2]
    opts = {"steps": 30, "lr": 2e-3}
    if name == "sugar":
        opts["trigger_epochs"] = 5
    out, rec = unlearn(name, gen, data, GroupRequest(groups=tuple(forget), by="identity"),
                       task=task, config=opts, proxies={"id_loss": id_loss})  # fmt: skip
    pairs = zip(gen.state_dict().values(), before.state_dict().values(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    assert torch.equal(out.latents, gen.latents)  # latents are inputs, never trained
    assert _sim(task, out, data, forget) < _sim(task, gen, data, forget) - 0.3
    assert rec.steps == 90 and rec.extra["identities"] == 3


def test_sugar_ewc_holds_the_weights(world):
    data, task, gen, id_loss = world
    req = GroupRequest(groups=(3, 4), by="identity")
    loose, _ = unlearn("sugar", gen, data, req, task=task, proxies={"id_loss": id_loss},
                       config={"steps": 20, "lam": 0.0, "trigger_epochs": 2})  # fmt: skip
    tight, rec = unlearn("sugar", gen, data, req, task=task, proxies={"id_loss": id_loss},
                         config={"steps": 20, "lam": 1e6, "trigger_epochs": 2})  # fmt: skip

    def moved_by(m):
        pairs = zip(m.parameters(), gen.parameters(), strict=True)
        return sum(float((p - q).detach().norm()) for p, q in pairs)

    moved = [moved_by(loose), moved_by(tight)]
    assert moved[1] < 0.5 * moved[0]
    assert rec.extra["fisher_latents"] == 2 * 2 * 4


def test_refusals(world):
    data, task, gen, id_loss = world
    with pytest.raises(UnsupportedRequestError, match="group"):
        unlearn("guide", gen, data, ClassRequest(classes=(0,)), task=task,
                proxies={"id_loss": id_loss})  # fmt: skip
    with pytest.raises(UnlearnError, match="identity-loss"):
        unlearn("sugar", gen, data, GroupRequest(groups=(1,), by="identity"), task=task)
    with pytest.raises(UnlearnError, match="IdentityGenerator"):
        task.check_model(torch.nn.Linear(2, 2))


def _scenario(**over):
    raw = {
        "name": "tiny-generator",
        "kind": "generator",
        "data": {"identities": 30, "views": 4},
        "recipe": {"steps": 150},
        "recogniser": {"epochs": 4},
        "forget": {"counts": [2, 4]},
        "eval": {"views": 3, "retained": 8, "invert_steps": 10},
        "seeds": [0],
        "cache_dir": None,
        "methods": [
            {"name": "guide", "steps": 3},
            {"name": "sugar", "steps": 3, "trigger_epochs": 1},
        ],
    }
    raw.update(over)
    return raw


def test_the_benchmark_chains_counts_and_scores_every_row(tmp_path):
    from unlearn.bench import core
    from unlearn.bench.report import write_outputs

    res = core.run(_scenario(cache_dir=str(tmp_path / "cache")))
    rows = {r["method"]: r for r in res["rows"]}
    for n in (2, 4):
        for ref in ("original", "retrain", "oracle_noise", "guide", "sugar"):
            m = rows[f"{ref}@n{n}"]["metrics"]
            assert m["n_forgotten"] == n and "forgotten_id_sim" in m and "frechet" in m
    assert rows["original@n2"]["metrics"]["retained_id_sim_vs_original"] == pytest.approx(1.0)
    assert rows["sugar@n2"]["record"]["extra"]["continued_from_previous_count"] is False
    later = rows["sugar@n4"]["record"]
    assert later["extra"]["continued_from_previous_count"] is True
    assert later["extra"]["identities"] == 2  # only the new identities at the second count
    assert len(list((tmp_path / "cache").glob("generator-*"))) == 5  # original, 2 x (oracle, noise)
    out = write_outputs(res, tmp_path / "out")
    assert (out / "identities_vs_count.png").is_file()


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"forget": {"counts": [4, 2]}}, "increasing"),
        ({"forget": {"counts": [20, 25]}, "eval": {"retained": 8}}, "needs more"),
        ({"methods": [{"name": "esd"}]}, "denoise"),
        ({"data": {"identities": 30, "size": 10}}, "multiple of 4"),
    ],
)
def test_bad_generator_scenarios(over, match):
    from unlearn.bench import core

    with pytest.raises(ScenarioError, match=match):
        core.run(_scenario(**over))
