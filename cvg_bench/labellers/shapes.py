"""`shapes`: a labeller of the shapes world that is not the evaluation scorer.

It reads only colour: each entity of a shapes prompt has its own palette colour, so an
entity is the pixels nearest (in RGB) to that colour, and its track is the per-frame centroid
and area of those pixels. From the tracks: the spatial relation of the two centroids, each
entity's direction of motion, growing / shrinking, and a colour change. It shares no code
with the oracle (``cvg_bench/shapes/oracle.py``: hue segmentation, shape templates,
per-category predicates), so the classifier is not trained on what the oracle scores.
Videos whose evidence is weak or points at two labels are left unlabelled (not used).
"""

from __future__ import annotations

import numpy as np

from cvg_bench.labellers.base import Labelled, Labeller, single
from cvg_bench.registry import register
from cvg_bench.types import PromptSpec
from cvg_bench.video_io import check_video

# The renderer's palette (cvg_bench/shapes/render.py PALETTE), as reference colours.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45), "green": (45, 195, 70), "blue": (50, 90, 235), "yellow": (230, 210, 45),
}
SPATIAL = {"left": "on the left of", "right": "on the right of", "up": "above", "down": "below"}


@register("labeller", "shapes")
class ShapesLabeller(Labeller):
    """Shapes world by colour centroids (spatial, motion, action, colour change); not the oracle."""

    categories = ("spatial_relationships", "motion_binding", "action_binding",
                  "dynamic_attribute_binding")

    def __init__(self, max_distance: float = 110.0, min_area: float = 0.004,
                 min_visible: float = 0.5, min_shift: float = 0.08, dominance: float = 1.5,
                 min_growth: float = 1.25) -> None:
        """``max_distance``: RGB distance to the colour within which a pixel is the entity's;
        ``min_area``: share of the frame an entity needs in a frame to be seen there;
        ``min_visible``: share of frames it must be seen in; ``min_shift``: a relation or a
        motion needs this offset (share of the frame); ``dominance``: its axis must exceed
        the other axis by this factor; ``min_growth``: area ratio of growing/shrinking."""
        for key, value in (("min_area", min_area), ("min_visible", min_visible),
                           ("min_shift", min_shift)):
            if not 0 <= value <= 1:
                raise ValueError(f"shapes labeller: {key}={value!r}; accepted: a number in [0, 1]")
        if dominance < 1 or min_growth < 1 or max_distance <= 0:
            raise ValueError(f"shapes labeller: dominance={dominance!r} and min_growth="
                             f"{min_growth!r} must be >= 1, max_distance={max_distance!r} > 0")
        self.max_distance, self.min_area, self.min_visible = max_distance, min_area, min_visible
        self.min_shift, self.dominance, self.min_growth = min_shift, dominance, min_growth

    def version(self) -> str:
        return (f"shapes-labeller-v1(d={self.max_distance},a={self.min_area},"
                f"v={self.min_visible},s={self.min_shift},k={self.dominance},g={self.min_growth})")

    # --- colour tracks -----------------------------------------------------------------------
    def masks(self, video: np.ndarray) -> dict[str, np.ndarray]:
        """colour -> (F, H, W) bool: pixels nearest to that colour and within max_distance."""
        rgb = video.astype(np.float32)
        names = list(COLOURS)
        ref = np.asarray([COLOURS[c] for c in names], np.float32)
        dist = np.linalg.norm(rgb[..., None, :] - ref, axis=-1)  # (F, H, W, colours)
        nearest = dist.argmin(-1)
        close = dist.min(-1) <= self.max_distance
        return {c: close & (nearest == i) for i, c in enumerate(names)}

    def track(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per frame: centroid (x, y) in units of the frame (NaN where unseen), area share."""
        f, h, w = mask.shape
        area = mask.reshape(f, -1).mean(1)
        ys, xs = np.mgrid[0:h, 0:w]
        cent = np.full((f, 2), np.nan)
        for i in range(f):
            if area[i] >= self.min_area:
                cent[i] = ((xs[mask[i]].mean() + 0.5) / w, (ys[mask[i]].mean() + 0.5) / h)
        return cent, area

    def _direction(self, d: np.ndarray) -> str | None:
        """left/right/up/down of a displacement (x, y), or None (too small, or diagonal)."""
        ax, ay = abs(d[0]), abs(d[1])
        if max(ax, ay) < self.min_shift:
            return None
        if ax >= self.dominance * ay:
            return "left" if d[0] < 0 else "right"
        if ay >= self.dominance * ax:
            return "up" if d[1] < 0 else "down"
        return None

    # --- labels --------------------------------------------------------------------------------
    def label(self, video: np.ndarray, spec: PromptSpec) -> Labelled:
        from cvg_bench.shapes.grammar import composition_of

        video = check_video(video)
        self.check_categories([spec.category])
        comp = composition_of(spec)
        masks = self.masks(video)
        third = max(1, video.shape[0] // 3)
        if spec.category == "dynamic_attribute_binding":
            def dominant(part: slice) -> str:
                return max(COLOURS, key=lambda c: masks[c][part].mean())
            first, last = dominant(slice(0, third)), dominant(slice(-third, None))
            if first == last:
                return Labelled(None, f"no colour change (dominant colour {first} throughout)")
            return single([f"{first}->{last}"], spec.label_set, f"dominant colour {first} -> {last}")
        tracks = []
        for colour, _ in comp.objects:
            cent, area = self.track(masks[colour])
            seen = np.isfinite(cent[:, 0])
            if seen.mean() < self.min_visible:
                return Labelled(None, f"the {colour} entity is seen in {seen.mean():.2f} of the "
                                      f"frames (< min_visible={self.min_visible})")
            tracks.append((cent, area, seen))
        if spec.category == "spatial_relationships":
            (c1, _, s1), (c2, _, s2) = tracks
            both = s1 & s2
            if not both.any():
                return Labelled(None, "the two entities are never seen in one frame")
            offset = np.nanmean(c1[both] - c2[both], axis=0)
            d = self._direction(offset)
            if d is None:
                return Labelled(None, f"no dominant offset {offset.round(3).tolist()}")
            return single([SPATIAL[d]], spec.label_set, f"offset {offset.round(3).tolist()}")
        parts = []
        for (cent, area, seen), (colour, _) in zip(tracks, comp.objects):
            if spec.category == "motion_binding":
                idx = np.flatnonzero(seen)
                k = max(1, len(idx) // 3)
                shift = cent[idx[-k:]].mean(0) - cent[idx[:k]].mean(0)
                d = self._direction(shift)
                if d is None:
                    return Labelled(None, f"the {colour} entity has no clear direction "
                                          f"(shift {shift.round(3).tolist()})")
                parts.append(d)
            else:  # action_binding
                a0, a1 = area[:third].mean(), area[-third:].mean()
                ratio = a1 / max(a0, 1e-9)
                if ratio >= self.min_growth:
                    parts.append("growing")
                elif ratio <= 1 / self.min_growth:
                    parts.append("shrinking")
                else:
                    return Labelled(None, f"the {colour} entity keeps its size (ratio {ratio:.2f})")
        return single(["/".join(parts)], spec.label_set, f"per entity: {parts}")
