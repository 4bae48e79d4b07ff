import numpy as np
import pytest

from unlearn.data import ArrayData, split_request
from unlearn.errors import InvalidRequestError
from unlearn.requests import ClassRequest, FeatureRequest, SampleRequest, request_from_dict

Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def test_fraction_is_seeded_and_sized():
    a = SampleRequest(fraction=0.3, seed=1).resolve(Y)
    b = SampleRequest(fraction=0.3, seed=1).resolve(Y)
    c = SampleRequest(fraction=0.3, seed=2).resolve(Y)
    assert len(a) == 3 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, c)


def test_explicit_indices_and_class():
    assert SampleRequest(indices=[5, 1]).resolve(Y).tolist() == [1, 5]
    assert ClassRequest(classes=[2]).resolve(Y).tolist() == [2, 5, 8]
    assert ClassRequest(classes=2).classes == (2,)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SampleRequest(), "exactly one"),
        (lambda: SampleRequest(fraction=1.0), "strictly between"),
        (lambda: SampleRequest(fraction=0.1, indices=[1]), "exactly one"),
        (lambda: SampleRequest(indices=[]), "empty"),
        (lambda: SampleRequest(indices=[-1]), "negative"),
        (lambda: SampleRequest(indices=[1, 1]), "duplicates"),
        (lambda: SampleRequest(indices=[1.5]), "integers"),
        (lambda: ClassRequest(classes=[]), "at least one"),
        (lambda: FeatureRequest(features=[]), "at least one"),
    ],
)
def test_construction_errors(make, match):
    with pytest.raises(InvalidRequestError, match=match):
        make()


def test_resolve_errors_name_the_problem():
    with pytest.raises(InvalidRequestError, match="index 10 is out of range.*10 samples"):
        SampleRequest(indices=[10]).resolve(Y)
    with pytest.raises(InvalidRequestError, match="class 7 does not occur"):
        ClassRequest(classes=[7]).resolve(Y)
    with pytest.raises(InvalidRequestError, match="whole training set"):
        ClassRequest(classes=[0, 1, 2]).resolve(Y)
    with pytest.raises(InvalidRequestError, match="whole training set"):
        SampleRequest(indices=list(range(10))).resolve(Y)
    with pytest.raises(InvalidRequestError, match="selects no sample"):
        SampleRequest(fraction=0.01).resolve(Y)


def test_split_partitions_the_data():
    data = ArrayData(np.zeros((10, 2), np.float32), Y, ("a", "b", "c"))
    split = split_request(data, ClassRequest(classes=[1]))
    assert sorted(split.forget_idx.tolist() + split.retain_idx.tolist()) == list(range(10))
    assert set(split.forget.y.tolist()) == {1} and 1 not in split.retain.y.tolist()


def test_request_from_dict():
    assert request_from_dict({"kind": "random", "fraction": 0.5}, default_seed=3).seed == 3
    assert request_from_dict({"kind": "class", "classes": [1]}).classes == (1,)
    with pytest.raises(InvalidRequestError, match="unknown forget request kind"):
        request_from_dict({"kind": "everything"})
    with pytest.raises(InvalidRequestError, match="kind 'class'"):
        request_from_dict({"kind": "class", "clases": [1]})


def test_group_requests_resolve_against_group_labels():
    from unlearn.requests import GroupRequest
    from unlearn.tasks import PairData

    data = PairData(
        [("q1", "a1"), ("q2", "a2"), ("q3", "a3"), ("q4", "a4")],
        {"person": ["ana", "ben", "ana", "cy"]},
    )
    assert GroupRequest(groups=("ana",), by="person").resolve(data).tolist() == [0, 2]
    assert GroupRequest(groups=["ben", "cy"], by="person").resolve(data).tolist() == [1, 3]
    with pytest.raises(InvalidRequestError, match="person 'dan' does not occur"):
        GroupRequest(groups=("dan",), by="person").resolve(data)
    with pytest.raises(InvalidRequestError, match="has no 'client' labels"):
        GroupRequest(groups=("ana",), by="client").resolve(data)
    with pytest.raises(InvalidRequestError, match="whole training set"):
        GroupRequest(groups=("ana", "ben", "cy"), by="person").resolve(data)
    with pytest.raises(InvalidRequestError, match="groups by one of"):
        GroupRequest(groups=("ana",), by="planet")
    with pytest.raises(InvalidRequestError, match="duplicates"):
        GroupRequest(groups=("ana", "ana"), by="person")
    with pytest.raises(InvalidRequestError, match="needs data with"):
        GroupRequest(groups=(1,), by="client").resolve(Y)
    req = request_from_dict({"kind": "group", "by": "person", "groups": ["ana"]})
    assert req.resolve(data).tolist() == [0, 2] and req.describe() == "person ana"


def test_class_requests_need_labels():
    from unlearn.tasks import PairData

    with pytest.raises(InvalidRequestError, match="needs labelled data"):
        ClassRequest(classes=[1]).resolve(PairData([("q", "a"), ("r", "b")]))
