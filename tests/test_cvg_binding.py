"""CVG on attribute binding: K(p) with the colour words, relative heads, permuted p-."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cvg_bench.cvg.augment import applicable, apply_to_label, apply_to_maps, augment_batch, symmetry_group
from cvg_bench.cvg.binding import AS_WRITTEN, permuted_label, relative_label
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec, entity_maps, kp_spec, kp_tokens
from cvg_bench.cvg.training import (FeatureCache, accuracy, dual_cross_entropy, head_label,
                                    targets, train_classifier)
from cvg_bench.shapes import grammar
from cvg_bench.shapes.grammar import label_set, parse

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONSISTENT, DYNAMIC = "consistent_attribute_binding", "dynamic_attribute_binding"
BINDING = (CONSISTENT, DYNAMIC)
OTHER = {CONSISTENT: "swapped", DYNAMIC: "reversed"}
SEP = {CONSISTENT: "/", DYNAMIC: "->"}
FEATS = FeatureSpec(steps=(0, 1), layers=("down", "up"), heads=(0, 1), num_inference_steps=4,
                    map_size=8, max_entities=2)
STEPS = 3


def relative_model(**kw) -> CVGClassifier:
    torch.manual_seed(0)
    return CVGClassifier(FEATS, {c: list(label_set(c)) for c in BINDING}, {"name": "none"},
                         num_layer_heads=2, frames=4,
                         head_types={c: "relative" for c in BINDING}, **kw)


@pytest.fixture(scope="module")
def gen():
    from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator

    return TinyGenerator.random(TEST_CONFIG, seed=0, num_frames=4, height=16, width=16,
                                num_inference_steps=STEPS)


# --- relative labels ---------------------------------------------------------------------
@pytest.mark.parametrize("category", BINDING)
def test_relative_label_of_every_video_label_against_every_prompt_label(category):
    labels = label_set(category)
    assert len(labels) == 12
    for p in labels:
        a, b = p.split(SEP[category])
        got = {y: relative_label(category, y, p) for y in labels}
        assert got[p] == AS_WRITTEN
        assert got[f"{b}{SEP[category]}{a}"] == OTHER[category]
        assert [y for y, r in got.items() if r is not None] == sorted(
            [p, f"{b}{SEP[category]}{a}"], key=labels.index)  # every other y: no relative label
        assert permuted_label(category, p) == f"{b}{SEP[category]}{a}"
    assert relative_label(category, None, labels[0]) is None
    assert relative_label(category, labels[0], None) is None


def test_relative_label_cases_and_errors():
    assert relative_label(CONSISTENT, "red/blue", "red/blue") == "as_written"
    assert relative_label(CONSISTENT, "blue/red", "red/blue") == "swapped"
    assert relative_label(CONSISTENT, "red/green", "red/blue") is None
    assert relative_label(CONSISTENT, "green/yellow", "red/blue") is None
    assert relative_label(DYNAMIC, "red->blue", "red->blue") == "as_written"
    assert relative_label(DYNAMIC, "blue->red", "red->blue") == "reversed"
    assert relative_label(DYNAMIC, "red->green", "red->blue") is None
    with pytest.raises(ValueError, match="'spatial_relationships' has no relative labels"):
        relative_label("spatial_relationships", "above", "below")
    with pytest.raises(ValueError, match="not two colours"):
        permuted_label(DYNAMIC, "red")


# --- K(p) --------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt,slots", [
    ("a red circle and a blue square", [["red", "circle"], ["blue", "square"]]),
    ("a green triangle and a yellow circle.", [["green", "triangle"], ["yellow", "circle"]]),
    ("a circle changing from red to blue", [["red"], ["blue"]]),
    ("a square turning from yellow to green", [["yellow"], ["green"]]),
    ("a red circle on the left of a blue square", [["red", "circle"], ["blue", "square"]]),
    ("a green triangle moving up", [["green", "triangle"]]),
])
def test_kp_slots_on_the_tiny_generator(gen, prompt, slots):
    spec = parse(prompt)
    tokens = kp_tokens(gen, spec)
    assert [[tokens.tokens[i] for i in slot] for slot in tokens.entity_tokens] == slots
    keys = {tokens.tokens[i] for i in tokens.key_tokens}
    assert not keys & {"and", "from", "to", "changing", "turning", "on", "left", "moving", "up"}
    if spec.category == DYNAMIC:
        assert spec.entities[0].noun not in keys  # one object: its noun is not a slot
    if spec.category not in BINDING:
        assert kp_spec(spec) is spec  # every other category: the entity words, as before
    assert len(tokens.entity_tokens) <= FEATS.max_entities


def test_kp_keeps_binding_specs_whose_entities_hold_the_colours():
    """E.g. T2V-CompBench's parse: each phrase (colour + noun) or state is an entity."""
    from dataclasses import replace

    from cvg_bench.generators.tokens import spec_for_words

    cons = replace(spec_for_words("a red circle and a blue square", [["red", "circle"], ["blue", "square"]]),
                   category=CONSISTENT)
    assert kp_spec(cons) is cons
    dyn = replace(spec_for_words("a circle changing from red to blue", [["red", "circle"], ["blue"]]),
                  category=DYNAMIC)
    assert kp_spec(dyn) is dyn
    with pytest.raises(ValueError, match="K\\(p\\) of dynamic binding needs the two colour words"):
        kp_spec(replace(dyn, entities=dyn.entities[:1]))


