"""The ``kind: vlm`` benchmark family: forgetting a visual concept from one image (SIU),
evaluated as MMUBench defines it.

A scenario mapping::

    name: vlm-siu
    kind: vlm
    model: {name: smollm2, patch: 8, vision_hidden: 128, vision_layers: 3}   # or tiny
    data: {concepts: 20, images: 12, train_images: 8, size: 32, seed: 0}
    recipe: {epochs: 4, batch_size: 8, lr: 1.0e-3, vision_lr: 1.0e-3, lora_rank: 16}
    forget: {concepts: 5}          # drawn per seed; one world per concept
    eval: {max_new_tokens: 12, batch_size: 16, other_images: 2}
    seeds: [1, 2]
    methods:
      - {name: siu}
      - {name: siu_no_dmkl}
      - {name: gradient_ascent, steps: 10}

The base model is taught (vision encoder and projector fully, the language model through
LoRA, merged) to name each concept from its first ``train_images`` images, with every
naming question, and to answer its facts by name. The last images of each concept are
never trained on. Per seed, ``forget.concepts`` concepts are drawn. The oracle is the
same teaching without any image of those concepts (their facts still taught); it serves
every world of the seed, so specificity is measured on the concepts no world of the seed
forgets. ``oracle_noise`` is that oracle with another seed. Every taught model is cached
by content hash: its adapter, vision encoder and projector tensors (safetensors).

Each world forgets one concept from its first training image; the forget set is that
image under every naming question, the retain set every other taught item of the
concepts the seed keeps. SIU's targets: an unseen name from the data set's list, the
description of another concept, and the concept's facts.

Metrics (percent unless stated):

- ``base_naming_acc``: the original names each concept from its held-out images (every
  row of the seed carries the original's value);
- ``efficacy``: answers on the training image, under every naming question, that do not
  name the concept (MMUBench's efficacy);
- ``generality``: the concept's held-out images on which it is **still** named (the
  issue's definition; MMUBench reports 100 minus this);
- ``specificity``: the kept concepts named right on ``other_images`` of their held-out
  images;
- ``facts_by_name_acc``: the concept's facts, asked by name, answered with their key;
- ``fluency_ppl``: the perplexity, under the original model with no image, of the
  row's answers on the held-out images, with the concept name's tokens left out;
- ``diversity``: the share of distinct tokens among those answers;
- ``mia_auc``: a loss-threshold attack, ROC-AUC of the training image's naming items
  (members) against the held-out images' (non-members). 50 means no trace. With 3
  members it has little power; its per-seed mean is what to read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.concepts import NAMING_QUESTIONS, ConceptSet, make_concepts
from ..data.core import split_request
from ..errors import UnlearnError
from ..methods.base import UnlearnContext
from ..requests import GroupRequest
from ..tasks.vlm import ImageQAData, VLMTask, lm_lora_targets
from .core import Family, World, register_family
from .scenario import check_common, parse_family_methods, scenario_block, scenario_error

__all__ = ["VLMFamily", "VLMRecipe", "teach", "naming_hit"]

_KEYS = {
    "name", "kind", "description", "model", "data", "recipe", "forget", "eval", "seeds",
    "noise_seed_offset", "methods", "targets", "device", "cache_dir", "system_prompt",
}  # fmt: skip

#: SmolLM2's token that stands for one image feature (a special token no prompt uses)
SMOLLM2_IMAGE_TOKEN = "<empty_output>"


@dataclass(frozen=True)
class ModelSpec:
    name: str = "smollm2"
    patch: int = 8
    vision_hidden: int = 128
    vision_layers: int = 3


@dataclass(frozen=True)
class DataSpec:
    concepts: int = 20
    images: int = 12
    train_images: int = 8
    size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class VLMRecipe:
    """How the base model (and the oracle) is taught."""

    epochs: int = 4
    batch_size: int = 8
    lr: float = 1e-3
    vision_lr: float = 1e-3
    lora_rank: int = 16
    lora_alpha: float = 32.0
    weight_decay: float = 0.0
    warmup_steps: int = 10
    grad_clip: float = 1.0
    #: epochs of a first stage that trains the vision encoder alone, with a linear head,
    #: to tell the taught concepts apart (a pretrained encoder, as LLaVA starts from); 0: none
    vision_pretrain_epochs: int = 0
    vision_pretrain_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.vision_pretrain_epochs < 0 or not self.vision_pretrain_lr > 0:
            raise UnlearnError("recipe: vision_pretrain_epochs >= 0, vision_pretrain_lr > 0")
        if self.epochs < 1 or self.batch_size < 1 or self.lora_rank < 1:
            raise UnlearnError("recipe: epochs, batch_size and lora_rank must be >= 1")
        if not (self.lr > 0 and self.vision_lr > 0 and self.lora_alpha > 0):
            raise UnlearnError("recipe: lr, vision_lr and lora_alpha must be > 0")


@dataclass(frozen=True)
class EvalSpec:
    max_new_tokens: int = 12
    batch_size: int = 16
    other_images: int = 2


@dataclass
class VLMScenario:
    name: str
    seeds: list[int]
    noise_seed_offset: int
    device: str
    model: ModelSpec
    data: DataSpec
    recipe: VLMRecipe
    n_forget: int
    eval: EvalSpec
    methods: list
    cache_dir: str | None
    system_prompt: str | None
    raw: dict = field(default_factory=dict)
    job: Any = None

    @property
    def sc(self):
        return self


def parse_vlm(raw: Any, source: str = "scenario") -> VLMScenario:
    common = check_common(raw, source)
    name = common.name
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise scenario_error(name, f"unknown key(s) {unknown} (known: {sorted(_KEYS)})")
    for key in ("forget", "methods"):
        if key not in raw:
            raise scenario_error(name, f"missing key '{key}'")
    model = scenario_block(ModelSpec, raw, "model", name)
    if model.name not in ("smollm2", "tiny"):
        raise scenario_error(name, f"model.name must be smollm2 or tiny, got {model.name!r}")
    data = scenario_block(DataSpec, raw, "data", name)
    if not 1 <= data.train_images < data.images:
        raise scenario_error(name, "data: 1 <= train_images < images (some images are held out)")
    if data.size % model.patch:
        raise scenario_error(name, f"data.size {data.size} is not a multiple of model.patch")
    forget = raw["forget"]
    n = forget.get("concepts") if isinstance(forget, dict) else None
    if not isinstance(forget, dict) or set(forget) != {"concepts"} or type(n) is not int:
        raise scenario_error(name, f"forget must be {{concepts: N}}, got {forget!r}")
    if not 1 <= n <= data.concepts - 2:
        raise scenario_error(name, f"forget.concepts must lie in [1, {data.concepts - 2}], got {n}")
    ev = scenario_block(EvalSpec, raw, "eval", name)
    if not 1 <= ev.other_images <= data.images - data.train_images:
        raise scenario_error(name, "eval.other_images must be between 1 and the held-out images")
    methods = parse_family_methods(raw, name, VLMTask, "group")
    cache = raw.get("cache_dir", ".cache/unlearn")
    if cache is not None and not isinstance(cache, str):
        raise scenario_error(name, f"cache_dir must be a path or null, got {cache!r}")
    prompt = raw.get("system_prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise scenario_error(name, "system_prompt must be a string")
    return VLMScenario(
        name=name, seeds=common.seeds, noise_seed_offset=common.noise_seed_offset,
        device=common.device, model=model, data=data,
        recipe=scenario_block(VLMRecipe, raw, "recipe", name), n_forget=n, eval=ev, methods=methods,
        cache_dir=cache, system_prompt=prompt, raw=dict(raw),
    )  # fmt: skip


def naming_hit(answer: str, name: str) -> bool:
    """Whether an answer names the concept (the name as a word, any case)."""
    import re

    return re.search(rf"\b{re.escape(name)}\b", answer, flags=re.IGNORECASE) is not None


def teaching_items(cs: ConceptSet, n_train: int, without_images: set[int]) -> ImageQAData:
    """Every naming item of the training images (but those of ``without_images``) and
    every fact asked by name."""
    items, groups = [], []
    for c in range(len(cs)):
        if c not in without_images:
            for i in range(n_train):
                for q in NAMING_QUESTIONS:
                    items.append((cs.images[c][i], q, cs.naming_answer(c)))
                    groups.append(c)
        for q, a in cs.facts[c]:
            items.append((None, q, a))
            groups.append(c)
    return ImageQAData(items, {"concept": groups}, name="teaching")


def teach(model, task: VLMTask, items: ImageQAData, recipe: VLMRecipe, seed: int):
    """Train ``model``'s vision encoder and projector fully and its language model
    through LoRA (merged), on ``items``. Returns ``(model, steps, tensors)``: the
    trained tensors (adapter, vision encoder, projector) for :func:`apply_taught`."""
    from peft import get_peft_model_state_dict

    from ..tasks.causal_lm import lora_wrap
    from ..training import index_stream, optimize

    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    if recipe.vision_pretrain_epochs > 0:
        pretrain_vision(model, items, recipe, seed)
    work = lora_wrap(model, recipe.lora_rank, recipe.lora_alpha, lm_lora_targets(model))
    inner = work.get_base_model().model
    vision = list(inner.vision_tower.parameters()) + list(inner.multi_modal_projector.parameters())
    for p in vision:
        p.requires_grad_(True)
    lora = [p for n, p in work.named_parameters() if p.requires_grad and "lora_" in n]
    opt = torch.optim.AdamW(
        [{"params": lora, "lr": recipe.lr}, {"params": vision, "lr": recipe.vision_lr}],
        weight_decay=recipe.weight_decay,
    )
    stream = index_stream(len(items), recipe.batch_size, gen)
    steps = recipe.epochs * -(-len(items) // recipe.batch_size)

    def loss(t: int) -> torch.Tensor:
        batch = [items[int(i)] for i in next(stream)]
        tot, n = task.sequence_logprob(work, task.collate(batch))
        return -(tot.sum() / n.sum())

    done = optimize(
        work, opt, steps, loss, warmup_steps=recipe.warmup_steps, grad_clip=recipe.grad_clip
    )
    tensors = {f"lora.{k}": v.detach().clone() for k, v in get_peft_model_state_dict(work).items()}
    tensors |= {
        f"vision.{k}": v.detach().clone() for k, v in inner.vision_tower.state_dict().items()
    }
    tensors |= {
        f"projector.{k}": v.detach().clone()
        for k, v in inner.multi_modal_projector.state_dict().items()
    }
    out = work.merge_and_unload()
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval(), done, tensors


def pretrain_vision(model, items: ImageQAData, recipe: VLMRecipe, seed: int) -> float:
    """Train ``model``'s vision encoder (in place) with a temporary linear head to name the
    concept of each image of ``items`` (group ``concept``), on the features LLaVA takes
    (``vision_feature_layer``, patch tokens averaged). Returns the last epoch's accuracy."""
    import torch.nn.functional as F

    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    labels_all = items.group_labels("concept")
    pairs = [
        (img, int(lab))
        for (img, _, _), lab in zip(items, labels_all, strict=True)
        if img is not None
    ]
    x = torch.stack([p[0] for p in pairs]).to(next(tower.parameters()).device)
    y = torch.tensor([p[1] for p in pairs], device=x.device)
    head = torch.nn.Linear(tower.config.hidden_size, int(y.max()) + 1).to(x.device)
    opt = torch.optim.AdamW(
        list(tower.parameters()) + list(head.parameters()), lr=recipe.vision_pretrain_lr
    )
    gen = torch.Generator().manual_seed(int(seed) + 11)
    tower.train()
    acc = 0.0
    for _ in range(recipe.vision_pretrain_epochs):
        order = torch.randperm(len(x), generator=gen)
        hits = 0
        for s in range(0, len(x), 32):
            idx = order[s : s + 32].to(x.device)
            hs = tower(x[idx], output_hidden_states=True).hidden_states[layer]
            logits = head(hs[:, 1:].mean(1))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == y[idx]).sum())
        acc = 100.0 * hits / len(x)
    tower.eval()
    return acc


