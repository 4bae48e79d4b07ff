"""``unlearn tune``: hyperparameter search with Optuna on seeds (and classes) no report uses.

A classifier scenario declares what may be tuned in a ``tune:`` block::

    tune:
      seeds: [10, 11, 12]        # tuning seeds: none of the scenario's `seeds`
      classes: [3, 7]            # class requests only: the classes forgotten while tuning
                                 # (one world per seed and class); default: the scenario's
      objective: avg_gap         # a classifier metric, or {metric: M, direction: maximize};
                                 # default avg_gap, minimised
      sampler_seed: 0            # the TPE sampler's seed (default 0)
      space:
        LABEL:                   # a method label of `methods`
          lr: {low: 1.0e-4, high: 1.0e-2, log: true}
          alpha: {low: 0.5, high: 0.99}
          steps: {low: 1, high: 8, int: true}
          epochs: {choices: [1, 1.5, 2]}

Trial 0 is the committed config itself where it lies in the space (the search
starts from it, so its choice is never worse on the tuning worlds). A trial sets
the method's config to the scenario's, with the sampled values in place, runs it
on every tuning world (the world's original model and its oracle, trained once
for all trials) and scores the objective's mean over the worlds. Trials run one
after another in this process, the TPE sampler seeded, so a search is
reproducible. The tuning worlds never use a reported seed or a reported seed's
noise-floor seed, and a fixed forget set is refused (docs/tune.md says what the
tuning still shares with the report: the data set and its test split).

Afterwards the committed config (the scenario's) and the tuned one are both run
on held-out seeds (default: the scenario's own ``seeds``) through the one
benchmark runner, with the executor's workers, and compared there.

Outputs in ``--out DIR`` (written as one unit): ``trials.csv`` (one line per
trial: number, state, objective, every sampled value, the per-world values,
seconds), ``best.yaml`` (the chosen method entry, ready to paste into
``methods:``, and how it was found), ``holdout.json`` (the held-out run's
results) and ``report.md``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ScenarioError, UnlearnError

__all__ = ["Dim", "TuneSpec", "parse_tune", "run_tune"]

_TUNE_KEYS = ("seeds", "classes", "objective", "sampler_seed", "space")
_DIM_KEYS = ("low", "high", "log", "int", "choices")
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: a float or int range (``log``: sampled log-uniformly)
    or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def ends(self) -> list:
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        d: dict = {"low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.integer:
            d["int"] = True
        return d


@dataclass(frozen=True)
class TuneSpec:
    seeds: tuple[int, ...]
    classes: tuple[int, ...] | None
    objective: str
    direction: str
    sampler_seed: int
    space: dict[str, tuple[Dim, ...]]


def _fail(source: str, msg: str) -> ScenarioError:
    return ScenarioError(f"scenario {source}: 'tune': {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _dim(name: str, raw: Any, where: str, source: str) -> Dim:
    if not isinstance(raw, dict):
        raise _fail(source, f"{where} must be {{low, high}} or {{choices: [...]}}, got {raw!r}")
    unknown = sorted(set(raw) - set(_DIM_KEYS))
    if unknown:
        raise _fail(source, f"{where}: unknown key(s) {unknown} (known: {list(_DIM_KEYS)})")
    if "choices" in raw:
        ch = raw["choices"]
        if set(raw) != {"choices"}:
            raise _fail(source, f"{where}: 'choices' excludes low, high, log and int")
        if not isinstance(ch, list) or not ch:
            raise _fail(source, f"{where}: 'choices' must be a non-empty list, got {ch!r}")
        if not all(c is None or isinstance(c, str | bool) or _is_num(c) for c in ch):
            raise _fail(source, f"{where}: choices must be numbers, strings, booleans or null")
        if len({repr(c) for c in ch}) != len(ch):
            raise _fail(source, f"{where}: choices repeat a value")
        return Dim(name, choices=tuple(ch))
    for key in ("low", "high"):
        if key not in raw or not _is_num(raw[key]):
            raise _fail(source, f"{where}: '{key}' must be a finite number, got {raw.get(key)!r}")
    for key in ("log", "int"):
        if key in raw and not isinstance(raw[key], bool):
            raise _fail(source, f"{where}: '{key}' must be true or false, got {raw[key]!r}")
    low, high, log, integer = raw["low"], raw["high"], raw.get("log", False), raw.get("int", False)
    if not low < high:
        raise _fail(source, f"{where}: need low < high, got {low} and {high}")
    if log and low <= 0:
        raise _fail(source, f"{where}: a log range needs low > 0, got {low}")
    if integer and not (_is_int(low) and _is_int(high)):
        raise _fail(source, f"{where}: an int range needs integer low and high")
    return Dim(name, float(low) if not integer else low, high, log, integer)


def parse_tune(
    raw: Any,
    labels: list[str],
    seeds: list[int],
    is_class: bool,
    source: str,
    forget: dict | None = None,
    noise_seed_offset: int = 1000,
):
    """Validate a ``tune:`` block against the scenario's method labels, seeds, forget
    request and noise-floor seeds."""
    from .bench.scenario import MAX_SEED
    from .metrics.registry import METRICS

    if not isinstance(raw, dict):
        raise _fail(source, f"must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(_TUNE_KEYS))
    if unknown:
        raise _fail(source, f"unknown key(s) {unknown} (known: {list(_TUNE_KEYS)})")
    t_seeds = raw.get("seeds")
    if (
        not isinstance(t_seeds, list)
        or not t_seeds
        or not all(_is_int(s) and 0 <= s <= MAX_SEED for s in t_seeds)
        or len(set(t_seeds)) != len(t_seeds)
    ):
        raise _fail(source, f"'seeds' must list distinct seeds in [0, {MAX_SEED}], got {t_seeds!r}")
    shared = sorted(set(t_seeds) & set(seeds))
    if shared:
        raise _fail(
            source,
            f"tuning seeds {shared} are also reported 'seeds': tune on seeds no report uses",
        )
    noise = sorted(set(t_seeds) & {s + noise_seed_offset for s in seeds})
    if noise:
        raise _fail(
            source,
            f"tuning seeds {noise} are the reported seeds' noise-floor seeds (seed + "
            f"noise_seed_offset {noise_seed_offset}): choose others",
        )
    forget = forget or {}
    if "seed" in forget or forget.get("indices") is not None:
        raise _fail(
            source,
            "the forget set is fixed ('forget' seed or indices): tuning would forget the "
            "reported samples; draw it from each run's seed",
        )
    classes = raw.get("classes")
    if classes is not None:
        if not is_class:
            raise _fail(source, "'classes' is for class requests (forget: {kind: class, ...})")
        if (
            not isinstance(classes, list)
            or not classes
            or not all(_is_int(c) and c >= 0 for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise _fail(source, f"'classes' must list distinct classes, got {classes!r}")
        classes = tuple(classes)
    obj = raw.get("objective", "avg_gap")
    direction = None
    if isinstance(obj, dict):
        if set(obj) - {"metric", "direction"} or "metric" not in obj:
            raise _fail(source, f"'objective' must be METRIC or {{metric, direction}}, got {obj}")
        direction = obj.get("direction")
        if direction not in ("minimize", "maximize"):
            raise _fail(source, f"objective direction must be minimize or maximize: {direction!r}")
        obj = obj["metric"]
    spec = METRICS.get(obj) if isinstance(obj, str) else None
    if (
        spec is None
        or "classifier" not in spec.families
        or not set(spec.needs) <= {"outputs", "oracle"}
    ):
        raise _fail(
            source,
            f"objective {obj!r} is not a classifier metric of the model's outputs (attack "
            "and cost metrics cannot be tuned on: the tuning worlds run no attacks)",
        )
    if direction is None:
        if spec.better not in ("lower", "higher"):
            raise _fail(
                source,
                f"objective {obj!r} is best closest to the oracle's value, not lowest or "
                "highest: tune on avg_gap or js_to_oracle, or give a direction",
            )
        direction = "minimize" if spec.better == "lower" else "maximize"
    sampler_seed = raw.get("sampler_seed", 0)
    if not _is_int(sampler_seed) or not 0 <= sampler_seed <= MAX_SEED:
        raise _fail(source, f"'sampler_seed' must be a seed in [0, {MAX_SEED}]: {sampler_seed!r}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise _fail(source, "'space' must map method labels to their searched hyperparameters")
    dims: dict[str, tuple[Dim, ...]] = {}
    for label, entries in space.items():
        if label not in labels:
            raise _fail(source, f"space: {label!r} is not a method label of 'methods' {labels}")
        if not isinstance(entries, dict) or not entries:
            raise _fail(source, f"space: {label!r} must map hyperparameters to ranges")
        dims[label] = tuple(_dim(k, v, f"space.{label}.{k}", source) for k, v in entries.items())
    return TuneSpec(tuple(t_seeds), classes, obj, direction, sampler_seed, dims)


# ---------------------------------------------------------------------------- the search


def _sub_scenario(raw: dict, seeds, methods: list[dict], forget: dict | None = None) -> dict:
    out = {k: v for k, v in raw.items() if k not in ("targets", "attacks", "tune", "seeds")}
    out["seeds"] = list(seeds)
    out["methods"] = methods
    if forget is not None:
        out["forget"] = forget
    return out


def committed_point(config: dict, dims: tuple[Dim, ...]) -> dict | None:
    """The committed config as a point of the space (trial 0), or None when one of its
    values lies outside (or is not given and has no place in) the space."""
    point = {}
    for d in dims:
        if d.name not in config:
            return None
        v = config[d.name]
        if d.choices is not None:
            if v not in d.choices:
                return None
        elif isinstance(v, bool) or not isinstance(v, int | float) or not d.low <= v <= d.high:
            return None
        elif d.integer and not isinstance(v, int):
            return None
        point[d.name] = v
    return point


def _check_space(entry, dims: tuple[Dim, ...]) -> None:
    """Every end of every range makes a valid config (so no trial fails on a bad value)."""
    from .methods.base import get_method

    for d in dims:
        for v in d.ends():
            try:
                get_method(entry.name, {**entry.config, d.name: v})
            except UnlearnError as exc:
                raise UnlearnError(f"'tune' space.{entry.label}.{d.name} = {v!r}: {exc}") from None


def run_tune(
    raw: dict,
    source: str,
    base_dir: Path | None,
    label: str,
    trials: int,
    holdout_seeds: list[int] | None,
    execution=None,
    say=lambda msg: None,
) -> dict:
    """Search ``label``'s hyperparameters; return what ``write_tune`` writes."""
    import optuna

    from .bench.core import parse, run_parsed
    from .bench.runner import ClassifierFamily
    from .executor import Execution, using
    from .methods.base import get_method

    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise UnlearnError(f"--trials must be an integer in [1, {MAX_TRIALS}], got {trials!r}")
    execution = execution or Execution()
    fam = ClassifierFamily()
    sc = parse(fam, raw, source, base_dir)
    s = sc.sc
    if "tune" not in raw:
        raise UnlearnError(f"scenario {source} has no 'tune:' block (see docs/tune.md)")
    entries = {e.label: e for e in sc.entries}
    if label not in entries:
        raise UnlearnError(f"--method {label!r} is not a method label of {source}: {list(entries)}")
    spec = s.tune
    if label not in spec.space:
        raise UnlearnError(
            f"--method {label!r} has no search space in 'tune' (it has: {list(spec.space)})"
        )
    entry, dims = entries[label], spec.space[label]
    _check_space(entry, dims)
    if holdout_seeds is not None and set(holdout_seeds) & set(spec.seeds):
        raise UnlearnError("--holdout-seeds must not share a seed with the tuning seeds")
    h_raw = None
    if holdout_seeds:
        # the held-out run, parsed (seeds, noise-floor collisions...) before any training
        h_raw = _sub_scenario(
            raw,
            holdout_seeds,
            [
                {"name": entry.name, "label": "committed", "config": dict(entry.config)},
                {"name": entry.name, "label": "tuned", "config": dict(entry.config)},
            ],
        )
        try:
            ClassifierFamily().parse(h_raw, source, base_dir)
        except UnlearnError as exc:
            raise UnlearnError(f"--holdout-seeds: {exc}") from None
    method_raw = {"name": entry.name, "label": label, "config": dict(entry.config)}
    forget = None
    if spec.classes is not None:
        forget = {k: v for k, v in s.forget.items() if k not in ("classes", "class")}
        forget["each"] = list(spec.classes)
    t_raw = _sub_scenario(raw, spec.seeds, [method_raw], forget)
    t_start = time.perf_counter()
    with using(execution):
        tfam = ClassifierFamily()
        tsc = parse(tfam, t_raw, source, base_dir)
        tfam.setup(tsc, say)
        worlds = []
        for seed in spec.seeds:
            for world in tfam.worlds(tsc, seed):
                oracle, _ = tfam.oracle(tsc, world)
                m_or = tfam.score(tsc, world, oracle, "retrain")
                tfam.set_oracle(tsc, world, oracle, m_or)
                del oracle
                worlds.append(world)
                say(f"tuning world seed {seed}{world.tag}: original and oracle ready")
        names = [f"seed{w.seed}{w.tag}" for w in worlds]
        per_trial: dict[int, dict] = {}

        def objective(trial) -> float:
            cfg = {**entry.config, **{d.name: d.suggest(trial) for d in dims}}
            t0, values = time.perf_counter(), []
            try:
                method = get_method(entry.name, cfg)
                for w in worlds:
                    model, _ = method.run(w.ctx.original, w.ctx)
                    values.append(tfam.score(tsc, w, model, label).get(spec.objective))
                    del model
            except UnlearnError as exc:  # e.g. a loss that diverged at a high rate
                per_trial[trial.number] = {
                    "values": values,
                    "seconds": time.perf_counter() - t0,
                    "error": " ".join(str(exc).split()),
                }
                say(f"trial {trial.number}: failed ({exc}) {trial.params}")
                raise optuna.TrialPruned(str(exc)) from None
            per_trial[trial.number] = {"values": values, "seconds": time.perf_counter() - t0}
            if any(v is None or not math.isfinite(v) for v in values):
                raise optuna.TrialPruned(f"{spec.objective} not finite on some world")
            value = float(np.mean(values))
            say(f"trial {trial.number}: {spec.objective} {value:.3f} {trial.params}")
            return value

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction=spec.direction,
            sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
        )
        start = committed_point(entry.config, dims)
        if start is not None:  # the search starts from the committed config
            study.enqueue_trial(start)
        study.optimize(objective, n_trials=trials, catch=())
        worlds.clear()  # free the tuning models before the held-out run
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise UnlearnError(f"no trial of {label} gave a finite {spec.objective}")
        best = study.best_trial
        best_cfg = {**entry.config, **best.params}
        tune_seconds = time.perf_counter() - t_start
        holdout = None
        if h_raw is not None:
            h_raw["methods"][1]["config"] = best_cfg
            hfam = ClassifierFamily()
            holdout = run_parsed(hfam, parse(hfam, h_raw, source, base_dir), say, execution)
    return {
        "scenario": source,
        "method": label,
        "method_name": entry.name,
        "objective": spec.objective,
        "direction": spec.direction,
        "tuning_seeds": list(spec.seeds),
        "tuning_classes": None if spec.classes is None else list(spec.classes),
        "sampler_seed": spec.sampler_seed,
        "space": {d.name: d.to_dict() for d in dims},
        "committed_config": dict(entry.config),
        "best_config": best_cfg,
        "best_value": best.value,
        "best_trial": best.number,
        "committed_trial": 0 if start is not None else None,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                **per_trial.get(t.number, {"values": [], "seconds": None}),
            }
            for t in study.trials
        ],
        "worlds": names,
        "tune_seconds": tune_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "execution": execution.to_dict(),
        "holdout": holdout,
    }


