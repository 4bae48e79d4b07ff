"""Split a data set's indices among federated clients: IID, or label-skewed by a Dirichlet.

Both splits return one sorted ``int64`` index array per client; the arrays are disjoint and
together cover ``0 .. n-1``. Every random draw comes from ``numpy.random.default_rng(seed)``,
so a seed fixes the split.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnlearnError
from ._checks import check_float, check_int, check_seed

__all__ = ["dirichlet_partition", "iid_partition"]


def _check_clients(clients, n: int) -> int:
    clients = check_int("clients", clients, low=1)
    if clients > n:
        raise UnlearnError(f"clients must be <= the number of samples ({n}), got {clients}")
    return clients


def _as_labels(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise UnlearnError(f"labels must be a 1-D array of class ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise UnlearnError(f"labels must hold integers, got dtype {arr.dtype}")
    return arr


def iid_partition(n: int, clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n)`` and cut it into ``clients`` parts whose sizes differ by at most one."""
    n = check_int("n", n, low=1)
    clients = _check_clients(clients, n)
    seed = check_seed(seed)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, clients)]


def dirichlet_partition(
    labels,
    clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label-skewed (non-IID) split: for each class, client shares are drawn from Dir(alpha).

    Small ``alpha`` concentrates each class on a few clients; large ``alpha`` approaches an
    IID split. The samples of a class are shuffled and cut at the cumulative shares. When a
    draw leaves some client with fewer than ``min_size`` samples, the whole split is drawn
    again from the same generator (so the result still depends on ``seed`` alone), at most
    ``max_tries`` times.
    """
    labels = _as_labels(labels)
    n = len(labels)
    if n == 0:
        raise UnlearnError("labels must not be empty")
    clients = _check_clients(clients, n)
    alpha = check_float("alpha", alpha, low=0.0, low_open=True)
    seed = check_seed(seed)
    min_size = check_int("min_size", min_size, low=0)
    max_tries = check_int("max_tries", max_tries, low=1)
    if min_size * clients > n:
        raise UnlearnError(
            f"min_size={min_size} for {clients} clients needs {min_size * clients} samples, "
            f"only {n} given"
        )

    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    concentration = np.full(clients, alpha)
    smallest = 0
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for members in by_class:
            members = rng.permutation(members)
            shares = rng.dirichlet(concentration)
            if not np.all(np.isfinite(shares)):  # defensive: treat as a failed draw
                continue
            cuts = np.minimum(
                (np.cumsum(shares)[:-1] * len(members)).astype(np.int64), len(members)
            )
            for k, chunk in enumerate(np.split(members, cuts)):
                parts[k].append(chunk)
        out = [
            np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64)
            for p in parts
        ]
        if sum(len(p) for p in out) != n:
            continue
        smallest = min(len(p) for p in out)
        if smallest >= min_size:
            return out
    raise UnlearnError(
        f"dirichlet_partition: no split gave every one of {clients} clients at least "
        f"min_size={min_size} samples in max_tries={max_tries} draws (smallest last: "
        f"{smallest}); raise alpha, lower min_size or clients, or raise max_tries"
    )
