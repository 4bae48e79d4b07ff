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
stored facts are drawn per seed, in groups whose members are unrelated to each other
(none is in another's minimal sets or one-step supports); each gets its smallest
minimal deep-unlearning set (Wu et al.'s randomized search over ``search_seeds`` runs,
under the ``rules``: ``edu_relat``, their 48, or ``all`` with the extended relations).

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
- ``rederivation_rate``: targets answered when the premises of a derivation are stated
  in the prompt (:func:`unlearn.data.kinship.rederivation_prompt`, genders included),
  asked as "How is Y related to X?": the smallest derivation whose premises do not
  contain the relation word, so the answer cannot be copied from the prompt (targets
  without one are left out; their count per group is in ``info``);
- ``deep_recall``: Wu et al.'s recall, the best over the target's minimal sets (the
  ``forget.deep_sets`` smallest the search found; 0: all) of ``|M & removed| / |M|``,
  averaged over targets. Ours counts only facts the original answers: ``M`` is cut to
  them and ``removed`` are those no longer answered (so the original scores 0);
- with ``attacks: relearn``: the relearning attack of :mod:`unlearn.attacks.relearn`
  over splits of the group's targets: the attacker fine-tunes on the forget items that
  no held-out target follows from (its minimal sets and supports are left out, so no
  split teaches another) and is asked the held-out targets (``relearn_recovery``...).

A metric undefined on a group (no rederivable target, a recovery below the attack's
``min_gap``) is averaged over the other groups; the count is in the row's
``undefined_in_groups``. ``unrelated_acc`` is not Wu et al.'s accuracy (the share of
every stored fact outside ``M`` kept): it reads a sample outside every set the search
found, and the biography questions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..attacks.relearn import Fold, RelearnConfig, held_out_accuracy, relearn, relearn_metrics
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
_FORGET = {"targets": 20, "group": 5, "search_seeds": 100, "rules": "edu_relat", "deep_sets": 5}
_EVAL = {"unrelated": 30, "max_new_tokens": 20, "batch_size": 16}
#: what one row's cost is over its groups: summed or the largest
_SUMMED = ("seconds", "steps")
_LARGEST = ("peak_mem_mb", "baseline_mem_mb", "train_state_mb", "peak_cuda_mb")

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
    _int(forget["deep_sets"], "forget deep_sets", 0, 100_000, fail)
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
    sets: list  # per target: the minimal sets deep_recall takes the best of (smallest first)
    supports: list  # per target: the stored facts it follows from (closure), itself excluded
    closure: list  # the union of the supports, the group's targets excluded
    unrelated: list  # KinshipQA / BiographyQA items
    rederive: list  # (target index, prompt, key) for every target with a usable derivation


def _hits(task, model, questions, keys, ev) -> list[bool]:
    if not questions:
        return []
    gen = task.generate(model, questions, int(ev["max_new_tokens"]), int(ev["batch_size"]))
    return [M.greedy_answer_correct(g, k) for g, k in zip(gen, keys, strict=True)]


def _pct(hits: list[bool]) -> float | None:
    return 100.0 * float(np.mean(hits)) if hits else None


def _target_folds(grp: _Group, forget_items: list, cfg: RelearnConfig, seed: int) -> list[Fold]:
    """The relearning attack's folds over the group's targets: split ``f`` of the targets is
    held out; the attacker trains on the forget items that none of the held-out targets
    follows from (their smallest minimal sets and their one-step supports are left out,
    so no split teaches another) and is asked the held-out targets."""
    n, by_fact = len(grp.targets), {it.fact: it for it in forget_items}
    order = np.random.default_rng([int(seed), 4099]).permutation(n)
    split_of = {int(j): r % cfg.splits for r, j in enumerate(order)}
    folds = []
    for f in range(cfg.folds):
        held = [i for i in range(n) if split_of[i] == f]
        blocked = set()
        for i in held:
            blocked |= {grp.targets[i], *grp.supports[i], *grp.minimal[i]}
        fold = Fold(held=f, train_pairs=[])
        fold.train_pairs = [
            (it.question, it.answer) for it in forget_items if it.fact not in blocked
        ]
        for i in held:
            it = by_fact[grp.targets[i]]
            fold.questions += [it.question, it.paraphrased_question]
            fold.keys += [it.key, it.key]
        if not fold.train_pairs:
            raise ScenarioError(
                f"relearn attack: every forget item of a group supports its held-out targets "
                f"(split {f}), so the attacker has nothing to train on: use fewer attacks "
                "relearn splits or a larger forget group"
            )
        folds.append(fold)
    return folds


