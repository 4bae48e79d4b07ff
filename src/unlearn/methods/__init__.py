"""Unlearning methods, one file each, registered by name."""

from __future__ import annotations

import importlib

from .base import (
    Method,
    MethodConfig,
    RunRecord,
    UnlearnContext,
    available_methods,
    get_method,
    register,
)

__all__ = [
    "Method",
    "MethodConfig",
    "RunRecord",
    "UnlearnContext",
    "available_methods",
    "get_method",
    "register",
]

_MODULES = (
    "retrain",
    "finetune",
    "gradient_ascent",
    "random_labels",
    "scrub",
    "fisher",
    "influence",
    "amun",
    "trw",
    "llm.baselines",
    "llm.lune",
)
_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for m in _MODULES:
            importlib.import_module(f"{__name__}.{m}")
        _loaded = True
