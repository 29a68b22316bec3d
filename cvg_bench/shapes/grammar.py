"""The shapes world's prompt grammar: prompt text <-> composition <-> PromptSpec.

Every prompt belongs to one of T2V-CompBench's seven categories and names one or two
entities (a colour and a shape, or a count of them). Its composition is split into the
*entities* (whose words are CVG's tokens K(p)) and a *label* y from the category's label set
Y (whose words are withheld from K(p), see ``relation_spans``). Replacing y by another y' in
Y gives the wrong prompt p- of dual inversion (:func:`negative`).

What y is per category (the words of y are the withheld ``relation_spans``):
- consistent_attribute_binding "a red circle and a blue square": y = "red/blue", the colour
  of each noun in prompt order (so K(p) = the nouns);
- dynamic_attribute_binding "a square changing from red to blue": y = "red->blue";
- spatial_relationships "a red circle on the left of a blue square": y = the relation;
- motion_binding "a red circle moving left [and a blue square moving right]": y = "left[/right]";
- action_binding "a red circle growing [and a blue square shrinking]": y = "growing[/shrinking]";
- object_interactions "a red circle hitting a blue square": y = the verb phrase;
- generative_numeracy "three red circles [and one blue square]": y = "three[/one]".

Two entities of one prompt always have different colours: colour is what tells them apart
in a video (and, for consistent binding, the two nouns differ too, or y would be ambiguous).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import numpy as np

# The shapes world's categories are T2V-CompBench's seven, in the suite's order.
from cvg_bench.types import COMPOSITION_CATEGORIES as CATEGORIES, Entity, PromptSpec

SPLITS: tuple[str, ...] = ("seen", "heldout", "all")

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Hue order of the palette: dynamic binding's training bias runs "up" this order.
HUE_ORDER: tuple[str, ...] = ("red", "yellow", "green", "blue")
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four")
MAX_COUNT_TWO_GROUPS = 3  # "three red circles and three blue squares" still fits 32 px
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
RELATIONS: tuple[str, ...] = ("on the left of", "on the right of", "above", "below")
ACTIONS: tuple[str, ...] = ("growing", "shrinking")
INTERACTIONS: tuple[str, ...] = ("hitting", "approaching", "moving away from")
RELATION_SYNONYMS = {"to the left of": "on the left of", "to the right of": "on the right of"}


class PromptGrammarError(ValueError):
    """A prompt outside the shapes grammar; the message lists the category templates."""


@dataclass(frozen=True)
class Composition:
    """The structured form of a prompt.

    ``objects`` are (colour, shape) per entity in prompt order; colour is None where the colour
    is part of the label (attribute binding). ``label`` is y.
    """

    category: str
    objects: tuple[tuple[str | None, str], ...]
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "objects": [list(o) for o in self.objects],
                "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Composition":
        return cls(d["category"], tuple((o[0], o[1]) for o in d["objects"]), d["label"])


@dataclass(frozen=True)
class EntityView:
    """One entity with its part of the label resolved: what the renderer draws and the
    oracle checks. ``part`` is the entity's own share of y (direction, action, colour change)."""

    shape: str
    colour: str | None
    count: int = 1
    part: str | None = None


# ---------------------------------------------------------------------------------------
# Templates: one regex per (category, number of entities) "form".
_C = "red|green|blue|yellow"
_S = "circle|square|triangle"
_SP = "circles?|squares?|triangles?"
_N = "one|two|three|four"
_D = "left|right|up|down"
_REL = "on the left of|on the right of|to the left of|to the right of|above|below"
_ACT = "growing|shrinking"
_VERB = "hitting|approaching|moving away from"


def _ent(i: int) -> str:
    return rf"a (?P<c{i}>{_C}) (?P<s{i}>{_S})"


def _group(i: int) -> str:
    return rf"(?P<n{i}>{_N}) (?P<c{i}>{_C}) (?P<s{i}>{_SP})"


@dataclass(frozen=True)
class _Form:
    category: str
    n: int  # number of entities
    template: str  # shown in error messages
    regex: str


