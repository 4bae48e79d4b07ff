"""Data: embedded sets, readers for on-disk formats, and forget/retain splitting."""

from __future__ import annotations

from ..errors import UnlearnError
from .core import ArrayData, Split, as_array_data, iterate_batches, split_request
from .embedded import EMBEDDED, load_mnist1d, load_sklearn

__all__ = [
    "ArrayData",
    "Split",
    "as_array_data",
    "iterate_batches",
    "split_request",
    "load_dataset",
    "load_mnist1d",
    "load_sklearn",
    "EMBEDDED",
]


def load_dataset(spec: dict) -> tuple[ArrayData, ArrayData]:
    """Load the (train, test) pair a scenario's ``data`` mapping describes.

    ``{name: mnist1d}`` or ``{name: digits}`` for embedded sets (extra keys are
    passed to the loader), or ``{format: mnist-idx|cifar10|cifar100|image-folder,
    path: ...}`` for files on disk (image folders: ``path`` holds ``train/`` and
    ``test/`` sub-folders).
    """
    if not isinstance(spec, dict):
        raise UnlearnError("'data' must be a mapping")
    spec = dict(spec)
    if "format" in spec:
        from .readers import read_dataset

        fmt, path = spec.pop("format"), spec.pop("path", None)
        if path is None:
            raise UnlearnError(f"data of format {fmt!r} needs a 'path'")
        return read_dataset(fmt, path, "train", **spec), read_dataset(fmt, path, "test", **spec)
    name = spec.pop("name", None)
    try:
        if name == "mnist1d":
            return load_mnist1d(**spec)
        if name in EMBEDDED:
            return load_sklearn(name, **spec)
    except TypeError as exc:
        raise UnlearnError(f"bad options for data set {name!r}: {exc}") from None
    raise UnlearnError(
        f"unknown data set {name!r} (embedded: {', '.join(EMBEDDED)}; or give 'format' and 'path')"
    )
