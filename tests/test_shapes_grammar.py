"""The shapes grammar: exact parsing of the canonical forms, spans, label sets, round trips,
clear errors, p- sampling and the held-out split."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cvg_bench.shapes import grammar
from cvg_bench.shapes.grammar import PromptGrammarError, is_heldout, label_set, negative, parse, \
    sample_spec, to_prompt
from cvg_bench.types import PromptSpec

CANONICAL = [  # (prompt, category, label, withheld words, K(p) words)
    ("a red circle and a blue square", "consistent_attribute_binding", "red/blue",
     ["red", "blue"], ["circle", "square"]),
    ("a square changing from red to blue", "dynamic_attribute_binding", "red->blue",
     ["red", "blue"], ["square"]),
    ("a red circle on the left of a blue square", "spatial_relationships", "on the left of",
     ["on the left of"], ["red", "circle", "blue", "square"]),
    ("a red circle on the right of a blue square", "spatial_relationships", "on the right of",
     ["on the right of"], ["red", "circle", "blue", "square"]),
    ("a red circle above a blue square", "spatial_relationships", "above", ["above"],
     ["red", "circle", "blue", "square"]),
    ("a red circle below a blue square", "spatial_relationships", "below", ["below"],
     ["red", "circle", "blue", "square"]),
    ("a red circle moving left", "motion_binding", "left", ["left"], ["red", "circle"]),
    ("a red circle moving left and a blue square moving right", "motion_binding", "left/right",
     ["left", "right"], ["red", "circle", "blue", "square"]),
    ("a red circle growing and a blue square shrinking", "action_binding", "growing/shrinking",
     ["growing", "shrinking"], ["red", "circle", "blue", "square"]),
    ("a red circle hitting a blue square", "object_interactions", "hitting", ["hitting"],
     ["red", "circle", "blue", "square"]),
    ("a red circle moving away from a blue square", "object_interactions", "moving away from",
     ["moving away from"], ["red", "circle", "blue", "square"]),
    ("three red circles", "generative_numeracy", "three", ["three"], ["red", "circles"]),
    ("two red circles and one blue square", "generative_numeracy", "two/one", ["two", "one"],
     ["red", "circles", "blue", "square"]),
]


def _words(prompt: str, spans) -> list[str]:
    return [prompt[a:b] for a, b in spans]


@pytest.mark.parametrize("prompt,category,label,withheld,entity_words", CANONICAL)
def test_canonical_prompts_parse_exactly(prompt, category, label, withheld, entity_words) -> None:
    spec = parse(prompt, "x-001")
    assert (spec.prompt_id, spec.prompt, spec.category, spec.label) == ("x-001", prompt, category, label)
    assert spec.label in spec.label_set
    assert _words(prompt, spec.relation_spans) == withheld
    assert [w for e in spec.entities for w in _words(prompt, e.word_spans)] == entity_words
    for e in spec.entities:  # the phrase span covers the entity's words
        assert prompt[e.span[0]: e.span[1]] == e.phrase
        assert all(e.span[0] <= a and b <= e.span[1] for a, b in e.word_spans)
    # K(p) and the withheld relation words never overlap
    k_chars = {i for e in spec.entities for a, b in e.word_spans for i in range(a, b)}
    assert not k_chars & {i for a, b in spec.relation_spans for i in range(a, b)}
    assert to_prompt(spec) == prompt


def test_entity_fields() -> None:
    spec = parse("two red circles and one blue square")
    assert [(e.noun, e.attributes, e.count, e.phrase) for e in spec.entities] == [
        ("circle", ("red",), 2, "red circles"), ("square", ("blue",), 1, "blue square")]
    dyn = parse("a triangle changing from green to yellow").entities[0]
    assert (dyn.noun, dyn.attributes, dyn.phrase) == ("triangle", (), "triangle")


def test_other_phrasings() -> None:
    p = "A red circle to the left of a blue square."
    spec = parse(p)
    assert spec.label == "on the left of" and _words(p, spec.relation_spans) == ["to the left of"]
    assert spec.entities[0].phrase == "red circle"
    assert parse("a circle turning from red to green").label == "red->green"
    assert to_prompt(spec) == "a red circle on the left of a blue square"


@pytest.mark.parametrize("prompt", [
    "a purple circle and a blue square",  # colour outside the palette
    "a red circle next to a blue square",  # relation outside the grammar
    "a red circle and a red square",  # entities must differ in colour
    "a red circle and a blue circle",  # attribute binding needs two shapes
    "a square changing from red to red",
    "one red circles", "three red circle",  # number agreement
    "four red circles and one blue square",  # at most three per group with two groups
    "a red circle moving sideways",
    "a red circle",  # no category
    "",
])
def test_prompts_outside_the_grammar_raise_with_templates(prompt: str) -> None:
    with pytest.raises(PromptGrammarError) as err:
        parse(prompt)
    msg = str(err.value)
    assert repr(prompt) in msg and "accepted templates" in msg
    for cat in grammar.CATEGORIES:
        assert cat in msg
    assert isinstance(err.value, ValueError)


def test_label_sets() -> None:
    assert label_set("spatial_relationships") == ("on the left of", "on the right of", "above", "below")
    assert label_set("motion_binding", 1) == ("left", "right", "up", "down")
    assert len(label_set("motion_binding", 2)) == 16 and "left/right" in label_set("motion_binding", 2)
    assert label_set("action_binding", 1) == ("growing", "shrinking")
    assert len(label_set("action_binding", 2)) == 4
    assert label_set("object_interactions") == ("hitting", "approaching", "moving away from")
    assert label_set("generative_numeracy", 1) == ("one", "two", "three", "four")
    assert len(label_set("generative_numeracy", 2)) == 9
    assert len(label_set("consistent_attribute_binding")) == 12 and "red/red" not in \
        label_set("consistent_attribute_binding")
    assert "blue->red" in label_set("dynamic_attribute_binding")
    with pytest.raises(ValueError, match="unknown shapes category"):
        label_set("colour")
    with pytest.raises(ValueError):
        label_set("spatial_relationships", 1)


def _all_specs(split: str, n: int, seed: int = 0) -> list[PromptSpec]:
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, c, split) for _ in range(n) for c in grammar.CATEGORIES]


def test_round_trips_on_random_specs() -> None:
    for spec in _all_specs("all", 60):
        again = parse(to_prompt(spec), spec.prompt_id)
        assert again == spec  # every field, split included
        assert grammar.composition_of(again) == grammar.composition_of(spec)
        assert PromptSpec.from_dict(spec.to_dict()) == spec
        comp = grammar.composition_of(spec)
        assert parse(to_prompt(comp)).meta["composition"] == comp.to_dict()


def test_composition_of_a_spec_without_meta() -> None:
    spec = parse("a red circle hitting a blue square")
    bare = PromptSpec(spec.prompt_id, spec.prompt, spec.category)
    assert grammar.composition_of(bare) == grammar.composition_of(spec)


def test_negative_keeps_entities_and_changes_the_label() -> None:
    rng = np.random.default_rng(1)
    for spec in _all_specs("all", 40, seed=3):
        neg = negative(spec, rng)
        assert neg.category == spec.category and neg.label != spec.label
        assert neg.label in spec.label_set and neg.label_set == spec.label_set
        assert [e.noun for e in neg.entities] == [e.noun for e in spec.entities]
        if spec.category != "consistent_attribute_binding":  # there colours are y
            assert [e.attributes for e in neg.entities] == [e.attributes for e in spec.entities]
        assert neg.split == ("heldout" if is_heldout(neg) else "seen")


def test_sample_spec_seen_never_yields_heldout() -> None:
    rng = np.random.default_rng(0)
    for cat in grammar.CATEGORIES:
        specs = [sample_spec(rng, cat, "seen") for _ in range(1000)]
        assert not any(is_heldout(s) for s in specs), cat
        assert all(s.split == "seen" and s.category == cat for s in specs)
        held = [sample_spec(rng, cat, "heldout") for _ in range(50)]
        assert all(is_heldout(s) and s.split == "heldout" for s in held)
    # and, exhaustively, no held-out composition is in the seen pool
    for cat in grammar.CATEGORIES:
        assert not any(grammar.is_heldout(c) for c in grammar.compositions(cat, "seen"))
        assert grammar.compositions(cat, "heldout")


def test_every_heldout_word_appears_in_seen_data() -> None:
    """Held-out compositions are new combinations of seen parts, per category."""
    from cvg_bench.benchmarks.shapes import SUITE

    rng = np.random.default_rng(5)
    for cat in grammar.CATEGORIES:
        seen_words = {w for _ in range(1500) for w in sample_spec(rng, cat, "seen").prompt.split()}
        held_words = {w for p in SUITE[cat]["heldout"] for w in p.split()}
        held_words |= {w for c in grammar.compositions(cat, "heldout") for w in to_prompt(c).split()}
        assert held_words <= seen_words, (cat, held_words - seen_words)


def test_heldout_rules() -> None:
    assert is_heldout(parse("a red circle on the right of a blue square"))
    assert is_heldout(parse("a blue square on the left of a red circle"))
    assert not is_heldout(parse("a blue square on the right of a red circle"))
    assert not is_heldout(parse("a red circle on the left of a blue square"))
    assert is_heldout(parse("a blue circle and a green square"))
    assert not is_heldout(parse("a red circle and a blue square"))
    assert is_heldout(parse("a circle changing from blue to red"))
    assert not is_heldout(parse("a square changing from blue to red"))
    assert is_heldout(parse("a green circle moving left and a yellow triangle moving up"))
    assert not is_heldout(parse("a yellow triangle moving left"))
    assert is_heldout(parse("a red triangle shrinking"))
    assert is_heldout(parse("a blue square hitting a red circle"))
    assert not is_heldout(parse("a blue square approaching a red circle"))
    assert is_heldout(parse("three red triangles"))
    assert not is_heldout(parse("two red triangles"))
    assert set(grammar.HELDOUT_RULES) == set(grammar.CATEGORIES)


def test_sample_spec_is_deterministic_and_checks_arguments() -> None:
    a = [sample_spec(np.random.default_rng(9), c) for c in grammar.CATEGORIES]
    b = [sample_spec(np.random.default_rng(9), c) for c in grammar.CATEGORIES]
    assert a == b
    assert re.fullmatch(r"[a-z_]+-[0-9a-f]{8}", a[0].prompt_id)
    with pytest.raises(ValueError, match="unknown split"):
        sample_spec(np.random.default_rng(0), "motion_binding", "train")
    with pytest.raises(ValueError, match="unknown shapes category"):
        sample_spec(np.random.default_rng(0), "motion")
