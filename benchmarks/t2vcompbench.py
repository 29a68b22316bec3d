"""T2V-CompBench (Sun et al., 2024; v2: CVPR 2025) read from a local copy of its prompt suite.

The suite has no licence, so the project never ships it: point ``data_root`` (config key) or the
environment variable ``CVG_T2VCOMPBENCH_ROOT`` at a folder holding it.

- ``version="v1"`` (7 x 100 prompts): ``<root>/prompts/<n>_<name>.txt`` (the prompts the
  official README generates from) and ``<root>/meta_data/<category>.json`` (a list of objects
  holding the prompt plus the category's metadata).
- ``version="v2"`` (7 x 200 prompts): ``<root>/v2/meta_data/<category>.json`` or, if ``<root>``
  is itself the v2 folder, ``<root>/meta_data/<category>.json``; ``prompts/<n>_<name>.txt``
  beside it (the official V2 branch) are paired line by line when present.

The prompt is read from the metadata key ``"prompt"`` (official, both versions) or ``"caption"``
(a mirror's rename of v2); the version is told by structure and count, not by that key: a copy
with 200 prompts per category is v2, one with 100 is v1 (other counts: a user's own suite, read
as the configured version). Exports always write ``"prompt"``, the key the official scripts read.

Every prompt becomes a :class:`~cvg_bench.types.PromptSpec` with its entities (words located in
the prompt), relation words, target label ``y`` and label set ``Y`` (docs/benchmarks.md has the
design per category). What cannot be located is left empty and explained in
``spec.meta["notes"]``. Prompt ids are ``<category>-<NNNN>`` with NNNN the 1-based position in
the suite, which is also the file name the official evaluation scripts expect.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from cvg_bench.benchmarks.base import Benchmark
from cvg_bench.registry import register
from cvg_bench.types import COMPOSITION_CATEGORIES, Entity, PromptSpec

Span = tuple[int, int]

ENV_VAR = "CVG_T2VCOMPBENCH_ROOT"

CATEGORIES: tuple[str, ...] = COMPOSITION_CATEGORIES

# v1 prompt files (official repo, prompts/) per category.
V1_PROMPT_FILES: dict[str, str] = {
    "consistent_attribute_binding": "1_consistent_attr.txt",
    "dynamic_attribute_binding": "2_dynamic_attr.txt",
    "spatial_relationships": "3_spatial_relationship.txt",
    "motion_binding": "4_motion_binding.txt",
    "action_binding": "5_action_binding.txt",
    "object_interactions": "6_interaction.txt",
    "generative_numeracy": "7_numeracy.txt",
}

# Video folder per category in the layout of the official README (../video/<folder>/0001.mp4).
EXPORT_FOLDERS: dict[str, str] = {
    "consistent_attribute_binding": "consistent_attr",
    "dynamic_attribute_binding": "dynamic_attr",
    "spatial_relationships": "spatial_relationships",
    "motion_binding": "motion_binding",
    "action_binding": "action_binding",
    "object_interactions": "interaction",
    "generative_numeracy": "generative_numeracy",
}

# version -> (metadata key of the prompt in the official files (what exports write), prompts
#             per category in the official suite, known content hash of the files -> upstream tag)
VERSIONS: dict[str, dict[str, Any]] = {
    "v1": {"key": "prompt", "size": 100, "known": {"62ea25c63694": "116f996"}},
    # The official V2 branch was not fetchable; the pinned copy is the third-party mirror
    # mariamhegazy/Inter_rep_gen @ c66b9c6, which renamed the metadata key to "caption".
    "v2": {"key": "prompt", "size": 200, "known": {"a46f1dcad78f": "Inter_rep_gen-c66b9c6"}},
}
#: Metadata keys that may hold the prompt, in order of preference (official, mirror).
PROMPT_KEYS: tuple[str, ...] = ("prompt", "caption")

# ---- label sets -------------------------------------------------------------------------------
SPATIAL_LABELS: tuple[str, ...] = ("left", "right", "above", "below", "on", "under", "behind",
                                   "in front of")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
COUNTS: tuple[str, ...] = tuple(str(i) for i in range(1, 9))
BINDING_LABELS: tuple[str, ...] = ("as_prompted", "swapped")
DYNAMIC_LABELS: tuple[str, ...] = ("state0->state1", "state1->state0")


def direction_labels(num_objects: int) -> tuple[str, ...]:
    """Y of a motion prompt with ``num_objects`` moving objects: directions joined by ``|``."""
    return tuple("|".join(p) for p in itertools.product(DIRECTIONS, repeat=num_objects))


def count_labels(num_objects: int) -> tuple[str, ...]:
    """Y of a numeracy prompt with ``num_objects`` counted objects: counts joined by ``,``."""
    return tuple(",".join(p) for p in itertools.product(COUNTS, repeat=num_objects))


#: Every label a category can take (the union over its prompts' label sets), for classifier heads.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "consistent_attribute_binding": BINDING_LABELS,
    "dynamic_attribute_binding": DYNAMIC_LABELS,
    "spatial_relationships": SPATIAL_LABELS,
    "motion_binding": direction_labels(1) + direction_labels(2),
    "action_binding": BINDING_LABELS,
    "object_interactions": (),
    "generative_numeracy": count_labels(1) + count_labels(2),
}

# ---- text matching ----------------------------------------------------------------------------
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?(?:-[A-Za-z0-9]+)*")
NUMBER_WORDS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "a": 1, "an": 1, "single": 1, "lone": 1, "pair": 2, "couple": 2,
}
_DETERMINERS = {"a", "an", "the", "some", "several", "many", "its", "their", "his", "her",
                "this", "that", "these", "those"} | set(NUMBER_WORDS) | {str(i) for i in range(11)}
_PREPOSITIONS = {"in", "with", "of", "on", "at", "wearing", "holding", "from", "under", "near",
                 "by", "beside", "inside", "made", "for"}
_CONNECTORS = {"and", "or", "but"}
_PARTITIVES = {"piece", "pair", "group", "flock", "herd", "bunch", "cup", "glass", "slice", "pile",
               "stack", "bowl", "bottle", "sheet", "block", "loaf", "bag", "box", "jar", "set",
               "pack", "school", "swarm", "couple", "drop", "handful", "plate", "body", "head",
               "wings", "legs", "tail", "scales", "shape"}
_IRREGULAR = {"child": "children", "person": "people", "man": "men", "woman": "women",
              "mouse": "mice", "goose": "geese", "foot": "feet", "tooth": "teeth", "leaf": "leaves",
              "knife": "knives", "wolf": "wolves", "shelf": "shelves", "loaf": "loaves",
              "calf": "calves", "half": "halves", "life": "lives", "ox": "oxen",
              "cactus": "cacti", "fungus": "fungi"}
_IRREGULAR_INV = {v: k for k, v in _IRREGULAR.items()}


def tokens(text: str) -> list[tuple[str, int, int]]:
    """Words of ``text`` with their character spans (hyphenated words and possessives whole)."""
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def word_forms(word: str) -> list[str]:
    """Lower-case inflections of a noun that count as the same word (plural <-> singular)."""
    w = word.lower()
    forms = {w}
    if w in _IRREGULAR:
        forms.add(_IRREGULAR[w])
    if w in _IRREGULAR_INV:
        forms.add(_IRREGULAR_INV[w])
    if len(w) >= 3 and w.isalpha():
        forms |= {w + "s", w + "es"}
        if w.endswith("y") and w[-2] not in "aeiou":
            forms.add(w[:-1] + "ies")
        if w.endswith("ies"):
            forms.add(w[:-3] + "y")
        if w.endswith("es"):
            forms.add(w[:-2])
        if w.endswith("s") and not w.endswith("ss"):
            forms.add(w[:-1])
        if w.endswith("fe"):
            forms.add(w[:-2] + "ves")
        elif w.endswith("f"):
            forms.add(w[:-1] + "ves")
    return sorted(forms, key=len, reverse=True)


def _stem(word: str) -> str:
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ing", "ed", "es", "s", "ly", "y", "e"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


_WORD_L = r"(?<![A-Za-z0-9'’-])"
_WORD_R = r"(?![A-Za-z0-9-])"
_SEP = r"(?:\s*,\s*|\s+)"


def phrase_pattern(words: Sequence[str], inflect_last: bool = True) -> str:
    """Regex for ``words`` in order, whole words, the last one in any of its inflections."""
    if not words:
        raise ValueError("empty phrase")
    parts = [re.escape(w) for w in words[:-1]]
    last = words[-1]
    parts.append("(?:" + "|".join(re.escape(f) for f in word_forms(last)) + ")"
                 if inflect_last else re.escape(last))
    return _WORD_L + _SEP.join(parts) + r"(?:['’]s)?" + _WORD_R


def overlaps(span: Span, taken: Iterable[Span]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in taken)


def search(prompt: str, pattern: str, windows: Sequence[Span] | None = None,
           taken: Iterable[Span] = ()) -> Span | None:
    """First match of ``pattern`` (case-insensitive) inside the first window that has one,
    not overlapping ``taken``; ``None`` if there is none."""
    rx = re.compile(pattern, re.IGNORECASE)
    taken = list(taken)
    for lo, hi in windows or [(0, len(prompt))]:
        for m in rx.finditer(prompt, max(0, lo)):
            if m.end() > hi:
                break
            if m.end() > m.start() and not overlaps(m.span(), taken):
                return m.span()
    return None


def search_any(prompt: str, patterns: Sequence[str], windows: Sequence[Span] | None = None,
               taken: Iterable[Span] = ()) -> Span | None:
    """The first pattern (in order of preference) that matches in the first possible window."""
    taken = list(taken)
    for window in windows or [(0, len(prompt))]:
        for pattern in patterns:
            span = search(prompt, pattern, [window], taken)
            if span:
                return span
    return None


def clean_phrase(phrase: str) -> str:
    return phrase.strip().strip("?.!,;:").strip()


def core_words(phrase: str) -> list[str]:
    """The words of a phrase without its leading determiners ("a", "the", "two", ...)."""
    words = [w for w, _, _ in tokens(clean_phrase(phrase))]
    while len(words) > 1 and words[0].lower() in _DETERMINERS:
        words = words[1:]
    return words


def head_noun(words: Sequence[str]) -> tuple[int, list[int]]:
    """(index of the head noun, indices of the attribute words) of a noun phrase.

    Heuristic: the head is the last word before the first preposition ("bride" in "bride in a
    white gown"); after a partitive ("piece of metal") the head is the last word of the phrase;
    attributes are the other content words (determiners and prepositions excluded).
    """
    low = [w.lower() for w in words]
    # "and" starts a second noun phrase only before a determiner ("a candle and a cube");
    # otherwise it joins adjectives ("cracked and weathered vase")
    cuts = [i for i, w in enumerate(low) if i > 0 and (
        w in _PREPOSITIONS or (w in _CONNECTORS and i + 1 < len(low) and low[i + 1] in _DETERMINERS))]
    cut = cuts[0] if cuts else None
    if cut is None:
        head = len(words) - 1
    elif low[cut] == "of" and low[cut - 1] in _PARTITIVES:
        nxt = next((i for i in range(cut + 1, len(low)) if low[i] in _PREPOSITIONS), len(low))
        head = nxt - 1
    else:
        head = cut - 1
    attrs = [i for i, w in enumerate(low) if i != head and w not in _DETERMINERS
             and w not in _PREPOSITIONS and w not in _CONNECTORS]
    return head, attrs


def swap_attribute(words: Sequence[str]) -> int | None:
    """Index of the attribute to exchange in a 'swapped' contrast prompt: the first modifier
    before the head noun, else the first word of a post-noun phrase of >= 2 content words
    ("black" in "girl in a black dress"; none in "woman with glasses")."""
    head, attrs = head_noun(words)
    pre = [i for i in attrs if i < head]
    if pre:
        return pre[0]
    post = [i for i in attrs if i > head]
    return post[0] if len(post) >= 2 else None


def locate_entity(prompt: str, phrase: str, *, windows: Sequence[Span] | None = None,
                  taken: Iterable[Span] = (), count: int = 1) -> tuple[Entity, bool, list[str]]:
    """An :class:`Entity` for ``phrase`` located in ``prompt``.

    Returns ``(entity, verbatim, notes)``. ``verbatim``: the phrase (less its determiners; its
    last word in any inflection) was found, then ``entity.phrase`` is the prompt's text and
    ``prompt[span[0]:span[1]] == phrase``. Otherwise the head noun and attribute words are
    looked for one by one; ``span`` stays (0, 0), ``word_spans`` holds what was found, and
    ``notes`` say what was not.
    """
    taken = list(taken)
    words = core_words(phrase)
    if not words:
        return Entity(phrase=clean_phrase(phrase), noun=""), False, [f"empty entity phrase {phrase!r}"]
    head, attr_idx = head_noun(words)
    noun, attributes = words[head], tuple(words[i] for i in attr_idx)
    span = search(prompt, phrase_pattern(words), windows, taken)
    if span is None and windows:
        span = search(prompt, phrase_pattern(words), None, taken)
    if span is not None:
        found = tokens(prompt[span[0]:span[1]])
        # the pattern maps word to word; an inflected possessive can add no token
        keep = [head] + attr_idx
        word_spans = tuple(sorted((span[0] + s, span[0] + e) for i, (_, s, e) in enumerate(found)
                                  if i in keep and i < len(words)))
        ent = Entity(phrase=prompt[span[0]:span[1]], noun=noun, attributes=attributes, span=span,
                     count=count, word_spans=word_spans)
        return ent, True, []
    notes = [f"entity {clean_phrase(phrase)!r} not found verbatim in the prompt"]
    noun_span = search(prompt, phrase_pattern([noun]), windows, taken)
    if noun_span is None and windows:
        noun_span = search(prompt, phrase_pattern([noun]), None, taken)
    if noun_span is None:  # a different inflection of a verb-like noun ("decayed" vs "decaying")
        noun_span = search_stem(prompt, noun, taken)
    if noun_span is None:  # a typo in the prompt ("ballon")
        noun_span = _search_typo(prompt, noun, taken)
        if noun_span is not None:
            notes.append(f"head noun {noun!r} matched the misspelt {prompt[noun_span[0]:noun_span[1]]!r}")
    spans: list[Span] = []
    if noun_span is None:
        notes.append(f"its head noun {noun!r} is not in the prompt")
    else:
        spans.append(noun_span)
    missing = []
    for attr in attributes:
        near = [(max(0, noun_span[0] - 60), min(len(prompt), noun_span[1] + 60))] if noun_span else None
        s = search(prompt, phrase_pattern([attr], inflect_last=False), near, taken + spans)
        if s is None:
            s = search(prompt, phrase_pattern([attr], inflect_last=False), None, taken + spans)
        if s is None:
            s = search_stem(prompt, attr, taken + spans)
        if s is None:
            missing.append(attr)
        else:
            spans.append(s)
    if missing:
        notes.append(f"its words {missing} are not in the prompt")
    ent = Entity(phrase=clean_phrase(phrase), noun=noun, attributes=attributes, count=count,
                 word_spans=tuple(sorted(spans)))
    return ent, False, notes


def _one_edit(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by one insertion, deletion or substitution."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + (len(a) == len(b)):] == b[i + 1:]


def _search_typo(prompt: str, word: str, taken: Iterable[Span]) -> Span | None:
    if len(word) < 5:
        return None
    taken = list(taken)
    for w, s, e in tokens(prompt):
        if _one_edit(w.lower(), word.lower()) and not overlaps((s, e), taken):
            return (s, e)
    return None


def search_stem(prompt: str, word: str, taken: Iterable[Span]) -> Span | None:
    stem = _stem(word)
    if len(stem) < 3:
        return None
    taken = list(taken)
    for w, s, e in tokens(prompt):
        if _stem(w) == stem and not overlaps((s, e), taken):
            return (s, e)
    return None


def entity_complete(ent: Entity) -> bool:
    """The entity's head noun and every attribute word were located."""
    return bool(ent.word_spans) and len(ent.word_spans) >= 1 + len(ent.attributes)


# ---- relation lexicons --------------------------------------------------------------------------
def _lr(side: str, other: str) -> list[str]:
    return [rf"\bfrom (?:the )?{other}(?: side)? to (?:the )?{side}\b",
            rf"\b{other} to {side}\b",
            rf"\b(?:on|to|at|towards?) the {side}(?:-hand)?(?: side)?(?: of)?\b",
            rf"\b{side}(?:wards?|-hand side of|-hand side)\b", rf"\b{side} of\b", rf"\b{side}\b"]


SPATIAL_PATTERNS: dict[str, list[str]] = {
    "left": _lr("left", "right"),
    "right": _lr("right", "left"),
    "above": [r"\bon (?:the )?top of\b", r"\babove\b", r"\bover\b", r"\batop\b", r"\bhigher than\b",
              r"\bon\b"],
    "below": [r"\b(?:at|on) the bottom of\b", r"\bbelow\b", r"\bbeneath\b", r"\bunderneath\b",
              r"\bunder\b", r"\blower than\b"],
    "on": [r"\bon (?:the )?top of\b", r"\batop\b", r"\bonto\b", r"\bupon\b", r"\bon\b"],
    "under": [r"\bunderneath\b", r"\bbeneath\b", r"\bunder\b", r"\bbelow\b",
              r"\b(?:at|on) the bottom of\b"],
    "behind": [r"\bbehind\b", r"\b(?:in|at|to) (?:the )?back of\b"],
    "in front of": [r"\b(?:in|to) (?:the )?front of\b", r"\bbefore\b"],
}

DIRECTION_PATTERNS: dict[str, list[str]] = {
    "left": _lr("left", "right")[:4] + [r"\bleft\b"],
    "right": _lr("right", "left")[:4] + [r"\bright\b"],
    "up": [r"\bfrom the bottom to the top\b", r"\bupwards?\b", r"\b(?:climb\w*|float\w*|go\w*) up\b",
           r"\bup\b", r"\bascen\w*", r"\bris(?:e|es|ing|en)\b", r"\brose\b", r"\blift\w*",
           r"\bsoar\w*", r"\bhoist\w*", r"\blaunch\w*", r"\braise\w*"],
    "down": [r"\bfrom the top to the bottom\b", r"\bdownwards?\b", r"\b\w+ down\b", r"\bdown\b",
             r"\bdescen\w*", r"\bfall\w*", r"\bfell\b", r"\bdrop\w*", r"\bsink\w*", r"\blower\w*",
             r"\btumbl\w*", r"\bplummet\w*", r"\bdiv(?:e|es|ing)\b", r"\bsank\b"],
}

DYNAMIC_CUES = (r"\bfrom\b", r"\bto\b", r"\binto\b", r"\bthen\b",
                r"\b(?:turn|chang|becom|became|transform|transition|morph|shift)\w*")


def relation_search(prompt: str, patterns: Sequence[str], windows: Sequence[Span] | None,
                     taken: Iterable[Span]) -> Span | None:
    span = search_any(prompt, patterns, windows, taken)
    if span is None and windows:
        span = search_any(prompt, patterns, None, taken)
    return span


def windows_between(a: Span | None, b: Span | None, n: int) -> list[Span]:
    """Windows to look for a relation word: between the two entities first, then after a."""
    out = []
    if a and b and a[1] <= b[0]:
        out.append((a[1], b[0]))
    if a:
        out.append((a[1], n))
    return out


def anchor_span(ent: Entity) -> Span | None:
    if ent.span != (0, 0):
        return ent.span
    if ent.word_spans:
        return (min(s for s, _ in ent.word_spans), max(e for _, e in ent.word_spans))
    return None


def all_spans(entities: Iterable[Entity]) -> list[Span]:
    out: list[Span] = []
    for e in entities:
        out.extend(e.word_spans)
        if e.span != (0, 0):
            out.append(e.span)
    return out


def _swap(prompt: str, a: Span, b: Span) -> str:
    """``prompt`` with the texts at spans ``a`` and ``b`` exchanged (sentence case kept)."""
    if a[0] > b[0]:
        a, b = b, a
    ta, tb = prompt[a[0]:a[1]], prompt[b[0]:b[1]]

    def fit(text: str, like: str) -> str:
        if like[:1].isupper() and not like[1:2].isupper():
            return text[:1].upper() + text[1:]
        if text[:1].isupper() and not text[1:2].isupper():
            return text[:1].lower() + text[1:]
        return text

    def article(before: str, word: str) -> str:  # "a" / "an" agreeing with the new word
        m = re.search(r"\b(an?)(\s+)$", before, re.IGNORECASE)
        if not m:
            return before
        art = "an" if word[:1].lower() in "aeiou" else "a"
        art = art.capitalize() if m.group(1)[0].isupper() else art
        return before[: m.start()] + art + m.group(2)

    na, nb = fit(tb, ta), fit(ta, tb)
    return (article(prompt[:a[0]], na) + na + article(prompt[a[1]:b[0]], nb) + nb
            + prompt[b[1]:])


# ---- per-category parsers -----------------------------------------------------------------------
class Parse:
    """What one parser found: entities, relation spans, label and notes."""

    def __init__(self) -> None:
        self.entities: list[Entity] = []
        self.verbatim: list[bool] = []
        self.relation_spans: list[Span] = []
        self.relation_expected = True
        self.relation_missing = 0  # relation words the parser looked for and did not find
        self.label: str | None = None
        self.label_set: tuple[str, ...] = ()
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}

    def missing_relation(self, note: str) -> None:
        self.relation_missing += 1
        self.notes.append(note)

    def add_entity(self, prompt: str, phrase: str, windows: Sequence[Span] | None = None,
                   count: int = 1, shared: bool = False) -> Entity:
        taken = [] if shared else all_spans(self.entities)
        ent, verbatim, notes = locate_entity(prompt, phrase, windows=windows, taken=taken, count=count)
        self.entities.append(ent)
        self.verbatim.append(verbatim)
        self.notes.extend(notes)
        return ent

    def add_dynamic_cues(self, prompt: str, missing_note: str) -> None:
        """Every transition word (:data:`DYNAMIC_CUES`) outside the entities' words becomes a
        relation span (kept sorted); if there are none, a missing relation with ``missing_note``."""
        taken = all_spans(self.entities)
        for cue in DYNAMIC_CUES:
            for m in re.finditer(cue, prompt, re.IGNORECASE):
                if not overlaps(m.span(), taken):
                    self.relation_spans.append(m.span())
        self.relation_spans.sort()
        if not self.relation_spans:
            self.missing_relation(missing_note)


