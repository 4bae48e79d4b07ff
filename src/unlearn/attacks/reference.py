"""Reference ("shadow") models for membership inference, trained in parallel and cached.

Reference model j is trained with the scenario's recipe on a random half H_j of the data pool
(training and test sets together), so that every pool example is "in" for about half of the
references and "out" for the others (Carlini et al. 2022). The set is trained once per
(pool, model, recipe, count, seed) and cached as one safetensors file; later runs load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data.core import ArrayData
from ..errors import UnlearnError
from ..models import build_model
from ..tasks.classifier import ClassifierTask, TrainRecipe

__all__ = ["ReferenceSet", "train_references", "train_many", "train_many_cached"]


@dataclass
class ReferenceSet:
    """K reference models and, for each, which pool examples it was trained on."""

    pool: ArrayData
    spec: dict
    in_mask: np.ndarray  # (K, N) bool
    states: list[dict[str, torch.Tensor]]

    def __len__(self) -> int:
        return len(self.states)

    def model(self, j: int) -> torch.nn.Module:
        m = build_model(self.spec)
        m.load_state_dict(self.states[j], strict=True)
        return m.eval()

    def train_indices(self, j: int) -> np.ndarray:
        return np.flatnonzero(self.in_mask[j])


def _train_one(args) -> dict[str, torch.Tensor]:
    x, y, classes, spec, recipe, seed = args[:6]
    data = ArrayData(x, y, classes, "reference")
    model = build_model(spec, seed=seed)
    ClassifierTask(len(classes)).fit(model, data, TrainRecipe(**recipe), seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_many(
    jobs: Sequence[tuple[ArrayData, int]],
    spec: dict,
    recipe: TrainRecipe,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Train one model per ``(data, seed)`` job through the current executor
    (:mod:`unlearn.executor`: its engine and threads; ``workers`` overrides its process
    count). Results are in job order and do not depend on the engine or the workers."""
    from dataclasses import replace

    from ..executor import Executor, current, in_worker

    execution = current()
    if workers is not None and not in_worker():  # inside a worker: no nested pool
        execution = replace(execution, workers=workers)
    args = [(d.x, d.y, d.classes, spec, recipe.to_dict(), int(s)) for d, s in jobs]
    return Executor(execution).map(
        _train_one, args, on_done=(lambda i, r: progress(1)) if progress else None
    )


def _save_states(states: list[dict], path: Path, extra: dict | None = None) -> None:
    """Models' state dicts as one safetensors file, written beside it and renamed."""
    flat = {f"{j}/{key}": t.contiguous() for j, s in enumerate(states) for key, t in s.items()}
    flat.update(extra or {})
    fd, tmp = tempfile.mkstemp(prefix=".models.", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_states(flat: dict, k: int) -> list[dict]:
    states: list[dict] = [dict() for _ in range(k)]
    for name, t in flat.items():
        j, key = name.split("/", 1)
        states[int(j)][key] = t
    return states


def train_many_cached(
    jobs: Sequence[tuple[ArrayData, int]],
    spec: dict,
    recipe: TrainRecipe,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """:func:`train_many`, cached in ``cache_dir`` as one file keyed by every job's data
    and seed, the model spec and the recipe (e.g. the models an attack retrains from
    scratch for its ``retrain`` row: the same on every rerun of a scenario)."""
    if cache_dir is None or not jobs:
        return train_many(jobs, spec, recipe, workers, progress)
    h = hashlib.sha256()
    for d, seed in jobs:
        h.update(d.x.numpy().tobytes())
        h.update(d.y.numpy().tobytes())
        h.update(str(int(seed)).encode())
    h.update(json.dumps([spec, recipe.to_dict(), len(jobs)], sort_keys=True).encode())
    path = Path(cache_dir) / f"retrained-{h.hexdigest()[:20]}.safetensors"
    if path.is_file():
        return _load_states(load_file(str(path)), len(jobs))
    states = train_many(jobs, spec, recipe, workers, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_states(states, path)
    return states


def _cache_key(pool: ArrayData, spec: dict, recipe: TrainRecipe, k: int, seed: int) -> str:
    h = hashlib.sha256()
    h.update(pool.x.numpy().tobytes())
    h.update(pool.y.numpy().tobytes())
    h.update(json.dumps([spec, recipe.to_dict(), k, seed], sort_keys=True).encode())
    return h.hexdigest()[:20]


def train_references(
    pool: ArrayData,
    spec: dict,
    recipe: TrainRecipe,
    k: int = 16,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReferenceSet:
    """Train (or load from ``cache_dir``) ``k`` reference models on random halves of ``pool``.

    The halves are balanced: every example is "in" for exactly k/2 references (k even).
    """
    if k < 4 or k % 2:
        raise UnlearnError(f"the number of reference models must be even and >= 4, got {k}")
    n = len(pool)
    rng = np.random.default_rng(seed)
    # Each example is in exactly half of the models: per example, a random half of the k slots.
    in_mask = np.zeros((k, n), dtype=bool)
    for i in range(n):
        in_mask[rng.choice(k, size=k // 2, replace=False), i] = True
    path = None
    if cache_dir is not None:
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"references-{_cache_key(pool, spec, recipe, k, seed)}.safetensors"
        if path.is_file():
            flat = load_file(str(path))
            if not np.array_equal(flat.pop("__in_mask__").numpy(), in_mask):
                raise UnlearnError(f"reference cache {path} does not match its key; delete it")
            return ReferenceSet(pool, spec, in_mask, _load_states(flat, k))
    jobs = [(pool.subset(np.flatnonzero(in_mask[j])), seed * 7919 + j) for j in range(k)]
    states = train_many(jobs, spec, recipe, workers, progress)
    if path is not None:
        _save_states(states, path, {"__in_mask__": torch.from_numpy(in_mask)})
    return ReferenceSet(pool, spec, in_mask, states)
