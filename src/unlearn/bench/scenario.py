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

Everything is validated before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ScenarioError, UnlearnError
from ..methods.base import Method, get_method
from ..requests import ForgetRequest, request_from_dict
from ..tasks.classifier import TrainRecipe
from .attacks import AttackConfig

__all__ = ["Scenario", "MethodEntry", "load_scenario", "DEFAULT_SCENARIO", "LLM_SCENARIO"]

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
}
REFERENCE_ROWS = ("original", "retrain", "oracle_noise")

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

    def request(self, seed: int) -> ForgetRequest:
        return request_from_dict(self.forget, default_seed=seed)


def _fail(source: str, msg: str) -> ScenarioError:
    return ScenarioError(f"scenario {source}: {msg}")


def parse_scenario(raw: Any, source: str = "<mapping>", base_dir: Path | None = None) -> Scenario:
    if not isinstance(raw, dict):
        raise _fail(source, "must be a mapping of keys to values")
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
    if "name" not in raw["model"]:
        raise _fail(source, "'model' needs a 'name'")
    try:
        recipe = TrainRecipe.from_dict(raw.get("train"))
    except (UnlearnError, TypeError) as exc:
        raise _fail(source, f"'train': {exc}") from None
    try:
        request_from_dict(raw["forget"])
    except UnlearnError as exc:
        raise _fail(source, f"'forget': {exc}") from None
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise _fail(source, "'seeds' must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise _fail(source, "'seeds' contains duplicates")
    methods_raw = raw["methods"]
    if not isinstance(methods_raw, list) or not methods_raw:
        raise _fail(source, "'methods' must be a non-empty list")
    entries: list[MethodEntry] = []
    for item in methods_raw:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise _fail(source, f"method entry {item!r} needs a 'name'")
        extra = sorted(set(item) - {"name", "config", "label"})
        if extra:
            raise _fail(source, f"method entry {item['name']!r} has unknown key(s) {extra}")
        cfg = item.get("config") or {}
        if not isinstance(cfg, dict):
            raise _fail(source, f"config of method {item['name']!r} must be a mapping")
        label = str(item.get("label", item["name"]))
        if label in REFERENCE_ROWS and item["name"] != "retrain":
            raise _fail(source, f"label {label!r} is reserved for a reference row")
        entry = MethodEntry(label, str(item["name"]), dict(cfg))
        try:
            entry.build()
        except UnlearnError as exc:
            raise _fail(source, str(exc)) from None
        if entry.label == "retrain":
            continue  # the oracle is always run as a reference row
        if any(e.label == entry.label for e in entries):
            raise _fail(source, f"method label {entry.label!r} appears twice (give a 'label')")
        entries.append(entry)
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise _fail(source, f"checkpoint {path} does not exist")
        checkpoint = str(path)
    device = str(raw.get("device", "cpu"))
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise _fail(source, f"device {device!r} asked for but CUDA is not available")
    elif device != "cpu":
        raise _fail(source, f"unknown device {device!r} (cpu or cuda[:N])")
    return Scenario(
        name=str(raw.get("name", Path(source).stem)),
        data=dict(raw["data"]),
        model=dict(raw["model"]),
        train=recipe,
        forget=dict(raw["forget"]),
        methods=entries,
        seeds=list(seeds),
        device=device,
        checkpoint=checkpoint,
        noise_seed_offset=int(raw.get("noise_seed_offset", 1000)),
        description=str(raw.get("description", "")),
        raw=raw,
        attacks=AttackConfig.from_dict(raw.get("attacks"), source),
    )


def read_scenario_file(path: str | Path | None = None) -> tuple[dict, Path]:
    """Read a scenario YAML file (the default scenario when ``path`` is None) as a mapping."""
    path = Path(path) if path is not None else DEFAULT_SCENARIO
    if not path.is_file():
        raise ScenarioError(f"scenario file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise ScenarioError(f"scenario {path}: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario {path}: must be a mapping of keys to values")
    return raw, path


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Read and validate a classifier scenario file (default: the MNIST-1D scenario)."""
    raw, path = read_scenario_file(path)
    return parse_scenario(raw, str(path), path.parent)