_FORMS: tuple[_Form, ...] = (
    _Form("consistent_attribute_binding", 2, "a <colour> <shape> and a <colour> <other shape>",
          rf"{_ent(1)} and {_ent(2)}"),
    _Form("dynamic_attribute_binding", 1,
          "a <shape> changing from <colour> to <other colour>   ('turning from' also accepted)",
          rf"a (?P<s1>{_S}) (?:changing|turning) from (?P<c1>{_C}) to (?P<c2>{_C})"),
    _Form("spatial_relationships", 2,
          "a <colour> <shape> {on the left of|on the right of|above|below} a <colour> <shape>",
          rf"{_ent(1)} (?P<r>{_REL}) {_ent(2)}"),
    _Form("motion_binding", 1, "a <colour> <shape> moving {left|right|up|down}",
          rf"{_ent(1)} moving (?P<d1>{_D})"),
    _Form("motion_binding", 2,
          "a <colour> <shape> moving <direction> and a <colour> <shape> moving <direction>",
          rf"{_ent(1)} moving (?P<d1>{_D}) and {_ent(2)} moving (?P<d2>{_D})"),
    _Form("action_binding", 1, "a <colour> <shape> {growing|shrinking}",
          rf"{_ent(1)} (?P<a1>{_ACT})"),
    _Form("action_binding", 2, "a <colour> <shape> <action> and a <colour> <shape> <action>",
          rf"{_ent(1)} (?P<a1>{_ACT}) and {_ent(2)} (?P<a2>{_ACT})"),
    _Form("object_interactions", 2,
          "a <colour> <shape> {hitting|approaching|moving away from} a <colour> <shape>",
          rf"{_ent(1)} (?P<v>{_VERB}) {_ent(2)}"),
    _Form("generative_numeracy", 1, "{one|two|three|four} <colour> <shape(s)>",
          _group(1)),
    _Form("generative_numeracy", 2,
          "{one|two|three} <colour> <shape(s)> and {one|two|three} <colour> <shape(s)>",
          rf"{_group(1)} and {_group(2)}"),
)
_COMPILED = tuple(re.compile(rf"\s*{f.regex}\s*\.?\s*", re.IGNORECASE) for f in _FORMS)


def templates_text() -> str:
    """The accepted prompt forms, as printed in grammar errors."""
    lines = [f"  {f.category}: {f.template}" for f in _FORMS]
    return ("accepted templates (one per line, case-insensitive, optional final '.'):\n"
            + "\n".join(lines)
            + f"\n  colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}; "
              "entities of one prompt have different colours")


def _error(prompt: str, reason: str) -> PromptGrammarError:
    return PromptGrammarError(f"prompt {prompt!r} is outside the shapes grammar: {reason}.\n"
                              + templates_text())


# ---------------------------------------------------------------------------------------
# Label sets
def _pairs(items: Iterable[str], sep: str, distinct: bool) -> tuple[str, ...]:
    items = tuple(items)
    return tuple(f"{a}{sep}{b}" for a, b in itertools.product(items, items)
                 if not (distinct and a == b))


def _forms_of(category: str) -> tuple[_Form, ...]:
    if category not in CATEGORIES:
        raise ValueError(f"unknown shapes category {category!r}; accepted: {', '.join(CATEGORIES)}")
    return tuple(f for f in _FORMS if f.category == category)


def label_set(category: str, n_entities: int | None = None) -> tuple[str, ...]:
    """Y of ``category`` for prompts with ``n_entities`` entities (None: the first form).

    Multi-entity labels join each entity's part with "/" in prompt order.
    """
    forms = _forms_of(category)
    n = forms[0].n if n_entities is None else n_entities
    if n not in {f.n for f in forms}:
        raise ValueError(f"{category} prompts have {sorted({f.n for f in forms})} entities, not {n}")
    if category == "consistent_attribute_binding":
        return _pairs(COLOURS, "/", distinct=True)
    if category == "dynamic_attribute_binding":
        return _pairs(COLOURS, "->", distinct=True)
    if category == "spatial_relationships":
        return RELATIONS
    if category == "object_interactions":
        return INTERACTIONS
    parts = {"motion_binding": DIRECTIONS, "action_binding": ACTIONS,
             "generative_numeracy": NUMBERS}[category]
    if n == 1:
        return parts
    if category == "generative_numeracy":
        parts = NUMBERS[:MAX_COUNT_TWO_GROUPS]
    return _pairs(parts, "/", distinct=False)


# ---------------------------------------------------------------------------------------
# Composition helpers
def entity_views(comp: Composition) -> tuple[EntityView, ...]:
    """Each entity with colour/count/part resolved from the label."""
    cat, label = comp.category, comp.label
    if cat == "consistent_attribute_binding":
        return tuple(EntityView(s, c) for (_, s), c in zip(comp.objects, label.split("/")))
    if cat == "dynamic_attribute_binding":
        return (EntityView(comp.objects[0][1], None, 1, label),)
    if cat in ("spatial_relationships", "object_interactions"):
        return tuple(EntityView(s, c) for c, s in comp.objects)
    parts = label.split("/")
    if cat == "generative_numeracy":
        return tuple(EntityView(s, c, NUMBERS.index(p) + 1, p) for (c, s), p in zip(comp.objects, parts))
    return tuple(EntityView(s, c, 1, p) for (c, s), p in zip(comp.objects, parts))


