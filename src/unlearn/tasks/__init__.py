"""Tasks: how a model family computes a loss, predicts, and is trained."""

from .classifier import ClassifierTask, TrainRecipe, make_optimizer

__all__ = ["ClassifierTask", "TrainRecipe", "make_optimizer"]
