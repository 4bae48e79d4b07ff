"""The TOFU-like fictitious-facts data: generation, item invariants, forget splits."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from unlearn.data.fictitious import (
    FORGET_FRACTIONS,
    KINDS,
    MAX_PEOPLE,
    FictitiousFacts,
    Person,
    QAItem,
    Relation,
    generate_people,
    make_fictitious,
    qa_items,
    world_knowledge,
)
from unlearn.errors import UnlearnError


@pytest.fixture(scope="module")
def big() -> tuple[list[Person], list[QAItem]]:
    """400 people with every attribute asked and five wrong answers per item."""
    people = generate_people(400, seed=7)
    return people, qa_items(people, per_person=len(KINDS), seed=8, n_perturbed=5)


def _check_item(item: QAItem, n_perturbed: int = 3) -> None:
    key = item.key.lower()
    assert key in item.answer.lower()
    assert key in item.paraphrased_answer.lower()
    assert item.paraphrased_answer != item.answer
    assert item.paraphrased_question != item.question
    assert item.question.endswith(("?", "."))
    assert len(item.perturbed_answers) >= n_perturbed
    assert len(set(item.perturbed_answers)) == len(item.perturbed_answers)
    for wrong in item.perturbed_answers:
        assert wrong != item.answer
        assert wrong != item.paraphrased_answer
        assert key not in wrong.lower()


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_fictitious(30, seed=3), make_fictitious(30, seed=3)
    assert a == b
    assert a.to_records() == b.to_records()
    c = make_fictitious(30, seed=4)
    assert [p.name for p in a.people] != [p.name for p in c.people]
    assert a.items != c.items
    # the question seed alone changes wordings and wrong values, not the people
    people = generate_people(30, seed=3)
    assert qa_items(people, seed=1) != qa_items(people, seed=2)


def test_names_and_titles_are_unique(big):
    people, _ = big
    assert len({p.name for p in people}) == len(people)
    assert [p.id for p in people] == list(range(len(people)))
    titles = [w.title for p in people for w in p.works]
    assert len(set(titles)) == len(titles)
    many = generate_people(MAX_PEOPLE, seed=0)
    assert len({p.name for p in many}) == MAX_PEOPLE


def test_people_are_plausible(big):
    people, _ = big
    for p in people:
        assert 2 <= len(p.works) <= 3
        years = [w.year for w in p.works]
        assert years == sorted(years) and len(set(years)) == len(years)
        assert min(years) > p.birth_year + 18 and max(years) <= 2023
        assert min(years) < p.award_year <= 2023
        assert p.birthplace == f"{p.town}, {p.country}"


def test_relations_point_inside_the_set(big):
    people, _ = big
    by_id = {p.id: p for p in people}
    kinds = Counter()
    for p in people:
        rel = p.relation
        assert rel.person_id != p.id
        assert by_id[rel.person_id].name == rel.name
        if rel.kind == "mentor":
            assert by_id[rel.person_id].birth_year < p.birth_year
        kinds[rel.kind] += 1
    assert set(kinds) == {"mentor", "collaborator", "rival", "friend"}


def test_item_invariants(big):
    people, items = big
    assert len(items) == len(people) * len(KINDS)
    for item in items:
        _check_item(item, n_perturbed=5)
    assert len({it.question for it in items}) > 0.9 * len(items)
    # several question wordings per attribute are in use
    names = {p.id: p.name for p in people}
    for kind in ("birthplace", "birth_year", "profession", "genre", "award"):
        shapes = {it.question.replace(names[it.person_id], "_") for it in items if it.kind == kind}
        assert len(shapes) >= 3, kind


def test_default_items_cover_distinct_attributes():
    facts = make_fictitious(20, per_person=5, seed=0)
    assert len(facts.items) == 100 and len(facts) == 100
    per_person: dict[int, list[str]] = {}
    for item in facts.items:
        _check_item(item)
        assert len(item.perturbed_answers) == 3
        per_person.setdefault(item.person_id, []).append(item.kind)
    assert set(per_person) == {p.id for p in facts.people}
    for kinds in per_person.values():
        assert len(kinds) == 5 and len(set(kinds)) == 5
        assert kinds == sorted(kinds, key=KINDS.index)


def test_tiny_set_still_has_enough_wrong_names():
    people = generate_people(2, seed=5)
    for item in qa_items(people, per_person=len(KINDS), seed=5, n_perturbed=5):
        _check_item(item, n_perturbed=5)


@pytest.mark.parametrize("n", [20, 100, 250])
@pytest.mark.parametrize("fraction", FORGET_FRACTIONS)
def test_split_removes_whole_people(n, fraction):
    facts = make_fictitious(n, per_person=3, seed=1)
    forget, retain, ids = facts.split(fraction, seed=2)
    assert len(ids) == max(1, round(fraction * n))
    assert list(ids) == sorted(set(ids))
    gone = set(ids)
    assert all(it.person_id in gone for it in forget)
    assert all(it.person_id not in gone for it in retain)
    assert len(forget) == 3 * len(ids)
    assert set(forget).isdisjoint(retain)
    assert len(forget) + len(retain) == len(facts.items)
    assert set(forget) | set(retain) == set(facts.items)
    assert facts.split(fraction, seed=2) == (forget, retain, ids)
    records = facts.to_records(retain)
    assert len(records) == len(retain)
    assert set(records[0]) == {"question", "answer"}


def test_split_seed_changes_the_people():
    facts = make_fictitious(100, seed=0)
    assert facts.split(0.1, seed=0)[2] != facts.split(0.1, seed=1)[2]


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.1, 1.5, True, "0.1", None])
def test_split_rejects_bad_fractions(bad):
    with pytest.raises(UnlearnError, match="forget fraction"):
        make_fictitious(20).split(bad)


def test_split_must_leave_someone():
    facts = make_fictitious(2, seed=0)
    assert len(facts.split(0.5)[2]) == 1
    with pytest.raises(UnlearnError, match="leaves nobody"):
        facts.split(0.9)


def test_generation_errors():
    for n in (0, 1, MAX_PEOPLE + 1, 2.5):
        with pytest.raises(UnlearnError, match="number of people"):
            generate_people(n)
    people = generate_people(5, seed=0)
    ghost = Relation("friend", 99, "Nobody Anywhere")
    for per in (0, len(KINDS) + 1):
        with pytest.raises(UnlearnError, match="questions per person"):
            qa_items(people, per_person=per)
    with pytest.raises(UnlearnError, match="perturbed"):
        qa_items(people, n_perturbed=0)
    with pytest.raises(UnlearnError, match="not in the set"):
        qa_items(people[1:] + [dataclasses.replace(people[0], relation=ghost)])
    with pytest.raises(UnlearnError, match="no people"):
        qa_items([])


def test_container_and_item_validation():
    facts = make_fictitious(5, seed=0)
    stray = dataclasses.replace(facts.items[0], person_id=99)
    with pytest.raises(UnlearnError, match="not in the set"):
        FictitiousFacts(facts.people, facts.items + (stray,))
    item = facts.items[0]
    with pytest.raises(UnlearnError, match="states the true fact"):
        dataclasses.replace(item, perturbed_answers=(item.answer,))
    with pytest.raises(UnlearnError, match="does not contain the key"):
        dataclasses.replace(item, answer="Nobody knows.")
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.key = "x"  # type: ignore[misc]


def test_world_knowledge_items():
    items = make_fictitious(5).world_knowledge()
    assert items == world_knowledge()
    assert len(items) >= 20
    assert len({it.question for it in items}) == len(items)
    for item in items:
        assert isinstance(item, QAItem) and item.person_id == -1
        _check_item(item)
