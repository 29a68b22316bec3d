"""Scorer ``motion``: motion direction of each prompted object, by T2V-CompBench's motion-binding
rule (``Tracking_eval/motion_binding_score_cal.py``, KaiyueSun98/T2V-CompBench).

The benchmark segments each object in the first frame (Grounded SAM), tracks its points and the
background's points through the video (DOT), and takes the net displacement of the object
relative to the background: ``net = (object's mean point position change) - (background's)``.
An object asked to move left is right when ``net_x < 0`` (up: ``net_y < 0``, image y points down),
and then scores ``|net_x| / W`` (``|net_y| / H`` for up/down); otherwise 0.

Here, without SAM and DOT:

- the object's displacement comes from the same zero-shot detector as the ``detector`` scorer
  (:mod:`cvg_bench.scorers._detection`) on ``num_frames`` evenly spaced frames, linked into a track
  by :func:`track_object` (start: the best box of the first frame where the object is detected;
  then, frame by frame, the box with the largest IoU with the last tracked box, else the nearest
  centre within ``track_max_jump``); displacement = last centre - first centre;
- the background's displacement over the same frames is the sum of frame-to-frame global shifts
  estimated by phase correlation with the objects' boxes masked out (:func:`background_shift`;
  ``background="none"`` assumes a static camera).

Per video (the script's ``cal_score``): one object: undetected -1, else its score; two (k)
objects: the mean over objects of (score if the direction is right else 0), or -1 when no object
is detected. Normalised (the script's ``model_score``): raw < 0 -> 0, else 0.2 + 0.8 raw.

Metrics: ``score`` (raw in {-1} U [0, 1]; normalised in [0, 1]; primary), ``direction_accuracy``
(fraction of objects moving the prompted way) and ``detection_rate`` (fraction of objects
tracked); higher is better for all. Only ``motion_binding`` is scored; other categories give NaN
with the reason in ``details``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import numpy as np

from cvg_bench.registry import register
from cvg_bench.scorers._common import (
    check_video,
    clean,
    entity_queries,
    label_parts,
    metadata,
    missing_weights,
    nan_result,
    sample_indices,
)
from cvg_bench.scorers._detection import Detections, ZeroShotDetector, iou
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.types import PromptSpec, Video

METRICS = ("score", "direction_accuracy", "detection_rate")
DIRECTIONS = ("left", "right", "up", "down")


# ---------------------------------------------------------------------------------------
# Rules
def object_direction_score(net_dx: float, net_dy: float, direction: str) -> tuple[bool, float]:
    """(right direction?, score) of one object; ``net_dx``/``net_dy``: displacement relative to
    the background as fractions of the frame width/height (+x right, +y down)."""
    if direction == "left":
        return net_dx < 0, abs(net_dx) if net_dx < 0 else 0.0
    if direction == "right":
        return net_dx > 0, abs(net_dx) if net_dx > 0 else 0.0
    if direction == "up":
        return net_dy < 0, abs(net_dy) if net_dy < 0 else 0.0
    if direction == "down":
        return net_dy > 0, abs(net_dy) if net_dy > 0 else 0.0
    raise ValueError(f"direction {direction!r} is none of {DIRECTIONS}")


def motion_video_score(objects: Sequence[tuple[bool, bool, float]]) -> float:
    """The raw video score from (detected, right direction, score) per object: -1 when no
    object is detected, else the mean over objects of (score if right else 0)."""
    if not objects:
        raise ValueError("no objects")
    if not any(detected for detected, _, _ in objects):
        return -1.0
    return float(sum(s if (d and ok) else 0.0 for d, ok, s in objects) / len(objects))


def motion_to_unit(raw: float) -> float:
    """T2V-CompBench's ``model_score``: raw < 0 -> 0, else 0.2 + 0.8 raw."""
    return 0.0 if raw < 0 else 0.2 + 0.8 * raw


def track_object(per_frame: Sequence[Detections], min_iou: float = 0.1,
                 max_jump: float = 0.25) -> list[tuple[int, np.ndarray]]:
    """(frame index, box) along one object's track; empty when it is never detected."""
    start = next((f for f, d in enumerate(per_frame) if len(d)), None)
    if start is None:
        return []
    d0 = per_frame[start]
    track = [(start, d0.boxes[int(np.argmax(d0.scores))])]
    for f in range(start + 1, len(per_frame)):
        d = per_frame[f]
        if not len(d):
            continue
        last = track[-1][1]
        overlaps = np.array([iou(last, b)[0] for b in d.boxes])
        if overlaps.max() >= min_iou:
            track.append((f, d.boxes[int(np.argmax(overlaps))]))
            continue
        dist = np.hypot(d.boxes[:, 0] - last[0], d.boxes[:, 1] - last[1])
        if dist.min() <= max_jump:
            track.append((f, d.boxes[int(np.argmin(dist))]))
    return track


