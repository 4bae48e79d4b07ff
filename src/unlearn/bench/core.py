"""The one scenario runner: original -> oracle -> noise floor -> methods -> attacks.

Every benchmark scenario, of every model family, runs through :func:`run`. What
differs between families lives in a :class:`Family` plugin, chosen by the
scenario's ``kind`` (``classifier`` when absent): how the scenario is validated,
how one seed's world is built (data, request, split, the original model and the
context the methods get), how the oracle and its noise floor are trained, how a
model is scored, and which attacks run after a seed. The loop, the rows, the
costs, the progress ticks, the summary and the results document are common.

A plugin may split one seed into several worlds (``World.tag``, e.g. one per
forget fraction: rows ``retrain@5%``). A family without an oracle (a pretrained
LLM cannot be retrained) returns ``None`` from :meth:`Family.oracle`, and its
tables carry no ``retrain`` / ``oracle_noise`` rows. A metric a family cannot
compute for a row is ``None``: the report shows it as missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ScenarioError
from ..executor import Execution, Executor, using
from ..methods.base import Method, RunRecord, UnlearnContext
from ..metrics.registry import check_rows

__all__ = [
    "Family",
    "World",
    "register_family",
    "family_for",
    "parse",
    "run",
    "run_parsed",
    "summarise",
    "versions",
]

REFERENCE_ROWS = ("original", "retrain", "oracle_noise")


def versions() -> dict:
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
    """Mean and spread (sample standard deviation; 0 for one seed) per method and metric;
    a metric missing (None or not finite) on any seed is missing (None) in the summary."""
    order: list[str] = []
    for r in rows:
        if r["method"] not in order:
            order.append(r["method"])
    out = []
    for name in order:
        mine = [r["metrics"] for r in rows if r["method"] == name]
        keys = [k for k in mine[0] if all(k in m for m in mine)]
        mean, std = {}, {}
        for k in keys:
            vals = [m[k] for m in mine]
            if any(v is None or not np.isfinite(v) for v in vals):
                mean[k] = std[k] = None  # missing on some seed: the summary is missing too
                continue
            mean[k] = float(np.mean(vals))
            std[k] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.append({"method": name, "n_seeds": len(mine), "mean": mean, "std": std})
    return out


@dataclass
class World:
    """One seed's inputs (or one part of a seed, named by ``tag``)."""

    seed: int
    ctx: UnlearnContext
    original_cost: dict
    tag: str = ""
    state: dict = field(default_factory=dict)  # whatever the family keeps for scoring
    #: keys every row of the world carries beside its metrics (e.g. ``forget_class``)
    fields: dict = field(default_factory=dict)
    #: values every row's metrics carry (e.g. ``n_train``, ``n_forget``)
    metrics: dict = field(default_factory=dict)

    def label(self, name: str) -> str:
        return f"{name}{self.tag}"


