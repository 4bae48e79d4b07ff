"""Small architectures trained here, built by name so checkpoints can record them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UnlearnError

__all__ = [
    "build_model",
    "check_model_spec",
    "check_model_options",
    "available_models",
    "ModelSpec",
    "MAX_PARAMETERS",
]

ModelSpec = dict  # {"name": str, "input_shape": [...], "num_classes": int, **options}


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (256,)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks (conv-relu, conv-relu-maxpool, conv-relu-maxpool) and a 2-layer head.

    ``dim`` selects 1-D (sequences, input (C, L)) or 2-D (images, input (C, H, W)).
    With the defaults (width 16) it fits MNIST-1D's training set and reaches about
    92 % test accuracy; width 32 reaches about 95 %.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 16,
        hidden: int = 64,
        dim: int = 1,
    ):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        pool = nn.MaxPool1d if dim == 1 else nn.MaxPool2d
        c_in = input_shape[0]
        self.features = nn.Sequential(
            conv(c_in, width, 5, padding=2),
            nn.ReLU(),
            conv(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            pool(2),
            conv(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            pool(2),
            nn.Flatten(),
        )
        spatial = [s // 4 for s in input_shape[1:]]
        if min(spatial) < 1:
            raise UnlearnError(f"input {tuple(input_shape)} is too small for the small CNN")
        flat = 2 * width * math.prod(spatial)
        self.head = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem without max-pooling, four stages of two basic blocks."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64):
        super().__init__()
        c_in = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c_in, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        stages, c = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            c_out = width * mult
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(out), 1))


def _mlp(input_shape, num_classes, hidden=(256,)):
    return MLP(math.prod(input_shape), num_classes, tuple(hidden))


def _cnn(input_shape, num_classes, width=16, hidden=64):
    if len(input_shape) not in (2, 3):
        raise UnlearnError(
            "the CNN takes (channels, length) or (channels, height, width) inputs, "
            f"got {input_shape}"
        )
    return SmallCNN(tuple(input_shape), num_classes, width, hidden, dim=len(input_shape) - 1)


def _resnet18(input_shape, num_classes, width=64):
    if len(input_shape) != 3:
        raise UnlearnError(f"ResNet-18 takes (channels, height, width) images, got {input_shape}")
    return ResNet18(tuple(input_shape), num_classes, width)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
}

#: The largest model :func:`build_model` builds (these are small architectures trained here;
#: a larger one is almost always a typo such as ``width: 100000``).
MAX_PARAMETERS = 10**9
_MAX_DIM = 2**24


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UnlearnError(f"{where} must be a positive integer, got {value!r}")
    if not 1 <= value <= _MAX_DIM:
        raise UnlearnError(f"{where} must lie in [1, {_MAX_DIM}], got {value}")
    return int(value)


def _sizes(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise UnlearnError(f"{where} must be a list of positive integers, got {value!r}")
    return tuple(_size(v, f"{where}[{i}]") for i, v in enumerate(value))


#: Options each architecture takes, with their checks.
_OPTIONS: dict[str, dict[str, Callable[[Any, str], Any]]] = {
    "mlp": {"hidden": _sizes},
    "cnn": {"width": _size, "hidden": _size},
    "resnet18": {"width": _size},
}


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def check_model_options(spec: Any) -> tuple[str, dict]:
    """``(name, options)`` of a model spec, checked without building anything: the
    architecture is known, every option is one it takes, of the right type and range
    (``input_shape`` and ``num_classes`` too when given). Raises :class:`UnlearnError`
    naming the option at fault."""
    if not isinstance(spec, dict):
        raise UnlearnError(f"a model spec must be a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str) or name not in _BUILDERS:
        raise UnlearnError(f"unknown model {name!r} (available: {', '.join(available_models())})")
    if "input_shape" in spec:
        shape = _sizes(spec.pop("input_shape"), f"model {name!r}: input_shape")
        if not shape:
            raise UnlearnError(f"model {name!r}: input_shape must not be empty")
    if "num_classes" in spec:
        _size(spec.pop("num_classes"), f"model {name!r}: num_classes")
    known = _OPTIONS[name]
    unknown = sorted(str(k) for k in set(spec) - set(known))
    if unknown:
        raise UnlearnError(
            f"bad options for model {name!r}: unknown option(s) {unknown} (known: {sorted(known)})"
        )
    return name, {k: known[k](v, f"model {name!r}: option {k!r}") for k, v in spec.items()}


def check_model_spec(spec: Any) -> tuple[str, tuple[int, ...], int, dict]:
    """``(name, input_shape, num_classes, options)`` of a full model spec, each checked.

    Beyond :func:`check_model_options`, the architecture is built on PyTorch's
    ``meta`` device (no memory, no random numbers drawn) to refuse one that does
    not fit its input or has more than :data:`MAX_PARAMETERS` parameters.
    """
    name, options = check_model_options(spec)
    for key in ("input_shape", "num_classes"):
        if key not in spec:
            raise UnlearnError(f"model spec lacks {key!r}")
    input_shape = tuple(int(s) for s in spec["input_shape"])
    num_classes = int(spec["num_classes"])
    with torch.device("meta"):
        probe = _build(name, input_shape, num_classes, options)
    n = sum(p.numel() for p in probe.parameters())
    if n > MAX_PARAMETERS:
        raise UnlearnError(
            f"model {name!r} with options {options} has {n:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} these small architectures allow"
        )
    return name, input_shape, num_classes, options


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """Build the architecture ``spec`` describes; ``seed`` fixes its initialisation.

    The spec is checked first (:func:`check_model_spec`); a bad one raises
    :class:`UnlearnError`.
    """
    name, input_shape, num_classes, options = check_model_spec(spec)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _build(name, input_shape, num_classes, options)
    return _build(name, input_shape, num_classes, options)


def _build(name, input_shape, num_classes, options) -> nn.Module:
    try:
        model = _BUILDERS[name](input_shape, num_classes, **options)
    except TypeError as exc:
        raise UnlearnError(f"bad options for model {name!r}: {exc}") from None
    return model
