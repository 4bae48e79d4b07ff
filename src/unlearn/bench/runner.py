"""Run a scenario: train the original, the oracle and its noise floor, every method, score all."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from ..data import load_dataset, split_request
from ..io import load_model
from ..methods.base import PeakMemory, UnlearnContext, get_method
from ..models import build_model
from ..requests import ClassRequest
from ..tasks.classifier import ClassifierTask
from .evaluate import Evaluator
from .scenario import Scenario

__all__ = ["run_scenario", "summarise"]

SUMMARY_ORDER = ("original", "retrain", "oracle_noise")


def _versions() -> dict:
    import sklearn

    from .. import __version__

    return {
        "unlearn": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread (sample standard deviation; 0 for one seed) per method and metric."""
    order: list[str] = []
    for r in rows:
        if r["method"] not in order:
            order.append(r["method"])
    out = []
    for name in order:
        mine = [r["metrics"] for r in rows if r["method"] == name]
        keys = [k for k in mine[0] if all(k in m for m in mine)]
        mean = {k: float(np.mean([m[k] for m in mine])) for k in keys}
        std = {
            k: float(np.std([m[k] for m in mine], ddof=1)) if len(mine) > 1 else 0.0 for k in keys
        }
        out.append({"method": name, "n_seeds": len(mine), "mean": mean, "std": std})
    return out


def _run_seed(scenario, seed, train, test, spec, task, methods, tick):
    """The reference rows and every method's row for one seed."""
    request = scenario.request(seed)
    split = split_request(train, request)

    def factory(s: int):
        return build_model(spec, seed=s)

    original = factory(seed).to(task.device)
    with PeakMemory(task.device) as mem:
        t0 = time.perf_counter()
        if scenario.checkpoint:
            load_model(original, scenario.checkpoint, spec)
            steps = 0
        else:
            steps = task.fit(original, train, scenario.train, seed)
        orig_seconds = time.perf_counter() - t0
    tick(f"seed {seed}: original trained ({orig_seconds:.1f}s)")

    def context(run_seed: int) -> UnlearnContext:
        return UnlearnContext(
            task=task,
            split=split,
            request=request,
            original=original,
            seed=run_seed,
            recipe=scenario.train,
            model_factory=factory,
        )

    ctx = context(seed)
    ev = Evaluator(task, split, test, request, seed=seed)
    oracle, o_rec = get_method("retrain").run(original, ctx)
    o_metrics, o_preds = ev.score(oracle)
    o_metrics.update(
        seconds=o_rec.seconds,
        peak_mem_mb=o_rec.peak_mem_mb,
        steps=float(o_rec.steps),
        time_vs_oracle=1.0,
    )
    tick(f"seed {seed}: oracle retrained ({o_rec.seconds:.1f}s)")
    rows = [{"method": "retrain", "seed": seed, "metrics": o_metrics, "record": o_rec.to_dict()}]
    models = {"original": original, "retrain": oracle}

    def record(label, model, seconds, peak, steps, extra=None) -> dict:
        m, _ = ev.score(model, o_preds, o_metrics)
        m.update(
            seconds=seconds,
            peak_mem_mb=peak,
            steps=float(steps),
            time_vs_oracle=seconds / o_rec.seconds,
        )
        row = {"method": label, "seed": seed, "metrics": m}
        if extra:
            row["record"] = extra
        rows.append(row)
        return m

    gap0 = record("original", original, orig_seconds, mem.peak_mb, steps)["avg_gap"]
    noise, n_rec = get_method("retrain").run(original, context(seed + scenario.noise_seed_offset))
    m = record("oracle_noise", noise, n_rec.seconds, n_rec.peak_mem_mb, n_rec.steps)
    models["oracle_noise"] = noise
    tick(f"seed {seed}: oracle noise floor {m['avg_gap']:.2f} (original {gap0:.2f})")
    for label, method in methods:
        model, rec = method.run(original, ctx)
        m = record(label, model, rec.seconds, rec.peak_mem_mb, rec.steps, rec.to_dict())
        models[label] = model
        tick(f"seed {seed}: {label} avg_gap {m['avg_gap']:.2f} in {rec.seconds:.2f}s")
    # keep the documented order: original, retrain, oracle_noise, methods
    rows.insert(0, rows.pop(1))
    return rows, models, split, original


def _model_spec(scenario: Scenario, train) -> dict:
    spec = dict(scenario.model)
    spec.setdefault("input_shape", list(train.input_shape))
    spec.setdefault("num_classes", train.num_classes)
    return spec


def run_scenario(
    scenario: Scenario,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every seed of ``scenario``; return the ``results.json`` document."""
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    train, test = load_dataset(scenario.data)
    spec = _model_spec(scenario, train)
    build_model(spec)  # fail early on a bad model spec
    task = ClassifierTask(train.num_classes, scenario.device)
    methods = [(e.label, e.build()) for e in scenario.methods]
    # Validate every request and method against the data before any training.
    for seed in scenario.seeds:
        request = scenario.request(seed)
        split_request(train, request)
        for _, m in methods:
            m.check(request, task)
    if scenario.checkpoint:
        load_model(build_model(spec), scenario.checkpoint, spec)

    suite = None
    if scenario.attacks.active:
        from .attacks import AttackSuite

        suite = AttackSuite(
            scenario.attacks, train, test, spec, scenario.train, task, dict(methods), say
        )
        suite.validate(
            [label for label, _ in methods],
            isinstance(scenario.request(scenario.seeds[0]), ClassRequest),
        )
        suite.prepare(seed=0)

    rows: list[dict] = []
    total = len(scenario.seeds) * (3 + len(methods))
    done = 0

    def tick(msg: str) -> None:
        nonlocal done
        done += 1
        say(f"[{done}/{total}] {msg}")

    for seed in scenario.seeds:
        seed_rows, models, split, original = _run_seed(
            scenario, seed, train, test, spec, task, methods, tick
        )
        if suite is not None:
            suite.evaluate(seed, split, scenario.request(seed), original, models, seed_rows)
        rows += seed_rows

    return {
        "scenario": scenario.raw,
        "scenario_name": scenario.name,
        "request": scenario.request(scenario.seeds[0]).describe(),
        "model_spec": spec,
        "train_recipe": scenario.train.to_dict(),
        "methods": {
            e.label: {"method": e.name, "config": dict(m.config.__dict__)}
            for e, (_, m) in zip(scenario.methods, methods, strict=True)
        },
        "seeds": scenario.seeds,
        "versions": _versions(),
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
        "summary": summarise(rows),
    }
