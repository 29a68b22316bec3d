"""Cross-attention capture: shapes, normalisation, gradients, layer choice, early exit, hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvg_bench.generators.attention import cross_attention_layers, is_cross_attention
from cvg_bench.generators.base import AttentionSelection, StepContext
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator
from cvg_bench.generators.tokens import spec_for_words

PROMPT = "a red circle on the left of a blue square"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def gen() -> TinyGenerator:
    torch.manual_seed(0)
    return TinyGenerator.random(TEST_CONFIG, num_frames=4, height=16, width=16, num_inference_steps=3)


@pytest.fixture(scope="module")
def spec():
    return spec_for_words(PROMPT, [["red", "circle"], ["blue", "square"]], ["left"])


@pytest.fixture
def z(gen) -> torch.Tensor:
    return gen.initial_latents(seed=1)


def test_full_maps_have_documented_shapes_and_sum_to_one_over_all_text_keys(gen, spec, z):
    t = gen.timesteps()[1]
    maps = gen.capture(z, t, spec, early_exit=False)
    keys = gen.pipe.tokenizer.model_max_length
    assert maps.layers == gen.attention_layers()
    for name, m in maps.maps.items():
        n_heads = gen.unet.get_submodule(name).heads
        hw = 8 if name.startswith(("down_blocks.0", "up_blocks.1")) else 4  # 16 px folded to 8x8, then 4x4
        assert m.shape == (n_heads, keys, 4, hw, hw), name
        torch.testing.assert_close(m.sum(dim=1), torch.ones_like(m.sum(dim=1)), atol=1e-5, rtol=0)
    assert maps.num_text_keys == keys and maps.tokens == tuple(range(keys))


def test_selection_is_a_slice_of_the_full_maps(gen, spec, z):
    t = gen.timesteps()[0]
    tokens = gen.prompt_tokens(spec).key_tokens
    full = gen.capture(z, t, spec, early_exit=False)
    sel = gen.capture(z, t, spec, AttentionSelection(layers=(1, -1), heads=(0, 1), tokens=tokens), early_exit=False)
    layers = gen.attention_layers()
    assert sel.layers == [layers[1], layers[-1]]
    for name in sel.layers:
        torch.testing.assert_close(sel[name], full[name][[0, 1]][:, list(tokens)])
        assert sel.heads[name] == (0, 1)
        assert float(sel[name].sum(1).max()) < 1.0  # a subset of the keys


def test_capture_leaves_the_model_output_unchanged(gen, spec, z):
    t = torch.tensor(gen.timesteps()[0])
    cond = gen.encode_prompt(spec)
    with torch.no_grad():
        ref = gen.predict(z, t, cond)
    captured = {}

    def forward():
        captured["out"] = gen.predict(z, t, cond)

    from cvg_bench.generators.attention import run_capture

    run_capture(gen.unet, forward, AttentionSelection(heads=(1,)), 4, (8, 8), early_exit=False)
    torch.testing.assert_close(captured["out"], ref, atol=1e-5, rtol=1e-4)
    assert all(type(p).__name__ != "CrossAttentionCapture" for p in gen.unet.attn_processors.values())


def test_gradient_of_a_loss_on_the_maps_reaches_z_t(gen, spec, z):
    z = z.clone().requires_grad_(True)
    tokens = gen.prompt_tokens(spec).entity_tokens[0]
    maps = gen.capture(z, gen.timesteps()[0], spec, AttentionSelection(layers=(0, 1), tokens=tokens))
    loss = sum(m.pow(2).sum() for m in maps.maps.values())
    (grad,) = torch.autograd.grad(loss, z)
    assert grad.shape == z.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_temporal_self_attention_is_never_captured(gen):
    layers = gen.attention_layers()
    assert layers and all(".attentions." in n and n.endswith("attn2") for n in layers)
    temporal = [n for n, _ in gen.unet.named_modules() if n.endswith("attn2") and ("temp_attentions" in n or n.startswith("transformer_in"))]
    assert temporal, "the UNet3D should have temporal attn2 layers"
    assert not set(temporal) & set(layers)
    assert not any(is_cross_attention(gen.unet.get_submodule(n)) for n in temporal)
    assert cross_attention_layers(gen.unet) == layers
    with pytest.raises(ValueError, match="unknown cross-attention layer"):
        gen.capture(gen.initial_latents(0), 999, PROMPT, AttentionSelection(layers=(temporal[0],)))


def test_early_exit_maps_equal_full_pass_and_skip_the_rest(gen, spec, z):
    t = gen.timesteps()[0]
    sel = AttentionSelection(layers=(0, 1), tokens=(1, 2, 3))
    early = gen.capture(z, t, spec, sel, early_exit=True)
    full = gen.capture(z, t, spec, sel, early_exit=False)
    for name in full.layers:
        assert torch.equal(early[name], full[name])
    assert early.stats["early_exit"] and not full.stats["early_exit"]
    n_attention = sum(type(m).__name__ == "Attention" for m in gen.unet.modules())
    assert full.stats["explicit_layers"] == 2
    assert full.stats["fused_layers"] == n_attention - 2  # every other attention call ran SDPA
    assert early.stats["fused_layers"] < full.stats["fused_layers"]


def test_bad_selections_name_the_accepted_values(gen, z):
    with pytest.raises(ValueError, match=r"out of range: this model has 7"):
        gen.capture(z, 999, PROMPT, AttentionSelection(layers=(7,)))
    with pytest.raises(ValueError, match="head indices"):
        gen.capture(z, 999, PROMPT, AttentionSelection(layers=(0,), heads=(9,)))
    with pytest.raises(ValueError, match="token indices"):
        gen.capture(z, 999, PROMPT, AttentionSelection(layers=(0,), tokens=(99,)))


def test_hook_sees_every_step_and_can_replace_z_t(gen, spec):
    seen: list[StepContext] = []

    def identity(ctx: StepContext) -> torch.Tensor:
        seen.append(ctx)
        return ctx.latents

    base = gen.sample(spec, seed=3)
    same = gen.sample(spec, seed=3, hook=identity)
    assert np.array_equal(base.video, same.video)
    assert [c.step_index for c in seen] == [0, 1, 2] and all(c.num_steps == 3 for c in seen)
    assert seen[0].tokens.key_tokens == gen.prompt_tokens(spec).key_tokens

    def guide(ctx: StepContext) -> torch.Tensor:
        z = ctx.latents.detach().requires_grad_(True)
        maps = ctx.run_attention(z, AttentionSelection(layers=(0,), tokens=ctx.tokens.entity_tokens[0]))
        (g,) = torch.autograd.grad(-maps.maps[maps.layers[0]].sum(), z)
        return (z - 50.0 * g).detach()

    guided = gen.sample(spec, seed=3, hook=guide)
    assert not np.array_equal(base.video, guided.video)
    assert guided.guidance_seconds > 0


def test_stacked_resizes_layers_to_one_grid(gen, spec, z):
    maps = gen.capture(z, 999, spec, AttentionSelection(layers=(1, 2), heads=(0, 1), tokens=(2, 3)))
    stacked = maps.stacked(size=(8, 8))
    assert stacked.shape == (2, 2, 2, 4, 8, 8)