def test_featurize_fills_both_binding_slots(gen):
    from cvg_bench.cvg.training import featurize
    from cvg_bench.shapes.render import RenderConfig, render

    spec = parse("a circle changing from red to blue")
    feats = FeatureSpec(steps=(0,), layers=tuple(gen.attention_layers()), heads=(0, 1),
                        num_inference_steps=STEPS, map_size=8, max_entities=2)
    video = render(spec, seed=0, cfg=RenderConfig(frames=4, size=16))
    maps = featurize(gen, video, spec, feats)  # (|T|, L, H, E, F, s, s)
    assert maps.shape[3] == 2
    assert (maps[:, :, :, 1].abs().sum() > 0) and (maps[:, :, :, 0].abs().sum() > 0)


# --- p- in the grammar -------------------------------------------------------------------
def test_permute_binding_negatives_are_the_permutation_only():
    for category in BINDING:
        for comp in grammar.compositions(category, "all"):
            spec = grammar.spec_of(comp)
            assert grammar.negative_labels(spec, "all", permute_binding=True) == [
                permuted_label(category, comp.label)]
            neg = grammar.negative(spec, np.random.default_rng(0), "all", permute_binding=True)
            assert neg.label == permuted_label(category, comp.label)
            assert neg.entities[0].noun == spec.entities[0].noun
            for other in grammar.negative_labels(spec, "seen", permute_binding=True):
                assert not grammar.is_heldout(grammar.spec_of(
                    grammar.Composition(category, comp.objects, other)))
        assert len(grammar.negative_labels(spec, "all")) == 11  # without the keyword: all of Y
    spatial = parse("a red circle above a blue square")
    assert grammar.negative_labels(spatial, "all", permute_binding=True) == grammar.negative_labels(spatial, "all")
    for seed in range(5):  # other categories draw the same p- with the keyword
        a = grammar.negative(spatial, np.random.default_rng(seed), "all")
        b = grammar.negative(spatial, np.random.default_rng(seed), "all", permute_binding=True)
        assert a.prompt == b.prompt


