# Own PGD: torchattacks needs torchvision; ART works on NumPy arrays; foolbox is barely maintained.
"""Projected gradient descent (PGD) on torch tensors, and the nearest-adversarial search of AMUN.

:func:`pgd_attack` is batched PGD (Madry et al., 2018) under an L2 or
L-infinity budget that may differ per sample. :func:`nearest_adversarial`
is the search AMUN uses to find, for every input, an adversarial example
close to it (Ebrahimpour-Boroojeny et al., 2025): PGD-L2 with a budget of
0.04 and step budget/10 for 50 steps; the budget of every sample that is
still classified as its label is doubled and the attack goes on, until all
samples are misclassified.

Both leave the model as they found it: it runs in eval mode during the
attack (so batch statistics do not mix samples) and each module's mode is
restored afterwards; gradients are taken with respect to the inputs only,
so no parameter's ``.grad`` is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnlearnError

__all__ = ["pgd_attack", "nearest_adversarial"]

_NORMS = ("l2", "linf")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode, then restore each module's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _check_norm(norm: str) -> str:
    if norm not in _NORMS:
        raise UnlearnError(f"unknown PGD norm {norm!r} (l2 or linf)")
    return norm


def _check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim < 2:
        raise UnlearnError("PGD inputs must be a floating-point tensor of shape (N, ...)")
    if not torch.is_tensor(y) or y.shape != (x.shape[0],):
        raise UnlearnError(
            f"PGD labels must be a tensor of shape ({x.shape[0]},), "
            f"got {tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}"
        )


def _per_sample(value, n: int, like: torch.Tensor, what: str) -> torch.Tensor:
    """A number or an (N,) tensor as a finite, non-negative (N,) tensor like ``like``."""
    t = torch.as_tensor(value, dtype=like.dtype).detach().to(like.device)
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise UnlearnError(
            f"{what} must be a number or a tensor of shape ({n},), got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise UnlearnError(f"{what} must be finite and non-negative")
    return t


def _rows(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (N,) tensor to broadcast over ``like`` (N, ...)."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def _project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each row of ``delta`` onto its own ball of radius ``eps``."""
    if norm == "l2":
        length = delta.flatten(1).norm(dim=1)
        shrink = torch.clamp(eps / length.clamp_min(1e-12), max=1.0)
        return delta * _rows(shrink, delta)
    bound = _rows(eps, delta)
    return torch.maximum(torch.minimum(delta, bound), -bound)


def _clip(x: torch.Tensor, clamp: tuple[float, float] | None) -> torch.Tensor:
    return x if clamp is None else x.clamp(float(clamp[0]), float(clamp[1]))


def _step(
    adv: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    eps: torch.Tensor,
    step: torch.Tensor,
    norm: str,
    sign: float,
    clamp: tuple[float, float] | None,
) -> torch.Tensor:
    """One ascent (sign=+1) or descent (sign=-1) step, then projection and clipping."""
    if norm == "l2":
        length = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        adv = adv + sign * _rows(step / length, grad) * grad
    else:
        adv = adv + sign * _rows(step, grad) * grad.sign()
    return _clip(x + _project(adv - x, eps, norm), clamp)


def _unstall(
    grad: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, xa: torch.Tensor
) -> torch.Tensor:
    """Replace vanished cross-entropy gradients by the margin loss's.

    On a very confident sample the softmax saturates in float32 and the
    cross-entropy gradient underflows to (almost) zero, so PGD stops moving
    however large eps gets. For those rows the gradient of the margin
    max_{k != y} z_k - z_y is used instead (the same ascent direction goal).
    """
    stalled = grad.flatten(1).norm(dim=1) < 1e-20
    if not bool(stalled.any()):
        return grad
    own = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    (g2,) = torch.autograd.grad((others - own)[stalled].sum(), xa)
    grad = grad.clone()
    grad[stalled] = g2[stalled]
    return grad


