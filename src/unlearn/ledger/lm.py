"""The ledger's handler for causal language models fine-tuned by a fictitious-facts
scenario (``kind: llm``, ``benchmark: fictitious``; ``unlearn train`` writes such a
checkpoint).

The scenario names the pretrained base, the fictitious people and their facts, the chat
template's system prompt and the fine-tuning recipe the oracle retrains with. The
training set is every question-answer pair of the scenario's training people, in the
order the benchmark builds it; sample ids are positions in it, and ``group`` with
``by: person`` names every pair of some people (a person's facts). The people the
scenario holds out were never trained on: they are the membership attack's non-members.

What a certificate reports for a language model:

- ``test_acc``: greedy answer accuracy (%, the fact's key in the answer) on up to
  :data:`UTILITY_ITEMS` pairs of people still retained, the first in a seeded order of
  the training set (what the model must keep serving);
- ``forget_acc``: the same on the request's pairs;
- ``mia_auc``: the loss attack's AUC (%) of the request's pairs against the held-out
  people's pairs (50: indistinguishable from data never trained on), and
  ``removed_mia_auc`` the same on every pair removed so far.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import LedgerError, UnlearnError

__all__ = ["CausalLMHandler", "LMSetup", "lm_setup", "train_lm_checkpoint", "UTILITY_ITEMS"]

#: how many retained pairs the utility figure (``test_acc``) asks
UTILITY_ITEMS = 40


class LMSetup:
    """A fictitious-facts scenario made concrete: its task, base model, training pairs
    (with person labels) and held-out pairs."""

    def __init__(self, path: str | Path):
        from ..bench.llm import _item_texts, load_base, parse_llm
        from ..bench.scenario import read_scenario_file
        from ..data.fictitious import make_fictitious, world_knowledge
        from ..tasks.causal_lm import CausalLMTask, PairData

        raw, path = read_scenario_file(path)
        sc = parse_llm(raw, str(path))
        if sc.benchmark != "fictitious":
            raise LedgerError(
                f"{path}: the ledger serves fictitious-facts LLM scenarios (their training "
                f"data is known); benchmark {sc.benchmark!r} fine-tunes nothing"
            )
        self.scenario = sc
        d = {"people": 20, "per_person": 4, "holdout_people": 2, "seed": 0, **sc.data}
        facts = make_fictitious(d["people"] + d["holdout_people"], d["per_person"], d["seed"])
        # the same training people and item order as the benchmark (bench.llm)
        keep = set(sorted(p.id for p in facts.people)[: d["people"]])
        self.items = [it for it in facts.items if it.person_id in keep]
        self.holdout = [it for it in facts.items if it.person_id not in keep]
        self.train = PairData(
            [(it.question, it.answer) for it in self.items],
            {"person": [it.person_id for it in self.items]},
        )
        texts = _item_texts(list(facts.items) + world_knowledge())
        self.base, tok, self.base_id = load_base(sc.model, texts, sc.cache_dir, sc.device)
        self.task = CausalLMTask(tok, sc.device, system_prompt=sc.system_prompt)
        h = hashlib.sha256()
        h.update(json.dumps([self.train.pairs, self.train.groups["person"].tolist()]).encode())
        self.data_sha256 = h.hexdigest()

    def fresh(self) -> torch.nn.Module:
        return copy.deepcopy(self.base)

    def finetune(self, pairs: list, seed: int) -> tuple[torch.nn.Module, dict]:
        """The scenario's recipe on ``pairs`` from the pretrained base (a LoRA recipe's
        adapters cached as the benchmark caches them, under the same key)."""
        from ..bench.llm import finetuned

        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            model, seconds, cached = finetuned(
                self.task,
                self.base,
                self.base_id,
                list(pairs),
                self.scenario.recipe,
                seed,
                self.scenario.cache_dir,
            )
        info = {"seconds": time.perf_counter() - start, "from_cache": bool(cached)}
        if cached:
            info["trained_seconds"] = seconds
        return model, info


def lm_setup(path: str | Path) -> LMSetup:
    return LMSetup(path)


def save_lm(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """Every weight of ``model`` as safetensors (tied weights stored once)."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_lm(base: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """A copy of ``base`` with the weights of ``path``; refuses a file of another model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    model = copy.deepcopy(base)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise LedgerError(f"{path} is not a checkpoint of this scenario's model: {exc}") from None
    if missing or unexpected:
        raise LedgerError(
            f"{path} is not a checkpoint of this scenario's model: "
            f"{len(missing)} weight(s) missing (e.g. {list(missing)[:1]}), "
            f"{len(unexpected)} unexpected (e.g. {list(unexpected)[:1]})"
        )
    return model


def train_lm_checkpoint(path: str | Path, seed: int, out: str | Path) -> float:
    """``unlearn train`` for a fictitious-facts scenario: fine-tune the base on every
    training pair with the scenario's recipe and ``seed``, write ``out``; returns the
    greedy answer accuracy (%) on the training pairs it asks for utility."""
    setup = lm_setup(path)
    model, info = setup.finetune(setup.train.pairs, seed)
    acc = _answer_acc(setup, model, _utility_items(setup, set()))
    save_lm(model, out, {"seed": seed, "seconds": round(info["seconds"], 3)})
    return acc


