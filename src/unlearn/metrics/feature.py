"""Feature-level metrics for classifiers: how much the output depends on chosen input
features (Ferrari's feature sensitivity), and how often a planted trigger still works
(backdoor attack success rate).

``features`` are always flat indices into one input sample, as in
:class:`unlearn.requests.FeatureRequest`: a tabular column, the pixels of a region, a
trigger patch. Everything here runs without gradients, in evaluation mode, on the model's
own device, and raises ``ValueError`` on input it cannot score.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "OUTPUTS",
    "check_features",
    "perturb_features",
    "sensitivity_ratios",
    "feature_sensitivity",
    "attack_success_rate",
    "plant_trigger",
]

#: what the sensitivity is measured on: the raw outputs, or their softmax
OUTPUTS = ("logits", "probs")


def check_features(features, input_size: int) -> torch.Tensor:
    """``features`` as a sorted, duplicate-free long tensor of flat indices in
    ``[0, input_size)``, or a ValueError naming the first bad one."""
    arr = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"features must be a non-empty flat list of indices, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"features must be integer indices, got {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"feature index {int(arr.min())} is negative")
    if arr.max() >= input_size:
        raise ValueError(
            f"feature index {int(arr.max())} is out of range for inputs of {input_size} values"
        )
    return torch.as_tensor(np.unique(arr), dtype=torch.long)


def _check_noise(n_draws: int, sigma_min: float, sigma_max: float, output: str) -> None:
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    if sigma_min > sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max})")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")


def _inputs(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (samples, ...) tensor, got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite")
    return x


def perturb_features(
    x: torch.Tensor,
    features: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One noise draw on the target features: ``(x + delta_F, ||delta_F||_2)`` per example.

    Each example gets its own sigma, uniform in ``[sigma_min, sigma_max]``, and Gaussian
    noise of that scale on ``features`` only; the rest of the input is untouched. The
    noise is drawn on the CPU from ``gen`` (the same draws on every device).
    """
    b = x.shape[0]
    sigma = sigma_min + (sigma_max - sigma_min) * torch.rand(b, 1, generator=gen)
    noise = torch.randn(b, len(features), generator=gen) * sigma
    flat = x.reshape(b, -1).clone()
    flat[:, features.to(x.device)] += noise.to(x.device, x.dtype)
    return flat.view_as(x), torch.linalg.vector_norm(noise, dim=1).to(x.device)


def _output(out: torch.Tensor, output: str) -> torch.Tensor:
    out = out.reshape(out.shape[0], -1)
    return torch.softmax(out, dim=1) if output == "probs" else out