# --- the head ----------------------------------------------------------------------------
def test_relative_head_labels_masking_and_round_trip(tmp_path):
    model = relative_model()
    assert model.label_sets == {CONSISTENT: ["as_written", "swapped"], DYNAMIC: ["as_written", "reversed"]}
    x, step = torch.rand(1, 2, 2, 2, 4, 8, 8), torch.tensor([0])
    for category in BINDING:
        spec_labels = list(label_set(category))  # the prompt's absolute Y: ignored
        plain = model.log_probs(x, step, category)
        assert torch.equal(model.log_probs(x, step, category, spec_labels), plain)
        assert torch.isfinite(plain).all() and plain.shape == (1, 2)
        assert model.label_index(category, model.guidance_label(category, spec_labels[3])) == 0
        with pytest.raises(ValueError, match="relative head"):
            model.label_index(category, spec_labels[3])
    model.save(tmp_path / "clf")
    again = CVGClassifier.load(tmp_path / "clf")
    assert again.head_types == model.head_types and again.label_sets == model.label_sets
    assert torch.allclose(again.log_probs(x, step, DYNAMIC), model.log_probs(x, step, DYNAMIC))
    with pytest.raises(ValueError, match="head type 'relative' for 'spatial_relationships'"):
        CVGClassifier(FEATS, {"spatial_relationships": ["above", "below"]}, {"name": "none"},
                      num_layer_heads=2, frames=4, head_types={"spatial_relationships": "relative"})


def rows_of(category: str, labels: list[str], **extra) -> list[dict]:
    return [{"category": category, "label": y, "negative_label": permuted_label(category, y),
             "label_set": list(label_set(category)), "prompt": "", "source": "real", **extra}
            for y in labels]


def test_dual_cross_entropy_supervises_p_plus_and_p_minus_with_different_targets():
    model = relative_model()
    rows = rows_of(DYNAMIC, ["red->blue", "green->yellow", "blue->red"])
    assert targets(model, rows, "pos").tolist() == [0, 0, 0]
    assert targets(model, rows, "neg").tolist() == [1, 1, 1]
    torch.manual_seed(1)
    pos, neg = torch.rand(3, 2, 2, 2, 2, 4, 8, 8), torch.rand(3, 2, 2, 2, 2, 4, 8, 8)
    loss = dual_cross_entropy(model, pos, neg, rows)
    expected = 0.0
    for slot in range(2):
        steps = torch.full((3,), slot)
        expected -= model.log_probs(pos[:, slot], steps, DYNAMIC)[:, 0].mean()
        expected -= model.log_probs(neg[:, slot], steps, DYNAMIC)[:, 1].mean()
    assert torch.allclose(loss, expected)
    p_plus = dual_cross_entropy(model, pos, None, rows)
    assert torch.allclose(p_plus, -sum(model.log_probs(pos[:, s], torch.full((3,), s), DYNAMIC)[:, 0].mean()
                                       for s in range(2)))
    # an absolute head: one target, the video's y, for both
    spatial = CVGClassifier(FEATS, {"spatial_relationships": ["above", "below"]}, {"name": "none"},
                            num_layer_heads=2, frames=4)
    srows = [{"category": "spatial_relationships", "label": "below", "negative_label": "above"}]
    assert targets(spatial, srows, "pos").tolist() == targets(spatial, srows, "neg").tolist() == [1]


def test_relative_targets_need_the_negative_label_and_a_permuted_negative():
    model = relative_model()
    old = [{"category": CONSISTENT, "label": "red/blue", "label_set": []}]
    with pytest.raises(ValueError, match="no negative_label: the cache predates relative heads"):
        targets(model, old, "pos")
    wrong = [{"category": CONSISTENT, "label": "red/blue", "negative_label": "green/blue"}]
    with pytest.raises(ValueError, match="needs p- = the permutation"):
        targets(model, wrong, "neg")
    with pytest.raises(ValueError, match="features='both'"):
        head_label(model, wrong[0], "both")


