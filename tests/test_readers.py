"""Tests for the on-disk readers: each test writes tiny real-format files to tmp_path."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn.data.core import ArrayData
from unlearn.data.readers import (
    READ_FORMATS,
    read_cifar,
    read_dataset,
    read_image_folder,
    read_mnist_idx,
)
from unlearn.errors import UnlearnError

# ----------------------------------------------------------------------------- IDX helpers


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder: Path, split: str = "train", n: int = 5, gz: bool = False, seed: int = 0):
    prefix = "train" if split == "train" else "t10k"
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for base, arr in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        payload = idx_bytes(arr)
        if gz:
            (folder / (base + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (folder / base).write_bytes(payload)
    return images, labels


def test_mnist_idx_reads_shapes_values_labels(tmp_path):
    images, labels = write_mnist(tmp_path, n=7)
    data = read_mnist_idx(tmp_path)
    assert isinstance(data, ArrayData)
    assert data.x.dtype == torch.float32 and tuple(data.x.shape) == (7, 1, 4, 3)
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    np.testing.assert_allclose(data.x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    assert data.y.dtype == torch.int64 and data.y.tolist() == labels.tolist()
    assert data.classes == tuple(str(i) for i in range(10))


def test_mnist_idx_gz_and_test_split(tmp_path):
    images, labels = write_mnist(tmp_path, split="test", n=3, gz=True, seed=1)
    data = read_mnist_idx(tmp_path, split="test")
    assert tuple(data.x.shape) == (3, 1, 4, 3)
    np.testing.assert_allclose(data.x[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    assert data.y.tolist() == labels.tolist()
    with pytest.raises(UnlearnError, match="train-images-idx3-ubyte"):
        read_mnist_idx(tmp_path, split="train")


def test_mnist_idx_missing_file_names_expected(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(UnlearnError, match=r"train-labels-idx1-ubyte.*\.gz"):
        read_mnist_idx(tmp_path)


def test_mnist_idx_bad_magic(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[0] = 0x12
    path.write_bytes(bytes(raw))
    with pytest.raises(UnlearnError, match="magic"):
        read_mnist_idx(tmp_path)


def test_mnist_idx_truncated_and_oversized(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(good[:-5])
    with pytest.raises(UnlearnError, match="truncated"):
        read_mnist_idx(tmp_path)
    path.write_bytes(good + b"\x00")
    with pytest.raises(UnlearnError, match="data bytes"):
        read_mnist_idx(tmp_path)
    path.write_bytes(good[:9])  # cut inside the header
    with pytest.raises(UnlearnError, match="header"):
        read_mnist_idx(tmp_path)


def test_mnist_idx_count_mismatch(tmp_path):
    write_mnist(tmp_path, n=5)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(UnlearnError, match="5 images but .* 4 labels"):
        read_mnist_idx(tmp_path)


def test_mnist_idx_unknown_split(tmp_path):
    with pytest.raises(UnlearnError, match="split"):
        read_mnist_idx(tmp_path, split="val")


# ----------------------------------------------------------------------------- CIFAR helpers


def cifar_pickle(obj: dict, path: Path, protocol: int = 4, py2_names: bool = False) -> None:
    raw = pickle.dumps(obj, protocol=protocol)
    if py2_names:  # the real files name numpy.core (numpy 1); GLOBAL opcodes are text lines
        assert protocol == 2
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)


def make_cifar10(folder: Path, per_batch: int = 2, protocol: int = 4, py2_names=False):
    folder.mkdir(parents=True, exist_ok=True)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    cifar_pickle(
        {b"label_names": names, b"num_cases_per_batch": per_batch},
        folder / "batches.meta",
        protocol,
        py2_names,
    )
    rng = np.random.default_rng(0)
    all_data, all_labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        cifar_pickle(
            {
                b"batch_label": b"batch",
                b"labels": labels,
                b"data": data,
                b"filenames": [b"f.png"] * per_batch,
            },
            folder / name,
            protocol,
            py2_names,
        )
        all_data.append(data)
        all_labels.append(labels)
    return all_data, all_labels


def make_cifar100(folder: Path, n: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    fine = [f"fine{i}".encode() for i in range(100)]
    cifar_pickle({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, folder / "meta")
    out = {}
    for split, labels in (("train", [99, 0, 42][:n]), ("test", [7])):
        data = np.full((len(labels), 3072), 128, dtype=np.uint8)
        data[0, :1024] = 255  # first image: red channel saturated
        cifar_pickle(
            {
                b"data": data,
                b"fine_labels": labels,
                b"coarse_labels": [0] * len(labels),
                b"filenames": [b"x"] * len(labels),
            },
            folder / split,
        )
        out[split] = (data, labels)
    return out


def test_cifar10_train_and_test(tmp_path):
    data_parts, label_parts = make_cifar10(tmp_path / "cifar-10-batches-py")
    train = read_cifar(tmp_path)  # the parent folder is accepted
    assert tuple(train.x.shape) == (10, 3, 32, 32) and train.x.dtype == torch.float32
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    expected = np.concatenate(data_parts[:5]).reshape(-1, 3, 32, 32) / 255.0
    np.testing.assert_allclose(train.x.numpy(), expected, rtol=0, atol=1e-7)
    assert train.y.tolist() == sum(label_parts[:5], [])
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    test = read_cifar(tmp_path / "cifar-10-batches-py", split="test")
    assert len(test) == 2 and test.y.tolist() == label_parts[5]


def test_cifar10_python2_style_pickle(tmp_path):
    # protocol 2 with numpy.core names: the globals the real (Python 2) files carry
    make_cifar10(tmp_path, protocol=2, py2_names=True)
    assert b"numpy.core.multiarray" in (tmp_path / "test_batch").read_bytes()
    data = read_cifar(tmp_path, split="test")
    assert tuple(data.x.shape) == (2, 3, 32, 32) and data.classes[3] == "cat"


def test_cifar100_fine_labels_and_layout(tmp_path):
    parts = make_cifar100(tmp_path / "cifar-100-python")
    train = read_cifar(tmp_path, variant="cifar100")
    assert tuple(train.x.shape) == (3, 3, 32, 32)
    assert train.y.tolist() == [99, 0, 42]
    assert len(train.classes) == 100 and train.classes[42] == "fine42"
    assert float(train.x[0, 0].min()) == 1.0
    assert float(train.x[0, 1].max()) == pytest.approx(128 / 255)
    test = read_dataset("cifar100", tmp_path / "cifar-100-python", split="test")
    assert test.y.tolist() == parts["test"][1]


def test_cifar_missing_and_unknown(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(UnlearnError, match="data_batch_3"):
        read_cifar(tmp_path)
    read_cifar(tmp_path, split="test")  # the test split is still complete
    with pytest.raises(UnlearnError, match="variant"):
        read_cifar(tmp_path, variant="cifar20")
    with pytest.raises(UnlearnError, match="split"):
        read_cifar(tmp_path, split="validation")
    with pytest.raises(UnlearnError, match="does not exist"):
        read_cifar(tmp_path / "nope")
    with pytest.raises(UnlearnError, match="meta"):
        read_cifar(tmp_path, variant="cifar100")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_with_disallowed_global_is_refused(tmp_path):
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2)
    )
    with pytest.raises(UnlearnError, match="refusing.*system"):
        read_cifar(tmp_path, split="test")
    assert not marker.exists()


def test_cifar_bad_data_shape(tmp_path):
    make_cifar10(tmp_path)
    cifar_pickle(
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, tmp_path / "test_batch"
    )
    with pytest.raises(UnlearnError, match="3072"):
        read_cifar(tmp_path, split="test")
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UnlearnError, match="test_batch"):
        read_cifar(tmp_path, split="test")


# ----------------------------------------------------------------------------- image folders


def write_png(path: Path, size_hw=(4, 6), color=(255, 0, 0), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size_hw[1], size_hw[0]), color).save(path)


def test_image_folder_reads_classes_and_pixels(tmp_path):
    write_png(tmp_path / "cat" / "a.png", color=(255, 0, 0))
    write_png(tmp_path / "cat" / "b.PNG", color=(0, 255, 0))
    write_png(tmp_path / "ant" / "c.png", color=(0, 0, 0))
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    data = read_image_folder(tmp_path)
    assert data.classes == ("ant", "cat")
    assert tuple(data.x.shape) == (3, 3, 4, 6) and data.x.dtype == torch.float32
    assert data.y.tolist() == [0, 1, 1]
    assert float(data.x[0].max()) == 0.0
    assert data.x[1, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert data.x[2, :, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_image_folder_resize_and_grayscale(tmp_path):
    write_png(tmp_path / "a" / "big.png", size_hw=(10, 8), color=(255, 255, 255))
    write_png(tmp_path / "b" / "small.png", size_hw=(3, 5), color=(0, 0, 0))
    with pytest.raises(UnlearnError, match=r"small\.png.*size=\(H, W\)"):
        read_image_folder(tmp_path)
    data = read_image_folder(tmp_path, size=(5, 7), grayscale=True)
    assert tuple(data.x.shape) == (2, 1, 5, 7)
    assert float(data.x[0].min()) == 1.0 and float(data.x[1].max()) == 0.0
    with pytest.raises(UnlearnError, match="size"):
        read_image_folder(tmp_path, size=(5,))


def test_image_folder_errors(tmp_path):
    with pytest.raises(UnlearnError, match="does not exist"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(UnlearnError, match="no class"):
        read_image_folder(tmp_path)
    write_png(tmp_path / "dog" / "a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnlearnError, match="empty.*no images"):
        read_image_folder(tmp_path)
    (tmp_path / "empty" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(UnlearnError, match="broken.jpg"):
        read_image_folder(tmp_path)


# ----------------------------------------------------------------------------- dispatcher


def test_read_dataset_dispatch(tmp_path):
    write_mnist(tmp_path / "mnist", n=4)
    assert len(read_dataset("mnist-idx", tmp_path / "mnist")) == 4
    make_cifar10(tmp_path / "c10")
    assert len(read_dataset("cifar10", tmp_path / "c10", split="test")) == 2
    write_png(tmp_path / "imgs" / "train" / "x" / "1.png")
    write_png(tmp_path / "imgs" / "test" / "x" / "1.png")
    write_png(tmp_path / "imgs" / "test" / "y" / "1.png")
    assert read_dataset("image-folder", tmp_path / "imgs", split="test").classes == ("x", "y")
    assert read_dataset("image-folder", tmp_path / "imgs" / "test").classes == ("x", "y")
    with pytest.raises(UnlearnError, match="unknown data format.*" + ".*".join(READ_FORMATS)):
        read_dataset("tfrecord", tmp_path)
