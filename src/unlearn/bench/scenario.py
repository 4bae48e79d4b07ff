"""Scenario files: what a benchmark run trains, forgets, runs and scores.

A scenario is YAML (or the equivalent mapping)::

    name: mnist1d-random10
    data: {name: mnist1d}                       # or {format: cifar10, path: ...}
    model: {name: cnn, width: 32}               # input shape and classes come from the data
    checkpoint: null                            # optional: start from these weights
    train: {epochs: 30, lr: 0.003, ...}         # the recipe of the original and the oracle
    forget: {kind: random, fraction: 0.1}       # or {kind: class, classes: [3]}
    methods: [finetune, {name: salun, config: {lr: 0.01}}]
    seeds: [0, 1, 2]
    device: cpu

Everything is validated before any training starts: :func:`parse_scenario`
checks the type and range of every field, :func:`check_scenario` checks the
scenario against its data (the data loads, the model builds, requests and
methods fit). Every problem is a :class:`~unlearn.errors.ScenarioError` naming
the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data import ArrayData, check_data_spec, load_dataset, split_request
from ..errors import ScenarioError, UnlearnError
from ..io import load_model, read_checkpoint_spec
from ..methods.base import Method, get_method
from ..models import build_model, check_model_options
from ..requests import ForgetRequest, request_from_dict
from ..tasks.classifier import ClassifierTask, TrainRecipe
from ..validate import dataclass_from_mapping, resolve_device
from .attacks import AttackConfig
from .core import REFERENCE_ROWS

__all__ = [
    "Scenario",
    "MethodEntry",
    "parse_scenario",
    "check_scenario",
    "load_scenario",
    "read_scenario_file",
    "model_spec",
    "DEFAULT_SCENARIO",
    "LLM_SCENARIO",
    "MAX_SEED",
    "check_plain",
]

_KEYS = {
    "name",
    "data",
    "model",
    "checkpoint",
    "train",
    "forget",
    "methods",
    "seeds",
    "device",
    "noise_seed_offset",
    "description",
    "attacks",
    "kind",
    "targets",
    "grow",
    "tune",
}

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "mnist1d-random10.yaml"
#: The built-in language-model scenario (``unlearn bench --llm``).
LLM_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "smollm2-real-facts.yaml"


@dataclass
class MethodEntry:
    label: str
    name: str
    config: dict

    def build(self) -> Method:
        return get_method(self.name, self.config)


@dataclass
class Scenario:
    name: str
    data: dict
    model: dict
    train: TrainRecipe
    forget: dict
    methods: list[MethodEntry]
    seeds: list[int]
    device: str = "cpu"
    checkpoint: str | None = None
    noise_seed_offset: int = 1000
    description: str = ""
    raw: dict = field(default_factory=dict)
    attacks: AttackConfig = field(default_factory=AttackConfig)
    source: str = "<mapping>"

    variants: list[Variant] = field(default_factory=list)
    tune: Any = None  # the validated `tune:` block (unlearn.tune.TuneSpec), if any

    def request(self, seed: int, variant: Variant | None = None) -> ForgetRequest:
        forget = self.forget if variant is None else variant.forget
        return request_from_dict(forget, default_seed=seed)

    def all_variants(self) -> list[Variant]:
        """The parts every seed runs in (one world each): one, unless ``forget: {each:}``
        or ``grow:`` asks for several."""
        return self.variants or [Variant("", dict(self.forget))]


@dataclass(frozen=True)
class Variant:
    """One part of each seed: its rows' label suffix (``@class3``), its forget request,
    the training-set size it runs on (None: the whole set), the fields its rows carry and
    the values its rows' metrics carry."""

    tag: str
    forget: dict
    n_train: int | None = None
    fields: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def _fail(source: str, msg: str) -> ScenarioError:
    return ScenarioError(f"scenario {source}: {msg}")


#: the error every family's scenario parser raises, naming the scenario
scenario_error = _fail


def scenario_block(cls, raw: dict, key: str, name: str):
    """The dataclass ``cls`` built from the scenario's ``key`` mapping (its defaults where
    the key is absent); a block that is not a mapping, or holds a bad field, raises a
    :class:`ScenarioError` naming the scenario and the key."""
    spec = raw.get(key)
    if spec is not None and not isinstance(spec, dict):
        raise _fail(name, f"'{key}' must be a mapping")
    try:
        return dataclass_from_mapping(cls, spec, key)
    except (UnlearnError, TypeError) as exc:
        raise _fail(name, f"{key}: {exc}") from None


