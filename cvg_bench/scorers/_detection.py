"""Zero-shot detection from transformers, and box geometry, for the ``detector`` and ``motion``
scorers (private module: not a plugin).

Boxes are ``(cx, cy, w, h)`` normalised to [0, 1] by the frame's width and height, as Grounding
DINO outputs them and T2V-CompBench's scripts compare them.

Two model families, picked from the checkpoint's ``config.model_type``:

- ``grounding-dino`` (what T2V-CompBench uses: Grounding DINO Swin-T OGC, on the hub as
  ``IDEA-Research/grounding-dino-tiny``): one forward per (frame, object phrase), the caption
  lower-cased with a final ".", boxes whose best token probability exceeds ``box_threshold``
  (0.35 in the official spatial script, 0.4 in the numeracy one), each labelled with the tokens
  above ``text_threshold`` (0.25). With ``require_full_phrase`` a box counts for a phrase only
  when that label is the whole phrase, as the official scripts' ``phrase.split("(")[0] ==
  phrase_0`` filter does.
- ``owlv2`` / ``owlvit``: one forward per frame with every phrase as a query; a box counts for
  each query whose sigmoid score exceeds ``box_threshold`` (OWL scores are lower than Grounding
  DINO's: 0.1-0.3 is usual). OWLv2 pads frames to a square; boxes are mapped back to the frame.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from cvg_bench.scorers._common import (
    ScorerNotReady,
    hf_download_hint,
    hf_identity,
    not_ready,
    require_local_folder,
    resolve_model_path,
    torch_device,
)

FAMILIES = {"grounding-dino": "grounding-dino", "owlv2": "owl", "owlvit": "owl"}
# (resolved path or hub id, device) -> (model, processor, family): loaded once per process
_LOADED: dict[tuple[str, str], tuple[Any, Any, str]] = {}


# ---------------------------------------------------------------------------------------
# Box geometry (pure numpy; T2V-CompBench's calculate_iou / filter_box)
def iou(box0: Sequence[float], box1: Sequence[float]) -> tuple[float, float]:
    """(IoU, intersection over the smaller area) of two ``(cx, cy, w, h)`` boxes."""
    x0a, x1a = box0[0] - box0[2] / 2, box0[0] + box0[2] / 2
    y0a, y1a = box0[1] - box0[3] / 2, box0[1] + box0[3] / 2
    x0b, x1b = box1[0] - box1[2] / 2, box1[0] + box1[2] / 2
    y0b, y1b = box1[1] - box1[3] / 2, box1[1] + box1[3] / 2
    inter = max(0.0, min(x1a, x1b) - max(x0a, x0b)) * max(0.0, min(y1a, y1b) - max(y0a, y0b))
    area0, area1 = box0[2] * box0[3], box1[2] * box1[3]
    union = area0 + area1 - inter
    if union <= 0:
        return 0.0, 0.0
    smaller = min(area0, area1)
    return float(inter / union), float(inter / smaller) if smaller > 0 else 0.0


def dedup(boxes: Sequence[Sequence[float]], scores: Sequence[float], owners: Sequence[int],
          iou_threshold: float) -> tuple[list[np.ndarray], list[float], list[int]]:
    """T2V-CompBench's ``filter_box``: walk the boxes in order; a box overlapping an already kept
    one with IoU > ``iou_threshold`` replaces it when its score is higher, else is dropped (the
    kept box keeps its slot). Applied across the objects of a prompt (``owners`` = object index),
    so one blob cannot count as two objects."""
    kept_b: list[np.ndarray] = []
    kept_s: list[float] = []
    kept_o: list[int] = []
    for b, s, o in zip(boxes, scores, owners):
        b = np.asarray(b, dtype=float)
        for j in range(len(kept_b)):
            if iou(b, kept_b[j])[0] > iou_threshold:
                if s > kept_s[j]:
                    kept_b[j], kept_s[j], kept_o[j] = b, float(s), int(o)
                break
        else:
            kept_b.append(b)
            kept_s.append(float(s))
            kept_o.append(int(o))
    return kept_b, kept_s, kept_o


@dataclass
class Detections:
    """The boxes one phrase got in one frame: ``boxes`` (n, 4) as (cx, cy, w, h) in [0, 1]."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=float).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=float).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.scores)


def dedup_frame(per_query: Sequence[Detections], iou_threshold: float) -> list[Detections]:
    """:func:`dedup` over all phrases of one frame, boxes regrouped per phrase."""
    boxes = [b for d in per_query for b in d.boxes]
    scores = [s for d in per_query for s in d.scores]
    owners = [q for q, d in enumerate(per_query) for _ in range(len(d))]
    kb, ks, ko = dedup(boxes, scores, owners, iou_threshold)
    out = []
    for q in range(len(per_query)):
        idx = [i for i, o in enumerate(ko) if o == q]
        out.append(Detections(np.array([kb[i] for i in idx]).reshape(-1, 4), [ks[i] for i in idx]))
    return out