@register_family
class AblationFamily(Family):
    """The ``kind: llm_ablation`` plugin: SmolLM2 (or a tiny Llama) fine-tuned on a family
    knowledge base; targets forgotten alone or with their minimal deep-unlearning sets."""

    kind = "llm_ablation"
    task_family = "causal_lm"
    keep_models = False
    has_oracle = False
    parallel_seeds = True
    resumable = True  # the relearning attack runs as each row is scored (--resume)

    def parse(self, raw, source, base_dir):
        return parse_ablation(raw, source)

    def row_state(self, sc, world, row):
        """The original's scores and what it knew (the later rows' recall is counted on
        the facts it knew), its held-out accuracy, and the row's attack details."""
        st = world.state
        out = {
            "relearn": st.get("relearn", {}).get(row),
            "original_held_out": st.get("original_held_out"),
        }
        if row == "original":
            metrics, known = self._original[(world.seed, st["gi"])]
            out["original"] = {
                "metrics": metrics,
                "known": [[[f.relation, f.subject, f.object], bool(k)] for f, k in known.items()],
            }
        return out

    def restore_row(self, sc, world, row, state):
        st = world.state
        if state.get("relearn") is not None:
            st.setdefault("relearn", {})[row] = state["relearn"]
        if state.get("original_held_out") is not None and "original_held_out" not in st:
            st["original_held_out"] = state["original_held_out"]
        if row == "original":
            saved = state["original"]
            known = {K.Fact(*f): bool(k) for f, k in saved["known"]}
            self._original.setdefault((world.seed, st["gi"]), (saved["metrics"], known))

    def ticks(self, sc):
        groups = sc.forget["targets"] // sc.forget["group"]
        return len(sc.seeds) * groups * len(sc.modes) * (1 + len(sc.methods))

    def _knowledge(self, sc) -> None:
        """The knowledge base and its question-answer pairs (no model)."""
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
        if sc.forget["targets"] > len(self.qa):
            raise ScenarioError(
                f"forget targets ({sc.forget['targets']}) exceeds the {len(self.qa)} stored facts "
                f"of the {d['people']}-person knowledge base"
            )
        self.info: dict = {
            "stored_facts": len(self.qa),
            "biography_items": len(self.bio),
            "people": len(self.kb.people),
        }
        self._original: dict = {}  # (seed, group) -> the original's scores and known facts

    def check(self, sc):
        """The knowledge base, every seed's targets, minimal sets, unrelated facts and
        attack folds: what can fail before anything is loaded or fine-tuned."""
        self._knowledge(sc)
        for seed in sc.seeds:
            self._plan(sc, seed)

    def setup(self, sc, say):
        self._knowledge(sc)
        texts = [t for q, a in self.pairs for t in (q, a)]
        texts += [it.paraphrased_question for it in self.qa.values()]
        texts += [K.fact_sentence(f) for f in self.qa] + ["female", "male", "Facts", "Question"]
        texts += [f"{p} is female. {p} is male." for p in self.genders]
        texts += [f"How is {f.subject} related to {f.object}? Answer:" for f in self.qa]
        self.base, tok, self.base_id = load_base(sc.model, texts, sc.cache_dir, sc.device)
        self.task = CausalLMTask(tok, sc.device, system_prompt=sc.system_prompt)
        say(f"knowledge base: {len(self.kb.people)} people, {len(self.qa)} facts")

    # -- the targets of a seed ---------------------------------------------------------
    def _rederivation(self, t, derivs) -> tuple[str, str] | None:
        """The smallest derivation whose stated premises do not name the relation asked
        for (so an answer cannot copy it from the prompt), as a prompt and its key."""
        word = t.relation.replace("_", "-")
        for body in derivs:
            if not any(word in K.fact_sentence(p) for p in body):
                return K.rederivation_prompt(t, body, ask="relation", genders=self.genders)
        return None

    def _draw_targets(self, sc, seed: int) -> list[tuple]:
        """``forget.targets`` stored facts in groups of ``forget.group``, each with its
        minimal sets, derivations and supports. Facts are drawn in a seeded order; a fact
        joins the current group only if it is unrelated to every member (neither is in
        the other's minimal sets or supports), so a group's targets are forgotten side by
        side as Wu et al. forget each alone, and no attack split teaches another."""
        f, facts = sc.forget, self.kb.facts
        stored = set(facts)
        pool = sorted(stored)
        order = np.random.default_rng([seed, 7741]).permutation(len(pool))
        search = {"genders": self.genders, "seeds": f["search_seeds"], "seed": seed}
        chosen: list[tuple] = []
        group: list[tuple] = []
        for j in order:
            t = pool[int(j)]
            sets = K.minimal_deep_unlearning_sets(t, facts, self.rules, **search)
            derivs = K.derivations(t, facts, self.rules, genders=self.genders)
            support = (set().union(*derivs) & stored) - {t} if derivs else set()
            near = {t} | support | set().union(*sets)
            if any(t in u[4] or u[0] in near for u in group):
                continue
            group.append((t, sets, derivs, sorted(support), near))
            if len(group) == f["group"]:
                chosen += group
                group = []
                if len(chosen) == f["targets"]:
                    return chosen
        raise ScenarioError(
            f"forget: the {len(pool)} stored facts hold no {f['targets']} targets in groups of "
            f"{f['group']} whose members are unrelated to each other (seed {seed}): lower forget "
            "targets or forget group, or take more people"
        )

    def _groups(self, sc, seed: int) -> list[_Group]:
        f, facts = sc.forget, self.kb.facts
        drawn = self._draw_targets(sc, seed)
        cap = f["deep_sets"] or None
        stored = set(facts)
        rng = np.random.default_rng([seed, 5081])
        out = []
        for g0 in range(0, len(drawn), f["group"]):
            part = drawn[g0 : g0 + f["group"]]
            ts = [d[0] for d in part]
            sets = [d[1] for d in part]
            supports = [d[3] for d in part]
            rederive = []
            for i, (t, _, derivs, _, _) in enumerate(part):
                prompt = self._rederivation(t, derivs)
                if prompt is not None:
                    rederive.append((i, *prompt))
            closure = (set().union(*map(set, supports)) | set().union(*(s[0] for s in sets))) - set(
                ts
            )
            relevant = set(closure) | set(ts)
            for per_target in sets:  # a fact of any set the search found is not unrelated
                for m in per_target:
                    relevant |= m
            pool = sorted(stored - relevant)
            n = int(sc.eval["unrelated"])
            if len(pool) < n:
                raise ScenarioError(
                    f"eval unrelated asks for {n} unrelated facts, but seed {seed}'s group "
                    f"{len(out)} leaves only {len(pool)} stored facts outside its targets' "
                    "relevant facts: lower eval unrelated or forget group, or take more people"
                )
            unrelated = [
                self.qa[pool[int(i)]] for i in sorted(rng.choice(len(pool), n, replace=False))
            ]
            if self.bio:
                k = min(n, len(self.bio))
                unrelated += [
                    self.bio[int(i)] for i in sorted(rng.choice(len(self.bio), k, replace=False))
                ]
            out.append(
                _Group(
                    targets=ts,
                    minimal=[s[0] for s in sets],
                    sets=[list(s[:cap]) for s in sets],
                    supports=supports,
                    closure=sorted(closure),
                    unrelated=unrelated,
                    rederive=rederive,
                )
            )
        return out

    def _plan(self, sc, seed: int) -> list[tuple]:
        """Every (group, mode) of a seed: the group, the forget items and the attack folds."""
        plan = []
        for gi, grp in enumerate(self._groups(sc, seed)):
            for mode in sc.modes:
                facts = set(grp.targets)
                if mode == "minimal":
                    for m in grp.minimal:
                        facts |= set(m)
                items = [self.qa[f] for f in sorted(facts)]
                folds = (
                    _target_folds(grp, items, sc.relearn, seed) if sc.relearn is not None else None
                )
                plan.append((gi, grp, mode, items, folds))
        return plan

    def worlds(self, sc, seed):
        task = self.task
        plan = self._plan(sc, seed)  # everything that can fail, before the fine-tune
        original, o_sec, _ = finetuned(
            task, self.base, self.base_id, self.pairs, sc.recipe, seed, sc.cache_dir
        )
        data = PairData(self.pairs)
        index = {q: i for i, (q, _) in enumerate(self.pairs)}
        groups = [p[1] for p in plan if p[2] == sc.modes[0]]
        self.info[f"targets_seed{seed}"] = [[str(t) for t in g.targets] for g in groups]
        self.info[f"minimal_set_sizes_seed{seed}"] = [[len(m) for m in g.minimal] for g in groups]
        self.info[f"rederivable_targets_seed{seed}"] = [len(g.rederive) for g in groups]
        for gi, grp, mode, items, folds in plan:
            request = SampleRequest(indices=sorted(index[it.question] for it in items))
            split = split_request(data, request)
            by_q = {it.question: it for it in items}
            forget_items = [by_q[data[int(i)][0]] for i in split.forget_idx]
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
                state={"group": grp, "gi": gi, "mode": mode, "folds": folds},
                fields={"group": gi, "mode": mode},
                metrics={"n_forget": len(forget_items)},
            )

    # -- scoring -----------------------------------------------------------------------
    def _known(self, model, grp: _Group, ev: dict) -> tuple[dict, list[bool]]:
        """Which of the group's targets and relevant facts the model answers (a target by
        its own question), and the target hits (question, then paraphrase)."""
        qa = self.qa
        t_items = [qa[t] for t in grp.targets]
        qs = [it.question for it in t_items] + [it.paraphrased_question for it in t_items]
        t_hits = _hits(self.task, model, qs, [it.key for it in t_items] * 2, ev)
        probe = set(grp.closure)
        for per_target in grp.sets:
            for m in per_target:
                probe |= m
        probe = sorted(probe - set(grp.targets))
        c_items = [qa[f] for f in probe]
        c_hits = _hits(
            self.task, model, [it.question for it in c_items], [it.key for it in c_items], ev
        )
        known = dict(zip(probe, c_hits, strict=True))
        known.update(zip(grp.targets, t_hits[: len(t_items)], strict=True))
        return known, t_hits

    def _score_group(self, model, grp: _Group, ev: dict, before: dict | None) -> tuple[dict, dict]:
        """The row's metrics and what the model knows; ``before``: what the original knew
        (None: this is the original)."""
        known, t_hits = self._known(model, grp, ev)
        u = grp.unrelated
        u_hits = _hits(self.task, model, [it.question for it in u], [it.key for it in u], ev)
        r_hits = _hits(
            self.task, model, [p for _, p, _ in grp.rederive], [k for *_, k in grp.rederive], ev
        )
        was = known if before is None else before
        # Wu et al.'s recall on the facts the original knew: a fact is removed if it was
        # known and is no longer answered; the best over the target's minimal sets
        recalls = []
        for per_target in grp.sets:
            best = None
            for m in per_target:
                m_known = [f for f in m if was[f]]
                if m_known:
                    r = sum(not known[f] for f in m_known) / len(m_known)
                    best = r if best is None else max(best, r)
            if best is not None:
                recalls.append(best)
        metrics = {
            "target_recall": _pct(t_hits),
            "closure_recall": _pct([known[f] for f in grp.closure]),
            "unrelated_acc": _pct(u_hits),
            "rederivation_rate": _pct(r_hits),
            "deep_recall": 100.0 * float(np.mean(recalls)) if recalls else None,
        }
        return metrics, known

    def score(self, sc, world, model, row):
        st = world.state
        key = (world.seed, st["gi"])
        if row == "original":  # the same model and items in every mode: scored once
            if key not in self._original:
                self._original[key] = self._score_group(model, st["group"], sc.eval, None)
            metrics = dict(self._original[key][0])
        else:  # the original is scored first in every world (the runner's order)
            metrics, _ = self._score_group(model, st["group"], sc.eval, self._original[key][1])
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
        """One row per (label, seed): the means over the seed's groups where a metric is
        defined (the count of groups where it is not in ``undefined_in_groups``), costs
        summed or the largest (the original's fine-tune once); each group's metrics are
        kept in ``groups``."""
        out: dict[tuple, dict] = {}
        for r in rows:
            key = (r["method"], r["seed"])
            if key not in out:
                skip = ("group", "metrics", "record", "relearn")
                out[key] = {k: v for k, v in r.items() if k not in skip}
                out[key]["groups"] = []
            group = {"group": r["group"], "metrics": r["metrics"]}
            for extra in ("record", "relearn"):
                if extra in r:
                    group[extra] = r[extra]
            out[key]["groups"].append(group)
        for row in out.values():
            per = [g["metrics"] for g in row["groups"]]
            original = row["method"].split("@")[0] == "original"
            merged, undefined = {}, {}
            for k in per[0]:
                vals = [m.get(k) for m in per if m.get(k) is not None]
                if len(vals) < len(per):
                    undefined[k] = len(per) - len(vals)
                if not vals:
                    merged[k] = None
                elif original and k == "seconds":
                    merged[k] = float(vals[0])  # one fine-tune per seed, shared by the groups
                elif k in _SUMMED:
                    merged[k] = float(np.sum(vals))
                elif k in _LARGEST:
                    merged[k] = float(np.max(vals))
                else:
                    merged[k] = float(np.mean(vals))
            row["metrics"] = merged
            if undefined:
                row["undefined_in_groups"] = undefined
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
