"""Tasks: how a model family computes a loss, predicts, and is trained (one module each)."""

from .base import Task, available_tasks, register_task
from .causal_lm import CausalLMTask, LMRecipe, PairData
from .classifier import ClassifierTask, TrainRecipe
from .convex import ConvexTask
from .diffusion import DiffusionRecipe, DiffusionTask
from .federated import FederatedData, FederatedTask, FedModel, FedRecipe
from .generator import GeneratorRecipe, GeneratorTask, IdentityGenerator
from .vlm import ImageQAData, VLMTask

__all__ = [
    "CausalLMTask",
    "ClassifierTask",
    "ConvexTask",
    "DiffusionRecipe",
    "DiffusionTask",
    "FedModel",
    "FedRecipe",
    "FederatedData",
    "FederatedTask",
    "GeneratorRecipe",
    "GeneratorTask",
    "IdentityGenerator",
    "ImageQAData",
    "LMRecipe",
    "PairData",
    "Task",
    "TrainRecipe",
    "VLMTask",
    "available_tasks",
    "register_task",
]


def _load_all() -> None:
    """Every task module is imported above; kept so callers need not know the list."""
