"""Scorer ``detector``: spatial relationships and generative numeracy from zero-shot detection,
by T2V-CompBench's published rules (``Detection_eval/eval_spatial_relationships.py`` and
``Detection_eval/eval_numeracy.py``, KaiyueSun98/T2V-CompBench).

Frames: ``num_frames`` (16) evenly spaced frames (``np.linspace``, first and last included).
Boxes per object phrase and frame come from :class:`~cvg_bench.scorers._detection.ZeroShotDetector`
(Grounding DINO by default, as the benchmark; OWLv2 also works); boxes of all phrases of a frame
are de-duplicated together (IoU > ``dedup_iou`` keeps the higher score; 0.9 for 2D relations and
numeracy, 0.95 for 3D relations, as the scripts).

Spatial, 2D (left, right, above, below, on, under), per frame, with box centres (cx, cy)
normalised by the frame size, ``dw = cx_1 - cx_2`` and ``dh = cy_1 - cy_2`` (object 1 is the
subject, "object 1 is <label> object 2"):
  ``left``: dw < 0 and |dw| > |dh|; ``right``: dw > 0 and |dw| > |dh|; ``above`` (and ``on``):
  dh < 0 and |dh| > |dw|; ``under`` (and ``below``): dh > 0 and |dh| > |dw|.
  Among the pairs (box of object 1, box of object 2) in the right relation, the one with the
  highest ``0.5 (1 - IoU) + 0.5 (p1 + p2) / 2`` is kept and the frame scores ``1 - IoU`` (the
  objects should not overlap); no such pair: 0; one object undetected: -1; both: -2.
Spatial, 3D (in front of, behind), with a depth model (``depth_model_id``): among pairs whose
  boxes overlap (IoU > 0), object 1 is in front when its mean disparity is larger (Depth Anything
  predicts relative inverse depth; set ``depth_is_disparity=false`` for metric-depth models); the
  best ``0.5 IoU + 0.5 (p1 + p2) / 2`` pair scores ``IoU``; codes 0 / -1 / -2 as in 2D. The
  scripts average the depth inside SAM masks; here the central half of each box is used (no SAM).
  Without a depth model these two labels are NaN (reason in ``details``).
Frame codes map to [0, 1] as the script's ``combine_frame``: -2 -> 0, -1 -> 0.2, 0 -> 0.4,
  s > 0 -> 0.4 + 0.6 s; the video score is their mean over frames.

Numeracy, per frame: boxes per object phrase after de-duplication are counted; with one object
  the frame scores 1 if the count equals the prompt's number, with k objects each correct count
  adds 1/k (the script: 0.5 each for two). The video score is the mean over frames.

Metrics (same keys for both categories; all in [0, 1], higher is better, raw = normalised):
``score`` (the benchmark's per-video score, primary), ``frame_accuracy`` (fraction of frames with
a pair in the right relation / with every count right) and ``detection_rate`` (fraction of frames
where every object has at least one box). Other categories are NOT scored: every metric is NaN
and ``details["skipped"]`` names the categories this scorer scores (leaderboards treat NaN as
missing), so one run can list several scorers over a whole benchmark.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Sequence

import numpy as np

from cvg_bench.registry import register
from cvg_bench.scorers._common import (
    check_video,
    entity_queries,
    hf_download_hint,
    hf_identity,
    label_parts,
    metadata,
    missing_weights,
    nan_result,
    not_ready,
    require_local_folder,
    resolve_model_path,
    sample_indices,
    torch_device,
)
from cvg_bench.scorers._detection import Detections, ZeroShotDetector, dedup_frame, iou
from cvg_bench.scorers.base import Scorer, ScoreResult
from cvg_bench.types import PromptSpec, Video

CATEGORIES = ("spatial_relationships", "generative_numeracy")
METRICS = ("score", "frame_accuracy", "detection_rate")
SPATIAL_2D = ("left", "right", "above", "below", "on", "under")
SPATIAL_3D = ("in front of", "behind")
_SYNONYMS = {"on the left of": "left", "to the left of": "left", "on the right of": "right",
             "to the right of": "right", "on top of": "on", "beneath": "below",
             "underneath": "under"}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10}


# ---------------------------------------------------------------------------------------
# Rules (pure functions on boxes)
def canonical_spatial(label: str | None) -> str:
    """A spatial label in T2V-CompBench's vocabulary ("on the left of" -> "left")."""
    text = re.sub(r"\s+", " ", str(label or "").strip().lower())
    return _SYNONYMS.get(text, text)


def relation_2d(centre1: Sequence[float], centre2: Sequence[float]) -> str:
    """Where object 1 is w.r.t. object 2: "left", "right", "above", "under" or "" (a tie)."""
    dw, dh = centre1[0] - centre2[0], centre1[1] - centre2[1]
    if dw < 0 and abs(dw) > abs(dh):
        return "left"
    if dw > 0 and abs(dw) > abs(dh):
        return "right"
    if dh < 0 and abs(dh) > abs(dw):
        return "above"
    if dh > 0 and abs(dh) > abs(dw):
        return "under"
    return ""


