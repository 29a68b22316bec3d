"""VBench's compositional dimensions (VBench 1.0 and VBench-2.0) read from a local copy.

Point ``data_root`` (config key) or ``CVG_VBENCH_ROOT`` at a checkout of Vchitect/VBench (the
folder holding ``prompts/`` and ``VBench-2.0/``). Files read, per dimension:

- VBench 1.0 (``multiple_objects``, ``spatial_relationship``, ``color``):
  ``prompts/prompts_per_dimension/<dim>.txt`` and ``prompts/metadata/<dim>.json``;
- VBench-2.0 (``Composition``, ``Dynamic_Spatial_Relationship``, ``Dynamic_Attribute``,
  ``Motion_Order_Understanding``): ``VBench-2.0/prompts/prompt/<Dim>.txt`` and
  ``VBench-2.0/prompts/meta_info/<Dim>.json``.

Only the selected dimensions' files must exist. VBench's sampling protocol is 5 videos per
prompt for VBench 1.0 (``samples_per_prompt = 5``: run with ``seeds=[0,1,2,3,4]``) and 3 for
VBench-2.0 (``seeds=[0,1,2]``); its ``{prompt}-{index}.mp4`` file names are made only by
:func:`cvg_bench.export.export_vbench`, never inside the harness.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from cvg_bench.benchmarks.base import Benchmark
from cvg_bench.benchmarks.t2vcompbench import (
    DYNAMIC_LABELS,
    SPATIAL_PATTERNS,
    Parse,
    Span,
    all_spans,
    anchor_span,
    build_spec,
    clean_phrase,
    content_hash,
    locate_entity,
    phrase_pattern,
    read_json_list,
    read_lines,
    relation_search,
    resolve_data_root,
    search,
    search_stem,
    tokens,
    windows_between,
)
from cvg_bench.registry import register
from cvg_bench.types import Entity, PromptSpec

ENV_VAR = "CVG_VBENCH_ROOT"

VBENCH1_DIMENSIONS: tuple[str, ...] = ("multiple_objects", "spatial_relationship", "color")
VBENCH2_DIMENSIONS: tuple[str, ...] = ("Composition", "Dynamic_Spatial_Relationship",
                                       "Dynamic_Attribute", "Motion_Order_Understanding")
CATEGORIES: tuple[str, ...] = VBENCH1_DIMENSIONS + VBENCH2_DIMENSIONS

#: VBench's own protocol: 5 samples per prompt (VBench 1.0), 3 (VBench-2.0, except Diversity).
SAMPLES_PER_PROMPT: dict[str, int] = {**{d: 5 for d in VBENCH1_DIMENSIONS},
                                      **{d: 3 for d in VBENCH2_DIMENSIONS}}
#: VBench-2.0 names videos by the first 180 characters of the prompt.
NAME_PREFIX_CHARS: dict[str, int | None] = {**{d: None for d in VBENCH1_DIMENSIONS},
                                            **{d: 180 for d in VBENCH2_DIMENSIONS}}

KNOWN_HASHES = {"9b1d424ac087": "45e79ec"}  # all 14 files at Vchitect/VBench @45e79ec

VBENCH_COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink",
                                  "black", "white")
MULTI_OBJECT_LABELS: tuple[str, ...] = ("both", "first_only", "second_only", "neither")
VBENCH_SPATIAL: dict[str, str] = {"on the left of": "left", "on the right of": "right",
                                  "on the top of": "above", "on the bottom of": "below"}
VBENCH_SPATIAL_LABELS: tuple[str, ...] = ("left", "right", "above", "below")

DSR_RELATIONS: tuple[str, ...] = ("left", "right", "in front of", "behind", "above", "below",
                                  "on", "under")
DSR_QUESTION_RELATIONS: dict[str, str] = {
    "on the left of": "left", "on the right of": "right", "in front of": "in front of",
    "on the front of": "in front of", "behind": "behind", "on the back of": "behind",
    "above": "above", "on the top of": "above", "on": "on", "under": "under",
    "on the bottom of": "below", "below": "below",
}
DSR_LABELS: tuple[str, ...] = tuple(f"{a}->{b}" for a, b in itertools.permutations(DSR_RELATIONS, 2))
DSR_PATTERNS: dict[str, list[str]] = {
    "left": SPATIAL_PATTERNS["left"],
    "right": SPATIAL_PATTERNS["right"],
    "in front of": [r"\b(?:in|to|on) (?:the )?front of\b", r"\bfront\b"],
    "behind": [r"\b(?:to )?(?:the )?behind(?: of)?\b", r"\b(?:to|on|at) the back of\b", r"\bback\b"],
    "above": [r"\b(?:to )?(?:the )?above(?: of)?\b", r"\bon (?:the )?top of\b", r"\bover\b"],
    "below": [r"\b(?:to )?(?:the )?(?:below|bottom)(?: of)?\b", r"\bunder(?:neath)?\b", r"\bbeneath\b"],
    "on": [r"\bonto\b", r"\bon (?:the )?top of\b", r"\bon\b"],
    "under": [r"\bunder(?:neath)?\b", r"\bbeneath\b", r"\bbelow\b", r"\b(?:to )?(?:the )?bottom of\b"],
}
ORDER_LABELS: tuple[str, ...] = ("action0->action1", "action1->action0")

#: Every label of each dimension (a classifier head's Y).
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "multiple_objects": MULTI_OBJECT_LABELS,
    "spatial_relationship": VBENCH_SPATIAL_LABELS,
    "color": VBENCH_COLORS,
    "Composition": (),
    "Dynamic_Spatial_Relationship": DSR_LABELS,
    "Dynamic_Attribute": DYNAMIC_LABELS,
    "Motion_Order_Understanding": ORDER_LABELS,
}

_SUBJECT = re.compile(
    r"^(?:the|a|an)\s+(.+?)\s+(?:(?:gradually|slowly|suddenly|quickly)\s+)?"
    r"(?:is|are|was|changes?|changed|turns?|turned|transforms?|transformed|becomes?|became|"
    r"grows?|shrinks?|erodes|shifts?|fades?)\b", re.IGNORECASE)


def _clauses(prompt: str) -> tuple[Span, Span]:
    """The spans before and after ", then" (the whole prompt twice if there is none)."""
    m = re.search(r",?\s*\bthen\b", prompt, re.IGNORECASE)
    if not m:
        return (0, len(prompt)), (0, len(prompt))
    return (0, m.start()), (m.end(), len(prompt))


def _parse_color(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    label = str(rec.get("color_en", "")).strip().lower()
    if label not in VBENCH_COLORS:
        raise ValueError(f"colour {rec.get('color_en')!r} is not one of {VBENCH_COLORS}")
    span = search(prompt, phrase_pattern([label], inflect_last=False))
    if span is None:
        p.missing_relation(f"colour word {label!r} not found in the prompt")
        obj = prompt
    else:
        p.relation_spans.append(span)
        obj = re.split(r"[,.;]", prompt[span[1]:], maxsplit=1)[0]
    # the colour word is the label-bearing word: withheld like a relation, not an attribute
    p.add_entity(prompt, obj, windows=[(span[1], len(prompt))] if span else None)
    p.label, p.label_set = label, VBENCH_COLORS
    return p


def _parse_multiple(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    objects = [clean_phrase(o) for o in re.split(r"\s+and\s+", str(rec.get("object_en", "")))
               if clean_phrase(o)]
    if len(objects) != 2:
        raise ValueError(f"object_en {rec.get('object_en')!r} does not name two objects")
    for obj in objects:
        p.add_entity(prompt, obj)
    p.label, p.label_set = "both", MULTI_OBJECT_LABELS
    p.relation_expected = False
    p.notes.append("multiple objects: y is the co-occurrence of both objects; no relation words")
    return p


def _parse_vbench_spatial(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    rel = re.sub(r"\s+", " ", str(rec.get("relationship_en", "")).strip().lower())
    if rel not in VBENCH_SPATIAL:
        raise ValueError(f"relationship {rec.get('relationship_en')!r} is not one of "
                         f"{sorted(VBENCH_SPATIAL)}")
    a = p.add_entity(prompt, str(rec.get("object_a_en", "")))
    b = p.add_entity(prompt, str(rec.get("object_b_en", "")))
    windows = windows_between(anchor_span(a), anchor_span(b), len(prompt)) or None
    span = relation_search(prompt, [phrase_pattern(rel.split(), inflect_last=False)], windows,
                           all_spans(p.entities))
    if span:
        p.relation_spans.append(span)
    else:
        p.missing_relation(f"relationship {rel!r} not found in the prompt")
    p.label, p.label_set = VBENCH_SPATIAL[rel], VBENCH_SPATIAL_LABELS
    p.extra["relationship"] = rel
    return p


def _parse_composition(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    p.relation_expected = False
    aux = rec.get("auxiliary_info") or {}
    p.extra["questions"] = list(aux.get("question", [])) if isinstance(aux, dict) else []
    p.notes.append("VBench-2.0 Composition is judged by free-form questions: no entity or "
                   "label metadata, so no K(p) and no y")
    return p


_DSR_QUESTION = re.compile(
    r"^Is the (.+?) (" + "|".join(sorted(map(re.escape, DSR_QUESTION_RELATIONS), key=len, reverse=True))
    + r") (?:the )?(.+?)\?", re.IGNORECASE)


def _parse_dsr(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    questions = rec.get("auxiliary_info")
    if not (isinstance(questions, list) and len(questions) == 2):
        raise ValueError("auxiliary_info must hold the two yes/no questions (before, after)")
    parsed = [_DSR_QUESTION.match(str(q).strip()) for q in questions]
    if not all(parsed):
        raise ValueError(f"cannot parse the questions {questions}")
    rels = [DSR_QUESTION_RELATIONS[m.group(2).lower()] for m in parsed]
    first, second = _clauses(prompt)
    a = p.add_entity(prompt, parsed[0].group(1), windows=[first])
    p.add_entity(prompt, parsed[0].group(3), windows=[first])
    for rel, clause in zip(rels, (first, second)):
        lo = anchor_span(a)[1] if anchor_span(a) and clause == first else clause[0]
        span = relation_search(prompt, DSR_PATTERNS[rel], [(lo, clause[1])],
                               all_spans(p.entities) + p.relation_spans)
        if span:
            p.relation_spans.append(span)
        else:
            p.missing_relation(f"no words for the relation {rel!r} found in the prompt")
    p.relation_spans.sort()
    p.label, p.label_set = f"{rels[0]}->{rels[1]}", DSR_LABELS
    if rels[0] == rels[1]:
        p.notes.append(f"both questions ask for {rels[0]!r}: the label is outside the label set")
    return p


def _parse_dynamic_attribute(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    subject = _SUBJECT.match(prompt)
    change = re.search(r"\bfrom (.+?) (?:to|into) (.+?)(?=[.,;]| as |$)", prompt, re.IGNORECASE)
    into = re.search(r"\b(?:turned|transformed|turns|transforms|changed|changes) into "
                     r"(?:an? |the )?(.+?)(?=[.,;]|$)", prompt, re.IGNORECASE)
    if subject is None:
        p.notes.append("no subject found before the change verb: entities unknown")
    elif change:  # "A car changes from white to red": the two states share the subject noun
        subj, _, notes = locate_entity(prompt, subject.group(1), windows=[subject.span(1)])
        p.notes.extend(notes)
        for g in (1, 2):
            span = change.span(g)
            words = tuple(w for w, _, _ in tokens(change.group(g)))
            ws = tuple(sorted(set(subj.word_spans) | {(span[0] + s, span[0] + e)
                                                      for _, s, e in tokens(change.group(g))}))
            p.entities.append(Entity(phrase=f"{change.group(g)} {subj.noun}".strip(),
                                     noun=subj.noun, attributes=words, word_spans=ws))
            p.verbatim.append(False)
        p.extra["states"] = [change.group(1), change.group(2)]
    elif into:  # "The wooden floor turned into a metal floor"
        p.add_entity(prompt, subject.group(1), windows=[subject.span(1)])
        p.add_entity(prompt, into.group(1), windows=[into.span(1)], shared=True)
        p.extra["states"] = [subject.group(1), into.group(1)]
    else:
        p.add_entity(prompt, subject.group(1), windows=[subject.span(1)])
        p.notes.append("no 'from X to Y' / 'into Y' in the prompt: one entity (the subject), "
                       "states unknown")
    p.add_dynamic_cues(prompt, "no transition words outside the state words: relation_spans empty")
    p.label, p.label_set = "state0->state1", DYNAMIC_LABELS
    p.extra["questions"] = list(rec.get("auxiliary_info") or [])
    return p


def _parse_motion_order(prompt: str, rec: dict[str, Any]) -> Parse:
    p = Parse()
    actions = rec.get("auxiliary_info")
    if not (isinstance(actions, list) and len(actions) == 2):
        raise ValueError("auxiliary_info must hold the two actions in order")
    subject = re.match(r"^(?:the|a|an)?\s*(.+?)\s+(?:is|are|was|were)\b", prompt, re.IGNORECASE)
    if subject:
        p.add_entity(prompt, subject.group(1), windows=[subject.span(1)])
    else:
        p.notes.append("no subject found before 'is/are': entities unknown")
    for action, clause in zip(actions, _clauses(prompt)):
        words = [w for w, _, _ in tokens(str(action))]
        if not words:
            continue
        taken = all_spans(p.entities) + p.relation_spans
        span = search(prompt, phrase_pattern(words, inflect_last=False), [clause], taken)
        if span is None:
            span = search(prompt, phrase_pattern(words[:1], inflect_last=False), [clause], taken)
            span = span or search_stem(prompt[: clause[1]], words[0],
                                       taken + [(0, clause[0])] if clause[0] else taken)
            if span:
                p.notes.append(f"action {action!r} not found verbatim; only its first word")
        if span:
            p.relation_spans.append(span)
        else:
            p.missing_relation(f"action {action!r} not found in the prompt")
    p.relation_spans.sort()
    p.label, p.label_set = "action0->action1", ORDER_LABELS
    p.extra["actions"] = list(actions)
    return p


PARSERS = {
    "multiple_objects": _parse_multiple,
    "spatial_relationship": _parse_vbench_spatial,
    "color": _parse_color,
    "Composition": _parse_composition,
    "Dynamic_Spatial_Relationship": _parse_dsr,
    "Dynamic_Attribute": _parse_dynamic_attribute,
    "Motion_Order_Understanding": _parse_motion_order,
}


def dimension_files(root: Path, dim: str) -> tuple[Path, Path]:
    """(prompt list, metadata) of a dimension under a VBench checkout."""
    if dim in VBENCH1_DIMENSIONS:
        return (root / "prompts" / "prompts_per_dimension" / f"{dim}.txt",
                root / "prompts" / "metadata" / f"{dim}.json")
    return (root / "VBench-2.0" / "prompts" / "prompt" / f"{dim}.txt",
            root / "VBench-2.0" / "prompts" / "meta_info" / f"{dim}.json")


@register("benchmark", "vbench")
class VBench(Benchmark):
    """VBench compositional dimensions (1.0 and 2.0) from a local checkout: data_root or $CVG_VBENCH_ROOT."""

    #: VBench 1.0's protocol (seeds=[0,1,2,3,4]); VBench-2.0 dimensions use 3, see samples_for.
    samples_per_prompt: int = 5

    def __init__(
        self,
        data_root: str | None = None,
        categories: list[str] | None = None,
        split: str = "all",
        limit: int | None = None,
        shard: int = 0,
        num_shards: int = 1,
    ) -> None:
        super().__init__(categories=categories, split=split, limit=limit, shard=shard,
                         num_shards=num_shards)
        self.data_root = resolve_data_root(data_root, "vbench", ENV_VAR, self.expected_files())
        if not self.data_root.is_dir():
            raise FileNotFoundError(f"vbench data_root {self.data_root} is not a folder. "
                                    f"Expected: {self.expected_files()}")
        self._specs: dict[str, list[PromptSpec]] = {}
        self._version: str | None = None

    @staticmethod
    def expected_files() -> str:
        return ("a Vchitect/VBench checkout: <root>/prompts/prompts_per_dimension/<dim>.txt + "
                "<root>/prompts/metadata/<dim>.json for " + ", ".join(VBENCH1_DIMENSIONS)
                + "; <root>/VBench-2.0/prompts/prompt/<Dim>.txt + "
                "<root>/VBench-2.0/prompts/meta_info/<Dim>.json for " + ", ".join(VBENCH2_DIMENSIONS))

    @property
    def all_categories(self) -> tuple[str, ...]:
        return CATEGORIES

    @staticmethod
    def label_sets() -> dict[str, tuple[str, ...]]:
        return dict(LABEL_SETS)

    @staticmethod
    def samples_for(category: str) -> int:
        """VBench's number of videos per prompt in a dimension (5 in 1.0, 3 in 2.0)."""
        return SAMPLES_PER_PROMPT[category]

    @property
    def version(self) -> str:  # type: ignore[override]
        """``vbench@45e79ec`` for the known copy, else ``vbench@sha256:<hash of the files found>``."""
        if self._version is None:
            rels = []
            for dim in CATEGORIES:
                for path in dimension_files(self.data_root, dim):
                    if path.is_file():
                        rels.append(str(path.relative_to(self.data_root)))
            digest = content_hash(self.data_root, rels)
            self._version = f"vbench@{KNOWN_HASHES.get(digest, 'sha256:' + digest)}"
        return self._version

    def load(self, split: str) -> list[PromptSpec]:
        out: list[PromptSpec] = []
        cats = self.categories or list(CATEGORIES)
        missing = [str(p) for d in cats if d in CATEGORIES
                   for p in dimension_files(self.data_root, d) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"vbench data under {self.data_root} lacks {', '.join(missing)}. "
                                    f"Expected: {self.expected_files()}")
        for dim in CATEGORIES:
            if dim in cats:
                if dim not in self._specs:
                    self._specs[dim] = self.load_dimension(dim)
                out.extend(self._specs[dim])
        return out

    def load_dimension(self, dim: str) -> list[PromptSpec]:
        txt, meta_path = dimension_files(self.data_root, dim)
        prompts = read_lines(txt)
        records = read_json_list(meta_path)
        if len(records) != len(prompts):
            raise ValueError(f"{txt} has {len(prompts)} prompts but {meta_path} has {len(records)}")
        specs = []
        for i, (prompt, rec) in enumerate(zip(prompts, records), start=1):
            if str(rec.get("prompt_en", "")).strip() != prompt:
                raise ValueError(f"{meta_path} entry {i - 1} prompt_en {rec.get('prompt_en')!r} "
                                 f"differs from line {i} of {txt}: {prompt!r}")
            prompt_id = f"{dim}-{i:04d}"
            try:
                parse = PARSERS[dim](prompt, rec)
            except ValueError as exc:
                raise ValueError(f"vbench prompt {prompt_id} ({prompt!r}): {exc}") from exc
            meta = {"dimension": dim, "samples_per_prompt": SAMPLES_PER_PROMPT[dim],
                    "source": f"{meta_path.relative_to(self.data_root)}#{i - 1}",
                    "metadata": {k: v for k, v in rec.items() if k != "prompt_en"}}
            specs.append(build_spec(prompt_id, prompt, dim, parse, meta))
        return specs