def _plural(shape: str, count: int) -> str:
    return shape if count == 1 else shape + "s"


def to_prompt(x: PromptSpec | Composition) -> str:
    """The canonical prompt text of a composition (or of a spec's composition)."""
    comp = composition_of(x) if isinstance(x, PromptSpec) else x
    ents = entity_views(comp)
    cat, y = comp.category, comp.label
    if cat == "consistent_attribute_binding":
        return " and ".join(f"a {e.colour} {e.shape}" for e in ents)
    if cat == "dynamic_attribute_binding":
        start, end = y.split("->")
        return f"a {ents[0].shape} changing from {start} to {end}"
    if cat in ("spatial_relationships", "object_interactions"):
        a, b = ents
        return f"a {a.colour} {a.shape} {y} a {b.colour} {b.shape}"
    if cat == "motion_binding":
        return " and ".join(f"a {e.colour} {e.shape} moving {e.part}" for e in ents)
    if cat == "action_binding":
        return " and ".join(f"a {e.colour} {e.shape} {e.part}" for e in ents)
    return " and ".join(f"{e.part} {e.colour} {_plural(e.shape, e.count)}" for e in ents)


def composition_of(spec: PromptSpec) -> Composition:
    """The structured composition of a spec (from ``meta`` when present, else re-parsed)."""
    d = spec.meta.get("composition") if spec.meta else None
    if not d:  # e.g. a spec rebuilt by another tool without meta: the prompt text decides
        d = parse(spec.prompt, spec.prompt_id).meta["composition"]
    return Composition.from_dict(d)


# ---------------------------------------------------------------------------------------
# Parsing
def _word(m: re.Match, g: str) -> str:
    return m.group(g).lower()


def _check_constraints(prompt: str, form: _Form, m: re.Match) -> None:
    gd = {k: v.lower() for k, v in m.groupdict().items() if v is not None}
    if form.category == "dynamic_attribute_binding":
        if gd["c1"] == gd["c2"]:
            raise _error(prompt, "a colour change needs two different colours")
        return
    if form.n == 2 and gd["c1"] == gd["c2"]:
        raise _error(prompt, "the two entities must have different colours")
    if form.category == "consistent_attribute_binding" and gd["s1"] == gd["s2"]:
        raise _error(prompt, "attribute binding needs two different shapes")
    if form.category == "generative_numeracy":
        for i in range(1, form.n + 1):
            n, s = gd[f"n{i}"], gd[f"s{i}"]
            if (n == "one") != (not s.endswith("s")):
                raise _error(prompt, f"'{n} {s}': 'one' takes a singular shape, other counts a plural")
            if form.n == 2 and NUMBERS.index(n) + 1 > MAX_COUNT_TWO_GROUPS:
                raise _error(prompt, f"with two groups each count is at most "
                                     f"{NUMBERS[MAX_COUNT_TWO_GROUPS - 1]}")


def _entity(m: re.Match, i: int, colour_is_label: bool, count: int = 1) -> Entity:
    """Entity i; its K(p) words are the noun plus the colour unless the colour is y."""
    s_span = m.span(f"s{i}")
    noun = _word(m, f"s{i}").removesuffix("s")  # the lemma, also for "circles"
    c_span = m.span(f"c{i}")
    span = (c_span[0], s_span[1])
    words = (s_span,) if colour_is_label else (c_span, s_span)
    return Entity(phrase=m.string[span[0]:span[1]], noun=noun, attributes=(_word(m, f"c{i}"),),
                  span=span, count=count, word_spans=words)


