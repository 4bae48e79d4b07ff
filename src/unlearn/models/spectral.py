"""Layer-wise spectral-norm clipping of implicitly linear layers (FastClip style).

A dense or convolutional layer computes ``f(x) = A_W x + b`` where ``A_W`` is linear
in both the input ``x`` and the weight ``W``.  Its Lipschitz constant is the
largest singular value of ``A_W``.  For ``nn.Linear`` this is the spectral norm of
the weight matrix; for a convolution it is the norm of the convolution operator on
inputs of the shape the layer actually sees (stride, padding, dilation and groups
included), which is *not* the norm of the reshaped kernel matrix.

Following Boroojeny, Telgarsky and Sundaram, "Spectrum Extraction and Clipping for
Implicitly Linear Layers" (AISTATS 2024, PMLR 238:2971-2979; code at
github.com/Ali-E/FastClip), the operator is never formed: ``A_W v`` is the layer's
own functional forward with the bias left out, and ``A_W^T y`` is the
vector-Jacobian product of that forward (here the transposed convolution with the
output padding that restores the input size, or autograd for padding modes other
than zeros and for 'same' padding).

Extraction.  The paper's PowerQR iterates a block of vectors ``X <- X + A^T A X``
(``A^T A X`` being the input gradient of ``||A X||^2 / 2``) and re-orthonormalises
the block by QR.  This module does the same subspace iteration on ``A^T A`` itself
(without the identity shift, which can only slow convergence), followed by a
Rayleigh-Ritz step: the SVD of ``A`` restricted to the block gives the
estimated top singular triplets, sorted, with ``A v_i = sigma_i u_i`` exactly.
The block is warm-started from the previous call's vectors, so a couple of
iterations per training step keep tracking the top of the spectrum; a block of a
few vectors (default 4 when clipping) follows clusters of nearly equal singular
values much better than a single vector.

Clipping.  As we read the paper's released code (``deflate_model`` and
``deflate_model_multi`` in ``models/clip_toolbox.py``), it clips by gradient
descent on the weights: the loss is the squared distance between the layer's
output on the top right singular vector ``v`` and ``c / sigma`` times the output
before clipping (``c`` the bound), and extraction and descent alternate for a few
rounds.  At the current weights that loss has gradient ``2 (sigma - c) G`` with
``G`` the gradient of ``<u, A_W v>`` with respect to ``W``.  For a linear layer
``G = u v^T``, and ``W <- W - (sigma - c) u v^T`` deflates the top singular value
to exactly ``c`` and leaves the rest of the spectrum alone; with several
estimated triplets above the bound this module deflates them all at once
(``u_i`` and ``v_i`` are orthonormal, so the rank-one updates do not interfere).
For a convolution ``G`` is ``u v^T`` mapped back to the kernel by the adjoint of
the kernel-to-operator map.  This module steps ``W <- W - (sigma - c) G / ||G||^2``,
the smallest kernel change (in Frobenius norm) that lowers ``<u, A_W v>`` from
``sigma`` to ``c`` (for several triplets, the smallest change meeting all of
them, from the Gram matrix of their ``G_i``).  For a linear layer
(``||u v^T|| = 1``) this is the exact deflation above.  The normalisation is this
module's choice, not the paper's (which uses a fixed step size): an unnormalised
step overshoots on convolutions, where ``||G||^2`` is above 1 (1.5 to 3 for the
repo's SmallCNN at initialisation).  A kernel change moves many singular values
of a convolution at once, so each step is followed by a fresh extraction and
repeated for a few rounds: for convolutions this iterative clipping reaches the
bound only approximately (within a few per cent in the tests), and during
training it keeps correcting the layer after every optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnlearnError

__all__ = ["SpectralClipper", "clip_layer_", "top_singular", "is_clippable"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NOISE = 0.1  # relative size of the noise added to deflated vectors


def is_clippable(module: nn.Module) -> bool:
    """Whether ``module`` is a layer this module can measure and clip."""
    return isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)


def _check_layer(layer: nn.Module) -> None:
    if not is_clippable(layer):
        raise UnlearnError(
            f"spectral clipping handles nn.Linear and nn.Conv1d/2d/3d, got {type(layer).__name__}"
        )


def _operator_shape(layer: nn.Module, input_shape: Iterable[int]) -> tuple[int, ...]:
    """The shape of one input of the operator (no batch dimension)."""
    if isinstance(layer, nn.Linear):
        # Leading dimensions (tokens, ...) only repeat W block-diagonally: same norm.
        return (layer.in_features,)
    shape = tuple(int(s) for s in input_shape)
    dims = len(layer.weight.shape) - 2
    if len(shape) != dims + 1:
        raise UnlearnError(
            f"{type(layer).__name__} takes inputs of shape (channels, *{dims} spatial), got {shape}"
        )
    if shape[0] != layer.in_channels:
        raise UnlearnError(
            f"{type(layer).__name__} expects {layer.in_channels} input channels, got {shape[0]}"
        )
    return shape


def _apply(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A_weight x`` for a batch ``x``: the layer's forward with ``weight`` and no bias."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    # _conv_forward applies the layer's stride, padding (any padding_mode, or the
    # 'same'/'valid' strings), dilation and groups, exactly as its forward does.
    return layer._conv_forward(x, weight, None)


_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _adjoint(
    layer: nn.Module, weight: torch.Tensor, y: torch.Tensor, in_shape: tuple[int, ...]
) -> torch.Tensor:
    """``A_weight^T y`` for a batch ``y`` of outputs; inputs have shape ``in_shape``."""
    if isinstance(layer, nn.Linear):
        return y @ weight
    if layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        # The transposed convolution; output_padding restores the input positions
        # that a strided convolution never reaches (its output size is floored).
        k = weight.shape[2:]
        out_pad = [
            size - ((o - 1) * s - 2 * p + d * (kk - 1) + 1)
            for size, o, s, p, d, kk in zip(
                in_shape[1:],
                y.shape[2:],
                layer.stride,
                layer.padding,
                layer.dilation,
                k,
                strict=True,
            )
        ]
        return _CONV_TRANSPOSE[len(k)](
            y, weight, None, layer.stride, layer.padding, out_pad, layer.groups, layer.dilation
        )
    # Other padding modes and string padding: the vector-Jacobian product at zero.
    with torch.enable_grad():
        x = y.new_zeros((y.shape[0], *in_shape), requires_grad=True)
        (grad,) = torch.autograd.grad(_apply(layer, weight, x), x, y)
    return grad


def _orthonormal(block: torch.Tensor) -> torch.Tensor:
    """Orthonormalise the rows of a ``(k, *shape)`` block (QR, as in PowerQR)."""
    q, _ = torch.linalg.qr(block.reshape(block.shape[0], -1).T)
    return q.T.reshape(block.shape)


def _random_block(k: int, shape: tuple[int, ...], state: dict, like: torch.Tensor):
    gen = state.get("gen")
    if gen is None:
        gen = state["gen"] = torch.Generator().manual_seed(int(state.get("seed", 0)))
    x = torch.randn((k, *shape), generator=gen)  # drawn on the CPU: the same on every device
    return x.to(device=like.device, dtype=torch.float32)


def _start_block(shape: tuple[int, ...], k: int, state: dict, weight: torch.Tensor):
    v = state.get("v")
    if v is None or tuple(v.shape[1:]) != shape:
        return _orthonormal(_random_block(k, shape, state, weight))
    v = v.to(device=weight.device, dtype=torch.float32)
    if v.shape[0] == k:
        return v  # stored orthonormal
    if v.shape[0] < k:  # a larger block than last time: fill it up with random rows
        v = torch.cat([v, _random_block(k - v.shape[0], shape, state, weight)])
    return _orthonormal(v[:k])


def _ritz(
    layer: nn.Module, weight: torch.Tensor, block: torch.Tensor, iters: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Subspace iteration on ``A^T A`` then Rayleigh-Ritz; returns (S, U, V) descending.

    ``A V[i] = S[i] U[i]`` holds exactly for the returned rows, which are the best
    approximations to the top singular triplets within the iterated subspace.
    """
    shape = tuple(block.shape[1:])
    with torch.no_grad():
        for _ in range(iters):
            block = _orthonormal(_adjoint(layer, weight, _apply(layer, weight, block), shape))
        k = block.shape[0]
        out = _apply(layer, weight, block)
        p, s, qh = torch.linalg.svd(out.reshape(k, -1).T, full_matrices=False)
        # (fewer than k triplets when the output has fewer than k entries)
        u = p.T.reshape(len(s), *out.shape[1:])
        v = (qh @ block.reshape(k, -1)).reshape(len(s), *shape)
    return s, u, v


