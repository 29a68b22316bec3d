"""`cogvideox` backend on a tiny random CogVideoXPipeline (2 blocks, T5 of width 32; no download)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cvg_bench import registry
from cvg_bench.generators.base import AttentionSelection, StepContext
from cvg_bench.generators.cogvideox import CogVideoXGenerator
from cvg_bench.generators.tokens import spec_for_words
from cvg_bench.generators.unet3d import WeightsNotFoundError

PROMPT = "a red circle on the left of a blue square"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "generator" / "cogvideox.yaml"
LAYERS = ["transformer_blocks.0.attn1", "transformer_blocks.1.attn1"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def gen() -> CogVideoXGenerator:
    return CogVideoXGenerator.random(seed=0)  # attention_chunk_size=5: 18 video queries -> 4 chunks


@pytest.fixture(scope="module")
def spec():
    return spec_for_words(PROMPT, [["red", "circle"], ["blue", "square"]], ["left"])


def test_registered_and_config_keys_are_accepted():
    assert registry.get("generator", "cogvideox") is CogVideoXGenerator
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg.pop("name") == "cogvideox" and cfg["model"] == CogVideoXGenerator.default_model and cfg["path"] is None
    registry.check_kwargs("generator 'cogvideox'", CogVideoXGenerator, cfg)


def test_sample_runs_and_is_bit_reproducible(gen, spec):
    a, b, c = gen.sample(spec, 1), gen.sample(spec, 1), gen.sample(spec, 2)
    assert a.video.shape == (9, 32, 48, 3) and a.video.dtype == np.uint8
    assert np.array_equal(a.video, b.video) and not np.array_equal(a.video, c.video)


def test_text_block_sums_below_one_and_carries_gradient(gen, spec):
    z = gen.initial_latents(0).requires_grad_(True)
    assert z.shape == (1, 4, 3, 4, 6)  # 9 frames -> 3 latent frames; 32x48 px -> 4x6
    maps = gen.capture(z, gen.timesteps()[0], spec, early_exit=False)
    assert maps.layers == gen.attention_layers() == LAYERS
    assert maps.num_text_keys == 16 and maps.tokens == tuple(range(16))
    for m in maps.maps.values():
        assert m.shape == (2, 16, 3, 2, 3)  # (heads, text keys, frames', h', w')
        text_mass = m.sum(1)  # the share of each video query's attention that goes to the text
        assert float(text_mass.detach().min()) > 0 and float(text_mass.detach().max()) < 1
    k = gen.prompt_tokens(spec).key_tokens
    (grad,) = torch.autograd.grad(sum(m[:, list(k)].pow(2).sum() for m in maps.maps.values()), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("rotary", [False, True], ids=["sincos-2b", "rope-5b"])
def test_maps_are_the_text_block_of_the_joint_softmax(gen, spec, rotary):
    """Recompute the joint softmax independently: the maps are its video-query x text-key
    block, and with the video block each row sums to 1. The output is the original's."""
    g = gen if not rotary else CogVideoXGenerator.random(seed=1, rotary=True)
    z, t, cond = g.initial_latents(4), torch.tensor(g.timesteps()[1]), g.encode_prompt(spec)
    attn = g.denoiser.transformer_blocks[1].attn1
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, args, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        ref_out = g.predict(z, t, cond)
    handle.remove()
    x = torch.cat([seen["encoder_hidden_states"], seen["hidden_states"]], 1)
    q = attn.norm_q(attn.to_q(x).view(1, -1, 2, 16).transpose(1, 2))
    k = attn.norm_k(attn.to_k(x).view(1, -1, 2, 16).transpose(1, 2))
    if rotary:
        from diffusers.models.embeddings import apply_rotary_emb

        rope = seen["image_rotary_emb"]
        q = torch.cat([q[:, :, :16], apply_rotary_emb(q[:, :, 16:], rope)], 2)
        k = torch.cat([k[:, :, :16], apply_rotary_emb(k[:, :, 16:], rope)], 2)
    joint = (q @ k.transpose(-1, -2) / 16**0.5).softmax(-1)[0, :, 16:]  # (heads, 18 video queries, 16 + 18 keys)
    maps = g.capture(z, t, spec, AttentionSelection(layers=(1,)), early_exit=False)
    text_block = maps[LAYERS[1]].permute(0, 2, 3, 4, 1).reshape(2, 18, 16)
    torch.testing.assert_close(text_block, joint[..., :16], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text_block.sum(-1) + joint[..., 16:].sum(-1), torch.ones(2, 18), atol=1e-5, rtol=0)
    assert float(text_block.sum(-1).max()) < 1
    out = {}
    handle = g.denoiser.register_forward_hook(lambda m, a, o: out.update(v=o[0]))
    g.capture(z, t, spec, AttentionSelection(layers=(0, 1), heads=(1,)), early_exit=False)
    handle.remove()
    torch.testing.assert_close(out["v"].permute(0, 2, 1, 3, 4).float(), ref_out, atol=1e-5, rtol=1e-4)
    assert {type(p).__name__ for p in g.denoiser.attn_processors.values()} == {"CogVideoXAttnProcessor2_0"}


