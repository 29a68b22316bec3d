"""PositionalUNet3DConditionModel: a warm start computes the plain UNet3D's function, position
reaches every pixel and frame, save/load through the tiny pipeline, capture unchanged."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet3DConditionModel

from cvg_bench.generators.attention import cross_attention_layers
from cvg_bench.generators.positional_unet3d import PositionalUNet3DConditionModel, fourier_coordinates
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator, build_tiny_pipeline, load_tiny_pipeline
from cvg_bench.generators.tokens import spec_for_words
from cvg_bench.generators.base import AttentionSelection

pytestmark = pytest.mark.usefixtures("torch_one_thread")

UNET = dict(sample_size=8, in_channels=12, out_channels=12, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
            up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)


def _inputs(frames: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 12, frames, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)


def test_zero_initialised_projection_computes_the_plain_unet():
    plain = UNet3DConditionModel(**UNET)
    pos = PositionalUNet3DConditionModel(position_frequencies=3, **UNET)
    missing, unexpected = pos.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["position_proj.bias", "position_proj.weight"] and not unexpected
    x, e = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(x, 10, e).sample, pos(x, 10, e).sample)


def test_position_reaches_every_pixel_and_frame_and_gets_a_gradient():
    feats = fourier_coordinates(frames=4, height=8, width=8, frequencies=3)
    assert feats.shape == (4, 18, 8, 8) and feats.abs().max() <= 1.0
    columns = feats.permute(0, 2, 3, 1).reshape(-1, 18)
    assert torch.unique(columns, dim=0).shape[0] == 4 * 8 * 8  # every (frame, y, x) differs
    pos = PositionalUNet3DConditionModel(position_frequencies=3, **UNET)
    x, e = _inputs()
    pos(x, 10, e).sample.square().mean().backward()
    assert pos.position_proj.weight.grad.abs().sum() > 0
    # once trained (here: set at random), the same input at another frame count still runs
    torch.nn.init.normal_(pos.position_proj.weight, std=0.5)
    x6, e6 = _inputs(frames=6)
    with torch.no_grad():
        assert pos(x6, 10, e6).sample.shape == x6.shape
        plain_like = PositionalUNet3DConditionModel(position_frequencies=3, **UNET)
        plain_like.load_state_dict({k: v for k, v in pos.state_dict().items() if not k.startswith("position_proj")},
                                   strict=False)
        assert not torch.allclose(pos(x, 10, e).sample, plain_like(x, 10, e).sample)


def test_bad_frequency_count_is_an_error():
    with pytest.raises(ValueError, match="position_frequencies=0"):
        PositionalUNet3DConditionModel(position_frequencies=0, **UNET)


def test_tiny_pipeline_round_trip_and_attention_capture(tmp_path):
    pipe = build_tiny_pipeline({**TEST_CONFIG, "position_frequencies": 2}, seed=0)
    assert isinstance(pipe.unet, PositionalUNet3DConditionModel)
    torch.nn.init.normal_(pipe.unet.position_proj.weight, std=0.1)
    pipe.save_pretrained(tmp_path / "p", safe_serialization=True)
    loaded = load_tiny_pipeline(tmp_path / "p")
    assert isinstance(loaded.unet, PositionalUNet3DConditionModel)
    assert loaded.unet.config.position_frequencies == 2
    x, e = torch.randn(1, 12, 4, 8, 8), torch.randn(1, 16, 32)
    saved, back = pipe.unet.state_dict(), loaded.unet.state_dict()
    assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    with torch.no_grad():  # same weights; loaded tensors may take another kernel path (ulp-level)
        torch.testing.assert_close(pipe.unet(x, 5, e).sample, loaded.unet(x, 5, e).sample, atol=1e-5, rtol=1e-5)
    plain = build_tiny_pipeline(TEST_CONFIG, seed=0)
    assert cross_attention_layers(loaded.unet) == cross_attention_layers(plain.unet)
    gen = TinyGenerator(path=str(tmp_path / "p"), num_frames=4, height=16, width=16, num_inference_steps=2)
    spec = spec_for_words("a red circle above a blue square", [["red", "circle"], ["blue", "square"]], ["above"])
    assert gen.sample(spec, 0).video.shape == (4, 16, 16, 3)
    maps = gen.capture(gen.initial_latents(0), gen.timesteps()[0], spec, AttentionSelection())
    assert set(maps.maps) == set(cross_attention_layers(plain.unet))
    assert {m.shape[-3:] for m in maps.maps.values()} == {(4, 8, 8), (4, 4, 4)}