def apply_taught(model, tensors: dict, recipe: VLMRecipe):
    """``model`` (a fresh build of the same architecture) with taught tensors put back."""
    from peft import set_peft_model_state_dict

    from ..tasks.causal_lm import lora_wrap

    inner = model.model
    inner.vision_tower.load_state_dict(
        {k[7:]: v for k, v in tensors.items() if k.startswith("vision.")}, strict=True
    )
    inner.multi_modal_projector.load_state_dict(
        {k[10:]: v for k, v in tensors.items() if k.startswith("projector.")}, strict=True
    )
    work = lora_wrap(model, recipe.lora_rank, recipe.lora_alpha, lm_lora_targets(model))
    res = set_peft_model_state_dict(
        work, {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")}
    )
    if res.unexpected_keys:
        raise UnlearnError(f"cached adapter holds unknown tensors: {res.unexpected_keys[:3]}")
    out = work.merge_and_unload()
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


@register_family
class VLMFamily(Family):
    """The ``kind: vlm`` plugin (module docstring)."""

    kind = "vlm"
    task_family = "vlm"
    keep_models = False
    parallel_seeds = True

    def parse(self, raw, source, base_dir):
        return parse_vlm(raw, source)

    def ticks(self, sc):
        return len(sc.seeds) * sc.n_forget * (3 + len(sc.methods))

    # -- models --------------------------------------------------------------------
    def setup(self, sc, say):
        d = sc.data
        self.cs = make_concepts(d.concepts, d.images, d.size, d.seed)
        if sc.model.name == "smollm2":
            from ..models.hf import load_smollm2

            self.lm, self.tok = load_smollm2(sc.cache_dir)
            self.image_token = self.tok.convert_tokens_to_ids(SMOLLM2_IMAGE_TOKEN)
        else:
            from transformers import LlamaConfig, LlamaForCausalLM

            from ..models.hf import tiny_tokenizer

            texts = [self.cs.naming_answer(c) for c in range(len(self.cs))]
            texts += list(NAMING_QUESTIONS) + [q + " " + a for f in self.cs.facts for q, a in f]
            texts += self.cs.unseen_names + [self.cs.description(c) for c in range(len(self.cs))]
            self.tok = tiny_tokenizer(texts * 2)
            self.image_token = len(self.tok)  # one id past the text vocabulary
            cfg = LlamaConfig(
                vocab_size=len(self.tok) + 1,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
                tie_word_embeddings=True,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.lm = LlamaForCausalLM(cfg).eval()
        n_tokens = (d.size // sc.model.patch) ** 2
        self.task = VLMTask(
            self.tok, self.image_token, n_tokens, sc.device, system_prompt=sc.system_prompt
        )
        self.info = {"image_tokens": n_tokens, "concept_names": list(self.cs.names)}
        self.sc_eval = sc.eval
        for _, method in sc.methods:
            method.bind(self.task)

    def _fresh(self, sc, seed: int):
        from ..tasks.vlm import llava_on

        m = sc.model
        return llava_on(
            self.lm,
            self.image_token,
            sc.data.size,
            m.patch,
            m.vision_hidden,
            m.vision_layers,
            seed=seed,
        )

    def taught(self, sc, without: set[int], seed: int):
        """The model taught without the images of ``without`` (cached by content hash)."""
        from .tensorcache import cached_tensors

        key = {
            "model": asdict(sc.model), "data": asdict(sc.data), "recipe": asdict(sc.recipe),
            "without": sorted(without), "seed": int(seed), "prompt": sc.system_prompt,
            "torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads(),
            "device": self.task.device.type,
        }  # fmt: skip

        def build():
            items = teaching_items(self.cs, sc.data.train_images, without)
            fresh = self._fresh(sc, seed).to(self.task.device)
            model, _, tensors = teach(fresh, self.task, items, sc.recipe, seed)
            return model, tensors

        def restore(tensors):
            return apply_taught(self._fresh(sc, seed), tensors, sc.recipe).to(self.task.device)

        model, seconds, _ = cached_tensors(sc.cache_dir, "vlm", key, build, restore)
        return model, seconds

    # -- worlds --------------------------------------------------------------------
    def worlds(self, sc, seed):
        cs, d = self.cs, sc.data
        rng = np.random.default_rng([seed, 17])
        forgotten = sorted(rng.choice(len(cs), size=sc.n_forget, replace=False).tolist())
        kept = [c for c in range(len(cs)) if c not in forgotten]
        original, o_sec = self.taught(sc, set(), seed)
        oracle, r_sec = self.taught(sc, set(forgotten), seed)
        noise, n_sec = self.taught(sc, set(forgotten), seed + sc.noise_seed_offset)
        held = list(range(d.train_images, d.images))
        base_acc = self._naming_acc(original, list(range(len(cs))), held)
        self.info[f"forgotten_seed{seed}"] = [cs.names[c] for c in forgotten]
        self.info[f"base_naming_acc_seed{seed}"] = base_acc
        teach_items = teaching_items(cs, d.train_images, set())
        groups = teach_items.group_labels("concept")
        for k, c in enumerate(forgotten):
            image = cs.images[c][0]
            forget = [(image, q, cs.naming_answer(c)) for q in NAMING_QUESTIONS]
            retain = [teach_items[i] for i in range(len(teach_items)) if groups[i] in kept]
            data = ImageQAData(
                forget + retain, {"concept": ["forget"] * len(forget) + ["keep"] * len(retain)}
            )
            request = GroupRequest(groups=("forget",), by="concept")
            unseen = cs.unseen_names[(seed * 7 + k) % len(cs.unseen_names)]
            other = kept[(seed + k) % len(kept)]
            from ..methods.vlm.siu import SIUTargets

            targets = SIUTargets(cs.names[c], unseen, cs.description(other), tuple(cs.facts[c]))
            ctx = UnlearnContext(
                task=self.task,
                split=split_request(data, request),
                request=request,
                original=original,
                seed=seed,
                alternatives={"siu": targets},
            )
            yield World(
                seed=seed, ctx=ctx, original_cost={"seconds": o_sec},
                tag=f"@{cs.names[c]}",
                state={"oracle": (oracle, r_sec), "noise": (noise, n_sec), "concept": c,
                       "kept": kept, "held": held},
                fields={"concept": cs.names[c]},
                metrics={"base_naming_acc": base_acc},
            )  # fmt: skip

    def _answers(self, model, items) -> list[str]:
        ev = self.sc_eval
        return self.task.generate(
            model,
            [q for _, q in items],
            ev.max_new_tokens,
            ev.batch_size,
            images=[im for im, _ in items],
        )

    def _naming_acc(self, model, concepts, held) -> float:
        items = [(self.cs.images[c][i], NAMING_QUESTIONS[0]) for c in concepts for i in held]
        truth = [c for c in concepts for _ in held]
        ans = self._answers(model, items)
        return 100.0 * float(
            np.mean([naming_hit(a, self.cs.names[c]) for a, c in zip(ans, truth, strict=True)])
        )

    def score(self, sc, world, model, row):
        from ..metrics.classification import loss_threshold_auc

        cs, c, held = self.cs, world.state["concept"], world.state["held"]
        name = cs.names[c]
        train_img = cs.images[c][0]
        own = self._answers(model, [(train_img, q) for q in NAMING_QUESTIONS])
        gen_items = [(cs.images[c][i], NAMING_QUESTIONS[0]) for i in held]
        general = self._answers(model, gen_items)
        kept = world.state["kept"]
        spec = self._naming_acc(model, kept, held[: sc.eval.other_images])
        facts = self.task.generate(
            model, [q for q, _ in cs.facts[c]], sc.eval.max_new_tokens, sc.eval.batch_size
        )
        keys = cs.fact_keys[c]
        out = {
            "efficacy": 100.0 * float(np.mean([not naming_hit(a, name) for a in own])),
            "generality": 100.0 * float(np.mean([naming_hit(a, name) for a in general])),
            "specificity": spec,
            "facts_by_name_acc": 100.0
            * float(np.mean([k.lower() in a.lower() for a, k in zip(facts, keys, strict=True)])),
        }
        out.update(self._fluency(world.ctx.original, general, name))
        members = ImageQAData([(train_img, q, cs.naming_answer(c)) for q in NAMING_QUESTIONS])
        non = ImageQAData(
            [(cs.images[c][i], q, cs.naming_answer(c)) for i in held for q in NAMING_QUESTIONS]
        )
        out["mia_auc"] = loss_threshold_auc(
            -self.task.membership_scores(model, members), -self.task.membership_scores(model, non)
        )
        return out

    def _fluency(self, reference, answers: list[str], name: str) -> dict:
        """Perplexity under the original (no image) of the answers, name tokens left out,
        and the share of distinct tokens among them."""
        tok = self.task.tokenizer
        name_ids = set()
        for v in (name, " " + name, name.capitalize(), " " + name.capitalize()):
            name_ids.update(tok(v, add_special_tokens=False)["input_ids"])
        texts = [a for a in answers if len(tok(a, add_special_tokens=False)["input_ids"]) >= 2]
        all_ids = [t for a in answers for t in tok(a, add_special_tokens=False)["input_ids"]]
        out = {"diversity": 100.0 * len(set(all_ids)) / len(all_ids) if all_ids else 0.0}
        if not texts:  # nothing to score: the metric is missing, not zero
            return out
        lps = self.task.text_logprobs(reference, texts)
        kept = []
        for a, lp in zip(texts, lps, strict=True):
            ids = tok(a, add_special_tokens=False)["input_ids"][1:][: len(lp)]
            kept += [v for v, t in zip(lp, ids, strict=True) if t not in name_ids]
        if kept:
            out["fluency_ppl"] = float(np.exp(-np.mean(kept)))
        return out

    def tick_text(self, row, m):
        return f": generality {m['generality']:.0f}, specificity {m['specificity']:.0f}"

    def seed_info(self):
        return dict(self.info)

    def merge_seed_info(self, info):
        self.info.update(info)

    def document(self, sc):
        return {
            "scenario": dict(sc.raw),
            "scenario_name": sc.name,
            "kind": "vlm",
            "request": f"forget {sc.n_forget} of the {sc.data.concepts} concepts (drawn per "
            "seed), one at a time, from one image each",
            "model_spec": {**asdict(sc.model), "data": asdict(sc.data)},
            "train_recipe": asdict(sc.recipe),
            "methods": {
                lab: {"method": m.name, "config": asdict(m.config)} for lab, m in sc.methods
            },
            "eval": asdict(sc.eval),
            "info": self.info,
            "about": __doc__.split("Metrics", 1)[1].strip(),
        }
