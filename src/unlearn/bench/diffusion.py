"""The ``kind: diffusion`` benchmark family: forgetting a class of a class-conditional
diffusion model, judged on generated images, and the DiMRA relearning attack.

A scenario mapping::

    name: diffusion-digits-class
    kind: diffusion
    data: {name: digits}                 # any labelled image data set of unlearn.data
    image: {size: 16}                    # resized (bilinear) and mapped to [-1, 1]
    model: {block_out_channels: [16, 32, 64], layers_per_block: 1, attention: false}
    diffusion: {timesteps: 1000, beta_schedule: squaredcos_cap_v2, cond_dropout: 0.1,
                sample_steps: 20, guidance: 2.0}
    recipe: {steps: 3000, batch_size: 64, lr: 2.0e-3}     # base model and oracle
    judge: {epochs: 30, seed: 0}
    eval: {per_class: 50, forget_samples: 200}
    forget: {class: 0}                   # or random (drawn per seed)
    seeds: [1, 2]
    methods:
      - {name: esd, steps: 200}
    attacks:
      dimra: {steps: 200, lr: 1.0e-4, batch_size: 32, every: 50, data: retain}

Per seed the base model (``original``) is trained on every class, the oracle
(``retrain``) on the kept classes, and its noise floor with another seed; all three are
cached by content hash in ``cache_dir`` (the data, model, task and recipe, the seed and
the library versions). A judge (a small CNN, :mod:`unlearn.metrics.generation`) is trained
once on the real training images and labels the generated ones. Every row samples
``per_class`` images for every kept class and ``forget_samples`` for the forgotten one
(DDIM with guidance, the same seeded noise for every row of a seed) and reports how often
the judge finds the forgotten class, how well the kept classes are recognised, and the
Frechet distance of the kept classes' samples to their real images in the judge's feature
space, also relative to the original model's. ``attacks: dimra`` fine-tunes every
unlearned row (and the oracle) on an auxiliary set without the forgotten class and
tracks the forgotten class's rate over the attack's steps.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..attacks.dimra import DiMRAConfig, auxiliary_set, dimra
from ..data import check_data_spec, load_dataset
from ..data.core import ArrayData, split_request
from ..errors import ScenarioError, UnlearnError
from ..methods.base import UnlearnContext
from ..requests import ClassRequest
from ..tasks.diffusion import DiffusionRecipe, DiffusionTask, class_unet, labels_for, upsample
from ..validate import dataclass_from_mapping
from .core import Family, World, register_family, run_parsed
from .scenario import check_common, parse_family_methods

__all__ = ["DiffusionFamily", "run_diffusion", "reference_model"]

_KEYS = {
    "name", "kind", "description", "data", "image", "model", "diffusion", "recipe", "judge",
    "eval", "forget", "seeds", "noise_seed_offset", "methods", "attacks", "targets", "device",
    "cache_dir",
}  # fmt: skip

ABOUT = """Rows: `original` (the base model, trained on every class), `retrain` (the oracle:
trained without the forgotten class, same recipe and seed) and `oracle_noise` (the oracle
with another seed), then the methods. A judge CNN trained on the real images labels the
generated ones. `forgotten_class_rate`: share of samples asked for the forgotten class
that the judge labels as it; `kept_class_acc` / `min_kept_class_acc`: mean / lowest
recognition rate of the kept classes; `frechet`: Frechet distance of the kept classes'
samples to their real images in the judge's feature space (Inception cannot be downloaded
here), `frechet_retained` relative to the original model's on the same noise;
`base_min_class_acc`: the seed's base model's lowest per-class rate (every class). After
DiMRA: the same after the fine-tuning attack. Seconds exclude evaluation."""


@dataclass(frozen=True)
class ModelSpec:
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    attention: bool = False
    norm_num_groups: int = 8


@dataclass(frozen=True)
class DiffusionSpec:
    timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    cond_dropout: float = 0.1
    sample_steps: int = 20
    guidance: float = 2.0


@dataclass(frozen=True)
class JudgeSpec:
    epochs: int = 30
    seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3


@dataclass(frozen=True)
class EvalSpec:
    per_class: int = 50
    forget_samples: int = 200


@dataclass
class DiffusionScenario:
    name: str
    seeds: list[int]
    noise_seed_offset: int
    device: str
    data: dict
    size: int
    model: ModelSpec
    diffusion: DiffusionSpec
    recipe: DiffusionRecipe
    judge: JudgeSpec
    eval: EvalSpec
    forget: int | str
    methods: list
    attacks: dict
    cache_dir: str | None
    raw: dict = field(default_factory=dict)


def _fail(name: str, msg: str) -> ScenarioError:
    return ScenarioError(f"scenario {name}: {msg}")


def _block(cls, raw: dict, key: str, name: str):
    spec = raw.get(key)
    if spec is not None and not isinstance(spec, dict):
        raise _fail(name, f"'{key}' must be a mapping")
    spec = dict(spec or {})
    if cls is ModelSpec and "block_out_channels" in spec:
        ch = spec["block_out_channels"]
        if not isinstance(ch, list) or not ch or not all(type(c) is int and c > 0 for c in ch):
            raise _fail(name, f"model: block_out_channels must be positive integers, got {ch!r}")
        spec["block_out_channels"] = tuple(ch)
    try:
        return dataclass_from_mapping(cls, spec, key)
    except (UnlearnError, TypeError) as exc:
        raise _fail(name, f"{key}: {exc}") from None


def parse_diffusion(raw: Any, source: str = "scenario") -> DiffusionScenario:
    common = check_common(raw, source)
    name = common.name
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(name, f"unknown key(s) {unknown} (known: {sorted(_KEYS)})")
    for key in ("data", "methods", "forget"):
        if key not in raw:
            raise _fail(name, f"missing key '{key}'")
    data = raw["data"]
    if not isinstance(data, dict):
        raise _fail(name, "'data' must be a mapping")
    try:
        check_data_spec(data)
    except UnlearnError as exc:
        raise _fail(name, f"'data': {exc}") from None
    image = raw.get("image") or {}
    if not isinstance(image, dict) or set(image) - {"size"}:
        raise _fail(name, f"'image' knows only size, got {image!r}")
    size = image.get("size", 16)
    if type(size) is not int or size < 4 or size % 4:
        raise _fail(name, f"image: size must be an integer multiple of 4, got {size!r}")
    forget = raw["forget"]
    if not isinstance(forget, dict) or set(forget) != {"class"}:
        raise _fail(name, f"forget must be {{class: <index> | random}}, got {forget!r}")
    who = forget["class"]
    if who != "random" and (type(who) is not int or who < 0):
        raise _fail(name, f"forget: class must be a class index or 'random', got {who!r}")
    dspec = _block(DiffusionSpec, raw, "diffusion", name)
    try:
        DiffusionTask(2, **asdict(dspec))  # the sampler's settings, checked before any work
    except UnlearnError as exc:
        raise _fail(name, f"diffusion: {exc}") from None
    ev = _block(EvalSpec, raw, "eval", name)
    if ev.per_class < 2 or ev.forget_samples < 1:
        raise _fail(name, "eval: per_class must be >= 2 and forget_samples >= 1")
    judge = _block(JudgeSpec, raw, "judge", name)
    if judge.epochs < 1 or judge.batch_size < 1 or not judge.lr > 0 or judge.seed < 0:
        raise _fail(name, "judge: epochs and batch_size must be >= 1, lr > 0, seed >= 0")
    attacks = raw.get("attacks") or {}
    if not isinstance(attacks, dict) or set(attacks) - {"dimra"}:
        raise _fail(name, f"attacks knows only dimra, got {attacks!r}")
    if "dimra" in attacks:
        attacks = {"dimra": _block(DiMRAConfig, attacks, "dimra", name)}
    methods = parse_family_methods(raw, name, DiffusionTask, "class")
    cache = raw.get("cache_dir", ".cache/unlearn")
    if cache is not None and not isinstance(cache, str):
        raise _fail(name, f"cache_dir must be a path or null, got {cache!r}")
    return DiffusionScenario(
        name=name,
        seeds=common.seeds,
        noise_seed_offset=common.noise_seed_offset,
        device=common.device,
        data=dict(data),
        size=size,
        model=_block(ModelSpec, raw, "model", name),
        diffusion=dspec,
        recipe=_block(DiffusionRecipe, raw, "recipe", name),
        judge=judge,
        eval=ev,
        forget=who,
        methods=methods,
        attacks=attacks,
        cache_dir=cache,
        raw=dict(raw),
    )


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def reference_model(
    task: DiffusionTask,
    spec: ModelSpec,
    size: int,
    channels: int,
    data: ArrayData,
    recipe: DiffusionRecipe,
    seed: int,
    cache_dir: str | None,
    say: Callable[[str], None] = lambda m: None,
) -> tuple[torch.nn.Module, float, bool]:
    """A UNet of ``spec`` trained on ``data`` with ``recipe`` and ``seed``: ``(model, seconds,
    from_cache)``; the weights are cached (safetensors, training seconds in the metadata)
    under a key of the data, model, task settings, recipe, seed and library versions."""
    import diffusers

    from .tensorcache import cached_tensors

    model = class_unet(task.num_classes, size, channels, **asdict(spec), seed=seed)
    key = {
        "data": _digest(data.x, data.y),
        "model": asdict(spec),
        "size": size,
        "channels": channels,
        "task": task.settings(),
        "recipe": recipe.to_dict(),
        "seed": int(seed),
        "torch": torch.__version__.split("+")[0],
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "device": task.device.type,
    }

    def build():
        say(f"training a diffusion model on {len(data)} images, seed {seed} ({recipe.steps} steps)")
        task.fit(model, data, recipe, seed)
        return model.eval(), model.state_dict()

    def restore(tensors):
        model.load_state_dict(tensors)
        return model.to(task.device).eval()

    return cached_tensors(cache_dir, "diffusion", key, build, restore)


class _Scorer:
    """Samples a model's images for a seed (the same noise for every row) and judges them."""

    def __init__(self, task, judge, real_kept: torch.Tensor, kept, forgotten, ev, seed):
        self.task, self.judge, self.kept, self.forgotten = task, judge, kept, forgotten
        self.ev, self.seed = ev, seed
        self.real_feats = judge.embed(real_kept)

    def rates(self, model, classes, per_class: int, offset: int) -> tuple[dict, torch.Tensor]:
        from ..metrics.generation import class_rates

        labels = labels_for(classes, per_class)
        images = self.task.sample(model, labels, seed=self.seed * 7 + offset)
        return class_rates(self.judge.predict(images), labels.numpy(), classes), images

    def forgotten_rate(self, model, samples: int | None = None) -> float:
        n = self.ev.forget_samples if samples is None else samples
        rates, _ = self.rates(model, self.forgotten, n, 1)
        return float(np.mean(list(rates.values())))

    def kept_scores(self, model) -> dict:
        from ..metrics.generation import frechet_distance

        rates, images = self.rates(model, self.kept, self.ev.per_class, 2)
        vals = [rates[c] for c in self.kept]
        return {
            "rates": rates,
            "kept_class_acc": float(np.mean(vals)),
            "min_kept_class_acc": float(np.min(vals)),
            "frechet": frechet_distance(self.judge.embed(images), self.real_feats),
        }


