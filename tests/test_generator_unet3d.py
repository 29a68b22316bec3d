"""ZeroScope / ModelScope backends on a tiny random UNet3D + CLIP + AutoencoderKL (no download)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cvg_bench import registry
from cvg_bench.generators.base import AttentionSelection
from cvg_bench.generators.modelscope import ModelScopeGenerator
from cvg_bench.generators.tokens import spec_for_words
from cvg_bench.generators.unet3d import WeightsNotFoundError
from cvg_bench.generators.zeroscope import ZeroScopeGenerator

PROMPT = "a red circle on the left of a blue square"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def gen() -> ZeroScopeGenerator:
    return ZeroScopeGenerator.random(seed=0)


@pytest.fixture(scope="module")
def spec():
    return spec_for_words(PROMPT, [["red", "circle"], ["blue", "square"]], ["left"])


def test_registered():
    assert registry.get("generator", "zeroscope") is ZeroScopeGenerator
    assert registry.get("generator", "modelscope") is ModelScopeGenerator


def test_sample_runs_and_is_bit_reproducible(gen, spec):
    a, b = gen.sample(spec, 1), gen.sample(spec, 1)
    assert a.video.shape == (4, 16, 16, 3) and a.video.dtype == np.uint8
    assert np.array_equal(a.video, b.video)


def test_maps_shapes_normalisation_and_gradient(gen, spec):
    z = gen.initial_latents(0).requires_grad_(True)
    t = gen.timesteps()[0]
    maps = gen.capture(z, t, spec, early_exit=False)
    assert maps.layers == gen.attention_layers() and len(maps.layers) == 4
    for name, m in maps.maps.items():
        assert m.shape[1:3] == (77, 4) and m.shape[0] == gen.unet.get_submodule(name).heads
        torch.testing.assert_close(m.sum(1), torch.ones_like(m.sum(1)), atol=1e-5, rtol=0)
    assert not any("temp_attentions" in n or "transformer_in" in n for n in maps.layers)
    k = gen.prompt_tokens(spec).key_tokens
    (grad,) = torch.autograd.grad(sum(m[:, list(k)].pow(2).sum() for m in maps.maps.values()), z)
    assert grad.abs().sum() > 0


def test_early_exit_equals_full_pass(gen, spec):
    z = gen.initial_latents(2)
    sel = AttentionSelection(layers=(0, 1), tokens=gen.prompt_tokens(spec).key_tokens)
    early, full = gen.capture(z, 901, spec, sel, early_exit=True), gen.capture(z, 901, spec, sel, early_exit=False)
    assert early.stats["early_exit"]
    for name in full.layers:
        assert torch.equal(early[name], full[name])


def test_inversion_and_replay_far_better_than_chance(gen):
    video = np.full((4, 16, 16, 3), 20, np.uint8)
    video[:, 4:10, 3:9, 0] = 220
    inv = gen.invert(video, "a red circle", num_inference_steps=8, fixed_point_iters=3)
    rep = gen.replay(inv)
    noise = dataclasses.replace(inv, trajectory={**inv.trajectory, inv.timesteps[0]: torch.randn_like(inv.z_T)})
    chance = gen.replay(noise)
    # compared in latent space: a random VAE does not reconstruct pixels
    assert rep.latent_mse < 0.01 * chance.latent_mse, (rep.latent_mse, chance.latent_mse)


def test_missing_weights_name_the_model_and_the_config_key(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        ZeroScopeGenerator(local_files_only=True, device="cpu")
    assert "cerspense/zeroscope_v2_576w" in str(err.value) and "configs/generator/zeroscope.yaml" in str(err.value)
    with pytest.raises(WeightsNotFoundError) as err:
        ModelScopeGenerator(model=str(tmp_path / "ms"), device="cpu")
    assert str(tmp_path / "ms") in str(err.value) and "model" in str(err.value)
