"""Forget requests: what must be removed from a trained model.

Each kind is a small frozen dataclass, validated on construction (for what
it can check alone) and again by :meth:`ForgetRequest.resolve` against the
training data it applies to (any family's data set: an ``ArrayData``, a
``PairData``, a ``MatrixData``, or a bare array of labels). ``resolve``
returns the sorted indices of the training items to forget; nothing is
modified on failure.

Kinds: ``samples`` (random or explicit items), ``class`` (every item of some
labels), ``group`` (every item of some groups: a person in a QA set, a
federated client, a generator's identity, a diffusion concept, a fact; the data
carries the group labels, ``data.group_labels(by)``) and ``feature``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidRequestError

__all__ = [
    "ForgetRequest",
    "SampleRequest",
    "ClassRequest",
    "FeatureRequest",
    "GroupRequest",
    "GROUP_KINDS",
    "request_from_dict",
]

#: what a group request may name (``by``)
GROUP_KINDS = ("person", "client", "identity", "concept", "fact", "group")


def _size(dataset) -> int:
    try:
        return len(dataset)
    except TypeError:
        raise InvalidRequestError(
            f"cannot resolve a request against {type(dataset).__name__}: it has no length"
        ) from None


def _labels(dataset) -> np.ndarray:
    if isinstance(dataset, np.ndarray | list | tuple):
        return np.asarray(dataset)
    targets = getattr(dataset, "targets", None)
    if not callable(targets):
        raise InvalidRequestError(
            f"a class request needs labelled data; {type(dataset).__name__} has no labels"
        )
    return np.asarray(targets())


def _whole_set(idx: np.ndarray, n: int) -> None:
    if len(idx) >= n:
        raise InvalidRequestError(
            "the forget set is the whole training set: nothing would be retained"
        )


class ForgetRequest:
    """Base class of every forget request."""

    kind: str = "abstract"

    def resolve(self, dataset, num_classes: int | None = None) -> np.ndarray:
        """Return the sorted indices of the items of ``dataset`` this request removes."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


def _as_int_tuple(values: Sequence[int] | np.ndarray, what: str) -> tuple[int, ...]:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if arr.ndim != 1:
        raise InvalidRequestError(f"{what} must be a flat list of integers")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InvalidRequestError(f"{what} must be integers, got {arr.dtype}")
    return tuple(int(v) for v in arr)


@dataclass(frozen=True)
class SampleRequest(ForgetRequest):
    """Forget individual training samples: a random ``fraction`` or explicit ``indices``.

    With ``fraction`` the samples are drawn uniformly without replacement using
    ``seed``; with ``indices`` exactly those samples are forgotten.
    """

    fraction: float | None = None
    indices: tuple[int, ...] | None = None
    seed: int = 0
    kind: str = field(default="samples", init=False)

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.indices is None):
            raise InvalidRequestError(
                "a sample request needs exactly one of 'fraction' or 'indices'"
            )
        if self.fraction is not None:
            f = self.fraction
            if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < float(f) < 1.0:
                raise InvalidRequestError(
                    f"forget fraction must be a number strictly between 0 and 1, got {f!r}"
                )
        if self.indices is not None:
            idx = _as_int_tuple(self.indices, "forget indices")
            if not idx:
                raise InvalidRequestError("forget indices are empty")
            if min(idx) < 0:
                raise InvalidRequestError(f"forget index {min(idx)} is negative")
            if len(set(idx)) != len(idx):
                raise InvalidRequestError("forget indices contain duplicates")
            object.__setattr__(self, "indices", idx)

    def resolve(self, dataset, num_classes: int | None = None) -> np.ndarray:
        n = _size(dataset)
        if self.indices is not None:
            idx = np.asarray(sorted(self.indices), dtype=np.int64)
            if idx[-1] >= n:
                raise InvalidRequestError(
                    f"forget index {int(idx[-1])} is out of range for a training set of {n} samples"
                )
        else:
            k = int(round(self.fraction * n))
            if k < 1:
                raise InvalidRequestError(
                    f"forget fraction {self.fraction} selects no sample of {n}"
                )
            rng = np.random.default_rng(self.seed)
            idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
        _whole_set(idx, n)
        return idx

    def describe(self) -> str:
        if self.fraction is not None:
            return f"random {100 * self.fraction:g}% of the training samples"
        return f"{len(self.indices)} explicit samples"


