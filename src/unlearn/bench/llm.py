"""LLM unlearning benchmarks (``kind: llm``): fictitious facts (TOFU-like) and real facts.

A scenario mapping::

    name: smollm2-fictitious-forget10
    kind: llm
    benchmark: fictitious            # or real_facts
    model: {name: smollm2}           # or {name: tiny, hidden: 64, layers: 2} (tests)
    data: {people: 20, per_person: 4, holdout_people: 2, seed: 0}
    forget: {fraction: 0.1, probe: 0.5}  # of the people (real_facts: of the known facts);
                                     # probe: share of the forget items that only stop runs
    recipe: {epochs: 5, lr: 1.0e-3, batch_size: 8, lora_rank: 16}
    eval: {retain_items: 16, max_new_tokens: 24, blocks: 6}
    seeds: [0]
    methods:
      - {name: npo, steps: 20, lr: 1.0e-5}
      - {label: lune-full, name: lune, lora_rank: 0, lr: 1.0e-5}
    attacks:
      relearn: {splits: 5, folds: 2, lrs: [1.0e-5, 1.0e-4], epochs: 3}

``attacks: relearn`` runs the relearning attack of :mod:`unlearn.attacks.relearn` on
the oracle and every method (or the ``rows`` it names): ``relearn_before_acc``,
``relearn_answer_acc``, ``relearn_recovery`` and the benign variant's
``relearn_benign_answer_acc`` / ``relearn_benign_recovery``, with the per-fold and
per-rate values in each row's ``relearn`` entry. Every row but the original also
carries ``weight_change``: the relative change ||W - W_original|| / ||W_original|| of
each block of ``eval.blocks`` contiguous decoder layers (which layers unlearning
touched: the "cover layer" picture of KUnBR). ``eval.paraphrased_questions: false``
asks the forget set's answer-accuracy questions only as written, and ``eval.verbmem:
false`` leaves out MUSE VerbMem; each halves one of the evaluation's generation passes
(about half of a row's scoring time on SmolLM2 is generation).

**fictitious**: the base model is fine-tuned on every item of the training
people (``original``); the oracle (``retrain``) is the same recipe on the
retained people only, ``oracle_noise`` the oracle with another seed. Every row
is scored on the forget items, a seeded subset of the retain items, the
world-knowledge items and (membership attacks) items of ``holdout_people`` the
model never saw. **real_facts**: the base model itself is the original; of the
80 facts of :func:`unlearn.data.real_facts.real_facts`, those it answers right
(question and paraphrased question, greedy) are split into forget and retain,
and the 25 world-knowledge items measure utility; there is no oracle, since the
model cannot be pretrained again without them.

Metrics (TOFU, Maini et al. 2024; MUSE, Shi et al. 2024): answer probability,
ROUGE-L recall of greedy answers, truth ratio, forget quality (KS-test p-value
of forget truth ratios against the oracle's), model utility (harmonic mean of
probability, ROUGE and truth-ratio score on retain and world items), greedy
answer accuracy (key contained; paraphrased questions included for the forget
set), verbatim memorisation (ROUGE-L recall of the continuation of a half
answer), membership AUCs forget vs holdout (LOSS, zlib, Min-K%, Min-K%++) and
PrivLeak (Min-K% AUC relative to the oracle's), and the perplexity of held-out
general text (fluency).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..attacks.relearn import RelearnConfig, held_out_accuracy, make_folds, relearn, relearn_metrics
from ..data.core import split_request
from ..data.fictitious import QAItem, make_fictitious, world_knowledge
from ..data.real_facts import real_facts
from ..errors import ScenarioError, UnlearnError
from ..methods.base import UnlearnContext, get_method
from ..methods.llm.kunbr import layer_blocks
from ..metrics import llm as M
from ..requests import GroupRequest, SampleRequest
from ..tasks.causal_lm import REFUSALS, CausalLMTask, LMRecipe, PairData, truncate_layers
from ..validate import dataclass_from_mapping
from .core import Family, World, register_family, run_parsed, versions
from .scenario import check_common

__all__ = ["run_llm", "parse_llm", "LLMScenario", "GENERAL_TEXT", "ABOUT_LLM"]

#: Held-out general prose (written for this project) for the fluency check.
GENERAL_TEXT = (
    "The morning train was late again, so most of the passengers stood on the platform "
    "reading the timetable and checking their phones.",
    "A good soup starts with onions cooked slowly in butter until they turn soft and golden.",
    "When the river flooded last spring, the town built a new wall of stone along the bank.",
    "Children often learn to read faster when someone reads aloud to them every evening.",
    "The museum opened a new room for old maps, and visitors can now see how the coast "
    "changed over three hundred years.",
    "Rain fell all afternoon, and the football match was moved to the following Sunday.",
    "To plant a tree, dig a hole twice as wide as its roots and water it well afterwards.",
    "The library stays open late on Thursdays so that students can work after their classes.",
    "Bicycles are a cheap and healthy way to travel short distances in a busy city.",
    "Her grandfather kept bees behind the house and sold the honey at the weekly market.",
    "The committee met on Monday to discuss the budget for the next school year.",
    "Fresh bread smells wonderful, but it goes stale quickly if it is left uncovered.",
)

ABOUT_LLM = """Reference rows: `original` is the model fine-tuned on every fictitious
person (real facts: the pretrained model itself), `retrain` the oracle fine-tuned
without the forgotten people with the same seed, and `oracle_noise` the oracle with
another seed, scored against it (the noise floor). Forget quality is the KS-test
p-value of the forget truth ratios against the oracle's (higher is closer; TOFU's
usual bar is 0.05); model utility is the harmonic mean of answer probability,
ROUGE-L recall and truth-ratio score on the retain and world-knowledge items.
Answer accuracy counts greedy answers containing the fact; for the forget set the
paraphrased questions are asked too. PrivLeak is MUSE's relative Min-K% AUC (forget
vs never-seen people) against the oracle's, in MUSE's sign: near 0 is right,
negative means the forget set still looks like training data. `train_state_mb` is gradients plus
AdamW moments of the trained parameters; `peak_mem_mb` the growth of the process's
resident memory above its baseline when the run started (`baseline_mem_mb`).
Seconds exclude evaluation."""

#: keys of a method entry read by the bench itself (the rest configure the method);
#: ``proxy_layers``: R2F's proxy is the base model cut to its first N decoder layers
_METHOD_KEYS = {"label", "name", "proxy_layers"}


@dataclass
class LLMScenario:
    name: str
    benchmark: str
    model: dict
    data: dict
    fraction: float
    recipe: LMRecipe
    eval: dict
    seeds: list[int]
    methods: list[tuple[str, str, dict]]
    description: str = ""
    device: str = "cpu"
    noise_seed_offset: int = 1000
    cache_dir: str | None = ".cache/unlearn"
    system_prompt: str | None = None
    probe: float | None = None
    relearn: RelearnConfig | None = None
    proxy_layers: dict = field(default_factory=dict)  # label -> layers of a truncated proxy
    built: list = field(default_factory=list)  # (label, Method) of every entry
    raw: dict = field(default_factory=dict)


_TOP = {
    "name",
    "kind",
    "benchmark",
    "model",
    "data",
    "forget",
    "recipe",
    "eval",
    "seeds",
    "methods",
    "description",
    "device",
    "noise_seed_offset",
    "cache_dir",
    "system_prompt",
    "targets",
    "attacks",
}
_EVAL = {
    "retain_items": 16,
    "max_new_tokens": 24,
    "batch_size": 16,
    "perturbed": 3,
    "mink": 0.2,
    "blocks": 6,
    # the forget set's answer accuracy asks its paraphrased questions too
    "paraphrased_questions": True,
    # MUSE VerbMem (a continuation of every forget answer's first half)
    "verbmem": True,
}


def parse_llm(raw: dict, source: str = "scenario") -> LLMScenario:
    """Validate a ``kind: llm`` scenario mapping; every error names the key."""

    def fail(msg: str) -> ScenarioError:
        return ScenarioError(f"{source}: {msg}")

    common = check_common(raw, source, default_name=str(raw.get("name", "llm")))
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise fail(f"unknown key(s) {unknown} (known: {sorted(_TOP)})")
    for key in ("name", "model", "methods", "seeds"):
        if key not in raw:
            raise fail(f"missing key {key!r}")
    bench = raw.get("benchmark", "fictitious")
    if bench not in ("fictitious", "real_facts"):
        raise fail(f"benchmark must be 'fictitious' or 'real_facts', got {bench!r}")
    for key in ("model", "data", "recipe", "eval"):
        if key in raw and not isinstance(raw[key], dict):
            raise fail(f"{key} must be a mapping, got {raw[key]!r}")
    for key in ("cache_dir", "system_prompt"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise fail(f"{key} must be a string or null, got {raw[key]!r}")
    model = dict(raw["model"])
    if model.get("name") not in ("smollm2", "tiny"):
        raise fail(f"model name must be 'smollm2' or 'tiny', got {model.get('name')!r}")
    data = dict(raw.get("data", {}))
    known_data = {"people", "per_person", "holdout_people", "seed"}
    if set(data) - known_data:
        raise fail(f"unknown data key(s) {sorted(set(data) - known_data)}")
    forget = raw.get("forget", {"fraction": 0.1})
    if (
        not isinstance(forget, dict)
        or "fraction" not in forget
        or set(forget)
        - {
            "fraction",
            "probe",
        }
    ):
        raise fail("forget takes 'fraction' and optionally 'probe'")
    frac = forget["fraction"]
    if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac < 1:
        raise fail(f"forget fraction must be in (0, 1), got {frac!r}")
    probe = forget.get("probe")
    if probe is not None and (
        isinstance(probe, bool) or not isinstance(probe, int | float) or not 0 < probe < 1
    ):
        raise fail(f"forget probe must be a fraction in (0, 1), got {probe!r}")
    try:
        recipe = LMRecipe(**raw.get("recipe", {}))
    except TypeError as exc:
        raise fail(f"recipe: {exc}") from None
    ev = dict(raw.get("eval", {}))
    if set(ev) - set(_EVAL):
        raise fail(f"unknown eval key(s) {sorted(set(ev) - set(_EVAL))}")
    ev = {**_EVAL, **ev}
    for key in ("retain_items", "max_new_tokens", "batch_size", "perturbed", "blocks"):
        if type(ev[key]) is not int or ev[key] < 1:
            raise fail(f"eval {key} must be a positive integer, got {ev[key]!r}")
    for key in ("paraphrased_questions", "verbmem"):
        if not isinstance(ev[key], bool):
            raise fail(f"eval {key} must be true or false, got {ev[key]!r}")
    if (
        isinstance(ev["mink"], bool)
        or not isinstance(ev["mink"], int | float)
        or not (0 < ev["mink"] <= 1)
    ):
        raise fail(f"eval mink must be a fraction in (0, 1], got {ev['mink']!r}")
    extra = set(model) - (
        {"name", "hidden", "layers", "vocab_size"} if model["name"] == "tiny" else {"name"}
    )
    if extra:
        raise fail(f"unknown model key(s) {sorted(extra)} for model {model['name']!r}")
    for key in ("hidden", "layers", "vocab_size"):
        v = model.get(key)
        if v is not None and (type(v) is not int or not 1 <= v <= 4096):
            raise fail(f"model {key} must be an integer in [1, 4096], got {v!r}")
    for key, v in dict(raw.get("data", {})).items():
        if type(v) is not int or not 0 <= v <= 10_000:
            raise fail(f"data {key} must be an integer in [0, 10000], got {v!r}")
    seeds = common.seeds
    methods = []
    labels = set()
    if not isinstance(raw["methods"], list):
        raise fail(f"methods must be a list, got {raw['methods']!r}")
    built = []
    proxy_layers: dict[str, int] = {}
    for i, entry in enumerate(raw["methods"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise fail(f"methods[{i}] must be a mapping with a 'name'")
        name = entry["name"]
        label = entry.get("label", name)
        if not isinstance(name, str) or not isinstance(label, str):
            raise fail(f"methods[{i}]: name and label must be strings")
        if name == "retrain":
            raise fail(
                f"methods[{i}]: retrain is the oracle, a reference row of every fictitious "
                "scenario (it is not a method to list)"
            )
        if label in labels or label in ("original", "retrain", "oracle_noise"):
            raise fail(f"method label {label!r} is used twice or is reserved")
        labels.add(label)
        config = {k: v for k, v in entry.items() if k not in _METHOD_KEYS}
        if "proxy_layers" in entry:
            n = entry["proxy_layers"]
            if name != "r2f" or bench != "fictitious":
                raise fail(
                    f"methods[{i}]: proxy_layers (a truncated copy of the base model as the "
                    "proxy) is an option of r2f on the fictitious benchmark"
                )
            if type(n) is not int or n < 1:
                raise fail(f"methods[{i}]: proxy_layers must be a positive integer, got {n!r}")
            proxy_layers[label] = n
        try:
            method = get_method(name, config, family="causal_lm")  # unknown name or option
        except UnlearnError as exc:
            raise fail(f"methods[{i}]: {exc}") from None
        if getattr(method.config, "target_forget_acc", None) is not None and probe is None:
            raise fail(
                f"method {label!r} stops on the forget probe (target_forget_acc): declare the "
                "probe split, forget: {fraction: ..., probe: ...}, so that the stop never reads "
                "the forget items that are scored"
            )
        if "causal_lm" not in method.families():
            raise fail(f"method {name!r} is not a language-model method")
        methods.append((label, name, config))
        built.append((label, method))
    if not methods:
        raise fail("methods must list at least one method")
    attacks = raw.get("attacks")
    relearn_cfg = None
    if attacks is not None:
        if not isinstance(attacks, dict) or set(attacks) - {"relearn"}:
            raise fail("attacks takes one key, relearn (a mapping of its settings)")
        try:  # lists (lrs, rows) become tuples in the config's own field check
            relearn_cfg = dataclass_from_mapping(
                RelearnConfig, attacks.get("relearn"), "attacks relearn"
            )
        except UnlearnError as exc:
            raise fail(str(exc)) from None
        unknown_rows = sorted(set(relearn_cfg.rows) - labels - {"retrain", "oracle_noise"})
        if unknown_rows:
            raise fail(
                f"attacks relearn rows {unknown_rows} are not rows of this scenario (rows: "
                f"retrain, oracle_noise, {', '.join(sorted(labels))})"
            )
    return LLMScenario(
        name=str(raw["name"]),
        benchmark=bench,
        model=model,
        data=data,
        fraction=float(frac),
        probe=None if probe is None else float(probe),
        relearn=relearn_cfg,
        proxy_layers=proxy_layers,
        built=built,
        recipe=recipe,
        eval=ev,
        seeds=list(seeds),
        methods=methods,
        description=common.description,
        device=common.device,
        noise_seed_offset=common.noise_seed_offset,
        cache_dir=raw.get("cache_dir", ".cache/unlearn"),
        system_prompt=raw.get("system_prompt"),
        raw=dict(raw),
    )


# ---------------------------------------------------------------------- models
def load_base(spec: dict, texts: list[str], cache_dir: str | None, device: str = "cpu"):
    """The pretrained base model, its tokenizer and what identifies them (for cache keys)."""
    from ..models.hf import load_smollm2, smollm2_identity, tiny_llama, tiny_tokenizer

    if spec["name"] == "smollm2":
        model, tok = load_smollm2(cache_dir=cache_dir, device=device)
        return model, tok, {"smollm2": smollm2_identity()}
    opts = {k: v for k, v in spec.items() if k != "name"}
    tok = tiny_tokenizer(texts, vocab_size=int(opts.pop("vocab_size", 400)))
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    return tiny_llama(tok, **opts).to(device), tok, {"tiny": spec, "texts": digest}


def _item_texts(items: list[QAItem]) -> list[str]:
    out = []
    for it in items:
        out += [
            it.question,
            it.paraphrased_question,
            it.answer,
            it.paraphrased_answer,
            *it.perturbed_answers,
        ]
    return out


def replacement_answers(forget: list[QAItem], pool: list[QAItem]) -> list[tuple[str, str]]:
    """LUNE's "replace" negatives: each forget answer with its key swapped for the key of
    an item of the same kind in ``pool`` (a different value of the same attribute); where
    ``pool`` has no such item, a refusal suppresses the fact instead."""
    out = []
    for i, it in enumerate(forget):
        same = [p.key for p in pool if p.kind == it.kind and p.key.lower() != it.key.lower()]
        if not same:
            out.append((it.question, REFUSALS[(i * 7 + 3) % len(REFUSALS)]))
            continue
        other = same[(i * 7 + len(it.question)) % len(same)]
        new = re.sub(re.escape(it.key), other.replace("\\", r"\\"), it.answer, flags=re.IGNORECASE)
        out.append((it.question, new))
    return out


class LMEvaluator:
    """Scores one model on the forget / retain / world / holdout items of a seed."""

    def __init__(
        self,
        task: CausalLMTask,
        forget: list[QAItem],
        retain: list[QAItem],
        world: list[QAItem],
        holdout: list[QAItem],
        ev: dict,
    ):
        self.task, self.ev = task, ev
        self.sets = {"forget": forget, "retain": retain, "world": world}
        self.holdout = holdout
        self.oracle_tr: np.ndarray | None = None
        self.oracle_auc: float | None = None

    def _tr(self, model, items: list[QAItem]) -> tuple[np.ndarray, np.ndarray]:
        """Truth ratios of ``items``, and the perturbed answers' mean log-probs (n, k)."""
        k = int(self.ev["perturbed"])
        para = [(it.question, it.paraphrased_answer) for it in items]
        pert = [(it.question, a) for it in items for a in it.perturbed_answers[:k]]
        bs = int(self.ev["batch_size"])
        p = self.task.score(model, para, bs).means
        q = self.task.score(model, pert, bs).means
        counts = [min(k, len(it.perturbed_answers)) for it in items]
        if len(set(counts)) != 1:
            raise UnlearnError("every item needs the same number of perturbed answers")
        q = q.reshape(len(items), counts[0])
        return M.truth_ratio(p, q), q

    def score(self, model) -> dict:
        t, ev = self.task, self.ev
        bs, new = int(ev["batch_size"]), int(ev["max_new_tokens"])
        out: dict[str, float] = {}
        parts: dict[str, float] = {}
        forget_scores = None
        for name, items in self.sets.items():
            if not items:
                continue
            # the forget pairs are scored once, with the Min-K%++ moments the attacks need
            moments = name == "forget" and bool(self.holdout)
            sc = t.score(model, [(it.question, it.answer) for it in items], bs, moments=moments)
            if moments:
                forget_scores = sc
            tr, pert = self._tr(model, items)
            if name == "world":  # TOFU normalises over the answer options on this set
                prob = float(M.normalised_answer_probability(sc.means, pert).mean())
            else:
                prob = float(M.answer_probability(sc.sums, sc.counts).mean())
            qs = [it.question for it in items]
            both = name == "forget" and bool(ev.get("paraphrased_questions", True))
            if both:
                qs = qs + [it.paraphrased_question for it in items]
            gen = t.generate(model, qs, new, bs)
            keys = [it.key for it in items] * (2 if both else 1)
            refs = [it.answer for it in items] * (2 if both else 1)
            rouge = M.mean_rouge_l_recall(refs[: len(items)], gen[: len(items)])
            out[f"{name}_prob"] = prob
            out[f"{name}_rouge"] = rouge
            out[f"{name}_answer_acc"] = M.answer_accuracy(gen, keys)
            out[f"{name}_truth_ratio"] = M.truth_ratio_score(tr, forget=name == "forget")
            if name == "forget":
                if self.oracle_tr is not None:
                    out["forget_quality"] = M.forget_quality(tr, self.oracle_tr)
                self._last_tr = tr
            else:
                parts[f"{name}_prob"] = prob
                parts[f"{name}_rouge"] = rouge
                parts[f"{name}_truth_ratio"] = out[f"{name}_truth_ratio"]
        if parts:
            out["model_utility"] = M.model_utility(parts)
        forget = self.sets["forget"]
        # verbatim memorisation: continue the first half of each forget answer
        # (answers of one word have no second half and are left out)
        long = [it for it in forget if len(it.answer.split()) >= 2]
        if long and ev.get("verbmem", True):
            halves = [it.answer.split() for it in long]
            cut = [len(w) // 2 for w in halves]
            prefixes = [" ".join(w[:c]) for w, c in zip(halves, cut, strict=True)]
            rests = [" ".join(w[c:]) for w, c in zip(halves, cut, strict=True)]
            cont = t.generate(model, [it.question for it in long], new, bs, prefixes=prefixes)
            out["verbmem_forget"] = M.mean_rouge_l_recall(rests, cont)
        if forget_scores is not None:  # forget and holdout items both present
            pairs_f = [(it.question, it.answer) for it in forget]
            pairs_h = [(it.question, it.answer) for it in self.holdout]
            sf = forget_scores
            sh = t.score(model, pairs_h, bs, moments=True)
            k = float(ev["mink"])
            out["loss_auc"] = M.mia_auc(M.loss_scores(sf.logprobs), M.loss_scores(sh.logprobs))
            out["zlib_auc"] = M.mia_auc(
                M.zlib_scores(sf.logprobs, [a for _, a in pairs_f]),
                M.zlib_scores(sh.logprobs, [a for _, a in pairs_h]),
            )
            out["mink_auc"] = M.mia_auc(
                M.min_k_scores(sf.logprobs, k), M.min_k_scores(sh.logprobs, k)
            )
            out["minkpp_auc"] = M.mia_auc(
                M.min_k_plus_plus_scores(sf.logprobs, sf.mu, sf.sigma, k),
                M.min_k_plus_plus_scores(sh.logprobs, sh.mu, sh.sigma, k),
            )
            if self.oracle_auc is not None:
                out["privleak"] = M.privleak(out["mink_auc"], self.oracle_auc)
        out["fluency_ppl"] = M.perplexity(t.text_logprobs(model, list(GENERAL_TEXT)))
        return out

    def set_oracle(self, metrics: dict) -> None:
        self.oracle_tr = self._last_tr
        self.oracle_auc = metrics.get("mink_auc")


def _cache_key(base_id: dict, task: CausalLMTask, pairs: list, recipe: LMRecipe, seed: int) -> list:
    import peft
    import transformers

    return [
        base_id,
        task.tokenizer.chat_template,
        task.system_prompt,
        pairs,
        asdict(recipe),
        seed,
        transformers.__version__,
        peft.__version__,
    ]


def finetuned(
    task: CausalLMTask,
    base,
    base_id: dict,
    pairs: list,
    recipe: LMRecipe,
    seed: int,
    cache_dir: str | None,
) -> tuple[torch.nn.Module, float, bool]:
    """``base`` fine-tuned on ``pairs``: ``(model, seconds, from_cache)``. With a LoRA recipe
    the adapter tensors are cached (:mod:`unlearn.bench.tensorcache`) and merged again on
    later runs; the key covers the base model, tokenizer template, system prompt, pairs,
    recipe, seed and library versions."""
    from .tensorcache import cached_tensors

    def build():
        state: dict = {}
        model, _ = task.finetune(copy.deepcopy(base), pairs, recipe, seed, adapter_out=state)
        return model, state

    return cached_tensors(
        cache_dir if recipe.lora_rank > 0 else None,
        "lm-adapter",
        _cache_key(base_id, task, pairs, recipe, seed),
        build,
        lambda tensors: task.apply_adapter(copy.deepcopy(base), recipe, tensors),
    )


def known_facts(task: CausalLMTask, model, items: list[QAItem], ev: dict) -> list[QAItem]:
    """The items whose question and paraphrased question the model answers right (greedy)."""
    qs = [it.question for it in items] + [it.paraphrased_question for it in items]
    gen = task.generate(model, qs, int(ev["max_new_tokens"]), int(ev["batch_size"]))
    n = len(items)
    return [
        it
        for i, it in enumerate(items)
        if M.greedy_answer_correct(gen[i], it.key) and M.greedy_answer_correct(gen[n + i], it.key)
    ]


def probe_split(
    forget: list[QAItem], fraction: float | None, seed: int
) -> tuple[list[QAItem], list[QAItem]]:
    """``(probe, scored)``: a seeded ``fraction`` of the forget items for the early-stop
    probe (at least one, leaving at least one scored), and the rest, which the
    forget metrics are computed on. No probe: every forget item is scored."""
    if fraction is None:
        return [], list(forget)
    if len(forget) < 2:
        raise UnlearnError("a probe split needs at least two forget items")
    k = min(len(forget) - 1, max(1, int(round(fraction * len(forget)))))
    pick = set(np.random.default_rng([seed, 7919]).choice(len(forget), k, replace=False).tolist())
    return (
        [it for i, it in enumerate(forget) if i in pick],
        [it for i, it in enumerate(forget) if i not in pick],
    )


@register_family
class LLMFamily(Family):
    """The ``kind: llm`` plugin: SmolLM2 (or a tiny Llama) fine-tuned on fictitious people
    (with an oracle fine-tuned without the forgotten people), or the model's own real
    facts (no oracle: the model cannot be pretrained again)."""

    kind = "llm"
    task_family = "causal_lm"
    keep_models = False
    has_oracle = False  # only the fictitious benchmark has one: its world holds it
    parallel_seeds = True  # each worker loads the base model and fine-tunes (or reads the cache)
    resumable = True  # the relearning attack runs as each row is scored (--resume)

    def parse(self, raw, source, base_dir):
        return _LLMRun(parse_llm(raw, source))

    def row_state(self, sc, world, row):
        """The oracle's truth ratios and Min-K% AUC (the later rows' forget quality and
        PrivLeak), the original's held-out accuracy (the attack's baseline), and the row's
        weight change and attack details (attached to the row after the seed)."""
        st, ev = world.state, world.state["ev"]
        out = {
            "weight_change": st.get("weight_change", {}).get(row),
            "relearn": st.get("relearn", {}).get(row),
            "original_held_out": st.get("original_held_out"),
        }
        if row == "retrain":
            out["oracle_tr"] = None if ev.oracle_tr is None else np.asarray(ev.oracle_tr).tolist()
            out["oracle_auc"] = ev.oracle_auc
        return out

    def restore_row(self, sc, world, row, state):
        st, ev = world.state, world.state["ev"]
        for key in ("weight_change", "relearn"):
            if state.get(key) is not None:
                st.setdefault(key, {})[row] = state[key]
        if state.get("original_held_out") is not None and "original_held_out" not in st:
            st["original_held_out"] = state["original_held_out"]
        if row == "retrain":
            tr = state.get("oracle_tr")
            ev.oracle_tr = None if tr is None else np.asarray(tr, dtype=np.float64)
            ev.oracle_auc = state.get("oracle_auc")

    def ticks(self, sc):
        per = 3 if sc.sc.benchmark == "fictitious" else 1
        return len(sc.seeds) * (per + len(sc.methods))

    def setup(self, sc, say):
        s = sc.sc
        self.d = {"people": 20, "per_person": 4, "holdout_people": 2, "seed": 0, **s.data}
        self.world_items = world_knowledge()
        if s.benchmark == "fictitious":
            d = self.d
            self.facts = make_fictitious(
                d["people"] + d["holdout_people"], d["per_person"], d["seed"]
            )
            texts = _item_texts(list(self.facts.items) + self.world_items)
        else:
            self.facts = None
            candidates = real_facts()
            texts = _item_texts(candidates + self.world_items)
        self.base, tok, self.base_id = load_base(s.model, texts, s.cache_dir, s.device)
        self.task = CausalLMTask(tok, s.device, system_prompt=s.system_prompt)
        self.info: dict = {}
        self._truncated: dict[int, torch.nn.Module] = {}
        if self.facts is None:
            self.known = known_facts(self.task, self.base, candidates, s.eval)
            say(f"the model answers {len(self.known)} of {len(candidates)} real facts right")
            if len(self.known) < 4:
                raise UnlearnError(
                    f"the model answers only {len(self.known)} of the real facts right"
                )

    def worlds(self, sc, seed):
        s, task, d = sc.sc, self.task, self.d
        rng = np.random.default_rng(seed)
        state: dict = {}
        if self.facts is not None:
            facts = self.facts
            train_ids = sorted(p.id for p in facts.people)[: d["people"]]
            keep = set(train_ids)
            items = [it for it in facts.items if it.person_id in keep]
            holdout = [it for it in facts.items if it.person_id not in keep]
            # whole people are forgotten (a person's relation may point at a holdout person,
            # which is only a name in an answer)
            k = max(1, int(round(s.fraction * len(train_ids))))
            if k >= len(train_ids):
                raise UnlearnError(f"forgetting {k} of {len(train_ids)} people leaves no one")
            forget_ids = sorted(int(i) for i in rng.choice(train_ids, k, replace=False))
            request = GroupRequest(groups=tuple(forget_ids), by="person")
            data = PairData(
                [(it.question, it.answer) for it in items],
                {"person": [it.person_id for it in items]},
            )
            self.info[f"forget_people_seed{seed}"] = list(forget_ids)
        else:
            order = rng.permutation(len(self.known))
            k = max(1, int(round(s.fraction * len(self.known))))
            items, holdout = self.known, []
            request = SampleRequest(indices=sorted(int(i) for i in order[:k]))
            data = PairData([(it.question, it.answer) for it in items])
            self.info[f"known_facts_seed{seed}"] = len(self.known)
        split = split_request(data, request)
        forget = [items[i] for i in split.forget_idx]
        retain = [items[i] for i in split.retain_idx]
        # the early-stop probe reads its own forget items, never the scored ones
        # (split before anything is fine-tuned, so a bad split fails first)
        probe_items, scored = probe_split(forget, s.probe, seed)
        if self.facts is not None:
            args = (task, self.base, self.base_id)
            original, o_sec, _ = finetuned(*args, list(data), s.recipe, seed, s.cache_dir)
            retain_pairs = [(it.question, it.answer) for it in retain]
            state["oracle"] = finetuned(*args, retain_pairs, s.recipe, seed, s.cache_dir)[:2]
            state["noise"] = finetuned(
                *args, retain_pairs, s.recipe, seed + s.noise_seed_offset, s.cache_dir
            )[:2]
        else:
            original, o_sec = self.base, None
        n_eval = min(int(s.eval["retain_items"]), len(retain))
        r_eval = [retain[i] for i in sorted(rng.choice(len(retain), n_eval, replace=False))]
        if probe_items:
            self.info[f"probe_questions_seed{seed}"] = [it.question for it in probe_items]
        state["ev"] = LMEvaluator(task, scored, r_eval, self.world_items, holdout, s.eval)
        if s.relearn is not None:
            in_probe = {id(it) for it in probe_items}
            groups = [it.person_id if self.facts is not None else i for i, it in enumerate(forget)]
            state["folds"] = make_folds(
                forget, groups, [id(it) not in in_probe for it in forget], s.relearn, seed
            )
            self.info[f"relearn_held_out_questions_seed{seed}"] = [
                len(f.questions) for f in state["folds"]
            ]
        negatives = PairData(replacement_answers(forget, retain), name="negatives")
        probe_qs = [it.question for it in probe_items] + [
            it.paraphrased_question for it in probe_items
        ]
        probe_keys = [it.key for it in probe_items] * 2

        def probe(m, qs=probe_qs, keys=probe_keys) -> float:
            gen = task.generate(m, qs, int(s.eval["max_new_tokens"]), int(s.eval["batch_size"]))
            return M.answer_accuracy(gen, keys)

        # R2F's proxy is the pretrained base of the fine-tuned target (real facts: the base
        # is the target itself, so there is no proxy and r2f refuses to run)
        proxies = {"proxy": self.base} if self.facts is not None else {}
        ctx = UnlearnContext(
            task=task,
            split=split,
            request=request,
            original=original,
            seed=seed,
            probe=probe if probe_items else None,
            alternatives={
                "replace": negatives,
                "paraphrases": [(it.paraphrased_question, it.answer) for it in forget],
            },
            proxies=proxies,
        )
        yield World(seed=seed, ctx=ctx, original_cost={"seconds": o_sec}, state=state)

    def run_method(self, sc, world, method):
        label = next(lab for lab, m in sc.methods if m is method)
        keep = sc.sc.proxy_layers.get(label)
        if keep is None:
            return method.run(world.ctx.original, world.ctx)
        if keep > len(self.task.layers(self.base)):
            raise UnlearnError(
                f"method {label!r}: proxy_layers {keep} is more than the base model's "
                f"{len(self.task.layers(self.base))} decoder layers"
            )
        cut = self._truncated.get(keep)
        if cut is None:
            cut = self._truncated[keep] = truncate_layers(self.base, keep)
        ctx = dataclasses.replace(world.ctx, proxies={**world.ctx.proxies, "proxy": cut})
        return method.run(world.ctx.original, ctx)

    def score(self, sc, world, model, row):
        s, st = sc.sc, world.state
        metrics = world.state["ev"].score(model)
        if row != "original":
            st.setdefault("weight_change", {})[row] = weight_change(
                self.task, world.ctx.original, model, int(s.eval["blocks"])
            )
        cfg = s.relearn
        attacked = cfg is not None and (
            row in cfg.rows if cfg.rows else row not in ("original", "oracle_noise")
        )
        if attacked:
            if "original_held_out" not in st:
                st["original_held_out"] = held_out_accuracy(
                    self.task, world.ctx.original, st["folds"], s.eval
                )
            result = relearn(self.task, model, st["folds"], cfg, world.seed, s.eval)
            extra, details = relearn_metrics(result, st["original_held_out"], cfg)
            metrics.update(extra)
            st.setdefault("relearn", {})[row] = details
        return metrics

    def after_seed(self, sc, world, models, rows):
        for r in rows:
            if r["seed"] != world.seed:
                continue
            extra = (r.get("record") or {}).get("extra", {})
            if "full_grad_evals" in extra:  # R2F: what its decoder reached, and at what cost
                r["metrics"]["full_grad_evals"] = extra["full_grad_evals"]
                cos = extra.get("cosine", {})
                decoder = r["record"]["config"].get("decoder", "ridge")
                r["metrics"]["decoded_cosine"] = cos.get(decoder, {}).get("median")
                r["metrics"]["decoded_cosine_pinv"] = cos.get("pinv", {}).get("median")
            name = r["method"]
            if name in world.state.get("weight_change", {}):
                r["weight_change"] = world.state["weight_change"][name]
            if name in world.state.get("relearn", {}):
                r["relearn"] = world.state["relearn"][name]

    def set_oracle(self, sc, world, oracle, metrics):
        world.state["ev"].set_oracle(metrics)
        # the oracle against itself is 1 and 0 by construction: not measured, so missing
        metrics.update(forget_quality=None, privleak=None)

    def seed_info(self):
        return dict(self.info)

    def merge_seed_info(self, info):
        self.info.update(info)

    def tick_text(self, row, m):
        fq, mu = m.get("forget_quality"), m.get("model_utility")
        return (
            f": forget acc {m['forget_answer_acc']:.0f}%"
            + ("" if fq is None else f", forget quality {fq:.3g}")
            + ("" if mu is None else f", utility {mu:.3f}")
        )

    def document(self, sc):
        s, d = sc.sc, self.d
        return {
            "scenario": s.raw,
            "scenario_name": s.name,
            "kind": "llm",
            "request": (
                f"forget {100 * s.fraction:g}% of the {d['people']} fictitious people "
                f"({d['per_person']} items each; {d['holdout_people']} never-seen people for "
                "the membership attacks)"
                if s.benchmark == "fictitious"
                else f"forget {100 * s.fraction:g}% of the world facts the model answers right"
            ),
            "model_spec": s.model,
            "train_recipe": asdict(s.recipe) if s.benchmark == "fictitious" else {},
            "methods": {
                label: {"method": m.name, "config": m.config.__dict__} for label, m in sc.methods
            },
            "about": ABOUT_LLM,
            "info": self.info,
            "attacks": ({"relearn": asdict(s.relearn)} if s.relearn is not None else {}),
            "versions": {**versions(), **_hf_versions()},
        }


def _relative_change(pairs) -> float:
    """sqrt(sum ||W - W_original||^2 / sum ||W_original||^2) over ``(W, W_original)``."""
    num = den = 0.0
    for p, w in pairs:
        w = w.detach().double()
        num += float(((p.detach().double() - w) ** 2).sum())
        den += float((w**2).sum())
    return float(np.sqrt(num / den)) if den > 0 else 0.0


def weight_change(task: CausalLMTask, original, model, blocks: int) -> dict:
    """Relative change ||W - W_original|| / ||W_original|| of each block of contiguous
    decoder layers (input side first) and of the rest (embeddings, final norm, head)."""
    lo, lm = task.layers(original), task.layers(model)
    groups = layer_blocks(len(lo), blocks)

    def layer_pairs(i: int):
        po = dict(lo[i].named_parameters())
        return ((p, po[name]) for name, p in lm[i].named_parameters())

    with torch.no_grad():
        rel = [_relative_change(pair for i in g for pair in layer_pairs(i)) for g in groups]
        in_layers = {id(p) for layer in lm for p in layer.parameters()}
        po = dict(original.named_parameters())
        other = _relative_change(
            (p, po[name])
            for name, p in model.named_parameters()
            if id(p) not in in_layers and name in po
        )
    return {"blocks": [[g[0], g[-1]] for g in groups], "relative": rel, "other": other}


class _LLMRun:
    def __init__(self, sc: LLMScenario):
        self.sc, self.name, self.raw = sc, sc.name, sc.raw
        self.noise_seed_offset = sc.noise_seed_offset
        self.methods = sc.built

    @property
    def seeds(self):
        return self.sc.seeds


def run_llm(
    raw: dict, progress: Callable[[str], None] | None = None, source: str = "scenario"
) -> dict:
    """Run a ``kind: llm`` scenario through the one runner; return the results document."""
    fam = LLMFamily()
    return run_parsed(fam, fam.parse(raw, source, None), progress)


def _hf_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("transformers", "peft", "gguf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
