"""motion scorer: T2V-CompBench's displacement rule on synthetic tracks, the tracker, the
background-shift estimate, and the scorer on a synthetic panning video with a stub detector."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import ndimage

from cvg_bench import registry
from cvg_bench.scorers import motion as mo
from cvg_bench.scorers._common import MODELS_ENV, ScorerNotReady
from cvg_bench.scorers._detection import Detections
from cvg_bench.shapes.grammar import parse
from cvg_bench.types import Entity, PromptSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scorer"


def D(*boxes_and_scores) -> Detections:
    if not boxes_and_scores:
        return Detections()
    arr = np.array(boxes_and_scores, dtype=float)
    return Detections(arr[:, :4], arr[:, 4])


def test_config_file_is_a_scorer_package_and_builds():
    assert (CONFIGS / "motion.yaml").read_text().splitlines()[0] == "# @package scorer.motion"
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "motion.yaml"))
    assert cfg.pop("name") == mo.MotionScorer.registered_name
    registry.check_kwargs("scorer 'motion'", mo.MotionScorer, cfg)
    assert mo.MotionScorer(**cfg).detector.model is None
    with pytest.raises(ValueError, match="background"):
        mo.MotionScorer(background="optical_flow")


def test_direction_rule():
    assert mo.object_direction_score(-0.3, 0.1, "left") == (True, pytest.approx(0.3))
    assert mo.object_direction_score(-0.3, 0.1, "right") == (False, 0.0)
    assert mo.object_direction_score(0.25, -0.05, "right") == (True, pytest.approx(0.25))
    assert mo.object_direction_score(0.4, -0.2, "up") == (True, pytest.approx(0.2))  # y points down
    assert mo.object_direction_score(0.4, -0.2, "down") == (False, 0.0)
    assert mo.object_direction_score(0.0, 0.0, "left") == (False, 0.0)
    with pytest.raises(ValueError):
        mo.object_direction_score(0.1, 0.1, "forward")


def test_video_rule_and_normalisation():
    assert mo.motion_video_score([(True, True, 0.3)]) == pytest.approx(0.3)
    assert mo.motion_video_score([(True, False, 0.0)]) == 0.0
    assert mo.motion_video_score([(False, False, 0.0)]) == -1.0
    assert mo.motion_video_score([(True, True, 0.3), (True, True, 0.5)]) == pytest.approx(0.4)
    assert mo.motion_video_score([(True, True, 0.4), (True, False, 0.0)]) == pytest.approx(0.2)
    assert mo.motion_video_score([(True, True, 0.4), (False, False, 0.0)]) == pytest.approx(0.2)
    assert mo.motion_video_score([(True, False, 0.0), (False, False, 0.0)]) == 0.0
    assert mo.motion_video_score([(False, False, 0.0)] * 2) == -1.0
    assert [mo.motion_to_unit(r) for r in (-1.0, 0.0, 0.5, 1.0)] == pytest.approx([0.0, 0.2, 0.6, 1.0])


def test_tracker_follows_overlap_then_proximity():
    frames = [
        D((0.20, 0.5, 0.1, 0.1, 0.9), (0.8, 0.5, 0.1, 0.1, 0.5)),  # start: the best box
        D((0.8, 0.5, 0.1, 0.1, 0.99), (0.24, 0.5, 0.1, 0.1, 0.4)),  # overlap beats score
        D(),  # missed
        D((0.40, 0.5, 0.1, 0.1, 0.6)),  # no overlap with 0.24: nearest centre within 0.25
        D((0.95, 0.9, 0.1, 0.1, 0.9)),  # too far: skipped
    ]
    track = mo.track_object(frames)
    assert [f for f, _ in track] == [0, 1, 3]
    np.testing.assert_allclose([b[0] for _, b in track], [0.20, 0.24, 0.40])
    assert mo.track_object([D(), D()]) == []


def _texture(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.uniform(0, 255, (size, size, 3)), (1.5, 1.5, 0))
    return np.clip((tex - tex.mean()) * 4 + 110, 0, 255)


def test_phase_shift_recovers_translation_and_ignores_masked_objects():
    bg = _texture()
    dx, dy, conf = mo.phase_shift(bg, np.roll(bg, (2, -3), axis=(0, 1)))
    assert (dx, dy) == (pytest.approx(-3, abs=0.2), pytest.approx(2, abs=0.2)) and conf > 0.3
    # a static bright object over a moving background: the mask keeps it out
    a, b = bg.copy(), np.roll(bg, (0, 4), axis=(0, 1))
    a[20:36, 20:36] = b[20:36, 20:36] = 255
    mask = mo._box_mask((64, 64), [(28 / 64, 28 / 64, 16 / 64, 16 / 64)])
    assert mo.phase_shift(a, b, mask)[0] == pytest.approx(4, abs=0.3)
    flat = np.full((32, 32, 3), 20.0)
    assert mo.phase_shift(flat, flat)[:2] == (0.0, 0.0)


class StubDetector:
    def __init__(self, per_frame):
        self.per_frame, self.calls = per_frame, []
        self.identity, self.model = "stub@0", object()

    def load(self):
        pass

    def detect(self, frames, queries, box_threshold=None):
        self.calls.append(list(queries))
        return self.per_frame[: len(frames)]


def _panning_video(frames: int = 8, size: int = 64, pan: int = -2, step: int = -1):
    """A textured background shifting ``pan`` px per frame and a white 8-px square moving
    ``step`` px per frame in the image; returns (video, stub detections of the square)."""
    bg = _texture(size)
    video, dets = [], []
    for f in range(frames):
        frame = np.roll(bg, pan * f, axis=1).copy()
        x = 30 + step * f
        frame[20:28, x:x + 8] = 255
        video.append(frame.astype(np.uint8))
        dets.append([D(((x + 4) / size, 24 / size, 8 / size, 8 / size, 0.9))])
    return np.stack(video), dets


def test_object_motion_is_judged_relative_to_the_background():
    # the camera pans right (content moves 2 px/frame left); the square moves 1 px/frame left in
    # the image, i.e. 1 px/frame RIGHT relative to the background
    video, dets = _panning_video()
    scorer = mo.MotionScorer(model_id="unused", num_frames=8)
    scorer.detector = StubDetector(dets)
    left = scorer.score(video, parse("a red square moving left"))
    info = left.details["objects"][0]
    assert scorer.detector.calls == [["red square"]]
    assert info["background_dx"] == pytest.approx(-14 / 64, abs=0.01)
    assert info["net_dx"] == pytest.approx(7 / 64, abs=0.01)
    assert left.raw == {"score": 0.0, "direction_accuracy": 0.0, "detection_rate": 1.0}
    assert left.normalised["score"] == pytest.approx(0.2)
    right = scorer.score(video, parse("a red square moving right"))
    assert right.raw["score"] == pytest.approx(7 / 64, abs=0.01)
    assert right.normalised["score"] == pytest.approx(0.2 + 0.8 * right.raw["score"])
    # a static-camera assumption sees the image motion only
    static = mo.MotionScorer(model_id="unused", num_frames=8, background="none")
    static.detector = StubDetector(dets)
    assert static.score(video, parse("a red square moving left")).raw["score"] == pytest.approx(7 / 64)


def test_two_objects_and_metadata_directions():
    video, dets = _panning_video(pan=0, step=2)  # square moves right, static camera
    per_frame = [[d[0], D()] for d in dets]  # the second object is never detected
    scorer = mo.MotionScorer(model_id="unused", num_frames=8)
    scorer.detector = StubDetector(per_frame)
    spec = PromptSpec(prompt_id="motion_binding-0002", prompt="a robot moves right while a car moves up",
                      category="motion_binding", label="right|up",
                      entities=(Entity("robot", "robot"), Entity("car", "car")),
                      meta={"metadata": {"object_1": "robot", "d_1": "right", "object_2": "car", "d_2": "up"}})
    result = scorer.score(video, spec)
    assert scorer.detector.calls == [["robot", "car"]]
    assert result.raw["score"] == pytest.approx(0.5 * 14 / 64, abs=0.005)  # 0.5 x the detected one
    assert result.raw["direction_accuracy"] == 0.5 and result.raw["detection_rate"] == 0.5
    scorer.detector = StubDetector([[D(), D()]] * 8)
    nothing = scorer.score(video, spec)
    assert nothing.raw["score"] == -1.0 and nothing.normalised["score"] == 0.0


def test_other_categories_are_nan_and_missing_weights_fail_early(tmp_path):
    scorer = mo.MotionScorer(model_id=str(tmp_path / "missing"))
    result = scorer.score(np.zeros((4, 16, 16, 3), np.uint8), parse("a red circle above a blue square"))
    assert all(math.isnan(v) for v in result.normalised.values())
    assert "motion_binding" in result.details["skipped"]
    with pytest.raises(ScorerNotReady) as err:
        scorer.check_ready()
    assert "scorer.motion.model_id=" in str(err.value) and MODELS_ENV in str(err.value)
