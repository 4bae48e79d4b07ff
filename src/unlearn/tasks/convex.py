"""The convex task: L2-regularised logistic regression with certified removal
(:class:`unlearn.certified.CertifiedLogReg`, Guo et al. 2020).

Data is a :class:`MatrixData` (float64 features, integer labels); the model is
a fitted ``CertifiedLogReg``, which keeps its training rows, so a removal names
rows of the data it was fitted on. Retraining (the oracle) fits a fresh model
with the same parameters on the retained rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnlearnError
from .base import Task, register_task

__all__ = ["ConvexTask", "MatrixData"]


class MatrixData:
    """Rows of float64 features ``X`` with integer labels ``y``."""

    def __init__(self, X, y, name: str = "data"):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise UnlearnError(f"{name}: X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
        if not np.isfinite(X).all():
            raise UnlearnError(f"{name}: X holds NaN or infinite values")
        self.X, self.y, self.name = X, y, name

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self.y) else 0

    def targets(self) -> np.ndarray:
        return self.y

    def subset(self, idx, name: str | None = None) -> MatrixData:
        idx = np.asarray(idx, dtype=np.int64)
        return MatrixData(self.X[idx], self.y[idx], name or self.name)


@register_task
class ConvexTask(Task):
    """Certified logistic regression: the model is fitted in closed-form-friendly steps,
    and removal is a Newton step with an (epsilon, delta) certificate."""

    family = "convex"
    provides = frozenset({"convex", "fit", "reinit", "membership"})

    def __init__(self, classes=None):
        self.classes = None if classes is None else np.asarray(classes)

    def check_model(self, model: Any) -> None:
        from ..certified import CertifiedLogReg

        if not isinstance(model, CertifiedLogReg):
            raise UnlearnError(
                f"a convex task's model is a CertifiedLogReg, got {type(model).__name__}"
            )

    def as_data(self, data) -> MatrixData:
        if isinstance(data, MatrixData):
            return data
        if isinstance(data, tuple | list) and len(data) == 2:
            return MatrixData(*data)
        raise UnlearnError("convex data must be MatrixData or a pair (X, y)")

    def fresh_model(self, model: Any, seed: int):
        from ..certified import CertifiedLogReg

        params = {**model.get_params(), "seed": int(seed)}
        return CertifiedLogReg(**params)

    def membership_scores(self, model: Any, data: MatrixData) -> np.ndarray:
        """Each row's logistic loss summed over the one-vs-rest classifiers."""
        s = model.decision_function(data.X)
        if s.shape[1] == 1:
            z = np.where(data.y == model.classes_[1], 1.0, -1.0)[:, None]
        else:
            z = np.where(data.y[:, None] == model.classes_[None, :], 1.0, -1.0)
        return np.logaddexp(0.0, -z * s).sum(axis=1)

    def fit(self, model: Any, data: MatrixData, recipe: Any, seed: int) -> int:
        """Fit ``model`` on ``data`` (its own perturbation seed; ``recipe`` is unused:
        the model's parameters are its recipe)."""
        model.fit(data.X, data.y, classes=self.classes, prepare=False)
        return 1