def _utility_items(setup: LMSetup, removed: set[int]) -> list[int]:
    order = np.random.default_rng(0).permutation(len(setup.items))
    return [int(i) for i in order if int(i) not in removed][:UTILITY_ITEMS]


def _answer_acc(setup: LMSetup, model, ids: list[int]) -> float:
    from ..metrics import llm as M

    ev = setup.scenario.eval
    qs = [setup.items[i].question for i in ids]
    gen = setup.task.generate(model, qs, int(ev["max_new_tokens"]), int(ev["batch_size"]))
    return float(M.answer_accuracy(gen, [setup.items[i].key for i in ids]))


class CausalLMHandler:
    """A causal LM fine-tuned by a fictitious-facts scenario."""

    family = "causal_lm"
    #: what ``method: auto`` runs, per selector kind
    auto_methods = {"samples": "graddiff", "group": "graddiff"}

    def __init__(self, registration: dict):
        from .handlers import check_data_digest, registered_scenario

        path = registered_scenario(registration)
        self.setup = lm_setup(path)
        digest = self.setup.data_sha256
        self.data_sha256 = check_data_digest(registration, digest, path)
        self.train = self.setup.train
        self.task = self.setup.task

    # -- files -----------------------------------------------------------------------
    def load(self, path: str | Path) -> torch.nn.Module:
        return load_lm(self.setup.base, path)

    def save(self, model: torch.nn.Module, path: str | Path) -> None:
        save_lm(model, path)

    # -- requests ----------------------------------------------------------------------
    def check_selector(self, selector: dict) -> None:
        from .handlers import check_sample_range

        if "samples" in selector:
            check_sample_range(selector["samples"], len(self.train))
        elif "class" in selector:
            raise LedgerError(
                "a language model's training data has no classes: name sample ids or "
                "a person (group person:ID)"
            )
        else:
            g = selector["group"]
            if g["by"] != "person":
                raise LedgerError(
                    f"selector group by {g['by']!r}: a language model's pairs are grouped "
                    "by person only"
                )
            people = set(self.train.groups["person"].tolist())
            bad = [p for p in g["ids"] if p not in people]
            if bad:
                raise LedgerError(
                    f"person {bad[0]!r} is not one of the model's {len(people)} training people"
                )

    def resolve(self, selector: dict, removed: set[int]) -> list[int]:
        from .handlers import not_removed

        self.check_selector(selector)
        if "samples" in selector:
            return not_removed(selector["samples"], removed)
        people = set(selector["group"]["ids"])
        labels = self.train.groups["person"]
        ids = [i for i in range(len(self.train)) if labels[i] in people and i not in removed]
        if not ids:
            raise LedgerError(f"selector {selector}: every pair of these people was removed before")
        return ids

    def unlearn(
        self, model, selector: dict, ids: list[int], removed: set[int], method, config, seed: int
    ):
        """Remove the pairs ``ids`` from ``model`` (fine-tuned on the training set less
        ``removed``), keeping the other retained pairs; LUNE and IdkPO get replacement
        answers (the fact swapped for another retained person's)."""
        from ..api import unlearn
        from ..bench.llm import replacement_answers
        from ..requests import SampleRequest
        from ..tasks.causal_lm import PairData

        keep = [i for i in range(len(self.train)) if i not in removed]
        pos = {v: j for j, v in enumerate(keep)}
        data = PairData([self.train[i] for i in keep])
        forget = [self.setup.items[i] for i in ids]
        retain = [self.setup.items[i] for i in keep if i not in set(ids)]
        negatives = PairData(replacement_answers(forget, retain), name="negatives")
        return unlearn(
            method,
            model,
            data,
            SampleRequest(indices=sorted(pos[i] for i in ids)),
            task=self.task,
            seed=seed,
            config=config,
            recipe=self.setup.scenario.recipe,
            model_factory=lambda s: self.setup.fresh(),
            alternatives={"replace": negatives},
        )

    def retrain(self, removed: set[int], seed: int):
        keep = [i for i in range(len(self.train)) if i not in removed]
        return self.setup.finetune([self.train[i] for i in keep], seed)

    # -- verification --------------------------------------------------------------------
    def metrics(self, model, ids: list[int], removed: set[int]) -> dict:
        from ..metrics import llm as M

        s, bs = self.setup, int(self.setup.scenario.eval["batch_size"])

        def losses(idx=None, items=None) -> np.ndarray:
            its = items if items is not None else [s.items[i] for i in idx]
            sc = self.task.score(model, [(it.question, it.answer) for it in its], bs)
            return M.loss_scores(sc.logprobs)

        out: dict = {"test_acc": _answer_acc(s, model, _utility_items(s, removed))}
        if not s.holdout:
            raise UnlearnError("the scenario holds out no people: no membership attack")
        hold = losses(items=s.holdout)
        if removed:
            out["removed_mia_auc"] = float(M.mia_auc(losses(sorted(removed)), hold))
            out["removed_total"] = len(removed)
        if ids:
            out["forget_acc"] = _answer_acc(s, model, ids)
            out["mia_auc"] = float(M.mia_auc(losses(ids), hold))
        return out
