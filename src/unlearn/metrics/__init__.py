"""Evaluation as pure functions: arrays in, numbers out. Nothing here swallows an error."""

from .classification import (
    AVG_GAP_KEYS,
    accuracy,
    avg_gap,
    js_divergence,
    loss_threshold_auc,
    mia_efficacy,
)

__all__ = [
    "AVG_GAP_KEYS",
    "accuracy",
    "avg_gap",
    "js_divergence",
    "loss_threshold_auc",
    "mia_efficacy",
]