def sensitivity_ratios(
    model: nn.Module,
    x: torch.Tensor,
    features: torch.Tensor,
    n_draws: int,
    sigma_min: float,
    sigma_max: float,
    gen: torch.Generator,
    output: str = "logits",
    detach_noisy: bool = True,
) -> torch.Tensor:
    """Per example, the mean over ``n_draws`` noise draws of
    ``||f(x) - f(x + delta_F)||_2 / ||delta_F||_2``.

    When gradients are enabled (Ferrari's objective), ``f(x)`` keeps its graph; the
    perturbed passes run without gradient if ``detach_noisy`` (the official code: the
    gradient flows through ``f(x)`` alone), and with it otherwise (the gradient of the
    ratio itself). ``x`` must already be on the model's device.
    """
    clean = _output(model(x), output)
    total = torch.zeros(x.shape[0], device=clean.device, dtype=clean.dtype)
    for _ in range(n_draws):
        xp, dnorm = perturb_features(x, features, sigma_min, sigma_max, gen)
        with torch.no_grad() if detach_noisy else contextlib.nullcontext():
            noisy = _output(model(xp), output)
        total = total + torch.linalg.vector_norm(clean - noisy, dim=1) / dnorm.to(clean.dtype)
    return total / n_draws


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def feature_sensitivity(
    model: nn.Module,
    x,
    features: Sequence[int],
    n_draws: int = 20,
    sigma_min: float = 0.05,
    sigma_max: float = 1.0,
    seed: int = 0,
    output: str = "logits",
    batch_size: int = 1024,
) -> float:
    """Ferrari's feature sensitivity of ``model`` on inputs ``x``: the mean, over the
    examples and ``n_draws`` Gaussian draws per example (sigma uniform in
    ``[sigma_min, sigma_max]``), of ``||f(x) - f(x + delta_F)||_2 / ||delta_F||_2`` with
    the noise ``delta_F`` on ``features`` only. ``f`` is the model's output (``logits``)
    or its softmax (``probs``). Lower: the model depends less on the features.

    Deterministic under ``seed`` for a given ``batch_size`` (the draws are taken batch by
    batch; their distribution, hence the expected value, does not depend on it).
    """
    x = _inputs(x, "x")
    feats = check_features(features, x[0].numel())
    _check_noise(n_draws, sigma_min, sigma_max, output)
    _check_batch(batch_size)
    gen = torch.Generator().manual_seed(int(seed))
    dev = _device(model)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                xb = x[s : s + batch_size].to(dev)
                r = sensitivity_ratios(model, xb, feats, n_draws, sigma_min, sigma_max, gen, output)
                total += float(r.double().sum())
    finally:
        model.train(was_training)
    return total / x.shape[0]


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            preds = []
            for s in range(0, len(x), batch_size):
                xb = x[s : s + batch_size].to(dev)
                preds.append(model(xb).reshape(xb.shape[0], -1).argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(preds)


def attack_success_rate(
    model: nn.Module,
    x_triggered,
    target_class: int,
    true_labels,
    batch_size: int = 1024,
) -> float:
    """Backdoor attack success rate, in percent: of the triggered inputs whose true label
    is not ``target_class``, the share the model classifies as ``target_class``. Lower:
    the trigger no longer works. Inputs already of the target class are left out, as the
    backdoor literature counts it."""
    x = _inputs(x_triggered, "x_triggered")
    y = np.asarray(true_labels.cpu() if isinstance(true_labels, torch.Tensor) else true_labels)
    if y.shape != (x.shape[0],) or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(
            f"true_labels must hold one integer label per input ({x.shape[0]}), "
            f"got shape {y.shape} of {y.dtype}"
        )
    if isinstance(target_class, bool) or not isinstance(target_class, int | np.integer):
        raise ValueError(f"target_class must be an integer, got {target_class!r}")
    _check_batch(batch_size)
    keep = torch.as_tensor(y != int(target_class))
    if not bool(keep.any()):
        raise ValueError(
            f"every triggered input is of the target class {int(target_class)}: "
            "the attack success rate is undefined"
        )
    preds = _predict(model, x[keep], batch_size)
    return 100.0 * float((preds == int(target_class)).double().mean())


def plant_trigger(x, features: Sequence[int], value) -> torch.Tensor:
    """Triggered copies of the inputs ``x`` (samples, ...): ``features`` (flat indices
    into one sample, e.g. a 5x5 corner patch) set to ``value``, a number or one value per
    feature. ``x`` itself is not changed."""
    x = _inputs(x, "x")
    check_features(features, x[0].numel())
    idx = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features)
    if len(np.unique(idx)) != idx.size:
        raise ValueError("features contain duplicates")
    v = torch.as_tensor(value, dtype=x.dtype)
    if v.ndim > 1 or (v.ndim == 1 and v.numel() != idx.size):
        raise ValueError(
            f"value must be a number or one value per feature ({idx.size}), "
            f"got shape {tuple(v.shape)}"
        )
    if not bool(torch.isfinite(v).all()):
        raise ValueError("value must be finite")
    flat = x.reshape(x.shape[0], -1).clone()
    flat[:, torch.as_tensor(idx, dtype=torch.long)] = v.to(flat.device)
    return flat.view_as(x)
