"""A rule-based family knowledge base for deep unlearning, in the style of EDU-RELAT.

Deep unlearning (Wu, Yadav, Salakhutdinov and Chaudhuri 2024, "Evaluating deep
unlearning in large language models", arXiv 2410.15153) asks a method to forget a
target fact *and* enough of the retained facts that the target can no longer be
re-derived by logical rules from what is left. Their benchmark EDU-RELAT pairs a
synthetic family graph with Horn rules over family relations; this module builds
the same kind of object from scratch:

* :func:`make_family` invents a seeded family graph (several generations, invented
  names, genders, birth years, birthplaces, occupations) and stores eleven base
  relations explicitly, as EDU-RELAT does: father, mother, child, husband, wife,
  brother, sister, uncle, aunt, nephew, niece. A fact ``Fact("mother", "Y", "X")``
  reads "Y is the mother of X".
* :data:`EDU_RELAT_RULES` holds 48 Horn rules over those relations, one for each
  rule of EDU-RELAT's rule file, and :data:`EXTENDED_RULES` adds relations that
  EDU-RELAT does not have (grandparents, grandchildren, siblings, cousins,
  in-laws). Rules are data (:class:`Rule`, written in a small text syntax read by
  :func:`parse_rule`); gender conditions are guards checked against the people's
  genders, not facts, so they never enter an unlearning set.
* :func:`closure` applies the rules to a fixpoint, :func:`derivations` lists the
  premise sets of every one-step derivation of a fact, and
  :func:`minimal_deep_unlearning_set` runs the randomized greedy-then-prune
  search of the paper to find a small set of stored facts whose removal leaves the
  target underivable.
* :func:`deep_unlearning_recall` and :func:`deep_unlearning_accuracy` score what a
  method removed against those sets; :func:`qa_items`, :func:`biography`,
  :func:`biography_items` and :func:`rederivation_prompt` render the knowledge
  base as text for fine-tuning and probing a language model.

Numbers taken from EDU-RELAT (its released code and data, github wrh14/deep_unlearning):
48 rules over the eleven relations above; gender and "the two people differ" are
checked on each derived fact; 55 target facts sampled from the stored relations;
100 random seeds for the minimal-set search. The released knowledge base has 100
people, 400 relationship facts and 300 biography facts (birth year, birthplace,
job); the generation notebook in the same repository reports 132 people and 440
relations for its run. Our default, :data:`DEFAULT_PEOPLE` people, is of that size.

Where this module differs from EDU-RELAT:

* The people, names, places and the generation process are our own. Every child
  has both parents in the graph, parents are married to each other, nobody
  remarries and there are no half-siblings, so every rule is sound on generated
  data. The stored relations are complete (no stored relation is left out), so
  the closure adds only the extended relations; EDU-RELAT's released graph stores
  a subset (for instance fewer father facts than child facts; its 400 facts close
  to 562 under its rules). ``make_family(keep=...)`` drops stored facts at random
  to get the same effect.
* Three rules of EDU-RELAT's file never fire as written: two name the misspelled
  relation "newphe" (we read it as nephew) and one concludes "the father is the
  wife of the mother" from a shared child, which its gender check always rejects
  (we conclude that the mother is the wife of the father).
* Uncles, aunts, nephews and nieces are by blood only (the sibling of a parent),
  as in EDU-RELAT; the extended rules follow the same convention.
* A derivation whose premises contain the derived fact itself is not listed
  (it cannot re-derive anything); EDU-RELAT enumerates it but it never changes
  its result.
* Recall and accuracy follow EDU-RELAT's evaluation code: accuracy is taken on
  the minimal set with the highest recall (:func:`deep_unlearning_scores`); ties
  go to the first set in the order given (EDU-RELAT takes the first in a Python
  set's order). EDU-RELAT's "accuracy of all knowledge" also averages in the
  biography facts; that mix is left to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import UnlearnError

__all__ = [
    "Fact",
    "Atom",
    "Rule",
    "Person",
    "Family",
    "KinshipQA",
    "BiographyQA",
    "RELATIONS",
    "BASE_RELATIONS",
    "GENDERS",
    "EDU_RELAT_RULES",
    "EXTENDED_RULES",
    "RULES",
    "DEFAULT_PEOPLE",
    "MIN_PEOPLE",
    "MAX_PEOPLE",
    "N_TARGETS",
    "parse_rule",
    "kin_facts",
    "make_family",
    "closure",
    "derivations",
    "is_derivable",
    "minimal_deep_unlearning_sets",
    "minimal_deep_unlearning_set",
    "deep_unlearning_recall",
    "deep_unlearning_accuracy",
    "deep_unlearning_scores",
    "sample_targets",
    "fact_sentence",
    "qa_items",
    "biography",
    "biography_items",
    "rederivation_prompt",
]

GENDERS = ("female", "male")

#: The eleven relations EDU-RELAT stores; :func:`make_family` stores exactly these.
BASE_RELATIONS = (
    "father",
    "mother",
    "child",
    "husband",
    "wife",
    "brother",
    "sister",
    "uncle",
    "aunt",
    "nephew",
    "niece",
)
_EXTENDED_RELATIONS = (
    "grandfather",
    "grandmother",
    "grandchild",
    "grandson",
    "granddaughter",
    "sibling",
    "cousin",
    "father_in_law",
    "mother_in_law",
    "son_in_law",
    "daughter_in_law",
    "brother_in_law",
    "sister_in_law",
)
#: Every relation a fact or rule may name.
RELATIONS = BASE_RELATIONS + _EXTENDED_RELATIONS

# The gender a relation implies for its subject ("Y is the mother of X": Y is female),
# and for spouses also for its object; checked on every derived fact.
_SUBJECT_GENDER = {
    "father": "male",
    "mother": "female",
    "husband": "male",
    "wife": "female",
    "brother": "male",
    "sister": "female",
    "uncle": "male",
    "aunt": "female",
    "nephew": "male",
    "niece": "female",
    "grandfather": "male",
    "grandmother": "female",
    "grandson": "male",
    "granddaughter": "female",
    "father_in_law": "male",
    "mother_in_law": "female",
    "son_in_law": "male",
    "daughter_in_law": "female",
    "brother_in_law": "male",
    "sister_in_law": "female",
}
_OBJECT_GENDER = {"husband": "female", "wife": "male"}

#: Default family size (EDU-RELAT: 100 people released, 132 in its generation notebook);
#: with it, seeds 0-7 give 480-672 stored facts (604 for seed 0).
DEFAULT_PEOPLE = 100
MIN_PEOPLE = 8
MAX_PEOPLE = 600
#: Target facts EDU-RELAT samples from the stored relations.
N_TARGETS = 55

# --------------------------------------------------------------------------
# Facts and rules
# --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Fact:
    """``subject`` is the ``relation`` of ``object``: ``Fact("mother", "Y", "X")``.

    Subject and object are person names (unique within a :class:`Family`).
    """

    relation: str
    subject: str
    object: str

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise UnlearnError(f"unknown relation {self.relation!r}; known: {', '.join(RELATIONS)}")
        for who in (self.subject, self.object):
            if not isinstance(who, str) or not who.strip():
                raise UnlearnError(f"a fact needs two person names, got {who!r}")
        if self.subject == self.object:
            raise UnlearnError(f"a fact cannot relate {self.subject!r} to themselves")

    def __str__(self) -> str:
        return f"{self.relation}({self.subject}, {self.object})"


@dataclass(frozen=True)
class Atom:
    """A relation between two variables, as it appears in a rule."""

    relation: str
    subject: str
    object: str

    def __str__(self) -> str:
        return f"{self.relation}({self.subject}, {self.object})"


@dataclass(frozen=True)
class Rule:
    """A Horn rule ``head <- body``, with gender guards on its variables.

    Guards are ``(variable, gender)`` pairs; the gender the head relation implies
    (a mother is female, a husband is male and married to a female, ...) is added
    on construction, as EDU-RELAT checks it on every derived fact. A rule never
    derives a fact that relates a person to themselves.
    """

    head: Atom
    body: tuple[Atom, ...]
    guards: tuple[tuple[str, str], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        body = tuple(self.body)
        object.__setattr__(self, "body", body)
        where = f"rule {self.name or self.head!s}"
        if not 1 <= len(body) <= 3:
            raise UnlearnError(f"{where} needs 1 to 3 body atoms, got {len(body)}")
        for atom in (self.head, *body):
            if atom.relation not in RELATIONS:
                raise UnlearnError(f"{where} names an unknown relation {atom.relation!r}")
        if self.head.subject == self.head.object:
            raise UnlearnError(f"{where}: the head relates a variable to itself")
        bound = {v for atom in body for v in (atom.subject, atom.object)}
        for var in (self.head.subject, self.head.object):
            if var not in bound:
                raise UnlearnError(f"{where}: head variable {var!r} is not in the body")
        guards = dict(self.guards)
        implied = [(self.head.subject, _SUBJECT_GENDER.get(self.head.relation))]
        implied.append((self.head.object, _OBJECT_GENDER.get(self.head.relation)))
        for var, gender in implied:
            if gender is None:
                continue
            if guards.get(var, gender) != gender:
                raise UnlearnError(f"{where}: guard on {var!r} contradicts the head relation")
            guards[var] = gender
        for var, gender in guards.items():
            if gender not in GENDERS:
                raise UnlearnError(f"{where}: unknown gender {gender!r}")
            if var not in bound:
                raise UnlearnError(f"{where}: guard variable {var!r} is not in the body")
        object.__setattr__(self, "guards", tuple(sorted(guards.items())))
        if not self.name:
            object.__setattr__(self, "name", str(self))

    def __str__(self) -> str:
        text = f"{self.head} <- {', '.join(str(a) for a in self.body)}"
        if self.guards:
            text += " | " + ", ".join(f"{g}({v})" for v, g in self.guards)
        return text


_ATOM = re.compile(r"\s*([a-z_]+)\(\s*([A-Za-z]\w*)\s*,\s*([A-Za-z]\w*)\s*\)\s*")
_GUARD = re.compile(r"\s*(female|male)\(\s*([A-Za-z]\w*)\s*\)\s*")


def _split_atoms(text: str) -> list[str]:
    parts = [p for p in re.split(r"\)\s*,", text.strip())]
    return [p if p.rstrip().endswith(")") else p + ")" for p in parts if p.strip()]


def parse_rule(text: str) -> Rule:
    """Read ``"head(A, B) <- r1(A, C), r2(C, B) | male(A)"`` into a :class:`Rule`.

    Variables are identifiers; the part after ``|`` (optional) lists gender guards.
    """
    if not isinstance(text, str) or "<-" not in text:
        raise UnlearnError(f"a rule reads 'head(A, B) <- body(A, C), ...', got {text!r}")
    head_text, _, rest = text.partition("<-")
    body_text, _, guard_text = rest.partition("|")

    def atom(part: str) -> Atom:
        m = _ATOM.fullmatch(part)
        if m is None:
            raise UnlearnError(f"cannot read the atom {part.strip()!r} in rule {text!r}")
        return Atom(m.group(1), m.group(2), m.group(3))

    guards = []
    for part in _split_atoms(guard_text) if guard_text.strip() else []:
        m = _GUARD.fullmatch(part)
        if m is None:
            raise UnlearnError(f"cannot read the guard {part.strip()!r} in rule {text!r}")
        guards.append((m.group(2), m.group(1)))
    body = tuple(atom(p) for p in _split_atoms(body_text))
    return Rule(atom(head_text), body, tuple(guards))


# The 48 rules of EDU-RELAT's rule file (synthetic_data/family_rule_raw.txt), in its
# order, in our notation; gender conditions of the file are guards here, and the
# head's implied gender is added by Rule. Two readings differ from the file (see the
# module docstring): "newphe" is read as nephew, and the sixth rule concludes that the
# mother is the wife of the father.
_EDU_RELAT_TEXT = (
    "husband(B, A) <- wife(A, B)",
    "husband(A, C) <- child(B, A), child(B, C)",
    "husband(A, C) <- father(A, B), mother(C, B)",
    "wife(B, A) <- husband(A, B)",
    "wife(A, C) <- child(B, A), child(B, C)",
    "wife(C, A) <- father(A, B), mother(C, B)",
    "nephew(A, B) <- uncle(B, A)",
    "nephew(A, B) <- aunt(B, A)",
    "nephew(A, C) <- child(A, B), brother(C, B)",
    "nephew(A, C) <- child(A, B), sister(C, B)",
    "niece(A, B) <- uncle(B, A)",
    "niece(A, B) <- aunt(B, A)",
    "niece(A, C) <- child(A, B), brother(C, B)",
    "niece(A, C) <- child(A, B), sister(C, B)",
    "uncle(B, A) <- niece(A, B)",
    "uncle(B, A) <- nephew(A, B)",
    "uncle(C, A) <- child(A, B), brother(C, B)",
    "aunt(B, A) <- niece(A, B)",
    "aunt(B, A) <- nephew(A, B)",
    "aunt(C, A) <- child(A, B), sister(C, B)",
    "brother(A, B) <- brother(B, A)",
    "brother(A, B) <- sister(B, A)",
    "brother(A, B) <- child(A, C), child(B, C)",
    "brother(A, B) <- mother(C, A), mother(C, B)",
    "brother(A, B) <- father(C, A), father(C, B)",
    "sister(A, B) <- brother(B, A)",
    "sister(A, B) <- sister(B, A)",
    "sister(A, B) <- child(A, C), child(B, C)",
    "sister(A, B) <- mother(C, A), mother(C, B)",
    "sister(A, B) <- father(C, A), father(C, B)",
    "mother(B, A) <- child(A, B)",
    "mother(C, B) <- father(A, B), wife(C, A)",
    "mother(C, B) <- brother(B, A), mother(C, A)",
    "mother(C, B) <- sister(B, A), mother(C, A)",
    "father(B, A) <- child(A, B)",
    "father(C, B) <- mother(A, B), husband(C, A)",
    "father(C, B) <- brother(B, A), father(C, A)",
    "father(C, B) <- sister(B, A), father(C, A)",
    "child(B, A) <- mother(A, B)",
    "child(B, A) <- mother(A, C), sister(C, B)",
    "child(B, A) <- wife(A, C), father(C, B)",
    "child(B, A) <- mother(A, C), brother(C, B)",
    "child(B, A) <- father(A, B)",
    "child(B, A) <- father(A, C), sister(C, B)",
    "child(B, A) <- father(A, C), brother(C, B)",
    "child(B, A) <- child(C, A), sister(C, B)",
    "child(B, A) <- child(C, A), brother(C, B)",
    "child(B, A) <- husband(A, C), mother(C, B)",
)

# Relations EDU-RELAT does not have. None of them appears in a body of a rule that
# derives a base relation, so they never change which stored facts an unlearning set
# of a base fact needs.
_EXTENDED_TEXT = (
    "grandfather(G, C) <- father(G, P), father(P, C)",
    "grandfather(G, C) <- father(G, P), mother(P, C)",
    "grandmother(G, C) <- mother(G, P), father(P, C)",
    "grandmother(G, C) <- mother(G, P), mother(P, C)",
    "grandfather(G, C) <- grandmother(W, C), husband(G, W)",
    "grandmother(G, C) <- grandfather(H, C), wife(G, H)",
    "grandchild(C, G) <- child(C, P), child(P, G)",
    "grandchild(C, G) <- grandfather(G, C)",
    "grandchild(C, G) <- grandmother(G, C)",
    "grandson(C, G) <- grandchild(C, G)",
    "granddaughter(C, G) <- grandchild(C, G)",
    "sibling(A, B) <- brother(A, B)",
    "sibling(A, B) <- sister(A, B)",
    "sibling(A, B) <- sibling(B, A)",
    "cousin(A, B) <- child(A, P), sibling(P, Q), child(B, Q)",
    "cousin(A, B) <- nephew(A, U), child(B, U)",
    "cousin(A, B) <- niece(A, U), child(B, U)",
    "cousin(A, B) <- cousin(B, A)",
    "father_in_law(F, X) <- father(F, S), husband(S, X)",
    "father_in_law(F, X) <- father(F, S), wife(S, X)",
    "mother_in_law(M, X) <- mother(M, S), husband(S, X)",
    "mother_in_law(M, X) <- mother(M, S), wife(S, X)",
    "son_in_law(X, P) <- husband(X, D), child(D, P)",
    "son_in_law(X, P) <- father_in_law(P, X)",
    "son_in_law(X, P) <- mother_in_law(P, X)",
    "daughter_in_law(X, P) <- wife(X, S), child(S, P)",
    "daughter_in_law(X, P) <- father_in_law(P, X)",
    "daughter_in_law(X, P) <- mother_in_law(P, X)",
    "brother_in_law(B, X) <- brother(B, S), husband(S, X)",
    "brother_in_law(B, X) <- brother(B, S), wife(S, X)",
    "brother_in_law(B, X) <- husband(B, S), sister(S, X)",
    "sister_in_law(W, X) <- sister(W, S), husband(S, X)",
    "sister_in_law(W, X) <- sister(W, S), wife(S, X)",
    "sister_in_law(W, X) <- wife(W, S), brother(S, X)",
)

#: EDU-RELAT's 48 rules over the eleven base relations (see the module docstring).
EDU_RELAT_RULES: tuple[Rule, ...] = tuple(parse_rule(t) for t in _EDU_RELAT_TEXT)
#: Rules for grandparents, grandchildren, siblings, cousins and in-laws.
EXTENDED_RULES: tuple[Rule, ...] = tuple(parse_rule(t) for t in _EXTENDED_TEXT)
#: The default rule set: both of the above.
RULES: tuple[Rule, ...] = EDU_RELAT_RULES + EXTENDED_RULES

# --------------------------------------------------------------------------
# People and families
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """One invented person; ``father``, ``mother`` and ``spouse`` are names or ``None``."""

    name: str
    gender: str
    birth_year: int
    birthplace: str = ""
    occupation: str = ""
    generation: int = 0
    father: str | None = None
    mother: str | None = None
    spouse: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise UnlearnError(f"a person needs a name, got {self.name!r}")
        if self.gender not in GENDERS:
            raise UnlearnError(f"person {self.name!r} has unknown gender {self.gender!r}")
        if (self.father is None) != (self.mother is None):
            raise UnlearnError(f"person {self.name!r} needs both parents or neither")
        if self.name in (self.father, self.mother, self.spouse):
            raise UnlearnError(f"person {self.name!r} cannot be their own parent or spouse")


def kin_facts(people: Sequence[Person]) -> tuple[Fact, ...]:
    """Every fact of the eleven base relations that the parent and spouse links imply.

    Siblings share both parents; an uncle or aunt is a sibling of a parent (by
    blood, as in EDU-RELAT). Sorted.
    """
    _check_people(people)
    facts: set[Fact] = set()
    kids: dict[tuple[str, str], list[Person]] = {}
    for p in people:
        if p.spouse is not None:
            facts.add(Fact("husband" if p.gender == "male" else "wife", p.name, p.spouse))
        if p.father is not None and p.mother is not None:
            facts |= {Fact("father", p.father, p.name), Fact("mother", p.mother, p.name)}
            facts |= {Fact("child", p.name, p.father), Fact("child", p.name, p.mother)}
            kids.setdefault((p.father, p.mother), []).append(p)
    siblings: dict[str, list[Person]] = {}
    for group in kids.values():
        for a in group:
            siblings[a.name] = [b for b in group if b.name != a.name]
            for b in siblings[a.name]:
                facts.add(Fact("brother" if a.gender == "male" else "sister", a.name, b.name))
    for p in people:
        for parent in (p.father, p.mother):
            if parent is None:
                continue
            for s in siblings.get(parent, ()):
                facts.add(Fact("uncle" if s.gender == "male" else "aunt", s.name, p.name))
                facts.add(Fact("nephew" if p.gender == "male" else "niece", p.name, s.name))
    return tuple(sorted(facts))


def _check_people(people: Sequence[Person]) -> dict[str, Person]:
    by_name: dict[str, Person] = {}
    for p in people:
        if not isinstance(p, Person):
            raise UnlearnError(f"expected Person records, got {type(p).__name__}")
        if p.name in by_name:
            raise UnlearnError(f"two people are named {p.name!r}")
        by_name[p.name] = p
    for p in people:
        for role in ("father", "mother", "spouse"):
            other = getattr(p, role)
            if other is not None and other not in by_name:
                raise UnlearnError(f"unknown person {other!r} (the {role} of {p.name!r})")
        if p.father is not None:
            father, mother = by_name[p.father], by_name[str(p.mother)]
            if father.gender != "male" or mother.gender != "female":
                raise UnlearnError(f"the parents of {p.name!r} must be a father and a mother")
            if father.spouse != mother.name:
                raise UnlearnError(f"the parents of {p.name!r} must be married to each other")
        if p.spouse is not None:
            spouse = by_name[p.spouse]
            if spouse.spouse != p.name:
                raise UnlearnError(f"{p.name!r} and {p.spouse!r} must name each other as spouse")
            if spouse.gender == p.gender:
                raise UnlearnError(f"the couple {p.name!r}, {p.spouse!r} must be man and wife")
    return by_name


@dataclass(frozen=True)
class Family:
    """People and the stored facts about them (the knowledge base the rules close).

    ``facts`` defaults to :func:`kin_facts` of the people; pass a subset to store
    less. Every fact must name people of the family.
    """

    people: tuple[Person, ...]
    facts: tuple[Fact, ...] = ()
    _by_name: dict[str, Person] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        people = tuple(self.people)
        object.__setattr__(self, "people", people)
        by_name = _check_people(people)
        object.__setattr__(self, "_by_name", by_name)
        facts = tuple(self.facts) if self.facts else kin_facts(people)
        for f in facts:
            if not isinstance(f, Fact):
                raise UnlearnError(f"a family stores Fact records, got {type(f).__name__}")
            for who in (f.subject, f.object):
                if who not in by_name:
                    raise UnlearnError(f"unknown person {who!r} in fact {f}")
        if len(set(facts)) != len(facts):
            raise UnlearnError("the family stores a fact twice")
        object.__setattr__(self, "facts", tuple(sorted(facts)))

    @property
    def genders(self) -> dict[str, str]:
        """Person name -> ``"female"`` or ``"male"``."""
        return {p.name: p.gender for p in self.people}

    def person(self, name: str) -> Person:
        """The person called ``name``; :class:`UnlearnError` if there is none."""
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise UnlearnError(f"unknown person {name!r}") from None


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------

_MALE_NAMES = (
    "Alder", "Bastien", "Corvin", "Dashel", "Emeric", "Faramund", "Gideonne", "Hollis",
    "Ivor", "Jerrod", "Kasimer", "Lorcan", "Matthis", "Norwin", "Oswin", "Perrin",
    "Quillon", "Rainer", "Soren", "Tamsin", "Ulric", "Valen", "Wystan", "Yorick",
    "Zebulan", "Anselm", "Brannick", "Cassius", "Dorian", "Evander", "Fintan", "Gaspard",
    "Halvard", "Ignatz", "Jory", "Kellan", "Leopold", "Marek", "Niall", "Orrin",
)  # fmt: skip
_FEMALE_NAMES = (
    "Adela", "Briony", "Celestine", "Delphine", "Elowen", "Fenella", "Gwendra", "Honora",
    "Isolde", "Jessamine", "Katrien", "Linnea", "Mirabel", "Nerissa", "Odette", "Perpetua",
    "Quinta", "Rosamund", "Sabine", "Thessaly", "Ursula", "Verity", "Winifred", "Yvaine",
    "Zinnia", "Amaryllis", "Beatrix", "Cordelia", "Damaris", "Esmerelda", "Florentine",
    "Greer", "Hesper", "Imogen", "Juniper", "Kerensa", "Leocadia", "Marisol", "Ottilie",
    "Philippa",
)  # fmt: skip
_SURNAMES = (
    "Abernathe", "Blackwood", "Crowhurst", "Davenwick", "Elderton", "Foxmoor", "Gravenor",
    "Hartlepool", "Inglewood", "Jessop", "Kingsmere", "Lockhaven", "Merriweather",
    "Northcott", "Oakenshaw", "Pendlebury", "Quarrington", "Ravensworth", "Stonebridge",
    "Thornbury", "Underhill", "Valemont", "Whitlock", "Yarborough", "Ashcombe", "Brightwater",
    "Colbrook", "Dunstable", "Fairholme", "Goldthorpe", "Hazelrigg", "Ironbridge",
    "Kettlewell", "Larkhill", "Mossley", "Netherby", "Oldcastle", "Pickering", "Redmayne",
    "Sallowfield",
)  # fmt: skip
_TOWNS = (
    "Ambergate", "Bramblewick", "Coldharbour", "Dunmarrow", "Eastmere", "Fernhollow",
    "Glenvarrow", "Highbarrow", "Ivybridge Vale", "Kestrel Cove", "Lindenford", "Millbrook",
    "Northwold", "Orchard Fell", "Pebbleshore", "Quarry Hill", "Rushmere", "Saltmarsh",
    "Thistledown", "Upper Wendle", "Vexham", "Willowmere", "Yarrowby", "Zennor Bay",
    "Ashgrove", "Birchcombe", "Cinderford Lea", "Dovecote Green", "Elmstead", "Foxley",
)  # fmt: skip
_OCCUPATIONS = (
    "baker", "carpenter", "schoolteacher", "nurse", "surveyor", "bookbinder", "pharmacist",
    "clockmaker", "postal clerk", "architect", "farmer", "tailor", "librarian", "engineer",
    "beekeeper", "potter", "accountant", "ship's pilot", "glassblower", "veterinarian",
    "cartographer", "stonemason", "violin maker", "midwife",
)  # fmt: skip

_CHILD_COUNTS = np.array([1, 2, 3, 4])
_CHILD_P = np.array([0.35, 0.4, 0.2, 0.05])
_P_MARRY, _P_MARRY_LAST, _P_WITHIN = 0.9, 0.5, 0.15
_FIRST_FOUNDER_YEAR = 1880


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UnlearnError(f"{what} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise UnlearnError(f"{what} must lie in [{low}, {high}], got {value}")
    return int(value)


class _Builder:
    """Grows one family graph with a fixed number of founder couples."""

    def __init__(self, rng: np.random.Generator, founders: int, generations: int) -> None:
        self.rng = rng
        self.generations = generations
        self.people: list[dict] = []
        self.slots: set[tuple[int, str]] = set()  # (birth year, town) pairs in use
        self.names: set[str] = set()
        couples: list[tuple[int, int]] = []
        order = rng.permutation(len(_SURNAMES))  # founders share a surname only past 40
        for k in range(founders):
            year = _FIRST_FOUNDER_YEAR + int(rng.integers(0, 20))
            surname = _SURNAMES[int(order[k % len(order)])]
            h = self._add("male", year, 0, surname)
            w = self._add("female", year + int(rng.integers(-4, 5)), 0, None)
            self._marry(h, w)
            couples.append((h, w))
        for gen in range(1, generations):
            children = [self._children(h, w, gen) for h, w in couples]
            flat = [c for group in children for c in group]
            couples = self._marriages(flat, gen)

    def _add(self, gender: str, year: int, gen: int, surname: str | None) -> int:
        rng = self.rng
        given = _MALE_NAMES if gender == "male" else _FEMALE_NAMES
        if surname is None:  # an outsider: any surname with a given name still free
            for _ in range(20):
                surname = _SURNAMES[int(rng.integers(len(_SURNAMES)))]
                if any(f"{g} {surname}" not in self.names for g in given):
                    break
        free = [g for g in given if f"{g} {surname}" not in self.names]
        if not free:
            raise UnlearnError(f"ran out of names for the {surname} family; lower n_people")
        name = f"{free[int(rng.integers(len(free)))]} {surname}"
        towns = [t for t in _TOWNS if (year, t) not in self.slots]
        if not towns:
            raise UnlearnError(f"too many people born in {year}; try another seed")
        town = towns[int(rng.integers(len(towns)))]
        self.names.add(name)
        self.slots.add((year, town))
        self.people.append(
            dict(
                name=name,
                gender=gender,
                birth_year=year,
                birthplace=town,
                occupation=_OCCUPATIONS[int(rng.integers(len(_OCCUPATIONS)))],
                generation=gen,
                father=None,
                mother=None,
                spouse=None,
                surname=surname,
                parents=None,
            )
        )
        return len(self.people) - 1

    def _marry(self, a: int, b: int) -> None:
        self.people[a]["spouse"], self.people[b]["spouse"] = b, a

    def _children(self, h: int, w: int, gen: int) -> list[int]:
        rng = self.rng
        k = int(rng.choice(_CHILD_COUNTS, p=_CHILD_P))
        year = self.people[w]["birth_year"] + int(rng.integers(20, 28))
        out = []
        for _ in range(k):
            gender = GENDERS[int(rng.integers(2))]
            c = self._add(gender, year, gen, self.people[h]["surname"])
            self.people[c].update(father=h, mother=w, parents=(h, w))
            out.append(c)
            year += int(rng.integers(1, 5))  # siblings never share a birth year
        return out

    def _grandparents(self, i: int) -> set[int]:
        parents = self.people[i]["parents"]
        if parents is None:
            return set()
        out = set(parents)
        for p in parents:
            out |= set(self.people[p]["parents"] or ())
        return out

    def _marriages(self, children: list[int], gen: int) -> list[tuple[int, int]]:
        rng, people = self.rng, self.people
        last = gen == self.generations - 1
        couples = []
        for c in children:
            if people[c]["spouse"] is not None:
                continue
            if rng.random() >= (_P_MARRY_LAST if last else _P_MARRY):
                continue
            me = people[c]
            ancestry = self._grandparents(c)
            pool = [
                o
                for o in children
                if people[o]["spouse"] is None
                and people[o]["gender"] != me["gender"]
                and abs(people[o]["birth_year"] - me["birth_year"]) <= 8
                and not (ancestry & self._grandparents(o))
            ]
            if pool and rng.random() < _P_WITHIN:
                other = pool[int(rng.integers(len(pool)))]
            else:
                gender = "female" if me["gender"] == "male" else "male"
                other = self._add(gender, me["birth_year"] + int(rng.integers(-4, 5)), gen, None)
            self._marry(c, other)
            husband, wife = (c, other) if me["gender"] == "male" else (other, c)
            couples.append((husband, wife))
        return couples

    def finish(self, n_people: int) -> tuple[Person, ...]:
        """The first ``n_people`` people; later ones are dropped with their marriages."""
        keep = self.people[:n_people]
        out = []
        for d in keep:
            spouse = d["spouse"] if d["spouse"] is not None and d["spouse"] < n_people else None
            father = d["father"]
            out.append(
                Person(
                    name=d["name"],
                    gender=d["gender"],
                    birth_year=d["birth_year"],
                    birthplace=d["birthplace"],
                    occupation=d["occupation"],
                    generation=d["generation"],
                    father=None if father is None else keep[father]["name"],
                    mother=None if father is None else keep[d["mother"]]["name"],
                    spouse=None if spouse is None else keep[spouse]["name"],
                )
            )
        return tuple(out)


def make_family(
    n_people: int = DEFAULT_PEOPLE,
    seed: int = 0,
    *,
    generations: int = 4,
    keep: float = 1.0,
) -> Family:
    """Invent a family graph of exactly ``n_people`` people, deterministically from ``seed``.

    Founder couples start generation 0; each couple of the earlier generations
    has one to four children (distinct birth years); most children marry, either
    an outsider (a new person without parents in the graph) or, sometimes, a
    person of the same generation from another branch who shares no grandparent;
    the last generation marries less often and has no children. Founder couples
    are added until the generations hold at least ``n_people``; the people added
    last (in the youngest generation) are cut off.

    ``keep`` < 1 stores only that fraction of :func:`kin_facts` (drawn at random,
    at least one fact), leaving the rest for the rules to re-derive.
    """
    n_people = _check_int(n_people, "n_people", MIN_PEOPLE, MAX_PEOPLE)
    seed = _check_int(seed, "seed", 0, 2**63 - 1)
    generations = _check_int(generations, "generations", 3, 6)
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not 0.0 < keep <= 1.0:
        raise UnlearnError(f"keep must be a fraction in (0, 1], got {keep!r}")
    founders = max(1, n_people // 40)
    while True:
        builder = _Builder(np.random.default_rng([seed, founders]), founders, generations)
        if len(builder.people) >= n_people:
            break
        founders += 1
    people = builder.finish(n_people)
    facts = kin_facts(people)
    if keep < 1.0:
        rng = np.random.default_rng([seed, founders, 1])
        n_keep = max(1, int(round(keep * len(facts))))
        picked = np.sort(rng.choice(len(facts), size=n_keep, replace=False))
        facts = tuple(facts[int(i)] for i in picked)
    return Family(people, facts)


# --------------------------------------------------------------------------
# Forward chaining
# --------------------------------------------------------------------------


class _Index:
    """Facts indexed by relation, by (relation, subject) and by (relation, object)."""

    def __init__(self, facts: Iterable[Fact] = ()) -> None:
        self.facts: set[Fact] = set()
        self.by_rel: dict[str, list[Fact]] = {}
        self.fwd: dict[tuple[str, str], set[str]] = {}
        self.bwd: dict[tuple[str, str], set[str]] = {}
        for f in facts:
            self.add(f)

    def add(self, f: Fact) -> bool:
        if f in self.facts:
            return False
        self.facts.add(f)
        self.by_rel.setdefault(f.relation, []).append(f)
        self.fwd.setdefault((f.relation, f.subject), set()).add(f.object)
        self.bwd.setdefault((f.relation, f.object), set()).add(f.subject)
        return True

    def match(self, atoms: Sequence[Atom], binding: dict[str, str]) -> Iterator[dict[str, str]]:
        """Every extension of ``binding`` under which all ``atoms`` are facts here."""
        if not atoms:
            yield binding
            return

        def bound(a: Atom) -> int:
            return (a.subject in binding) + (a.object in binding)

        pick = max(range(len(atoms)), key=lambda i: bound(atoms[i]))
        atom, rest = atoms[pick], [*atoms[:pick], *atoms[pick + 1 :]]
        s, o = binding.get(atom.subject), binding.get(atom.object)
        if s is not None and o is not None:
            if o in self.fwd.get((atom.relation, s), ()):
                yield from self.match(rest, binding)
        elif s is not None:
            for obj in list(self.fwd.get((atom.relation, s), ())):
                yield from self.match(rest, {**binding, atom.object: obj})
        elif o is not None:
            for subj in list(self.bwd.get((atom.relation, o), ())):
                yield from self.match(rest, {**binding, atom.subject: subj})
        else:
            for f in list(self.by_rel.get(atom.relation, ())):
                b = _bind(atom, f, binding)
                if b is not None:
                    yield from self.match(rest, b)


def _bind(atom: Atom, f: Fact, binding: dict[str, str]) -> dict[str, str] | None:
    if atom.relation != f.relation:
        return None
    out = dict(binding)
    for var, who in ((atom.subject, f.subject), (atom.object, f.object)):
        if out.setdefault(var, who) != who:
            return None
    return out


def _conclude(rule: Rule, binding: dict[str, str], genders: Mapping[str, str]) -> Fact | None:
    s, o = binding[rule.head.subject], binding[rule.head.object]
    if s == o:
        return None
    for var, gender in rule.guards:
        if genders[binding[var]] != gender:
            return None
    return Fact(rule.head.relation, s, o)


def _inputs(
    facts: Iterable[Fact] | Family, rules: Iterable[Rule], genders: Mapping[str, str] | None
) -> tuple[frozenset[Fact], tuple[Rule, ...], Mapping[str, str]]:
    if isinstance(facts, Family):
        genders = facts.genders if genders is None else genders
        facts = facts.facts
    if genders is None:
        raise UnlearnError("pass genders (person name -> 'female'/'male') or a Family")
    if isinstance(facts, Fact):
        raise UnlearnError("expected a collection of facts, got a single Fact")
    out = frozenset(facts)
    for f in out:
        if not isinstance(f, Fact):
            raise UnlearnError(f"expected Fact records, got {type(f).__name__}")
        for who in (f.subject, f.object):
            if who not in genders:
                raise UnlearnError(f"unknown person {who!r} in fact {f} (no gender known)")
    rules = tuple(rules)
    for r in rules:
        if not isinstance(r, Rule):
            raise UnlearnError(f"expected Rule records, got {type(r).__name__}")
    return out, rules, genders


def _closure(facts: frozenset[Fact], rules: tuple[Rule, ...], genders) -> _Index:
    index = _Index(facts)
    delta = list(facts)
    while delta:
        by_rel: dict[str, list[Fact]] = {}
        for f in delta:
            by_rel.setdefault(f.relation, []).append(f)
        new: list[Fact] = []
        for rule in rules:
            for i, atom in enumerate(rule.body):
                rest = [*rule.body[:i], *rule.body[i + 1 :]]
                for f in by_rel.get(atom.relation, ()):
                    start = _bind(atom, f, {})
                    if start is None:
                        continue
                    for b in index.match(rest, start):
                        head = _conclude(rule, b, genders)
                        if head is not None and head not in index.facts:
                            new.append(head)
        delta = [f for f in new if index.add(f)]
    return index


def closure(
    facts: Iterable[Fact] | Family,
    rules: Iterable[Rule] = RULES,
    *,
    genders: Mapping[str, str] | None = None,
) -> frozenset[Fact]:
    """Every fact derivable from ``facts`` by ``rules`` (forward chaining to a fixpoint).

    ``genders`` maps each person to ``"female"``/``"male"`` (taken from the family
    when ``facts`` is a :class:`Family`). The result contains ``facts``.
    """
    facts, rules, genders = _inputs(facts, rules, genders)
    return frozenset(_closure(facts, rules, genders).facts)


def _one_step(target: Fact, index: _Index, rules: tuple[Rule, ...], genders) -> list[tuple]:
    found: set[tuple[Fact, ...]] = set()
    for rule in rules:
        if rule.head.relation != target.relation:
            continue
        start = {rule.head.subject: target.subject, rule.head.object: target.object}
        for b in index.match(rule.body, start):
            if _conclude(rule, b, genders) != target:
                continue
            body = tuple(sorted({Fact(a.relation, b[a.subject], b[a.object]) for a in rule.body}))
            if target not in body:
                found.add(body)
    return sorted(found, key=lambda body: (len(body), body))


def derivations(
    target: Fact,
    facts: Iterable[Fact] | Family,
    rules: Iterable[Rule] = RULES,
    *,
    genders: Mapping[str, str] | None = None,
) -> tuple[frozenset[Fact], ...]:
    """The premise sets of every one-step derivation of ``target`` in the closed KB.

    Each set holds facts of ``closure(facts, rules)`` that, by one rule, give
    ``target``; sets that contain ``target`` itself are left out. Smallest first.
    :class:`UnlearnError` if ``target`` is not in the closure.
    """
    facts, rules, genders = _inputs(facts, rules, genders)
    _check_target(target)
    index = _closure(facts, rules, genders)
    if target not in index.facts:
        raise UnlearnError(f"fact {target} is not in the knowledge base or its closure")
    return tuple(frozenset(body) for body in _one_step(target, index, rules, genders))


def _check_target(target: object) -> None:
    if not isinstance(target, Fact):
        raise UnlearnError(f"the target must be a Fact, got {type(target).__name__}")


def is_derivable(
    target: Fact,
    remaining_facts: Iterable[Fact] | Family,
    rules: Iterable[Rule] = RULES,
    *,
    genders: Mapping[str, str] | None = None,
) -> bool:
    """Whether ``target`` can be re-derived from ``remaining_facts`` without itself.

    The closure is computed from ``remaining_facts`` with ``target`` left out, so a
    stored target counts only if the rules bring it back.
    """
    _check_target(target)
    facts, rules, genders = _inputs(remaining_facts, rules, genders)
    if target.subject not in genders or target.object not in genders:
        raise UnlearnError(f"unknown person in target {target}")
    return target in _closure(facts - {target}, rules, genders).facts


# --------------------------------------------------------------------------
# Minimal deep-unlearning sets
# --------------------------------------------------------------------------


class _Search:
    """One-step supports of facts in the closed KB, and derivability under removals."""

    def __init__(self, facts: frozenset[Fact], rules: tuple[Rule, ...], genders) -> None:
        self.base = facts
        self.rules = rules
        self.genders = genders
        self.index = _closure(facts, rules, genders)
        self._support: dict[Fact, list[tuple[Fact, ...]]] = {}

    def support(self, f: Fact) -> list[tuple[Fact, ...]]:
        if f not in self._support:
            self._support[f] = _one_step(f, self.index, self.rules, self.genders)
        return self._support[f]

    def relevant(self, target: Fact) -> list[Fact]:
        """Facts that can take part in some derivation of ``target`` (and it)."""
        seen, todo = {target}, [target]
        while todo:
            for body in self.support(todo.pop()):
                for p in body:
                    if p not in seen:
                        seen.add(p)
                        todo.append(p)
        return sorted(seen)

    def survives(self, target: Fact, relevant: list[Fact], removed: set[Fact]) -> bool:
        """Whether ``target`` is in the closure of the stored facts minus ``removed``."""
        have = {f for f in relevant if f in self.base and f not in removed}
        if target in have:
            return True
        open_ = [f for f in relevant if f not in have]
        changed = True
        while changed:
            changed = False
            still = []
            for f in open_:
                if any(all(p in have for p in body) for body in self.support(f)):
                    have.add(f)
                    changed = True
                else:
                    still.append(f)
            if target in have:
                return True
            open_ = still
        return False

    def run(self, target: Fact, relevant: list[Fact], rng: np.random.Generator) -> frozenset:
        """One greedy expansion followed by pruning (EDU-RELAT's search, one seed)."""
        chosen: set[Fact] = set()
        pending = {target}
        while pending:
            order = sorted(pending)
            f = order[int(rng.integers(len(order)))]
            pending.discard(f)
            chosen.add(f)
            for body in self.support(f):
                if not any(p in chosen or p in pending for p in body):
                    pending.add(body[int(rng.integers(len(body)))])
        kept = {f for f in chosen if f in self.base}
        while True:
            dropped = False
            order = sorted(kept)
            for i in rng.permutation(len(order)):
                f = order[int(i)]
                kept.discard(f)
                if self.survives(target, relevant, kept):
                    kept.add(f)
                else:
                    dropped = True
            if not dropped:
                return frozenset(kept)


def minimal_deep_unlearning_sets(
    target: Fact,
    facts: Iterable[Fact] | Family,
    rules: Iterable[Rule] = RULES,
    *,
    genders: Mapping[str, str] | None = None,
    seeds: int = 100,
    seed: int = 0,
) -> tuple[frozenset[Fact], ...]:
    """The distinct sets the randomized search finds over ``seeds`` runs, smallest first.

    Each run follows Wu et al. (2024): starting from the target, take a pending
    fact at random; for each of its derivations none of whose premises is already
    taken or pending, add one premise, chosen at random, to the pending facts;
    repeat until nothing is pending. Keep the stored facts among those taken, then
    prune: try removing each (in random order) and leave it out if the target stays
    underivable; repeat until a pass removes nothing. So the target is not in the
    closure of ``facts - M`` (checked again for every returned ``M`` by recomputing
    the closure), and putting back any one element of ``M`` other than the target
    makes it derivable again. Run ``i`` draws from ``numpy.random.default_rng([seed, i])``,
    so the first runs of a longer search are the runs of a shorter one.
    """
    _check_target(target)
    facts, rules, genders = _inputs(facts, rules, genders)
    seeds = _check_int(seeds, "seeds", 1, 100_000)
    seed = _check_int(seed, "seed", 0, 2**63 - 1)
    search = _Search(facts, rules, genders)
    if target not in search.index.facts:
        raise UnlearnError(f"fact {target} is not in the knowledge base or its closure")
    relevant = search.relevant(target)
    found: list[frozenset[Fact]] = []
    for i in range(seeds):
        m = search.run(target, relevant, np.random.default_rng([seed, i]))
        if m not in found:
            found.append(m)
    found.sort(key=lambda m: (len(m), sorted(m)))
    for m in found:
        if target in _closure(facts - m, rules, genders).facts:
            raise RuntimeError(f"internal error: {target} survives its unlearning set")
    return tuple(found)


def minimal_deep_unlearning_set(
    target: Fact,
    facts: Iterable[Fact] | Family,
    rules: Iterable[Rule] = RULES,
    *,
    genders: Mapping[str, str] | None = None,
    seeds: int = 100,
    seed: int = 0,
) -> frozenset[Fact]:
    """The smallest set of :func:`minimal_deep_unlearning_sets` (ties: first found order).

    Stored facts whose removal (with the target) leaves ``target`` underivable,
    none of which can be put back without the target becoming derivable again.
    For a stored target the set contains the target.
    """
    return minimal_deep_unlearning_sets(
        target, facts, rules, genders=genders, seeds=seeds, seed=seed
    )[0]


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def _fact_set(facts: Iterable[Fact], what: str) -> frozenset[Fact]:
    if isinstance(facts, Fact):
        raise UnlearnError(f"{what} must be a collection of facts, got a single Fact")
    out = frozenset(facts)
    for f in out:
        if not isinstance(f, Fact):
            raise UnlearnError(f"{what} must hold Fact records, got {type(f).__name__}")
    return out


def _minimal_sets(minimal_sets: Iterable[Iterable[Fact]]) -> list[frozenset[Fact]]:
    if isinstance(minimal_sets, Fact):
        raise UnlearnError("minimal_sets must be a collection of sets of facts")
    out = []
    for m in minimal_sets:
        if isinstance(m, Fact):
            raise UnlearnError("minimal_sets must be a collection of sets of facts, not facts")
        m = _fact_set(m, "a minimal set")
        if not m:
            raise UnlearnError("a minimal deep-unlearning set is empty")
        out.append(m)
    if not out:
        raise UnlearnError("no minimal deep-unlearning sets given")
    return out


def deep_unlearning_recall(
    removed: Iterable[Fact], minimal_sets: Iterable[Iterable[Fact]]
) -> float:
    """Recall of Wu et al. (2024): ``max over M of |M & removed| / |M|``.

    ``removed`` are the stored facts a method no longer knows; ``minimal_sets``
    the sets of :func:`minimal_deep_unlearning_sets` for one target.
    """
    u = _fact_set(removed, "removed")
    return max(len(m & u) / len(m) for m in _minimal_sets(minimal_sets))


def deep_unlearning_accuracy(
    removed: Iterable[Fact], minimal_set: Iterable[Fact], n_facts: int
) -> float:
    """Accuracy of Wu et al. (2024): ``1 - |removed - M| / (n_facts - |M|)``.

    The share of the stored facts outside ``M`` that the method kept; ``n_facts``
    is the number of stored facts (``removed`` and ``M`` are among them).
    """
    u = _fact_set(removed, "removed")
    m = _fact_set(minimal_set, "minimal_set")
    if not m:
        raise UnlearnError("a minimal deep-unlearning set is empty")
    n = _check_int(n_facts, "n_facts", 1, 10**9)
    if n <= len(m):
        raise UnlearnError(f"n_facts ({n}) must exceed the size of the minimal set ({len(m)})")
    extra = len(u - m)
    if extra > n - len(m):
        raise UnlearnError(f"removed holds more facts outside the set than n_facts ({n}) allows")
    return 1.0 - extra / (n - len(m))


def deep_unlearning_scores(
    removed: Iterable[Fact], minimal_sets: Iterable[Iterable[Fact]], n_facts: int
) -> tuple[float, float]:
    """``(recall, accuracy)`` as EDU-RELAT reports them: accuracy on the best-recall set."""
    u = _fact_set(removed, "removed")
    sets = _minimal_sets(minimal_sets)
    recalls = [len(m & u) / len(m) for m in sets]
    best = int(np.argmax(recalls))
    return recalls[best], deep_unlearning_accuracy(u, sets[best], n_facts)


def sample_targets(
    facts: Iterable[Fact] | Family, n_targets: int = N_TARGETS, seed: int = 0
) -> tuple[Fact, ...]:
    """``n_targets`` distinct stored facts drawn at random (EDU-RELAT samples 55)."""
    if isinstance(facts, Family):
        facts = facts.facts
    pool = sorted(_fact_set(facts, "facts"))
    n = _check_int(n_targets, "n_targets", 1, 10**9)
    if n > len(pool):
        raise UnlearnError(f"cannot draw {n} targets from {len(pool)} facts")
    rng = np.random.default_rng(_check_int(seed, "seed", 0, 2**63 - 1))
    return tuple(pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False))


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def _word(relation: str) -> str:
    return relation.replace("_", "-")


