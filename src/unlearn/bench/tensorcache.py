"""Trained models cached by content hash, as safetensors files.

The benchmark families train their reference models (a fine-tuned language model's LoRA
adapters, a diffusion UNet, an identity generator, a taught vision-language model) once
per key and load them on later runs: :func:`cached_tensors` names the file
``<cache_dir>/<prefix>-<sha256 of the key's JSON, 20 hex digits>.safetensors``, keeps the
training seconds in its metadata, and writes it atomically (a temporary file renamed).
The key is the family's: everything that decides the weights (data, model, recipe, seed,
library versions, threads, device).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["cache_path", "cached_tensors"]


def cache_path(cache_dir: str | Path, prefix: str, key: Any) -> Path:
    """The file a ``key`` (JSON-serialisable; sorted keys) is cached under."""
    blob = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{prefix}-{digest}.safetensors"


def cached_tensors(
    cache_dir: str | Path | None,
    prefix: str,
    key: Any,
    build: Callable[[], tuple[Any, dict[str, torch.Tensor]]],
    restore: Callable[[dict[str, torch.Tensor]], Any],
) -> tuple[Any, float, bool]:
    """``(result, training seconds, from_cache)``. On a miss ``build()`` returns the result
    and the tensors that restore it, which are saved (``cache_dir`` None: nothing is
    cached); on a hit ``restore(tensors)`` rebuilds the result from the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = None if cache_dir is None else cache_path(cache_dir, prefix, key)
    if path is not None and path.is_file():
        with safe_open(str(path), framework="pt") as f:
            seconds = float((f.metadata() or {}).get("seconds", "nan"))
        return restore(load_file(str(path))), seconds, True
    t0 = time.perf_counter()
    result, tensors = build()
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"seconds": repr(seconds)},
        )
        tmp.replace(path)
    return result, seconds, False
