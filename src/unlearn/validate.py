"""Checks at the boundary: option types, finite numbers, devices.

Every config dataclass of the toolkit (method configs, training recipes) is
checked field by field against its type annotation before any work starts, so
``lr: "fast"`` or ``epochs: 1.5`` in a recipe fails with a message naming the
field instead of a traceback deep inside a training loop.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

import torch

from .errors import UnlearnError

__all__ = [
    "check_fields",
    "check_value",
    "resolve_device",
    "check_finite_tensor",
    "dataclass_from_mapping",
]


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``tp``; returns (ok, value coerced where harmless)."""
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _matches(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return value in typing.get_args(tp), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        try:
            as_float = float(value)
        except OverflowError:  # an integer too large for a float
            return False, value
        return math.isfinite(as_float), as_float
    if tp is str:
        return isinstance(value, str), value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, tuple | list):
            return False, value
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not args:
            return True, tuple(value)
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(tp):
            if len(value) != len(args):
                return False, value
            out = []
            for v, a in zip(value, args, strict=True):
                ok, c = _matches(v, a)
                if not ok:
                    return False, value
                out.append(c)
            return True, tuple(out)
        out = []
        for v in value:
            ok, c = _matches(v, args[0])
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` if it fits the annotation ``tp`` (ints accepted for floats), else an
    :class:`UnlearnError` naming ``where``. Non-finite floats never fit."""
    ok, coerced = _matches(value, tp)
    if not ok:
        extra = ""
        if isinstance(value, float) and not math.isfinite(value):
            extra = " (must be finite)"
        raise UnlearnError(f"{where} must be {_type_name(tp)}, got {value!r}{extra}")
    return coerced


def check_fields(obj: Any, where: str) -> None:
    """Check every field of the dataclass instance ``obj`` against its annotation, in place
    (a frozen dataclass included); ``where`` names the owner in the message."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        coerced = check_value(value, hints.get(f.name, Any), f"{where}: option {f.name!r}")
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that exists here, or an :class:`UnlearnError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UnlearnError(f"unknown device {device!r} (cpu or cuda[:N]): {exc}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise UnlearnError(f"unknown device {device!r} (cpu or cuda[:N])")
    if not torch.cuda.is_available():
        raise UnlearnError(f"device {device!r} asked for but CUDA is not available")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnlearnError(
            f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))"
        )
    return dev


def check_finite_tensor(t: torch.Tensor, what: str) -> None:
    """Raise if a floating tensor holds NaN or Inf."""
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise UnlearnError(f"{what} holds {bad} NaN or infinite value(s)")


def dataclass_from_mapping(cls: type, spec: Any, what: str) -> Any:
    """An instance of the dataclass ``cls`` from a mapping (None: the defaults), with
    unknown keys and bad values reported as :class:`UnlearnError` naming ``what``."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise UnlearnError(f"{what} must be a mapping, got {type(spec).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UnlearnError(f"unknown {what} option(s) {unknown} (known: {sorted(known)})")
    try:
        return cls(**spec)
    except UnlearnError:
        raise
    except (TypeError, ValueError) as exc:
        raise UnlearnError(f"{what}: {exc}") from None
