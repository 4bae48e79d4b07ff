"""Unlearning as ablation (``kind: llm_ablation``): forgetting a fact together with what
it follows from, on a rule-based family knowledge base.

After the position paper on unlearning as ablation and the deep-unlearning benchmark
of Wu et al. 2024 (``../shared/papers/NOTES.md`` section 9; :mod:`unlearn.data.kinship`
builds the knowledge base, its closure and the minimal deep-unlearning sets). A
scenario mapping::

    name: smollm2-ablation
    kind: llm_ablation
    model: {name: smollm2}            # or {name: tiny, hidden: 64, layers: 2} (tests)
    data: {people: 40, seed: 0, biographies: true}
    forget: {targets: 20, group: 5, search_seeds: 100, rules: edu_relat}
    modes: [target, minimal]
    recipe: {epochs: 6, lr: 1.0e-3, batch_size: 8, lora_rank: 16}
    eval: {unrelated: 30, max_new_tokens: 20, batch_size: 16}
    seeds: [1, 2]
    methods:
      - {name: gradient_ascent, steps: 20, lr: 2.0e-5}
    attacks:
      relearn: {splits: 5, folds: 2, lrs: [1.0e-5, 1.0e-4], epochs: 2}

**The world.** A seeded family graph (``data.people`` people, ``data.seed``) stores
the eleven base relations; every stored fact becomes a question-answer pair ("Who is
the mother of X?" / "The mother of X is Y."), and with ``biographies`` each person's
birth year, birthplace and occupation too. The base model is fine-tuned on all of it
(``original``; cached by content hash, one fine-tune per seed). ``forget.targets``
stored facts are drawn per seed; each gets its smallest minimal deep-unlearning set
(Wu et al.'s randomized search over ``search_seeds`` runs, under the ``rules``:
``edu_relat``, their 48, or ``all`` with the extended relations).

**The rows.** Targets are unlearned ``group`` at a time (``group: 1`` is Wu et al.'s
one target per run; larger groups cost fewer runs), in each mode: ``target`` forgets
the group's target facts alone, ``minimal`` the targets together with their minimal
sets. A world is one (group, mode); a row is labelled ``method@mode`` and its metrics
are the means over the seed's groups (per-group values in ``groups``). There is no
oracle: each mode and group would need a fine-tune of its own, and the question here
is whether the target can come back, which the re-derivation probe and the
relearning attack measure.

**The metrics** (percent; greedy answers containing the expected name):

- ``target_recall``: the targets still answered (question and paraphrase);
- ``closure_recall``: the closure items still answered: every stored fact in the
  premises of a one-step derivation of a target or in its minimal set, the targets
  themselves excluded;
- ``unrelated_acc``: stored facts outside every target's relevant facts (a seeded
  sample of ``eval.unrelated``) and, with biographies, as many biography questions;
- ``rederivation_rate``: targets answered when the premises of their smallest
  derivation are stated in the prompt (:func:`unlearn.data.kinship.rederivation_prompt`,
  genders included): can the model re-derive what it was made to forget?
- ``deep_recall``: Wu et al.'s recall, ``|M & removed| / |M|`` for the target's
  minimal set ``M``, where ``removed`` is what the model no longer answers; averaged
  over targets. Wu et al. take the maximum over every set their search found; this
  uses the smallest one (only its facts are probed);
- with ``attacks: relearn``: the relearning attack of :mod:`unlearn.attacks.relearn`
  with the targets as its groups: the attacker fine-tunes on the forget set minus a
  held-out split of targets and asks the held-out targets (``relearn_recovery``...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..attacks.relearn import RelearnConfig, held_out_accuracy, make_folds, relearn, relearn_metrics
from ..data import kinship as K
from ..data.core import split_request
from ..errors import ScenarioError, UnlearnError
from ..methods.base import UnlearnContext, get_method
from ..metrics import llm as M
from ..requests import SampleRequest
from ..tasks.causal_lm import CausalLMTask, LMRecipe, PairData
from ..validate import dataclass_from_mapping
from .core import Family, World, register_family, run_parsed, versions
from .llm import _hf_versions, finetuned, load_base
from .scenario import check_common

__all__ = [
    "ABOUT_ABLATION",
    "AblationFamily",
    "AblationScenario",
    "MODES",
    "parse_ablation",
    "run_ablation",
]

MODES = ("target", "minimal")
RULE_SETS = {"edu_relat": K.EDU_RELAT_RULES, "all": K.RULES}
_TOP = {
    "name", "kind", "model", "data", "forget", "modes", "recipe", "eval", "seeds",
    "methods", "description", "device", "noise_seed_offset", "cache_dir", "system_prompt",
    "targets", "attacks",
}  # fmt: skip
_DATA = {"people": 40, "seed": 0, "biographies": True}
_FORGET = {"targets": 20, "group": 5, "search_seeds": 100, "rules": "edu_relat"}
_EVAL = {"unrelated": 30, "max_new_tokens": 20, "batch_size": 16}
#: what one row's cost is over its groups: summed or the largest
_SUMMED, _LARGEST = ("seconds", "steps"), ("peak_mem_mb", "baseline_mem_mb", "train_state_mb")

ABOUT_ABLATION = """Rows `method@target` forget the target facts alone, `method@minimal`
the targets with their minimal deep-unlearning sets (Wu et al. 2024); `original@...`
is the fine-tuned model itself (the same model in both modes). Target recall, closure
recall and re-derivation rate are percentages of greedy answers that still contain
the fact (lower: more removed); unrelated accuracy is the share of unrelated facts
kept. Deep recall is Wu et al.'s recall on the smallest minimal set (higher: more of
it removed). Each metric is the mean over the seed's groups of targets."""


