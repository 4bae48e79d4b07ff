import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from unlearn.data import ArrayData, as_array_data, load_dataset, load_mnist1d
from unlearn.errors import CheckpointMismatchError, UnlearnError
from unlearn.io import load_model, read_checkpoint_spec, save_model
from unlearn.models import build_model

from .conftest import weights


def test_mnist1d_is_generated_offline_and_seeded():
    state = np.random.get_state()
    train, test = load_mnist1d(num_train=400, num_test=100)
    assert train.x.shape == (400, 1, 40) and test.x.shape == (100, 1, 40)
    assert train.num_classes == 10 and set(train.y.tolist()) == set(range(10))
    again, _ = load_mnist1d(num_train=400, num_test=100)
    assert torch.equal(train.x, again.x)
    other, _ = load_mnist1d(num_train=400, num_test=100, data_seed=7)
    assert not torch.equal(train.x, other.x)
    # the package's generator reseeds NumPy's global state: we restore it
    assert np.array_equal(np.random.get_state()[1], state[1])


@pytest.mark.parametrize(
    "name, shape",
    [("digits", (1, 8, 8)), ("iris", (4,)), ("wine", (13,)), ("breast_cancer", (30,))],
)
def test_sklearn_sets(name, shape):
    train, test = load_dataset({"name": name})
    assert train.input_shape == shape and len(train) > len(test) > 0
    assert set(test.y.tolist()) == set(train.y.tolist())


def test_load_dataset_errors():
    with pytest.raises(UnlearnError, match="unknown data set 'cifar'"):
        load_dataset({"name": "cifar"})
    with pytest.raises(UnlearnError, match="needs a 'path'"):
        load_dataset({"format": "cifar10"})
    with pytest.raises(UnlearnError, match="bad options"):
        load_dataset({"name": "mnist1d", "size": 3})


def test_as_array_data_accepts_datasets_and_pairs():
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    ds = torch.utils.data.TensorDataset(x, y)
    a, b = as_array_data(ds), as_array_data((x.numpy(), y.numpy()))
    assert torch.equal(a.x, b.x) and a.num_classes == 3
    with pytest.raises(UnlearnError, match="labels of"):
        ArrayData(x, torch.tensor([0, 1, 2, 0, 1, 5]), ("a", "b", "c"))
    with pytest.raises(UnlearnError, match="cannot use"):
        as_array_data("data.csv")


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"name": "mlp", "input_shape": [4], "num_classes": 3}, (2, 4)),
        ({"name": "cnn", "input_shape": [1, 40], "num_classes": 10}, (2, 1, 40)),
        ({"name": "cnn", "input_shape": [3, 16, 16], "num_classes": 5}, (2, 3, 16, 16)),
        (
            {"name": "resnet18", "input_shape": [3, 32, 32], "num_classes": 10, "width": 8},
            (2, 3, 32, 32),
        ),
    ],
)
def test_models_build_and_run(spec, shape):
    model = build_model(spec, seed=0)
    assert model(torch.randn(*shape)).shape == (2, spec["num_classes"])
    again = build_model(spec, seed=0)
    assert torch.equal(weights(model), weights(again))


def test_resnet18_has_eighteen_weighted_layers():
    model = build_model({"name": "resnet18", "input_shape": [3, 32, 32], "num_classes": 10})
    convs = [
        m
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and "shortcut" not in n
    ]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 18
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.17e6, rel=0.01)


def test_model_errors():
    with pytest.raises(UnlearnError, match="unknown model 'vit'"):
        build_model({"name": "vit", "input_shape": [3], "num_classes": 2})
    with pytest.raises(UnlearnError, match="bad options for model 'mlp'"):
        build_model({"name": "mlp", "input_shape": [3], "num_classes": 2, "depth": 3})
    with pytest.raises(UnlearnError, match="ResNet-18 takes"):
        build_model({"name": "resnet18", "input_shape": [40], "num_classes": 2})


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    spec = {"name": "mlp", "input_shape": [4], "num_classes": 3, "hidden": [8]}
    model = build_model(spec, seed=0)
    path = save_model(model, tmp_path / "m.safetensors", spec)
    assert read_checkpoint_spec(path) == spec
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    fresh = build_model(spec, seed=1)
    load_model(fresh, path, spec)
    assert torch.equal(weights(fresh), weights(model))

    other_spec = {"name": "mlp", "input_shape": [4], "num_classes": 3, "hidden": [16]}
    other = build_model(other_spec, seed=1)
    before = weights(other).clone()
    with pytest.raises(CheckpointMismatchError, match="holds model"):
        load_model(other, path, other_spec)
    with pytest.raises(CheckpointMismatchError, match="shape"):
        load_model(other, path)  # no spec given: caught by the tensor check
    assert torch.equal(weights(other), before)  # untouched

    cnn = build_model({"name": "cnn", "input_shape": [1, 40], "num_classes": 3})
    with pytest.raises(CheckpointMismatchError, match="missing tensors"):
        load_model(cnn, path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a safetensors"):
        load_model(fresh, bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"x": json.dumps(1)})
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        load_model(fresh, foreign)