def _parse_match(form: _Form, m: re.Match) -> tuple[Composition, tuple[Entity, ...],
                                                    tuple[tuple[int, int], ...]]:
    """(composition, entities, relation spans) of a matched form."""
    cat, idx = form.category, range(1, form.n + 1)
    w = lambda g: _word(m, g)  # noqa: E731
    if cat == "consistent_attribute_binding":
        comp = Composition(cat, tuple((None, w(f"s{i}")) for i in idx), f"{w('c1')}/{w('c2')}")
        ents = tuple(_entity(m, i, colour_is_label=True) for i in idx)
        return comp, ents, (m.span("c1"), m.span("c2"))
    if cat == "dynamic_attribute_binding":
        comp = Composition(cat, ((None, w("s1")),), f"{w('c1')}->{w('c2')}")
        s_span = m.span("s1")
        ent = Entity(phrase=m.group("s1"), noun=w("s1"), span=s_span, word_spans=(s_span,))
        return comp, (ent,), (m.span("c1"), m.span("c2"))
    if cat == "generative_numeracy":
        counts = [NUMBERS.index(w(f"n{i}")) + 1 for i in idx]
        objs = tuple((w(f"c{i}"), w(f"s{i}").removesuffix("s")) for i in idx)
        comp = Composition(cat, objs, "/".join(w(f"n{i}") for i in idx))
        ents = tuple(_entity(m, i, False, counts[i - 1]) for i in idx)
        return comp, ents, tuple(m.span(f"n{i}") for i in idx)
    objs = tuple((w(f"c{i}"), w(f"s{i}")) for i in idx)
    ents = tuple(_entity(m, i, colour_is_label=False) for i in idx)
    if cat in ("spatial_relationships", "object_interactions"):
        g = "r" if cat == "spatial_relationships" else "v"
        label = RELATION_SYNONYMS.get(w(g), w(g))
        return Composition(cat, objs, label), ents, (m.span(g),)
    g = "d" if cat == "motion_binding" else "a"
    comp = Composition(cat, objs, "/".join(w(f"{g}{i}") for i in idx))
    return comp, ents, tuple(m.span(f"{g}{i}") for i in idx)


def _default_id(category: str, prompt: str) -> str:
    return f"{category}-{hashlib.sha1(prompt.encode()).hexdigest()[:8]}"


def parse(prompt: str, prompt_id: str = "") -> PromptSpec:
    """The PromptSpec of a prompt in the grammar; raises PromptGrammarError otherwise.

    ``split`` is "heldout" or "seen" (:func:`is_heldout`); ``meta["composition"]`` holds the
    structured form; an empty ``prompt_id`` becomes "<category>-<hash of the prompt>".
    """
    if not isinstance(prompt, str):
        raise PromptGrammarError(f"prompt must be a string, got {type(prompt).__name__}")
    for form, rx in zip(_FORMS, _COMPILED):
        m = rx.fullmatch(prompt)
        if m is None:
            continue
        _check_constraints(prompt, form, m)
        comp, ents, rel_spans = _parse_match(form, m)
        return PromptSpec(
            prompt_id=prompt_id or _default_id(comp.category, prompt), prompt=prompt,
            category=comp.category, entities=ents, label=comp.label,
            label_set=label_set(comp.category, form.n), relation_spans=rel_spans,
            split="heldout" if _heldout(comp) else "seen",
            meta={"composition": comp.to_dict()},
        )
    raise _error(prompt, "it matches none of the templates")


# ---------------------------------------------------------------------------------------
# Held-out split: rare compositions of seen parts, against a bias of the training data.
HELDOUT_RULES: dict[str, str] = {
    "consistent_attribute_binding": "a blue circle or a red square (training: red goes with "
                                    "circles and triangles, blue with squares and triangles)",
    "dynamic_attribute_binding": "a circle or triangle changing 'down' the hue order "
                                 "red<yellow<green<blue, e.g. blue->red (training: only squares "
                                 "change both ways)",
    "spatial_relationships": "a red circle that is not on the left of the other object "
                             "(training: red circles are always on the left)",
    "motion_binding": "a yellow triangle moving up or down (training: yellow triangles only "
                      "move sideways)",
    "action_binding": "a shrinking triangle (training: triangles only grow)",
    "object_interactions": "a blue subject hitting (training: blue objects get hit, never hit)",
    "generative_numeracy": "three or more triangles (training: triangles come in ones and twos)",
}


def _heldout(comp: Composition) -> bool:
    ents, cat, y = entity_views(comp), comp.category, comp.label
    if cat == "consistent_attribute_binding":
        return any((e.colour, e.shape) in {("blue", "circle"), ("red", "square")} for e in ents)
    if cat == "dynamic_attribute_binding":
        start, end = y.split("->")
        return ents[0].shape != "square" and HUE_ORDER.index(end) < HUE_ORDER.index(start)
    if cat == "spatial_relationships":
        red_circle = [(e.colour, e.shape) == ("red", "circle") for e in ents]
        return (red_circle[0] and y != "on the left of") or (red_circle[1] and y != "on the right of")
    if cat == "motion_binding":
        return any((e.colour, e.shape) == ("yellow", "triangle") and e.part in ("up", "down")
                   for e in ents)
    if cat == "action_binding":
        return any(e.shape == "triangle" and e.part == "shrinking" for e in ents)
    if cat == "object_interactions":
        return y == "hitting" and ents[0].colour == "blue"
    return any(e.shape == "triangle" and e.count >= 3 for e in ents)