# ---------------------------------------------------------------------------- outputs


def holdout_comparison(result: dict) -> dict | None:
    """Committed vs tuned on the held-out seeds: per-seed objective values, means, spreads,
    the paired difference and a verdict: ``beats`` (better by more than the committed
    config's standard deviation over seeds), ``matches`` (within it) or ``worse``."""
    h = result.get("holdout")
    if not h:
        return None
    metric = result["objective"]
    sign = 1.0 if result["direction"] == "minimize" else -1.0

    def values(label: str) -> dict:
        """{(seed, part): value} of a base row (parts: ``LABEL@classC``)."""
        out = {}
        for r in h["rows"]:
            base, _, tag = r["method"].partition("@")
            if base == label:
                out[(r["seed"], tag)] = r["metrics"].get(metric)
        return out

    by = {lab: values(lab) for lab in ("committed", "tuned", "retrain", "oracle_noise", "original")}
    keys = sorted(set(by["committed"]) & set(by["tuned"]))
    seeds = sorted({s for s, _ in keys})
    c = [by["committed"][k] for k in keys]
    t = [by["tuned"][k] for k in keys]
    if not keys or any(v is None or not math.isfinite(v) for v in c + t):
        return {"metric": metric, "seeds": seeds, "verdict": "missing"}
    # per seed: the mean over the seed's parts (one value without parts)
    c_seed = [float(np.mean([by["committed"][k] for k in keys if k[0] == s])) for s in seeds]
    t_seed = [float(np.mean([by["tuned"][k] for k in keys if k[0] == s])) for s in seeds]
    diff = [sign * (a - b) for a, b in zip(c_seed, t_seed, strict=True)]  # > 0: tuned better
    c_sd = float(np.std(c_seed, ddof=1)) if len(c_seed) > 1 else 0.0
    gain = float(np.mean(diff))
    if len(seeds) < 2:
        verdict = "inconclusive (one held-out seed)"
    else:
        verdict = "beats" if gain > c_sd else ("matches" if gain >= -c_sd else "is worse than")
    c, t = c_seed, t_seed

    def stat(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        return [float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0]

    return {
        "metric": metric,
        "seeds": seeds,
        "parts": len(keys) // max(1, len(seeds)),
        "committed": c,
        "tuned": t,
        "committed_mean_std": stat(c),
        "tuned_mean_std": stat(t),
        "noise_floor_mean_std": stat(list(by["oracle_noise"].values())),
        "original_mean_std": stat(list(by["original"].values())),
        "gain": gain,
        "verdict": verdict,
    }


def verdict_text(cmp: dict) -> str:
    v = cmp["verdict"]
    if v.startswith("inconclusive") or v == "missing":
        return f"**{v}**"
    return f"the tuned config **{v}** the committed one"


def trials_csv(result: dict) -> str:
    names = [d for d in result["space"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["number", "state", result["objective"], *names, *result["worlds"], "seconds", "error"]
    )
    for t in result["trials"]:
        vals = t["values"] + [None] * (len(result["worlds"]) - len(t["values"]))
        w.writerow(
            [
                t["number"],
                t["state"],
                "" if t["value"] is None else repr(t["value"]),
                *[t["params"].get(n, "") for n in names],
                *["" if v is None else repr(v) for v in vals],
                "" if t["seconds"] is None else f"{t['seconds']:.3f}",
                t.get("error", ""),
            ]
        )
    return buf.getvalue()


def best_yaml(result: dict) -> str:
    import yaml

    doc = {
        "method": {
            "name": result["method_name"],
            "label": result["method"],
            "config": result["best_config"],
        },
        "found_by": {
            "command": f"unlearn tune {result['scenario']} --method {result['method']} "
            f"--trials {len(result['trials'])} --threads {result['execution']['threads']}"
            + (
                f" --holdout-seeds {','.join(map(str, result['holdout']['seeds']))}"
                if result.get("holdout")
                else " --holdout-seeds none"
            ),
            "objective": result["objective"],
            "direction": result["direction"],
            "value": result["best_value"],
            "trial": result["best_trial"],
            "tuning_seeds": result["tuning_seeds"],
            "tuning_classes": result["tuning_classes"],
            "sampler_seed": result["sampler_seed"],
            "space": result["space"],
        },
    }
    cmp = holdout_comparison(result)
    if cmp:
        doc["holdout"] = {k: cmp[k] for k in ("metric", "seeds", "committed", "tuned", "verdict")}
    return yaml.safe_dump(doc, sort_keys=False)


def report_md(result: dict) -> str:
    m, obj = result["method"], result["objective"]
    lines = [
        f"# unlearn tune: {m} on {result['scenario']}",
        "",
        f"{len(result['trials'])} Optuna trials (TPE, sampler seed {result['sampler_seed']}), "
        f"{obj} {result['direction']}d as the mean over the tuning worlds "
        f"{', '.join(result['worlds'])} (tuning seeds {result['tuning_seeds']}"
        + (f", classes {result['tuning_classes']}" if result["tuning_classes"] else "")
        + f"). Search: {result['tune_seconds']:.0f} s; whole command "
        f"{result['total_seconds']:.0f} s.",
        "",
        f"- committed config: `{result['committed_config']}`"
        + (
            f" (trial 0, {obj} {result['trials'][0]['value']:.4g} on the tuning worlds)"
            if result.get("committed_trial") == 0 and result["trials"][0]["value"] is not None
            else " (outside the space: not a trial)"
        ),
        f"- chosen config (trial {result['best_trial']}, {obj} {result['best_value']:.4g} "
        f"on the tuning worlds): `{result['best_config']}`",
        "",
    ]
    cmp = holdout_comparison(result)
    if cmp and cmp.get("verdict") != "missing":

        def ms(x):
            return "–" if x is None else f"{x[0]:.3f} ± {x[1]:.3f}"

        lines += [
            f"## Held-out seeds {cmp['seeds']}",
            "",
            f"| Row | {obj} (mean ± sd over seeds) | per seed |",
            "|---|---|---|",
            f"| committed | {ms(cmp['committed_mean_std'])} | "
            + ", ".join(f"{v:.3f}" for v in cmp["committed"])
            + " |",
            f"| tuned | {ms(cmp['tuned_mean_std'])} | "
            + ", ".join(f"{v:.3f}" for v in cmp["tuned"])
            + " |",
            f"| oracle_noise | {ms(cmp['noise_floor_mean_std'])} | |",
            f"| original | {ms(cmp['original_mean_std'])} | |",
            "",
            f"Verdict: {verdict_text(cmp)} (mean paired gain {cmp['gain']:+.3f}, per seed "
            f"the mean over {cmp['parts']} part(s); 'beats' means better by more than the "
            "committed config's standard deviation over seeds, 'matches' within it).",
            "",
        ]
    elif result.get("holdout") is None:
        lines += ["No held-out run (--holdout-seeds none).", ""]
    lines += ["## Trials", "", "| # | state | " + obj + " | " + " | ".join(result["space"]) + " |"]
    lines.append("|---|---|---|" + "---|" * len(result["space"]))
    for t in result["trials"]:
        v = "–" if t["value"] is None else f"{t['value']:.4g}"
        ps = " | ".join(_p(t["params"].get(n)) for n in result["space"])
        lines.append(f"| {t['number']} | {t['state']} | {v} | {ps} |")
    return "\n".join(lines) + "\n"


def _p(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def write_tune(result: dict, out: Path) -> Path:
    import json

    from .bench.report import strict_json, write_folder

    clean = strict_json(result)

    def write(folder: Path) -> None:
        (folder / "trials.csv").write_text(trials_csv(clean), encoding="utf-8")
        (folder / "best.yaml").write_text(best_yaml(clean), encoding="utf-8")
        if clean.get("holdout"):
            (folder / "holdout.json").write_text(
                json.dumps(clean["holdout"], indent=1, allow_nan=False), encoding="utf-8"
            )
        (folder / "tune.json").write_text(
            json.dumps({k: v for k, v in clean.items() if k != "holdout"}, indent=1),
            encoding="utf-8",
        )
        (folder / "report.md").write_text(report_md(clean), encoding="utf-8")

    return write_folder(out, write)