@dataclass
class AblationScenario:
    name: str
    model: dict
    data: dict
    forget: dict
    modes: tuple[str, ...]
    recipe: LMRecipe
    eval: dict
    seeds: list[int]
    built: list  # (label, Method)
    description: str = ""
    device: str = "cpu"
    noise_seed_offset: int = 1000
    cache_dir: str | None = ".cache/unlearn"
    system_prompt: str | None = None
    relearn: RelearnConfig | None = None
    raw: dict = field(default_factory=dict)

    @property
    def methods(self) -> list:
        return self.built


def _int(v, what: str, low: int, high: int, fail) -> int:
    if type(v) is not int or not low <= v <= high:
        raise fail(f"{what} must be an integer in [{low}, {high}], got {v!r}")
    return v


def _mapping(raw: dict, key: str, defaults: dict, fail) -> dict:
    got = raw.get(key, {})
    if not isinstance(got, dict):
        raise fail(f"{key} must be a mapping, got {got!r}")
    unknown = sorted(set(got) - set(defaults))
    if unknown:
        raise fail(f"unknown {key} key(s) {unknown} (known: {sorted(defaults)})")
    return {**defaults, **got}


def parse_ablation(raw: dict, source: str = "scenario") -> AblationScenario:
    """Validate a ``kind: llm_ablation`` scenario mapping; every error names the key."""

    def fail(msg: str) -> ScenarioError:
        return ScenarioError(f"{source}: {msg}")

    common = check_common(raw, source, default_name=str(raw.get("name", "ablation")))
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise fail(f"unknown key(s) {unknown} (known: {sorted(_TOP)})")
    for key in ("name", "model", "methods", "seeds"):
        if key not in raw:
            raise fail(f"missing key {key!r}")
    model = raw["model"]
    if not isinstance(model, dict) or model.get("name") not in ("smollm2", "tiny"):
        raise fail(f"model must be a mapping with name 'smollm2' or 'tiny', got {model!r}")
    extra = set(model) - ({"name", "hidden", "layers", "vocab_size"} if model["name"] == "tiny"
                          else {"name"})  # fmt: skip
    if extra:
        raise fail(f"unknown model key(s) {sorted(extra)} for model {model['name']!r}")
    for key in ("hidden", "layers", "vocab_size"):
        if key in model:
            _int(model[key], f"model {key}", 1, 4096, fail)
    data = _mapping(raw, "data", _DATA, fail)
    _int(data["people"], "data people", K.MIN_PEOPLE, K.MAX_PEOPLE, fail)
    _int(data["seed"], "data seed", 0, 2**31 - 1, fail)
    if not isinstance(data["biographies"], bool):
        raise fail(f"data biographies must be true or false, got {data['biographies']!r}")
    forget = _mapping(raw, "forget", _FORGET, fail)
    n = _int(forget["targets"], "forget targets", 1, 10_000, fail)
    g = _int(forget["group"], "forget group", 1, n, fail)
    if n % g:
        raise fail(f"forget targets ({n}) must be a multiple of forget group ({g})")
    _int(forget["search_seeds"], "forget search_seeds", 1, 100_000, fail)
    if forget["rules"] not in RULE_SETS:
        raise fail(f"forget rules must be one of {sorted(RULE_SETS)}, got {forget['rules']!r}")
    modes = raw.get("modes", list(MODES))
    if (
        not isinstance(modes, list)
        or not modes
        or any(m not in MODES for m in modes)
        or len(set(modes)) != len(modes)
    ):
        raise fail(
            f"modes must be a non-empty list of distinct modes of {list(MODES)}, got {modes!r}"
        )
    try:
        recipe = LMRecipe(**raw.get("recipe", {}))
    except (TypeError, UnlearnError) as exc:
        raise fail(f"recipe: {exc}") from None
    ev = _mapping(raw, "eval", _EVAL, fail)
    _int(ev["unrelated"], "eval unrelated", 1, 100_000, fail)
    for key in ("max_new_tokens", "batch_size"):
        _int(ev[key], f"eval {key}", 1, 4096, fail)
    for key in ("cache_dir", "system_prompt"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise fail(f"{key} must be a string or null, got {raw[key]!r}")
    if not isinstance(raw["methods"], list) or not raw["methods"]:
        raise fail("methods must be a non-empty list")
    built, labels = [], set()
    for i, entry in enumerate(raw["methods"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise fail(f"methods[{i}] must be a mapping with a 'name'")
        name, label = entry["name"], entry.get("label", entry["name"])
        if not isinstance(label, str) or "@" in label:
            raise fail(f"methods[{i}]: label must be a string without '@', got {label!r}")
        if label in labels or label == "original":
            raise fail(f"method label {label!r} is used twice or is reserved")
        labels.add(label)
        config = {k: v for k, v in entry.items() if k not in ("name", "label")}
        try:
            method = get_method(name, config, family="causal_lm")
        except UnlearnError as exc:
            raise fail(f"methods[{i}]: {exc}") from None
        if "causal_lm" not in method.families():
            raise fail(f"method {name!r} is not a language-model method")
        if getattr(method.config, "target_forget_acc", None) is not None:
            raise fail(
                f"method {label!r}: no early stop here (target_forget_acc): every forget item "
                "is scored, so a probe would read the reported items; give a step budget"
            )
        built.append((label, method))
    relearn_cfg = None
    attacks = raw.get("attacks")
    if attacks is not None:
        if not isinstance(attacks, dict) or set(attacks) - {"relearn"}:
            raise fail("attacks takes one key, relearn (a mapping of its settings)")
        try:
            relearn_cfg = dataclass_from_mapping(
                RelearnConfig, attacks.get("relearn"), "attacks relearn"
            )
        except UnlearnError as exc:
            raise fail(str(exc)) from None
        bad_rows = sorted(set(relearn_cfg.rows) - labels)
        if bad_rows:
            raise fail(f"attacks relearn rows {bad_rows} are not method labels of this scenario")
        if relearn_cfg.splits > g:
            raise fail(
                f"attacks relearn splits ({relearn_cfg.splits}) need at least as many targets "
                f"per group (forget group: {g})"
            )
    return AblationScenario(
        name=common.name,
        model=dict(model),
        data=data,
        forget=forget,
        modes=tuple(modes),
        recipe=recipe,
        eval=ev,
        seeds=list(common.seeds),
        built=built,
        description=common.description,
        device=common.device,
        noise_seed_offset=common.noise_seed_offset,
        cache_dir=raw.get("cache_dir", ".cache/unlearn"),
        system_prompt=raw.get("system_prompt"),
        relearn=relearn_cfg,
        raw=dict(raw),
    )


# ---------------------------------------------------------------------- one group of targets
@dataclass
class _Group:
    """What is forgotten and asked for one group of targets."""

    targets: list  # Fact
    minimal: list  # per target: its smallest minimal set (frozenset of Fact, with the target)
    closure: list  # stored facts the targets follow from (targets excluded)
    unrelated: list  # KinshipQA / BiographyQA items
    rederive: list  # (prompt, key) per target


def _hits(task, model, questions, keys, ev) -> list[bool]:
    gen = task.generate(model, questions, int(ev["max_new_tokens"]), int(ev["batch_size"]))
    return [M.greedy_answer_correct(g, k) for g, k in zip(gen, keys, strict=True)]


def _pct(hits: list[bool]) -> float | None:
    return 100.0 * float(np.mean(hits)) if hits else None


@register_family
class AblationFamily(Family):
    """The ``kind: llm_ablation`` plugin: SmolLM2 (or a tiny Llama) fine-tuned on a family
    knowledge base; targets forgotten alone or with their minimal deep-unlearning sets."""

    kind = "llm_ablation"
    task_family = "causal_lm"
    keep_models = False
    has_oracle = False
    parallel_seeds = True

    def parse(self, raw, source, base_dir):
        return parse_ablation(raw, source)

    def ticks(self, sc):
        groups = sc.forget["targets"] // sc.forget["group"]
        return len(sc.seeds) * groups * len(sc.modes) * (1 + len(sc.methods))

    def setup(self, sc, say):
        d = sc.data
        self.kb = K.make_family(d["people"], d["seed"])
        self.rules = RULE_SETS[sc.forget["rules"]]
        self.genders = self.kb.genders
        self.qa = {it.fact: it for it in K.qa_items(self.kb, rules=self.rules)}
        self.bio = list(K.biography_items(self.kb)) if d["biographies"] else []
        self.pairs = [(it.question, it.answer) for it in self.qa.values()]
        self.pairs += [(b.question, b.answer) for b in self.bio]
        if len({q for q, _ in self.pairs}) != len(self.pairs):
            raise UnlearnError("two knowledge-base items ask the same question")
        texts = [t for q, a in self.pairs for t in (q, a)]
        texts += [it.paraphrased_question for it in self.qa.values()]
        texts += [K.fact_sentence(f) for f in self.qa] + ["female", "male", "Facts", "Question"]
        texts += [f"{p} is female. {p} is male." for p in self.genders]
        texts += [f"How is {f.subject} related to {f.object}? Answer:" for f in self.qa]
        self.base, tok, self.base_id = load_base(sc.model, texts, sc.cache_dir, sc.device)
        self.task = CausalLMTask(tok, sc.device, system_prompt=sc.system_prompt)
        self.info: dict = {
            "stored_facts": len(self.qa),
            "biography_items": len(self.bio),
            "people": len(self.kb.people),
        }
        self._original_scores: dict = {}
        say(f"knowledge base: {len(self.kb.people)} people, {len(self.qa)} facts")

    # -- the targets of a seed ---------------------------------------------------------
    def _groups(self, sc, seed: int) -> list[_Group]:
        f, facts = sc.forget, self.kb.facts
        targets = list(K.sample_targets(self.kb, f["targets"], seed))
        search = {"genders": self.genders, "seeds": f["search_seeds"], "seed": seed}
        found = [K.minimal_deep_unlearning_sets(t, facts, self.rules, **search) for t in targets]
        minimal = [sets[0] for sets in found]  # the smallest set the search found
        stored = set(facts)
        rng = np.random.default_rng([seed, 5081])
        out = []
        for g0 in range(0, len(targets), f["group"]):
            ts, ms = targets[g0 : g0 + f["group"]], minimal[g0 : g0 + f["group"]]
            sets = found[g0 : g0 + f["group"]]
            closure: set = set()
            rederive = []
            for t, m in zip(ts, ms, strict=True):
                derivs = K.derivations(t, facts, self.rules, genders=self.genders)
                for body in derivs:
                    closure |= body & stored
                closure |= m
                if derivs:
                    rederive.append(
                        K.rederivation_prompt(t, derivs[0], ask="name", genders=self.genders)
                    )
            closure -= set(ts)
            relevant = set(closure) | set(ts)
            for per_target in sets:  # a fact of any set the search found is not unrelated
                for m in per_target:
                    relevant |= m
            pool = sorted(stored - relevant)
            n = min(int(sc.eval["unrelated"]), len(pool))
            unrelated = [
                self.qa[pool[int(i)]] for i in sorted(rng.choice(len(pool), n, replace=False))
            ]
            if self.bio:
                k = min(n, len(self.bio))
                unrelated += [
                    self.bio[int(i)] for i in sorted(rng.choice(len(self.bio), k, replace=False))
                ]
            out.append(_Group(ts, list(ms), sorted(closure), unrelated, rederive))
        return out

    def worlds(self, sc, seed):
        task = self.task
        groups = self._groups(sc, seed)
        original, o_sec, _ = finetuned(
            task, self.base, self.base_id, self.pairs, sc.recipe, seed, sc.cache_dir
        )
        data = PairData(self.pairs)
        index = {q: i for i, (q, _) in enumerate(self.pairs)}
        self.info[f"targets_seed{seed}"] = [[str(t) for t in g.targets] for g in groups]
        self.info[f"minimal_set_sizes_seed{seed}"] = [[len(m) for m in g.minimal] for g in groups]
        for gi, grp in enumerate(groups):
            for mode in sc.modes:
                facts = set(grp.targets)
                if mode == "minimal":
                    for m in grp.minimal:
                        facts |= set(m)
                items = [self.qa[f] for f in sorted(facts)]
                request = SampleRequest(indices=sorted(index[it.question] for it in items))
                split = split_request(data, request)
                forget_items = [self.qa_by_q(data[int(i)][0]) for i in split.forget_idx]
                state = {"group": grp, "gi": gi, "mode": mode, "forget_items": forget_items}
                if sc.relearn is not None:
                    owner = {}
                    for ti, (t, m) in enumerate(zip(grp.targets, grp.minimal, strict=True)):
                        for f in sorted(m | {t}):
                            owner.setdefault(f, ti)
                    is_target = set(grp.targets)
                    state["folds"] = make_folds(
                        forget_items,
                        [owner[it.fact] for it in forget_items],
                        [it.fact in is_target for it in forget_items],
                        sc.relearn,
                        seed,
                    )
                ctx = UnlearnContext(
                    task=task,
                    split=split,
                    request=request,
                    original=original,
                    seed=seed,
                    alternatives={
                        "paraphrases": [(it.paraphrased_question, it.answer) for it in forget_items]
                    },
                )
                yield World(
                    seed=seed,
                    ctx=ctx,
                    original_cost={"seconds": o_sec},
                    tag=f"@{mode}",
                    state=state,
                    fields={"group": gi, "mode": mode},
                    metrics={"n_forget": len(forget_items)},
                )

    def qa_by_q(self, question: str):
        if not hasattr(self, "_by_q"):
            self._by_q = {it.question: it for it in self.qa.values()}
        return self._by_q[question]

    # -- scoring -----------------------------------------------------------------------
    def _score_group(self, model, grp: _Group, ev: dict) -> dict:
        task, qa = self.task, self.qa
        t_items = [qa[t] for t in grp.targets]
        qs = [it.question for it in t_items] + [it.paraphrased_question for it in t_items]
        t_hits = _hits(task, model, qs, [it.key for it in t_items] * 2, ev)
        # the closure and the rest of the minimal sets (the targets are asked above)
        probe = sorted(({f for m in grp.minimal for f in m} | set(grp.closure)) - set(grp.targets))
        c_items = [qa[f] for f in probe]
        c_hits = _hits(task, model, [it.question for it in c_items], [it.key for it in c_items], ev)
        known = dict(zip(probe, c_hits, strict=True))
        for t, hit in zip(grp.targets, t_hits[: len(t_items)], strict=True):
            known[t] = hit  # a target is still known if its own question is answered
        in_closure = set(grp.closure)
        closure_hits = [known[f] for f in probe if f in in_closure]
        u = grp.unrelated
        u_hits = _hits(task, model, [it.question for it in u], [it.key for it in u], ev)
        r_hits = (
            _hits(task, model, [p for p, _ in grp.rederive], [k for _, k in grp.rederive], ev)
            if grp.rederive
            else []
        )
        deep = [sum(not known[f] for f in m) / len(m) for m in grp.minimal]
        return {
            "target_recall": _pct(t_hits),
            "closure_recall": _pct(closure_hits),
            "unrelated_acc": _pct(u_hits),
            "rederivation_rate": _pct(r_hits),
            "deep_recall": 100.0 * float(np.mean(deep)),
        }

    def score(self, sc, world, model, row):
        st = world.state
        if row == "original":  # the same model and items in every mode: scored once
            key = (world.seed, st["gi"])
            if key not in self._original_scores:
                self._original_scores[key] = self._score_group(model, st["group"], sc.eval)
            metrics = dict(self._original_scores[key])
        else:
            metrics = self._score_group(model, st["group"], sc.eval)
        cfg = sc.relearn
        if cfg is not None and row != "original" and (not cfg.rows or row in cfg.rows):
            if "original_held_out" not in st:
                st["original_held_out"] = held_out_accuracy(
                    self.task, world.ctx.original, st["folds"], sc.eval
                )
            result = relearn(self.task, model, st["folds"], cfg, world.seed, sc.eval)
            extra, details = relearn_metrics(result, st["original_held_out"], cfg)
            metrics.update(extra)
            st.setdefault("relearn", {})[row] = details
        return metrics

    def after_seed(self, sc, world, models, rows):
        for r in rows:
            name = r["method"].removesuffix(world.tag)
            if name in world.state.get("relearn", {}):
                r["relearn"] = world.state["relearn"][name]

    def order_rows(self, sc, rows):
        """One row per (label, seed): the means over the seed's groups (costs summed or
        the largest), each group's metrics kept in ``groups``."""
        out: dict[tuple, dict] = {}
        for r in rows:
            key = (r["method"], r["seed"])
            if key not in out:
                out[key] = {k: v for k, v in r.items() if k not in ("group", "metrics", "record")}
                out[key]["groups"] = []
                out[key]["records"] = []
            out[key]["groups"].append({"group": r["group"], "metrics": r["metrics"]})
            if "record" in r:
                out[key]["records"].append(r["record"])
            if "relearn" in r:
                out[key].setdefault("relearn_groups", []).append(r["relearn"])
                out[key].pop("relearn", None)
        for row in out.values():
            per = [g["metrics"] for g in row["groups"]]
            merged = {}
            for k in per[0]:
                vals = [m.get(k) for m in per]
                if any(v is None for v in vals):
                    merged[k] = None
                elif k in _SUMMED:
                    merged[k] = float(np.sum(vals))
                elif k in _LARGEST:
                    merged[k] = float(np.max(vals))
                else:
                    merged[k] = float(np.mean(vals))
            row["metrics"] = merged
            if not row["records"]:
                del row["records"]
        order = ["original", *(lab for lab, _ in sc.methods)]
        return sorted(
            out.values(),
            key=lambda r: (
                sc.modes.index(r["mode"]),
                order.index(r["method"].split("@")[0]),
                r["seed"],
            ),
        )

    def seed_info(self):
        return dict(self.info)

    def merge_seed_info(self, info):
        self.info.update(info)

    def tick_text(self, row, m):
        u = m.get("unrelated_acc")
        return f": target recall {m['target_recall']:.0f}%" + (
            "" if u is None else f", unrelated {u:.0f}%"
        )

    def document(self, sc):
        f = sc.forget
        return {
            "scenario": sc.raw,
            "scenario_name": sc.name,
            "kind": "llm_ablation",
            "request": (
                f"forget {f['targets']} stored facts of a {sc.data['people']}-person family "
                f"knowledge base, {f['group']} at a time, alone and with their minimal "
                "deep-unlearning sets"
            ),
            "model_spec": sc.model,
            "train_recipe": asdict(sc.recipe),
            "methods": {
                label: {"method": m.name, "config": m.config.__dict__} for label, m in sc.methods
            },
            "about": ABOUT_ABLATION,
            "info": self.info,
            "attacks": {"relearn": asdict(sc.relearn)} if sc.relearn is not None else {},
            "versions": {**versions(), **_hf_versions()},
        }


def run_ablation(
    raw: dict, progress: Callable[[str], None] | None = None, source: str = "scenario"
) -> dict:
    """Run a ``kind: llm_ablation`` scenario through the one runner."""
    fam = AblationFamily()
    return run_parsed(fam, fam.parse(raw, source, None), progress)
