"""unlearn: remove the influence of chosen training data from a trained model, and prove it.

Quick start::

    import unlearn
    model2, record = unlearn.unlearn("salun", model, (x, y), unlearn.SampleRequest(fraction=0.1))
"""

from __future__ import annotations

from .api import train_classifier, unlearn, unlearn_lm
from .data import ArrayData, load_dataset
from .errors import UnlearnError
from .io import load_model, save_model
from .methods import Method, RunRecord, available_methods, get_method
from .requests import ClassRequest, FeatureRequest, ForgetRequest, SampleRequest
from .tasks import ClassifierTask, TrainRecipe

__version__ = "0.1.0"

__all__ = [
    "ArrayData",
    "ClassRequest",
    "ClassifierTask",
    "FeatureRequest",
    "ForgetRequest",
    "Method",
    "RunRecord",
    "SampleRequest",
    "TrainRecipe",
    "UnlearnError",
    "available_methods",
    "get_method",
    "load_dataset",
    "load_model",
    "save_model",
    "train_classifier",
    "unlearn",
    "unlearn_lm",
    "__version__",
]
