"""Data sets that need no download: MNIST-1D (generated) and scikit-learn's bundled sets."""

from __future__ import annotations

import numpy as np

from ..errors import UnlearnError
from .core import ArrayData

__all__ = ["load_mnist1d", "load_sklearn", "EMBEDDED"]


def load_mnist1d(
    num_train: int = 4000, num_test: int = 1000, data_seed: int = 42
) -> tuple[ArrayData, ArrayData]:
    """Generate MNIST-1D offline with the ``mnist1d`` package's own generator.

    The default (4,000 training and 1,000 test sequences of length 40, data
    seed 42) matches the package's standard configuration. Inputs have shape
    (N, 1, 40). The package's generator reseeds NumPy's global generator, so
    it is saved and restored around the call.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    for key, value in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 10:
            raise UnlearnError(f"MNIST-1D {key} must be an integer >= 10, got {value!r}")
    if (
        isinstance(data_seed, bool)
        or not isinstance(data_seed, int | np.integer)
        or not 0 <= data_seed < 2**32
    ):
        raise UnlearnError(
            f"MNIST-1D data_seed must be an integer in [0, 2**32), got {data_seed!r}"
        )
    args = get_dataset_args()
    args.num_samples = num_train + num_test
    args.train_split = num_train / (num_train + num_test)
    args.seed = int(data_seed)
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    classes = tuple(str(i) for i in range(10))
    train = ArrayData(d["x"][:, None, :].astype(np.float32), d["y"], classes, "mnist1d-train")
    test = ArrayData(
        d["x_test"][:, None, :].astype(np.float32), d["y_test"], classes, "mnist1d-test"
    )
    return train, test


def load_sklearn(
    name: str, test_fraction: float = 0.2, split_seed: int = 0
) -> tuple[ArrayData, ArrayData]:
    """scikit-learn's bundled sets, stratified train/test split.

    ``digits`` keeps its image shape (N, 1, 8, 8), scaled to [0, 1]; the
    tabular sets (``breast_cancer``, ``wine``, ``iris``) are standardised with
    the training split's mean and spread.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loaders = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise UnlearnError(f"unknown scikit-learn data set {name!r} (known: {', '.join(loaders)})")
    bunch = loaders[name]()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    try:
        idx_tr, idx_te = train_test_split(
            np.arange(len(y)), test_size=test_fraction, random_state=split_seed, stratify=y
        )
    except ValueError as exc:  # sizes that leave a class out of a split, bad parameters
        raise UnlearnError(f"cannot split data set {name!r}: {exc}") from None
    if name == "digits":
        x = (x / 16.0).reshape(-1, 1, 8, 8)
    else:
        mu, sd = x[idx_tr].mean(0), x[idx_tr].std(0) + 1e-8
        x = (x - mu) / sd
    classes = tuple(str(c) for c in getattr(bunch, "target_names", np.unique(y)))
    return (
        ArrayData(x[idx_tr], y[idx_tr], classes, f"{name}-train"),
        ArrayData(x[idx_te], y[idx_te], classes, f"{name}-test"),
    )


EMBEDDED = ("mnist1d", "digits", "breast_cancer", "wine", "iris")
