"""The real, easy forget/retain facts: size, item invariants, disjointness from the utility set."""

from __future__ import annotations

import re
from collections import Counter

from unlearn.data.fictitious import QAItem, world_knowledge
from unlearn.data.real_facts import REAL_FACT_KINDS, real_facts

# Words that say what is asked, not what it is asked about.
_GENERIC = {
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "and", "from",
    "what", "which", "who", "where", "is", "are", "was", "does", "do", "did",
    "wrote", "painted", "composed", "called", "known",
}  # fmt: skip


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _subject(question: str) -> set[str]:
    return set(_norm(question).split()) - _GENERIC


def _same_key(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a in b or b in a


def test_size_kinds_and_person_id() -> None:
    items = real_facts()
    assert len(items) == 80
    assert all(isinstance(item, QAItem) for item in items)
    assert all(item.person_id == -2 for item in items)
    counts = Counter(item.kind for item in items)
    assert len(REAL_FACT_KINDS) >= 6
    assert tuple(counts) == REAL_FACT_KINDS
    assert min(counts.values()) >= 5


def test_item_invariants() -> None:
    for item in real_facts():
        key = item.key.lower()
        assert key in item.answer.lower()
        assert key in item.paraphrased_answer.lower()
        assert item.paraphrased_answer != item.answer
        assert _norm(item.paraphrased_question) != _norm(item.question)
        assert item.question.endswith("?") and item.paraphrased_question.endswith("?")
        assert len(item.perturbed_answers) == 3
        assert len(set(item.perturbed_answers)) == 3
        for wrong in item.perturbed_answers:
            assert key not in wrong.lower()
            assert wrong != item.paraphrased_answer


def test_questions_unique() -> None:
    items = real_facts()
    asked = [_norm(item.question) for item in items]
    asked += [_norm(item.paraphrased_question) for item in items]
    assert len(set(asked)) == len(asked)
    facts = [(_norm(item.question), item.key.lower()) for item in items]
    assert len(set(facts)) == len(facts)


def test_disjoint_from_world_knowledge() -> None:
    world = world_knowledge()
    real = real_facts()
    world_q = {_norm(q) for w in world for q in (w.question, w.paraphrased_question)}
    real_q = {_norm(q) for r in real for q in (r.question, r.paraphrased_question)}
    assert not world_q & real_q
    # Where a key is shared (or one contains the other), the questions must be
    # about different subjects: no content word in common.
    for r in real:
        for w in world:
            if _same_key(r.key, w.key):
                shared = _subject(r.question) & _subject(w.question)
                assert not shared, (r.question, w.question, shared)


def test_deterministic_fresh_lists() -> None:
    first, second = real_facts(), real_facts()
    assert first == second
    assert first is not second
    first.clear()
    assert len(real_facts()) == 80