def relation_holds(actual: str, label: str) -> bool:
    """Whether the observed relation satisfies the label ("on" = above, "below" = under)."""
    return actual == {"on": "above", "below": "under"}.get(label, label)


def missing_objects_code(det1: Detections, det2: Detections) -> tuple[float, dict] | None:
    """The frame code when an object was not detected (-2: neither, -1: one of them), else None."""
    if len(det1) == 0 and len(det2) == 0:
        return -2.0, {"relation": None}
    if len(det1) == 0 or len(det2) == 0:
        return -1.0, {"relation": None}
    return None


def spatial_frame_2d(det1: Detections, det2: Detections, label: str) -> tuple[float, dict]:
    """The frame code (-2, -1, 0 or 1 - IoU of the best correct pair) and what was chosen."""
    missing = missing_objects_code(det1, det2)
    if missing is not None:
        return missing
    best: tuple[float, float, int, int] | None = None
    for i, (b1, p1) in enumerate(zip(det1.boxes, det1.scores)):
        for j, (b2, p2) in enumerate(zip(det2.boxes, det2.scores)):
            if relation_holds(relation_2d(b1[:2], b2[:2]), label):
                s = 1.0 - iou(b1, b2)[0]
                total = 0.5 * s + 0.5 * (0.5 * p1 + 0.5 * p2)
                if best is None or total > best[0]:
                    best = (total, s, i, j)
    if best is None:
        top = (int(np.argmax(det1.scores)), int(np.argmax(det2.scores)))
        return 0.0, {"relation": relation_2d(det1.boxes[top[0]][:2], det2.boxes[top[1]][:2])}
    return float(best[1]), {"relation": label, "pair": [best[2], best[3]]}


def box_depth(depth: np.ndarray, box: Sequence[float]) -> float:
    """Mean of ``depth`` (H, W) over the central half (in width and height) of a normalised box."""
    h, w = depth.shape
    cx, cy, bw, bh = box
    x0, x1 = int(math.floor((cx - bw / 4) * w)), int(math.ceil((cx + bw / 4) * w))
    y0, y1 = int(math.floor((cy - bh / 4) * h)), int(math.ceil((cy + bh / 4) * h))
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))
    x1, y1 = max(x0 + 1, min(x1, w)), max(y0 + 1, min(y1, h))
    return float(depth[y0:y1, x0:x1].mean())


def spatial_frame_3d(det1: Detections, det2: Detections, depth: np.ndarray, label: str,
                     disparity: bool = True) -> tuple[float, dict]:
    """The frame code for "in front of" / "behind": IoU of the best overlapping pair in the
    right depth order, else 0 / -1 / -2. ``depth`` (H, W): disparity (larger = nearer) when
    ``disparity``, else metric depth (larger = farther)."""
    if label not in SPATIAL_3D:
        raise ValueError(f"3D label must be one of {SPATIAL_3D}, got {label!r}")
    missing = missing_objects_code(det1, det2)
    if missing is not None:
        return missing
    best: tuple[float, float, int, int] | None = None
    for i, (b1, p1) in enumerate(zip(det1.boxes, det1.scores)):
        for j, (b2, p2) in enumerate(zip(det2.boxes, det2.scores)):
            overlap = iou(b1, b2)[0]
            if overlap == 0:
                continue
            d1, d2 = box_depth(depth, b1), box_depth(depth, b2)
            nearer = d1 > d2 if disparity else d1 < d2
            farther = d1 < d2 if disparity else d1 > d2
            if (label == "in front of" and nearer) or (label == "behind" and farther):
                total = 0.5 * (0.5 * p1 + 0.5 * p2) + 0.5 * overlap
                if best is None or total > best[0]:
                    best = (total, overlap, i, j)
    if best is None:
        return 0.0, {"relation": None}
    return float(best[1]), {"relation": label, "pair": [best[2], best[3]]}


def frame_code_to_unit(code: float) -> float:
    """T2V-CompBench's ``combine_frame``: -2 -> 0, -1 -> 0.2, 0 -> 0.4, s > 0 -> 0.4 + 0.6 s."""
    if code < -1:
        return 0.0
    if code < 0:
        return 0.2
    if code == 0:
        return 0.4
    return 0.4 + 0.6 * code


def numeracy_frame(counts: Sequence[int], targets: Sequence[int]) -> float:
    """1/k for each of the k objects whose count is right (1 or 0 for one object)."""
    if len(counts) != len(targets) or not targets:
        raise ValueError(f"{len(counts)} counts for {len(targets)} targets")
    return sum(1.0 for c, t in zip(counts, targets) if int(c) == int(t)) / len(targets)