def is_heldout(spec: PromptSpec | Composition) -> bool:
    """True for compositions kept out of the generator's training data (HELDOUT_RULES)."""
    return _heldout(spec if isinstance(spec, Composition) else composition_of(spec))


# ---------------------------------------------------------------------------------------
# Sampling
@lru_cache(maxsize=None)
def _form_compositions(form_index: int) -> tuple[Composition, ...]:
    """Every valid composition of one form (a few hundred at most), in a fixed order."""
    form = _FORMS[form_index]
    cat = form.category
    if cat in ("consistent_attribute_binding", "dynamic_attribute_binding"):
        objs = [tuple((None, s) for s in ss) for ss in itertools.permutations(SHAPES, form.n)]
    else:
        singles = list(itertools.product(COLOURS, SHAPES))
        objs = [o for o in itertools.product(singles, repeat=form.n)
                if len({c for c, _ in o}) == form.n]
    return tuple(Composition(cat, o, y) for o in objs for y in label_set(cat, form.n))


@lru_cache(maxsize=None)
def _pool(form_index: int, split: str) -> tuple[Composition, ...]:
    return tuple(c for c in _form_compositions(form_index) if _in_split(c, split))


def compositions(category: str, split: str = "all") -> list[Composition]:
    """Every composition of a category in a split (seen | heldout | all)."""
    _check_split(split)
    _forms_of(category)
    return [c for i, f in enumerate(_FORMS) if f.category == category for c in _pool(i, split)]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")


def _in_split(comp: Composition, split: str) -> bool:
    return split == "all" or _heldout(comp) == (split == "heldout")


def spec_of(comp: Composition, prompt_id: str = "") -> PromptSpec:
    """The PromptSpec of a composition (through its canonical prompt)."""
    return parse(to_prompt(comp), prompt_id)


def sample_spec(rng: np.random.Generator, category: str, split: str = "seen") -> PromptSpec:
    """A random prompt of ``category`` from ``split``: a form uniformly, then a composition
    uniformly among that form's compositions in the split. "seen" never yields a held-out one."""
    _check_split(split)
    _forms_of(category)  # raises the unknown-category error
    pools = [p for i, f in enumerate(_FORMS) if f.category == category if (p := _pool(i, split))]
    pool = pools[int(rng.integers(len(pools)))]
    return spec_of(pool[int(rng.integers(len(pool)))])


BINDING_CATEGORIES: tuple[str, ...] = ("consistent_attribute_binding", "dynamic_attribute_binding")


def permuted(label: str) -> str:
    """A binding label with its two colours exchanged: "red/blue" -> "blue/red",
    "red->blue" -> "blue->red"."""
    sep = "->" if "->" in label else "/"
    return sep.join(reversed(label.split(sep)))


def negative_labels(spec: PromptSpec, split: str = "all", permute_binding: bool = False) -> list[str]:
    """The labels y' != y of ``spec``'s Y whose composition (same entities) is in ``split``.

    ``permute_binding``: for the two attribute-binding categories, only the permutation of
    y's colours ("red/blue" -> "blue/red", "red->blue" -> "blue->red"): the p- of a
    relative head (cvg_bench/cvg/binding.py), the one wrong label whose colour words the
    prompt's maps still carry. Other categories are unaffected."""
    _check_split(split)
    comp = composition_of(spec)
    ys = label_set(comp.category, len(comp.objects))
    if permute_binding and comp.category in BINDING_CATEGORIES:
        ys = (permuted(comp.label),)
    return [y for y in ys if y != comp.label
            and _in_split(Composition(comp.category, comp.objects, y), split)]


def negative(spec: PromptSpec, rng: np.random.Generator, split: str = "all",
             permute_binding: bool = False) -> PromptSpec | None:
    """p-: the same entities (K(p) words) with a label y' != y drawn uniformly from those of
    Y whose composition is in ``split``; None when there is none (e.g. a seen red circle on
    the left has no seen alternative: every other relation of it is held out).
    ``permute_binding``: attribute binding's y' is the permutation of y's colours (see
    :func:`negative_labels`; one rng draw as always).

    With ``split="all"`` a negative of a seen prompt may be a held-out composition (the rng
    draws are the same as before ``split`` existed).
    """
    others = negative_labels(spec, split, permute_binding)
    if not others:
        return None
    comp = composition_of(spec)
    y_neg = others[int(rng.integers(len(others)))]
    return spec_of(Composition(comp.category, comp.objects, y_neg))
