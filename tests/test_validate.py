"""Boundary checks shared by configs and recipes (unlearn.validate, unlearn.training)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from unlearn.errors import UnlearnError
from unlearn.tasks import PairData
from unlearn.training import index_stream
from unlearn.validate import check_fields, check_finite_tensor, check_value, resolve_device


@dataclass(frozen=True)
class Opts:
    lr: float = 0.1
    steps: int | None = None
    name: str = "x"
    flag: bool = False
    targets: tuple[str, ...] = ()
    clamp: tuple[float, float] | None = None


def test_fields_are_checked_and_harmless_coercions_applied():
    o = Opts(lr=1, targets=["a", "b"], clamp=[0, 1])
    check_fields(o, "opts")
    assert o.lr == 1.0 and isinstance(o.lr, float)
    assert o.targets == ("a", "b") and o.clamp == (0.0, 1.0)
    for bad, field in [
        ({"lr": "fast"}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": True}, "lr"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"name": 3}, "name"),
        ({"flag": 1}, "flag"),
        ({"targets": ["a", 2]}, "targets"),
        ({"clamp": [0, 1, 2]}, "clamp"),
    ]:
        with pytest.raises(UnlearnError, match=f"opts: option '{field}'"):
            check_fields(Opts(**bad), "opts")
    assert check_value(None, int | None, "x") is None


def test_devices_and_finite_tensors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UnlearnError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(UnlearnError, match="unknown device"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(UnlearnError, match="CUDA is not available"):
            resolve_device("cuda:0")
    check_finite_tensor(torch.ones(3), "w")
    with pytest.raises(UnlearnError, match="w holds 1 NaN"):
        check_finite_tensor(torch.tensor([1.0, float("nan")]), "w")


def test_index_stream_reshuffles_every_pass_and_covers_all():
    g = torch.Generator().manual_seed(0)
    s = index_stream(5, 2, g)
    first = torch.cat([next(s) for _ in range(3)])
    second = torch.cat([next(s) for _ in range(3)])
    assert sorted(first.tolist()) == sorted(second.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(UnlearnError, match="empty"):
        next(index_stream(0, 2, g))


def test_pair_data_checks_pairs_and_groups():
    d = PairData([("q", "a"), ("r", "b")], {"person": [1, 2]})
    assert len(d.subset([1])) == 1 and d.subset([1]).group_labels("person").tolist() == [2]
    both = PairData.concat([d, d])
    assert len(both) == 4 and both.group_labels("person").tolist() == [1, 2, 1, 2]
    with pytest.raises(UnlearnError, match="question, answer"):
        PairData(["just text"])
    with pytest.raises(UnlearnError, match="labels"):
        PairData([("q", "a")], {"person": [1, 2]})
