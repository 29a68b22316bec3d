"""Guidance methods on a random tiny generator: each energy falls after its own step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cvg_bench import registry
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec
from cvg_bench.generators.base import StepContext
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator
from cvg_bench.methods.attend_excite import gaussian_smooth
from cvg_bench.methods.layout_energy import centroids, spread
from cvg_bench.shapes.grammar import parse

STEPS = 3


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def gen() -> TinyGenerator:
    return TinyGenerator.random(TEST_CONFIG, seed=0, num_frames=4, height=16, width=16,
                                num_inference_steps=STEPS)


def context(gen: TinyGenerator, spec, seed: int = 0) -> StepContext:
    t = gen.timesteps()[0]
    latents = gen.initial_latents(seed)
    return StepContext(0, STEPS, torch.tensor(t), latents, spec,
                       run_attention=lambda z, sel=None: gen.capture(z, t, spec, sel))


def energy_at(method, state, ctx, latents) -> float:
    with torch.no_grad():
        return float(method.energy(ctx.run_attention(latents, state["selection"]), state, ctx))


CASES = [
    ("attend_excite", {}, "a red circle on the left of a blue square"),
    ("attend_excite", {}, "a green triangle moving up"),
    ("layout_energy", {"margin": 1.0}, "a red circle on the left of a blue square"),
    ("layout_energy", {"margin": 1.0}, "a red circle below a blue square"),
    ("layout_energy", {"margin": 1.0}, "a red circle moving left and a blue square moving right"),
    ("layout_energy", {"margin": 1.0}, "a red circle growing and a blue square shrinking"),
    ("layout_energy", {"margin": 1.0}, "a red circle approaching a blue square"),
    ("binding_energy", {}, "a red circle and a blue square"),
    ("binding_energy", {}, "a square changing from red to blue"),
]


@pytest.mark.parametrize("name, kwargs, prompt", CASES)
def test_energy_decreases_after_its_own_guidance_step(gen, name, kwargs, prompt):
    spec = parse(prompt)
    method = registry.build("method", {"name": name, "guided_steps": 1, "eta": 0.02, **kwargs})
    state = method.prepare(gen, spec)
    ctx = context(gen, spec)
    before = energy_at(method, state, ctx, ctx.latents)
    hook = method.make_hook(gen, spec)
    updated = hook(ctx)
    assert not torch.equal(updated, ctx.latents)
    after = energy_at(method, state, ctx, updated)
    assert after < before, f"{name} energy {before:.5f} -> {after:.5f}"
    assert hook.stats.steps == [0] and hook.stats.nonfinite_skips == 0


def test_layout_energy_reads_t2vcompbench_direction_labels(gen):
    """T2V-CompBench joins the directions of two moving objects with "|", the shapes world with "/"."""
    spec = parse("a red circle moving left and a blue square moving right")
    t2v = dataclasses.replace(spec, label="left|right",
                              label_set=tuple(y.replace("/", "|") for y in spec.label_set))
    method = registry.build("method", {"name": "layout_energy", "guided_steps": 1, "margin": 1.0})
    state = method.prepare(gen, spec)
    ctx, t2v_ctx = context(gen, spec), context(gen, t2v)
    assert energy_at(method, state, t2v_ctx, t2v_ctx.latents) == energy_at(method, state, ctx, ctx.latents)


@pytest.mark.parametrize("fn", [centroids, spread, gaussian_smooth])
def test_energy_helpers_build_their_grids_on_the_maps_device(fn, monkeypatch):
    """A GPU generator's attention maps live on the GPU: coordinate grids and kernels must be
    made on the maps' device. The meta device stands in for a GPU here; conv2d on meta does not
    compare the kernel's device with the input's as CUDA does, so the test makes it."""
    conv2d = torch.nn.functional.conv2d

    def same_device_conv2d(x, weight, *args, **kwargs):
        assert weight.device == x.device, f"kernel on {weight.device}, maps on {x.device}"
        return conv2d(x, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", same_device_conv2d)
    maps = torch.rand(2, 3, 4, 4).to("meta")
    assert fn(maps).device == maps.device


@pytest.mark.parametrize("name, prompt, message", [
    ("layout_energy", "three red circles", "cannot guide category 'generative_numeracy'"),
    ("binding_energy", "a red circle above a blue square", "cannot guide category 'spatial_relationships'"),
])
def test_unsupported_category_fails_clearly(gen, name, prompt, message):
    method = registry.build("method", {"name": name})
    with pytest.raises(ValueError, match=message):
        method.make_hook(gen, parse(prompt))


def test_steps_after_the_guided_ones_are_left_alone(gen):
    spec = parse("a red circle on the left of a blue square")
    hook = registry.build("method", {"name": "layout_energy", "guided_steps": 1}).make_hook(gen, spec)
    ctx = context(gen, spec)
    ctx.step_index = 1
    assert hook(ctx) is ctx.latents


def test_nonfinite_gradient_is_skipped_and_counted(gen, monkeypatch):
    spec = parse("a red circle on the left of a blue square")
    method = registry.build("method", {"name": "layout_energy", "guided_steps": 1})
    monkeypatch.setattr(type(method), "energy",
                        lambda self, attn, state, ctx: attn.maps[attn.layers[0]].sum() * float("nan"))
    hook = method.make_hook(gen, spec)
    ctx = context(gen, spec)
    out = hook(ctx)
    assert torch.equal(out, ctx.latents) and hook.stats.nonfinite_skips == 1


@pytest.fixture(scope="module")
def cvg_classifier(gen, tmp_path_factory):
    features = FeatureSpec(steps=(0, 1), layers=tuple(gen.attention_layers()), heads=(0, 1),
                           num_inference_steps=STEPS, map_size=8, max_entities=2)
    torch.manual_seed(0)
    model = CVGClassifier(features, {"spatial_relationships": list(parse(
        "a red circle above a blue square").label_set)}, {"name": "none"}, num_layer_heads=2,
        frames=4)
    return model.save(tmp_path_factory.mktemp("clf") / "classifier")


def test_cvg_step_lowers_minus_log_s_y(gen, cvg_classifier):
    spec = parse("a red circle on the left of a blue square")
    method = registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier),
                                       "guided_steps": 1, "eta": 0.02})
    state = method.prepare(gen, spec)
    ctx = context(gen, spec)
    before = energy_at(method, state, ctx, ctx.latents)
    after = energy_at(method, state, ctx, method.make_hook(gen, spec)(ctx))
    assert after < before


def test_cvg_energy_threshold_skips_steps_the_classifier_already_passes(gen, cvg_classifier):
    spec = parse("a red circle on the left of a blue square")
    ctx = context(gen, spec)

    def step_with(threshold):
        method = registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier),
                                           "guided_steps": 1, "eta": 0.02,
                                           "energy_threshold": threshold})
        hook = method.make_hook(gen, spec)
        return hook(ctx), hook.stats, energy_at(method, hook.state, ctx, ctx.latents)

    moved, stats, energy = step_with(None)
    assert not torch.equal(moved, ctx.latents) and len(stats.grad_norms) == 1
    above, stats, _ = step_with(energy * 0.5)  # the energy is above it: the step is taken
    assert torch.equal(above, moved)
    below, stats, _ = step_with(energy * 2.0)  # already below it: z_t is left as it is
    assert torch.equal(below, ctx.latents)
    assert stats.steps == [0] and stats.energies == [pytest.approx(energy)] and stats.grad_norms == []


def test_cvg_classifier_guides_in_eval_mode(gen, tmp_path):
    """An aggregator trained with dropout must not drop anything while guiding."""
    features = FeatureSpec(steps=(0,), layers=tuple(gen.attention_layers()), heads=(0, 1),
                           num_inference_steps=STEPS, map_size=8, max_entities=2)
    spec = parse("a red circle above a blue square")
    torch.manual_seed(0)
    folder = CVGClassifier(features, {"spatial_relationships": list(spec.label_set)},
                           {"name": "none"}, num_layer_heads=2, frames=4,
                           aggregator={"dropout": 0.5}).save(tmp_path / "classifier")
    method = registry.build("method", {"name": "cvg", "classifier": str(folder), "guided_steps": 1})
    assert not method.classifier.training
    state, ctx = method.prepare(gen, spec), context(gen, spec)
    assert energy_at(method, state, ctx, ctx.latents) == energy_at(method, state, ctx, ctx.latents)


def test_cvg_classifier_by_folder_or_shipped_name_and_its_training_data(cvg_classifier):
    from cvg_bench.methods.cvg import ASSETS, DEFAULT_CLASSIFIER, resolve_classifier, shipped_classifiers

    assert resolve_classifier(None) == DEFAULT_CLASSIFIER and resolve_classifier(str(cvg_classifier)) == cvg_classifier
    assert "cvg_classifier_v2" in shipped_classifiers()
    assert resolve_classifier("cvg_classifier_v2") == ASSETS / "cvg_classifier_v2"
    for bad in ("no_such_classifier", "../cvg_classifier_v2"):
        with pytest.raises(FileNotFoundError, match=f"classifier={bad!r}.*shipped one: .*cvg_classifier_v2"):
            resolve_classifier(bad)
    method = registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier)})
    info = method.training_data()  # a classifier saved without data provenance says so
    assert info["classifier"] == str(cvg_classifier) and info["data"] == "unrecorded"
    assert info["backbone"] == "none"
    shipped = registry.build("method", {"name": "cvg", "classifier": "cvg_classifier_v2"})
    info = shipped.training_data()  # the shipped one: no oracle, seen compositions only
    assert info["classifier"] == "cvg_classifier_v2" and info["data"]["split"] == "seen"
    assert info["dual"] is True and (info["data"]["labeller"] or {}).get("name") != "oracle"
    # the default (v3) guides every shapes category, with the same provenance rules
    from cvg_bench.shapes.grammar import CATEGORIES

    default = registry.build("method", {"name": "cvg"})
    assert set(default.supported_categories) == set(CATEGORIES)
    info = default.training_data()
    assert info["classifier"] == "cvg_classifier_v3" and info["data"]["split"] == "seen"
    assert (info["data"]["labeller"] or {}).get("name") == "shapes"


def test_cvg_refuses_what_its_classifier_was_not_trained_for(gen, cvg_classifier):
    with pytest.raises(ValueError, match="needs classifier steps \\[2\\]"):
        registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier), "guided_steps": 3})
    method = registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier)})
    with pytest.raises(ValueError, match="cannot guide category 'motion_binding'"):
        method.make_hook(gen, parse("a red circle moving left"))
    other = TinyGenerator.random(TEST_CONFIG, seed=0, num_frames=4, height=16, width=16,
                                 num_inference_steps=STEPS + 1)
    with pytest.raises(ValueError, match="trained for a 3-step sampler"):
        method.make_hook(other, parse("a red circle above a blue square"))


def test_cvg_refuses_a_generator_its_classifier_was_not_trained_on(gen, tmp_path):
    features = FeatureSpec(steps=(0,), layers=tuple(gen.attention_layers()), heads=(0, 1),
                           num_inference_steps=STEPS, map_size=8, max_entities=2)
    spec = parse("a red circle above a blue square")

    def method_for(trained_on: str, **kw):
        folder = CVGClassifier(features, {"spatial_relationships": list(spec.label_set)}, {"name": "none"},
                               num_layer_heads=2, frames=4, meta={"generator": trained_on}
                               ).save(tmp_path / trained_on.replace(":", "_"))
        return registry.build("method", {"name": "cvg", "classifier": str(folder), "guided_steps": 1, **kw})

    assert method_for(gen.version()).prepare(gen, spec)["target"] >= 0
    with pytest.raises(ValueError, match="trained on the cross-attention maps of generator 'tiny:other'"):
        method_for("tiny:other").prepare(gen, spec)
    assert method_for("tiny:other", allow_other_generator=True).prepare(gen, spec)["target"] >= 0


def test_guided_sample_runs_and_reports(gen, cvg_classifier):
    spec = parse("a red circle above a blue square")
    method = registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier)})
    hook = method.make_hook(gen, spec)
    out = gen.sample(spec, seed=1, hook=hook)
    assert out.video.shape == (4, 16, 16, 3)
    assert hook.stats.steps == [0, 1] and out.guidance_seconds > 0


def test_layout_energy_refuses_labels_it_cannot_express_before_generation():
    from cvg_bench.types import Entity, PromptSpec

    ents = (Entity("a dog", "dog", span=(0, 5), word_spans=((2, 5),)),
            Entity("a car", "car", span=(13, 18), word_spans=((15, 18),)))
    behind = PromptSpec("sr-1", "a dog behind a car", "spatial_relationships", ents,
                        label="behind", label_set=("left", "behind"))
    method = registry.build("method", {"name": "layout_energy"})
    with pytest.raises(ValueError, match="cannot guide prompt 'sr-1'.*label 'behind'"):
        method.check_spec(behind)
    no_label = PromptSpec("oi-1", "two cars collide", "object_interactions", label=None)
    with pytest.raises(ValueError, match="cannot guide prompt 'oi-1'"):
        method.check_spec(no_label)