# ---------------------------------------------------------------------------------------
# Background (camera) motion
def _box_mask(shape: tuple[int, int], boxes: Sequence[Sequence[float]], grow: float = 0.1) -> np.ndarray:
    """True inside the (slightly grown) normalised boxes."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    for cx, cy, bw, bh in boxes:
        bw, bh = bw * (1 + grow), bh * (1 + grow)
        x0, x1 = int(max(0, math.floor((cx - bw / 2) * w))), int(min(w, math.ceil((cx + bw / 2) * w)))
        y0, y1 = int(max(0, math.floor((cy - bh / 2) * h))), int(min(h, math.ceil((cy + bh / 2) * h)))
        mask[y0:y1, x0:x1] = True
    return mask


def phase_shift(a: np.ndarray, b: np.ndarray, ignore: np.ndarray | None = None,
                min_confidence: float = 0.05) -> tuple[float, float, float]:
    """(dx, dy, confidence): the global translation, in pixels, that takes frame ``a`` to
    frame ``b`` (content at x in ``a`` is at x + dx in ``b``), by phase correlation of the
    grey frames weighted by a Hann window and by a mask that is 0 on ``ignore`` and ramps up
    to 1 away from it (so the masked objects' edges do not count).
    (0, 0, confidence) when the peak is weaker than ``min_confidence`` (flat backgrounds)."""
    from scipy import ndimage

    ga = np.asarray(a, dtype=np.float64).mean(-1) if a.ndim == 3 else np.asarray(a, np.float64)
    gb = np.asarray(b, dtype=np.float64).mean(-1) if b.ndim == 3 else np.asarray(b, np.float64)
    h, w = ga.shape
    weight = np.outer(np.hanning(h), np.hanning(w))
    if ignore is not None and ignore.any():
        ramp = max(2.0, min(h, w) / 16)  # weight rises from 0 at the mask's edge over `ramp` px
        weight = weight * np.clip(ndimage.distance_transform_edt(~ignore) / ramp, 0.0, 1.0)
    if weight.sum() <= 1e-9:
        return 0.0, 0.0, 0.0
    wa = (ga - (ga * weight).sum() / weight.sum()) * weight
    wb = (gb - (gb * weight).sum() / weight.sum()) * weight
    cross = np.conj(np.fft.fft2(wa)) * np.fft.fft2(wb)
    mag = np.abs(cross)
    if mag.max() <= 1e-9:
        return 0.0, 0.0, 0.0
    r = np.fft.ifft2(cross / (mag + 1e-12 * mag.max())).real
    py, px = np.unravel_index(int(np.argmax(r)), r.shape)
    confidence = float(r[py, px])
    if confidence < min_confidence:
        return 0.0, 0.0, confidence

    def refine(m1: float, c: float, p1: float) -> float:  # parabolic sub-pixel peak
        den = m1 - 2 * c + p1
        return 0.0 if abs(den) < 1e-12 else 0.5 * (m1 - p1) / den

    dx = px + refine(r[py, (px - 1) % w], r[py, px], r[py, (px + 1) % w])
    dy = py + refine(r[(py - 1) % h, px], r[py, px], r[(py + 1) % h, px])
    dx = dx - w if dx > w / 2 else dx
    dy = dy - h if dy > h / 2 else dy
    return float(dx), float(dy), confidence


def background_shift(frames: Sequence[np.ndarray], boxes_per_frame: Sequence[Sequence[Sequence[float]]],
                     start: int, end: int) -> tuple[float, float]:
    """Cumulative background translation (pixels) from frame ``start`` to ``end``: the sum of
    the frame-to-frame phase-correlation shifts, the objects' boxes of both frames masked."""
    dx = dy = 0.0
    for f in range(start, end):
        shape = frames[f].shape[:2]
        ignore = _box_mask(shape, list(boxes_per_frame[f]) + list(boxes_per_frame[f + 1]))
        sx, sy, _ = phase_shift(frames[f], frames[f + 1], ignore)
        dx, dy = dx + sx, dy + sy
    return dx, dy


def motion_targets(spec: PromptSpec) -> tuple[list[str], list[str]]:
    """(object phrases, directions) of a motion prompt: T2V-CompBench's object_i / d_i metadata
    when present, else the entities and the label ("left|right" or "left/up")."""
    md = metadata(spec)
    pairs = [(clean(md.get(f"object_{i}")), clean(md.get(f"d_{i}")).lower()) for i in (1, 2)]
    pairs = [(o, d) for o, d in pairs if o and d]
    if pairs:
        objects, directions = [o for o, _ in pairs], [d for _, d in pairs]
    else:
        objects, directions = entity_queries(spec), [d.lower() for d in label_parts(spec.label)]
    if len(objects) != len(directions) or not objects:
        raise ValueError(f"prompt {spec.prompt_id}: cannot pair objects {objects} with the "
                         f"directions {directions} (label {spec.label!r})")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"prompt {spec.prompt_id}: directions {bad} are none of {DIRECTIONS}")
    return objects, directions