def test_accuracy_reads_relative_targets_by_the_prompt_the_maps_came_from(tmp_path):
    from cvg_bench.cvg.evaluate import evaluate

    model = relative_model()
    rows = rows_of(CONSISTENT, ["red/blue", "blue/green"] * 3)
    maps = [torch.rand(2, 2, 2, 2, 4, 8, 8) for _ in rows]
    cache = FeatureCache(tmp_path)
    cache.write_shard(0, maps, maps, rows)
    pos, neg, rows = cache.load()

    def says_as_written(x, step, category, allowed=None):  # a reader that always says as written
        return torch.log_softmax(torch.tensor([[2.0, 0.0]]).repeat(len(x), 1), -1)

    assert accuracy(model, pos, rows, score=says_as_written)[CONSISTENT] == 1.0
    assert accuracy(model, neg, rows, score=says_as_written)[CONSISTENT] == 0.0  # p-: "swapped"
    assert accuracy(model, pos.clone(), rows, score=says_as_written, features="neg")[CONSISTENT] == 0.0
    with pytest.raises(ValueError, match="needs features='pos' or 'neg'"):
        accuracy(model, pos.clone(), rows)
    assert evaluate(model, neg, rows)[CONSISTENT]["n"] == len(rows) * 2
    with pytest.raises(ValueError, match="needs features"):
        evaluate(model, neg.clone(), rows)


def test_feature_cache_rows_carry_the_negative_label(tmp_path, monkeypatch):
    from cvg_bench.cvg import training

    monkeypatch.setattr(training, "featurize", lambda g, v, s, f: torch.zeros(2, 3))
    spec = parse("a circle changing from red to blue")
    neg = grammar.negative(spec, np.random.default_rng(0), "all", permute_binding=True)
    video = np.zeros((4, 16, 16, 3), np.uint8)
    cache = training.build_feature_cache(None, [(video, spec, neg, "real")], FEATS,
                                         FeatureCache(tmp_path), 1, 1)
    row = cache.load()[2][0]
    assert (row["label"], row["negative_label"]) == ("red->blue", "blue->red")
    assert row["negative_prompt"] == "a circle changing from blue to red"


# --- symmetries --------------------------------------------------------------------------
def test_time_reversal_runs_a_colour_change_backwards():
    assert applicable(CONSISTENT) == applicable(DYNAMIC) == ("flip_x", "flip_y", "reverse_time")
    for g in symmetry_group():
        assert apply_to_label(CONSISTENT, "red/blue", g) == "red/blue"
        assert apply_to_label(CONSISTENT, "swapped", g) == "swapped"
        backwards = "reverse_time" in g
        assert apply_to_label(DYNAMIC, "red->blue", g) == ("blue->red" if backwards else "red->blue")
        assert apply_to_label(DYNAMIC, "as_written", g) == ("reversed" if backwards else "as_written")