class _DiffusionRun:
    def __init__(self, sc: DiffusionScenario):
        self.sc = sc
        self.name, self.raw = sc.name, sc.raw
        self.methods, self.noise_seed_offset = sc.methods, sc.noise_seed_offset

    @property
    def seeds(self):
        return self.sc.seeds


@register_family
class DiffusionFamily(Family):
    """The ``kind: diffusion`` plugin (module docstring)."""

    kind = "diffusion"
    task_family = "diffusion"
    keep_models = False
    parallel_seeds = True
    resumable = True  # DiMRA runs as each row is scored (--resume)

    def parse(self, raw, source, base_dir):
        return _DiffusionRun(parse_diffusion(raw, source))

    def setup(self, sc, say):
        from ..metrics.generation import train_judge

        s = sc.sc
        train, test = load_dataset(s.data)
        if train.x.ndim != 4:
            raise ScenarioError(
                f"scenario {s.name}: a diffusion scenario needs images (N, C, H, W), the data "
                f"has shape {tuple(train.x.shape)}"
            )
        self.train = ArrayData(upsample(train.x, s.size), train.y, train.classes, "train")
        self.test = ArrayData(upsample(test.x, s.size), test.y, test.classes, "test")
        k = len(train.classes)
        if s.forget != "random" and s.forget >= k:
            raise ScenarioError(f"scenario {s.name}: forget class {s.forget} of {k} classes")
        self.task = DiffusionTask(k, **asdict(s.diffusion), device=s.device)
        for _, method in s.methods:
            method.bind(self.task)
        j = s.judge
        t0 = time.perf_counter()
        self.judge = train_judge(
            self.train.x, self.train.y, k, j.seed, j.epochs, j.batch_size, j.lr
        )
        pred = self.judge.predict(self.test.x)
        self.judge_info = {
            "test_acc": 100.0 * float((pred == self.test.y.numpy()).mean()),
            "per_class_test_acc": {
                int(c): 100.0 * float((pred[self.test.y.numpy() == c] == c).mean())
                for c in range(k)
            },
            "seconds": time.perf_counter() - t0,
        }
        say(f"judge: {self.judge_info['test_acc']:.1f}% on the real test images")
        self.all_real = ArrayData(
            torch.cat([self.train.x, self.test.x]), torch.cat([self.train.y, self.test.y]),
            train.classes, "real", check_finite=False,
        )  # fmt: skip
        self.base_info: dict = {}

    def worlds(self, sc, seed):
        s, task = sc.sc, self.task
        k = task.num_classes
        who = s.forget
        if who == "random":
            who = int(np.random.default_rng([seed, 43]).integers(k))
        request = ClassRequest(classes=(int(who),))
        split = split_request(self.train, request)
        channels = self.train.x.shape[1]

        def ref(data, sd):
            return reference_model(task, s.model, s.size, channels, data, s.recipe, sd, s.cache_dir)

        original, o_sec, _ = ref(self.train, seed)
        oracle, r_sec, _ = ref(split.retain, seed)
        noise, n_sec, _ = ref(split.retain, seed + s.noise_seed_offset)
        kept = [c for c in range(k) if c != who]
        real = self.all_real.x[torch.isin(self.all_real.y, torch.as_tensor(kept))]
        scorer = _Scorer(task, self.judge, real, kept, [who], s.eval, seed)
        base_rates, _ = scorer.rates(original, list(range(k)), s.eval.per_class, 3)
        self.base_info[str(seed)] = {
            "forget_class": int(who),
            "per_class_acc": base_rates,
            "seconds": o_sec,
        }
        ctx = UnlearnContext(
            task=task,
            split=split,
            request=request,
            original=original,
            seed=seed,
            recipe=s.recipe,
            model_factory=lambda sd: class_unet(k, s.size, channels, **asdict(s.model), seed=sd),
        )
        yield World(
            seed=seed,
            ctx=ctx,
            original_cost={"seconds": o_sec},
            state={
                "oracle": (oracle, r_sec),
                "noise": (noise, n_sec),
                "scorer": scorer,
                "kept": kept,
                "forgotten": int(who),
            },
            fields={"forgotten_class": int(who)},
            metrics={"base_min_class_acc": float(min(base_rates.values()))},
        )

    def score(self, sc, world, model, row):
        scorer: _Scorer = world.state["scorer"]
        if "original_frechet" not in world.state:
            world.state["original_frechet"] = scorer.kept_scores(world.ctx.original)["frechet"]
        kept = scorer.kept_scores(model)
        out = {
            "forgotten_class_rate": scorer.forgotten_rate(model),
            "kept_class_acc": kept["kept_class_acc"],
            "min_kept_class_acc": kept["min_kept_class_acc"],
            "frechet": kept["frechet"],
            "frechet_retained": kept["frechet"] / world.state["original_frechet"],
        }
        cfg = sc.sc.attacks.get("dimra")
        # the original never forgot; the noise floor repeats the oracle
        if cfg is not None and row not in ("original", "oracle_noise"):
            out.update(self._attack(world, model, row, cfg))
        return out

    def _attack(self, world, model, row: str, cfg) -> dict:
        """DiMRA on ``model`` as its row is scored (so a saved row carries it)."""
        scorer: _Scorer = world.state["scorer"]
        aux = auxiliary_set(
            self.task, model, world.ctx.split.retain, world.state["kept"], cfg, world.seed + 17
        )

        def measure(m):
            return {"forgotten_class_rate": scorer.forgotten_rate(m, cfg.samples)}

        attacked, trace = dimra(self.task, model, aux, cfg, measure, world.seed + 19)
        world.state.setdefault("dimra", {})[row] = trace
        return {
            "dimra_forgotten_class_rate": trace[-1]["forgotten_class_rate"],
            "dimra_max_forgotten_class_rate": max(t["forgotten_class_rate"] for t in trace),
            "dimra_kept_class_acc": scorer.kept_scores(attacked)["kept_class_acc"],
        }

    def after_seed(self, sc, world, models, rows):
        for row in rows:
            trace = world.state.get("dimra", {}).get(row["method"])
            if trace is not None:
                row["dimra"] = trace

    def row_state(self, sc, world, row):
        return {"dimra": world.state.get("dimra", {}).get(row)}

    def restore_row(self, sc, world, row, state):
        if state.get("dimra") is not None:
            world.state.setdefault("dimra", {})[row] = state["dimra"]

    def seed_info(self):
        return {"base": self.base_info, "judge": self.judge_info}

    def merge_seed_info(self, info):
        self.base_info.update(info["base"])
        self.judge_info = info["judge"]

    def tick_text(self, row, m):
        return (
            f": forgotten {m['forgotten_class_rate']:.1f}%, kept {m['kept_class_acc']:.1f}%, "
            f"Frechet x{m['frechet_retained']:.3f}"
        )

    def document(self, sc):
        import diffusers

        s = sc.sc
        from .core import versions

        what = (
            "forget one class, drawn per seed"
            if s.forget == "random"
            else f"forget class {s.forget}"
        )
        return {
            "scenario": dict(s.raw),
            "scenario_name": s.name,
            "kind": "diffusion",
            "request": f"{what} of a class-conditional diffusion model",
            "model_spec": {**asdict(s.model), "size": s.size, "diffusion": asdict(s.diffusion)},
            "train_recipe": s.recipe.to_dict(),
            "methods": {
                lab: {"method": m.name, "config": asdict(m.config)} for lab, m in s.methods
            },
            "attacks": {k: asdict(v) for k, v in s.attacks.items()},
            "judge": {**asdict(s.judge), **self.judge_info},
            "base_models": self.base_info,
            "eval": asdict(s.eval),
            "versions": {**versions(), "diffusers": diffusers.__version__},
            "about": ABOUT,
        }


def run_diffusion(spec: dict, progress: Callable[[str], None] | None = None) -> dict:
    """Run a ``kind: diffusion`` scenario mapping through the one runner."""
    fam = DiffusionFamily()
    return run_parsed(fam, fam.parse(spec, spec.get("name", "diffusion"), None), progress)
