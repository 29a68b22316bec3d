"""Pre-training of the frozen `video-encoder` backbone on rendered shapes layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cvg_bench.backbones.pretrain_video_encoder import (TARGETS, make_examples, mask_targets,
                                                        pretrain_video_encoder)
from cvg_bench.backbones.video_encoder import VideoEncoder

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_targets_of_a_square_moving_right_and_growing():
    mask = np.zeros((4, 20, 20), bool)
    mask[0, 8:10, 2:4] = mask[1, 8:10, 4:6] = True  # 4 px, left
    mask[2, 8:12, 12:16] = mask[3, 8:12, 14:18] = True  # 16 px, right
    t = dict(zip(TARGETS, mask_targets(mask)))
    assert t["present"] == 1.0
    assert t["x_first"] < 0.25 < 0.65 < t["x_last"]
    assert t["y_first"] == pytest.approx(t["y_last"] - 1 / 20, abs=1e-6)
    assert t["log_area_ratio"] == pytest.approx(np.log(17 / 5))
    assert t["components"] == pytest.approx(1 / 3)
    assert not mask_targets(np.zeros((4, 20, 20), bool)).any()


def test_examples_have_one_mask_channel_per_entity():
    vols, tgts = make_examples(7, seed=0, frames=4, size=32, map_size=8, channels=3)
    assert vols.shape == (7, 4, 3, 8, 8) and tgts.shape == (7, 3, len(TARGETS))
    assert 0 <= float(vols.min()) and float(vols.max()) <= 1
    present = tgts[..., 0] > 0
    assert present[:, 0].all()  # every prompt has a first entity
    assert torch.equal(vols.sum(dim=(1, 3, 4)) > 0, present)  # a channel is drawn iff present


def test_pretraining_writes_weights_that_the_backbone_loads(tmp_path):
    out = tmp_path / "enc.safetensors"
    cfg = dict(seed=0, train=14, val=7, frames=4, size=32, map_size=8, channels=3, width=8,
               out_dim=16, epochs=2, batch_size=8, lr=2e-3, num_threads=None, out=str(out))
    report = pretrain_video_encoder(cfg)
    assert out.is_file() and set(report["val_r2"]) == set(TARGETS)
    assert len(report["history"]) == 2
    assert json.loads(out.with_suffix(".json").read_text())["config"]["width"] == 8
    enc = VideoEncoder(4, 8, width=8, out_dim=16, weights=str(out))
    fresh = VideoEncoder(4, 8, width=8, out_dim=16, weights=None)
    assert any(not torch.equal(a, b) for a, b in zip(enc.state_dict().values(),
                                                     fresh.state_dict().values()))