def _reached(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def _pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    step: torch.Tensor,
    norm: str,
    steps: int,
    targeted: bool,
    clamp: tuple[float, float] | None,
    start: torch.Tensor,
    stop_on_success: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PGD from ``start``; the model must already be in eval mode.

    With ``stop_on_success`` a sample is frozen at the first iterate that
    reaches the goal (checked before every step and after the last one).
    Returns the iterates, a success mask and the prediction at success (-1
    where none; only filled with ``stop_on_success``).
    """
    n = x.shape[0]
    adv = start.detach().clone()
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    pred = torch.full((n,), -1, dtype=torch.long, device=x.device)
    active = torch.arange(n, device=x.device)
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        if active.numel() == 0:
            break
        xa = adv[active].requires_grad_(True)
        logits = model(xa)
        loss = F.cross_entropy(logits, y[active], reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa, retain_graph=True)
        grad = _unstall(grad, logits, y[active], xa)
        if stop_on_success:
            hit = _reached(logits.detach(), y[active], targeted)
            if bool(hit.any()):
                done[active[hit]] = True
                pred[active[hit]] = logits.detach()[hit].argmax(1)
                active, grad = active[~hit], grad[~hit]
                if active.numel() == 0:
                    break
        adv[active] = _step(
            adv[active], grad, x[active], eps[active], step[active], norm, sign, clamp
        )
    if stop_on_success and active.numel():
        with torch.no_grad():
            logits = model(adv[active])
        hit = _reached(logits, y[active], targeted)
        done[active[hit]] = True
        pred[active[hit]] = logits[hit].argmax(1)
    return adv.detach(), done, pred


def _random_start(
    x: torch.Tensor, eps: torch.Tensor, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform draw in the L-inf box, or a random direction at a uniform radius in the L2 ball."""
    n = x.shape[0]
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + (2 * u - 1) * _rows(eps, x)
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    direction = direction / _rows(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
    radius = torch.rand(n, generator=generator, dtype=x.dtype).to(x.device) * eps
    return x + direction * _rows(radius, x)


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    norm: str = "l2",
    steps: int = 50,
    step_size: float | torch.Tensor | None = None,
    targeted: bool = False,
    random_start: bool = False,
    clamp: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Batched PGD: perturb each row of ``x`` within its own ``eps`` ball.

    Untargeted (default), it maximises the cross-entropy of ``y``; with
    ``targeted`` it minimises the cross-entropy towards the classes ``y``.
    ``eps`` (and ``step_size``, default ``eps / 10``) are numbers or
    per-sample tensors of shape (N,). Under ``"l2"`` each step moves by
    ``step_size`` along the normalised gradient and the perturbation is
    projected onto the sample's L2 ball; under ``"linf"`` steps follow the
    gradient's sign and the perturbation is clipped to ``[-eps, eps]``.
    ``clamp=(lo, hi)`` clips the perturbed inputs after every step (for
    inputs that already lie in that range, the budget is still respected).
    ``random_start`` starts from a random point of the ball, drawn with
    ``generator``. Returns the final iterate, detached, on ``x``'s device.
    """
    norm = _check_norm(norm)
    _check_inputs(x, y)
    if int(steps) < 0:
        raise UnlearnError(f"PGD steps must be >= 0, got {steps}")
    x = x.detach()
    y = y.to(x.device).long()
    n = x.shape[0]
    eps_t = _per_sample(eps, n, x, "eps")
    step_t = eps_t / 10 if step_size is None else _per_sample(step_size, n, x, "step_size")
    start = _random_start(x, eps_t, norm, generator) if random_start else x
    start = _clip(start, clamp)
    with _eval_mode(model):
        adv, _, _ = _pgd(
            model, x, y, eps_t, step_t, norm, int(steps), targeted, clamp, start, False
        )
    return adv


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for p in model.parameters():
        return p.device
    return fallback


def nearest_adversarial(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps0: float = 0.04,
    norm: str = "l2",
    steps: int = 50,
    max_doublings: int = 16,
    batch_size: int = 256,
    clamp: tuple[float, float] | None = None,
    return_found: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every row of ``x``, a nearby input the model does not classify as ``y``.

    AMUN's search (Ebrahimpour-Boroojeny et al., 2025): untargeted PGD with
    budget ``eps0``, step ``eps / 10`` and ``steps`` steps; a sample is kept
    at the first iterate whose prediction differs from its label. Samples
    that never got there have their budget doubled and the attack continues
    from where it stopped (as in the authors' code), up to ``max_doublings``
    times; if some samples still hold their label, an :class:`UnlearnError`
    says how many.

    A sample the model already misclassifies is its own adversarial example
    (no perturbation, eps 0), as in the authors' code. Pass the model's own
    predictions as ``y`` to search for a change of prediction instead.

    Returns ``(x_adv, y_adv, eps_found)``: the adversarial inputs, the
    model's predictions on them, and the budget at which each was found:
    the distance to the nearest misclassified point is at most ``eps_found``
    and, where the budget was doubled and PGD finds the boundary, more than
    ``eps_found / 2``. Work is done in chunks of ``batch_size`` on the
    model's device; results come back on ``x``'s device. With
    ``return_found`` no error is raised for samples that never changed class:
    a fourth output, a boolean mask of the samples that did, is returned.
    """
    norm = _check_norm(norm)
    _check_inputs(x, y)
    if not eps0 > 0:
        raise UnlearnError(f"eps0 must be > 0, got {eps0}")
    if int(steps) < 1 or int(max_doublings) < 0 or int(batch_size) < 1:
        raise UnlearnError("need steps >= 1, max_doublings >= 0 and batch_size >= 1")
    home = x.device
    device = _model_device(model, home)
    n = x.shape[0]
    x_out = x.detach().clone()
    y_out = torch.empty(n, dtype=torch.long, device=home)
    eps_out = torch.zeros(n, dtype=x.dtype, device=home)
    found_out = torch.zeros(n, dtype=torch.bool, device=home)
    missing = 0
    with _eval_mode(model):
        for lo in range(0, n, int(batch_size)):
            hi = min(n, lo + int(batch_size))
            xb = x[lo:hi].detach().to(device)
            yb = y[lo:hi].to(device).long()
            adv, lab, eps_b, ok = _search(
                model, xb, yb, eps0, norm, int(steps), max_doublings, clamp
            )
            x_out[lo:hi] = adv.to(home)
            y_out[lo:hi] = lab.to(home)
            eps_out[lo:hi] = eps_b.to(home)
            missing += int((~ok).sum())
            found_out[lo:hi] = ok.to(home)
    if return_found:
        return x_out, y_out, eps_out, found_out
    if missing:
        raise UnlearnError(
            f"nearest_adversarial: {missing} of {n} samples never changed class up to "
            f"eps = {eps0 * 2 ** int(max_doublings):g} ({norm}, {max_doublings} doublings "
            f"of {eps0:g}); raise max_doublings or eps0"
        )
    return x_out, y_out, eps_out


def _search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps0: float,
    norm: str,
    steps: int,
    max_doublings: int,
    clamp: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The doubling search on one chunk (model already in eval mode)."""
    n = x.shape[0]
    with torch.no_grad():
        labels = model(x).argmax(1)
    found = labels != y  # already misclassified: the sample itself, at eps 0
    adv = x.clone()
    eps_found = torch.zeros(n, dtype=x.dtype, device=x.device)
    active = torch.nonzero(~found).squeeze(1)
    current = _clip(x[active], clamp)
    for k in range(int(max_doublings) + 1):
        if active.numel() == 0:
            break
        eps = torch.full((active.numel(),), eps0 * 2.0**k, dtype=x.dtype, device=x.device)
        current, hit, pred = _pgd(
            model, x[active], y[active], eps, eps / 10, norm, steps, False, clamp, current, True
        )
        idx = active[hit]
        adv[idx] = current[hit]
        labels[idx] = pred[hit]
        eps_found[idx] = eps[hit]
        found[idx] = True
        active, current = active[~hit], current[~hit]
    return adv, labels, eps_found, found