class Family:
    """A model family's part of a benchmark; subclasses fill in the steps."""

    kind: ClassVar[str] = ""
    #: the task family whose metrics the rows carry (see unlearn.metrics.registry)
    task_family: ClassVar[str] = ""
    #: keep every model of a world until its attacks ran (False: free each once scored)
    keep_models: ClassVar[bool] = True
    #: seeds are independent and may run in parallel worker processes (the executor's)
    parallel_seeds: ClassVar[bool] = False
    #: rows may be saved and reused by a rerun (``--resume``, :mod:`unlearn.bench.rowcache`):
    #: the family's later rows and attacks need no model of an earlier row, only the state
    #: :meth:`row_state` saves
    resumable: ClassVar[bool] = False

    # -- the scenario --------------------------------------------------------------
    def parse(self, raw: dict, source: str, base_dir: Path | None) -> Any:
        """The validated scenario; it has ``name``, ``seeds``, ``methods`` (a list of
        ``(label, Method)``), ``noise_seed_offset`` and ``raw``."""
        raise NotImplementedError

    def inputs(self, sc: Any, path: Path) -> list[Path]:
        """The files the scenario reads (an output must never overwrite one)."""
        return [path]

    def check(self, sc: Any) -> None:
        """Checks against the data that need no training (``unlearn bench --check``)."""

    def setup(self, sc: Any, say: Callable[[str], None]) -> None:
        """Load data and base models and check everything that can fail before training."""

    def running(self, sc: Any):
        """A context the whole run happens in (e.g. a thread limit)."""
        return contextlib.nullcontext()

    def ticks(self, sc: Any) -> int:
        """How many progress ticks the run makes (for the progress bar): per world, the
        original, the oracle and its noise floor (where there is one), every method."""
        return len(sc.seeds) * (3 + len(sc.methods))

    # -- one seed --------------------------------------------------------------------
    def worlds(self, sc: Any, seed: int) -> Iterator[World]:
        raise NotImplementedError

    #: False for a family that has no oracle (a pretrained model cannot be retrained)
    has_oracle: ClassVar[bool] = True

    def oracle(self, sc: Any, world: World) -> tuple[Any, dict] | None:
        """The oracle (retrained without the forget set) and its cost, or None. A family
        that trains its references itself (cached, timed by repeats) leaves them in
        ``world.state["oracle"]`` as ``(model, seconds)``."""
        if "oracle" in world.state:
            model, seconds = world.state.pop("oracle")
            return model, {"seconds": seconds}
        if not self.has_oracle:
            return None
        model, rec = self._retrain(world, world.seed)
        world.state["oracle_record"] = rec.to_dict()
        return model, rec.cost()

    def noise(self, sc: Any, world: World) -> tuple[Any, dict] | None:
        """The oracle retrained with another seed (its noise floor); likewise
        ``world.state["noise"]`` where the family trained it."""
        if "noise" in world.state:
            model, seconds = world.state.pop("noise")
            world.state["noise_seconds"] = seconds
            return model, {"seconds": seconds}
        model, rec = self._retrain(world, world.seed + sc.noise_seed_offset)
        return model, rec.cost()

    @staticmethod
    def _retrain(world: World, seed: int) -> tuple[Any, RunRecord]:
        from ..methods.base import get_method

        ctx = world.ctx
        seeded = UnlearnContext(
            task=ctx.task,
            split=ctx.split,
            request=ctx.request,
            original=ctx.original,
            seed=seed,
            recipe=ctx.recipe,
            model_factory=ctx.model_factory,
        )
        return get_method("retrain").run(ctx.original, seeded)

    def set_oracle(self, sc: Any, world: World, oracle: Any, metrics: dict) -> None:
        """Called once the oracle is scored, before any other row."""

    def score(self, sc: Any, world: World, model: Any, row: str) -> dict:
        """Metrics of ``model`` (row ``row``: original, retrain, oracle_noise or a label)."""
        raise NotImplementedError

    def run_method(self, sc: Any, world: World, method: Method) -> tuple[Any, RunRecord]:
        return method.run(world.ctx.original, world.ctx)

    def after_seed(self, sc: Any, world: World, models: dict, rows: list[dict]) -> None:
        """Evaluation steps that need every model of the seed (attacks)."""

    def tick_text(self, row: str, metrics: dict) -> str:
        return ""

    def row_state(self, sc: Any, world: World, row: str) -> dict:
        """What a resumed run needs of row ``row`` besides the row itself (JSON values)."""
        return {}

    def restore_row(self, sc: Any, world: World, row: str, state: dict) -> None:
        """Put back what :meth:`row_state` saved, for a row a rerun reuses."""

    def seed_info(self) -> dict:
        """What a worker process's run of one seed adds to the document's ``info`` (sent
        back to the parent, which merges it with :meth:`merge_seed_info`)."""
        return {}

    def merge_seed_info(self, info: dict) -> None:
        """Take in a worker's :meth:`seed_info`."""

    # -- the document -------------------------------------------------------------------
    def document(self, sc: Any) -> dict:
        """The results document's keys besides rows, summary, versions and timing."""
        raise NotImplementedError

    def order_rows(self, sc: Any, rows: list[dict]) -> list[dict]:
        return rows


_FAMILIES: dict[str, type[Family]] = {}


def register_family(cls: type[Family]) -> type[Family]:
    _FAMILIES[cls.kind] = cls
    return cls


def family_for(raw: Any, source: str = "scenario") -> Family:
    """The plugin of a scenario mapping's ``kind`` (``classifier`` when absent)."""
    from . import ablation, certified, diffusion, federated, generator, llm, runner, vlm  # noqa: F401  (register the built-in families)

    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario {source}: must be a mapping of keys to values")
    kind = raw.get("kind", "classifier")
    if not isinstance(kind, str) or kind not in _FAMILIES:
        raise ScenarioError(
            f"scenario {source}: unknown kind {kind!r} (known: {', '.join(sorted(_FAMILIES))})"
        )
    return _FAMILIES[kind]()


def parse(fam: Family, raw: dict, source: str, base_dir: Path | None) -> Any:
    """``fam.parse``, remembering what a worker process needs to parse it again."""
    sc = fam.parse(raw, source, base_dir)
    sc.job = (raw, source, None if base_dir is None else str(base_dir))
    return sc


