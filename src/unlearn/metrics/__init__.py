"""Evaluation as pure functions: arrays in, numbers out. Nothing here swallows an error."""

from .classification import (
    AVG_GAP_KEYS,
    accuracy,
    avg_gap,
    js_divergence,
    loss_threshold_auc,
    mia_efficacy,
)
from .feature import attack_success_rate, feature_sensitivity, plant_trigger

__all__ = [
    "AVG_GAP_KEYS",
    "accuracy",
    "attack_success_rate",
    "avg_gap",
    "feature_sensitivity",
    "js_divergence",
    "loss_threshold_auc",
    "mia_efficacy",
    "plant_trigger",
]