def numeracy_targets(spec: PromptSpec, n_objects: int) -> list[int]:
    """The number asked for each object: the entities' counts, else the label ("2,3",
    "two/three")."""
    if len(spec.entities) == n_objects and all(e.count >= 1 for e in spec.entities):
        return [int(e.count) for e in spec.entities]
    parts = label_parts(spec.label)
    if len(parts) != n_objects:
        raise ValueError(f"prompt {spec.prompt_id}: cannot pair {n_objects} objects with the "
                         f"label {spec.label!r}")
    return [int(p) if p.isdigit() else _NUMBER_WORDS[p.lower()] for p in parts]


def numeracy_queries(spec: PromptSpec) -> list[str]:
    objects = [o.strip() for o in str(metadata(spec).get("objects", "")).split(",") if o.strip()]
    return objects or entity_queries(spec)


# ---------------------------------------------------------------------------------------
# Depth (optional, for in front of / behind)
class DepthModel:
    """A transformers depth estimator (Depth Anything by default), loaded through from_pretrained."""

    def __init__(self, model_id: str, device: str, scorer: str = "detector") -> None:
        self.model_id, self.device, self.scorer = model_id, device, scorer
        self.model: Any = None
        self.processor: Any = None
        self.identity = f"{model_id}@not-loaded"

    def load(self) -> None:
        if self.model is not None:
            return
        resolved = resolve_model_path(self.model_id)
        try:
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation

            require_local_folder(resolved)
            model = AutoModelForDepthEstimation.from_pretrained(resolved)
            self.processor = AutoImageProcessor.from_pretrained(resolved)
        except Exception as exc:  # noqa: BLE001
            raise not_ready(self.scorer, "depth_model_id", self.model_id, exc,
                            hf_download_hint(self.model_id)) from exc
        self.model = model.to(torch_device(self.device)).eval()
        self.identity = hf_identity(self.model_id, resolved, model)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) map per frame, at the frame's size."""
        import torch
        import torch.nn.functional as F
        from PIL import Image

        self.load()
        out = []
        for frame in frames:
            inputs = self.processor(images=Image.fromarray(frame), return_tensors="pt")
            inputs = inputs.to(self.model.device)
            with torch.no_grad():
                pred = self.model(**inputs).predicted_depth.float()  # (1, h, w)
            pred = F.interpolate(pred[:, None], size=frame.shape[:2], mode="bilinear",
                                 align_corners=False)[0, 0]
            out.append(pred.cpu().numpy())
        return out


