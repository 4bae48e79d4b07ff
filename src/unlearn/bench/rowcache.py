"""Resumable benchmark runs: every finished row saved as it is scored, reused by a rerun.

``unlearn bench SCENARIO --resume`` saves each row of a family that allows it
(``Family.resumable``: a language-model run can take longer than one working session)
with the state the later rows need (``Family.row_state``) to
``.cache/unlearn/rows/<scenario>-<key>/seed<S>/<row>.json``. A rerun with ``--resume``
takes the saved rows instead of computing them again (``Family.restore_row`` puts their
state back), so a run killed halfway loses only the row it was computing. The key covers
the scenario mapping (all but its seeds, methods, targets and description) and a digest
of the toolkit's source files, and a method row's file name its method and full
configuration: a row is never reused by other code, another set-up or another method
setting, while adding or changing one method recomputes that method's rows only. Every
reused row is named in the results document (``resumed``), and its cost metrics are those
its own run measured.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import UnlearnError
from ..io import atomic_write_text

__all__ = ["RowCache", "source_digest"]

_DIGEST: str | None = None


def source_digest() -> str:
    """A digest of every Python file of the installed ``unlearn`` package (path and bytes)."""
    global _DIGEST
    if _DIGEST is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(b"\x00")
            h.update(path.read_bytes())
        _DIGEST = h.hexdigest()
    return _DIGEST


def _safe(label: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)
    return out + "-" + hashlib.sha256(label.encode()).hexdigest()[:8]


class RowCache:
    """The saved rows of one scenario and code version (see the module docstring)."""

    #: keys that change no row: which seeds run, the methods list (a method row is keyed
    #: by its own method and configuration), what the report judges and says
    UNKEYED = ("seeds", "methods", "targets", "description")

    def __init__(self, root: str | Path, raw: dict, name: str):
        body = {k: v for k, v in raw.items() if k not in self.UNKEYED}
        key = hashlib.sha256(
            (json.dumps(body, sort_keys=True, default=str) + source_digest()).encode()
        ).hexdigest()[:20]
        self.folder = Path(root) / f"{_safe(name)}-{key}"
        self.root = str(root)

    def _path(self, seed: int, label: str, method: dict | None) -> Path:
        part = ""
        if method is not None:  # a method row: its own method and full configuration
            blob = json.dumps(method, sort_keys=True, default=str)
            part = "-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
        return self.folder / f"seed{int(seed)}" / f"{_safe(label)}{part}.json"

    def get(self, seed: int, label: str, method: dict | None = None) -> tuple[dict, dict] | None:
        """``(row, state)`` saved for ``label`` on ``seed`` (a method row: run by ``method``,
        ``{"name", "config"}``), or None."""
        path = self._path(seed, label, method)
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UnlearnError(f"saved row {path} cannot be read ({exc}): delete it") from None
        if saved.get("label") != label or saved.get("seed") != int(seed):
            raise UnlearnError(f"saved row {path} is not row {label!r} of seed {seed}")
        return saved["row"], saved.get("state") or {}

    def put(self, seed: int, label: str, row: dict, state: dict, method: dict | None = None):
        path = self._path(seed, label, method)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {"label": label, "seed": int(seed), "row": row, "state": state}, default=_plain
        )
        atomic_write_text(path, text)


def _plain(obj: Any):
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"a saved row cannot hold a {type(obj).__name__}")
