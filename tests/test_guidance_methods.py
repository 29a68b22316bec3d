"""Guidance methods on a random tiny generator: each energy falls after its own step."""

from __future__ import annotations

import pytest
import torch

from cvg_bench import registry
from cvg_bench.cvg.classifier import CVGClassifier
from cvg_bench.cvg.features import FeatureSpec
from cvg_bench.generators.base import StepContext
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator
from cvg_bench.shapes.grammar import parse

STEPS = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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


def test_guided_sample_runs_and_reports(gen, cvg_classifier):
    spec = parse("a red circle above a blue square")
    method = registry.build("method", {"name": "cvg", "classifier": str(cvg_classifier)})
    hook = method.make_hook(gen, spec)
    out = gen.sample(spec, seed=1, hook=hook)
    assert out.video.shape == (4, 16, 16, 3)
    assert hook.stats.steps == [0, 1] and out.guidance_seconds > 0
