"""The rule-based family knowledge base: generator, closure, derivations, unlearning sets."""

from __future__ import annotations

import pytest

from unlearn.data.kinship import (
    BASE_RELATIONS,
    DEFAULT_PEOPLE,
    EDU_RELAT_RULES,
    EXTENDED_RULES,
    RULES,
    Atom,
    Fact,
    Family,
    Person,
    Rule,
    biography,
    biography_items,
    closure,
    deep_unlearning_accuracy,
    deep_unlearning_recall,
    deep_unlearning_scores,
    derivations,
    is_derivable,
    kin_facts,
    make_family,
    minimal_deep_unlearning_set,
    minimal_deep_unlearning_sets,
    parse_rule,
    qa_items,
    rederivation_prompt,
    sample_targets,
)
from unlearn.errors import UnlearnError

# --------------------------------------------------------------------------
# A hand-built family of three generations
#
#   Arthur + Beatrice
#   |- Charles + Emma      -> George, Helen
#   |- Diana + Frank       -> Ivy
# --------------------------------------------------------------------------


def _hand_family() -> Family:
    p = Person
    return Family(
        (
            p("Arthur", "male", 1900, "Ambergate", "baker", 0, spouse="Beatrice"),
            p("Beatrice", "female", 1902, "Ambergate", "nurse", 0, spouse="Arthur"),
            p("Charles", "male", 1925, "Foxley", "tailor", 1, "Arthur", "Beatrice", "Emma"),
            p("Diana", "female", 1928, "Foxley", "potter", 1, "Arthur", "Beatrice", "Frank"),
            p("Emma", "female", 1926, "Elmstead", "farmer", 1, spouse="Charles"),
            p("Frank", "male", 1927, "Vexham", "engineer", 1, spouse="Diana"),
            p("George", "male", 1950, "Rushmere", "librarian", 2, "Charles", "Emma"),
            p("Helen", "female", 1953, "Rushmere", "midwife", 2, "Charles", "Emma"),
            p("Ivy", "female", 1955, "Millbrook", "surveyor", 2, "Frank", "Diana"),
        )
    )


@pytest.fixture(scope="module")
def hand() -> Family:
    return _hand_family()


@pytest.fixture(scope="module")
def hand_closure(hand) -> frozenset[Fact]:
    return closure(hand)


@pytest.fixture(scope="module")
def small() -> Family:
    return make_family(40, seed=5)


def _pairs(facts, relation: str) -> set[tuple[str, str]]:
    return {(f.subject, f.object) for f in facts if f.relation == relation}


F = Fact


def test_kin_facts_of_the_hand_family(hand):
    facts = set(hand.facts)
    assert len(facts) == 36
    assert _pairs(facts, "father") == {
        ("Arthur", "Charles"),
        ("Arthur", "Diana"),
        ("Charles", "George"),
        ("Charles", "Helen"),
        ("Frank", "Ivy"),
    }
    assert _pairs(facts, "brother") == {("Charles", "Diana"), ("George", "Helen")}
    assert _pairs(facts, "uncle") == {("Charles", "Ivy")}  # by blood only: not Frank
    assert _pairs(facts, "aunt") == {("Diana", "George"), ("Diana", "Helen")}
    assert _pairs(facts, "niece") == {("Ivy", "Charles"), ("Helen", "Diana")}
    assert _pairs(facts, "wife") == {
        ("Beatrice", "Arthur"),
        ("Emma", "Charles"),
        ("Diana", "Frank"),
    }


def test_exact_closure_of_the_hand_family(hand, hand_closure):
    cl = hand_closure
    assert set(hand.facts) <= cl
    # the stored relations are complete, so the rules add no base-relation fact
    assert {f for f in cl if f.relation in BASE_RELATIONS} == set(hand.facts)
    assert _pairs(cl, "grandfather") == {
        ("Arthur", "George"),
        ("Arthur", "Helen"),
        ("Arthur", "Ivy"),
    }
    assert _pairs(cl, "grandmother") == {
        ("Beatrice", "George"),
        ("Beatrice", "Helen"),
        ("Beatrice", "Ivy"),
    }
    assert _pairs(cl, "grandson") == {("George", "Arthur"), ("George", "Beatrice")}
    assert len(_pairs(cl, "grandchild")) == 6 and len(_pairs(cl, "granddaughter")) == 4
    assert _pairs(cl, "cousin") == {
        ("George", "Ivy"),
        ("Ivy", "George"),
        ("Helen", "Ivy"),
        ("Ivy", "Helen"),
    }
    assert _pairs(cl, "father_in_law") == {("Arthur", "Emma"), ("Arthur", "Frank")}
    assert _pairs(cl, "mother_in_law") == {("Beatrice", "Emma"), ("Beatrice", "Frank")}
    assert _pairs(cl, "son_in_law") == {("Frank", "Arthur"), ("Frank", "Beatrice")}
    assert _pairs(cl, "daughter_in_law") == {("Emma", "Arthur"), ("Emma", "Beatrice")}
    assert _pairs(cl, "brother_in_law") == {("Charles", "Frank"), ("Frank", "Charles")}
    assert _pairs(cl, "sister_in_law") == {("Diana", "Emma"), ("Emma", "Diana")}
    assert _pairs(cl, "sibling") == {
        ("Charles", "Diana"),
        ("Diana", "Charles"),
        ("George", "Helen"),
        ("Helen", "George"),
    }


