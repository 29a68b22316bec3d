"""The exact judge of shapes-world videos: segmentation, shapes, tracks, integrity, predicates.

1. Colour segmentation: a pixel is foreground when its chroma (max-min of RGB) is high, and
   takes the palette colour of nearest hue (within ``HUE_TOL`` degrees). The dark background,
   grey texture, noise and colour blends at contacts (e.g. purple between red and blue) fall out.
2. Connected components per colour; components smaller than ``MIN_AREA`` of the frame are
   dropped (stray blobs of a blurry generator), holes are filled.
3. Shape fits by template matching: the component's soft mask (brightness over the
   background, normalised by the blob's own, so soft edges count partially) against circle,
   square and triangle templates of the same area and centroid, at several rotations, sharp
   and blurred; the soft IoU per shape. Each blob also records its *bite*: the share of its
   convex hull taken by something else (another colour, a blend, a grey seam). The three
   shapes are convex, so a whole object has no bite; one merged with or overlapped by
   another has.
4. Integrity (strict; :func:`integrity`): a video shows the prompt only if, in every frame,
   every named entity is exactly one object (numeracy: exactly its count) of its colour AND
   its shape, nothing more of that colour and shape, no entity bitten by another (merged or
   overlapping) beyond ``BITE_MARGIN``, each object's size constant within ``SIZE_TOL``
   (growing / shrinking: no reversal beyond it), and the colour constant except the one
   change a dynamic-binding prompt asks for. Tolerances, all stated here: the smallest frame
   of a growing / shrinking object (``ACTION_END_FRAMES``) need not show its shape; the
   frame of a colour change may show neither colour (``CHANGE_FRAMES``).
5. Tracks for the relation: an entity's blob in a frame is the largest blob of its colour,
   preferring its own shape; the category's predicates on the tracks, in units of the
   frame (any size, any frame count). These are the relation *as the old oracle judged it*;
   alone they are a diagnostic (``oracle/relation``), never the faithfulness score.

``passed`` = integrity AND every predicate AND validity >= ``min_validity``. Every threshold
is a fraction of the frame, of the object or of the frame count, so the judge works on videos
of any size and length, from any renderer (``experiments/oracle_accuracy`` measures it both
ways: correct videos pass, broken ones of every kind fail).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import ConvexHull

from cvg_bench.shapes.grammar import Composition, EntityView, composition_of, entity_views
from cvg_bench.types import PromptSpec
from cvg_bench.video_io import check_video

VERSION = "shapes-oracle-v2"  # v2: strict integrity (v1: predicates + validity >= 0.5)

# Palette hue centres in degrees (a little inside the renderer's hues, toward pure RGB hues,
# so that other renderers' "red/green/blue/yellow" are recognised too).
HUES: dict[str, float] = {"red": 0.0, "yellow": 57.0, "green": 125.0, "blue": 232.0}
HUE_TOL = 38.0  # degrees; blends such as purple (~290) or cyan (~180) belong to no colour
MIN_CHROMA = 0.25  # of 255: darker / greyer pixels are background
MIN_AREA = 0.005  # of the frame: smaller components are noise or generator debris
MIN_SHAPE_FIT = 0.5  # soft IoU below which a blob's shape is "unknown"
SHAPE_MARGIN = 0.02  # a shape is "sure" when the runner-up fits this much worse
SHAPE_CLASSES = ("circle", "square", "triangle")

FRAME_FRACTION = 0.75  # per-frame predicates must hold in this fraction of frames
MOVE = 0.12  # a motion counts when it covers this fraction of the frame
STILL = 0.06  # an object is still when it moves less than this
GROWTH = 1.5  # area ratio between the last and first quarter of the video
SEPARATION = 0.05  # minimum centre offset for a spatial relation
CONTACT_PX, CONTACT_FRAC = 1.5, 0.06  # contact: mask gap <= 1.5 px + 6 % of the width
MIN_VALIDITY = 0.5

# Integrity (strict): what a careful person checks before reading the relation.
SHAPE_TOL = 0.02  # a blob is of shape s when s fits within this soft IoU of its best shape
#                   (measured: correct objects lead by >= -0.013, objects of another shape
#                   trail by >= 0.03 from 80 px of area up; below, circle and square blur)
SHAPE_DRIFT = 0.15  # an object's own-shape lead (its fit minus the best other's) varies at most
#                     this much over the video (x1.5 for growing / shrinking objects): no morph
MIN_OWN_FIT = 0.6  # ... and s fits at least this well (a shapeless smear is no circle)
DEBRIS = 0.3  # a blob under this share of the frame's largest blob of the entity is debris
BITE_MARGIN = 0.15  # at most this share of an entity may be hidden by or merged with something else
SIZE_TOL = 1.3  # an object's area stays within this factor of its median (actions: no reversal)
ACTION_END_FRAMES = 1  # a growing (shrinking) object's first (last) frame need not show its shape
CHANGE_FRAMES = 1  # a dynamic-binding change may take this many frames of neither colour
BRIGHT_OTHER = 0.4  # a pixel is "occupied" when it is this bright relative to the blob


@dataclass
class Blob:
    """One connected component of one palette colour in one frame."""

    colour: str
    shape: str
    shape_fit: float
    shape_margin: float  # best fit minus the runner-up's; small for small blurred shapes
    area: float  # fraction of the frame
    x: float  # centroid, fraction of the width
    y: float  # centroid, fraction of the height
    pixels: np.ndarray = field(repr=False)  # (n, 2) row, col
    fits: dict[str, float] = field(default_factory=dict)  # soft IoU per shape class
    bite: float = 0.0  # share of the blob's area: something else inside its convex hull


def of_shape(b: Blob, shape: str) -> bool:
    """The blob shows ``shape``: that shape fits well and (nearly) best of the three."""
    f = b.fits.get(shape, 0.0)
    return f >= MIN_OWN_FIT and f >= max(b.fits.values()) - SHAPE_TOL


@dataclass
class Judgement:
    """The oracle's verdict. ``predicates`` (the relation) and ``checks`` (integrity): name ->
    {"passed", "score", "value"}. ``passed`` needs both; ``relation`` is the predicates alone."""

    passed: bool
    score: float
    validity: float
    predicates: dict[str, dict[str, Any]]
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def relation(self) -> bool:
        """The category's predicates hold (a diagnostic: shapes, merges, extras not checked)."""
        return all(p["passed"] for p in self.predicates.values())

    @property
    def intact(self) -> bool:
        """Every integrity check holds."""
        return all(c["passed"] for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------
# Segmentation
def _hue_and_chroma(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    chroma = mx - mn
    c = np.maximum(chroma, 1e-6)
    hue = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return hue * 60.0, chroma


def _colour_classes(hue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette hue per pixel and its angular distance."""
    centres = np.asarray(list(HUES.values()), np.float32)
    d = np.abs(hue[..., None] - centres)
    d = np.minimum(d, 360 - d)
    return d.argmin(-1), d.min(-1)


def analyse_frame(frame: np.ndarray) -> list[Blob]:
    """The palette-coloured blobs of one RGB frame."""
    h, w, _ = frame.shape
    hue, chroma = _hue_and_chroma(frame)
    cls, dist = _colour_classes(hue)
    strong = chroma >= MIN_CHROMA * 255
    fg = (dist <= HUE_TOL) & strong
    # Brightness above the background: sharp in every codec (mp4 keeps luma at full
    # resolution but halves chroma), so it gives the soft masks for shape and centroid.
    value = frame.max(-1).astype(np.float32)
    bright = value - np.median(value)
    min_px = max(3.0, MIN_AREA * h * w)
    blobs = []
    for i, name in enumerate(HUES):
        labels, _ = ndimage.label(ndimage.binary_fill_holes(fg & (cls == i)))
        for j, sl in enumerate(ndimage.find_objects(labels), start=1):
            if (labels[sl] == j).sum() >= min_px:
                blobs.append(_blob(name, labels, j, sl, bright, fg, strong & (cls != i), chroma))
    return blobs


def _blob(colour: str, labels: np.ndarray, j: int, sl: tuple[slice, slice], bright: np.ndarray,
          fg: np.ndarray, foreign: np.ndarray, chroma: np.ndarray) -> Blob:
    h, w = bright.shape
    r0, c0 = max(sl[0].start - 2, 0), max(sl[1].start - 2, 0)
    r1, c1 = min(sl[0].stop + 2, h), min(sl[1].stop + 2, w)
    region = labels[r0:r1, c0:c1] == j
    # Soft mask: partial edge pixels count partially, so blur and anti-aliasing keep the area
    # and shape; limited to the component's rim and never taking another blob's pixels.
    br = bright[r0:r1, c0:c1]
    ref = float(np.percentile(br[region], 90))
    near = ndimage.binary_dilation(region) & ~(fg[r0:r1, c0:c1] & ~region)
    # (an object no brighter than the background, e.g. on white: fall back to the hard mask)
    soft = np.clip(br / ref, 0, 1) * near if ref >= 16 else region.astype(np.float32)
    fits = shape_fits(soft, near)
    shape, fit, margin = _classify(fits)
    rows, cols = np.nonzero(region)
    ys, xs = np.nonzero(soft > 0)
    wts = soft[ys, xs]
    cy = (wts * (ys + 0.5)).sum() / wts.sum() + r0
    cx = (wts * (xs + 0.5)).sum() / wts.sum() + c0
    pixels = np.stack([rows + r0, cols + c0], 1)
    # Something else inside the hull: strongly coloured pixels of another hue (another colour,
    # a blend), or bright pixels much greyer than the blob (a grey seam). The blob's own soft
    # edge (its colour over the background) has its hue and its chroma-to-brightness ratio.
    other = foreign.copy()
    if ref >= 16:
        mine = labels == j
        ratio = float(np.median(chroma[mine] / np.maximum(bright[mine], 1.0)))  # chroma per brightness
        other |= (bright >= BRIGHT_OTHER * ref) & (chroma < 0.5 * ratio * bright)
    other &= labels != j
    # ... in pieces of an object's size at least (a stray speck of a generator is no overlap)
    parts, _ = ndimage.label(other)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    other &= sizes[parts] >= max(3.0, MIN_AREA * h * w)
    bite = float(other[_hull_mask(pixels, (h, w))].sum() / max(len(pixels), 1))
    full = np.zeros((h, w), np.float32)
    full[r0:r1, c0:c1] = soft
    if (ndimage.binary_dilation(full > 0, iterations=2) & other).any():  # it touches something
        bite = max(bite, hidden_share(full, other))
    return Blob(colour, shape, fit, margin, float(wts.sum() / (h * w)), float(cx / w), float(cy / h),
                pixels, fits, bite)


_COMPLETIONS = ((1.0, 0.0),) + tuple((sc, sh) for sc in (1.3, 1.7, 2.1) for sh in (0.25, 0.5, 0.8))
# (area of the whole object over the visible area, its centre beyond the visible centroid
# toward what it touches, in radii of the whole object)


def hidden_share(soft: np.ndarray, other: np.ndarray) -> float:
    """Amodal completion: the share of the blob's best-fitting whole shape (circle, square or
    triangle of 1-2.1x its visible area, moved toward what it touches) that lies under
    ``other``. A whole object touching another completes to itself (share ~0); one overlapped
    by, or merged with, another completes into it."""
    h, w = soft.shape
    area = float(soft.sum())
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cy, cx = (soft * ys).sum() / area, (soft * xs).sum() / area
    near = (np.abs(ys - cy) < 3 * math.sqrt(area) + 2) & (np.abs(xs - cx) < 3 * math.sqrt(area) + 2)
    oy, ox = ys[other & near].mean() - cy, xs[other & near].mean() - cx
    norm = math.hypot(oy, ox) or 1.0
    uy, ux = oy / norm, ox / norm  # toward the other thing
    reach = 1.25 * math.sqrt(max(sc for sc, _ in _COMPLETIONS) * area) + 2  # the farthest a template reaches
    far = max(sh for _, sh in _COMPLETIONS) * math.sqrt(max(sc for sc, _ in _COMPLETIONS) * area / math.pi)
    r0, r1 = max(0, int(cy - reach - far * abs(uy))), min(h, int(cy + reach + far * abs(uy)) + 1)
    c0, c1 = max(0, int(cx - reach - far * abs(ux))), min(w, int(cx + reach + far * abs(ux)) + 1)
    S, D = soft[r0:r1, c0:c1], other[r0:r1, c0:c1].astype(np.float32)
    offs = ((np.arange(2) + 0.5) / 2 - 0.5).astype(np.float32)  # 2x2 sub-samples per pixel
    gy = ys[r0:r1, c0:c1][:, :, None, None] + offs[None, None, :, None]
    gx = xs[r0:r1, c0:c1][:, :, None, None] + offs[None, None, None, :]
    gx, gy = np.broadcast_arrays(gx, gy)
    best, share = -1.0, 0.0
    keep = 1 - D
    for sc, sh in _COMPLETIONS:
        a = sc * area
        r = math.sqrt(a / math.pi)
        py, px = gy - (cy + uy * sh * r), gx - (cx + ux * sh * r)
        insides = [px ** 2 + py ** 2 <= a / math.pi]
        for polys in _polygons(a).values():
            insides.extend(_inside_polygons(np.stack(polys), px, py))
        cover = np.stack(insides).mean(axis=(3, 4))
        c = ndimage.gaussian_filter(cover, (0, 0.6, 0.6), mode="constant")  # soft edges
        iou = (np.minimum(S, c) * keep).sum((1, 2)) / np.maximum((np.maximum(S, c) * keep).sum((1, 2)), 1e-6)
        k = int(iou.argmax())
        if iou[k] > best + 1e-3:  # ties: the smaller, nearer completion
            best = float(iou[k])
            share = float((c[k] * D).sum() / max(c[k].sum(), 1e-6))
    return share


def _hull_mask(pixels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie inside the convex hull of the given pixels' squares."""
    out = np.zeros(hw, bool)
    r0, c0 = pixels.min(0)
    r1, c1 = pixels.max(0) + 1
    if r1 - r0 < 2 or c1 - c0 < 2:  # a line or a dot: its hull is itself
        out[pixels[:, 0], pixels[:, 1]] = True
        return out
    corners = (pixels[:, None, ::-1] + np.array([[0, 0], [0, 1], [1, 0], [1, 1]])[None]).reshape(-1, 2)
    hull = ConvexHull(corners.astype(np.float64))
    poly = corners[hull.vertices].astype(np.float32)  # (x, y), counter-clockwise
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
    out[r0:r1, c0:c1] = _inside_polygons(poly[None], xs, ys)[0]
    return out


# ---------------------------------------------------------------------------------------
# Shape classification by template matching
_SS = 3  # sub-samples per pixel side for template coverage
_BLURS = (0.0, 0.7, 1.2)  # pixel sigmas: templates are blurred too, to match soft videos


def _polygons(area: float) -> dict[str, list[np.ndarray]]:
    """Template polygons (vertices around the origin = centroid) with the given area."""
    out: dict[str, list[np.ndarray]] = {"square": [], "triangle": []}
    a = math.sqrt(area)
    square = np.array([[-a, -a], [a, -a], [a, a], [-a, a]]) / 2
    t = math.sqrt(4 * area / math.sqrt(3))  # equilateral side
    equi = np.array([[0, -t / math.sqrt(3)], [t / 2, t / (2 * math.sqrt(3))],
                     [-t / 2, t / (2 * math.sqrt(3))]])
    b = math.sqrt(2 * area)  # isosceles with base = height (a common way to draw a triangle)
    iso = np.array([[0, -2 * b / 3], [b / 2, b / 3], [-b / 2, b / 3]])
    for deg in range(0, 90, 15):
        out["square"].append(_rotate(square, deg))
    for deg in range(0, 120, 15):
        out["triangle"].append(_rotate(equi, deg))
    for deg in range(0, 360, 30):
        out["triangle"].append(_rotate(iso, deg))
    return out


def _rotate(pts: np.ndarray, deg: float) -> np.ndarray:
    th = math.radians(deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return pts @ rot.T


def _inside_polygons(polys: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(T, *x.shape): which points lie inside each of T convex polygons (T, V, 2)."""
    polys = polys.astype(np.float32)
    v0, v1 = polys, np.roll(polys, -1, axis=1)
    ex, ey = (v1 - v0)[..., 0], (v1 - v0)[..., 1]  # (T, V)
    px, py = x.reshape(1, 1, -1), y.reshape(1, 1, -1)
    cross = ex[..., None] * (py - v0[..., 1, None]) - ey[..., None] * (px - v0[..., 0, None])
    inside = (cross >= 0).all(1) | (cross <= 0).all(1)
    return inside.reshape(len(polys), *x.shape)


def shape_fits(soft: np.ndarray, support: np.ndarray | None = None) -> dict[str, float]:
    """Best soft IoU per shape of a soft mask against same-area, same-centroid templates
    (rotated; sharp and blurred), compared on ``support`` (default: everywhere)."""
    area = float(soft.sum())
    if area < 1:
        return {"circle": 0.0, "square": 0.0, "triangle": 0.0}
    support = np.ones(soft.shape, bool) if support is None else support
    ys, xs = np.mgrid[0: soft.shape[0], 0: soft.shape[1]].astype(np.float32) + 0.5
    cy, cx = (soft * ys).sum() / area, (soft * xs).sum() / area
    offs = ((np.arange(_SS) + 0.5) / _SS - 0.5).astype(np.float32)
    sy = (ys[:, :, None, None] + offs[None, None, :, None]) - cy
    sx = (xs[:, :, None, None] + offs[None, None, None, :]) - cx
    sx, sy = np.broadcast_arrays(sx, sy)
    names, insides = ["circle"], [sx ** 2 + sy ** 2 <= area / math.pi]
    for shape, polys in _polygons(area).items():
        names += [shape] * len(polys)
        insides.extend(_inside_polygons(np.stack(polys), sx, sy))
    cover = np.pad(np.stack(insides).mean(axis=(3, 4)), ((0, 0), (3, 3), (3, 3)))
    best = np.zeros(len(names))
    for sigma in _BLURS:
        c = ndimage.gaussian_filter(cover, (0, sigma, sigma), mode="constant") if sigma else cover
        c = c[:, 3:-3, 3:-3] * support
        iou = np.minimum(soft, c).sum((1, 2)) / np.maximum(soft, c).sum((1, 2))
        best = np.maximum(best, iou)
    return {n: float(max(b for m, b in zip(names, best) if m == n)) for n in SHAPE_CLASSES}


def classify_shape(soft: np.ndarray, support: np.ndarray | None = None) -> tuple[str, float, float]:
    """(best shape or "unknown" when nothing fits, its fit, its margin over the runner-up)."""
    return _classify(shape_fits(soft, support))


def _classify(fits: dict[str, float]) -> tuple[str, float, float]:
    ranked = sorted(fits, key=fits.get, reverse=True)
    best, second = fits[ranked[0]], fits[ranked[1]]
    return (ranked[0] if best >= MIN_SHAPE_FIT else "unknown"), best, best - second


def _surely_other(b: Blob, shape: str) -> bool:
    """The blob is confidently some other shape (not merely a small, blurred look-alike)."""
    return b.shape not in (shape, "unknown") and b.shape_margin >= SHAPE_MARGIN


# ---------------------------------------------------------------------------------------
# Tracks
def _pick(blobs: list[Blob], colour: str | None, shape: str) -> Blob | None:
    """The entity's blob: its colour (any, if None), its shape first, then an ambiguous one,
    then any; the largest among equals."""
    cands = [b for b in blobs if colour is None or b.colour == colour]
    if not cands:
        return None
    rank = lambda b: (b.shape == shape, not _surely_other(b, shape), b.area)  # noqa: E731
    return max(cands, key=rank)


def _track(frames: list[list[Blob]], e: EntityView) -> list[Blob | None]:
    return [_pick(blobs, e.colour, e.shape) for blobs in frames]


def _positions(track: list[Blob | None]) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices where found, (n, 2) x/y positions there)."""
    idx = np.array([t for t, b in enumerate(track) if b is not None], int)
    pos = np.array([[track[t].x, track[t].y] for t in idx], float).reshape(-1, 2)
    return idx, pos


# ---------------------------------------------------------------------------------------
# Predicate helpers: every score is in [0, 1] and >= 0.5 exactly when the predicate passes.
def _pred(passed: bool, score: float, value: Any) -> dict[str, Any]:
    return {"passed": bool(passed), "score": float(np.clip(score, 0, 1)), "value": value}


def _at_least(value: float, thr: float) -> dict[str, Any]:
    return _pred(value >= thr, 0.5 + (value - thr) / (2 * thr), round(float(value), 4))


def _at_most(value: float, thr: float) -> dict[str, Any]:
    return _pred(value <= thr, 1 - value / (2 * thr), round(float(value), 4))


def _fraction(ok: list[bool]) -> dict[str, Any]:
    return _share(float(np.mean(ok)) if ok else 0.0)


def _share(f: float) -> dict[str, Any]:
    """A fraction of frames, its score rescaled so that the pass threshold maps to 0.5."""
    score = f / (2 * FRAME_FRACTION) if f < FRAME_FRACTION else \
        0.5 + (f - FRAME_FRACTION) / (2 * (1 - FRAME_FRACTION))
    return _pred(f >= FRAME_FRACTION, score, round(f, 4))


def _name(e: EntityView) -> str:
    return f"{e.colour}_{e.shape}" if e.colour else e.shape


def entity_predicate_key(category: str, e: EntityView) -> str:
    """The name of the predicate that judges one entity's own part of y: its direction
    (motion_binding) or its action (action_binding)."""
    if category == "motion_binding":
        return f"{_name(e)}_moving_{e.part}"
    if category == "action_binding":
        return f"{_name(e)}_{e.part}"
    raise ValueError(f"category {category!r} has no per-entity predicates; accepted: motion_binding, action_binding")


def _quarter(n: int) -> int:
    return max(1, math.ceil(n / 4))


# ---------------------------------------------------------------------------------------
# Category judges: (frames of blobs, composition, video shape) -> predicates
Preds = dict[str, dict[str, Any]]


def _judge_consistent(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    out = {}
    for e in entity_views(comp):
        track = _track(frames, e)
        # the fraction of frames showing this colour on this shape
        out[_name(e)] = _fraction([b is not None and b.shape == e.shape for b in track])
    return out


def _judge_dynamic(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    e = entity_views(comp)[0]
    start, end = e.part.split("->")
    seq = [b.colour if b is not None else None for b in _track(frames, e)]
    n, q = len(seq), _quarter(len(seq))
    best = max(np.mean([c == (start if t < k else end) for t, c in enumerate(seq)])
               for k in range(1, n))
    return {
        f"starts_{start}": _at_least(float(np.mean([c == start for c in seq[:q]])), 0.5),
        f"ends_{end}": _at_least(float(np.mean([c == end for c in seq[-q:]])), 0.5),
        "single_change": _share(float(best)),
    }


_REL = {"on the left of": (0, 1), "on the right of": (0, -1), "above": (1, 1), "below": (1, -1)}


def _judge_spatial(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    a, b = entity_views(comp)
    axis, sign = _REL[comp.label]
    ok = []
    for ba, bb in zip(_track(frames, a), _track(frames, b)):
        if ba is None or bb is None:
            ok.append(False)
            continue
        d = np.array([bb.x - ba.x, bb.y - ba.y])  # from the first entity to the second
        main, side = sign * d[axis], abs(d[1 - axis])
        ok.append(bool(main >= SEPARATION and main >= side))
    return {comp.label.replace(" ", "_"): _fraction(ok)}


_DIR = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _displacement(track: list[Blob | None]) -> np.ndarray | None:
    """First-to-last displacement of a least-squares line through the tracked centroids."""
    idx, pos = _positions(track)
    if len(idx) < 2:
        return None
    slope = np.polyfit(idx, pos, 1)[0]
    return slope * (len(track) - 1)


def _judge_motion(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    out = {}
    for e in entity_views(comp):
        d = _displacement(_track(frames, e))
        key = entity_predicate_key(comp.category, e)
        if d is None:
            out[key] = _pred(False, 0.0, None)
            continue
        u = np.array(_DIR[e.part], float)
        along, across = float(d @ u), float(abs(d @ u[::-1]))
        p = _at_least(along, MOVE)
        if across > along:  # moving mostly another way
            p = _pred(False, min(p["score"], 0.49), p["value"])
        p["value"] = {"along": round(along, 4), "across": round(across, 4)}
        out[key] = p
    return out


def _mean_area(blobs: list[Blob | None]) -> float:
    areas = [b.area for b in blobs if b is not None]
    return float(np.mean(areas)) if areas else 0.0


def _judge_action(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    out = {}
    for e in entity_views(comp):
        track = _track(frames, e)
        q = _quarter(len(track))
        first, last = _mean_area(track[:q]), _mean_area(track[-q:])
        key = entity_predicate_key(comp.category, e)
        if not (first > 0 and last > 0):
            out[key] = _pred(False, 0.0, None)
            continue
        log_ratio = math.log(last / first) * (1 if e.part == "growing" else -1)
        p = _at_least(log_ratio, math.log(GROWTH))
        p["value"] = round(last / first, 4)  # the area ratio, last quarter / first quarter
        out[key] = p
    return out


def _gap_px(a: Blob, b: Blob) -> float:
    """Smallest distance between the two blobs' pixels."""
    d = a.pixels[:, None, :] - b.pixels[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).min()) - 1.0  # adjacent pixels: gap 0


def _judge_interaction(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    s_ent, o_ent = entity_views(comp)
    st, ot = _track(frames, s_ent), _track(frames, o_ent)
    both = [t for t in range(len(frames)) if st[t] is not None and ot[t] is not None]
    if len(both) < 2:
        return {"both_tracked": _pred(False, 0.0, len(both))}
    t0, t1 = both[0], both[-1]
    pos = lambda b: np.array([b.x, b.y])  # noqa: E731
    u = pos(ot[t0]) - pos(st[t0])
    u = u / (np.linalg.norm(u) + 1e-9)  # subject -> object at the start
    s_move = float((pos(st[t1]) - pos(st[t0])) @ u)
    o_drift = max(float(np.linalg.norm(pos(ot[t]) - pos(ot[t0]))) for t in both)
    if comp.label == "approaching":
        return {"subject_approaches": _at_least(s_move, MOVE), "object_still": _at_most(o_drift, STILL)}
    if comp.label == "moving away from":
        return {"subject_moves_away": _at_least(-s_move, MOVE), "object_still": _at_most(o_drift, STILL)}
    width = shape[2]
    gaps = [_gap_px(st[t], ot[t]) for t in both]
    thr = CONTACT_PX + CONTACT_FRAC * width
    hit = next((t for t, g in zip(both, gaps) if g <= thr), both[int(np.argmin(gaps))])
    before = float(np.linalg.norm(pos(ot[hit]) - pos(ot[t0])))
    pushed = float((pos(ot[t1]) - pos(ot[hit])) @ u)
    contact = _at_most(min(gaps), thr)
    contact["value"] = {"gap_px": round(min(gaps), 3), "frame": int(hit)}
    return {"subject_approaches": _at_least(s_move, MOVE), "contact": contact,
            "object_still_before_contact": _at_most(before, STILL),
            "object_pushed_away": _at_least(pushed, MOVE)}


def _counted(blobs: list[Blob], e: EntityView) -> list[Blob]:
    """Blobs of the entity's colour and shape (:func:`of_shape`, as integrity counts them);
    tiny debris (less than ``DEBRIS`` of the largest such blob) is not an object."""
    return _members(blobs, (e.colour,), e.shape)


def _judge_numeracy(frames: list[list[Blob]], comp: Composition, shape: tuple) -> Preds:
    out = {}
    for e in entity_views(comp):
        counts = [len(_counted(blobs, e)) for blobs in frames]
        p = _fraction([c == e.count for c in counts])
        p["value"] = {"frames_right": p["value"], "median_count": float(np.median(counts))}
        out[f"{e.part}_{_name(e)}"] = p
    return out


_JUDGES: dict[str, Callable[[list[list[Blob]], Composition, tuple], Preds]] = {
    "consistent_attribute_binding": _judge_consistent,
    "dynamic_attribute_binding": _judge_dynamic,
    "spatial_relationships": _judge_spatial,
    "motion_binding": _judge_motion,
    "action_binding": _judge_action,
    "object_interactions": _judge_interaction,
    "generative_numeracy": _judge_numeracy,
}


# ---------------------------------------------------------------------------------------
# Integrity: the strict part of the verdict
def _action_end(e: EntityView, n: int) -> set[int]:
    """Frames where a growing / shrinking object is smallest: its shape need not show."""
    if e.part == "growing":
        return set(range(min(ACTION_END_FRAMES, n)))
    if e.part == "shrinking":
        return set(range(max(0, n - ACTION_END_FRAMES), n))
    return set()


def _members(blobs: list[Blob], colours: tuple[str, ...], shape: str | None) -> list[Blob]:
    """The blobs of ``colours`` showing ``shape`` (None: any shape), debris left out (under
    ``DEBRIS`` of the largest such blob of the frame)."""
    mine = [b for b in blobs if b.colour in colours and (shape is None or of_shape(b, shape))]
    big = max((b.area for b in mine), default=0.0)
    return [b for b in mine if b.area >= DEBRIS * big]


def _link(per_frame: list[list[Blob]]) -> list[list[Blob]]:
    """Tracks through frames that all hold the same number k of blobs: k lists of blobs,
    linked frame to frame by the nearest centroids (an assignment)."""
    tracks = [[b] for b in per_frame[0]]
    for blobs in per_frame[1:]:
        last = np.array([[t[-1].x, t[-1].y] for t in tracks])
        now = np.array([[b.x, b.y] for b in blobs])
        rows, cols = linear_sum_assignment(((last[:, None] - now[None]) ** 2).sum(-1))
        for r, c in zip(rows, cols):
            tracks[r].append(blobs[c])
    return tracks


def _size_ok(areas: np.ndarray, part: str | None) -> tuple[bool, float]:
    """(size as asked, the worst factor): constant within SIZE_TOL of the median, or for an
    action monotone up to a SIZE_TOL reversal from the extreme so far."""
    if part == "growing":
        worst = float(np.max(np.maximum.accumulate(areas) / areas))
    elif part == "shrinking":
        worst = float(np.max(areas / np.minimum.accumulate(areas)))
    else:
        med = float(np.median(areas))
        worst = float(max(areas.max() / med, med / areas.min()))
    return worst <= SIZE_TOL, worst


def _check(ok: list[bool], value: Any) -> dict[str, Any]:
    """An integrity check: passes only when every frame (or track) is fine."""
    f = float(np.mean(ok)) if ok else 0.0
    passed = bool(ok) and all(ok)
    return _pred(passed, 1.0 if passed else 0.5 * f, value)


def _bad(ok: list[bool]) -> list[int]:
    return [t for t, o in enumerate(ok) if not o]


def _colour_sequence(frames: list[list[Blob]], e: EntityView) -> tuple[list[str | None], dict[str, Any]]:
    """Dynamic binding: per frame the colour of the one object of the entity's shape in the
    start or end colour (None: none or several), and the check that the sequence is
    start..start end..end with at most CHANGE_FRAMES frames of neither at the change."""
    start, end = e.part.split("->")
    seq = []
    for blobs in frames:
        m = _members(blobs, (start, end), e.shape)
        seq.append(m[0].colour if len(m) == 1 else None)
    n = len(seq)
    best = None
    for k in range(1, n):  # first frame of the end colour; frames k-g..k-1 may be neither
        for g in range(CHANGE_FRAMES + 1):
            if k - g < 1:
                continue
            want = [start] * (k - g) + [None] * g + [end] * (n - k)
            if all(s == w or (w is None) for s, w in zip(seq, want)):
                best = (k, g)
                break
        if best:
            break
    return seq, _pred(best is not None, 1.0 if best else 0.5 * float(np.mean(
        [s is not None for s in seq])), {"colours": seq})


def integrity(frames: list[list[Blob]], comp: Composition) -> dict[str, dict[str, Any]]:
    """The strict checks of a video (see the module docstring), name -> {passed, score, value}:
    ``<entity>_count`` (exactly its count of objects of its colour and shape in every frame),
    ``<entity>_apart`` (no merge / overlap), ``<entity>_size`` (constant, or as the action asks),
    ``<entity>_shape`` (no morph: its own shape's lead over the others steady);
    dynamic binding: ``colour_sequence`` (one change, start to end colour)."""
    n = len(frames)
    out: dict[str, dict[str, Any]] = {}
    for e in entity_views(comp):
        name = _name(e)
        loose = set()
        if comp.category == "dynamic_attribute_binding":
            seq, out["colour_sequence"] = _colour_sequence(frames, e)
            colours = tuple(e.part.split("->"))
            per_frame = [[b for b in _members(blobs, colours, e.shape)] for blobs in frames]
            ok = [len(m) == 1 or (s is None and len(m) == 0) for m, s in zip(per_frame, seq)]
            # (frames of neither colour are judged by colour_sequence)
            present = [t for t in range(n) if len(per_frame[t]) == 1]
        else:
            colours = (e.colour,)
            loose = _action_end(e, n)
            per_frame = [_members(blobs, colours, None if t in loose else e.shape)
                         for t, blobs in enumerate(frames)]
            ok = [len(m) == e.count for m in per_frame]
            present = [t for t in range(n) if ok[t]]
        counts = [len(m) for m in per_frame]
        out[f"{name}_count"] = _check(ok, {"counts": counts, "bad_frames": _bad(ok)})
        apart = [all(b.bite <= BITE_MARGIN for b in m) for m in per_frame]
        out[f"{name}_apart"] = _check(apart, {"max_bite": round(max(
            (b.bite for m in per_frame for b in m), default=0.0), 4), "bad_frames": _bad(apart)})
        if len(present) < 2 or len({len(per_frame[t]) for t in present}) != 1:
            out[f"{name}_size"] = _pred(False, 0.0, None)
            out[f"{name}_shape"] = _pred(False, 0.0, None)
            continue
        action = comp.category == "action_binding"
        tracks = _link([per_frame[t] for t in present])
        sized = [_size_ok(np.array([b.area for b in tr]), e.part if action else None) for tr in tracks]
        out[f"{name}_size"] = _check([s[0] for s in sized],
                                     {"worst_factor": round(max(s[1] for s in sized), 4)})
        # shape constant: the lead of its own shape over the others drifts little (a circle
        # turning into a square loses its lead even where both still "fit" a small blob)
        drifts = []
        for tr in tracks:
            lead = [b.fits[e.shape] - max(f for k, f in b.fits.items() if k != e.shape)
                    for t, b in zip(present, tr) if t not in loose]
            drifts.append(max(lead) - min(lead) if lead else 0.0)
        limit = SHAPE_DRIFT * (1.5 if action else 1.0)
        out[f"{name}_shape"] = _check([d <= limit for d in drifts],
                                      {"drift": round(max(drifts), 4), "limit": limit})
    return out


# ---------------------------------------------------------------------------------------
def validity(frames: list[list[Blob]], comp: Composition) -> float:
    """Fraction of (entity, frame) pairs where the entity is found with its shape
    (:func:`of_shape`) and colour (numeracy: fraction of the expected objects found, capped
    at 1). A graded score; the pass/fail counts are :func:`integrity`'s."""
    vals = []
    for e in entity_views(comp):
        for blobs in frames:
            right = sum((e.colour is None or b.colour == e.colour) and of_shape(b, e.shape)
                        for b in blobs)
            vals.append(min(1.0, right / e.count))
    return float(np.mean(vals)) if vals else 0.0


def analyse(video: np.ndarray) -> list[list[Blob]]:
    """The blobs of every frame."""
    return [analyse_frame(f) for f in check_video(video)]


def judge(video: np.ndarray, spec: PromptSpec | Composition,
          min_validity: float = MIN_VALIDITY) -> Judgement:
    """Does ``video`` (uint8 frames x H x W x 3) show ``spec``'s composition?

    ``passed`` when every integrity check and every predicate passes and ``validity`` >=
    ``min_validity`` (with the checks, validity is ~1 whenever they pass); ``score`` is the
    mean score of the checks and predicates (each in [0, 1], >= 0.5 when it passes).
    """
    comp = spec if isinstance(spec, Composition) else composition_of(spec)
    if check_video(video).shape[0] < 2:
        raise ValueError(f"the oracle judges videos of 2 frames or more, got {video.shape}")
    frames = analyse(video)
    preds = _JUDGES[comp.category](frames, comp, video.shape)
    checks = integrity(frames, comp)
    valid = validity(frames, comp)
    both = list(preds.values()) + list(checks.values())
    passed = all(p["passed"] for p in both) and valid >= min_validity
    score = float(np.mean([p["score"] for p in both]))
    return Judgement(bool(passed), round(score, 4), round(valid, 4), preds, checks)