@register("scorer", "motion")
class MotionScorer(Scorer):
    """Object motion direction from tracked detections vs background (T2V-CompBench motion rule)."""

    role: ClassVar[str] = "faithfulness"
    primary: ClassVar[str] = "score"
    higher_is_better: ClassVar[dict[str, bool]] = {m: True for m in METRICS}
    categories: ClassVar[tuple[str, ...] | None] = ("motion_binding",)

    def __init__(
        self,
        model_id: str = "IDEA-Research/grounding-dino-tiny",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        require_full_phrase: bool = True,
        num_frames: int = 16,
        track_min_iou: float = 0.1,
        track_max_jump: float = 0.25,
        background: str = "phase_correlation",
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        if num_frames < 2:
            raise ValueError(f"num_frames={num_frames} must be >= 2 to see motion")
        if background not in ("phase_correlation", "none"):
            raise ValueError(f"background={background!r}; accepted: phase_correlation, none")
        self.detector = ZeroShotDetector(model_id, box_threshold, text_threshold,
                                         require_full_phrase, device, batch_size, "motion")
        self.num_frames, self.background = num_frames, background
        self.track_min_iou, self.track_max_jump = track_min_iou, track_max_jump

    def check_ready(self) -> None:
        self.detector.load()

    def missing_weights(self) -> Exception | None:
        if self.detector.model is not None:
            return None
        return missing_weights("motion", "model_id", self.detector.model_id)

    def can_score(self, spec: PromptSpec) -> str | None:
        """A motion prompt whose objects pair up with known directions."""
        reason = super().can_score(spec)
        if reason is not None:
            return reason
        try:
            motion_targets(spec)
        except ValueError as exc:
            return str(exc)
        return None

    def version(self) -> str:
        return f"motion-v1:{self.detector.identity}"

    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        check_video(video)
        if spec.category != "motion_binding":
            return nan_result(METRICS, f"scorer 'motion' scores only motion_binding, not "
                              f"{spec.category!r}; use 'detector' (spatial_relationships, "
                              "generative_numeracy) or 'vlm' (the others)")
        objects, directions = motion_targets(spec)
        frames = video[sample_indices(len(video), self.num_frames)]
        if len(frames) < 2:
            raise ValueError(f"prompt {spec.prompt_id}: motion needs at least 2 frames")
        dets = self.detector.detect(frames, objects)  # [frame][object]
        all_boxes = [[b for d in per_query for b in d.boxes] for per_query in dets]
        per_object, info = [], []
        for k, direction in enumerate(directions):
            track = track_object([dets[f][k] for f in range(len(frames))],
                                 self.track_min_iou, self.track_max_jump)
            if len(track) < 2:
                per_object.append((False, False, 0.0))
                info.append({"object": objects[k], "direction": direction, "tracked_frames": len(track)})
                continue
            (f0, b0), (f1, b1) = track[0], track[-1]
            bx = by = 0.0
            if self.background == "phase_correlation":
                sx, sy = background_shift(frames, all_boxes, f0, f1)
                h, w = frames.shape[1:3]
                bx, by = sx / w, sy / h
            net_dx, net_dy = (b1[0] - b0[0]) - bx, (b1[1] - b0[1]) - by
            ok, s = object_direction_score(net_dx, net_dy, direction)
            per_object.append((True, ok, s))
            info.append({"object": objects[k], "direction": direction, "tracked_frames": len(track),
                         "net_dx": round(float(net_dx), 5), "net_dy": round(float(net_dy), 5),
                         "background_dx": round(float(bx), 5), "background_dy": round(float(by), 5),
                         "correct": bool(ok)})
        raw = motion_video_score(per_object)
        acc = float(np.mean([ok for _, ok, _ in per_object]))
        rate = float(np.mean([d for d, _, _ in per_object]))
        return ScoreResult(raw={"score": raw, "direction_accuracy": acc, "detection_rate": rate},
                           normalised={"score": motion_to_unit(raw), "direction_accuracy": acc,
                                       "detection_rate": rate},
                           details={"objects": info})
