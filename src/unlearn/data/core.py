"""In-memory classification data and forget/retain splitting."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import InitVar, dataclass

import numpy as np
import torch

from ..errors import UnlearnError
from ..requests import ForgetRequest
from ..validate import check_finite_tensor

__all__ = ["ArrayData", "Split", "as_array_data", "split_request", "iterate_batches"]


def _as_tensor(value, what: str) -> torch.Tensor:
    """``value`` (a tensor, an array or nested lists of numbers) as a real-valued tensor."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:  # ragged nested lists
            raise UnlearnError(f"{what} cannot be read as an array: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise UnlearnError(f"{what} must hold real numbers, got an array of {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64))
    if t.is_complex():
        raise UnlearnError(f"{what} must hold real numbers, got {t.dtype}")
    return t


def _as_labels(value, what: str) -> torch.Tensor:
    t = _as_tensor(value, what)
    if t.is_floating_point():
        check_finite_tensor(t, what)
        if t.numel() and not bool((t == t.round()).all()):
            raise UnlearnError(f"{what} must be integers, got non-integral values")
    return t.long()


@dataclass
class ArrayData:
    """A labelled data set held as tensors: ``x`` (N, ...) float32, ``y`` (N,) int64.

    Inputs must be finite (NaN or infinite values raise :class:`UnlearnError`);
    ``check_finite=False`` skips that scan for data known to be finite (a subset).
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str = "data"
    check_finite: InitVar[bool] = True

    def __post_init__(self, check_finite: bool = True) -> None:
        self.name = str(self.name)
        if isinstance(self.classes, str | bytes) or not isinstance(
            self.classes, Sequence | np.ndarray
        ):
            raise UnlearnError(
                f"classes of '{self.name}' must be a sequence of class names, "
                f"got {type(self.classes).__name__}"
            )
        self.classes = tuple(str(c) for c in self.classes)
        self.x = _as_tensor(self.x, f"inputs of '{self.name}'").float()
        self.y = _as_labels(self.y, f"labels of '{self.name}'")
        if self.x.ndim < 2:
            raise UnlearnError(
                f"inputs of '{self.name}' must have shape (samples, ...) with at least one "
                f"feature dimension, got shape {tuple(self.x.shape)}"
            )
        if self.y.ndim != 1:
            raise UnlearnError(f"labels of '{self.name}' must be one integer per sample")
        if self.x.shape[0] != self.y.shape[0]:
            raise UnlearnError(
                f"data set '{self.name}' has {self.x.shape[0]} inputs but {self.y.shape[0]} labels"
            )
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise UnlearnError(
                f"labels of '{self.name}' must lie in [0, {len(self.classes)}), "
                f"got [{int(self.y.min())}, {int(self.y.max())}]"
            )
        if check_finite:
            check_finite_tensor(self.x, f"inputs of data set '{self.name}'")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None):
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        # a subset of finite inputs is finite: skip the scan
        return ArrayData(self.x[idx], self.y[idx], self.classes, name or self.name, False)

    def targets(self) -> np.ndarray:
        return self.y.numpy()


def as_array_data(data, classes: Sequence[str] | None = None, name: str = "data") -> ArrayData:
    """Accept an :class:`ArrayData`, a pair ``(x, y)`` or any torch ``Dataset`` of ``(x, y)``.

    A generic ``Dataset`` is materialised in memory once (the methods index it
    many times; for data too large for memory, pass a smaller subset). Inputs
    that are not real numbers, labels that are not integers, ragged or
    mismatched shapes and NaN or infinite inputs raise :class:`UnlearnError`.
    """
    if isinstance(data, ArrayData):
        return data
    if isinstance(data, tuple | list) and len(data) == 2:
        x = _as_tensor(data[0], f"inputs of '{name}'")
        y = _as_labels(data[1], f"labels of '{name}'")
    elif isinstance(data, torch.utils.data.Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise UnlearnError("the data set must have a length") from exc
        xs, ys = [], []
        for i in range(n):
            item = data[i]
            if not isinstance(item, tuple | list) or len(item) < 2:
                raise UnlearnError("each item of the data set must be a pair (input, label)")
            xs.append(_as_tensor(item[0], f"input {i} of '{name}'").float())
            ys.append(_as_labels(item[1], f"label {i} of '{name}'"))
        if n:
            shapes = {tuple(t.shape) for t in xs}
            if len(shapes) > 1:
                raise UnlearnError(
                    f"the inputs of '{name}' have different shapes: {sorted(shapes)[:3]}"
                )
            if any(t.numel() != 1 for t in ys):
                raise UnlearnError(f"each label of '{name}' must be one integer")
            x, y = torch.stack(xs), torch.stack([t.reshape(()) for t in ys])
        else:
            x, y = torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)
    else:
        raise UnlearnError(
            f"cannot use {type(data).__name__} as data: pass ArrayData, (x, y) or a torch Dataset"
        )
    if len(y) == 0 or x.ndim == 0 or len(x) == 0:
        raise UnlearnError(f"the data set '{name}' is empty")
    if y.ndim != 1:
        raise UnlearnError(
            f"labels of '{name}' must be one integer per sample, got shape {tuple(y.shape)}"
        )
    if classes is None:
        if int(y.min()) < 0:
            raise UnlearnError(f"labels of '{name}' must be non-negative, got {int(y.min())}")
        classes = [str(i) for i in range(int(y.max()) + 1)]
    return ArrayData(x, y, classes, name)


@dataclass
class Split:
    """The training data divided by a forget request."""

    train: ArrayData
    forget_idx: np.ndarray
    retain_idx: np.ndarray

    @property
    def forget(self) -> ArrayData:
        return self.train.subset(self.forget_idx, "forget")

    @property
    def retain(self) -> ArrayData:
        return self.train.subset(self.retain_idx, "retain")


def split_request(train: ArrayData, request: ForgetRequest) -> Split:
    """Resolve ``request`` against ``train`` (raising on a request that does not fit)."""
    forget_idx = request.resolve(train)
    mask = np.ones(len(train), dtype=bool)
    mask[forget_idx] = False
    return Split(train, forget_idx, np.flatnonzero(mask).astype(np.int64))


def iterate_batches(
    data: ArrayData,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    labels: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches by tensor indexing (fast for in-memory data).

    ``labels`` replaces ``data.y`` (used by random-label methods).
    """
    n = len(data)
    y_all = data.y if labels is None else labels
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        b = order[start : start + batch_size]
        yield data.x[b], y_all[b]
