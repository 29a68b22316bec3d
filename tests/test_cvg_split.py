"""Held-out means unseen by the classifier: its default data never holds a held-out composition,
as p+ or as p-, whichever source and labeller made it (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from cvg_bench import registry
from cvg_bench.cvg import pipeline
from cvg_bench.cvg.sources import PromptParser, read_folder
from cvg_bench.labellers.base import Labelled, Labeller
from cvg_bench.shapes import grammar
from cvg_bench.shapes.render import render

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def default_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("train", overrides=["component=classifier", *overrides]).component


class RenderingGenerator:
    """Stands in for the generator's samples: a render of the prompt, any composition."""

    def sample(self, spec, seed):
        class Sample:
            video = render(spec, seed=seed)
        return Sample()


class AnyLabeller(Labeller):
    """An adversarial labeller: says a video shows a random label of Y, held-out ones included
    (a generator sampled on a seen prompt can show a held-out composition)."""

    def __init__(self):
        self.rng = np.random.default_rng(7)
        self.heldout_said = 0

    def label(self, video, spec):
        y = spec.label_set[int(self.rng.integers(len(spec.label_set)))]
        comp = grammar.composition_of(spec)
        self.heldout_said += grammar.is_heldout(grammar.Composition(comp.category, comp.objects, y))
        return Labelled(y, "random")


def heldout_suite_prompts() -> set[str]:
    bench = registry.build("benchmark", {"name": "shapes", "split": "heldout"})
    return {s.prompt.strip().lower() for s in bench.load("heldout")}


def draw_stream(cfg, monkeypatch) -> tuple[list, AnyLabeller]:
    """Every example of the configured train and val streams (the whole training data)."""
    labeller = AnyLabeller()
    monkeypatch.setattr(pipeline, "build_labeller", lambda _cfg: labeller)
    categories = list(cfg.categories or grammar.CATEGORIES)
    out = []
    for n, seed in ((cfg.data.train, cfg.seed), (cfg.data.val, cfg.seed + 1)):
        examples = pipeline.example_source(cfg, RenderingGenerator(), categories, int(seed))
        draw = (lambda i, it=iter(examples): next(it)) if not callable(examples) else examples
        out += [draw(i) for i in range(int(n))]
    return out, labeller


def test_the_default_training_stream_never_holds_a_heldout_composition(monkeypatch):
    cfg = default_cfg()
    assert cfg.data.split == "seen" and float(cfg.data.synthetic_fraction) > 0
    examples, labeller = draw_stream(cfg, monkeypatch)
    assert len(examples) == cfg.data.train + cfg.data.val
    assert labeller.heldout_said > 10  # the labeller did offer held-out compositions
    suite = heldout_suite_prompts()
    cats = {spec.category for _, spec, _, _ in examples}
    assert cats == set(grammar.CATEGORIES)
    for video, pos, neg, source in examples:
        for spec in (pos, neg):
            assert not grammar.is_heldout(spec), (source, spec.prompt)
            assert spec.prompt.strip().lower() not in suite, spec.prompt
        assert pos.label != neg.label and pos.category == neg.category
    assert {"real", "synthetic"} == {s for *_, s in examples}


def test_split_all_is_the_ablation_that_does_see_heldout_compositions(monkeypatch):
    cfg = default_cfg("component.data.split=all", "component.data.train=128", "component.data.val=0")
    examples, _ = draw_stream(cfg, monkeypatch)
    heldout = [s.prompt for _, pos, neg, _ in examples for s in (pos, neg) if grammar.is_heldout(s)]
    assert len(heldout) > 5  # what split=seen removes, so the test above can fail


def test_indexed_stream_is_disjoint_too(monkeypatch):
    cfg = default_cfg("component.data.stream=indexed", "component.data.train=96", "component.data.val=32")
    examples, _ = draw_stream(cfg, monkeypatch)
    assert not [s.prompt for _, pos, neg, _ in examples for s in (pos, neg) if grammar.is_heldout(s)]


