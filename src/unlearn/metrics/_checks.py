"""Input checks shared by the metric and attack functions."""

from __future__ import annotations

import numpy as np


def finite_vector(x, name: str) -> np.ndarray:
    """``x`` as a non-empty, finite 1-D float64 array, or a ValueError naming ``name``."""
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a one-dimensional array, got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite")
    return v