def _pronoun(gender: str) -> str:
    return "she" if gender == "female" else "he"


def fact_sentence(fact: Fact) -> str:
    """``"Y is X's mother."``"""
    return f"{fact.subject} is {fact.object}'s {_word(fact.relation)}."


@dataclass(frozen=True)
class KinshipQA:
    """Questions about one relation fact; ``key`` (the subject's name) is in ``answer``.

    ``question`` asks for the subject's name; when the object has several people
    in that relation, it names the subject's birth year (and birthplace, if the
    year is shared) so one answer fits. ``relation_question`` asks how the two are
    related (EDU-RELAT's question form), with ``relation_key`` the relation word.
    """

    fact: Fact
    question: str
    answer: str
    paraphrased_question: str
    key: str
    relation_question: str
    relation_key: str

    def __post_init__(self) -> None:
        if self.key.lower() not in self.answer.lower():
            raise UnlearnError(f"item {self.question!r}: the answer lacks the key {self.key!r}")


@dataclass(frozen=True)
class BiographyQA:
    """A question about one biography attribute (birth year, birthplace, occupation)."""

    person: str
    attribute: str
    question: str
    answer: str
    key: str


def _which(fact: Fact, family: Family, answers: Mapping[tuple[str, str], set[str]]) -> str:
    """An empty string if the subject is the only answer, else a clause singling it out."""
    rivals = [
        family.person(who)
        for who in sorted(answers[(fact.relation, fact.object)])
        if who != fact.subject
    ]
    if not rivals:
        return ""
    me = family.person(fact.subject)
    if all(r.birth_year != me.birth_year for r in rivals):
        return f"born in {me.birth_year}"
    if me.birthplace and all(
        (r.birth_year, r.birthplace) != (me.birth_year, me.birthplace) for r in rivals
    ):
        return f"born in {me.birth_year} in {me.birthplace}"
    raise UnlearnError(
        f"cannot tell {fact.subject!r} apart from another {_word(fact.relation)} of "
        f"{fact.object!r} by birth year and birthplace"
    )


