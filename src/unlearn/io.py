"""Saving and loading model weights with safetensors, written atomically.

A checkpoint records the model spec (architecture name, input shape, class
count, options) in the safetensors metadata; loading checks it against the
model it is loaded into, and every tensor name and shape, so a checkpoint of
another architecture fails loudly instead of silently doing nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointMismatchError, UnlearnError
from .validate import check_finite_tensor

__all__ = [
    "save_model",
    "load_model",
    "read_checkpoint",
    "read_checkpoint_spec",
    "atomic_write_text",
]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: torch.nn.Module, path: str | Path, spec: dict | None = None) -> Path:
    """Save ``model``'s state dict to ``path`` (safetensors), atomically."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UnlearnError(f"folder {path.parent} does not exist")
    if path.is_dir():
        raise UnlearnError(f"cannot write checkpoint {path}: it is a folder")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "unlearn_spec": json.dumps(spec or {}, sort_keys=True)}
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UnlearnError(f"cannot write checkpoint {path}: {exc}") from None
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_spec(path: str | Path) -> dict:
    """Return the model spec stored in a checkpoint written by :func:`save_model`.

    Raises :class:`UnlearnError` naming the file when it is missing, is not a
    safetensors file, or holds spec metadata that is not a JSON mapping.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"checkpoint {path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointMismatchError(f"{path} is not a safetensors checkpoint: {exc}") from None
    text = meta.get("unlearn_spec", "{}")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointMismatchError(
            f"checkpoint {path}: its model spec metadata is not valid JSON ({exc})"
        ) from None
    if not isinstance(spec, dict):
        raise CheckpointMismatchError(
            f"checkpoint {path}: its model spec metadata must be a mapping, "
            f"got {type(spec).__name__}"
        )
    return spec


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors file ``path``, each checked to be finite."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointMismatchError(f"cannot read checkpoint {path}: {exc}") from None
    for name, tensor in state.items():
        check_finite_tensor(tensor, f"checkpoint {path}: tensor {name}")
    return state


def load_model(
    model: torch.nn.Module, path: str | Path, spec: dict | None = None
) -> torch.nn.Module:
    """Load weights from ``path`` into ``model`` after checking they belong to it.

    Raises :class:`CheckpointMismatchError` when the file is not a readable
    checkpoint, its stored spec differs from ``spec`` or any tensor is missing,
    unexpected or of another shape or dtype, and :class:`UnlearnError` when a
    tensor holds NaN or infinite values. Every check runs before the first weight
    is copied, so the model is left untouched when loading fails.
    """
    path = Path(path)
    stored_spec = read_checkpoint_spec(path)
    if spec is not None and stored_spec and stored_spec != spec:
        raise CheckpointMismatchError(
            f"checkpoint {path} holds model {stored_spec} but {spec} was asked for"
        )
    state = read_checkpoint(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit this model: "
            f"{len(missing)} missing tensors (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit this model: tensor {k} has shape "
                f"{tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
            )
        if v.dtype != own[k].dtype:
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit this model: tensor {k} has dtype "
                f"{v.dtype}, the model expects {own[k].dtype}"
            )
    model.load_state_dict(state, strict=True)
    return model
