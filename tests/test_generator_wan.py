"""`wan` backend on a tiny random WanPipeline (2 blocks, UMT5 of width 32, small Wan VAE; no download)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cvg_bench import registry
from cvg_bench.generators.attention import run_capture
from cvg_bench.generators.base import AttentionSelection, StepContext
from cvg_bench.generators.tokens import spec_for_words
from cvg_bench.generators.unet3d import WeightsNotFoundError
from cvg_bench.generators.wan import WanCrossAttentionCapture, WanGenerator

PROMPT = "a red circle on the left of a blue square"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "generator" / "wan.yaml"

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def gen() -> WanGenerator:
    return WanGenerator.random(seed=0)


@pytest.fixture(scope="module")
def spec():
    return spec_for_words(PROMPT, [["red", "circle"], ["blue", "square"]], ["left"])


def test_registered_and_config_keys_are_accepted():
    assert registry.get("generator", "wan") is WanGenerator
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg.pop("name") == "wan" and cfg["model"] == WanGenerator.default_model and cfg["path"] is None
    registry.check_kwargs("generator 'wan'", WanGenerator, cfg)


def test_sample_runs_and_is_bit_reproducible(gen, spec):
    a, b, c = gen.sample(spec, 1), gen.sample(spec, 1), gen.sample(spec, 2)
    assert a.video.shape == (5, 32, 48, 3) and a.video.dtype == np.uint8
    assert np.array_equal(a.video, b.video) and not np.array_equal(a.video, c.video)


def test_maps_shapes_normalisation_and_gradient(gen, spec):
    z = gen.initial_latents(0).requires_grad_(True)
    assert z.shape == (1, 16, 2, 4, 6)  # 5 frames -> 2 latent frames; 32x48 px -> 4x6
    maps = gen.capture(z, gen.timesteps()[0], spec, early_exit=False)
    assert maps.layers == gen.attention_layers() == ["blocks.0.attn2", "blocks.1.attn2"]
    assert maps.num_text_keys == 16 and maps.tokens == tuple(range(16))
    for m in maps.maps.values():
        assert m.shape == (2, 16, 2, 2, 3)  # (heads, text keys, frames', h', w') of the patchified grid
        torch.testing.assert_close(m.sum(1), torch.ones_like(m.sum(1)), atol=1e-5, rtol=0)
    k = gen.prompt_tokens(spec).key_tokens
    (grad,) = torch.autograd.grad(sum(m[:, list(k)].pow(2).sum() for m in maps.maps.values()), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_maps_are_the_softmax_of_the_normed_queries_and_keys_and_the_output_is_unchanged(gen, spec):
    """An independent recomputation of attn2's probabilities; the capture pass's output is the
    original processor's; every processor is back afterwards."""
    z, t, cond = gen.initial_latents(3), torch.tensor(gen.timesteps()[1]), gen.encode_prompt(spec)
    attn = gen.denoiser.blocks[1].attn2
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, args: seen.update(x=args[0], ctx=args[1]))
    with torch.no_grad():
        ref_out = gen.predict(z, t, cond)
    handle.remove()
    q = attn.norm_q(attn.to_q(seen["x"])).unflatten(2, (2, -1)).transpose(1, 2)
    k = attn.norm_k(attn.to_k(seen["ctx"])).unflatten(2, (2, -1)).transpose(1, 2)
    ref = (q @ k.transpose(-1, -2) / 12**0.5).softmax(-1)  # (1, heads, 12 video tokens, 16 keys)
    out = {}
    (maps,) = run_capture(gen.denoiser, lambda: out.update(v=gen.predict(z, t, cond)), AttentionSelection(heads=(1,)),
                          num_frames=2, latent_hw=(2, 3), early_exit=False, available=gen.attention_layers(),
                          processor_factory=WanCrossAttentionCapture)
    torch.testing.assert_close(maps["blocks.1.attn2"][0], ref[0, 1].T.reshape(16, 2, 2, 3), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["v"], ref_out, atol=1e-5, rtol=1e-4)
    assert {type(p).__name__ for p in gen.denoiser.attn_processors.values()} == {"WanAttnProcessor"}