def test_closure_of_a_partial_kb_fills_in_what_the_rules_give():
    genders = {"Tom": "male", "Ann": "female", "Kid": "female"}
    facts = {F("wife", "Ann", "Tom"), F("child", "Kid", "Tom"), F("child", "Kid", "Ann")}
    cl = closure(facts, EDU_RELAT_RULES, genders=genders)
    assert cl == facts | {
        F("husband", "Tom", "Ann"),
        F("father", "Tom", "Kid"),
        F("mother", "Ann", "Kid"),
    }
    # the gender guard keeps a male from being a mother
    assert F("mother", "Tom", "Kid") not in cl


def test_derivations_of_a_grandparent_fact(hand):
    assert set(derivations(F("grandfather", "Arthur", "George"), hand)) == {
        frozenset({F("father", "Arthur", "Charles"), F("father", "Charles", "George")}),
        frozenset({F("grandmother", "Beatrice", "George"), F("husband", "Arthur", "Beatrice")}),
    }
    assert set(derivations(F("grandmother", "Beatrice", "Ivy"), hand)) == {
        frozenset({F("mother", "Beatrice", "Diana"), F("mother", "Diana", "Ivy")}),
        frozenset({F("grandfather", "Arthur", "Ivy"), F("wife", "Beatrice", "Arthur")}),
    }


def test_derivations_of_a_stored_fact(hand):
    got = derivations(F("father", "Arthur", "Charles"), hand)
    assert got == (
        frozenset({F("child", "Charles", "Arthur")}),
        frozenset({F("brother", "Charles", "Diana"), F("father", "Arthur", "Diana")}),
        frozenset({F("husband", "Arthur", "Beatrice"), F("mother", "Beatrice", "Charles")}),
    )