def test_a_folder_under_split_seen_skips_heldout_labels_and_negatives(tmp_path: Path):
    from cvg_bench.video_io import write_mp4

    lines = [
        {"id": "a", "prompt": "a red circle on the left of a blue square"},  # seen; its every p- is held out
        {"id": "b", "prompt": "a green circle on the left of a blue square"},  # seen, seen p- exist
        {"id": "c", "prompt": "a red circle above a blue square"},  # held out as labelled
        {"id": "d", "prompt": "a red circle above a blue square", "label": "on the left of",
         "negative": "below"},  # the video shows a seen composition, but p- is held out
        {"id": "e", "prompt": "a green circle on the left of a blue square", "negative": "above"},
    ]
    for line in lines:
        write_mp4(tmp_path / f"{line['id']}.mp4", np.zeros((4, 16, 16, 3), np.uint8))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    items, skipped = read_folder(tmp_path, PromptParser({"name": "shapes"}, "seen"))
    assert [i.id for i in items] == ["b", "e"]
    reasons = {s["id"]: s["reason"] for s in skipped}
    assert "no wrong label for p- (in data.split=seen)" in reasons["a"]
    assert "outside data.split=seen" in reasons["c"] and "outside data.split=seen" in reasons["d"]
    parser = PromptParser({"name": "shapes"}, "seen")
    for j in range(20):
        neg = parser.negative(items[0].spec, np.random.default_rng(j))
        assert not grammar.is_heldout(neg)
    # split=all (the ablation) keeps them all
    items_all, _ = read_folder(tmp_path, PromptParser({"name": "shapes"}, "all"))
    assert [i.id for i in items_all] == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError, match=r"data.split='test'; accepted: seen, heldout, all"):
        PromptParser({"name": "shapes"}, "test")


def test_grammar_negative_keeps_the_split_and_the_old_draws_for_all():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for cat in grammar.CATEGORIES:
        for _ in range(20):
            spec = grammar.sample_spec(rng_a, cat, "seen")
            grammar.sample_spec(rng_b, cat, "seen")
            old = grammar.negative(spec, rng_a)  # split=all: the draws made before split existed
            labels = [y for y in spec.label_set if y != spec.label]
            assert old.label == labels[int(rng_b.integers(len(labels)))]
            neg = grammar.negative(spec, np.random.default_rng(0), "seen")
            assert neg is None or not grammar.is_heldout(neg)
    red_left = grammar.parse("a red circle on the left of a blue square")
    assert grammar.negative_labels(red_left, "seen") == [] and grammar.negative(
        red_left, np.random.default_rng(0), "seen") is None


def test_categories_the_labeller_cannot_label_stay_rendered(monkeypatch, caplog):
    class SpatialOnly(AnyLabeller):
        categories = ("spatial_relationships",)

    labeller = SpatialOnly()
    monkeypatch.setattr(pipeline, "build_labeller", lambda _cfg: labeller)
    cfg = default_cfg("component.data.synthetic_fraction=1.0")
    with caplog.at_level("INFO"):
        stream = pipeline.example_source(cfg, RenderingGenerator(), list(grammar.CATEGORIES), 0)
    examples = [next(stream) for _ in range(28)]
    sources = {(spec.category, src) for _, spec, _, src in examples}
    assert sources == {(c, "synthetic" if c == "spatial_relationships" else "real")
                       for c in grammar.CATEGORIES}
    assert "cannot label" in caplog.text and "generative_numeracy" in caplog.text


def test_the_heldout_evaluation_stream_holds_every_category():
    """data.heldout_eval: p+ always a held-out composition, for all seven categories; p- held
    out whenever the composition has a held-out wrong label (interactions and binding have
    none, so theirs come from any split). It once failed on object_interactions."""
    cfg = pipeline.heldout_eval_cfg(default_cfg("component.data.stream=indexed"))
    examples = pipeline.example_source(cfg, RenderingGenerator(), list(grammar.CATEGORIES), 2)
    drawn = [examples(i) for i in range(3 * len(grammar.CATEGORIES))]
    assert {pos.category for _, pos, _, _ in drawn} == set(grammar.CATEGORIES)
    for _, pos, neg, source in drawn:
        assert grammar.is_heldout(pos) and source == "real" and neg.label != pos.label
        has_heldout_neg = bool(grammar.negative_labels(pos, "heldout", permute_binding=True))
        assert grammar.is_heldout(neg) or not has_heldout_neg, (pos.prompt, neg.prompt)
