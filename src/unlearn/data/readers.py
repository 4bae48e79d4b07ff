"""Readers for the on-disk data formats users bring: MNIST IDX, CIFAR pickles, image folders.

Every reader returns an :class:`~unlearn.data.core.ArrayData` with ``x`` as float32
in ``[0, 1]`` shaped ``(N, C, H, W)`` and raises :class:`~unlearn.errors.UnlearnError`
with a message naming the file at fault when the input is missing or malformed.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UnlearnError, require
from .core import ArrayData

__all__ = [
    "IMAGE_EXTENSIONS",
    "READ_FORMATS",
    "read_cifar",
    "read_dataset",
    "read_image_folder",
    "read_mnist_idx",
]

PathLike = str | os.PathLike[str]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
READ_FORMATS = ("mnist-idx", "cifar10", "cifar100", "image-folder")


def _check_split(split: str, known: Sequence[str]) -> None:
    if split not in known:
        raise UnlearnError(f"unknown split '{split}': choose one of {', '.join(known)}")


def _to_tensor01(array: np.ndarray) -> torch.Tensor:
    """uint8 array -> float32 tensor in [0, 1] (one copy, scaled in place)."""
    out = array.astype(np.float32)
    out /= 255.0
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- IDX (MNIST)

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UnlearnError(f"cannot read '{path}': {exc}") from exc


def _parse_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into a numpy array."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UnlearnError(
            f"'{path}' is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'} "
            "(expected 0000 followed by a type code and a dimension count)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise UnlearnError(f"'{path}' has unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise UnlearnError(f"'{path}' declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UnlearnError(f"'{path}' is truncated inside its IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        raise UnlearnError(
            f"'{path}' holds {actual} data bytes but its header {dims} asks for {expected} "
            "(truncated or corrupt file)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx_file(folder: Path, base: str) -> Path | None:
    # Accept the canonical name, the "train-images.idx3-ubyte" spelling some mirrors use,
    # each optionally gzip-compressed, in the folder itself or its "raw" sub-folder
    # (the layout torchvision downloads into).
    dotted = base.replace("-idx", ".idx")
    for directory in (folder, folder / "raw"):
        for name in (base, base + ".gz", dotted, dotted + ".gz"):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def read_mnist_idx(folder: PathLike, split: str = "train") -> ArrayData:
    """Read MNIST / Fashion-MNIST IDX files (optionally ``.gz``) from ``folder``.

    Returns ``x`` float32 in [0, 1] shaped (N, 1, H, W), labels 0..9.
    """
    _check_split(split, tuple(_IDX_FILES))
    folder = Path(folder)
    if not folder.is_dir():
        raise UnlearnError(f"MNIST folder '{folder}' does not exist")
    paths = []
    for base in _IDX_FILES[split]:
        found = _find_idx_file(folder, base)
        if found is None:
            raise UnlearnError(f"missing IDX file in '{folder}': expected '{base}' or '{base}.gz'")
        paths.append(found)
    images, labels = (_parse_idx(p) for p in paths)
    if images.ndim != 3:
        raise UnlearnError(f"'{paths[0]}' must hold images of shape (N, H, W), got {images.shape}")
    if images.dtype != np.uint8:
        raise UnlearnError(f"'{paths[0]}' must hold unsigned bytes, got {images.dtype}")
    if labels.ndim != 1:
        raise UnlearnError(f"'{paths[1]}' must hold one label per image, got {labels.shape}")
    if len(images) != len(labels):
        raise UnlearnError(
            f"'{paths[0].name}' holds {len(images)} images but "
            f"'{paths[1].name}' holds {len(labels)} labels"
        )
    x = _to_tensor01(images[:, None, :, :])
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayData(x, y, tuple(str(i) for i in range(10)), f"mnist-idx-{split}")


# --------------------------------------------------------------------------- CIFAR pickles


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_frombuffer() -> Any:
    try:
        from numpy._core.numeric import _frombuffer  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.numeric import _frombuffer
    return _frombuffer


# (module, name) -> factory of the object that global stands for.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # Python 3 pickles of protocol < 3 store bytes objects through codecs.encode.
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    # A pickle can call any importable function while loading, so only the globals the CIFAR
    # files really need (numpy array reconstruction) are allowed; anything else is refused.
    def find_class(self, module: str, name: str) -> Any:
        factory = _PICKLE_ALLOWED.get((module, name))
        if factory is None:
            raise UnlearnError(
                f"refusing to load '{module}.{name}' from a pickle: only numpy arrays, lists "
                "and dicts are allowed in CIFAR files"
            )
        return factory()


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="bytes").load()
    except UnlearnError as exc:
        raise UnlearnError(f"'{path}': {exc}") from exc
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise UnlearnError(f"cannot read CIFAR file '{path}': {exc}") from exc
    if not isinstance(obj, dict):
        raise UnlearnError(f"'{path}' must hold a dict, got {type(obj).__name__}")
    # encoding="bytes" keeps the Python 2 str keys of the real files as bytes.
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _get(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise UnlearnError(f"'{path}' has no '{key}' entry (found {sorted(batch)})")
    return batch[key]


def _label_names(path: Path, key: str) -> tuple[str, ...]:
    names = _get(_load_pickle(path), key, path)
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


_CIFAR = {
    # variant: (sub-folder, {split: data files}, meta file, label-names key, labels key)
    "cifar10": (
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "batches.meta",
        "label_names",
        "labels",
    ),
    "cifar100": (
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "meta",
        "fine_label_names",
        "fine_labels",
    ),
}


def read_cifar(folder: PathLike, variant: str = "cifar10", split: str = "train") -> ArrayData:
    """Read the CIFAR-10 / CIFAR-100 python-version files from ``folder``.

    ``folder`` may be the data folder itself or the folder holding ``cifar-10-batches-py`` /
    ``cifar-100-python``. CIFAR-100 uses the 100 fine labels. Returns ``x`` float32 in
    [0, 1] shaped (N, 3, 32, 32).
    """
    if variant not in _CIFAR:
        raise UnlearnError(f"unknown CIFAR variant '{variant}': choose cifar10 or cifar100")
    subdir, split_files, meta_name, names_key, labels_key = _CIFAR[variant]
    _check_split(split, tuple(split_files))
    folder = Path(folder)
    if not folder.is_dir():
        raise UnlearnError(f"CIFAR folder '{folder}' does not exist")
    needed = (*split_files[split], meta_name)
    base = folder
    if not (folder / meta_name).is_file() and (folder / subdir).is_dir():
        base = folder / subdir
    missing = [n for n in needed if not (base / n).is_file()]
    if missing:
        raise UnlearnError(
            f"missing {variant} file(s) {', '.join(missing)} in '{base}' "
            f"(expected the python version of the data set, folder '{subdir}')"
        )
    classes = _label_names(base / meta_name, names_key)
    xs, ys = [], []
    for name in split_files[split]:
        path = base / name
        batch = _load_pickle(path)
        data = np.asarray(_get(batch, "data", path))
        labels = np.asarray(_get(batch, labels_key, path))
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
            raise UnlearnError(
                f"'{path}' data must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(data):
            raise UnlearnError(f"'{path}' holds {len(data)} images but {labels.size} labels")
        xs.append(data)
        ys.append(labels.astype(np.int64))
    images = np.concatenate(xs) if len(xs) > 1 else xs[0]
    x = _to_tensor01(images.reshape(-1, 3, 32, 32))
    y = torch.from_numpy(np.concatenate(ys))
    return ArrayData(x, y, classes, f"{variant}-{split}")


# --------------------------------------------------------------------------- image folders


def _check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    ok = (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    )
    if not ok:
        raise UnlearnError(f"size must be two positive integers (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def read_image_folder(
    root: PathLike, size: Sequence[int] | None = None, grayscale: bool = False
) -> ArrayData:
    """Read ``root/<class_name>/<image>`` (png/jpg/jpeg/bmp/gif); classes sorted by name.

    ``size=(H, W)`` resizes every image; without it all images must share one size.
    Returns ``x`` float32 in [0, 1] shaped (N, C, H, W) with C = 1 if ``grayscale`` else 3.
    """
    require("PIL", "images")
    from PIL import Image, UnidentifiedImageError

    hw = _check_size(size)
    root = Path(root)
    if not root.is_dir():
        raise UnlearnError(f"image folder '{root}' does not exist")
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not class_dirs:
        raise UnlearnError(f"image folder '{root}' has no class sub-folders (root/<class>/...)")
    mode = "L" if grayscale else "RGB"
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise UnlearnError(
                f"class folder '{class_dir}' holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        for path in files:
            try:
                with Image.open(path) as img:
                    img = img.convert(mode)
                    if hw is not None and img.size != (hw[1], hw[0]):
                        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                    array = np.asarray(img, dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise UnlearnError(f"cannot read image '{path}': {exc}") from exc
            shape = (array.shape[0], array.shape[1])
            if first is None:
                first = (path, shape)
            elif shape != first[1]:
                raise UnlearnError(
                    f"image '{path}' is {shape[0]}x{shape[1]} (HxW) but '{first[0]}' is "
                    f"{first[1][0]}x{first[1][1]}: pass size=(H, W) to resize them"
                )
            arrays.append(array)
            labels.append(label)
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if grayscale else stacked.transpose(0, 3, 1, 2)
    x = _to_tensor01(stacked)
    y = torch.tensor(labels, dtype=torch.int64)
    return ArrayData(x, y, tuple(p.name for p in class_dirs), f"image-folder-{root.name}")


# --------------------------------------------------------------------------- dispatcher


def read_dataset(fmt: str, path: PathLike, split: str = "train", **kw: Any) -> ArrayData:
    """Read ``path`` in format ``fmt`` (one of :data:`READ_FORMATS`).

    For ``image-folder``, ``path/<split>`` is read when that folder exists, else ``path``
    itself; ``kw`` goes to the reader (``size``, ``grayscale`` for image folders).
    """
    if fmt == "mnist-idx":
        return read_mnist_idx(path, split=split, **kw)
    if fmt in ("cifar10", "cifar100"):
        return read_cifar(path, variant=fmt, split=split, **kw)
    if fmt == "image-folder":
        root = Path(path)
        if (root / split).is_dir():
            root = root / split
        return read_image_folder(root, **kw)
    raise UnlearnError(f"unknown data format '{fmt}': choose one of {', '.join(READ_FORMATS)}")