def _parse_consistent(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    phrases = [clean_phrase(s) for s in str(rec.get("phrases", "")).split(";") if clean_phrase(s)]
    if not phrases:
        p.notes.append("no 'phrases' metadata: entities unknown")
    for phrase in phrases:
        p.add_entity(prompt, phrase)
    p.label, p.label_set = "as_prompted", BINDING_LABELS
    p.relation_expected = False
    p.notes.append("attribute binding: no relation words (y is the attribute-object binding)")
    # p-: one attribute word of each entity exchanged (see swap_attribute)
    firsts = []
    for ent, phrase in zip(p.entities[:2], phrases):
        words = core_words(phrase)
        i = swap_attribute(words)
        hit = [s for s in ent.word_spans if i is not None
               and prompt[s[0]:s[1]].lower() == words[i].lower()]
        if hit:
            firsts.append(hit[0])
    if len(p.entities) == 2 and len(firsts) == 2 and not overlaps(firsts[0], [firsts[1]]):
        p.extra["contrast_prompts"] = {"swapped": _swap(prompt, firsts[0], firsts[1])}
    else:
        p.notes.append("no 'swapped' contrast prompt: needs two entities with a located "
                       "modifier each")
    return p


def _parse_dynamic(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    states = [clean_phrase(str(rec.get(k, ""))) for k in ("state 0", "state 1")]
    if not all(states):
        p.notes.append("missing 'state 0'/'state 1' metadata: entities unknown")
    else:
        for state in states:  # the two states share the object's noun: they may overlap
            p.add_entity(prompt, state, shared=True)
    p.label, p.label_set = "state0->state1", DYNAMIC_LABELS
    p.add_dynamic_cues(prompt, "no transition words (from/to/into/then/turns/changes/becomes...) "
                               "outside the state words: relation_spans empty")
    p.extra["contrast_prompts"] = {}
    if rec.get("tag"):
        p.extra["tag"] = rec["tag"]
    return p


def _parse_spatial(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    label = re.sub(r"\s+", " ", str(rec.get("spatial", "")).strip().lower())
    if label not in SPATIAL_LABELS:
        raise ValueError(f"spatial label {rec.get('spatial')!r} is not one of {SPATIAL_LABELS}")
    a = p.add_entity(prompt, str(rec.get("object_1", "")))
    b = p.add_entity(prompt, str(rec.get("object_2", "")))
    p.label, p.label_set = label, SPATIAL_LABELS
    aa, bb = anchor_span(a), anchor_span(b)
    windows = windows_between(aa, bb, len(prompt)) or None
    taken = all_spans(p.entities)
    span = relation_search(prompt, SPATIAL_PATTERNS[label], windows, taken)
    if span is None:  # the prompt's relation words disagree with the metadata label
        for other in SPATIAL_LABELS:
            span = search_any(prompt, SPATIAL_PATTERNS[other], windows, taken)
            if span:
                p.notes.append(f"relation words {prompt[span[0]:span[1]]!r} in the prompt do not "
                               f"express the metadata label {label!r}")
                break
    if span:
        p.relation_spans.append(span)
    else:
        p.missing_relation(f"no words for the relation {label!r} found in the prompt")
    return p


def _parse_motion(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    pairs = [(str(rec.get(f"object_{i}", "")).strip(), str(rec.get(f"d_{i}", "")).strip().lower())
             for i in (1, 2)]
    pairs = [(o, d) for o, d in pairs if o or d]
    for o, d in pairs:
        if d not in DIRECTIONS:
            raise ValueError(f"motion direction {d!r} is not one of {DIRECTIONS}")
        if not o:
            raise ValueError(f"motion direction {d!r} has no object")
    ents = [p.add_entity(prompt, o) for o, _ in pairs]
    dirs = [d for _, d in pairs]
    p.label = "|".join(dirs)
    p.label_set = direction_labels(len(dirs))
    anchors = [anchor_span(e) for e in ents]
    for i, d in enumerate(dirs):
        nxt = anchors[i + 1] if i + 1 < len(anchors) else None
        windows = windows_between(anchors[i], nxt, len(prompt)) or None
        span = relation_search(prompt, DIRECTION_PATTERNS[d], windows,
                                all_spans(p.entities) + p.relation_spans)
        if span:
            p.relation_spans.append(span)
        else:
            p.missing_relation(f"no words for the direction {d!r} of entity {i} found in the prompt")
    p.relation_spans.sort()
    return p


def subtract_spans(prompt: str, span: Span, taken: Iterable[Span]) -> list[Span]:
    """The runs of words of ``span`` outside ``taken``, without dangling determiners
    ("chases after a balloon" less the entity "balloon" -> "chases after")."""
    taken = list(taken)
    runs: list[list[tuple[str, int, int]]] = [[]]
    for w, s, e in tokens(prompt[span[0]:span[1]]):
        s, e = s + span[0], e + span[0]
        if overlaps((s, e), taken):
            runs.append([])
        else:
            runs[-1].append((w, s, e))
    out = []
    for run in runs:
        while run and run[-1][0].lower() in _DETERMINERS:
            run.pop()
        while run and run[0][0].lower() in _DETERMINERS:
            run.pop(0)
        if run:
            out.append((run[0][1], run[-1][2]))
    return out


def _parse_action(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    pairs = []
    for key in ("phrase_0", "phrase_1"):
        val = rec.get(key)
        if not (isinstance(val, list) and len(val) == 2):
            p.notes.append(f"metadata {key!r} is not [entity?, entity+action?]: entity skipped")
            continue
        ent_phrase, full = clean_phrase(str(val[0])), clean_phrase(str(val[1]))
        pairs.append((p.add_entity(prompt, ent_phrase), ent_phrase, full))
    entity_spans = all_spans(p.entities)
    action_spans: list[Span | None] = []
    for ent, ent_phrase, full in pairs:
        action = full
        if full.lower().startswith(ent_phrase.lower()):
            action = full[len(ent_phrase):].strip()
        else:
            p.notes.append(f"action phrase {full!r} does not start with its entity {ent_phrase!r}")
        words = [w for w, _, _ in tokens(action)]
        anchor = anchor_span(ent)
        windows = [(anchor[1], len(prompt))] if anchor else None
        own = [s for s in entity_spans if anchor and anchor[0] <= s[0] and s[1] <= anchor[1]]
        span = None
        if words:  # an action may mention the other entity ("chases after a balloon")
            span = search(prompt, phrase_pattern(words, inflect_last=False), windows, own)
            if span is None:
                span = search(prompt, phrase_pattern(words, inflect_last=False), None, own)
        verbatim = span is not None
        if span is None and words:
            verb = search(prompt, phrase_pattern([words[0]], inflect_last=False), windows, entity_spans)
            verb = verb or search_stem(prompt, words[0], entity_spans)
            if verb:
                p.notes.append(f"action {action!r} not found verbatim; only its verb {words[0]!r}")
                span = verb
            else:
                p.missing_relation(f"action {action!r} not found in the prompt")
        if span:
            # two entities may share one action ("a kid and a penguin watch a movie")
            for piece in subtract_spans(prompt, span, entity_spans):
                if piece not in p.relation_spans:
                    p.relation_spans.append(piece)
        action_spans.append(span if verbatim else None)
    p.relation_spans.sort()
    p.label, p.label_set = "as_prompted", BINDING_LABELS
    if len(action_spans) == 2 and all(action_spans) and not overlaps(action_spans[0], action_spans[1:]):
        p.extra["contrast_prompts"] = {"swapped": _swap(prompt, action_spans[0], action_spans[1])}
    else:
        p.notes.append("no 'swapped' contrast prompt: needs both actions found verbatim")
    return p


def _parse_interactions(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    p.relation_expected = False
    p.notes.append("object interactions have no metadata: no entities, no label; methods that "
                   "need K(p) or y cannot guide this category")
    return p


def _parse_numeracy(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    objects = [clean_phrase(o) for o in str(rec.get("objects", "")).split(",") if clean_phrase(o)]
    numbers = [n.strip() for n in str(rec.get("numbers", "")).split(",") if n.strip()]
    if len(objects) != len(numbers) or not all(n.isdigit() for n in numbers):
        raise ValueError(f"numeracy metadata objects={rec.get('objects')!r} "
                         f"numbers={rec.get('numbers')!r} do not pair up")
    for obj, num in zip(objects, numbers):
        ent = p.add_entity(prompt, obj, count=int(num))
        anchor = anchor_span(ent)
        if anchor is None:
            p.missing_relation(f"no count word for {obj!r}: the object is not located")
            continue
        # the count word: within the three words before the object
        before = [t for t in tokens(prompt[: anchor[0]])][-4:]
        hit = None
        for w, s, e in reversed(before):
            low = w.lower()
            if NUMBER_WORDS.get(low) == int(num) or low == num:
                hit = (s, e)
                break
        if hit is None:
            word = next((t for t in reversed(before) if t[0].lower() in NUMBER_WORDS or t[0].isdigit()), None)
            if word:
                p.notes.append(f"count word {word[0]!r} before {obj!r} disagrees with the metadata {num}")
                hit = (word[1], word[2])
            else:
                p.missing_relation(f"no count word found before {obj!r}")
        if hit and not overlaps(hit, p.relation_spans):
            p.relation_spans.append(hit)
    p.relation_spans.sort()
    p.label = ",".join(numbers)
    p.label_set = count_labels(len(numbers))
    if p.label not in p.label_set:
        p.notes.append(f"count {p.label} is outside the label set (counts 1..{COUNTS[-1]})")
    return p


PARSERS = {
    "consistent_attribute_binding": _parse_consistent,
    "dynamic_attribute_binding": _parse_dynamic,
    "spatial_relationships": _parse_spatial,
    "motion_binding": _parse_motion,
    "action_binding": _parse_action,
    "object_interactions": _parse_interactions,
    "generative_numeracy": _parse_numeracy,
}


def build_spec(prompt_id: str, prompt: str, category: str, parse: Parse,
               meta: dict[str, Any]) -> PromptSpec:
    """The PromptSpec of a parse, with its coverage flags and notes in ``meta``."""
    spans_ok = bool(parse.entities) and all(parse.verbatim)
    words_ok = bool(parse.entities) and all(entity_complete(e) for e in parse.entities)
    meta = {
        **meta,
        "entities_verbatim": spans_ok,
        "entity_words_found": words_ok,
        "relation_found": (bool(parse.relation_spans) and not parse.relation_missing
                           if parse.relation_expected else None),
        "notes": parse.notes,
        **parse.extra,
    }
    for ent in parse.entities:
        for s, e in list(ent.word_spans) + ([ent.span] if ent.span != (0, 0) else []):
            if not (0 <= s < e <= len(prompt)):
                raise AssertionError(f"span {(s, e)} outside prompt {prompt!r}")
    return PromptSpec(prompt_id=prompt_id, prompt=prompt, category=category,
                      entities=tuple(parse.entities), label=parse.label,
                      label_set=tuple(parse.label_set), relation_spans=tuple(parse.relation_spans),
                      split="all", meta=meta)


def span_coverage(specs: Iterable[PromptSpec]) -> dict[str, dict[str, float]]:
    """Per category: the fraction of prompts whose entities were all found verbatim
    (``entity_spans``), whose entity words were all located (``entity_words``) and whose
    relation words were all found (``relation_spans``; None where the category has none)."""
    acc: dict[str, dict[str, list]] = {}
    for spec in specs:
        row = acc.setdefault(spec.category, {"n": [], "entity_spans": [], "entity_words": [],
                                             "relation_spans": []})
        row["n"].append(1)
        row["entity_spans"].append(bool(spec.meta.get("entities_verbatim")))
        row["entity_words"].append(bool(spec.meta.get("entity_words_found")))
        if spec.meta.get("relation_found") is not None:
            row["relation_spans"].append(bool(spec.meta["relation_found"]))
    out = {}
    for cat, row in acc.items():
        n = len(row["n"])
        rel = row["relation_spans"]
        out[cat] = {"prompts": n, "entity_spans": sum(row["entity_spans"]) / n,
                    "entity_words": sum(row["entity_words"]) / n,
                    "relation_spans": (sum(rel) / len(rel)) if rel else None}
    return out


# ---- files --------------------------------------------------------------------------------------
def read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"{path} must hold a JSON list of objects (one per prompt)")
    return data


def read_lines(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def content_hash(root: Path, rel_paths: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(rel_paths):
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def prompt_key(record: dict[str, Any]) -> str | None:
    """The metadata key holding a record's prompt: "prompt" (official), else "caption" (the
    mirror's rename), else None."""
    return next((k for k in PROMPT_KEYS if isinstance(record.get(k), str)), None)


def official_record(record: dict[str, Any]) -> dict[str, Any]:
    """A metadata record as the official scripts read it: the prompt under "prompt" (first),
    the other keys as they were, a mirror's "caption" dropped."""
    key = prompt_key(record)
    if key is None:
        raise ValueError(f"metadata record has no prompt under {' or '.join(PROMPT_KEYS)}: "
                         f"keys {sorted(record)}")
    return {"prompt": record[key], **{k: v for k, v in record.items() if k not in PROMPT_KEYS}}


def missing_data_root(benchmark: str, env_var: str, expected: str) -> ValueError:
    return ValueError(
        f"benchmark {benchmark!r} needs its prompt suite: set the config key "
        f"benchmark.data_root=<folder> or the environment variable {env_var}=<folder>. "
        f"Expected files: {expected}. The suite is read from that folder and never copied "
        f"into the project (see docs/benchmarks.md)."
    )


def resolve_data_root(data_root: str | None, benchmark: str, env_var: str, expected: str) -> Path:
    """The suite's folder: ``data_root``, else ``$env_var``; neither set (or set empty) is the
    :func:`missing_data_root` error listing the ``expected`` files."""
    root = data_root if data_root not in (None, "") else os.environ.get(env_var) or None
    if root is None:
        raise missing_data_root(benchmark, env_var, expected)
    return Path(root).expanduser()


@register("benchmark", "t2vcompbench")
class T2VCompBench(Benchmark):
    """T2V-CompBench v1/v2 (7 categories) from a local copy: data_root or $CVG_T2VCOMPBENCH_ROOT."""

    def __init__(
        self,
        data_root: str | None = None,
        version: str = "v1",
        categories: list[str] | None = None,
        split: str = "all",
        limit: int | None = None,
        shard: int = 0,
        num_shards: int = 1,
        scorers: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(categories=categories, split=split, limit=limit, shard=shard,
                         num_shards=num_shards, scorers=scorers)
        if version not in VERSIONS:
            raise ValueError(f"t2vcompbench version={version!r}; accepted: {', '.join(VERSIONS)}")
        self.suite_version = version
        self.data_root = resolve_data_root(data_root, "t2vcompbench", ENV_VAR,
                                           self.expected_files(version))
        self.meta_dir, self.prompts_dir = self.resolve_layout(self.data_root, version)
        self.check_version(self.meta_dir, version)
        self._specs: list[PromptSpec] | None = None
        self._version: str | None = None

    # ---- layout ----
    @staticmethod
    def expected_files(version: str) -> str:
        if version == "v1":
            return ("<root>/prompts/{1_consistent_attr,...,7_numeracy}.txt and "
                    "<root>/meta_data/<category>.json (100 prompts each) for the 7 categories")
        return ("<root>/v2/meta_data/<category>.json or <root>/meta_data/<category>.json "
                "(200 prompts each, key 'prompt' or 'caption') for the 7 categories")

    @classmethod
    def resolve_layout(cls, root: Path, version: str) -> tuple[Path, Path | None]:
        """(metadata folder, prompts folder or None) of a data root; errors list what is missing."""
        if not root.is_dir():
            raise FileNotFoundError(f"t2vcompbench data_root {root} is not a folder. Expected: "
                                    f"{cls.expected_files(version)}")
        if version == "v1":
            meta_dir, prompts_dir = root / "meta_data", root / "prompts"
            need = [meta_dir / f"{c}.json" for c in CATEGORIES]
            need += [prompts_dir / V1_PROMPT_FILES[c] for c in CATEGORIES]
        else:
            meta_dir = root / "v2" / "meta_data" if (root / "v2" / "meta_data").is_dir() else root / "meta_data"
            prompts_dir = meta_dir.parent / "prompts"  # the official V2 branch has them
            if not all((prompts_dir / V1_PROMPT_FILES[c]).is_file() for c in CATEGORIES):
                prompts_dir = None
            need = [meta_dir / f"{c}.json" for c in CATEGORIES]
        missing = [str(p) for p in need if not p.is_file()]
        if missing and version == "v1" and all((root / "v2" / "meta_data" / f"{c}.json").is_file()
                                               for c in CATEGORIES):
            raise FileNotFoundError(
                f"t2vcompbench v1 data under {root} is incomplete (missing: "
                f"{', '.join(missing[:3])}...), but {root / 'v2' / 'meta_data'} holds v2 "
                "metadata: set benchmark.version=v2")
        if missing:
            raise FileNotFoundError(
                f"t2vcompbench {version} data under {root} is incomplete; missing: "
                f"{', '.join(missing)}. Expected: {cls.expected_files(version)}")
        return meta_dir, prompts_dir

    @staticmethod
    def count_prompts(meta_dir: Path) -> dict[str, int]:
        """Entries per category in a metadata folder."""
        return {c: len(read_json_list(meta_dir / f"{c}.json")) for c in CATEGORIES}

    @classmethod
    def detect_version(cls, meta_dir: Path) -> str | None:
        """"v1" or "v2" when every category has the official count of one version (100 or
        200), else None (a user's own suite)."""
        counts = set(cls.count_prompts(meta_dir).values())
        for name, info in VERSIONS.items():
            if counts == {info["size"]}:
                return name
        return None

    @classmethod
    def check_version(cls, meta_dir: Path, version: str) -> None:
        """A copy whose counts are another version's is refused, whatever its prompt key."""
        found = cls.detect_version(meta_dir)
        if found is not None and found != version:
            raise ValueError(
                f"t2vcompbench data in {meta_dir} is {found} ({VERSIONS[found]['size']} prompts "
                f"per category; v1 has {VERSIONS['v1']['size']}, v2 {VERSIONS['v2']['size']}), "
                f"but version={version!r}: set benchmark.version={found}")

    def _rel_files(self) -> tuple[Path, list[str]]:
        base = self.meta_dir.parent
        rels = [f"{self.meta_dir.name}/{c}.json" for c in CATEGORIES]
        if self.prompts_dir is not None:
            rels += [f"{self.prompts_dir.name}/{V1_PROMPT_FILES[c]}" for c in CATEGORIES]
        return base, rels

    @property
    def version(self) -> str:  # type: ignore[override]
        """``t2vcompbench-<v>@<upstream>`` for a known copy, else ``@sha256:<hash of the files>``."""
        if self._version is None:
            base, rels = self._rel_files()
            digest = content_hash(base, rels)
            tag = VERSIONS[self.suite_version]["known"].get(digest, f"sha256:{digest}")
            self._version = f"t2vcompbench-{self.suite_version}@{tag}"
        return self._version

    @property
    def all_categories(self) -> tuple[str, ...]:
        return CATEGORIES

    @staticmethod
    def label_sets() -> dict[str, tuple[str, ...]]:
        """Every label of each category (a classifier head's Y); a prompt's ``label_set`` is a subset."""
        return dict(LABEL_SETS)

    # ---- loading ----
    def category_records(self, category: str) -> list[tuple[str, dict[str, Any]]]:
        """(prompt, metadata record) of every prompt of a category, in suite order."""
        path = self.meta_dir / f"{category}.json"
        records = read_json_list(path)
        prompts = []
        for i, rec in enumerate(records):
            key = prompt_key(rec)
            if key is None:
                raise ValueError(f"{path} entry {i} has no string prompt under "
                                 f"{' or '.join(repr(k) for k in PROMPT_KEYS)}; keys: {sorted(rec)}")
            prompts.append(rec[key].strip())
        if self.prompts_dir is not None:
            txt_path = self.prompts_dir / V1_PROMPT_FILES[category]
            lines = read_lines(txt_path)
            if len(lines) != len(records):
                raise ValueError(f"{txt_path} has {len(lines)} prompts but {path} has "
                                 f"{len(records)} entries; they must pair up line by line")
            prompts = lines
        return list(zip(prompts, records))

    def load(self, split: str) -> list[PromptSpec]:
        if self._specs is None:
            specs = []
            for category in CATEGORIES:
                for i, (prompt, rec) in enumerate(self.category_records(category), start=1):
                    specs.append(self.make_spec(category, i, prompt, rec, prompt_key(rec) or "prompt"))
            self._specs = specs
        return list(self._specs)

    def make_spec(self, category: str, index: int, prompt: str, rec: dict[str, Any],
                  key: str) -> PromptSpec:
        prompt_id = f"{category}-{index:04d}"
        try:
            parse = PARSERS[category](prompt, rec)
        except ValueError as exc:
            raise ValueError(f"t2vcompbench {self.suite_version} prompt {prompt_id} "
                             f"({prompt!r}): {exc}") from exc
        meta: dict[str, Any] = {
            "suite_version": self.suite_version,
            "source": f"{self.meta_dir.name}/{category}.json#{index - 1}",
            "metadata": {k: v for k, v in rec.items() if k not in PROMPT_KEYS},
            "metadata_key": key,
            "export": f"{EXPORT_FOLDERS[category]}/{index:04d}.mp4",
        }
        if rec.get(key, "").strip() != prompt:
            meta["metadata_prompt"] = rec.get(key)
            parse.notes.append("the prompts/*.txt line differs from the metadata prompt; "
                               "the .txt line (the generation prompt) is used")
        return build_spec(prompt_id, prompt, category, parse, meta)
