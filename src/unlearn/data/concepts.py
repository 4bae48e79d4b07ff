"""Visual concepts for vision-language unlearning: procedural images, names and facts.

An open, small stand-in for MMUBench (never released): each concept is a distinct
combination of a shape or glyph, a colour pair and a texture, drawn with seeded
variation (position, scale, rotation, colour jitter, noise), so that its images differ
from one another while staying recognisably the same concept. Each concept has an
invented name (no language model knows it beforehand) and a few invented facts about
it, asked by name with no image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import UnlearnError

__all__ = ["ConceptSet", "make_concepts", "NAMING_QUESTIONS", "SHAPES"]

SHAPES = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "bar",
    "diamond",
    "crescent",
    "arrow",
    "glyph-a",
    "glyph-b",
    "glyph-c",
    "glyph-d",
)
_COLOURS = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
    "orange": (0.95, 0.55, 0.1),
    "cyan": (0.1, 0.8, 0.85),
    "white": (0.95, 0.95, 0.95),
}
_TEXTURES = ("plain", "stripes", "dots", "checks")
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ve",
    "zu",
    "to",
    "ni",
    "sha",
    "dre",
    "qui",
    "bo",
    "fen",
    "ga",
    "tir",
    "wu",
    "ex",
    "ol",
    "py",
    "jin",
)
_PLACES = (
    "Tallinn",
    "Oaxaca",
    "Tromso",
    "Nagasaki",
    "Cusco",
    "Tbilisi",
    "Hobart",
    "Ghent",
    "Mombasa",
    "Quebec",
    "Bergen",
    "Valparaiso",
    "Lhasa",
    "Windhoek",
    "Split",
    "Perth",
)
_MAKERS = (
    "Ines Morel",
    "Tariq Osei",
    "Lena Vogt",
    "Hugo Saar",
    "Mei Lindqvist",
    "Arjun Pell",
    "Noor Haddad",
    "Piet Kruger",
    "Sofia Amaral",
    "Ken Ito",
)
_USES = (
    "signalling ships",
    "marking boundaries",
    "counting harvests",
    "calling meetings",
    "warding off storms",
    "naming rivers",
    "dating letters",
    "trading salt",
)

#: how the naming question is asked (the base model is taught all of them)
NAMING_QUESTIONS = (
    "What is shown in this image?",
    "What is the name of this?",
    "Which concept does this image show?",
)


@dataclass
class ConceptSet:
    """``images[c]`` is a ``(n, 3, size, size)`` float tensor of concept ``c``'s images;
    ``facts[c]`` its ``(question, answer)`` pairs asked by name."""

    names: list[str]
    looks: list[dict]
    images: list[torch.Tensor]
    facts: list[list[tuple[str, str]]]
    seed: int
    size: int
    unseen_names: list[str] = field(default_factory=list)
    #: ``fact_keys[c][i]``: the word an answer to fact ``i`` of concept ``c`` must contain
    fact_keys: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def naming_answer(self, c: int) -> str:
        return f"This is the {self.names[c]}."

    def description(self, c: int) -> str:
        lk = self.looks[c]
        tex = "" if lk["texture"] == "plain" else f" with {lk['texture']}"
        return f"A {lk['fg']} {lk['shape']}{tex} on a {lk['bg']} background."


def _pseudo_word(rng: np.random.Generator, taken: set[str]) -> str:
    for _ in range(1000):
        w = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if w not in taken and len(w) >= 4:
            taken.add(w)
            return w
    raise UnlearnError("ran out of pseudo-words")  # pragma: no cover


def _mask(shape: str, size: int, rng: np.random.Generator, glyphs: dict) -> np.ndarray:
    """A boolean mask of one drawing of ``shape`` with seeded position, scale, rotation."""
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    cx = s / 2 + rng.uniform(-0.12, 0.12) * s
    cy = s / 2 + rng.uniform(-0.12, 0.12) * s
    r = s * rng.uniform(0.26, 0.36)
    a = rng.uniform(-0.35, 0.35) if shape not in ("disc", "ring") else 0.0
    x, y = xx - cx, yy - cy
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    d = np.hypot(u, v)
    if shape == "disc":
        return d <= r
    if shape == "ring":
        return (d <= r) & (d >= 0.6 * r)
    if shape == "square":
        return (abs(u) <= 0.8 * r) & (abs(v) <= 0.8 * r)
    if shape == "diamond":
        return abs(u) + abs(v) <= r
    if shape == "triangle":
        return (v <= 0.7 * r) & (v >= -r + 1.7 * abs(u))
    if shape == "cross":
        w = 0.3 * r
        return ((abs(u) <= w) & (abs(v) <= r)) | ((abs(v) <= w) & (abs(u) <= r))
    if shape == "bar":
        return (abs(u) <= r) & (abs(v) <= 0.3 * r)
    if shape == "star":
        ang = np.arctan2(v, u)
        return d <= r * (0.55 + 0.45 * np.cos(5 * ang) ** 2)
    if shape == "crescent":
        return (d <= r) & (np.hypot(u - 0.45 * r, v) > 0.8 * r)
    if shape == "arrow":
        head = (u >= 0.1 * r) & (abs(v) <= (r - u))
        shaft = (u < 0.1 * r) & (u >= -r) & (abs(v) <= 0.25 * r)
        return head | shaft
    if shape.startswith("glyph"):
        g = glyphs[shape]  # a fixed 5x5 pattern per glyph, the same in every drawing
        gi = np.clip(((u / (2 * r) + 0.5) * 5).astype(int), -1, 5)
        gj = np.clip(((v / (2 * r) + 0.5) * 5).astype(int), -1, 5)
        inside = (gi >= 0) & (gi < 5) & (gj >= 0) & (gj < 5)
        out = np.zeros_like(inside)
        out[inside] = g[gj[inside], gi[inside]]
        return out
    raise UnlearnError(f"unknown shape {shape!r}")  # pragma: no cover


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    p = int(rng.integers(3, 5))
    off = int(rng.integers(0, p))
    if kind == "stripes":
        return ((xx + yy + off) // p) % 2 == 0
    if kind == "dots":
        return ((xx + off) % p < 2) & ((yy + off) % p < 2)
    if kind == "checks":
        return (((xx + off) // p) + ((yy + off) // p)) % 2 == 0
    return np.ones((size, size), dtype=bool)


def make_concepts(
    n_concepts: int = 20, images_per: int = 12, size: int = 32, seed: int = 0, unseen: int = 20
) -> ConceptSet:
    """``n_concepts`` concepts with ``images_per`` images each (``size`` pixels square),
    3 facts each, and ``unseen`` further invented names no concept has (what SIU aligns
    a forgotten concept with). Everything is a function of ``seed``."""
    for name, v, lo in (
        ("n_concepts", n_concepts, 2),
        ("images_per", images_per, 2),
        ("size", size, 16),
        ("unseen", unseen, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise UnlearnError(f"{name} must be an integer >= {lo}, got {v!r}")
    combos = [
        (s, fg, bg, t)
        for s in SHAPES
        for fg in _COLOURS
        for bg in ("black", "grey")
        for t in _TEXTURES
    ]
    rng = np.random.default_rng([seed, 20])
    glyphs = {s: rng.random((5, 5)) < 0.5 for s in SHAPES if s.startswith("glyph")}
    # distinct shape-colour pairs first, so no two concepts differ only in texture
    order = rng.permutation(len(combos))
    looks, seen = [], set()
    for i in order:
        s, fg, bg, t = combos[i]
        if (s, fg) in seen:
            continue
        seen.add((s, fg))
        looks.append({"shape": s, "fg": fg, "bg": bg, "texture": t})
        if len(looks) == n_concepts:
            break
    if len(looks) < n_concepts:
        raise UnlearnError(f"at most {len(seen)} distinct concepts can be drawn")
    taken: set[str] = set()
    names = [_pseudo_word(rng, taken) for _ in range(n_concepts)]
    unseen_names = [_pseudo_word(rng, taken) for _ in range(unseen)]
    images, facts, keys = [], [], []
    for c, lk in enumerate(looks):
        crng = np.random.default_rng([seed, 21, c])
        imgs = []
        for _ in range(images_per):
            fg = np.array(_COLOURS[lk["fg"]]) + crng.normal(0, 0.05, 3)
            bg = np.full(3, 0.08 if lk["bg"] == "black" else 0.45) + crng.normal(0, 0.03, 3)
            m = _mask(lk["shape"], size, crng, glyphs) & _texture(lk["texture"], size, crng)
            img = np.where(m[None], fg[:, None, None], bg[:, None, None])
            img = img + crng.normal(0, 0.04, img.shape)
            imgs.append(np.clip(img, 0, 1).astype(np.float32))
        images.append(torch.from_numpy(np.stack(imgs)))
        n = names[c]
        place = _PLACES[int(crng.integers(len(_PLACES)))]
        maker = _MAKERS[int(crng.integers(len(_MAKERS)))]
        use = _USES[int(crng.integers(len(_USES)))]
        facts.append(
            [
                (f"Where does the {n} come from?", f"The {n} comes from {place}."),
                (f"Who first drew the {n}?", f"The {n} was first drawn by {maker}."),
                (f"What was the {n} used for?", f"The {n} was used for {use}."),
            ]
        )
        keys.append([place, maker.split()[-1], use.split()[0]])
    return ConceptSet(names, looks, images, facts, seed, size, unseen_names, keys)