# ---------------------------------------------------------------------------------------
@register("scorer", "detector")
class DetectorScorer(Scorer):
    """Zero-shot detection (Grounding DINO / OWLv2): T2V-CompBench spatial and numeracy rules."""

    role: ClassVar[str] = "faithfulness"
    primary: ClassVar[str] = "score"
    higher_is_better: ClassVar[dict[str, bool]] = {m: True for m in METRICS}
    categories: ClassVar[tuple[str, ...] | None] = CATEGORIES

    def __init__(
        self,
        model_id: str = "IDEA-Research/grounding-dino-tiny",
        box_threshold: float = 0.35,
        numeracy_box_threshold: float = 0.4,
        text_threshold: float = 0.25,
        require_full_phrase: bool = True,
        dedup_iou: float = 0.9,
        dedup_iou_3d: float = 0.95,
        num_frames: int = 16,
        depth_model_id: str | None = None,
        depth_is_disparity: bool = True,
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1")
        for key, v in (("numeracy_box_threshold", numeracy_box_threshold), ("dedup_iou", dedup_iou),
                       ("dedup_iou_3d", dedup_iou_3d)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{key}={v} must be in [0, 1]")
        self.detector = ZeroShotDetector(model_id, box_threshold, text_threshold,
                                         require_full_phrase, device, batch_size, "detector")
        self.numeracy_box_threshold = numeracy_box_threshold
        self.dedup_iou, self.dedup_iou_3d, self.num_frames = dedup_iou, dedup_iou_3d, num_frames
        self.depth = DepthModel(depth_model_id, device) if depth_model_id else None
        self.depth_is_disparity = depth_is_disparity

    def check_ready(self) -> None:
        """Loads the detector (and the depth model); raises ScorerNotReady naming what is missing."""
        self.detector.load()
        if self.depth is not None:
            self.depth.load()

    def missing_weights(self) -> Exception | None:
        if self.detector.model is None:
            err = missing_weights("detector", "model_id", self.detector.model_id)
            if err is not None:
                return err
        if self.depth is not None and self.depth.model is None:
            return missing_weights("detector", "depth_model_id", self.depth.model_id)
        return None

    def can_score(self, spec: PromptSpec) -> str | None:
        """Spatial: a known label (in front of / behind need ``depth_model_id``) and two
        objects; numeracy: objects paired with their counts."""
        reason = super().can_score(spec)
        if reason is not None:
            return reason
        try:
            if spec.category == "spatial_relationships":
                label = canonical_spatial(spec.label)
                if label not in SPATIAL_2D + SPATIAL_3D:
                    return (f"spatial label {spec.label!r} is none of "
                            f"{', '.join(SPATIAL_2D + SPATIAL_3D)}")
                if label in SPATIAL_3D and self.depth is None:
                    return (f"label {label!r} needs a depth model: set "
                            "scorer.detector.depth_model_id=<local copy of "
                            "LiheYoung/depth-anything-large-hf>")
                queries = entity_queries(spec, ("object_1", "object_2"))
                if len(queries) != 2:
                    return f"a spatial prompt needs 2 objects, got {queries}"
            else:
                numeracy_targets(spec, len(numeracy_queries(spec)))
        except (ValueError, KeyError) as exc:
            return str(exc)
        return None

    def version(self) -> str:
        ident = f"detector-v1:{self.detector.identity}"
        if self.depth is not None:
            ident += f"+depth:{self.depth.identity}"
        return ident

    def score(self, video: Video, spec: PromptSpec) -> ScoreResult:
        check_video(video)
        if spec.category == "spatial_relationships":
            return self.score_spatial(video, spec)
        if spec.category == "generative_numeracy":
            return self.score_numeracy(video, spec)
        return nan_result(METRICS, f"scorer 'detector' scores only {', '.join(CATEGORIES)} "
                          f"(T2V-CompBench's detection-based categories), not {spec.category!r}; "
                          "use 'vlm' (attribute binding, action, interaction) or 'motion' "
                          "(motion_binding)")

    def frames(self, video: Video) -> np.ndarray:
        return video[sample_indices(len(video), self.num_frames)]

    # ---- spatial ----
    def score_spatial(self, video: Video, spec: PromptSpec) -> ScoreResult:
        label = canonical_spatial(spec.label)
        if label not in SPATIAL_2D + SPATIAL_3D:
            raise ValueError(f"prompt {spec.prompt_id}: spatial label {spec.label!r} is none of "
                             f"{SPATIAL_2D + SPATIAL_3D}")
        if label in SPATIAL_3D and self.depth is None:
            return nan_result(METRICS, f"label {label!r} needs a depth model: set "
                              "scorer.detector.depth_model_id (e.g. LiheYoung/depth-anything-large-hf)")
        queries = entity_queries(spec, ("object_1", "object_2"))
        if len(queries) != 2:
            raise ValueError(f"prompt {spec.prompt_id}: a spatial prompt needs 2 objects, "
                             f"got {queries}")
        frames = self.frames(video)
        dets = self.detector.detect(frames, queries)
        depths = self.depth(frames) if label in SPATIAL_3D else None
        dedup_iou = self.dedup_iou_3d if depths is not None else self.dedup_iou
        codes, relations, detected = [], [], []
        for f, per_query in enumerate(dets):
            per_query = dedup_frame(per_query, dedup_iou)
            if depths is not None:
                code, info = spatial_frame_3d(per_query[0], per_query[1], depths[f], label,
                                              self.depth_is_disparity)
            else:
                code, info = spatial_frame_2d(per_query[0], per_query[1], label)
            codes.append(code)
            relations.append(info["relation"])
            detected.append(all(len(d) > 0 for d in per_query))
        units = [frame_code_to_unit(c) for c in codes]
        metrics = {"score": float(np.mean(units)),
                   "frame_accuracy": float(np.mean([r == label for r in relations])),
                   "detection_rate": float(np.mean(detected))}
        details = {"label": label, "queries": queries, "frame_codes": [round(c, 4) for c in codes],
                   "frame_relations": relations}
        return ScoreResult(raw=dict(metrics), normalised=dict(metrics), details=details)

    # ---- numeracy ----
    def score_numeracy(self, video: Video, spec: PromptSpec) -> ScoreResult:
        queries = numeracy_queries(spec)
        targets = numeracy_targets(spec, len(queries))
        dets = self.detector.detect(self.frames(video), queries, self.numeracy_box_threshold)
        scores, counts, detected = [], [], []
        for per_query in dets:
            per_query = dedup_frame(per_query, self.dedup_iou)
            c = [len(d) for d in per_query]
            counts.append(c)
            scores.append(numeracy_frame(c, targets))
            detected.append(all(n > 0 for n in c))
        metrics = {"score": float(np.mean(scores)),
                   "frame_accuracy": float(np.mean([s == 1.0 for s in scores])),
                   "detection_rate": float(np.mean(detected))}
        details = {"queries": queries, "targets": targets, "frame_counts": counts}
        return ScoreResult(raw=dict(metrics), normalised=dict(metrics), details=details)