#: Seeds are non-negative and below 2**31: every seed a run derives from one (the noise
#: floor's, the reference models', the generators') then fits the RNGs of torch and numpy.
MAX_SEED = 2**31 - 1
_MAX_DEPTH = 64


def check_plain(value: Any, where: str = "", source: str = "<mapping>", depth: int = 0) -> None:
    """Refuse what a scenario cannot hold: YAML dates, sets, binary, non-string keys,
    NaN or infinite numbers, and nesting deeper than any scenario needs (which also
    catches self-referencing YAML aliases). A scenario is written back into
    ``results.json``, so every value must be plain JSON."""
    if depth > _MAX_DEPTH:
        raise _fail(source, f"{where or 'the scenario'} is nested more than {_MAX_DEPTH} deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(
                    source, f"{where or 'the scenario'} has a key {k!r} that is not a string"
                )
            check_plain(v, f"{where}.{k}" if where else k, source, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]", source, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(source, f"'{where}' must be a finite number, got {value!r}")
    elif value is not None and not isinstance(value, str | int):  # bool is an int
        raise _fail(
            source,
            f"'{where}' holds a {type(value).__name__} ({value!r}); a scenario holds only "
            "strings, numbers, true/false, null, lists and mappings",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_seed(value: Any, where: str, source: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        raise _fail(source, f"{where} must be an integer in [0, {MAX_SEED}], got {value!r}")
    return value


def _string(raw: dict, key: str, source: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise _fail(source, f"'{key}' must be a string, got {value!r}")
    return value


def _parse_seeds(raw: dict, source: str) -> tuple[list[int], int]:
    seeds = raw.get("seeds", [0])
    if _is_int(seeds):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise _fail(source, f"'seeds' must be a non-empty list of integers, got {seeds!r}")
    for i, s in enumerate(seeds):
        _check_seed(s, f"'seeds'[{i}]", source)
    if len(set(seeds)) != len(seeds):
        raise _fail(source, "'seeds' contains duplicates")
    offset = raw.get("noise_seed_offset", 1000)
    if not _is_int(offset) or offset == 0:
        raise _fail(source, f"'noise_seed_offset' must be a non-zero integer, got {offset!r}")
    for s in seeds:
        noise = s + offset
        if not 0 <= noise <= MAX_SEED:
            raise _fail(
                source,
                f"seed {s} + noise_seed_offset {offset} = {noise} is outside [0, {MAX_SEED}]",
            )
        if noise in seeds:
            raise _fail(
                source,
                f"the noise floor's seed {s} + noise_seed_offset {offset} = {noise} is also "
                "one of the 'seeds': choose another noise_seed_offset",
            )
    return list(seeds), offset


def _parse_forget(raw: dict, source: str) -> ForgetRequest:
    forget = raw["forget"]
    if "seed" in forget:
        _check_seed(forget["seed"], "'forget' seed", source)
    for key in ("indices", "classes", "class", "features"):
        value = forget.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list | int) and all(_is_int(v) for v in items):
            continue
        raise _fail(
            source, f"'forget' {key} must be an integer or a list of integers, got {value!r}"
        )
    if not isinstance(forget.get("kind"), str):
        raise _fail(source, f"'forget' needs a 'kind' (random, samples, class...), got {forget}")
    try:
        return request_from_dict(forget)
    except UnlearnError as exc:
        raise _fail(source, f"'forget': {exc}") from None


def _parse_variants(raw: dict, source: str) -> tuple[dict, list[Variant]]:
    """``forget: {kind: class, each: all | [c, ...]}`` (one world per class, rows
    ``LABEL@classC`` carrying ``forget_class``) or ``grow: [{n_train, n_forget}, ...]``
    (one world per size: a random ``n_forget`` of the first ``n_train`` training samples
    of a fixed seeded order; rows ``LABEL@nNfF`` whose metrics carry ``n_train`` and
    ``n_forget``). Returns the forget request of the first part and the parts."""
    forget = dict(raw["forget"])
    if "each" in forget and "grow" in raw:
        raise _fail(source, "'forget' each and 'grow' cannot be combined")
    if "each" in forget:
        each = forget.pop("each")
        if forget.get("kind") != "class":
            raise _fail(source, "'forget' each is for class requests ({kind: class, each: all})")
        if "classes" in forget or "class" in forget:
            raise _fail(source, "'forget' each replaces 'classes': give one of them")
        if each == "all":
            return {**forget, "classes": [0]}, [Variant("@class*", {**forget, "classes": []})]
        if (
            not isinstance(each, list)
            or not each
            or not all(_is_int(c) and c >= 0 for c in each)
            or len(set(each)) != len(each)
        ):
            raise _fail(
                source, f"'forget' each must be 'all' or a list of distinct classes, got {each!r}"
            )
        return {**forget, "classes": [each[0]]}, [
            Variant(f"@class{c}", {**forget, "classes": [c]}, fields={"forget_class": c})
            for c in each
        ]
    if "grow" not in raw:
        return forget, []
    grow = raw["grow"]
    if forget.get("kind") != "random" or "fraction" in forget or "indices" in forget:
        raise _fail(
            source, "'grow' needs 'forget: {kind: random}' (each size sets its own fraction)"
        )
    if not isinstance(grow, list) or not grow:
        raise _fail(source, "'grow' must be a list of {n_train: N, n_forget: F} sizes")
    out, seen = [], set()
    for i, g in enumerate(grow):
        if not isinstance(g, dict) or set(g) != {"n_train", "n_forget"}:
            raise _fail(source, f"'grow' entry {i} must be {{n_train: N, n_forget: F}}, got {g!r}")
        n, f = g["n_train"], g["n_forget"]
        if not (_is_int(n) and _is_int(f) and 2 <= n and 1 <= f < n):
            raise _fail(
                source, f"'grow' entry {i}: need integers 1 <= n_forget < n_train, got {g!r}"
            )
        if (n, f) in seen:
            raise _fail(source, f"'grow' entry {i} repeats n_train {n}, n_forget {f}")
        seen.add((n, f))
        fr = {**forget, "fraction": f / n}
        out.append(Variant(f"@n{n}f{f}", fr, n, metrics={"n_train": n, "n_forget": f}))
    return dict(out[0].forget), out


def resolve_variants(scenario: Scenario, train: ArrayData) -> list[Variant]:
    """The scenario's parts against its data: ``each: all`` becomes one part per class;
    a part's class or training-set size must exist in ``train``."""
    out = []
    for v in scenario.all_variants():
        if v.tag == "@class*":
            out += [
                Variant(f"@class{c}", {**v.forget, "classes": [c]}, fields={"forget_class": c})
                for c in range(train.num_classes)
            ]
            continue
        if v.n_train is not None and v.n_train > len(train):
            raise _fail(
                scenario.source,
                f"'grow': n_train {v.n_train} exceeds the {len(train)} training samples "
                "(generate more, e.g. data: {name: mnist1d, num_train: N})",
            )
        c = v.fields.get("forget_class")
        if c is not None and c >= train.num_classes:
            raise _fail(
                scenario.source,
                f"'forget' each: class {c} is not one of the {train.num_classes} classes",
            )
        out.append(v)
    return out


def subset_train(train: ArrayData, n: int | None) -> ArrayData:
    """The first ``n`` training samples of one fixed seeded order (nested across sizes)."""
    if n is None or n == len(train):
        return train
    import numpy as np

    order = np.random.default_rng(0).permutation(len(train))[:n]
    return train.subset(np.sort(order))


def _parse_methods(raw: dict, source: str) -> list[MethodEntry]:
    methods_raw = raw["methods"]
    if not isinstance(methods_raw, list) or not methods_raw:
        raise _fail(source, "'methods' must be a non-empty list")
    entries: list[MethodEntry] = []
    for i, item in enumerate(methods_raw):
        where = f"'methods'[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise _fail(source, f"{where}: method entry {item!r} needs a 'name'")
        name = item["name"]
        if not isinstance(name, str) or not name:
            raise _fail(source, f"{where}: a method name must be a non-empty string, got {name!r}")
        extra = sorted(set(item) - {"name", "config", "label"})
        if extra:
            raise _fail(source, f"{where}: method entry {name!r} has unknown key(s) {extra}")
        cfg = item.get("config")
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, dict):
            raise _fail(source, f"{where}: config of method {name!r} must be a mapping")
        label = item.get("label", name)
        if not isinstance(label, str) or not label.strip():
            raise _fail(source, f"{where}: label must be a non-empty string, got {label!r}")
        if "@" in label:
            raise _fail(source, f"{where}: label {label!r} must not hold '@' (it marks a part)")
        if label in REFERENCE_ROWS and not (label == "retrain" and name == "retrain"):
            raise _fail(source, f"{where}: label {label!r} is reserved for a reference row")
        entry = MethodEntry(label, name, dict(cfg))
        try:
            entry.build()
        except UnlearnError as exc:
            raise _fail(source, f"{where}: {exc}") from None
        if entry.label == "retrain":
            continue  # the oracle is always run as a reference row
        if any(e.label == entry.label for e in entries):
            raise _fail(source, f"method label {entry.label!r} appears twice (give a 'label')")
        entries.append(entry)
    return entries


def _parse_checkpoint(raw: dict, source: str, base_dir: Path | None) -> str | None:
    checkpoint = raw.get("checkpoint")
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, str) or not checkpoint.strip() or "\x00" in checkpoint:
        raise _fail(source, f"'checkpoint' must be a file path, got {checkpoint!r}")
    path = Path(checkpoint)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        is_file = path.is_file()
    except OSError as exc:
        raise _fail(source, f"'checkpoint': cannot read {path}: {exc}") from None
    if not is_file:
        raise _fail(source, f"checkpoint {path} does not exist or is not a file")
    try:
        read_checkpoint_spec(path)  # the header only: a broken file fails here
    except UnlearnError as exc:
        raise _fail(source, f"'checkpoint': {exc}") from None
    return str(path)


