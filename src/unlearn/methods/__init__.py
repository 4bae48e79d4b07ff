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
    method_aliases,
    register,
    register_alias,
)
from .loop import TrainConfig, TrainedMethod

__all__ = [
    "Method",
    "MethodConfig",
    "RunRecord",
    "TrainConfig",
    "TrainedMethod",
    "UnlearnContext",
    "available_methods",
    "get_method",
    "method_aliases",
    "register",
    "register_alias",
]

_MODULES = (
    "retrain",
    "finetune",
    "gradient_ascent",
    "preference",
    "random_labels",
    "scrub",
    "fisher",
    "influence",
    "amun",
    "trw",
    "ferrari",
    "llm.lune",
    "llm.kunbr",
    "llm.r2f",
    "certified",
    "federated",
    "diffusion.esd",
    "diffusion.salun_ddpm",
    "diffusion.dimum",
    "generator.guide",
    "generator.sugar",
    "vlm.siu",
)
_loaded = False


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for m in _MODULES:
            importlib.import_module(f"{__name__}.{m}")
        _loaded = True