def test_every_derived_fact_has_a_derivation(small):
    cl = closure(small)
    stored = set(small.facts)
    derived = sorted(cl - stored)
    assert derived
    assert {f for f in cl if f.relation in BASE_RELATIONS} == stored
    for f in derived[:: max(1, len(derived) // 25)]:
        ways = derivations(f, small)
        assert ways and all(p <= cl and f not in p for p in ways)


def test_rules_are_sound_on_a_partial_generated_kb():
    full = make_family(40, seed=2)
    part = make_family(40, seed=2, keep=0.7)
    assert part.people == full.people
    assert set(part.facts) < set(full.facts)
    back = {f for f in closure(part) if f.relation in BASE_RELATIONS}
    assert set(part.facts) < back <= set(full.facts)


def test_rule_lists():
    assert len(EDU_RELAT_RULES) == 48
    assert RULES == EDU_RELAT_RULES + EXTENDED_RULES
    assert all(1 <= len(r.body) <= 3 for r in RULES)
    assert str(EDU_RELAT_RULES[0]) == "husband(B, A) <- wife(A, B) | female(A), male(B)"
    # extended relations never feed a rule for a base relation
    for r in RULES:
        if r.head.relation in BASE_RELATIONS:
            assert all(a.relation in BASE_RELATIONS for a in r.body)
    rule = parse_rule("cousin(A, B) <- child(A, P), sibling(P, Q), child(B, Q)")
    assert rule.head == Atom("cousin", "A", "B") and len(rule.body) == 3 and rule.guards == ()


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------


def test_generator_is_deterministic_and_seed_dependent():
    a, b, c = make_family(seed=3), make_family(seed=3), make_family(seed=4)
    assert a == b and a.facts == b.facts
    assert a.people != c.people
    assert len(a.people) == DEFAULT_PEOPLE
    assert 300 <= len(a.facts) <= 900
    for n in (8, 33, 150):
        assert len(make_family(n, seed=1).people) == n


def test_generated_family_shape():
    fam = make_family(seed=0)
    assert {p.generation for p in fam.people} == {0, 1, 2, 3}
    assert len({p.name for p in fam.people}) == len(fam.people)
    assert len({(p.birth_year, p.birthplace) for p in fam.people}) == len(fam.people)
    assert fam.facts == kin_facts(fam.people)
    assert {f.relation for f in fam.facts} == set(BASE_RELATIONS)
    for p in fam.people:
        if p.father is not None:
            assert fam.person(p.father).birth_year < p.birth_year


# --------------------------------------------------------------------------
# Minimal deep-unlearning sets
# --------------------------------------------------------------------------


def test_minimal_set_on_tiny_kbs():
    genders = {"X": "male", "Y": "female", "Z": "male"}
    rules = [parse_rule("father(B, A) <- child(A, B)")]
    target = F("father", "X", "Y")
    facts = {target, F("child", "Y", "X")}
    assert minimal_deep_unlearning_sets(target, facts, rules, genders=genders) == (
        frozenset(facts),
    )
    # a derived target: either premise is enough, and the search finds both
    rules = [parse_rule("grandfather(G, C) <- father(G, P), father(P, C)")]
    facts = {F("father", "X", "Z"), F("father", "Z", "Y")}
    target = F("grandfather", "X", "Y")
    got = minimal_deep_unlearning_sets(target, facts, rules, genders=genders, seeds=20)
    assert set(got) == {frozenset({f}) for f in facts}


def _check_minimal(target: Fact, m: frozenset[Fact], fam: Family) -> None:
    stored = set(fam.facts)
    assert m <= stored
    assert (target in m) == (target in stored)
    assert not is_derivable(target, stored - m, genders=fam.genders)
    for f in m - {target}:  # nothing is redundant: putting one back re-derives the target
        assert is_derivable(target, (stored - m) | {f}, genders=fam.genders)


def test_minimal_set_of_a_hand_family_fact(hand):
    target = F("father", "Arthur", "Charles")
    m = minimal_deep_unlearning_set(target, hand, seeds=30)
    _check_minimal(target, m, hand)
    one = minimal_deep_unlearning_set(target, hand, seeds=1)
    assert len(m) <= len(one)
    assert is_derivable(target, set(hand.facts), genders=hand.genders)


def test_minimal_sets_on_a_generated_family(small):
    for i, target in enumerate(sample_targets(small, 2, seed=1)):
        sets = minimal_deep_unlearning_sets(target, small, seeds=20, seed=2)
        assert list(sets) == sorted(sets, key=lambda s: (len(s), sorted(s)))
        _check_minimal(target, sets[0], small)
        _check_minimal(target, sets[-1], small)
        one = minimal_deep_unlearning_set(target, small, seeds=1, seed=2)
        assert one in sets and len(sets[0]) <= len(one)
        if i == 0:
            assert minimal_deep_unlearning_set(target, small, seeds=20, seed=2) == sets[0]
    derived = F("grandfather", "Arthur", "Ivy")
    hand = _hand_family()
    m = minimal_deep_unlearning_set(derived, hand, seeds=10)
    _check_minimal(derived, m, hand)


def test_sample_targets(small):
    t = sample_targets(small, 10, seed=4)
    assert len(set(t)) == 10 and set(t) <= set(small.facts)
    assert t == sample_targets(small, 10, seed=4) != sample_targets(small, 10, seed=5)


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def test_recall_and_accuracy_by_hand():
    a, b, c, d, e, f = (F("child", f"P{i}", "Q") for i in range(6))
    m1, m2 = {a, b, c, d}, {a, e}
    removed = {a, e, f}
    assert deep_unlearning_recall(removed, [m1, m2]) == 1.0
    assert deep_unlearning_recall({a, b}, [m1, m2]) == 0.5
    assert deep_unlearning_recall(set(), [m1]) == 0.0
    assert deep_unlearning_accuracy(removed, m2, 10) == pytest.approx(1 - 1 / 8)
    assert deep_unlearning_accuracy(removed, m1, 10) == pytest.approx(1 - 2 / 6)
    assert deep_unlearning_accuracy(m1, m1, 10) == 1.0
    assert deep_unlearning_scores(removed, [m1, m2], 10) == (1.0, pytest.approx(0.875))


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def test_qa_items(hand):
    items = qa_items(hand)
    assert len(items) == len(hand.facts)
    for it in items:
        assert it.key == it.fact.subject and it.key in it.answer
        assert it.relation_key == it.fact.relation.replace("_", "-")
        assert it.fact.subject in it.relation_question and it.fact.object in it.relation_question
    by_fact = {it.fact: it for it in items}
    mother = by_fact[F("mother", "Beatrice", "Charles")]
    assert mother.question == "Who is the mother of Charles?"
    assert mother.answer == "The mother of Charles is Beatrice."
    child = by_fact[F("child", "Diana", "Arthur")]  # Arthur has two children
    assert child.question == "Which child of Arthur was born in 1928?"
    assert "Diana" in child.answer and "1928" in child.paraphrased_question
    derived = qa_items(hand, [F("cousin", "Ivy", "George")])[0]
    assert derived.key == "Ivy" and derived.question == "Who is the cousin of George?"


def test_biographies(hand):
    text = biography(hand.person("Ivy"))
    assert text == "Ivy was born in 1955 in Millbrook. She worked as a surveyor."
    items = biography_items(hand)
    assert len(items) == 3 * len(hand.people)
    assert all(it.key in it.answer for it in items)


def test_rederivation_prompt(hand):
    target = F("grandfather", "Arthur", "George")
    premises = derivations(target, hand)[0]
    prompt, key = rederivation_prompt(target, premises)
    assert key == "grandfather"
    assert "Arthur is Charles's father." in prompt and "Charles is George's father." in prompt
    assert prompt.endswith("Question: How is Arthur related to George?\nAnswer:")
    prompt, key = rederivation_prompt(target, premises, ask="name", genders=hand.genders)
    assert key == "Arthur" and "Who is the grandfather of George?" in prompt
    assert "George is male." in prompt


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_bad_input(hand):
    g = hand.genders
    cases = [
        (lambda: make_family(3), "n_people"),
        (lambda: make_family(10_000), "n_people"),
        (lambda: make_family(50, keep=0.0), "keep"),
        (lambda: make_family(50, generations=2), "generations"),
        (lambda: F("aunty", "A", "B"), "unknown relation"),
        (lambda: F("aunt", "A", "A"), "themselves"),
        (lambda: hand.person("Nobody"), "unknown person 'Nobody'"),
        (lambda: closure({F("aunt", "Zelda", "Ivy")}, genders=g), "unknown person 'Zelda'"),
        (lambda: closure(set(hand.facts)), "genders"),
        (lambda: derivations(F("uncle", "Frank", "George"), hand), "not in the knowledge base"),
        (
            lambda: minimal_deep_unlearning_set(F("uncle", "Frank", "George"), hand),
            "not in the knowledge base",
        ),
        (lambda: minimal_deep_unlearning_set(hand.facts[0], hand, seeds=0), "seeds"),
        (lambda: minimal_deep_unlearning_set("father", hand), "target must be a Fact"),
        (lambda: parse_rule("uncle(A, B) <- brother(A C)"), "cannot read the atom"),
        (lambda: parse_rule("uncle(A, B)"), "a rule reads"),
        (lambda: parse_rule("uncle(A, B) <- brother(A, C)"), "'B' is not in the body"),
        (lambda: parse_rule("mother(A, B) <- child(B, A) | male(A)"), "contradicts"),
        (
            lambda: Rule(Atom("child", "A", "B"), tuple(Atom("child", "A", "B") for _ in range(4))),
            "1 to 3 body atoms",
        ),
        (lambda: deep_unlearning_recall(set(), []), "no minimal"),
        (lambda: deep_unlearning_recall(set(), hand.facts[:2]), "sets of facts"),
        (lambda: deep_unlearning_recall(set(), [set()]), "empty"),
        (lambda: deep_unlearning_accuracy(set(), set(hand.facts[:3]), 3), "n_facts"),
        (lambda: deep_unlearning_accuracy(set(hand.facts), set(hand.facts[:3]), 5), "n_facts"),
        (lambda: sample_targets(hand, 100), "cannot draw"),
        (lambda: rederivation_prompt(hand.facts[0], [hand.facts[1]], ask="why"), "ask"),
        (lambda: rederivation_prompt(hand.facts[0], []), "at least one premise"),
        (lambda: rederivation_prompt(hand.facts[0], [hand.facts[0]]), "the target"),
        (lambda: Person("Al", "robot", 1900), "unknown gender"),
        (lambda: Person("Al", "male", 1900, father="Bo"), "both parents"),
        (lambda: Family((Person("Al", "male", 1900, spouse="Bo"),)), "unknown person 'Bo'"),
        (
            lambda: Family((Person("Al", "male", 1900), Person("Al", "female", 1901))),
            "two people are named 'Al'",
        ),
        (
            lambda: Family(hand.people, (F("aunt", "Zelda", "Ivy"),)),
            "unknown person 'Zelda'",
        ),
    ]
    for call, needle in cases:
        with pytest.raises(UnlearnError, match=needle):
            call()
