"""Data: embedded sets, readers for on-disk formats, and forget/retain splitting."""

from __future__ import annotations

import math
from typing import Any

from ..errors import UnlearnError
from .core import ArrayData, Split, as_array_data, iterate_batches, split_request
from .embedded import EMBEDDED, load_mnist1d, load_sklearn
from .readers import READ_FORMATS, read_dataset

__all__ = [
    "ArrayData",
    "Split",
    "as_array_data",
    "iterate_batches",
    "split_request",
    "load_dataset",
    "check_data_spec",
    "load_mnist1d",
    "load_sklearn",
    "EMBEDDED",
]


_MAX_INT = 2**32 - 1  # seeds: numpy's legacy generators take [0, 2**32)
_MNIST1D_MAX = 1_000_000  # samples; beyond that generation takes hours
#: Options each embedded data set takes: option -> (kind, low, high).
_EMBEDDED_OPTIONS = {
    "mnist1d": {
        "num_train": ("int", 10, _MNIST1D_MAX),
        "num_test": ("int", 10, _MNIST1D_MAX),
        "data_seed": ("int", 0, _MAX_INT),
    },
    "sklearn": {
        "test_fraction": ("fraction", 0.0, 1.0),
        "split_seed": ("int", 0, _MAX_INT),
    },
}
_FORMAT_OPTIONS = {"image-folder": {"size", "grayscale"}}


def _check_option(key: str, value: Any, kind: str, low: float, high: float) -> None:
    where = f"data option {key!r}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise UnlearnError(f"{where} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise UnlearnError(f"{where} must lie in [{low}, {high}], got {value}")
    else:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low < value < high
        ):
            raise UnlearnError(
                f"{where} must be a number strictly between {low:g} and {high:g}, got {value!r}"
            )


def check_data_spec(spec: Any) -> None:
    """Check a scenario's ``data`` mapping without loading anything.

    Raises :class:`UnlearnError` naming the option at fault: an unknown data
    set, format or option, or an option of the wrong type or out of range.
    Whether the files of a ``format`` exist is checked when they are read.
    """
    if not isinstance(spec, dict):
        raise UnlearnError(f"'data' must be a mapping, got {type(spec).__name__}")
    bad_keys = [k for k in spec if not isinstance(k, str)]
    if bad_keys:
        raise UnlearnError(f"data options must be named by strings, got {bad_keys[0]!r}")
    if "format" in spec:
        fmt, path = spec["format"], spec.get("path")
        if "name" in spec:
            raise UnlearnError("'data' takes either 'name' or 'format' and 'path', not both")
        if not isinstance(fmt, str) or fmt not in READ_FORMATS:
            raise UnlearnError(f"unknown data format {fmt!r} (choose one of {READ_FORMATS})")
        if not isinstance(path, str) or not path.strip() or "\x00" in path:
            raise UnlearnError(f"data of format {fmt!r} needs a 'path' (a non-empty string)")
        allowed = _FORMAT_OPTIONS.get(fmt, set())
        unknown = sorted(set(spec) - {"format", "path"} - allowed)
        if unknown:
            raise UnlearnError(
                f"unknown option(s) {unknown} for data format {fmt!r} (known: {sorted(allowed)})"
            )
        if "grayscale" in spec and not isinstance(spec["grayscale"], bool):
            raise UnlearnError(
                f"data option 'grayscale' must be true or false, got {spec['grayscale']!r}"
            )
        return
    name = spec.get("name")
    if not isinstance(name, str) or name not in EMBEDDED:
        raise UnlearnError(
            f"unknown data set {name!r} (embedded: {', '.join(EMBEDDED)}; "
            "or give 'format' and 'path')"
        )
    options = _EMBEDDED_OPTIONS["mnist1d" if name == "mnist1d" else "sklearn"]
    unknown = sorted(set(spec) - {"name"} - set(options))
    if unknown:
        raise UnlearnError(
            f"bad options for data set {name!r}: unknown option(s) {unknown} "
            f"(known: {sorted(options)})"
        )
    for key, (kind, low, high) in options.items():
        if key in spec:
            _check_option(key, spec[key], kind, low, high)


def load_dataset(spec: dict) -> tuple[ArrayData, ArrayData]:
    """Load the (train, test) pair a scenario's ``data`` mapping describes.

    ``{name: mnist1d}`` or ``{name: digits}`` for embedded sets (extra keys are
    passed to the loader), or ``{format: mnist-idx|cifar10|cifar100|image-folder,
    path: ...}`` for files on disk (image folders: ``path`` holds ``train/`` and
    ``test/`` sub-folders). The mapping is checked by :func:`check_data_spec` first.
    """
    check_data_spec(spec)
    spec = dict(spec)
    if "format" in spec:
        fmt, path = spec.pop("format"), spec.pop("path")
        try:
            return read_dataset(fmt, path, "train", **spec), read_dataset(fmt, path, "test", **spec)
        except OSError as exc:  # a path the system refuses (too long, a loop of links...)
            raise UnlearnError(f"cannot read {fmt} data at {path!r}: {exc}") from None
    name = spec.pop("name")
    if name == "mnist1d":
        return load_mnist1d(**spec)
    return load_sklearn(name, **spec)
