"""The `tiny` backend: sampling, reproducibility, save/load, inversion, missing weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cvg_bench import registry
from cvg_bench.generators.pixel_fold import PixelFoldVAE
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator
from cvg_bench.generators.tokens import spec_for_words
from cvg_bench.generators.unet3d import tensor_to_video, video_to_tensor

KW = dict(num_frames=4, height=16, width=16, num_inference_steps=3)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def gen() -> TinyGenerator:
    return TinyGenerator.random(TEST_CONFIG, seed=0, **KW)


@pytest.fixture(scope="module")
def spec():
    return spec_for_words("a red circle above a blue square", [["red", "circle"], ["blue", "square"]], ["above"])


def _video() -> np.ndarray:
    v = np.full((4, 16, 16, 3), 18, np.uint8)
    for f in range(4):
        v[f, 2:8, 2 + f : 8 + f, 0] = 230
        v[f, 9:15, 8:14, 2] = 200
    return v


def test_sample_is_a_uint8_video_and_bit_reproducible(gen, spec):
    a, b, c = gen.sample(spec, 7), gen.sample(spec, 7), gen.sample(spec, 8)
    assert a.video.shape == (4, 16, 16, 3) and a.video.dtype == np.uint8
    assert np.array_equal(a.video, b.video)
    assert not np.array_equal(a.video, c.video)


def test_save_and_load_round_trip(gen, spec, tmp_path):
    gen.pipe.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    assert list((tmp_path / "tiny" / "unet").glob("*.safetensors"))
    loaded = TinyGenerator(path=str(tmp_path / "tiny"), **KW)
    assert np.array_equal(loaded.sample(spec, 5).video, gen.sample(spec, 5).video)
    assert loaded.version().startswith("tiny:") and len(loaded.version()) > 8


def test_registry_builds_tiny_from_its_config(tmp_path, gen):
    gen.pipe.save_pretrained(tmp_path / "w", safe_serialization=True)
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "generator" / "tiny.yaml").read_text())
    assert registry.get("generator", "tiny") is TinyGenerator
    built = registry.build("generator", {**cfg, "path": str(tmp_path / "w"), **KW})
    assert isinstance(built, TinyGenerator)


def test_missing_weights_error_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        TinyGenerator(path=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "tiny_training" in msg


def test_pixel_fold_is_lossless():
    v = _video()
    vae = PixelFoldVAE()
    z = vae.encode(video_to_tensor(v)).latent_dist.mode()
    assert z.shape == (4, 12, 8, 8)
    assert np.array_equal(tensor_to_video(vae.decode(z).sample), v)


def test_inversion_and_replay_reconstruct_far_better_than_chance(gen):
    video = _video()
    inv = gen.invert(video, "a red circle above a blue square", num_inference_steps=10)
    assert list(inv.trajectory) == list(inv.timesteps) == gen.timesteps(10)
    assert inv.latent_at(inv.timesteps[3]).shape == (1, 12, 4, 8, 8)
    rep = gen.replay(inv)
    noise = dataclasses.replace(inv, trajectory={**inv.trajectory, inv.timesteps[0]: torch.randn_like(inv.z_T)})
    chance = gen.replay(noise)
    assert rep.psnr > 20 and rep.psnr > chance.psnr + 10, (rep.psnr, chance.psnr)
    assert list(rep.trajectory) == list(inv.timesteps)
    with pytest.raises(KeyError, match="not on this trajectory"):
        inv.latent_at(12345)


def test_fixed_point_inversion_is_closer(gen):
    video = _video()
    plain = gen.replay(gen.invert(video, "a red circle", 6))
    refined = gen.replay(gen.invert(video, "a red circle", 6, fixed_point_iters=2))
    assert refined.mse < plain.mse


def test_committed_weights_load_and_sample():
    """`make demo` needs no training: the committed pipeline loads from its default path."""
    gen = registry.build("generator", {"name": "tiny", "num_inference_steps": 4})
    from cvg_bench.shapes.grammar import parse

    out = gen.sample(parse("a red circle on the left of a blue square"), seed=0)
    assert out.video.shape == (8, 32, 32, 3) and out.video.dtype == np.uint8
    assert gen.version().startswith("tiny:")