def dynamic_maps(words: tuple[str, str], video: tuple[str, str], rng, frames: int = 4) -> torch.Tensor:
    """(|T|, L, H, E=2, F, 8, 8) maps of a colour change: slot k (the prompt's k-th colour
    word) is a blob on the object in the frames showing that colour, diffuse elsewhere."""
    maps = torch.full((2, 2, 2, 2, frames, 8, 8), 0.3)
    y, x = rng.integers(1, 6, size=2)
    for k, word in enumerate(words):
        for f in range(frames):
            if video[0 if f < frames // 2 else 1] == word:
                maps[:, :, :, k, f, y:y + 2, x:x + 2] = 3.0
    return maps + 0.2 * torch.from_numpy(rng.random(maps.shape)).float()


def consistent_maps(words: tuple[str, str], video: tuple[str, str], rng, frames: int = 4) -> torch.Tensor:
    """Slot e = mean of colour word e's map (on the object of that colour) and noun e's map
    (on object e): one blob when the video binds as written, split over both when swapped."""
    maps = torch.full((2, 2, 2, 2, frames, 8, 8), 0.1)
    corners = [(1, 1), (1, 5), (5, 1), (5, 5)]  # the two objects in two of the four corners
    places = [corners[int(i)] for i in rng.permutation(4)[:2]]
    for e, word in enumerate(words):
        for target in (e, video.index(word)):  # noun e's object, then colour word e's
            y, x = places[target]
            maps[:, :, :, e, :, y:y + 2, x:x + 2] += 1.5
    return maps + 0.2 * torch.from_numpy(rng.random(maps.shape)).float()


def read_relative(maps: torch.Tensor, category: str) -> str:
    """Read a (L, H, E, F, s, s) stack the way the head should: dynamic, does the first
    colour word's map peak before the second's; consistent, is slot 1 one blob."""
    m = maps.mean(dim=(0, 1))  # (E, F, s, s)
    peak = m.flatten(-2).max(-1).values / m.flatten(-2).mean(-1)  # (E, F)
    if category == DYNAMIC:
        half = m.shape[1] // 2
        early = peak[0, :half].mean() - peak[0, half:].mean()
        return AS_WRITTEN if early > 0 else "reversed"
    return AS_WRITTEN if (m[0] > 0.5 * m[0].amax(dim=(-2, -1), keepdim=True)).sum() <= 4 * m.shape[1] else "swapped"


def binding_batch(category: str, n: int, rng) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """p+ and p- maps of ``n`` videos: p+ names the video's colours as the video shows them,
    p- is the permuted prompt (dual inversion)."""
    make = dynamic_maps if category == DYNAMIC else consistent_maps
    labels = list(label_set(category))
    pos, neg, rows = [], [], []
    for _ in range(n):
        y = labels[int(rng.integers(len(labels)))]
        video = tuple(y.split(SEP[category]))
        y_neg = permuted_label(category, y)
        pos.append(make(video, video, rng))
        neg.append(make(tuple(y_neg.split(SEP[category])), video, rng))
        rows.append(rows_of(category, [y])[0])
    return torch.stack(pos), torch.stack(neg), rows


@pytest.mark.parametrize("category", BINDING)
def test_augmented_relative_targets_describe_the_augmented_maps(category):
    """After mirrors / time reversal, p+'s and p-'s targets are what the maps show against
    each prompt's own words (a wrong table, e.g. no reversal of "a->b", fails this)."""
    model = relative_model()
    rng = np.random.default_rng(0)
    pos, neg, rows = binding_batch(category, 12, rng)
    for r, p, q in zip(rows, pos, neg):  # the reader agrees with the targets before augmenting
        assert read_relative(p[0], category) == head_label(model, r, "pos") == AS_WRITTEN
        assert read_relative(q[0], category) == head_label(model, r, "neg") == OTHER[category]
    changed = 0
    for seed in range(8):
        (apos, aneg), arows = augment_batch([pos, neg], rows, ("flip_x", "flip_y", "reverse_time"),
                                            np.random.default_rng(seed))
        changed += sum(a["label"] != r["label"] for a, r in zip(arows, rows))
        for r, p, q in zip(arows, apos, aneg):
            assert read_relative(p[0], category) == head_label(model, r, "pos"), (seed, r)
            assert read_relative(q[0], category) == head_label(model, r, "neg"), (seed, r)
    assert (changed > 0) == (category == DYNAMIC)  # only a colour change runs backwards


def test_symmetrized_relative_scores_are_invariant_under_every_symmetry():
    model = relative_model()
    model.eval()
    rng = np.random.default_rng(1)
    step = torch.tensor([0])
    for category in BINDING:
        pos, _, _ = binding_batch(category, 1, rng)
        x = pos[:, 0]
        labels = model.label_sets[category]
        spec_labels = list(label_set(category))  # what the method passes: ignored by the head
        base = model.symmetrized_log_probs(x, step, category, spec_labels)
        assert not torch.allclose(base, model.log_probs(x, step, category))
        for g in symmetry_group(applicable(category)):
            moved = model.symmetrized_log_probs(apply_to_maps(x, g), step, category, spec_labels)
            idx = [labels.index(apply_to_label(category, y, g)) for y in labels]
            assert torch.allclose(moved[:, idx], base, atol=1e-5), (category, g)
        backwards = model.symmetrized_log_probs(apply_to_maps(x, ("reverse_time",)), step, category)
        order = [1, 0] if category == DYNAMIC else [0, 1]
        assert torch.allclose(backwards[:, order], base, atol=1e-5)


# --- training and guidance ---------------------------------------------------------------
def test_relative_heads_learn_binding_from_maps_on_p_plus_and_p_minus(tmp_path):
    rng = np.random.default_rng(2)
    for part, n in (("train", 128), ("val", 32)):
        pos, neg, rows = [], [], []
        for category in BINDING:
            p, q, r = binding_batch(category, n, rng)
            pos += list(p)
            neg += list(q)
            rows += r
        FeatureCache(tmp_path / part).write_shard(0, pos, neg, rows)
    model = relative_model()
    train_classifier(model, FeatureCache(tmp_path / "train"), None, epochs=30, batch_size=32,
                     lr=3e-3, augment=["flip_x", "flip_y", "reverse_time"])
    vpos, vneg, vrows = FeatureCache(tmp_path / "val").load()
    acc_pos, acc_neg = accuracy(model, vpos, vrows), accuracy(model, vneg, vrows)
    for category in BINDING:
        assert acc_pos[category] >= 0.9 and acc_neg[category] >= 0.9, (acc_pos, acc_neg)


@pytest.mark.parametrize("prompt", ["a red circle and a blue square", "a triangle changing from green to red"])
def test_cvg_guides_a_relative_head_towards_as_written(gen, tmp_path, prompt):
    from cvg_bench import registry
    from cvg_bench.generators.base import StepContext

    features = FeatureSpec(steps=(0, 1), layers=tuple(gen.attention_layers()), heads=(0, 1),
                           num_inference_steps=STEPS, map_size=8, max_entities=2)
    torch.manual_seed(0)
    folder = CVGClassifier(features, {c: list(label_set(c)) for c in BINDING}, {"name": "none"},
                           num_layer_heads=2, frames=4,
                           head_types={c: "relative" for c in BINDING}).save(tmp_path / "clf")
    method = registry.build("method", {"name": "cvg", "classifier": str(folder),
                                       "guided_steps": 1, "eta": 0.02})
    spec = parse(prompt)
    state = method.prepare(gen, spec)
    assert state["target"] == 0 and method.classifier.label_sets[spec.category][0] == AS_WRITTEN
    assert state["tokens"].entity_tokens == kp_tokens(gen, spec).entity_tokens
    t = gen.timesteps()[0]
    ctx = StepContext(0, STEPS, torch.tensor(t), gen.initial_latents(0), spec,
                      run_attention=lambda z, sel=None: gen.capture(z, t, spec, sel))

    def energy(latents):
        with torch.no_grad():
            attn = ctx.run_attention(latents, state["selection"])
            assert entity_maps(attn, state["tokens"], features)[1].tolist() == [True, True]
            return float(method.energy(attn, state, ctx))

    before = energy(ctx.latents)
    assert np.isfinite(before)
    after = energy(method.make_hook(gen, spec)(ctx))
    assert after < before


def test_classifier_pipeline_trains_relative_binding_heads(tmp_path, monkeypatch):
    """`train component=classifier` on the binding categories with the config's relative
    heads, p- drawn as the permutation; the held-out evaluation's p+ are held-out compositions
    (their swaps never are, so its p- come from any split)."""
    from test_cvg_sources import tiny_cfg

    from cvg_bench.cvg.pipeline import train_cvg_classifier
    from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator

    gen_dir = tmp_path / "gen"
    TinyGenerator.random(TEST_CONFIG).pipe.save_pretrained(gen_dir)
    cfg = tiny_cfg(tmp_path, gen_dir, "binding")
    assert {cfg.head_types[c] for c in BINDING} == {"relative"}
    cfg.categories = list(BINDING)
    cfg.data.update({"train": 4, "val": 4, "split": "seen", "shard_size": 4, "heldout_eval": 4})
    cfg.optim = {"epochs": 1, "batch_size": 4, "lr": 1e-3}
    report = train_cvg_classifier(cfg)
    rows = FeatureCache(Path(report["cache"]) / "train").load()[2]
    assert {r["category"] for r in rows} == set(BINDING)
    held = FeatureCache(Path(report["cache"]) / "heldout").load()[2]
    for r in rows + held:
        assert r["negative_label"] == permuted_label(r["category"], r["label"])
    assert all(grammar.is_heldout(grammar.parse(r["prompt"])) for r in held)
    assert not any(grammar.is_heldout(grammar.parse(r[k])) for r in rows for k in ("prompt", "negative_prompt"))
    assert report["dual"]["n_heldout"] == 4
    for category in BINDING:
        assert 0.0 <= report["dual"]["val_acc_pos"][category] <= 1.0
    clf = CVGClassifier.load(cfg.out)
    assert clf.head_types == {c: "relative" for c in BINDING}
    assert clf.label_sets[DYNAMIC] == ["as_written", "reversed"]


SEVEN = {"spatial_relationships": "a green circle on the left of a blue square",
         "motion_binding": "a red circle moving left and a blue square moving up",
         "action_binding": "a red circle growing and a blue square shrinking",
         "object_interactions": "a red circle approaching a blue square",
         "generative_numeracy": "two red circles and one blue square",
         CONSISTENT: "a red circle and a blue square",
         DYNAMIC: "a square changing from green to red"}


def test_one_classifier_guides_all_seven_categories(gen, tmp_path):
    """Heads for every shapes category with the config's head types: each prompt's K(p) fills
    its slots, the target is the prompt's own label (as_written for binding), and one guided
    step lowers -log s_t[y] on a random classifier."""
    from omegaconf import OmegaConf

    from cvg_bench import registry
    from cvg_bench.cvg.pipeline import _union_labels
    from cvg_bench.generators.base import StepContext

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/component/classifier.yaml")
    assert set(SEVEN) == set(grammar.CATEGORIES)
    features = FeatureSpec(steps=(0, 1), layers=tuple(gen.attention_layers()), heads=(0, 1),
                           num_inference_steps=STEPS, map_size=8, max_entities=2)
    torch.manual_seed(0)
    folder = CVGClassifier(features, {c: _union_labels(c, label_set) for c in SEVEN}, {"name": "none"},
                           num_layer_heads=2, frames=4,
                           head_types=dict(OmegaConf.to_container(cfg.head_types))).save(tmp_path / "clf")
    method = registry.build("method", {"name": "cvg", "classifier": str(folder),
                                       "guided_steps": 1, "eta": 0.05})
    assert set(method.supported_categories) == set(SEVEN)
    t = gen.timesteps()[0]
    for category, prompt in SEVEN.items():
        spec = parse(prompt)
        assert spec.category == category
        state = method.prepare(gen, spec)
        want = AS_WRITTEN if category in BINDING else spec.label
        assert method.classifier.label_sets[category][state["target"]] == want, category
        ctx = StepContext(0, STEPS, torch.tensor(t), gen.initial_latents(0), spec,
                          run_attention=lambda z, sel=None, s=spec: gen.capture(z, t, s, sel))

        def energy(latents):
            with torch.no_grad():
                attn = ctx.run_attention(latents, state["selection"])
                assert entity_maps(attn, state["tokens"], features)[1].tolist() == [True, True], category
                return float(method.energy(attn, state, ctx))

        before = energy(ctx.latents)
        after = energy(method.make_hook(gen, spec)(ctx))
        assert np.isfinite(before) and after < before, (category, before, after)
