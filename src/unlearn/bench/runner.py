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
from .scenario import Scenario, model_spec, parse_scenario

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
        # Validate every request and method against the data before any training.
        for seed in s.seeds:
            request = s.request(seed)
            split_request(self.train, request)
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

    def worlds(self, sc, seed):
        s, task = sc.sc, self.task
        request = s.request(seed)
        split = split_request(self.train, request)

        def factory(k: int):
            return build_model(self.spec, seed=k)

        original = factory(seed).to(task.device)
        with PeakMemory(task.device) as mem:
            t0 = time.perf_counter()
            if s.checkpoint:
                load_model(original, s.checkpoint, self.spec)
                steps = 0
            else:
                steps = task.fit(original, self.train, s.train, seed)
            seconds = time.perf_counter() - t0
        ctx = UnlearnContext(
            task=task,
            split=split,
            request=request,
            original=original,
            seed=seed,
            recipe=s.train,
            model_factory=factory,
        )
        cost = {
            "seconds": seconds,
            "peak_mem_mb": mem.peak_mb,
            "baseline_mem_mb": mem.baseline_mb,
            "steps": float(steps),
        }
        ev = Evaluator(task, split, self.test, request, seed=seed)
        yield World(seed=seed, ctx=ctx, original_cost=cost, state={"ev": ev})

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
            "request": s.request(s.seeds[0]).describe(),
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
