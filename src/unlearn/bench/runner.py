"""The classifier family's benchmark plugin: train the original, the oracle and its noise
floor, run every method, score all (and run the attack suite) through the one runner."""

from __future__ import annotations

import time

from ..data import load_dataset, split_request
from ..io import load_model
from ..methods.base import PeakMemory, UnlearnContext
from ..models import build_model
from ..requests import ClassRequest
from ..tasks.classifier import ClassifierTask
from .core import Family, World, register_family, run_parsed, summarise
from .evaluate import Evaluator
from .scenario import Scenario, model_spec, parse_scenario, resolve_variants, subset_train

__all__ = ["run_scenario", "summarise", "ClassifierFamily"]


@register_family
class ClassifierFamily(Family):
    kind = "classifier"
    task_family = "classifier"
    parallel_seeds = True

    def parse(self, raw, source, base_dir):
        return _Parsed(parse_scenario(raw, source, base_dir))

    def inputs(self, sc, path):
        from .scenario import scenario_inputs

        return scenario_inputs(path, sc.sc)

    def check(self, sc):
        from .scenario import check_scenario

        check_scenario(sc.sc)

    def setup(self, sc, say):
        s = sc.sc
        self.train, self.test = load_dataset(s.data)
        self.spec = model_spec(s, self.train)
        build_model(self.spec)  # fail early on a bad model spec
        self.task = ClassifierTask(self.train.num_classes, s.device)
        self.variants = resolve_variants(s, self.train)
        # Validate every request and method against the data before any training.
        for variant in self.variants:
            part = subset_train(self.train, variant.n_train)
            for seed in s.seeds:
                request = s.request(seed, variant)
                split_request(part, request)
                for _, m in sc.methods:
                    m.check(request, self.task)
        if s.checkpoint:
            load_model(build_model(self.spec), s.checkpoint, self.spec)
        self.suite = None
        if s.attacks.active:
            from .attacks import AttackSuite

            self.suite = AttackSuite(
                s.attacks,
                self.train,
                self.test,
                self.spec,
                s.train,
                self.task,
                dict(sc.methods),
                say,
            )
            self.suite.validate(
                [label for label, _ in sc.methods],
                isinstance(s.request(s.seeds[0]), ClassRequest),
            )
            self.suite.prepare(seed=0)

    def ticks(self, sc):
        parts = getattr(self, "variants", None) or sc.sc.all_variants()
        return len(sc.seeds) * len(parts) * (3 + len(sc.methods))

    def worlds(self, sc, seed):
        """One world per part of the seed (one part unless ``each`` or ``grow``); parts on
        the same training set share the seed's original model."""
        s, task = sc.sc, self.task
        originals: dict = {}

        def factory(k: int):
            return build_model(self.spec, seed=k)

        for variant in self.variants:
            train = subset_train(self.train, variant.n_train)
            request = s.request(seed, variant)
            split = split_request(train, request)
            if variant.n_train not in originals:
                originals.clear()  # one original kept at a time
                originals[variant.n_train] = self._original(s, train, seed)
            original, cost = originals[variant.n_train]
            ctx = UnlearnContext(
                task=task,
                split=split,
                request=request,
                original=original,
                seed=seed,
                recipe=s.train,
                model_factory=factory,
            )
            ev = Evaluator(task, split, self.test, request, seed=seed)
            yield World(
                seed=seed,
                ctx=ctx,
                original_cost=dict(cost),
                tag=variant.tag,
                state={"ev": ev},
                fields=dict(variant.fields),
                metrics=dict(variant.metrics),
            )

    def _describe_request(self, s) -> str:
        first = s.request(s.seeds[0], self.variants[0]).describe()
        if len(self.variants) == 1:
            return first
        if "forget_class" in self.variants[0].fields:
            classes = [v.fields["forget_class"] for v in self.variants]
            return f"each class in turn ({len(classes)} runs per seed: classes {classes})"
        sizes = ", ".join(
            f"{v.metrics['n_forget']} of {v.metrics['n_train']}" for v in self.variants
        )
        return f"random samples at {len(self.variants)} sizes (forget of train: {sizes})"

    def _original(self, s, train, seed):
        task = self.task
        original = build_model(self.spec, seed=seed).to(task.device)
        with PeakMemory(task.device) as mem:
            t0 = time.perf_counter()
            if s.checkpoint:
                load_model(original, s.checkpoint, self.spec)
                steps = 0
            else:
                steps = task.fit(original, train, s.train, seed)
            seconds = time.perf_counter() - t0
        cost = {
            "seconds": seconds,
            "peak_mem_mb": mem.peak_mb,
            "baseline_mem_mb": mem.baseline_mb,
            "steps": float(steps),
        }
        return original, cost

    def score(self, sc, world, model, row):
        ev = world.state["ev"]
        metrics, preds = ev.score(model, world.state.get("o_preds"), world.state.get("o_metrics"))
        if row == "retrain":
            world.state["o_preds"] = preds
        return metrics

    def set_oracle(self, sc, world, oracle, metrics):
        world.state["o_metrics"] = metrics

    def tick_text(self, row, metrics):
        gap = metrics.get("avg_gap")
        return "" if gap is None else f" avg_gap {gap:.2f}"

    def after_seed(self, sc, world, models, rows):
        if self.suite is not None:
            ctx = world.ctx
            self.suite.evaluate(world.seed, ctx.split, ctx.request, ctx.original, models, rows)

    def document(self, sc):
        s = sc.sc
        return {
            "scenario": s.raw,
            "scenario_name": s.name,
            "request": self._describe_request(s),
            "parts": [{"tag": v.tag, **v.fields, **v.metrics} for v in self.variants if v.tag],
            "model_spec": self.spec,
            "train_recipe": s.train.to_dict(),
            "methods": {
                e.label: {"method": e.name, "config": dict(m.config.__dict__)}
                for e, (_, m) in zip(sc.entries, sc.methods, strict=True)
            },
        }


class _Parsed:
    """A parsed classifier scenario as the runner sees it (methods built once)."""

    def __init__(self, sc: Scenario):
        self.sc = sc
        self.name = sc.name
        self.raw = sc.raw
        self.noise_seed_offset = sc.noise_seed_offset
        self.entries = sc.methods
        self.methods = [(e.label, e.build()) for e in sc.methods]

    @property
    def seeds(self):
        return self.sc.seeds


def run_scenario(scenario: Scenario, progress=None) -> dict:
    """Run every seed of a parsed classifier ``scenario``; return the ``results.json``
    document (the one runner with the classifier plugin)."""
    return run_parsed(ClassifierFamily(), _Parsed(scenario), progress)
