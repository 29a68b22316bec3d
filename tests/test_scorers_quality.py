"""quality scorer: flicker / smoothness against hand-computed values; Fréchet distance and FVD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cvg_bench import registry
from cvg_bench.scorers import quality as q
from cvg_bench.shapes.grammar import parse
from cvg_bench.shapes.render import RenderConfig, render
from cvg_bench.types import PromptSpec
from cvg_bench.video_io import write_mp4

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scorer"
SPEC = PromptSpec(prompt_id="p", prompt="anything", category="spatial_relationships")


def flat_video(values: list[float], size: int = 4) -> np.ndarray:
    """Frames of one constant grey value each."""
    return np.stack([np.full((size, size, 3), v, dtype=np.uint8) for v in values])


def test_config_file_is_a_scorer_package_and_builds():
    text = (CONFIGS / "quality.yaml").read_text()
    assert text.splitlines()[0] == "# @package scorer.quality"
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "quality.yaml"))
    assert cfg.pop("name") == q.QualityScorer.registered_name == "quality"
    registry.check_kwargs("scorer 'quality'", q.QualityScorer, cfg)
    assert q.QualityScorer(**cfg).role == "quality"


def test_flicker_is_mean_absolute_frame_difference():
    # |10 - 0| = 10, |30 - 10| = 20 -> 15
    assert q.flicker_error(flat_video([0, 10, 30])) == pytest.approx(15.0)
    assert q.to_unit(15.0) == pytest.approx(240 / 255)
    assert q.flicker_error(flat_video([7])) == 0.0


def test_interpolation_error_uses_odd_frames_with_both_neighbours():
    # t=1: (0 + 40) / 2 = 20 vs 10 -> 10; t=3 has no t+1
    assert q.interpolation_error(flat_video([0, 10, 40, 50])) == pytest.approx(10.0)
    # t=1 -> 10; t=3: (40 + 0) / 2 = 20 vs 50 -> 30; mean 20
    assert q.interpolation_error(flat_video([0, 10, 40, 50, 0])) == pytest.approx(20.0)
    # a linear ramp is perfectly predicted; frame differencing still sees change
    ramp = flat_video([0, 20, 40, 60, 80])
    assert q.interpolation_error(ramp) == pytest.approx(0.0)
    assert q.flicker_error(ramp) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="at least 3 frames"):
        q.interpolation_error(flat_video([0, 1]))


def test_scorer_keys_directions_and_normalisation():
    scorer = q.QualityScorer()
    static = scorer.score(flat_video([50] * 6), SPEC)
    assert static.raw == {"motion_smoothness": 0.0, "temporal_flickering": 0.0}
    assert static.normalised == {"motion_smoothness": 1.0, "temporal_flickering": 1.0}
    rng = np.random.default_rng(0)
    noisy = scorer.score(rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), SPEC)
    assert noisy.raw["motion_smoothness"] > 50 and noisy.raw["temporal_flickering"] > 50
    assert 0 < noisy.normalised["motion_smoothness"] < 1
    assert scorer.primary in noisy.normalised and scorer.higher_is_better[scorer.primary] is False
    assert noisy.normalised["motion_smoothness"] == pytest.approx((255 - noisy.raw["motion_smoothness"]) / 255)


def test_frechet_distance_closed_form():
    # 1-D: (0 - 3)^2 + 1 + 4 - 2 sqrt(1 * 4) = 10
    assert q.frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([3.0]),
                              np.array([[4.0]])) == pytest.approx(10.0)
    mu = np.array([1.0, 2.0])
    assert q.frechet_distance(mu, np.eye(2), mu + [3, 4], np.eye(2)) == pytest.approx(25.0)
    assert q.frechet_distance(mu, np.eye(2), mu, np.eye(2)) == pytest.approx(0.0, abs=1e-9)


def test_random_encoder_is_fixed_by_its_seed():
    a, b, c = q.RandomVideoEncoder(seed=0), q.RandomVideoEncoder(seed=0), q.RandomVideoEncoder(seed=1)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    videos = [np.random.default_rng(i).integers(0, 256, (5, 20, 24, 3), dtype=np.uint8) for i in range(3)]
    fa = a(videos)
    assert fa.shape == (3, a.dim)
    np.testing.assert_allclose(fa, b(videos))


def test_fvd_separates_sets():
    enc = q.RandomVideoEncoder(seed=0)
    specs = [parse(p) for p in ("a red circle above a blue square", "a green square moving left",
                                "two red circles", "a yellow triangle and a blue square")]
    cfg = RenderConfig(frames=8, size=32)
    shapes_a = [render(s, seed, cfg) for s in specs for seed in (0, 1)]
    shapes_b = [render(s, seed, cfg) for s in specs for seed in (2, 3)]
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, v.shape, dtype=np.uint8) for v in shapes_a]
    close = q.frechet_video_distance(shapes_a, shapes_b, enc)
    far = q.frechet_video_distance(shapes_a, noise, enc)
    assert q.frechet_video_distance(shapes_a, shapes_a, enc) == pytest.approx(0.0, abs=1e-6)
    assert far > 10 * close
    with pytest.raises(ValueError, match="at least 2"):
        q.frechet_video_distance(shapes_a[:1], shapes_b, enc)


def _fake_run(root: Path, videos: list[np.ndarray], prompts: list[str]) -> None:
    for i, (video, prompt) in enumerate(zip(videos, prompts)):
        spec = parse(prompt)
        rel = f"videos/{spec.prompt_id}__s{i}.mp4"
        write_mp4(root / rel, video)
        record = {"prompt_id": spec.prompt_id, "prompt": prompt, "seed": i, "video_path": rel,
                  "error": None}
        (root / "samples").mkdir(parents=True, exist_ok=True)
        (root / "samples" / f"{spec.prompt_id}__s{i}.json").write_text(json.dumps(record))


def test_fvd_against_rendered_shapes(tmp_path):
    prompts = ["a red circle above a blue square", "a green square moving left",
               "a red circle on the left of a blue square", "a green circle moving up"] * 2
    cfg = RenderConfig(frames=8, size=32)
    faithful = [render(parse(p), i, cfg) for i, p in enumerate(prompts)]  # the references themselves
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, v.shape, dtype=np.uint8) for v in faithful]
    _fake_run(tmp_path / "good", faithful, prompts)
    _fake_run(tmp_path / "bad", noise, prompts)
    good = q.fvd_against_shapes(tmp_path / "good")
    bad = q.fvd_against_shapes(tmp_path / "bad")
    assert good["n"] == bad["n"] == len(prompts)
    assert good["encoder"].startswith("random-conv3d(seed=0")
    assert set(good["per_category"]) == {"spatial_relationships", "motion_binding"}
    assert bad["fvd"] > 10 * good["fvd"]  # mp4 coding noise only vs pure noise


def test_scores_flow_into_a_record():
    from cvg_bench.run import score_video

    video = render(parse("a red circle above a blue square"), 0, RenderConfig(frames=8, size=32))
    out = score_video({"quality": q.QualityScorer()}, video, SPEC)
    assert out["quality"] == out["scores_norm"]["quality/motion_smoothness"]
    assert out["faithfulness"] is None and out["evaluators"] == {"quality": q.VERSION}
    json.dumps(out)  # records are JSON
