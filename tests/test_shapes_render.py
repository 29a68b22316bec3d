"""The shapes renderer: layout, sizes, determinism, configurable look."""

from __future__ import annotations

import numpy as np
import pytest

from cvg_bench.shapes import grammar
from cvg_bench.shapes.render import MARGIN, PALETTE, RenderConfig, _gap, plan_scene, render

PROMPTS = ["a red circle and a blue square", "a square changing from red to blue",
           "a red circle on the left of a blue square",
           "a red circle moving left and a blue square moving right",
           "a red circle growing and a blue triangle shrinking",
           "a red circle hitting a blue square", "two red circles and three blue triangles"]


def test_default_video_layout() -> None:
    video = render(grammar.parse(PROMPTS[0]), seed=0)
    assert video.dtype == np.uint8 and video.shape == (8, 32, 32, 3)
    cfg = RenderConfig()
    assert (cfg.frames, cfg.size, cfg.noise) == (8, 32, 0.0)


@pytest.mark.parametrize("frames,size", [(16, 64), (5, 24)])
def test_frames_and_size_are_configurable(frames: int, size: int) -> None:
    video = render(grammar.parse(PROMPTS[3]), 0, RenderConfig(frames=frames, size=size))
    assert video.shape == (frames, size, size, 3)


def test_deterministic_and_seed_jittered() -> None:
    spec = grammar.parse(PROMPTS[2])
    assert np.array_equal(render(spec, 3), render(spec, 3))
    assert not np.array_equal(render(spec, 3), render(spec, 4))
    noisy = RenderConfig(noise=0.05, texture=0.05, blur=0.5, colour_jitter=0.03)
    assert np.array_equal(render(spec, 3, noisy), render(spec, 3, noisy))
    # noise and texture change pixels, not the layout (separate random streams)
    clean, dirty = render(spec, 3).astype(int), render(spec, 3, RenderConfig(noise=0.03)).astype(int)
    assert 0 < np.abs(clean - dirty).mean() < 12


def test_dark_background_and_palette_colours() -> None:
    video = render(grammar.parse("a red circle and a blue square"), 1)
    corner = video[:, 0, 0].astype(int)
    assert corner.max() < 40  # dark background
    flat = video.reshape(-1, 3).astype(int)
    for name in ("red", "blue"):
        assert (np.abs(flat - PALETTE[name]).sum(1) < 10).sum() > 20, name
    assert (np.abs(flat - PALETTE["green"]).sum(1) < 10).sum() == 0


@pytest.mark.parametrize("category", grammar.CATEGORIES)
def test_every_composition_lays_out_inside_the_frame(category: str) -> None:
    rng = np.random.default_rng(0)
    for i in range(40):
        spec = grammar.sample_spec(rng, category, "all")
        plan = plan_scene(spec, np.random.default_rng(i), 8)
        assert len(plan) == 8
        n_objects = sum(e.count for e in spec.entities)
        for sprites in plan:
            assert len(sprites) == n_objects
            if category != "object_interactions":  # there the subject touches the object
                assert all(_gap(a, b) > 0.03 for j, a in enumerate(sprites) for b in sprites[j + 1:])
            for s in sprites:
                half = 0.6 * s.size
                assert MARGIN - 1e-9 <= s.x - half and s.x + half <= 1 - MARGIN + 1e-9
                assert MARGIN - 1e-9 <= s.y - half and s.y + half <= 1 - MARGIN + 1e-9


def test_shapes_and_triangles_all_drawn() -> None:
    video = render(grammar.parse("one red triangle"), 0, RenderConfig(size=64))
    red = (video[0, ..., 0] > 150) & (video[0, ..., 1] < 100)
    rows = np.nonzero(red.any(1))[0]
    widths = red[rows].sum(1)
    assert widths[0] < widths[-1]  # apex up: narrow at the top, wide at the base


def test_rejects_tiny_configs() -> None:
    with pytest.raises(ValueError):
        RenderConfig(frames=1)
    with pytest.raises(ValueError):
        RenderConfig(size=8)