def _extract(
    layer: nn.Module,
    input_shape: Iterable[int] | None,
    iters: int,
    state: dict | None,
    block: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_layer(layer)
    if iters < 0 or block < 1:
        raise UnlearnError("need iters >= 0 power iterations and a block of >= 1 vectors")
    if input_shape is None and not isinstance(layer, nn.Linear):
        raise UnlearnError("a convolution's spectral norm depends on its input shape: pass it")
    shape = _operator_shape(layer, input_shape or ())
    state = {} if state is None else state
    weight = layer.weight.detach().float()
    k = min(block, math.prod(shape), state.get("rank", block))
    s, u, v = _ritz(layer, weight, _start_block(shape, k, state, weight), iters)
    if len(s) < k:
        state["rank"] = len(s)  # the operator's output is smaller than the block
    state["v"] = v
    state["sigma"] = float(s[0])
    return s, u, v


def top_singular(
    layer: nn.Module,
    input_shape: Iterable[int] | None = None,
    iters: int = 20,
    state: dict | None = None,
    block: int = 1,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Top singular value and vectors of the linear operator ``layer`` applies.

    ``input_shape`` is one input's shape without the batch dimension, e.g.
    ``(channels, length)`` for a ``Conv1d``; it is ignored for ``nn.Linear``.
    Runs ``iters`` steps of power iteration on ``A^T A`` (with ``block > 1``, of
    subspace iteration on that many vectors, then Rayleigh-Ritz, which copes
    better with clustered singular values).  It starts from ``state["v"]`` when
    ``state`` holds vectors of the right shape (a warm start, so a few iterations
    per training step suffice) and stores its last vectors back there; otherwise
    from random vectors drawn from a generator seeded with ``state.get("seed", 0)``.

    Returns ``(sigma, u, v)``: ``v`` (shape ``(1, *input_shape)``) and ``u`` (the
    output shape) are unit vectors with ``A v = sigma u``, so ``sigma`` is a lower
    bound on the spectral norm that tightens with ``iters``.
    """
    s, u, v = _extract(layer, input_shape, iters, state, block)
    return float(s[0]), u[:1], v[:1]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _kernel_grads(
    layer: nn.Module, weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The kernel gradients of ``<u[i], A_W v[i]>`` for every pair ``i``, stacked."""
    k = len(u)
    with torch.enable_grad():
        if layer.padding_mode == "zeros":
            # All pairs in one call: the pairs become groups of a k-times wider
            # convolution whose kernel is the layer's, repeated.
            wide = weight.repeat(k, *[1] * (weight.dim() - 1)).requires_grad_(True)
            x = v.reshape(1, -1, *v.shape[2:])
            out = _CONV[weight.dim() - 2](
                x, wide, None, layer.stride, layer.padding, layer.dilation, layer.groups * k
            )
            (grad,) = torch.autograd.grad((out * u.reshape(out.shape)).sum(), wide)
            return grad.reshape(k, *weight.shape)
        w = weight.requires_grad_(True)
        grads = [
            torch.autograd.grad((_apply(layer, w, vi[None]) * ui).sum(), w)[0]
            for ui, vi in zip(u, v, strict=True)
        ]
        return torch.stack(grads)


def _shrink_(layer: nn.Module, u: torch.Tensor, v: torch.Tensor, amounts: torch.Tensor) -> None:
    """Lower each ``<u[i], A_W v[i]>`` by ``amounts[i]`` with the smallest change of ``W``."""
    weight = layer.weight
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            # d<u_i, W v_i>/dW = u_i v_i^T; orthonormal u's and v's make the constraints
            # independent, so the update is the exact deflation sum_i a_i u_i v_i^T.
            grads = u.reshape(len(u), -1).T @ (amounts[:, None] * v.reshape(len(v), -1))
            weight.sub_(grads.to(weight.dtype))
            return
        g = _kernel_grads(layer, weight.detach().float(), u, v).reshape(len(u), -1)
        # Minimum-norm kernel change meeting every constraint: solve the Gram system
        # (nearly parallel gradients are merged rather than met with a huge step).
        coef = torch.linalg.pinv(g @ g.T, rtol=1e-3, hermitian=True) @ amounts
        weight.sub_((coef @ g).reshape(weight.shape).to(weight.dtype))


def clip_layer_(
    layer: nn.Module,
    input_shape: Iterable[int] | None,
    max_norm: float,
    iters: int = 2,
    state: dict | None = None,
    rounds: int = 4,
    block: int = 4,
    tol: float = 1e-3,
) -> float:
    """Clip the spectral norm of ``layer``'s operator to ``max_norm`` in place.

    Runs ``iters`` warm-started steps of subspace iteration on ``block`` vectors
    (see :func:`top_singular`); while the largest estimate exceeds
    ``max_norm * (1 + tol)``, shrinks every estimated singular value above
    ``max_norm`` to ``max_norm`` and re-estimates, for at most ``rounds`` shrink
    steps.  For ``nn.Linear`` a step is the exact deflation
    ``W -= sum_i (sigma_i - c) u_i v_i^T`` (after which the deflated vectors, fixed
    points of the iteration, get a little random noise so that the next singular
    values above the bound are found); for convolutions it is the kernel step
    described in the module docstring, which reaches the bound approximately.
    The bias is never touched.  Returns the final estimate of the spectral norm.
    """
    if not max_norm > 0 or not math.isfinite(max_norm):
        raise UnlearnError(f"max_norm must be a positive number, got {max_norm!r}")
    if rounds < 0:
        raise UnlearnError("rounds must be >= 0")
    state = {} if state is None else state
    s, u, v = _extract(layer, input_shape, iters, state, block)
    shrunk = False
    for _ in range(rounds):
        over = s > max_norm * (1.0 + tol)
        if not bool(over.any()):
            break
        _shrink_(layer, u[over], v[over], s[over] - max_norm)
        shrunk = True
        if isinstance(layer, nn.Linear):
            # The deflated vectors are fixed points of the iteration; noise lets it
            # move on to singular values above the bound outside the block.
            noise = _random_block(int(over.sum()), tuple(v.shape[1:]), state, v)
            norms = noise.reshape(len(noise), -1).norm(dim=1)
            v[over] += _NOISE * noise / norms.reshape(-1, *[1] * (v.dim() - 1))
            state["v"] = _orthonormal(v)
        s, u, v = _extract(layer, input_shape, iters, state, block)
    sigma = float(s[0])
    if shrunk:
        # A shrunk direction keeps <u, A v> = max_norm, so the norm is at least that.
        sigma = max(sigma, float(max_norm))
        state["sigma"] = sigma
    return sigma


_SELECTIONS = {
    "all": is_clippable,
    "linear": lambda m: isinstance(m, nn.Linear),
    "conv": lambda m: isinstance(m, _CONV_TYPES),
}


class SpectralClipper:
    """Keeps every dense/convolutional layer of ``model`` at spectral norm <= ``max_norm``.

    One forward pass of ``example_input`` (its first sample, in eval mode, without
    gradients) records the input shape each selected layer sees; layers the
    forward pass never calls are left out.  ``layers`` is ``"all"``, ``"linear"``,
    ``"conv"`` or a collection of module names.  Call :meth:`clip_` after every
    optimiser step; each layer keeps its own block of ``block`` vectors, so
    ``iters`` iterations per call track the top singular directions as the weights
    move (the blocks are first warmed up with ``warmup_iters`` iterations, as the
    paper starts its extraction with many iterations), and at most ``rounds``
    shrink steps are taken per layer and call (see :func:`clip_layer_`).  Works on
    any device: the vectors follow each layer's weight.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        max_norm: float,
        iters: int = 2,
        layers: str | Iterable[str] = "all",
        rounds: int = 4,
        block: int = 4,
        warmup_iters: int = 20,
        seed: int = 0,
    ):
        if not max_norm > 0 or not math.isfinite(max_norm):
            raise UnlearnError(f"max_norm must be a positive number, got {max_norm!r}")
        if iters < 1 or rounds < 0 or block < 1 or warmup_iters < 0:
            raise UnlearnError("need iters >= 1, rounds >= 0, block >= 1 and warmup_iters >= 0")
        self.model = model
        self.max_norm = float(max_norm)
        self.iters = int(iters)
        self.rounds = int(rounds)
        self.block = int(block)
        self.layers: dict[str, nn.Module] = self._select(model, layers)
        self.input_shapes: dict[str, tuple[int, ...]] = self._record_shapes(example_input)
        self.layers = {n: m for n, m in self.layers.items() if n in self.input_shapes}
        self.states: dict[str, dict[str, Any]] = {
            name: {"seed": seed + i} for i, name in enumerate(self.layers)
        }
        self._norms: dict[str, float] = {}
        if warmup_iters:
            self.norms(iters=warmup_iters)

    @staticmethod
    def _select(model: nn.Module, layers: str | Iterable[str]) -> dict[str, nn.Module]:
        if isinstance(layers, str):
            if layers not in _SELECTIONS:
                raise UnlearnError(
                    f"unknown layer selection {layers!r} (all, linear, conv or a list of names)"
                )
            keep = _SELECTIONS[layers]
            return {n: m for n, m in model.named_modules() if keep(m)}
        modules = dict(model.named_modules())
        chosen = {}
        for name in layers:
            if name not in modules:
                raise UnlearnError(f"model has no module named {name!r}")
            _check_layer(modules[name])
            chosen[name] = modules[name]
        return chosen

    def _record_shapes(self, example_input: torch.Tensor) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}

        def hook(name):
            def record(module, args):
                shape = tuple(args[0].shape[1:])
                old = shapes.get(name)
                # A layer called on several shapes is measured on the largest.
                if old is None or math.prod(shape) > math.prod(old):
                    shapes[name] = shape

            return record

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in self.layers.items()]
        modes = {m: m.training for m in self.model.modules()}
        try:
            self.model.eval()
            param = next(self.model.parameters(), None)
            if param is not None and isinstance(example_input, torch.Tensor):
                example_input = example_input.to(param.device)
            with torch.no_grad():
                self.model(example_input[:1])
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        return shapes

    def clip_(self, iters: int | None = None, rounds: int | None = None) -> dict[str, float]:
        """Clip every layer in place; returns {layer name: spectral-norm estimate}.

        ``iters`` and ``rounds`` override the clipper's settings for this call, e.g.
        for a thorough final clip after training.
        """
        iters = self.iters if iters is None else int(iters)
        rounds = self.rounds if rounds is None else int(rounds)
        for name, layer in self.layers.items():
            shape, state = self.input_shapes[name], self.states[name]
            self._norms[name] = clip_layer_(
                layer, shape, self.max_norm, iters, state, rounds, self.block
            )
        return dict(self._norms)

    def norms(self, iters: int | None = None) -> dict[str, float]:
        """Estimate every layer's spectral norm without changing the weights.

        Runs ``iters`` (default: the clipper's ``iters``) more warm-started
        iterations per layer; the estimates are lower bounds that tighten with
        ``iters``.
        """
        n = self.iters if iters is None else int(iters)
        for name, layer in self.layers.items():
            shape, state = self.input_shapes[name], self.states[name]
            self._norms[name] = top_singular(layer, shape, n, state, self.block)[0]
        return dict(self._norms)
