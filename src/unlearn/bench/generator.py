"""The ``kind: generator`` benchmark family: forgetting many identities of a generator, one
batch after another, judged by a recogniser.

A scenario mapping::

    name: generator-sugar
    kind: generator
    data: {identities: 300, views: 8, size: 16, seed: 0}   # unlearn.data.identities
    model: {latent_dim: 32, width: 64}
    recipe: {steps: 3000, batch_size: 128, lr: 2.0e-3}     # original and oracle
    recogniser: {epochs: 25, seed: 0}   # the judge; the methods' identity loss: seed + 1
    forget: {counts: [50, 100]}         # identities drawn per seed, forgotten in turn
    eval: {views: 8, retained: 100, invert_steps: 200}
    seeds: [1, 2]
    methods:
      - {name: sugar}
      - {name: guide}

Per seed, the original generator is trained on every identity and a random order of
identities is drawn; at each count ``n`` (a world tagged ``@n<n>``) the first ``n`` of
them are forgotten. A method's row at a count continues from its own model at the count
before (forgetting the next identities: one after another with ``sequential: true``);
its cost is that increment's. The oracle at a count is the generator trained without the
first ``n`` identities; it has no latent for them, so theirs are found by inverting their
real images (``invert_steps``). Every generator is cached by content hash.

Metrics (the recogniser's unit-norm embeddings, cosine similarity; ``views`` seeded views
per identity, the same for every row): ``forgotten_id_sim``, the forgotten identities'
samples against their real images' mean embedding; ``unrelated_id_sim_mean`` / ``_std``,
the floor: the original's samples of retained identities against a forgotten identity's
real images; ``retained_id_sim`` (``retained`` identities kept, their own images);
``frechet``, the Frechet distance of the retained identities' samples to their real
images in the embedding space, and both relative to the original (``*_vs_original``);
``surrogate_mutual_sim``, the mean similarity between different forgotten identities'
samples in the same view (near 1: their surrogates collapsed onto one face);
``forgotten_above_floor``, ``forgotten_id_sim`` minus the floor's mean plus one standard
deviation (at most 0: within the spread of unrelated identities).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.core import split_request
from ..data.identities import IdentityData, make_identities
from ..methods.base import UnlearnContext
from ..requests import GroupRequest
from ..tasks.generator import (
    GeneratorRecipe,
    GeneratorTask,
    IdentityGenerator,
    Recogniser,
    train_recogniser,
)
from .core import Family, World, register_family, run_parsed
from .scenario import check_common, parse_family_methods, scenario_block, scenario_error

__all__ = ["GeneratorFamily", "run_generator"]

_KEYS = {
    "name", "kind", "description", "data", "model", "recipe", "recogniser", "forget", "eval",
    "seeds", "noise_seed_offset", "methods", "targets", "device", "cache_dir",
}  # fmt: skip

ABOUT = """Rows per count of forgotten identities (`@n<count>`): `original` (the generator
trained on every identity), `retrain` (trained without the forgotten identities; their
latents found by inverting their real images) and `oracle_noise` (the same, another seed),
then the methods, each continuing from its own model at the previous count. Cosine
similarities of the judging recogniser's embeddings: `forgotten_id_sim` (forgotten
identities' samples vs their real images), the floor `unrelated_id_sim_mean` ± `_std`
(other identities' samples vs a forgotten identity's images, on the original),
`retained_id_sim` (kept identities vs their own images), `frechet` (kept identities'
samples vs their real images, embedding space), `*_vs_original` relative to the original,
`surrogate_mutual_sim` (different forgotten identities' samples vs each other)."""


@dataclass(frozen=True)
class DataSpec:
    identities: int = 300
    views: int = 8
    size: int = 16
    code_dim: int = 12
    shift: int = 2
    noise: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    latent_dim: int = 32
    width: int = 64


@dataclass(frozen=True)
class RecogniserSpec:
    epochs: int = 25
    seed: int = 0


@dataclass(frozen=True)
class EvalSpec:
    views: int = 8
    retained: int = 100
    invert_steps: int = 200


@dataclass
class GeneratorScenario:
    name: str
    seeds: list[int]
    noise_seed_offset: int
    device: str
    data: DataSpec
    model: ModelSpec
    recipe: GeneratorRecipe
    recogniser: RecogniserSpec
    counts: list[int]
    eval: EvalSpec
    methods: list
    cache_dir: str | None
    raw: dict = field(default_factory=dict)


def parse_generator(raw: Any, source: str = "scenario") -> GeneratorScenario:
    common = check_common(raw, source)
    name = common.name
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise scenario_error(name, f"unknown key(s) {unknown} (known: {sorted(_KEYS)})")
    for key in ("forget", "methods"):
        if key not in raw:
            raise scenario_error(name, f"missing key '{key}'")
    data = scenario_block(DataSpec, raw, "data", name)
    if data.identities < 4 or data.views < 2 or data.size % 4 or data.size < 8:
        raise scenario_error(name, "data: identities >= 4, views >= 2, size a multiple of 4 (>= 8)")
    forget = raw["forget"]
    counts = forget.get("counts") if isinstance(forget, dict) else None
    if (
        not isinstance(forget, dict)
        or set(forget) != {"counts"}
        or not isinstance(counts, list)
        or not counts
        or not all(type(c) is int and c > 0 for c in counts)
        or counts != sorted(set(counts))
    ):
        raise scenario_error(
            name, f"forget must be {{counts: [increasing positive integers]}}, got {forget!r}"
        )
    ev = scenario_block(EvalSpec, raw, "eval", name)
    if ev.views < 2 or ev.retained < 2 or ev.invert_steps < 1:
        raise scenario_error(name, "eval: views and retained must be >= 2, invert_steps >= 1")
    if counts[-1] + ev.retained > data.identities:
        raise scenario_error(
            name,
            f"forgetting {counts[-1]} identities and judging {ev.retained} retained ones needs "
            f"more than the data's {data.identities} identities",
        )
    methods = parse_family_methods(raw, name, GeneratorTask, "group")
    cache = raw.get("cache_dir", ".cache/unlearn")
    if cache is not None and not isinstance(cache, str):
        raise scenario_error(name, f"cache_dir must be a path or null, got {cache!r}")
    return GeneratorScenario(
        name=name,
        seeds=common.seeds,
        noise_seed_offset=common.noise_seed_offset,
        device=common.device,
        data=data,
        model=scenario_block(ModelSpec, raw, "model", name),
        recipe=scenario_block(GeneratorRecipe, raw, "recipe", name),
        recogniser=scenario_block(RecogniserSpec, raw, "recogniser", name),
        counts=counts,
        eval=ev,
        methods=methods,
        cache_dir=cache,
        raw=dict(raw),
    )


def cached_generator(
    task: GeneratorTask,
    s: GeneratorScenario,
    data: IdentityData,
    keep: np.ndarray,
    seed: int,
) -> tuple[IdentityGenerator, float]:
    """The generator of ``s.model`` trained on the images of identities ``keep`` (cached
    by content hash: the data spec, the kept identities, model, recipe, seed, versions)."""
    from .tensorcache import cached_tensors

    model = IdentityGenerator(data.identities, size=data.size, **asdict(s.model), seed=seed)
    key = {
        "data": asdict(s.data),
        "keep": hashlib.sha256(np.asarray(keep, dtype=np.int64).tobytes()).hexdigest(),
        "model": asdict(s.model),
        "recipe": s.recipe.to_dict(),
        "seed": int(seed),
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "device": task.device.type,
    }

    def build():
        mask = np.isin(data.data.y.numpy(), keep)
        task.fit(model, data.subset(np.flatnonzero(mask), "kept"), s.recipe, seed)
        return model.eval(), model.state_dict()

    def restore(tensors):
        model.load_state_dict(tensors)
        return model.to(task.device).eval()

    found, seconds, _ = cached_tensors(s.cache_dir, "generator", key, build, restore)
    return found, seconds


def cached_recogniser(data: IdentityData, s: GeneratorScenario, seed: int) -> Recogniser:
    """The recogniser of ``s.recogniser`` trained with ``seed`` on every image of ``data``
    (cached by content hash: the data spec, epochs, seed, versions, thread count)."""
    from .tensorcache import cached_tensors

    x, y, k = data.data.x, data.data.y, data.identities
    key = {
        "data": asdict(s.data),
        "epochs": int(s.recogniser.epochs),
        "seed": int(seed),
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
    }

    def build():
        rec = train_recogniser(x, y, k, seed, s.recogniser.epochs)
        return rec, rec.state_dict()

    def restore(tensors):
        rec = Recogniser(k, x.shape[-1])
        rec.load_state_dict(tensors)
        rec.eval()
        for p in rec.parameters():
            p.requires_grad_(False)
        return rec

    return cached_tensors(s.cache_dir, "recogniser", key, build, restore)[0]


class _Scorer:
    """The recogniser's view of a generator for one world (fixed views and identities)."""

    def __init__(self, task, data, forgotten, retained, ev: EvalSpec, seed: int):
        self.task, self.forgotten, self.retained = task, list(forgotten), list(retained)
        self.cent = task.centroids(data)
        gen = torch.Generator().manual_seed(int(seed) * 7 + 5)
        self.views = task.views(ev.views, gen)
        real = [data.data.x[data.data.y == r] for r in self.retained]
        self.real_feats = task.embed(torch.cat(real)).double().numpy()

    def samples(self, model, latents: torch.Tensor) -> torch.Tensor:
        """Embeddings (identities, views, dim) of the model's samples at ``latents``."""
        k, nv = len(latents), len(self.views)
        w = latents.repeat_interleave(nv, 0)
        v = self.views.repeat(k, 1)
        return self.task.embed(self.task.generate(model, w, v)).view(k, nv, -1)

    def score(self, model, forgotten_latents: torch.Tensor) -> dict:
        from ..metrics.generation import frechet_distance

        f = self.samples(model, forgotten_latents)
        cf = self.cent[torch.as_tensor(self.forgotten)]
        out = {"forgotten_id_sim": float((f * cf[:, None, :]).sum(-1).mean())}
        if len(self.forgotten) > 1:
            sim = torch.einsum("avd,bvd->abv", f, f).mean(-1)
            off = ~torch.eye(len(f), dtype=torch.bool)
            out["surrogate_mutual_sim"] = float(sim[off].mean())
        r = self.samples(model, model.latents[torch.as_tensor(self.retained)])
        cr = self.cent[torch.as_tensor(self.retained)]
        out["retained_id_sim"] = float((r * cr[:, None, :]).sum(-1).mean())
        out["frechet"] = frechet_distance(
            r.reshape(-1, r.shape[-1]).double().numpy(), self.real_feats
        )
        return out

    def floor(self, model) -> tuple[float, float]:
        """Similarity of retained identities' samples (original) to forgotten identities'
        real images: every pair, the mean over views."""
        r = self.samples(model, model.latents[torch.as_tensor(self.retained)]).mean(1)
        cf = self.cent[torch.as_tensor(self.forgotten)]
        sims = (torch.nn.functional.normalize(r, dim=1) @ cf.T).flatten().numpy()
        return float(sims.mean()), float(sims.std(ddof=1))


class _GenRun:
    def __init__(self, sc: GeneratorScenario):
        self.sc = sc
        self.name, self.raw = sc.name, sc.raw
        self.methods, self.noise_seed_offset = sc.methods, sc.noise_seed_offset

    @property
    def seeds(self):
        return self.sc.seeds


@register_family
class GeneratorFamily(Family):
    """The ``kind: generator`` plugin (module docstring)."""

    kind = "generator"
    task_family = "generator"
    keep_models = False
    parallel_seeds = True

    def parse(self, raw, source, base_dir):
        return _GenRun(parse_generator(raw, source))

    def ticks(self, sc):
        return len(sc.seeds) * len(sc.sc.counts) * (3 + len(sc.methods))

    def setup(self, sc, say):
        s = sc.sc
        self.data = make_identities(**asdict(s.data))
        t0 = time.perf_counter()
        judge = cached_recogniser(self.data, s, s.recogniser.seed)
        self.id_loss = cached_recogniser(self.data, s, s.recogniser.seed + 1)
        self.task = GeneratorTask(judge, shift=s.data.shift, device=s.device)
        self.info = {"recogniser_seconds": time.perf_counter() - t0}
        say(
            f"recognisers ready, trained or from the cache ({self.info['recogniser_seconds']:.0f}s)"
        )
        for _, method in s.methods:
            method.bind(self.task)

    def worlds(self, sc, seed):
        s, task, data = sc.sc, self.task, self.data
        k = data.identities
        order = np.random.default_rng([seed, 47]).permutation(k)
        everyone = np.arange(k)
        original, o_sec = cached_generator(task, s, data, everyone, seed)
        retained = order[s.counts[-1] :][: s.eval.retained]
        self._chain: dict[str, tuple[Any, int]] = {}
        for n in s.counts:
            forgotten = np.sort(order[:n])
            keep = np.setdiff1d(everyone, forgotten)
            oracle, r_sec = cached_generator(task, s, data, keep, seed)
            noise, n_sec = cached_generator(task, s, data, keep, seed + s.noise_seed_offset)
            scorer = _Scorer(task, data, forgotten, retained, s.eval, seed)
            mean, std = scorer.floor(original)
            request = GroupRequest(groups=tuple(int(i) for i in forgotten), by="identity")
            split = split_request(data, request)
            ctx = UnlearnContext(
                task=task, split=split, request=request, original=original, seed=seed,
                recipe=s.recipe, proxies={"id_loss": self.id_loss},
            )  # fmt: skip
            yield World(
                seed=seed,
                ctx=ctx,
                original_cost={"seconds": o_sec},
                tag=f"@n{n}",
                state={
                    "oracle": (oracle, r_sec),
                    "noise": (noise, n_sec),
                    "scorer": scorer,
                    "forgotten": forgotten,
                    "n": n,
                },
                metrics={
                    "n_forgotten": float(n),
                    "unrelated_id_sim_mean": mean,
                    "unrelated_id_sim_std": std,
                },
            )

    def _latents(self, world, model, row: str) -> torch.Tensor:
        ids = torch.as_tensor(world.state["forgotten"])
        if row not in ("retrain", "oracle_noise"):
            return model.latents[ids]
        # a model trained without them has no latents for them: invert their real images
        x, y = self.data.data.x, self.data.data.y
        steps = self._invert_steps
        return torch.stack(
            [self.task.invert(model, x[y == i], steps=steps, seed=i) for i in ids.tolist()]
        )

    def score(self, sc, world, model, row):
        self._invert_steps = sc.sc.eval.invert_steps
        scorer: _Scorer = world.state["scorer"]
        out = scorer.score(model, self._latents(world, model, row))
        if "original_scores" not in world.state:
            world.state["original_scores"] = (
                out if row == "original"
                else scorer.score(world.ctx.original, world.ctx.original.latents[
                    torch.as_tensor(world.state["forgotten"])])
            )  # fmt: skip
        base = world.state["original_scores"]
        out["retained_id_sim_vs_original"] = out["retained_id_sim"] / base["retained_id_sim"]
        out["frechet_vs_original"] = out["frechet"] / base["frechet"]
        # <= 0: the forgotten identities are drawn no more like themselves than unrelated
        # identities are (the floor's mean plus one standard deviation)
        floor = world.metrics["unrelated_id_sim_mean"] + world.metrics["unrelated_id_sim_std"]
        out["forgotten_above_floor"] = out["forgotten_id_sim"] - floor
        return out

    def run_method(self, sc, world, method):
        """From the method's own model at the previous count, forget the new identities."""
        label = next(lab for lab, m in sc.methods if m is method)
        prev = self._chain.get(label)
        ctx = world.ctx
        start = ctx.original
        if prev is not None:
            start, done = prev
            new = [int(i) for i in world.state["forgotten"] if int(i) not in done]
            request = GroupRequest(groups=tuple(new), by="identity")
            ctx = UnlearnContext(
                task=ctx.task, split=split_request(self.data, request), request=request,
                original=start, seed=ctx.seed, recipe=ctx.recipe, proxies=ctx.proxies,
            )  # fmt: skip
        model, rec = method.run(start, ctx)
        self._chain[label] = (model, {int(i) for i in world.state["forgotten"]})
        rec.extra["continued_from_previous_count"] = prev is not None
        return model, rec

    def tick_text(self, row, m):
        return (
            f": forgotten sim {m['forgotten_id_sim']:.3f}, retained {m['retained_id_sim']:.3f}, "
            f"Frechet x{m['frechet_vs_original']:.3f}"
        )

    def seed_info(self):
        return dict(self.info)

    def merge_seed_info(self, info):
        self.info.update(info)

    def document(self, sc):
        s = sc.sc
        return {
            "scenario": dict(s.raw),
            "scenario_name": s.name,
            "kind": "generator",
            "request": (
                f"forget {', then '.join(str(c) for c in s.counts)} of the "
                f"{s.data.identities} identities (drawn per seed)"
            ),
            "model_spec": {**asdict(s.model), "data": asdict(s.data)},
            "train_recipe": s.recipe.to_dict(),
            "methods": {
                lab: {"method": m.name, "config": asdict(m.config)} for lab, m in s.methods
            },
            "recogniser": asdict(s.recogniser),
            "eval": asdict(s.eval),
            "info": self.info,
            "about": ABOUT,
        }


def run_generator(spec: dict, progress: Callable[[str], None] | None = None) -> dict:
    fam = GeneratorFamily()
    return run_parsed(fam, fam.parse(spec, spec.get("name", "generator"), None), progress)
