"""Self-supervised pre-training of the frozen `video-encoder` backbone (no labels, no oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cvg_bench.backbones.pretrain_video_encoder import hide, make_examples, pretrain_video_encoder
from cvg_bench.backbones.video_encoder import VideoEncoder
from cvg_bench.shapes.grammar import parse
from cvg_bench.shapes.render import RenderConfig, coverage, plan_scene, render

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_coverage_is_what_the_renderer_drew_one_channel_per_colour():
    spec = parse("a red circle on the left of a blue square")
    plan = plan_scene(spec, np.random.default_rng([3, 0]), 4)
    cov = coverage(plan, 32, 3)
    assert cov.shape == (4, 3, 32, 32) and cov.min() >= 0 and cov.max() <= 1
    assert cov[:, 0].sum() > 0 and cov[:, 1].sum() > 0 and cov[:, 2].sum() == 0
    video = render(spec, seed=3, cfg=RenderConfig(frames=4, size=32)).astype(np.float32)
    red = video[..., 0] - video[..., 2]  # red pixels are where channel 0 is, blue where channel 1 is
    assert (red * cov[:, 0]).sum() > 0 > (red * cov[:, 1]).sum()
    ys, xs = np.nonzero(cov[0, 0] > 0.5)
    ys2, xs2 = np.nonzero(cov[0, 1] > 0.5)
    assert xs.mean() < xs2.mean()  # the red circle is on the left


def test_examples_are_seen_compositions_and_hide_masks_frames_and_shuffles_channels():
    vols = make_examples(14, seed=0, frames=4, size=32, map_size=8, channels=3)
    assert vols.shape == (14, 4, 3, 8, 8) and 0 <= float(vols.min()) and float(vols.max()) <= 1
    assert (vols[:, :, 0].sum(dim=(1, 2, 3)) > 0).all()  # every prompt has a first colour
    hidden, perm = hide(vols, torch.Generator().manual_seed(0))
    kept = hidden.flatten(2).abs().sum(-1) > 0  # (videos, frames)
    assert kept.any(1).all() and not kept.all()
    assert {tuple(p.tolist()) for p in perm} != {(0, 1, 2)}


def test_pretraining_learns_without_labels_and_writes_weights_the_backbone_loads(tmp_path):
    out = tmp_path / "enc.safetensors"
    cfg = dict(seed=0, train=64, val=16, frames=4, size=32, map_size=8, channels=3, width=8,
               out_dim=16, epochs=4, batch_size=16, lr=3e-3, num_threads=None, out=str(out))
    report = pretrain_video_encoder(cfg)
    assert out.is_file() and report["objective"] == "masked_frame_reconstruction"
    assert report["history"][-1]["val_loss"] < report["history"][0]["val_loss"]  # it learned
    assert json.loads(out.with_suffix(".json").read_text())["config"]["width"] == 8
    enc = VideoEncoder(4, 8, width=8, out_dim=16, weights=str(out))
    fresh = VideoEncoder(4, 8, width=8, out_dim=16, weights=None)
    assert any(not torch.equal(a, b) for a, b in zip(enc.state_dict().values(),
                                                     fresh.state_dict().values()))