def qa_items(
    family: Family,
    facts: Iterable[Fact] | None = None,
    rules: Iterable[Rule] = RULES,
) -> tuple[KinshipQA, ...]:
    """One :class:`KinshipQA` per fact (default: the family's stored facts), in order.

    Whether a question needs a disambiguating clause is judged on the closure of
    the family's facts, so derived facts (``facts`` may name them) get one too.
    """
    if not isinstance(family, Family):
        raise UnlearnError(f"expected a Family, got {type(family).__name__}")
    truth = closure(family, rules)
    answers: dict[tuple[str, str], set[str]] = {}
    for f in truth:
        answers.setdefault((f.relation, f.object), set()).add(f.subject)
    chosen = family.facts if facts is None else sorted(_fact_set(facts, "facts"))
    out = []
    for f in chosen:
        if f not in truth:
            raise UnlearnError(f"fact {f} is not in the family's knowledge base or its closure")
        word, s, o = _word(f.relation), f.subject, f.object
        which = _which(f, family, answers)
        if which:
            question = f"Which {word} of {o} was {which}?"
            answer = f"The {word} of {o} {which} is {s}."
            pronoun = "her" if family.person(s).gender == "female" else "his"
            paraphrase = f"{o} has a {word} {which}. What is {pronoun} name?"
        else:
            question = f"Who is the {word} of {o}?"
            answer = f"The {word} of {o} is {s}."
            paraphrase = f"Who is {o}'s {word}?"
        out.append(
            KinshipQA(
                fact=f,
                question=question,
                answer=answer,
                paraphrased_question=paraphrase,
                key=s,
                relation_question=f"How is {s} related to {o}?",
                relation_key=word,
            )
        )
    return tuple(out)


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def biography(person: Person) -> str:
    """A short text: birth year, birthplace, occupation (no family relations)."""
    if not isinstance(person, Person):
        raise UnlearnError(f"expected a Person, got {type(person).__name__}")
    text = f"{person.name} was born in {person.birth_year}"
    text += f" in {person.birthplace}." if person.birthplace else "."
    if person.occupation:
        text += f" {_pronoun(person.gender).capitalize()} worked as "
        text += f"{_article(person.occupation)}."
    return text


