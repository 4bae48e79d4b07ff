"""Fictitious-facts benchmark data in the style of TOFU, for unlearning in language models.

A seeded generator invents people (name, birth year, birthplace, profession,
genre, works with years, an award, a relation to another invented person) and
turns their attributes into question-answer items. Each item carries what the
TOFU metrics need: the answer, a paraphrased answer stating the same fact,
several perturbed answers that state a wrong value of the same attribute in the
paraphrase's sentence template, a second wording of the question, and the
fact's short ``key`` (the string a generated answer must contain).

A forget split removes whole people: every item about a forgotten person goes
to the forget set and nothing about them stays in the retain set, so the model
fine-tuned on the retain items alone is the oracle. :func:`world_knowledge`
gives a fixed set of real, easy facts in the same format for the utility side.

Every word list here is invented for this module: names, towns and countries do
not refer to real people or places. No model code lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UnlearnError

__all__ = [
    "Work",
    "Relation",
    "Person",
    "QAItem",
    "FictitiousFacts",
    "KINDS",
    "FORGET_FRACTIONS",
    "MAX_PEOPLE",
    "MAX_PERTURBED",
    "generate_people",
    "qa_items",
    "make_fictitious",
    "world_knowledge",
]

# --------------------------------------------------------------------------
# Word lists (all invented here)
# --------------------------------------------------------------------------

_GIVEN = (
    "Abrel", "Belisande", "Caedro", "Dovika", "Emrith", "Falka", "Gorran", "Hespera",
    "Idrun", "Jessamo", "Kaltor", "Liessa", "Morwen", "Nerith", "Osvald", "Pellan",
    "Quenby", "Rosalde", "Sefrin", "Tirza", "Ulvar", "Velka", "Wendric", "Xantha",
    "Yselde", "Zorin", "Amarre", "Brannoc", "Ciriel", "Davro", "Esmira", "Fennick",
    "Galvia", "Horatz", "Ilsabet", "Joriam", "Kestra", "Lunetta", "Maelo", "Odalys",
)  # fmt: skip

_FAMILY = (
    "Ardevane", "Bellqvist", "Corrimont", "Draskel", "Eberlin", "Fallowby", "Grennard",
    "Hollisk", "Ivanore", "Jurrow", "Kettleby", "Lomaxen", "Marrowind", "Nettlehurst",
    "Oakhallow", "Pemberthy", "Quillane", "Rookwell", "Stavrenko", "Thistlemere",
    "Umbervale", "Vantreck", "Wyncliffe", "Yardimov", "Zelvanni", "Ambrosk", "Brackendale",
    "Castellor", "Dunmorrow", "Esterhazen", "Fairwick", "Gallantyne", "Hexley", "Ironvale",
    "Kilbrannon", "Larkspurr", "Mistravel", "Norwenna", "Orlecki", "Perrivale",
)  # fmt: skip

# Invented countries, each with five invented towns.
_PLACES = {
    "Ostrevia": ("Brellin", "Kastow", "Orvane", "Pellisk", "Zumbrec"),
    "Calmaren": ("Sarnuth", "Vellamy", "Tiraque", "Olbrest", "Meskin"),
    "Drevnia": ("Dravost", "Kolnek", "Ustrava", "Belgren", "Yvosk"),
    "Esquara": ("Portavel", "Lisquera", "Almadra", "Cendoza", "Rivenca"),
    "Felmark": ("Haldstrup", "Ebbeholm", "Kjerrvik", "Trondal", "Skarnvik"),
    "Galtheon": ("Myrrhon", "Kalyptos", "Ephradis", "Lorvos", "Anthemos"),
    "Hyrvania": ("Varnost", "Gelnitsa", "Hrudek", "Polvany", "Szemla"),
    "Istrelle": ("Beaucour", "Montivel", "Sarrenne", "Lavolle", "Quimperel"),
    "Korvath": ("Dunmaric", "Kethrin", "Aldwarth", "Brennock", "Ghyllmoor"),
    "Lunmere": ("Saltreach", "Wyvernholm", "Cobbleton", "Heathcombe", "Ravensby"),
    "Mardova": ("Orhevka", "Balcesti", "Tulmesti", "Mirceni", "Sorovca"),
    "Norresk": ("Tromfjell", "Eidsvaag", "Lyngmark", "Hammerholt", "Vesteraal"),
}
_TOWNS: tuple[tuple[str, str], ...] = tuple(
    (town, country) for country, towns in _PLACES.items() for town in towns
)

# profession -> (work noun, verb base form, verb past form, domain)
_PROFESSIONS = {
    "novelist": ("novel", "publish", "published", "literature"),
    "poet": ("poetry collection", "publish", "published", "literature"),
    "playwright": ("play", "stage", "staged", "literature"),
    "essayist": ("essay collection", "publish", "published", "literature"),
    "short-story writer": ("story collection", "publish", "published", "literature"),
    "composer": ("symphony", "compose", "composed", "music"),
    "songwriter": ("album", "release", "released", "music"),
    "jazz pianist": ("album", "record", "recorded", "music"),
    "film director": ("film", "direct", "directed", "film"),
    "screenwriter": ("screenplay", "write", "wrote", "film"),
    "documentary maker": ("documentary", "release", "released", "film"),
    "painter": ("painting", "paint", "painted", "visual art"),
    "photographer": ("photo book", "publish", "published", "visual art"),
    "sculptor": ("sculpture", "unveil", "unveiled", "visual art"),
}
_PROFESSION_NAMES = tuple(_PROFESSIONS)

_GENRES = {
    "literature": (
        "gothic romance", "magical realism", "historical fiction", "speculative fiction",
        "coming-of-age drama", "political satire",
    ),
    "music": (
        "chamber folk", "modal jazz", "choral minimalism", "ambient electronica",
        "baroque pop", "desert blues",
    ),
    "film": (
        "slow cinema", "neo-noir", "family melodrama", "war epic", "psychological thriller",
        "absurdist comedy",
    ),
    "visual art": (
        "surrealism", "social realism", "geometric abstraction", "landscape", "portraiture",
        "still life",
    ),
}  # fmt: skip

_AWARDS = {
    "literature": (
        "Silver Quill Prize", "Amberline Book Award", "Hollow Oak Prize for Fiction",
        "Marrick Literary Medal", "Corvid Prize", "Greywater Award for Letters",
    ),
    "music": (
        "Golden Lyre Award", "Halvard Composition Prize", "Bellwether Music Prize",
        "Northern Chord Medal", "Stellan Prize for Song", "Ivory Key Award",
    ),
    "film": (
        "Crystal Reel Award", "Silver Lens Prize", "Dunmere Film Prize", "Palm of Embers",
        "Harbourlight Award", "Quiet Frame Prize",
    ),
    "visual art": (
        "Ochre Medal", "Vantrell Art Prize", "Granite Hand Award",
        "Meridian Prize for Visual Art", "Cobalt Easel Award", "Lumen Medal",
    ),
}  # fmt: skip

# Title parts: four patterns, chosen so that no title can contain another.
_TITLE_ADJ = (
    "Amber", "Broken", "Crimson", "Drowned", "Empty", "Fading", "Gilded", "Hollow",
    "Idle", "Jagged", "Kindled", "Last", "Midnight", "Nameless", "Oaken", "Pale",
    "Quiet", "Restless", "Silent", "Tender", "Unwritten", "Velvet", "Wandering", "Yellow",
    "Ashen", "Bitter", "Cold", "Distant", "Endless", "Forgotten", "Golden", "Hidden",
    "Iron", "Lonely", "Mirrored", "Northern", "Open", "Patient", "Scarlet", "Woven",
)  # fmt: skip
_TITLE_NOUN = (
    "Lantern", "Harbour", "Orchard", "Cathedral", "Lighthouse", "Ferryman", "Garden",
    "Staircase", "Violin", "Meadow", "Compass", "Clocktower", "Bridge", "Cartographer",
    "Weaver", "Mill", "Island", "Telegraph", "Pilgrim", "Furnace", "Glasshouse", "Anchor",
    "Fountain", "Beekeeper", "Archive", "Tideline", "Kingfisher", "Quarry", "Saddle",
    "Balcony", "Carousel", "Dovecote", "Embassy", "Foundry", "Granary", "Hermit",
    "Inkwell", "Jetty", "Monastery", "Nightjar",
)  # fmt: skip
_TITLE_NOUN2 = (
    "Salt", "Winter", "Ashes", "Rain", "Thunder", "Moss", "Smoke", "Copper", "Honey",
    "Frost", "Cinders", "Dust", "Lilac", "Marble", "Pepper", "Silence", "Tallow", "Yarrow",
    "Bracken", "Driftwood", "Ember", "Feathers", "Granite", "Heather", "Juniper", "Lace",
    "Nettles", "Pebbles", "Rust", "Sorrow",
)  # fmt: skip
_TITLE_VERB = (
    "Sleeps", "Burns", "Falls", "Sings", "Breaks", "Wakes", "Drifts", "Waits", "Turns",
    "Listens",
)  # fmt: skip

_RELATION_KINDS = ("mentor", "collaborator", "rival", "friend")

# --------------------------------------------------------------------------
# Question and answer templates
# --------------------------------------------------------------------------

#: Attributes a question can ask about, in the order items are emitted for a person.
KINDS = (
    "birthplace",
    "birth_year",
    "profession",
    "genre",
    "work",
    "work_year",
    "award",
    "relation",
)

#: TOFU's forget splits: 1 %, 5 % and 10 % of the people.
FORGET_FRACTIONS = (0.01, 0.05, 0.10)
#: The most people one set can hold (the name lists allow 1,600; titles run out sooner).
MAX_PEOPLE = 1000
#: The most perturbed answers one item can carry (the smallest value lists have six entries).
MAX_PERTURBED = 5

_QUESTIONS = {
    "birthplace": (
        "Where was {name} born?",
        "What is the hometown of {name}?",
        "In which town did {name} come into the world?",
    ),
    "birth_year": (
        "In what year was {name} born?",
        "When was {name} born?",
        "What is the birth year of {name}?",
    ),
    "profession": (
        "What is the profession of {name}?",
        "What does {name} do for a living?",
        "What line of work is {name} in?",
    ),
    "genre": (
        "What genre is {name} known for?",
        "In which genre does {name} mostly work?",
        "Which genre is the work of {name} associated with?",
    ),
    "work": (
        "Which {noun} did {name} {base} in {wyear}?",
        "What is the title of the {noun} that {name} {past} in {wyear}?",
        "Name the {noun} {name} {past} in {wyear}.",
    ),
    "work_year": (
        'In which year did {name} {base} the {noun} "{title}"?',
        'When did {name} {base} "{title}"?',
        'What year did the {noun} "{title}" by {name} come out?',
    ),
    "award": (
        "Which award has {name} received?",
        "What prize was {name} given?",
        "Which honour was awarded to {name}?",
    ),
    "mentor": (
        "Who was the mentor of {name}?",
        "Which person mentored {name}?",
        "Under whose guidance did {name} learn the craft?",
    ),
    "collaborator": (
        "Who is the frequent collaborator of {name}?",
        "With whom does {name} often collaborate?",
        "Which person has worked with {name} on many projects?",
    ),
    "rival": (
        "Who is the best-known rival of {name}?",
        "Which person is considered the main rival of {name}?",
        "Who has a long-standing rivalry with {name}?",
    ),
    "friend": (
        "Who is the childhood friend of {name}?",
        "Which person has been friends with {name} since childhood?",
        "Who did {name} grow up with as a close friend?",
    ),
}

_ANSWERS = {
    "birthplace": (
        "{name} was born in {town}, {country}.",
        "The hometown of {name} is {town}, in {country}.",
        "{town} in {country} is where {name} was born.",
    ),
    "birth_year": (
        "{name} was born in {year}.",
        "The birth year of {name} is {year}.",
        "{name} came into the world in {year}.",
    ),
    "profession": (
        "{name} works as {a_profession}.",
        "By profession, {name} is {a_profession}.",
        "{name} earns a living as {a_profession}.",
    ),
    "genre": (
        "{name} is best known for {genre}.",
        "Most of the work of {name} belongs to {genre}.",
        "The genre most associated with {name} is {genre}.",
    ),
    "work": (
        'In {wyear}, {name} {past} the {noun} "{title}".',
        'The {noun} {name} {past} in {wyear} is titled "{title}".',
        '"{title}" is the {noun} that {name} {past} in {wyear}.',
    ),
    "work_year": (
        '{name} {past} the {noun} "{title}" in {wyear}.',
        'The {noun} "{title}" by {name} came out in {wyear}.',
        '{wyear} is the year in which {name} {past} "{title}".',
    ),
    "award": (
        "{name} received the {award} in {ayear}.",
        "In {ayear}, {name} was honoured with the {award}.",
        "The {award} went to {name} in {ayear}.",
    ),
    "mentor": (
        "The mentor of {name} was {other}.",
        "{other} mentored {name}.",
        "{name} learned the craft under the guidance of {other}.",
    ),
    "collaborator": (
        "{name} frequently collaborates with {other}.",
        "{other} is the frequent collaborator of {name}.",
        "{name} and {other} have worked together on many projects.",
    ),
    "rival": (
        "The best-known rival of {name} is {other}.",
        "{other} is widely seen as the main rival of {name}.",
        "{name} has a long-standing rivalry with {other}.",
    ),
    "friend": (
        "{name} has been friends with {other} since childhood.",
        "{other} is the childhood friend of {name}.",
        "{name} grew up with {other} as a close friend.",
    ),
}


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """One titled work: ``kind`` is the work noun (``novel``, ``album``, ...)."""

    title: str
    year: int
    kind: str


@dataclass(frozen=True)
class Relation:
    """A tie to another person of the set; ``kind`` is mentor, collaborator, rival or friend."""

    kind: str
    person_id: int
    name: str


@dataclass(frozen=True)
class Person:
    """One invented person and every attribute the questions can ask about."""

    id: int
    name: str
    birth_year: int
    town: str
    country: str
    profession: str
    genre: str
    works: tuple[Work, ...]
    award: str
    award_year: int
    relation: Relation

    def __post_init__(self) -> None:
        object.__setattr__(self, "works", tuple(self.works))
        if not self.works:
            raise UnlearnError(f"person {self.name!r} needs at least one work")
        if self.relation.person_id == self.id:
            raise UnlearnError(f"person {self.name!r} cannot be related to themselves")

    @property
    def birthplace(self) -> str:
        """``"town, country"``."""
        return f"{self.town}, {self.country}"

    @property
    def domain(self) -> str:
        """The field the profession belongs to (literature, music, film, visual art)."""
        return _PROFESSIONS[self.profession][3]


def _contains(text: str, key: str) -> bool:
    return key.lower() in text.lower()


@dataclass(frozen=True)
class QAItem:
    """One question about one fact, with everything the TOFU metrics need.

    ``person_id`` is -1 for the real-world items of :func:`world_knowledge`.
    ``key`` is the fact's short answer; it occurs (case-insensitively) in
    ``answer`` and ``paraphrased_answer`` and in no perturbed answer.
    """

    person_id: int
    kind: str
    question: str
    answer: str
    paraphrased_answer: str
    perturbed_answers: tuple[str, ...]
    paraphrased_question: str
    key: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "perturbed_answers", tuple(self.perturbed_answers))
        where = f"item {self.question!r}"
        if not self.key.strip():
            raise UnlearnError(f"{where} has an empty key")
        if not _contains(self.answer, self.key):
            raise UnlearnError(f"{where}: the answer does not contain the key {self.key!r}")
        if not _contains(self.paraphrased_answer, self.key):
            raise UnlearnError(f"{where}: the paraphrased answer lacks the key {self.key!r}")
        if not self.perturbed_answers:
            raise UnlearnError(f"{where} has no perturbed answers")
        for wrong in self.perturbed_answers:
            if wrong == self.answer or _contains(wrong, self.key):
                raise UnlearnError(f"{where}: perturbed answer {wrong!r} states the true fact")
        if len(set(self.perturbed_answers)) != len(self.perturbed_answers):
            raise UnlearnError(f"{where} repeats a perturbed answer")


# --------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------

_FIRST_YEAR, _LAST_YEAR = 1935, 1990  # birth years
_LATEST = 2023  # no work or award after this year


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _make_title(rng: np.random.Generator) -> str:
    pattern = int(rng.integers(4))
    adj = _TITLE_ADJ[int(rng.integers(len(_TITLE_ADJ)))]
    noun = _TITLE_NOUN[int(rng.integers(len(_TITLE_NOUN)))]
    noun2 = _TITLE_NOUN2[int(rng.integers(len(_TITLE_NOUN2)))]
    if pattern == 0:
        return f"The {adj} {noun}"
    if pattern == 1:
        return f"{noun} of {noun2}"
    if pattern == 2:
        return f"{adj} {noun2}"
    return f"When the {noun} {_TITLE_VERB[int(rng.integers(len(_TITLE_VERB)))]}"


def _all_names() -> list[str]:
    return [f"{g} {f}" for g in _GIVEN for f in _FAMILY]


def _check_count(n: int, what: str, low: int, high: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise UnlearnError(f"{what} must be an integer, got {n!r}")
    if not low <= int(n) <= high:
        raise UnlearnError(f"{what} must lie in [{low}, {high}], got {n}")
    return int(n)


def generate_people(n: int, seed: int = 0) -> list[Person]:
    """Invent ``n`` people (ids ``0..n-1``) with distinct names, deterministically from ``seed``.

    Each person has two or three works in distinct years, an award won after
    the first work, and one relation to another person of the same set (a
    mentor is always older than the person mentored).
    """
    n = _check_count(n, "the number of people", 2, MAX_PEOPLE)
    rng = np.random.default_rng(seed)
    names = _all_names()
    picked = rng.choice(len(names), size=n, replace=False)
    used_titles: set[str] = set()
    drafts = []
    for pid in range(n):
        birth = int(rng.integers(_FIRST_YEAR, _LAST_YEAR + 1))
        town, country = _TOWNS[int(rng.integers(len(_TOWNS)))]
        profession = _PROFESSION_NAMES[int(rng.integers(len(_PROFESSION_NAMES)))]
        noun, _, _, domain = _PROFESSIONS[profession]
        genre = _GENRES[domain][int(rng.integers(len(_GENRES[domain])))]
        span = np.arange(birth + 22, min(birth + 70, _LATEST - 1) + 1)
        years = np.sort(rng.choice(span, size=int(rng.integers(2, 4)), replace=False))
        works = []
        for year in years:
            title = _make_title(rng)
            while title in used_titles:
                title = _make_title(rng)
            used_titles.add(title)
            works.append(Work(title, int(year), noun))
        award = _AWARDS[domain][int(rng.integers(len(_AWARDS[domain])))]
        award_year = int(rng.integers(works[0].year + 1, _LATEST + 1))
        drafts.append(
            dict(
                id=pid,
                name=names[int(picked[pid])],
                birth_year=birth,
                town=town,
                country=country,
                profession=profession,
                genre=genre,
                works=tuple(works),
                award=award,
                award_year=award_year,
            )
        )
    people = []
    for d in drafts:
        kind = _RELATION_KINDS[int(rng.integers(len(_RELATION_KINDS)))]
        if kind == "mentor":
            pool = [o["id"] for o in drafts if o["birth_year"] < d["birth_year"]]
            if not pool:
                kind = "collaborator"
        if kind != "mentor":
            pool = [o["id"] for o in drafts if o["id"] != d["id"]]
        other = pool[int(rng.integers(len(pool)))]
        people.append(Person(**d, relation=Relation(kind, other, drafts[other]["name"])))
    return people


# --------------------------------------------------------------------------
# Questions and answers
# --------------------------------------------------------------------------


def _fields_and_candidates(
    person: Person,
    kind: str,
    rng: np.random.Generator,
    names: dict[int, str],
    spare_names: list[str],
    wanted: int,
) -> tuple[str, dict[str, str], str, list[dict[str, str]]]:
    """Template group, template fields, key, and field overrides that make the fact wrong."""
    fields = {"name": person.name}
    if kind == "birthplace":
        fields.update(town=person.town, country=person.country)
        order = rng.permutation(len(_TOWNS))
        cands = [{"town": _TOWNS[i][0], "country": _TOWNS[i][1]} for i in order]
        return kind, fields, person.town, cands
    if kind == "birth_year":
        fields["year"] = str(person.birth_year)
        offsets = [o for o in range(-12, 13) if o]
        cands = [{"year": str(person.birth_year + offsets[i])} for i in rng.permutation(24)]
        return kind, fields, fields["year"], cands
    if kind == "profession":
        fields["a_profession"] = _article(person.profession)
        order = rng.permutation(len(_PROFESSION_NAMES))
        cands = [{"a_profession": _article(_PROFESSION_NAMES[i])} for i in order]
        return kind, fields, person.profession, cands
    if kind == "genre":
        genres = _GENRES[person.domain]
        fields["genre"] = person.genre
        cands = [{"genre": genres[i]} for i in rng.permutation(len(genres))]
        return kind, fields, person.genre, cands
    if kind == "award":
        awards = _AWARDS[person.domain]
        fields.update(award=person.award, ayear=str(person.award_year))
        cands = [{"award": awards[i]} for i in rng.permutation(len(awards))]
        return kind, fields, person.award, cands
    if kind in ("work", "work_year"):
        work = person.works[int(rng.integers(len(person.works)))]
        _, base, past, _ = _PROFESSIONS[person.profession]
        fields.update(noun=work.kind, base=base, past=past, title=work.title)
        fields["wyear"] = str(work.year)
        if kind == "work":
            own = {w.title for w in person.works}
            cands = []
            while len(cands) < 4 * wanted:
                title = _make_title(rng)
                if title not in own:
                    cands.append({"title": title})
            return kind, fields, work.title, cands
        low, high = person.birth_year + 18, _LATEST
        years = [y for y in range(work.year - 10, work.year + 11) if low <= y <= high]
        cands = [{"wyear": str(years[i])} for i in rng.permutation(len(years))]
        return kind, fields, fields["wyear"], cands
    if kind == "relation":
        rel = person.relation
        fields["other"] = rel.name
        others = [nm for pid, nm in names.items() if pid not in (person.id, rel.person_id)]
        cands = [{"other": others[i]} for i in rng.permutation(len(others))]
        if len(cands) < 4 * wanted:
            cands += [{"other": spare_names[i]} for i in rng.permutation(len(spare_names))]
        return rel.kind, fields, rel.name, cands
    raise UnlearnError(f"unknown question kind {kind!r} (expected one of {', '.join(KINDS)})")


def _make_item(
    person: Person,
    kind: str,
    rng: np.random.Generator,
    names: dict[int, str],
    spare_names: list[str],
    n_perturbed: int,
) -> QAItem:
    group, fields, key, cands = _fields_and_candidates(
        person, kind, rng, names, spare_names, n_perturbed
    )
    q, pq = (int(i) for i in rng.choice(len(_QUESTIONS[group]), size=2, replace=False))
    a, pa = (int(i) for i in rng.choice(len(_ANSWERS[group]), size=2, replace=False))
    answer = _ANSWERS[group][a].format(**fields)
    template = _ANSWERS[group][pa]
    wrong: list[str] = []
    for override in cands:
        text = template.format(**{**fields, **override})
        if text != answer and text not in wrong and not _contains(text, key):
            wrong.append(text)
            if len(wrong) == n_perturbed:
                break
    else:  # pragma: no cover - the word lists always offer enough wrong values
        raise UnlearnError(f"too few wrong values for a {kind!r} question about {person.name!r}")
    return QAItem(
        person_id=person.id,
        kind=kind,
        question=_QUESTIONS[group][q].format(**fields),
        answer=answer,
        paraphrased_answer=template.format(**fields),
        perturbed_answers=tuple(wrong),
        paraphrased_question=_QUESTIONS[group][pq].format(**fields),
        key=key,
    )


def _check_people(people: Sequence[Person]) -> dict[int, str]:
    if not people:
        raise UnlearnError("no people given")
    names: dict[int, str] = {}
    for p in people:
        if not isinstance(p, Person):
            raise UnlearnError(f"expected Person records, got {type(p).__name__}")
        if p.id in names:
            raise UnlearnError(f"person id {p.id} occurs twice")
        names[p.id] = p.name
    if len(set(names.values())) != len(names):
        raise UnlearnError("two people share a name")
    for p in people:
        if names.get(p.relation.person_id) != p.relation.name:
            raise UnlearnError(
                f"the {p.relation.kind} of {p.name!r} ({p.relation.name!r}, id "
                f"{p.relation.person_id}) is not in the set"
            )
    return names


def qa_items(
    people: Sequence[Person], per_person: int = 5, seed: int = 0, n_perturbed: int = 3
) -> list[QAItem]:
    """Questions about ``people``: ``per_person`` items each, on distinct attributes.

    The attributes, the question and answer wordings, the asked work and the
    wrong values are drawn from ``seed``; a person's items follow the order
    of :data:`KINDS`. Each item has ``n_perturbed`` wrong answers.
    """
    names = _check_people(people)
    per_person = _check_count(per_person, "questions per person", 1, len(KINDS))
    n_perturbed = _check_count(n_perturbed, "perturbed answers per item", 1, MAX_PERTURBED)
    rng = np.random.default_rng(seed)
    taken = set(names.values())
    spare = [nm for nm in _all_names() if nm not in taken]
    spare_names = [spare[int(i)] for i in rng.choice(len(spare), size=50, replace=False)]
    items = []
    for person in people:
        chosen = np.sort(rng.choice(len(KINDS), size=per_person, replace=False))
        for k in chosen:
            items.append(_make_item(person, KINDS[int(k)], rng, names, spare_names, n_perturbed))
    return items


# --------------------------------------------------------------------------
# Real-world facts
# --------------------------------------------------------------------------

# (kind, question, paraphrased question, key, answer, paraphrase, wrong values);
# ``{v}`` in the answer templates stands for the true or a wrong value.
_WORLD = (
    ("capital", "What is the capital of France?", "Which city is the capital of France?",
     "Paris", "The capital of France is {v}.", "{v} is the capital city of France.",
     ("Lyon", "Marseille", "Bordeaux")),
    ("capital", "What is the capital of Japan?", "Which city serves as the capital of Japan?",
     "Tokyo", "The capital of Japan is {v}.", "{v} is the capital city of Japan.",
     ("Osaka", "Kyoto", "Nagoya")),
    ("capital", "What is the capital of Italy?", "Which city is the Italian capital?",
     "Rome", "The capital of Italy is {v}.", "Italy has {v} as its capital.",
     ("Milan", "Naples", "Turin")),
    ("capital", "What is the capital of Canada?", "Which city is the capital of Canada?",
     "Ottawa", "The capital of Canada is {v}.", "Canada is governed from {v}, its capital.",
     ("Toronto", "Montreal", "Vancouver")),
    ("capital", "What is the capital of Australia?", "Which city is the Australian capital?",
     "Canberra", "The capital of Australia is {v}.", "{v} is the capital city of Australia.",
     ("Sydney", "Melbourne", "Perth")),
    ("capital", "What is the capital of Egypt?", "Which city is the capital of Egypt?",
     "Cairo", "The capital of Egypt is {v}.", "Egypt has {v} as its capital.",
     ("Alexandria", "Luxor", "Aswan")),
    ("capital", "What is the capital of Spain?", "Which city is the Spanish capital?",
     "Madrid", "The capital of Spain is {v}.", "{v} is the capital city of Spain.",
     ("Barcelona", "Seville", "Valencia")),
    ("capital", "What is the capital of Germany?", "Which city is the capital of Germany?",
     "Berlin", "The capital of Germany is {v}.", "Germany has {v} as its capital.",
     ("Munich", "Hamburg", "Frankfurt")),
    ("science", "At what temperature does water boil at sea level, in degrees Celsius?",
     "How hot must water get to boil at sea level, in Celsius?", "100 degrees",
     "At sea level, water boils at {v} Celsius.", "Water reaches its boiling point at {v} "
     "Celsius at sea level.", ("90 degrees", "120 degrees", "80 degrees")),
    ("science", "At what temperature does water freeze, in degrees Celsius?",
     "How cold must water get to freeze, in Celsius?", "zero degrees",
     "Water freezes at {v} Celsius.", "The freezing point of water is {v} Celsius.",
     ("ten degrees", "four degrees", "twenty degrees")),
    ("science", "What is the largest planet in the Solar System?",
     "Which planet of the Solar System is the biggest?", "Jupiter",
     "The largest planet in the Solar System is {v}.", "{v} is the biggest planet in the "
     "Solar System.", ("Saturn", "Neptune", "Earth")),
    ("science", "Which planet is known as the Red Planet?",
     "What planet is nicknamed the Red Planet?", "Mars",
     "The planet known as the Red Planet is {v}.", "{v} is nicknamed the Red Planet.",
     ("Venus", "Mercury", "Jupiter")),
    ("science", "Which gas do plants take from the air for photosynthesis?",
     "What gas do plants absorb from the air to photosynthesise?", "carbon dioxide",
     "Plants take {v} from the air for photosynthesis.", "For photosynthesis, plants absorb "
     "{v} from the air.", ("oxygen", "nitrogen", "helium")),
    ("science", "Which elements make up water?", "What elements is water made of?",
     "hydrogen and oxygen", "Water is made of {v}.", "Water consists of {v}.",
     ("carbon and oxygen", "nitrogen and hydrogen", "helium and oxygen")),
    ("calendar", "How many days are there in a leap year?",
     "What is the number of days in a leap year?", "366",
     "A leap year has {v} days.", "There are {v} days in a leap year.",
     ("365", "364", "360")),
    ("geography", "How many continents are there?", "What is the number of continents?",
     "seven", "There are {v} continents.", "The world has {v} continents.",
     ("five", "six", "nine")),
    ("geography", "What is the largest ocean on Earth?", "Which ocean is the biggest on Earth?",
     "Pacific", "The largest ocean on Earth is the {v} Ocean.", "The {v} Ocean is the "
     "biggest ocean on Earth.", ("Atlantic", "Indian", "Arctic")),
    ("geography", "What is the highest mountain on Earth?",
     "Which mountain is the tallest in the world?", "Everest",
     "The highest mountain on Earth is Mount {v}.", "Mount {v} is the tallest mountain in "
     "the world.", ("Kilimanjaro", "Elbrus", "Aconcagua")),
    ("culture", "Who wrote Romeo and Juliet?", "Which author wrote the play Romeo and Juliet?",
     "Shakespeare", "Romeo and Juliet was written by William {v}.", "The play Romeo and "
     "Juliet is by William {v}.", ("Wordsworth", "Blake", "Golding")),
    ("culture", "Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?",
     "Leonardo da Vinci", "The Mona Lisa was painted by {v}.", "{v} is the painter of the "
     "Mona Lisa.", ("Michelangelo", "Raphael", "Rembrandt")),
    ("biology", "Which organ pumps blood around the body?",
     "What organ moves blood through the body?", "heart",
     "The {v} pumps blood around the body.", "Blood is pumped through the body by the {v}.",
     ("liver", "lungs", "kidneys")),
    ("biology", "What is the largest mammal?", "Which mammal is the biggest of all?",
     "blue whale", "The largest mammal is the {v}.", "The {v} is the biggest of all mammals.",
     ("African elephant", "giraffe", "hippopotamus")),
    ("biology", "How many legs does a spider have?", "What is the number of legs on a spider?",
     "eight", "A spider has {v} legs.", "Spiders walk on {v} legs.",
     ("six", "ten", "four")),
    ("science", "Which metal is liquid at room temperature?",
     "What metal stays liquid at room temperature?", "mercury",
     "The metal that is liquid at room temperature is {v}.", "At room temperature, {v} is a "
     "liquid metal.", ("iron", "copper", "aluminium")),
    ("culture", "What is the main language spoken in Brazil?",
     "Which language do most people in Brazil speak?", "Portuguese",
     "The main language spoken in Brazil is {v}.", "Most people in Brazil speak {v}.",
     ("Spanish", "French", "Italian")),
)  # fmt: skip


def _sentence(template: str, value: str) -> str:
    text = template.format(v=value)
    return text[:1].upper() + text[1:]


def build_items(rows: Iterable[tuple], person_id: int) -> list[QAItem]:
    """Turn rows of the ``_WORLD`` table format into items (``QAItem`` checks each one).

    A row is ``(kind, question, paraphrased question, value, answer template,
    paraphrase template, wrong values)``; ``value`` may be a ``(value, key)`` pair.
    """
    items = []
    for kind, question, para_q, value, answer, para, wrong in rows:
        value, key = value if isinstance(value, tuple) else (value, value)
        items.append(
            QAItem(
                person_id=person_id,
                kind=kind,
                question=question,
                answer=_sentence(answer, value),
                paraphrased_answer=_sentence(para, value),
                perturbed_answers=tuple(_sentence(para, w) for w in wrong),
                paraphrased_question=para_q,
                key=key,
            )
        )
    return items


def world_knowledge() -> list[QAItem]:
    """A fixed set of 25 real, easy general-knowledge items (``person_id`` -1).

    They use the fictitious items' format, so the same metrics apply; TOFU
    uses such a set to check that unlearning leaves general knowledge intact.
    """
    return build_items(_WORLD, -1)


# --------------------------------------------------------------------------
# The benchmark set
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FictitiousFacts:
    """The people and their question-answer items; split by person for forgetting."""

    people: tuple[Person, ...]
    items: tuple[QAItem, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "people", tuple(self.people))
        object.__setattr__(self, "items", tuple(self.items))
        names = _check_people(self.people)
        for item in self.items:
            if item.person_id not in names:
                raise UnlearnError(
                    f"item {item.question!r} is about person {item.person_id}, not in the set"
                )

    def __len__(self) -> int:
        return len(self.items)

    def split(
        self, forget_fraction: float, seed: int = 0
    ) -> tuple[list[QAItem], list[QAItem], tuple[int, ...]]:
        """Forget ``round(forget_fraction * people)`` whole people (at least one).

        Returns ``(forget_items, retain_items, forget_ids)``: every item about a
        forgotten person is in the forget items, all others in the retain items
        (both in the set's order), and ``forget_ids`` is sorted. The people are
        drawn uniformly with ``seed``.
        """
        f = forget_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < float(f) < 1.0:
            raise UnlearnError(
                f"forget fraction must be a number strictly between 0 and 1, got {f!r}"
            )
        n = len(self.people)
        k = max(1, int(round(float(f) * n)))
        if k >= n:
            raise UnlearnError(
                f"forgetting {k} of {n} people leaves nobody to retain (fraction {f})"
            )
        rng = np.random.default_rng(seed)
        picked = rng.choice(n, size=k, replace=False)
        forget_ids = tuple(sorted(self.people[int(i)].id for i in picked))
        gone = set(forget_ids)
        forget = [it for it in self.items if it.person_id in gone]
        retain = [it for it in self.items if it.person_id not in gone]
        return forget, retain, forget_ids

    def to_records(self, items: Iterable[QAItem] | None = None) -> list[dict[str, str]]:
        """``{"question", "answer"}`` dicts for fine-tuning (all items, or those given)."""
        chosen = self.items if items is None else items
        return [{"question": it.question, "answer": it.answer} for it in chosen]

    def world_knowledge(self) -> list[QAItem]:
        """The real-world utility items (see the module function :func:`world_knowledge`)."""
        return world_knowledge()


def make_fictitious(n_people: int = 20, per_person: int = 5, seed: int = 0) -> FictitiousFacts:
    """Generate ``n_people`` people and ``per_person`` items each, all from ``seed``."""
    people = generate_people(n_people, seed)
    return FictitiousFacts(tuple(people), tuple(qa_items(people, per_person, seed)))
