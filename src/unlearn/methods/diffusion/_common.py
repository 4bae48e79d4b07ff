"""What the diffusion methods share: the forgotten classes of a class request."""

from __future__ import annotations

from ...errors import UnsupportedRequestError
from ...requests import ClassRequest


def forgotten_classes(ctx, who: str) -> tuple[int, ...]:
    """The classes a class request forgets, checked against the task's label set."""
    req = ctx.request
    if not isinstance(req, ClassRequest):
        raise UnsupportedRequestError(f"{who} forgets a class condition: give a class request")
    classes = tuple(int(c) for c in req.classes)
    k = ctx.task.num_classes
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise UnsupportedRequestError(f"{who}: classes {bad} are not among the model's {k}")
    if len(classes) >= k:
        raise UnsupportedRequestError(f"{who}: forgetting every class leaves nothing to keep")
    return classes


def other_class(c: int, forgotten: tuple[int, ...], k: int) -> int:
    """The next class after ``c`` (cyclically) that is not forgotten."""
    for step in range(1, k + 1):
        o = (c + step) % k
        if o not in forgotten:
            return o
    raise UnsupportedRequestError("no class is left")