def _norm_phrase(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                     b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


# ---------------------------------------------------------------------------------------
# The model
class ZeroShotDetector:
    """A transformers zero-shot detector loaded lazily through ``from_pretrained``."""

    def __init__(self, model_id: str, box_threshold: float, text_threshold: float,
                 require_full_phrase: bool = True, device: str = "cpu", batch_size: int = 8,
                 scorer: str = "detector", key: str = "model_id") -> None:
        if not model_id:
            raise ValueError(f"scorer {scorer!r}: {key} is empty")
        if not 0.0 <= box_threshold <= 1.0 or not 0.0 <= text_threshold <= 1.0:
            raise ValueError(f"thresholds must be in [0, 1], got box={box_threshold}, "
                             f"text={text_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.model_id, self.box_threshold, self.text_threshold = model_id, box_threshold, text_threshold
        self.require_full_phrase, self.device, self.batch_size = require_full_phrase, device, batch_size
        self.scorer, self.key = scorer, key
        self.model: Any = None
        self.processor: Any = None
        self.family: str | None = None
        self._identity: str | None = None

    def load(self) -> None:
        if self.model is not None:
            return
        resolved = resolve_model_path(self.model_id)
        device = torch_device(self.device)
        key = (os.path.abspath(resolved) if os.path.exists(resolved) else resolved, device)
        if key not in _LOADED:  # ``detector`` and ``motion`` of one run share one copy
            try:
                from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

                require_local_folder(resolved)
                model = AutoModelForZeroShotObjectDetection.from_pretrained(resolved)
                processor = AutoProcessor.from_pretrained(resolved)
            except Exception as exc:  # noqa: BLE001 - every load failure becomes one message
                raise not_ready(self.scorer, self.key, self.model_id, exc,
                                hf_download_hint(self.model_id)) from exc
            family = FAMILIES.get(model.config.model_type)
            if family is None:
                raise ScorerNotReady(
                    f"scorer {self.scorer!r}: {self.model_id!r} is a {model.config.model_type!r} "
                    f"model; supported zero-shot detectors: {', '.join(sorted(FAMILIES))}")
            _LOADED[key] = (model.to(device).eval(), processor, family)
        self.model, self.processor, self.family = _LOADED[key]
        self._identity = hf_identity(self.model_id, resolved, self.model)

    @property
    def identity(self) -> str:
        return self._identity or f"{self.model_id}@not-loaded"

    def detect(self, frames: Sequence[np.ndarray], queries: Sequence[str],
               box_threshold: float | None = None) -> list[list[Detections]]:
        """Detections per frame and per query (``[frame][query]``), boxes normalised;
        ``box_threshold`` overrides the configured one for this call."""
        self.load()
        thr = self.box_threshold if box_threshold is None else box_threshold
        if not queries:
            raise ValueError("no object phrases to detect")
        out: list[list[Detections]] = []
        for i in range(0, len(frames), self.batch_size):
            batch = list(frames[i:i + self.batch_size])
            if self.family == "owl":
                out.extend(self._detect_owl(batch, list(queries), thr))
            else:
                per_query = [self._detect_gdino(batch, q, thr) for q in queries]
                out.extend([per_query[q][f] for q in range(len(queries))] for f in range(len(batch)))
        return out

    def _images(self, frames: Sequence[np.ndarray]) -> list:
        from PIL import Image

        return [Image.fromarray(np.ascontiguousarray(f)) for f in frames]

    def _detect_owl(self, frames: list[np.ndarray], queries: list[str],
                    thr: float) -> list[list[Detections]]:
        import torch

        inputs = self.processor(text=[queries] * len(frames), images=self._images(frames),
                                return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        probs = torch.sigmoid(outputs.logits.float()).cpu().numpy()  # (B, boxes, queries)
        boxes = outputs.pred_boxes.float().cpu().numpy()  # (B, boxes, 4) cxcywh, padded square
        result = []
        for b, frame in enumerate(frames):
            h, w = frame.shape[:2]
            bx = boxes[b].copy()
            if self.model.config.model_type == "owlv2":  # boxes are relative to the padded square
                side = max(h, w)
                bx[:, [0, 2]] *= side / w
                bx[:, [1, 3]] *= side / h
            per_query = []
            for q in range(len(queries)):
                keep = probs[b, :, q] > thr
                per_query.append(Detections(bx[keep], probs[b, keep, q]))
            result.append(per_query)
        return result

    def _detect_gdino(self, frames: list[np.ndarray], query: str, thr: float) -> list[Detections]:
        import torch

        caption = query.lower().strip()
        caption = caption if caption.endswith(".") else caption + "."
        inputs = self.processor(images=self._images(frames), text=[caption] * len(frames),
                                return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        results = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=thr,
            text_threshold=self.text_threshold)
        want = _norm_phrase(query)
        out = []
        for r in results:
            boxes = xyxy_to_cxcywh(r["boxes"].float().cpu().numpy())  # normalised (no target size)
            scores = r["scores"].float().cpu().numpy()
            labels = r.get("text_labels", r.get("labels"))
            if self.require_full_phrase:
                keep = np.array([_norm_phrase(str(t)) == want for t in labels], dtype=bool)
                boxes, scores = boxes[keep], scores[keep]
            out.append(Detections(boxes, scores))
        return out