@dataclass(frozen=True)
class ClassRequest(ForgetRequest):
    """Forget every training sample of one or more classes."""

    classes: tuple[int, ...]
    kind: str = field(default="class", init=False)

    def __post_init__(self) -> None:
        classes = self.classes
        if isinstance(classes, int | np.integer):
            classes = (int(classes),)
        cls = _as_int_tuple(classes, "forget classes")
        if not cls:
            raise InvalidRequestError("a class request needs at least one class")
        if len(set(cls)) != len(cls):
            raise InvalidRequestError("forget classes contain duplicates")
        object.__setattr__(self, "classes", tuple(sorted(cls)))

    def resolve(self, dataset, num_classes: int | None = None) -> np.ndarray:
        targets = _labels(dataset)
        if num_classes is None:
            num_classes = getattr(dataset, "num_classes", None)
        present = set(np.unique(targets).tolist())
        for c in self.classes:
            if c not in present or (num_classes is not None and not 0 <= c < num_classes):
                raise InvalidRequestError(
                    f"class {c} does not occur in the training data "
                    f"(classes present: {sorted(present)})"
                )
        if present <= set(self.classes):
            raise InvalidRequestError(
                "the forget set is the whole training set: every class would be forgotten"
            )
        return np.flatnonzero(np.isin(targets, self.classes)).astype(np.int64)

    def describe(self) -> str:
        return "class " + ", ".join(str(c) for c in self.classes)


@dataclass(frozen=True)
class FeatureRequest(ForgetRequest):
    """Forget the model's dependence on input features (Ferrari-style feature unlearning).

    ``features`` are flat indices into one input sample (a column of tabular
    data, the pixels of a region). No training sample is removed: the model
    must become insensitive to these features. Methods that remove samples
    refuse this request.
    """

    features: tuple[int, ...]
    kind: str = field(default="feature", init=False)

    def __post_init__(self) -> None:
        feats = _as_int_tuple(self.features, "forget features")
        if not feats:
            raise InvalidRequestError("a feature request needs at least one feature index")
        if min(feats) < 0:
            raise InvalidRequestError(f"feature index {min(feats)} is negative")
        object.__setattr__(self, "features", tuple(sorted(set(feats))))

    def resolve(self, dataset, num_classes: int | None = None) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def describe(self) -> str:
        return f"{len(self.features)} input features"


@dataclass(frozen=True)
class GroupRequest(ForgetRequest):
    """Forget every item of one or more groups: ``by`` names the grouping (a ``person``
    in a QA set, a federated ``client``, a generator's ``identity``, a diffusion
    ``concept``, a ``fact``), ``groups`` the group ids to forget."""

    groups: tuple
    by: str = "group"
    kind: str = field(default="group", init=False)

    def __post_init__(self) -> None:
        groups = self.groups
        if isinstance(groups, str | int | np.integer):
            groups = (groups,)
        if not isinstance(groups, tuple | list | np.ndarray) or len(groups) == 0:
            raise InvalidRequestError("a group request needs at least one group")
        for g in groups:
            if isinstance(g, bool) or not isinstance(g, str | int | np.integer):
                raise InvalidRequestError(f"group ids must be strings or integers, got {g!r}")
        groups = tuple(int(g) if isinstance(g, np.integer) else g for g in groups)
        if len(set(groups)) != len(groups):
            raise InvalidRequestError("forget groups contain duplicates")
        if self.by not in GROUP_KINDS:
            raise InvalidRequestError(
                f"a group request groups by one of {', '.join(GROUP_KINDS)}, got {self.by!r}"
            )
        object.__setattr__(self, "groups", groups)

    def resolve(self, dataset, num_classes: int | None = None) -> np.ndarray:
        getter = getattr(dataset, "group_labels", None)
        if not callable(getter):
            raise InvalidRequestError(
                f"a group request needs data with {self.by!r} labels; "
                f"{type(dataset).__name__} has no group labels"
            )
        labels = np.asarray(getter(self.by))
        present = set(labels.tolist())
        for g in self.groups:
            if g not in present:
                shown = sorted(map(str, present))[:10]
                raise InvalidRequestError(
                    f"{self.by} {g!r} does not occur in the training data (e.g. {shown})"
                )
        idx = np.flatnonzero(np.isin(labels, list(self.groups))).astype(np.int64)
        _whole_set(idx, len(labels))
        return idx

    def describe(self) -> str:
        return f"{self.by} " + ", ".join(str(g) for g in self.groups)


def request_from_dict(spec: dict, default_seed: int = 0) -> ForgetRequest:
    """Build a request from a scenario-file mapping.

    ``{kind: random, fraction: 0.1}``, ``{kind: samples, indices: [...]}``,
    ``{kind: class, classes: [3]}``, ``{kind: feature, features: [...]}``,
    ``{kind: group, by: person, groups: [...]}``.
    """
    if not isinstance(spec, dict):
        raise InvalidRequestError(f"a forget request must be a mapping, got {type(spec).__name__}")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    try:
        if kind in ("random", "samples"):
            seed = spec.pop("seed", default_seed)
            return SampleRequest(**spec, seed=seed)
        if kind == "class":
            if "class" in spec:
                spec["classes"] = spec.pop("class")
            return ClassRequest(**spec)
        if kind == "feature":
            return FeatureRequest(**spec)
        if kind == "group":
            return GroupRequest(**spec)
    except TypeError as exc:
        raise InvalidRequestError(f"forget request of kind '{kind}': {exc}") from None
    raise InvalidRequestError(
        f"unknown forget request kind {kind!r} (expected random, samples, class, group or feature)"
    )