def test_unselected_blocks_keep_the_original_processor(gen, spec):
    used = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=n: used.append((name, type(mod.processor).__name__)))
             for n, m in gen.denoiser.named_modules() if n.endswith(("attn1", "attn2"))]
    try:
        maps = gen.capture(gen.initial_latents(0), gen.timesteps()[0], spec, AttentionSelection(layers=(1,)),
                           early_exit=False)
    finally:
        for h in hooks:
            h.remove()
    assert dict(used) == {"blocks.0.attn1": "WanAttnProcessor", "blocks.0.attn2": "WanAttnProcessor",
                          "blocks.1.attn1": "WanAttnProcessor", "blocks.1.attn2": "WanCrossAttentionCapture"}
    assert maps.stats == {"explicit_layers": 1, "fused_layers": 3, "early_exit": False}


def test_early_exit_equals_full_pass(gen, spec):
    z = gen.initial_latents(2).requires_grad_(True)
    sel = AttentionSelection(layers=(0,), heads=(0,), tokens=gen.prompt_tokens(spec).key_tokens)
    t = gen.timesteps()[1]
    early, full = gen.capture(z, t, spec, sel, early_exit=True), gen.capture(z, t, spec, sel, early_exit=False)
    assert early.stats == {"explicit_layers": 1, "fused_layers": 1, "early_exit": True}
    assert full.stats["fused_layers"] == 3 and not full.stats["early_exit"]
    assert torch.equal(early["blocks.0.attn2"], full["blocks.0.attn2"])
    assert early["blocks.0.attn2"].shape == (1, 4, 2, 2, 3)
    (g_early,) = torch.autograd.grad(early["blocks.0.attn2"].sum(), z)
    (g_full,) = torch.autograd.grad(full["blocks.0.attn2"].sum(), z)
    torch.testing.assert_close(g_early, g_full)


def test_step_hook_and_a_guidance_method_run_unchanged(gen, spec):
    seen: list[StepContext] = []

    def identity(ctx: StepContext) -> torch.Tensor:
        seen.append(ctx)
        return ctx.latents

    base = gen.sample(spec, seed=3)
    assert np.array_equal(base.video, gen.sample(spec, seed=3, hook=identity).video)
    assert [c.step_index for c in seen] == [0, 1, 2, 3]
    assert seen[0].tokens.key_tokens == gen.prompt_tokens(spec).key_tokens
    maps = seen[0].run_attention(seen[0].latents.clone().requires_grad_(True), AttentionSelection(layers=(0,)))
    assert maps.timestep == gen.timesteps()[0]
    method = registry.build("method", {"name": "attend_excite", "guided_steps": 1, "eta": 0.5})
    hook = method.make_hook(gen, spec)
    guided = gen.sample(spec, seed=3, hook=hook)
    assert hook.stats.steps == [0] and np.isfinite(hook.stats.grad_norms).all()
    assert not np.array_equal(base.video, guided.video)


def test_inversion_and_replay_far_better_than_chance(gen):
    video = np.full((5, 32, 48, 3), 20, np.uint8)
    video[:, 4:20, 6:30, 0] = 220
    inv = gen.invert(video, "a red circle", num_inference_steps=8, fixed_point_iters=2)
    assert inv.info["method"] == "euler" and list(inv.timesteps) == gen.timesteps(8)
    assert inv.z_T.shape == inv.z0.shape == (1, 16, 2, 4, 6)
    rep = gen.replay(inv)
    noise = dataclasses.replace(inv, trajectory={**inv.trajectory, inv.timesteps[0]: torch.randn_like(inv.z_T)})
    chance = gen.replay(noise)
    # compared in latent space: a random VAE does not reconstruct pixels
    assert rep.latent_mse < 1e-3 * chance.latent_mse, (rep.latent_mse, chance.latent_mse)
    torch.testing.assert_close(rep.trajectory[inv.timesteps[3]], inv.latent_at(inv.timesteps[3]), atol=1e-3, rtol=0)


def test_missing_weights_name_the_model_and_the_config_key(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        WanGenerator(local_files_only=True, device="cpu")
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in str(err.value) and "configs/generator/wan.yaml" in str(err.value)
    with pytest.raises(WeightsNotFoundError) as err:
        WanGenerator(path=str(tmp_path / "wan"), device="cpu")
    assert str(tmp_path / "wan") in str(err.value) and "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in str(err.value)
    assert "`path`" in str(err.value)