def biography_items(family: Family) -> tuple[BiographyQA, ...]:
    """Up to three :class:`BiographyQA` per person (EDU-RELAT has three per person)."""
    if not isinstance(family, Family):
        raise UnlearnError(f"expected a Family, got {type(family).__name__}")
    out = []
    for p in family.people:
        n = p.name
        out.append(
            BiographyQA(
                n,
                "birth_year",
                f"In what year was {n} born?",
                f"{n} was born in {p.birth_year}.",
                str(p.birth_year),
            )
        )
        if p.birthplace:
            out.append(
                BiographyQA(
                    n,
                    "birthplace",
                    f"Where was {n} born?",
                    f"{n} was born in {p.birthplace}.",
                    p.birthplace,
                )
            )
        if p.occupation:
            out.append(
                BiographyQA(
                    n,
                    "occupation",
                    f"What did {n} work as?",
                    f"{n} worked as {_article(p.occupation)}.",
                    p.occupation,
                )
            )
    return tuple(out)


def rederivation_prompt(
    target: Fact,
    premises: Iterable[Fact],
    *,
    ask: str = "relation",
    genders: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """A prompt that states ``premises`` and asks for ``target``; returns ``(prompt, key)``.

    ``ask="relation"`` asks how the target's subject is related to its object (key:
    the relation word, e.g. ``"grandmother"``); ``ask="name"`` asks who is the
    relation of the object (key: the subject's name). With ``genders`` the prompt
    also states the gender of everyone named, which some rules need.
    """
    _check_target(target)
    premises = sorted(_fact_set(premises, "premises"))
    if not premises:
        raise UnlearnError("a re-derivation prompt needs at least one premise")
    if target in premises:
        raise UnlearnError(f"the premises state the target {target} itself")
    lines = [fact_sentence(p) for p in premises]
    if genders is not None:
        named = sorted({w for f in (*premises, target) for w in (f.subject, f.object)})
        for who in named:
            if who not in genders:
                raise UnlearnError(f"unknown person {who!r}: no gender known")
            lines.append(f"{who} is {genders[who]}.")
    word = _word(target.relation)
    if ask == "relation":
        question, key = f"How is {target.subject} related to {target.object}?", word
    elif ask == "name":
        question, key = f"Who is the {word} of {target.object}?", target.subject
    else:
        raise UnlearnError(f"ask must be 'relation' or 'name', got {ask!r}")
    return "Facts: " + " ".join(lines) + f"\nQuestion: {question}\nAnswer:", key
