"""In-memory classification data and forget/retain splitting."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UnlearnError
from ..requests import ForgetRequest

__all__ = ["ArrayData", "Split", "as_array_data", "split_request", "iterate_batches"]


@dataclass
class ArrayData:
    """A labelled data set held as tensors: ``x`` (N, ...) float32, ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor):
            self.x = torch.as_tensor(np.asarray(self.x), dtype=torch.float32)
        if not isinstance(self.y, torch.Tensor):
            self.y = torch.as_tensor(np.asarray(self.y), dtype=torch.int64)
        self.x = self.x.float()
        self.y = self.y.long()
        if self.x.shape[0] != self.y.shape[0]:
            raise UnlearnError(
                f"data set '{self.name}' has {self.x.shape[0]} inputs but {self.y.shape[0]} labels"
            )
        if self.y.ndim != 1:
            raise UnlearnError(f"labels of '{self.name}' must be one integer per sample")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise UnlearnError(
                f"labels of '{self.name}' must lie in [0, {len(self.classes)}), "
                f"got [{int(self.y.min())}, {int(self.y.max())}]"
            )
        self.classes = tuple(str(c) for c in self.classes)

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
        return ArrayData(self.x[idx], self.y[idx], self.classes, name or self.name)

    def targets(self) -> np.ndarray:
        return self.y.numpy()


def as_array_data(data, classes: Sequence[str] | None = None, name: str = "data") -> ArrayData:
    """Accept an :class:`ArrayData`, a pair ``(x, y)`` or any torch ``Dataset`` of ``(x, y)``.

    A generic ``Dataset`` is materialised in memory once (the methods index it
    many times; for data too large for memory, pass a smaller subset).
    """
    if isinstance(data, ArrayData):
        return data
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    elif isinstance(data, torch.utils.data.Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise UnlearnError("the data set must have a length") from exc
        if n == 0:
            raise UnlearnError("the data set is empty")
        xs, ys = [], []
        for i in range(n):
            item = data[i]
            if not isinstance(item, tuple | list) or len(item) < 2:
                raise UnlearnError("each item of the data set must be a pair (input, label)")
            xs.append(torch.as_tensor(item[0]).float())
            ys.append(int(item[1]))
        x, y = torch.stack(xs), torch.tensor(ys, dtype=torch.long)
    else:
        raise UnlearnError(
            f"cannot use {type(data).__name__} as data: pass ArrayData, (x, y) or a torch Dataset"
        )
    if classes is None:
        classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    return ArrayData(x, y, tuple(classes), name)


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
    forget_idx = request.resolve(train.targets(), train.num_classes)
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
