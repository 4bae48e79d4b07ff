"""Strong membership attacks and the NeurIPS 2023 challenge score inside a benchmark run.

Configured by a scenario's ``attacks`` mapping::

    attacks:
      references: 16          # reference models on random halves of train + test (cached)
      ulira: [original, retrain, amun]   # rows scored with U-LiRA (true: every row)
      rmia: true              # RMIA with the reference models, every row
      mia_nn: true            # class requests: MIA-NN, every row
      challenge: {models: 8, rows: [amun, salun]}   # NeurIPS 2023 challenge score
      workers: 2              # processes for training models (default: all cores)
      cache_dir: .cache/unlearn

U-LiRA (Hayes et al. 2024): each reference model is made to *unlearn* the target examples it
was trained on, with the method under test, so the "in" distribution of an example's
logit-scaled confidence is that of models which saw it and then unlearned it, and the "out"
distribution that of models which never saw it. Targets are the forget samples (members that
were unlearned) and as many test samples (non-members); AUC 50 means unlearned samples look
exactly like unseen ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..attacks import mia
from ..attacks.reference import ReferenceSet, train_many_cached, train_references
from ..data.core import ArrayData, Split, split_request
from ..errors import ScenarioError
from ..methods.amun import shared_adversarial_search
from ..methods.base import Method, UnlearnContext
from ..models import build_model
from ..requests import ClassRequest, SampleRequest
from ..tasks.classifier import ClassifierTask, TrainRecipe

__all__ = ["AttackConfig", "AttackSuite"]

_KEYS = {
    "references",
    "ulira",
    "rmia",
    "mia_nn",
    "mia_nn_neighbours",
    "mia_nn_references",
    "challenge",
    "workers",
    "cache_dir",
    "targets",
}


@dataclass
class AttackConfig:
    references: int = 16
    ulira: list[str] | bool = False
    rmia: bool = False
    mia_nn: bool = False
    mia_nn_neighbours: int = 3
    mia_nn_references: int = 4  # extra retrained models: half train the attack, half score it
    challenge_models: int = 0
    challenge_rows: list[str] = field(default_factory=list)
    workers: int | None = None
    cache_dir: str = ".cache/unlearn"
    targets: int | None = None  # test samples used as U-LiRA/RMIA non-members (default: |forget|)

    #: Most worker processes a scenario may ask for (each trains one model at a time).
    MAX_WORKERS = 256
    #: The challenge score's forget quality needs at least 3 models per side.
    MIN_CHALLENGE_MODELS = 3

    @classmethod
    def from_dict(cls, raw, source: str) -> AttackConfig:
        """The ``attacks`` mapping of a scenario, every option checked for type and range
        (a :class:`ScenarioError` naming it otherwise)."""
        if raw is None:
            return cls()

        def fail(msg: str) -> ScenarioError:
            return ScenarioError(f"scenario {source}: 'attacks': {msg}")

        def integer(key: str, value, low: int, high: int | None = None) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(f"{key!r} must be an integer, got {value!r}")
            if value < low or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise fail(f"{key!r} must be {bounds}, got {value}")
            return value

        def flag(key: str, value) -> bool:
            if not isinstance(value, bool):
                raise fail(f"{key!r} must be true or false, got {value!r}")
            return value

        def rows(key: str, value) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                raise fail(f"{key!r} must be a list of row labels, got {value!r}")
            if len(set(value)) != len(value):
                raise fail(f"{key!r} lists a row twice: {value!r}")
            return list(value)

        if not isinstance(raw, dict):
            raise ScenarioError(f"scenario {source}: 'attacks' must be a mapping")
        unknown = sorted(map(str, set(raw) - _KEYS))
        if unknown:
            raise ScenarioError(f"scenario {source}: unknown attack option(s) {unknown}")
        kw: dict = {}
        if "references" in raw:
            kw["references"] = integer("references", raw["references"], 4)
            if kw["references"] % 2:
                raise fail(f"'references' must be even and >= 4, got {kw['references']}")
        if "ulira" in raw:
            u = raw["ulira"]
            kw["ulira"] = u if isinstance(u, bool) else rows("ulira", u)
        for key in ("rmia", "mia_nn"):
            if key in raw:
                kw[key] = flag(key, raw[key])
        if "mia_nn_neighbours" in raw:
            kw["mia_nn_neighbours"] = integer("mia_nn_neighbours", raw["mia_nn_neighbours"], 1)
        if "mia_nn_references" in raw:
            r = integer("mia_nn_references", raw["mia_nn_references"], 2)
            if r % 2:
                raise fail(f"'mia_nn_references' must be even and >= 2, got {r}")
            kw["mia_nn_references"] = r
        if raw.get("workers") is not None:
            kw["workers"] = integer("workers", raw["workers"], 1, cls.MAX_WORKERS)
        if "cache_dir" in raw:
            c = raw["cache_dir"]
            if not isinstance(c, str) or not c.strip():
                raise fail(f"'cache_dir' must be a folder path, got {c!r}")
            kw["cache_dir"] = c
        if raw.get("targets") is not None:
            kw["targets"] = integer("targets", raw["targets"], 1)
        ch = raw.get("challenge")
        if ch is not None:
            if not isinstance(ch, dict) or set(ch) - {"models", "rows"}:
                raise fail(f"'challenge' takes 'models' and 'rows', got {ch!r}")
            kw["challenge_rows"] = rows("challenge rows", ch.get("rows", []))
            if "models" in ch:
                kw["challenge_models"] = integer("challenge models", ch["models"], 0)
            if kw["challenge_rows"] and kw.get("challenge_models", 0) < cls.MIN_CHALLENGE_MODELS:
                raise fail(
                    f"the challenge score needs models >= {cls.MIN_CHALLENGE_MODELS}, "
                    f"got {kw.get('challenge_models', 0)}"
                )
        return cls(**kw)

    @property
    def active(self) -> bool:
        return bool(self.ulira or self.rmia or self.mia_nn or self.challenge_rows)

    @property
    def needs_references(self) -> bool:
        return bool(self.ulira or self.rmia)


def _phi(task: ClassifierTask, model, data: ArrayData) -> np.ndarray:
    return mia.logit_confidence(task.logits(model, data).numpy(), data.targets())


def _p_true(task: ClassifierTask, model, data: ArrayData) -> np.ndarray:
    p = task.probs(model, data).numpy()
    return p[np.arange(len(data)), data.targets()]


class AttackSuite:
    """Runs the configured attacks for one scenario; references are trained once."""

    def __init__(
        self,
        cfg: AttackConfig,
        train: ArrayData,
        test: ArrayData,
        spec: dict,
        recipe: TrainRecipe,
        task: ClassifierTask,
        methods: dict[str, Method],
        say: Callable[[str], None],
    ):
        self.cfg, self.train, self.test, self.spec = cfg, train, test, spec
        self.recipe, self.task, self.methods, self.say = recipe, task, methods, say
        self.pool = ArrayData(
            torch.cat([train.x, test.x]), torch.cat([train.y, test.y]), train.classes, "pool"
        )
        self.refs: ReferenceSet | None = None
        self.ref_p: np.ndarray | None = None

    # -- set-up ---------------------------------------------------------------------
    def validate(self, labels: list[str], is_class: bool) -> None:
        known = {"original", "retrain", "oracle_noise", *labels}
        rows = self.cfg.ulira if isinstance(self.cfg.ulira, list) else []
        for r in [*rows, *self.cfg.challenge_rows]:
            if r not in known:
                raise ScenarioError(f"attack row {r!r} is not a row of this scenario")
        if self.cfg.mia_nn and not is_class:
            raise ScenarioError("mia_nn is an attack for class requests")
        if (self.cfg.ulira or self.cfg.challenge_rows) and is_class:
            raise ScenarioError("ulira and the challenge score are run for sample requests")

    def prepare(self, seed: int) -> None:
        if self.cfg.needs_references and self.refs is None:
            self.say(f"training {self.cfg.references} reference models (cached)")
            self.refs = train_references(
                self.pool,
                self.spec,
                self.recipe,
                self.cfg.references,
                seed=seed,
                cache_dir=Path(self.cfg.cache_dir),
                workers=self.cfg.workers,
            )
        if self.cfg.rmia and self.ref_p is None:
            # probability of the true label under every reference model: (pool size, K)
            self.ref_p = np.stack(
                [_p_true(self.task, self.refs.model(j), self.pool) for j in range(len(self.refs))],
                axis=1,
            )

    # -- per seed -------------------------------------------------------------------------
    def evaluate(self, seed: int, split: Split, request, original, models: dict, rows: list):
        """Add attack metrics to this seed's ``rows`` (models: label -> model)."""
        by_label = {r["method"]: r["metrics"] for r in rows}
        if self.cfg.ulira or self.cfg.rmia:
            targets = self._targets(seed, split)
        if self.cfg.rmia:
            for label, model in models.items():
                by_label[label].update(self._rmia(model, *targets))
        if self.cfg.ulira:
            labels = list(models) if self.cfg.ulira is True else self.cfg.ulira
            # AMUN rows unlearn the same references with the same search: one search each
            with shared_adversarial_search():
                for label in labels:
                    by_label[label].update(self._ulira(label, seed, models[label], *targets))
                    self.say(f"seed {seed}: U-LiRA {label} {by_label[label]['ulira_auc']:.1f}")
        if self.cfg.mia_nn:
            self._mia_nn(seed, split, request, original, models, by_label)
        if self.cfg.challenge_rows:
            self._challenge(seed, split, request, original, models, by_label)

    def _targets(self, seed: int, split: Split):
        rng = np.random.default_rng(seed + 17)
        n_t = self.cfg.targets or len(split.forget_idx)
        n_t = min(n_t, len(self.test) // 2)
        test_pos = np.sort(rng.choice(len(self.test), size=n_t, replace=False))
        t_forget = split.forget_idx.astype(np.int64)
        t_test = len(self.train) + test_pos
        rest = np.setdiff1d(np.arange(len(self.test)), test_pos)
        population = len(self.train) + rest
        return t_forget, t_test, population

    def _rmia(self, model, t_forget, t_test, population) -> dict:
        refs = self.refs
        T = np.concatenate([t_forget, t_test])
        data_t, data_z = self.pool.subset(T), self.pool.subset(population)
        scores = mia.rmia_scores(
            _p_true(self.task, model, data_t),
            self.ref_p[T],
            _p_true(self.task, model, data_z),
            self.ref_p[population],
            ref_in_mask=refs.in_mask[:, T].T,
        )
        m, u = scores[: len(t_forget)], scores[len(t_forget) :]
        return {"rmia_auc": mia.roc_auc(m, u), "rmia_tpr_1fpr": mia.tpr_at_fpr(m, u, 0.01)}

    def _ulira(self, label, seed, model, t_forget, t_test, population) -> dict:
        refs = self.refs
        T = np.concatenate([t_forget, t_test])
        data_t = self.pool.subset(T)
        K = len(refs)
        unlearned = np.full((len(T), K), np.nan)
        retrained = np.full((len(T), K), np.nan)
        in_T = refs.in_mask[:, T]  # (K, |T|)
        ref_models = self._unlearn_references(label, seed, T)
        for j, m in enumerate(ref_models):
            phi = _phi(self.task, m, data_t)
            unlearned[in_T[j], j] = phi[in_T[j]]
            retrained[~in_T[j], j] = phi[~in_T[j]]
        scores = mia.ulira_scores(_phi(self.task, model, data_t), unlearned, retrained)
        m, u = scores[: len(t_forget)], scores[len(t_forget) :]
        return {"ulira_auc": mia.roc_auc(m, u), "ulira_tpr_1fpr": mia.tpr_at_fpr(m, u, 0.01)}

    def _unlearn_references(self, label: str, seed: int, T: np.ndarray) -> list:
        """Each reference model after unlearning the targets it was trained on."""
        refs = self.refs
        out = []
        jobs = []
        for j in range(len(refs)):
            h = refs.train_indices(j)
            forget_pos = np.flatnonzero(np.isin(h, T))
            jobs.append((h, forget_pos))
        if label in ("retrain", "oracle_noise"):
            data = [
                (self.pool.subset(np.delete(h, fp)), seed * 7919 + j)
                for j, (h, fp) in enumerate(jobs)
            ]
            return self._train(data)
        for j, (h, fp) in enumerate(jobs):
            ref = refs.model(j)
            if label == "original":
                out.append(ref)
                continue
            request = SampleRequest(indices=[int(i) for i in fp])
            split = split_request(self.pool.subset(h, f"reference-{j}"), request)
            out.append(self._unlearn(label, ref, split, request, seed * 1000 + j))
        return out

    def _mia_nn(self, seed, split, request, original, models, by_label) -> None:
        """MIA-NN with ``mia_nn_references`` extra retrained models (other seeds).

        The attack learns to tell the original model's neighbour-class
        probabilities from those of the first half of the extra retrained
        models; each row is then scored against the pooled second half, so the
        oracle row measures the spread between retrained models itself.
        """
        assert isinstance(request, ClassRequest)
        forgotten = request.classes[0]
        forget = split.forget
        r = self.cfg.mia_nn_references
        extra = self._train([(split.retain, seed + 2000 + i) for i in range(r)])
        probs = {k: self.task.probs(m, forget).numpy() for k, m in models.items()}
        neighbours = mia.nearest_classes(probs["original"], forgotten, k=self.cfg.mia_nn_neighbours)
        feats = {k: mia.mia_nn_features(v, neighbours) for k, v in probs.items()}
        extra_feats = [
            mia.mia_nn_features(self.task.probs(m, forget).numpy(), neighbours) for m in extra
        ]
        train_neg = np.concatenate(extra_feats[: r // 2])
        reference = np.concatenate(extra_feats[r // 2 :])
        for label in models:
            by_label[label]["mia_nn_auc"] = mia.mia_nn_auc(
                feats["original"], train_neg, feats[label], reference, seed=seed
            )

    def _unlearn(self, label: str, model, split: Split, request, seed: int):
        """Row ``label``'s method applied to ``model`` for ``split`` with ``seed``."""
        ctx = UnlearnContext(
            task=self.task,
            split=split,
            request=request,
            original=model,
            seed=seed,
            recipe=self.recipe,
            model_factory=lambda s: build_model(self.spec, seed=s),
        )
        return self.methods[label].run(model, ctx)[0]

    def _train(self, jobs: list[tuple[ArrayData, int]]) -> list[torch.nn.Module]:
        """Models trained with the scenario's recipe on ``(data, seed)`` jobs, in eval mode
        (cached by content in the attacks' ``cache_dir``: a rerun loads them)."""
        models = []
        states = train_many_cached(
            jobs, self.spec, self.recipe, self.cfg.workers, Path(self.cfg.cache_dir)
        )
        for state in states:
            m = build_model(self.spec)
            m.load_state_dict(state)
            models.append(m.eval())
        return models

    def _challenge(self, seed, split, request, original, models, by_label) -> None:
        n = self.cfg.challenge_models
        forget, retain = split.forget, split.retain
        self.say(f"seed {seed}: challenge score: {n} retrained models")
        retrained = self._train([(retain, seed * 100 + 5000 + i) for i in range(n)])
        r_stats = np.stack([_phi(self.task, m, forget) for m in retrained], axis=1)
        acc = lambda m, d: float((self.task.logits(m, d).argmax(1) == d.y).float().mean())  # noqa: E731
        ra_r = np.mean([acc(m, retain) for m in retrained])
        ta_r = np.mean([acc(m, self.test) for m in retrained])
        for label in self.cfg.challenge_rows:
            if label == "original":
                unl = [original] * n
            elif label in ("retrain", "oracle_noise"):
                unl = self._train([(retain, seed * 100 + 9000 + i) for i in range(n)])
            else:
                unl = [
                    self._unlearn(label, original, split, request, seed * 100 + i) for i in range(n)
                ]
            u_stats = np.stack([_phi(self.task, m, forget) for m in unl], axis=1)
            eps = mia.per_example_epsilon(u_stats, r_stats)
            fq = mia.forget_quality(eps, num_models=n)
            ra_u = np.mean([acc(m, retain) for m in unl])
            ta_u = np.mean([acc(m, self.test) for m in unl])
            by_label[label]["forget_quality"] = float(fq)
            by_label[label]["challenge_score"] = float(
                mia.challenge_score(fq, ra_u, ra_r, ta_u, ta_r)
            )