def _check_attack_rows(cfg: AttackConfig, labels: list[str], request, source: str) -> None:
    known = {*REFERENCE_ROWS, *labels}
    rows = cfg.ulira if isinstance(cfg.ulira, list) else []
    for r in [*rows, *cfg.challenge_rows]:
        if r not in known:
            raise _fail(source, f"'attacks': row {r!r} is not a row of this scenario")
    is_class = request.kind == "class"
    if cfg.mia_nn and not is_class:
        raise _fail(source, "'attacks': mia_nn is an attack for class requests")
    if (cfg.ulira or cfg.challenge_rows) and is_class:
        raise _fail(source, "'attacks': ulira and the challenge score are run for sample requests")


@dataclass
class Common:
    """What every scenario, of every family, has: checked once by :func:`check_common`."""

    name: str
    description: str
    seeds: list[int]
    noise_seed_offset: int
    device: str


def parse_family_methods(raw: dict, name: str, task_cls, request_kind: str) -> list:
    """``(label, Method)`` of a family scenario's ``methods`` list: each built for the task
    family ``task_cls`` (its presets), refused where that task lacks what it requires or
    it does not serve ``request_kind`` requests; labels unique and not reserved."""
    methods: list = []
    if not isinstance(raw.get("methods"), list) or not raw["methods"]:
        raise _fail(name, "'methods' must be a non-empty list")
    for i, entry in enumerate(raw["methods"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _fail(name, f"methods[{i}] must be a mapping with a 'name'")
        label = entry.get("label", entry["name"])
        if not isinstance(label, str) or label in REFERENCE_ROWS:
            raise _fail(name, f"methods[{i}]: label {label!r} is not a string or is reserved")
        if any(lab == label for lab, _ in methods):
            raise _fail(name, f"method label {label!r} appears twice (give a 'label')")
        opts = {k: v for k, v in entry.items() if k not in ("name", "label")}
        try:
            method = get_method(entry["name"], opts, family=task_cls.family)
            task_cls.require(method.requirements(), f"method {entry['name']}")
        except UnlearnError as exc:
            raise _fail(name, f"methods[{i}]: {exc}") from None
        if request_kind not in method.request_kinds:
            raise _fail(
                name, f"methods[{i}]: {entry['name']} does not serve {request_kind} requests"
            )
        methods.append((label, method))
    return methods


def check_common(raw: Any, source: str, default_name: str = "") -> Common:
    """The checks every family's scenario gets before its own: a plain mapping (no YAML
    dates, sets, NaN...), ``name``, ``description``, ``seeds`` (distinct integers in
    [0, 2^31)), ``noise_seed_offset`` (no collision with a seed), ``device`` (one that
    exists here) and the ``targets`` block."""
    if not isinstance(raw, dict):
        raise _fail(source, "must be a mapping of keys to values")
    check_plain(raw, "", source)
    name = _string(raw, "name", source, default_name or Path(source).stem)
    if not name.strip():
        raise _fail(source, "'name' must not be empty")
    description = _string(raw, "description", source, "")
    seeds, offset = _parse_seeds(raw, source)
    device = raw.get("device", "cpu")
    if not isinstance(device, str):
        raise _fail(source, f"'device' must be a string such as cpu or cuda:0, got {device!r}")
    try:
        resolve_device(device)
    except UnlearnError as exc:
        raise _fail(source, f"'device': {exc}") from None
    if "targets" in raw:
        from .targets import parse_targets

        parse_targets(raw["targets"], f"scenario {source}")
    return Common(name, description, seeds, offset, device)


def parse_scenario(raw: Any, source: str = "<mapping>", base_dir: Path | None = None) -> Scenario:
    """Validate a classifier scenario mapping (every field's type and range) into a
    :class:`Scenario`, without loading data or training; :func:`check_scenario` then
    checks it against its data. Raises :class:`ScenarioError` naming the field."""
    common = check_common(raw, source)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(source, f"unknown key(s) {unknown} (known: {sorted(_KEYS)})")
    if raw.get("kind", "classifier") != "classifier":
        raise _fail(source, f"kind {raw['kind']!r} is not a classifier scenario")
    for key in ("data", "model", "forget", "methods"):
        if key not in raw:
            raise _fail(source, f"missing key '{key}'")
    for key in ("data", "model", "forget"):
        if not isinstance(raw[key], dict):
            raise _fail(source, f"'{key}' must be a mapping")
    try:
        check_data_spec(raw["data"])
    except UnlearnError as exc:
        raise _fail(source, f"'data': {exc}") from None
    model = raw["model"]
    if "name" not in model:
        raise _fail(source, "'model' needs a 'name'")
    _check_model_options(model, source)
    train = raw.get("train")
    if train is not None and not isinstance(train, dict):
        raise _fail(source, "'train' must be a mapping")
    try:
        recipe = TrainRecipe.from_dict(train)
    except UnlearnError as exc:
        raise _fail(source, f"'train': {exc}") from None
    forget, variants = _parse_variants(raw, source)
    request = _parse_forget({**raw, "forget": forget}, source)
    entries = _parse_methods(raw, source)
    if "grow" in raw and raw.get("checkpoint") is not None:
        raise _fail(source, "'grow' trains an original per training-set size: drop 'checkpoint'")
    checkpoint = _parse_checkpoint(raw, source, base_dir)
    attacks = AttackConfig.from_dict(raw.get("attacks"), source)
    if variants and attacks.active:
        raise _fail(
            source,
            "'attacks' cannot run on a run made of parts ('forget' each or 'grow'): run the "
            "attacks in a scenario of one part",
        )

    _check_attack_rows(attacks, [e.label for e in entries], request, source)
    name, description, device = common.name, common.description, common.device
    seeds, offset = common.seeds, common.noise_seed_offset
    tune = None
    if "tune" in raw:
        from ..tune import parse_tune

        tune = parse_tune(
            raw["tune"],
            [e.label for e in entries],
            seeds,
            forget.get("kind") == "class",
            source,
            forget=forget,
            noise_seed_offset=offset,
        )
    return Scenario(
        tune=tune,
        name=name,
        data=dict(raw["data"]),
        model=dict(model),
        train=recipe,
        forget=forget,
        variants=variants,
        methods=entries,
        seeds=seeds,
        device=device,
        checkpoint=checkpoint,
        noise_seed_offset=offset,
        description=description,
        raw=raw,
        attacks=attacks,
        source=source,
    )


def _check_model_options(model: dict, source: str) -> None:
    """The model's own options; the input shape and class count come with the data."""
    try:
        check_model_options(model)
    except UnlearnError as exc:
        raise _fail(source, f"'model': {exc}") from None


def model_spec(scenario: Scenario, train: ArrayData) -> dict:
    """The full model spec: the scenario's, with the data's input shape and class count."""
    spec = dict(scenario.model)
    spec.setdefault("input_shape", list(train.input_shape))
    spec.setdefault("num_classes", train.num_classes)
    return spec


def check_scenario(scenario: Scenario) -> None:
    """Check a parsed scenario against its data before anything trains: the data
    loads, the model builds for its input shape and class count, every seed's
    request fits the data, every method (and the oracle) serves the request, the
    checkpoint fits the model, and the attacks' sizes fit the classes.

    Loads the data and builds the model once; raises :class:`ScenarioError`
    naming the field at fault."""
    src = scenario.source
    try:
        train, test = load_dataset(scenario.data)
    except UnlearnError as exc:
        raise _fail(src, f"'data': {exc}") from None
    for part, data in (("training", train), ("test", test)):
        if len(data) == 0:
            raise _fail(src, f"'data': the {part} set is empty")
    spec = model_spec(scenario, train)
    for key, value in (
        ("input_shape", list(train.input_shape)),
        ("num_classes", train.num_classes),
    ):
        given = spec[key]
        if (list(given) if isinstance(given, list | tuple) else given) != value:
            raise _fail(src, f"'model': {key} {given!r} differs from the data's {value!r}")
    try:
        model = build_model(spec, seed=scenario.seeds[0])
    except UnlearnError as exc:
        raise _fail(src, f"'model': {exc}") from None
    try:
        task = ClassifierTask(train.num_classes, scenario.device)
    except UnlearnError as exc:
        raise _fail(src, f"'data': {exc}") from None
    methods = [(e.label, e.build()) for e in scenario.methods]
    oracle = get_method("retrain")
    for variant in resolve_variants(scenario, train):
        part = subset_train(train, variant.n_train)
        for seed in scenario.seeds:
            request = scenario.request(seed, variant)
            try:
                split_request(part, request)
            except UnlearnError as exc:
                raise _fail(src, f"'forget' (seed {seed}{variant.tag}): {exc}") from None
            for label, method in [("retrain", oracle), *methods]:
                try:
                    method.check(request, task)
                except UnlearnError as exc:
                    raise _fail(src, f"method {label!r}: {exc}") from None
    if scenario.checkpoint:
        try:
            load_model(model, scenario.checkpoint, spec)
        except UnlearnError as exc:
            raise _fail(src, f"'checkpoint': {exc}") from None
    k = scenario.attacks.mia_nn_neighbours
    if scenario.attacks.mia_nn and not 1 <= k <= train.num_classes - 1:
        raise _fail(
            src,
            f"'attacks': mia_nn_neighbours must lie in [1, {train.num_classes - 1}] for "
            f"{train.num_classes} classes, got {k}",
        )


#: libyaml's safe loader when PyYAML has it (the same YAML, read ten times faster)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def scenario_inputs(path: Path, scenario: Scenario | None) -> list[Path]:
    """The files a classifier scenario reads: the scenario, its checkpoint, its data path."""
    inputs = [Path(path)]
    if scenario is not None:
        if scenario.checkpoint:
            inputs.append(Path(scenario.checkpoint))
        if isinstance(scenario.data.get("path"), str):
            inputs.append(Path(scenario.data["path"]))
    return inputs


def read_scenario_file(path: str | Path | None = None) -> tuple[dict, Path]:
    """Read a scenario YAML file (the default scenario when ``path`` is None) as a mapping.

    A missing or unreadable file, one that is not UTF-8 text, is empty, is not
    valid YAML or does not hold a mapping raises :class:`ScenarioError`.
    """
    if path is not None and (not str(path).strip() or "\x00" in str(path)):
        raise ScenarioError(f"the scenario path {str(path)!r} is empty or holds a NUL character")
    path = Path(path) if path is not None else DEFAULT_SCENARIO
    try:
        if not path.exists():
            raise ScenarioError(f"scenario file {path} does not exist")
        if not path.is_file():
            raise ScenarioError(f"scenario {path} is not a file")
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"scenario {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position "
            f"{exc.start})"
        ) from None
    if "\x00" in text:
        raise ScenarioError(f"scenario {path} is not a text file (it holds NUL bytes)")
    try:
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise ScenarioError(f"scenario {path}: not valid YAML ({first})") from None
    except RecursionError:
        raise ScenarioError(f"scenario {path}: nested too deeply to read") from None
    if raw is None:
        raise ScenarioError(f"scenario {path} is empty")
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"scenario {path}: must be a mapping of keys to values, got {_yaml_kind(raw)}"
        )
    return raw, path


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a classifier scenario file (default: the MNIST-1D scenario).

    The checks that need the data run in :func:`check_scenario`."""
    raw, path = read_scenario_file(path)
    return parse_scenario(raw, str(path), path.parent)
