"""The localisation score that chooses CVG's layers L and steps T."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvg_bench.generators.localisation import (choose, entity_masks, localisation_rows, map_scores,
                                               summarise)
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator
from cvg_bench.shapes.grammar import Composition, spec_of
from cvg_bench.shapes.render import RenderConfig, render

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SPATIAL = spec_of(Composition("spatial_relationships", (("red", "circle"), ("blue", "square")),
                              "on the left of"))


def test_map_equal_to_mask_scores_one_and_uniform_map_scores_chance():
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 2:6, 3:9] = True
    exact = map_scores(torch.from_numpy(mask.astype(np.float32)), mask)
    assert exact["iou"] == pytest.approx(1.0) and exact["mass"] == pytest.approx(1.0)
    uniform = map_scores(torch.ones(2, 4, 4), mask)
    assert uniform["mass"] == pytest.approx(uniform["chance"], rel=1e-5)
    assert uniform["chance"] == pytest.approx(24 / 256)
    elsewhere = torch.zeros(2, 16, 16)
    elsewhere[:, 10:14, 10:16] = 1.0
    assert map_scores(elsewhere, mask)["iou"] == pytest.approx(0.0)


def test_frames_without_the_object_are_skipped():
    mask = np.zeros((2, 8, 8), bool)
    assert map_scores(torch.rand(2, 8, 8), mask) == {}


def test_entity_masks_follow_each_entitys_colour():
    video = render(SPATIAL, seed=3, cfg=RenderConfig(frames=4, size=32))
    red, blue = entity_masks(video, SPATIAL)
    assert red.shape == blue.shape == (4, 32, 32)
    assert red.sum() > 10 and blue.sum() > 10 and not (red & blue).any()
    assert video[red][:, 0].mean() > video[red][:, 2].mean()  # red pixels are red
    assert video[blue][:, 2].mean() > video[blue][:, 0].mean()
    # red is left of blue in every frame
    xs = np.arange(32)
    for f in range(4):
        assert (red[f].sum(0) * xs).sum() / red[f].sum() < (blue[f].sum(0) * xs).sum() / blue[f].sum()


def test_rows_cover_every_layer_and_step_and_choose_picks_layers():
    gen = TinyGenerator.random(TEST_CONFIG, num_frames=4, height=16, width=16, num_inference_steps=3)
    video = render(SPATIAL, seed=0, cfg=RenderConfig(frames=4, size=16))
    rows = localisation_rows(gen, [(video, SPATIAL)], steps=[0, 2])
    layers = gen.attention_layers()
    assert {(r["layer"], r["step"]) for r in rows} == {(l, s) for l in layers for s in (0, 2)}
    assert all(0.0 <= r["iou"] <= 1.0 and 0.0 <= r["mass"] <= 1.0 for r in rows)
    table = summarise(rows)
    chosen = choose(table, num_layers=2, steps=[0])
    assert len(chosen["layers"]) == 2 and set(chosen["layers"]) <= set(layers)
    best = table[table["step"] == 0].sort_values("iou", ascending=False)["layer"].iloc[0]
    assert chosen["layers"][0] == best
    with pytest.raises(ValueError, match="steps \\[1\\] were not measured"):
        choose(table, steps=[1])