def run(
    raw: dict,
    source: str = "<mapping>",
    base_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    seeds: list[int] | None = None,
    execution: Execution | None = None,
) -> dict:
    """Run a scenario mapping of any family; return the ``results.json`` document."""
    fam = family_for(raw, source)
    if seeds is not None:
        raw = {**raw, "seeds": list(seeds)}
    sc = parse(fam, raw, source, base_dir)
    return run_parsed(fam, sc, progress, execution)


def run_parsed(
    fam: Family,
    sc: Any,
    progress: Callable[[str], None] | None = None,
    execution: Execution | None = None,
    resume: str | Path | None = None,
) -> dict:
    """Run a parsed scenario. Seeds run in parallel worker processes (``execution``: its
    engine, workers and threads; default: the local pool, one process per core and one
    BLAS thread each) where the family allows it; the numbers do not depend on the engine
    or the worker count, only on the thread count. ``resume``: a folder where every row is
    saved as it is scored and from which saved rows are reused (:mod:`.rowcache`; only for
    a family that is ``resumable``)."""
    from .targets import parse_targets

    if resume is not None and not fam.resumable:
        raise ScenarioError(
            f"scenario {sc.name}: {fam.kind} runs cannot be resumed (their attacks need the "
            "models of every row); run without --resume"
        )

    execution = execution or Execution()
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    parse_targets(sc.raw.get("targets"), f"scenario {sc.name}")  # a bad block fails before work
    total, done = fam.ticks(sc), 0  # counted again once the data is loaded

    def tick(msg: str) -> None:
        nonlocal done
        done += 1
        say(f"[{done}/{total}] {msg}")

    rows: list[dict] = []
    parallel = (
        fam.parallel_seeds
        and len(sc.seeds) > 1
        and getattr(sc, "job", None) is not None
        and (execution.engine == "ray" or execution.workers_for(len(sc.seeds)) > 1)
    )
    workers = execution.workers_for(len(sc.seeds)) if parallel else 1
    with using(execution), fam.running(sc):
        fam.setup(sc, say)
        total = fam.ticks(sc)
        if parallel:
            per_seed = total // len(sc.seeds)
            raw, source, base_dir = sc.job
            where = None if resume is None else str(resume)
            jobs = [(raw, source, base_dir, seed, os.getcwd(), where) for seed in sc.seeds]
            say(f"{len(jobs)} seeds on {workers} {execution.engine} workers")

            def seed_done(i: int, _rows: list) -> None:
                for k in range(per_seed):
                    tick(f"seed {sc.seeds[i]} done" if k == per_seed - 1 else f"seed {sc.seeds[i]}")

            for seed_rows, info in Executor(execution).map(_seed_job, jobs, on_done=seed_done):
                rows += seed_rows
                fam.merge_seed_info(info)
        else:
            cache = _cache(sc, resume)
            for seed in sc.seeds:
                for world in fam.worlds(sc, seed):
                    rows += _run_world(fam, sc, world, tick, cache)
    resumed = [{"method": r["method"], "seed": r["seed"]} for r in rows if r.pop("_resumed", False)]
    rows = fam.order_rows(sc, rows)
    doc = fam.document(sc)
    doc.setdefault("versions", versions())
    if resume is not None:
        from .rowcache import source_digest

        doc["resumed"] = {"rows": resumed, "source_digest": source_digest()}
    return {
        **doc,
        "seeds": sc.seeds,
        "execution": {**execution.to_dict(), "workers": workers},
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
        "summary": summarise(rows),
    }


def _seed_job(job: tuple) -> tuple[list[dict], dict]:
    """One seed of a scenario in a worker process: parse, set up and run its worlds;
    returns the rows and the family's :meth:`Family.seed_info`."""
    raw, source, base_dir, seed, cwd, resume = job
    os.chdir(cwd)  # relative paths (data, checkpoints, caches) as in the parent
    fam = family_for(raw, source)
    sc = fam.parse({**raw, "seeds": [seed]}, source, None if base_dir is None else Path(base_dir))
    rows: list[dict] = []
    cache = _cache(sc, resume)
    with fam.running(sc):
        fam.setup(sc, lambda msg: None)
        for world in fam.worlds(sc, seed):
            rows += _run_world(fam, sc, world, lambda msg: None, cache)
    return rows, fam.seed_info()


def _row_key(world: World, name: str) -> str:
    """A row's name in the row cache: its label and the world's fields (several worlds of
    a seed may share a tag, e.g. one per group of targets)."""
    import json

    fields = json.dumps(world.fields, sort_keys=True, default=str) if world.fields else ""
    return world.label(name) + (f"|{fields}" if fields else "")


