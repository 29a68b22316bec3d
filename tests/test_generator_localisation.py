"""The localisation score that chooses CVG's layers L and steps T."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cvg_bench.generators.localisation as localisation
from cvg_bench.generators.localisation import (MASKED_CATEGORIES, choose, entity_masks,
                                               localisation_rows, map_scores, scene,
                                               shapes_videos, summarise)
from cvg_bench.generators.tiny import TEST_CONFIG, TinyGenerator
from cvg_bench.shapes.grammar import Composition, composition_of, entity_views, spec_of
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


def test_scene_is_the_rendered_video_and_its_plan():
    for seed in range(4):
        cfg = RenderConfig(frames=4, size=32)
        video, plan = scene(SPATIAL, seed, cfg)
        assert np.array_equal(video, render(SPATIAL, seed=seed, cfg=cfg))
        assert len(plan) == 4 and {s.colour for fr in plan for s in fr} == {"red", "blue"}


def test_entity_masks_follow_each_entitys_colour():
    video, plan = scene(SPATIAL, 3, RenderConfig(frames=4, size=32))
    red, blue = entity_masks(plan, SPATIAL, size=32)
    assert red.shape == blue.shape == (4, 32, 32)
    assert red.sum() > 10 and blue.sum() > 10 and not (red & blue).any()
    assert video[red][:, 0].mean() > video[red][:, 2].mean()  # red pixels are red
    assert video[blue][:, 2].mean() > video[blue][:, 0].mean()
    # red is left of blue in every frame
    xs = np.arange(32)
    for f in range(4):
        assert (red[f].sum(0) * xs).sum() / red[f].sum() < (blue[f].sum(0) * xs).sum() / blue[f].sum()


def test_coverage_masks_cover_the_rendered_objects():
    """Masks known by construction match the drawn pixels: non-empty in every frame, disjoint
    between entities, and (nearly) all of the mask's pixels are the entity's palette colour."""
    from cvg_bench.shapes.render import PALETTE

    for video, spec, plan in shapes_videos(len(MASKED_CATEGORIES), seed=1):
        ents = entity_views(composition_of(spec))
        masks = entity_masks(plan, spec, size=video.shape[1])
        assert len(masks) == len(ents) and all(m is not None for m in masks), spec.category
        colours = [e.colour for e in ents]
        for m, colour in zip(masks, colours):
            assert m.shape == video.shape[:3]
            assert m.reshape(len(m), -1).any(axis=1).all(), (spec.category, colour)
            others = [o for j, o in enumerate(masks) if colours[j] != colour]
            assert all(not (m & o).any() for o in others), spec.category
            # each mask pixel is a blend of the entity's colour (share > 1/2) with the background
            # (touching objects, e.g. hitting, also share a few edge pixels)
            pixels = video[m].astype(float)
            bg, rgb = np.asarray(RenderConfig().background, float), np.asarray(PALETTE[colour], float)
            share = (pixels - bg) @ (rgb - bg) / ((rgb - bg) @ (rgb - bg))
            off = np.linalg.norm(pixels - (bg + share[:, None] * (rgb - bg)), axis=1)
            assert share.min() >= 0.48, (spec.category, colour, share.min())
            assert (off <= 3).mean() >= 0.95, (spec.category, colour, (off <= 3).mean())
            assert share.mean() >= 0.75, (spec.category, colour, share.mean())  # mostly the pure colour


def test_localisation_never_imports_the_oracle():
    tree = ast.parse(Path(localisation.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("oracle" in (m or "") for m in imported), imported
    code = ("import sys\n"
            "import cvg_bench.generators.localisation as L\n"
            "for video, spec, plan in L.shapes_videos(len(L.MASKED_CATEGORIES), seed=0):\n"
            "    L.entity_masks(plan, spec, size=video.shape[1])\n"
            "assert 'cvg_bench.shapes.oracle' not in sys.modules, 'oracle imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_rows_cover_every_layer_and_step_and_choose_picks_layers():
    gen = TinyGenerator.random(TEST_CONFIG, num_frames=4, height=16, width=16, num_inference_steps=3)
    video, plan = scene(SPATIAL, 0, RenderConfig(frames=4, size=16))
    rows = localisation_rows(gen, [(video, SPATIAL, plan)], steps=[0, 2])
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