def test_chunking_changes_neither_maps_nor_gradient(gen, spec):
    z = gen.initial_latents(5)
    sel = AttentionSelection(layers=(0, 1), heads=(1,), tokens=gen.prompt_tokens(spec).entity_tokens[0])
    results = []
    for chunk in (5, 1024):  # 4 chunks of video queries vs one
        gen.attention_chunk_size = chunk
        try:
            zz = z.clone().requires_grad_(True)
            maps = gen.capture(zz, 999, spec, sel, early_exit=False)
            (grad,) = torch.autograd.grad(sum(m.pow(2).sum() for m in maps.maps.values()), zz)
            results.append((maps, grad))
        finally:
            gen.attention_chunk_size = 5
    (a, ga), (b, gb) = results
    for name in LAYERS:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-4)


def test_unselected_blocks_keep_the_original_processor_and_early_exit_is_exact(gen, spec):
    used = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=n: used.append((name, type(mod.processor).__name__)))
             for n, m in gen.denoiser.named_modules() if n.endswith("attn1")]
    z, t = gen.initial_latents(2), gen.timesteps()[1]
    sel = AttentionSelection(layers=(0,), heads=(0,), tokens=gen.prompt_tokens(spec).key_tokens)
    try:
        full = gen.capture(z, t, spec, sel, early_exit=False)
    finally:
        for h in hooks:
            h.remove()
    assert used == [(LAYERS[0], "CogVideoXJointAttentionCapture"), (LAYERS[1], "CogVideoXAttnProcessor2_0")]
    early = gen.capture(z, t, spec, sel, early_exit=True)
    assert full.stats == {"explicit_layers": 1, "fused_layers": 1, "early_exit": False}
    assert early.stats == {"explicit_layers": 1, "fused_layers": 0, "early_exit": True}
    assert torch.equal(early[LAYERS[0]], full[LAYERS[0]]) and early[LAYERS[0]].shape == (1, 4, 3, 2, 3)


def test_step_hook_and_a_guidance_method_run_unchanged(gen, spec):
    seen: list[StepContext] = []

    def identity(ctx: StepContext) -> torch.Tensor:
        seen.append(ctx)
        return ctx.latents

    base = gen.sample(spec, seed=3)
    assert np.array_equal(base.video, gen.sample(spec, seed=3, hook=identity).video)
    assert [c.step_index for c in seen] == [0, 1, 2, 3]
    method = registry.build("method", {"name": "attend_excite", "guided_steps": 1, "eta": 0.5})
    hook = method.make_hook(gen, spec)
    guided = gen.sample(spec, seed=3, hook=hook)
    assert hook.stats.steps == [0] and np.isfinite(hook.stats.grad_norms).all()
    assert not np.array_equal(base.video, guided.video)


def test_inversion_and_replay_far_better_than_chance(gen):
    video = np.full((9, 32, 48, 3), 20, np.uint8)
    video[:, 4:20, 6:30, 0] = 220
    inv = gen.invert(video, "a red circle", num_inference_steps=8, fixed_point_iters=3)
    assert inv.info["method"] == "ddim" and list(inv.timesteps) == gen.timesteps(8)
    rep = gen.replay(inv)
    noise = dataclasses.replace(inv, trajectory={**inv.trajectory, inv.timesteps[0]: torch.randn_like(inv.z_T)})
    chance = gen.replay(noise)
    # compared in latent space: a random VAE does not reconstruct pixels
    assert rep.latent_mse < 0.01 * chance.latent_mse, (rep.latent_mse, chance.latent_mse)


def test_missing_weights_name_the_model_and_the_config_key(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        CogVideoXGenerator(local_files_only=True, device="cpu")
    assert "THUDM/CogVideoX-2b" in str(err.value) and "configs/generator/cogvideox.yaml" in str(err.value)
    with pytest.raises(WeightsNotFoundError) as err:
        CogVideoXGenerator(path=str(tmp_path / "cog"), device="cpu")
    assert str(tmp_path / "cog") in str(err.value) and "THUDM/CogVideoX-2b" in str(err.value)