def _cache(sc: Any, resume: str | Path | None):
    if resume is None:
        return None
    from .rowcache import RowCache

    return RowCache(resume, sc.raw, sc.name)


def _run_world(
    fam: Family, sc: Any, world: World, tick: Callable[[str], None], cache: Any = None
) -> list[dict]:
    """The rows of one world: original, oracle and noise floor (where there is one),
    then every method; the attacks last. With a row ``cache`` (``--resume``) each row is
    saved once scored, and a saved row is taken instead of computed (marked ``_resumed``)."""
    seed = world.seed
    rows: list[dict] = []
    models: dict[str, Any] = {"original": world.ctx.original}
    at = f"seed {seed}{' ' + world.tag if world.tag else ''}"
    tick(f"{at}: original ready ({world.original_cost['seconds'] or 0:.1f}s)")

    configs = {label: {"name": m.name, "config": dataclasses.asdict(m.config)}
               for label, m in sc.methods}  # fmt: skip

    def saved(name: str) -> dict | None:
        if cache is None:
            return None
        got = cache.get(seed, _row_key(world, name), configs.get(name))
        if got is None:
            return None
        row, state = got
        fam.restore_row(sc, world, name, state)
        return {**row, "_resumed": True}

    def save(name: str, row: dict) -> None:
        if cache is not None:
            state = fam.row_state(sc, world, name)
            cache.put(seed, _row_key(world, name), row, state, configs.get(name))

    def add(name: str, model: Any, cost: dict, record: dict | None = None) -> dict:
        metrics = fam.score(sc, world, model, name)
        metrics.update(cost)
        metrics.update(world.metrics)
        o_sec = world.state.get("oracle_seconds")
        if o_sec and cost.get("seconds") is not None:
            metrics["time_vs_oracle"] = cost["seconds"] / o_sec
        row = {"method": world.label(name), "seed": seed, **world.fields, "metrics": metrics}
        if record is not None:
            row["record"] = record
        check_rows([row], fam.task_family)  # as it is built: a bad key fails early
        save(name, row)
        rows.append(row)
        return metrics

    def reuse(name: str, row: dict) -> dict:
        check_rows([row], fam.task_family)
        rows.append(row)
        return row["metrics"]

    ref = fam.oracle(sc, world)
    o_row = None
    if ref is not None:
        oracle, o_cost = ref
        world.state["oracle_seconds"] = o_cost["seconds"]
        o_row = saved("retrain")
        if o_row is None:
            m_or = fam.score(sc, world, oracle, "retrain")
            m_or.update(o_cost)
            m_or.update(world.metrics)
            m_or["time_vs_oracle"] = 1.0
            fam.set_oracle(sc, world, oracle, m_or)
            o_row = {"method": world.label("retrain"), "seed": seed, **world.fields}
            o_row["metrics"] = m_or
            if "oracle_record" in world.state:
                o_row["record"] = world.state.pop("oracle_record")
            check_rows([o_row], fam.task_family)
            save("retrain", o_row)
        if fam.keep_models:
            models["retrain"] = oracle
        del oracle
        tick(f"{at}: oracle retrained ({o_cost['seconds']:.1f}s)")
    cached = saved("original")
    m0 = reuse("original", cached) if cached else add("original", world.ctx.original,
                                                       world.original_cost)  # fmt: skip
    if ref is not None:
        noise, n_cost = fam.noise(sc, world)
        cached = saved("oracle_noise")
        m_n = reuse("oracle_noise", cached) if cached else add("oracle_noise", noise, n_cost)
        text = fam.tick_text("oracle_noise", m_n)
        if fam.keep_models:
            models["oracle_noise"] = noise
        del noise
        tick(f"{at}: oracle noise floor{text} (original{fam.tick_text('original', m0)})")
        # the documented order: original, retrain, oracle_noise, methods
        rows.insert(1, o_row)
    for label, method in sc.methods:
        cached = saved(label)
        if cached is not None:
            m = reuse(label, cached)
            tick(f"{at}: {label}{fam.tick_text(label, m)} (saved by an earlier run)")
            continue
        model, rec = fam.run_method(sc, world, method)
        m = add(label, model, rec.cost(), rec.to_dict())
        if fam.keep_models:
            models[label] = model
        del model
        tick(f"{at}: {label}{fam.tick_text(label, m)} in {rec.seconds:.2f}s")
    fam.after_seed(sc, world, models, rows)
    check_rows(rows, fam.task_family)  # what the attacks added, before the next seed's work
    return rows
