import pytest
import torch

from unlearn.data import split_request
from unlearn.methods import UnlearnContext, get_method
from unlearn.methods.trw import tilted_targets
from unlearn.requests import ClassRequest
from unlearn.tasks import ClassifierTask

from .conftest import TINY_RECIPE


def test_tilted_targets_by_hand():
    logits = torch.tensor([[10.0, 2.0, 1.0, 0.0], [9.0, 1.0, 2.0, 0.0]])
    t, sim = tilted_targets(logits, [0], beta=0.0)
    q = torch.softmax(logits[:, 1:], 1)
    assert torch.allclose(t[:, 1:], q) and torch.all(t[:, 0] == 0)
    assert torch.allclose(sim[1:], q.mean(0)) and sim[0] == 0
    t10, _ = tilted_targets(logits, [0], beta=10.0)
    assert torch.allclose(t10.sum(1), torch.ones(2))
    # tilting by exp(beta * s): class 3 (least similar) loses mass, by the exact factor
    w = q * torch.exp(10.0 * sim[1:])
    assert torch.allclose(t10[:, 1:], w / w.sum(1, keepdim=True))
    assert t10[0, 3] < t[0, 3]


def test_trw_moves_forget_class_to_its_neighbours(digits_small, trained_tiny, tiny_spec):
    train, _ = digits_small
    request = ClassRequest(classes=[3])
    task = ClassifierTask(10)
    ctx = UnlearnContext(
        task=task,
        split=split_request(train, request),
        request=request,
        original=trained_tiny,
        seed=0,
        recipe=TINY_RECIPE,
    )
    model, rec = get_method("trw", {"epochs": 30, "lr": 3e-3}).run(trained_tiny, ctx)
    probs = task.probs(model, ctx.forget)
    assert (probs.argmax(1) == 3).float().mean() < 0.1
    assert probs[:, 3].mean() < 0.05
    # the forgotten class's mass goes mostly to the classes TRW found nearest
    nearest = rec.extra["nearest_classes"]
    assert probs[:, nearest].sum(1).mean() > 0.5
    keep = (task.logits(model, ctx.retain).argmax(1) == ctx.retain.y).float().mean()
    assert keep > 0.9


def test_trw_rejects_bad_options():
    from unlearn.errors import UnlearnError

    with pytest.raises(UnlearnError, match="unknown option"):
        get_method("trw", {"gamma": 1})
    with pytest.raises(UnlearnError, match="beta >= 0"):
        get_method("trw", {"beta": -1.0})
