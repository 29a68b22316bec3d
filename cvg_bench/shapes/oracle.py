"""The exact judge of shapes-world videos: segmentation, shapes, tracks, then predicates.

1. Colour segmentation: a pixel is foreground when its chroma (max-min of RGB) is high, and
   takes the palette colour of nearest hue (within ``HUE_TOL`` degrees). The dark background,
   grey texture, noise and colour blends at contacts (e.g. purple between red and blue) fall out.
2. Connected components per colour; components smaller than ``MIN_AREA`` of the frame are
   dropped (stray blobs of a blurry generator), holes are filled.
3. Shape class by template matching: the component's soft mask (brightness over the
   background, normalised by the blob's own, so soft edges count partially) against circle,
   square and triangle templates of the same area and centroid, at several rotations, sharp
   and blurred; the best soft IoU wins. Small blurred shapes can fit two templates almost
   equally: such a blob is not "surely" another shape (``SHAPE_MARGIN``).
4. Tracks: entities of a prompt have distinct colours, so an entity's blob in a frame is the
   largest blob of its colour, preferring its own shape.
5. The category's predicates on the tracks, in units of the frame (any size, any frame count).

Every threshold is a fraction of the frame or of the frame count, so the judge works on videos
of any size and length, from any renderer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from cvg_bench.shapes.grammar import Composition, EntityView, composition_of, entity_views
from cvg_bench.types import PromptSpec
from cvg_bench.video_io import check_video

VERSION = "shapes-oracle-v1"

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


@dataclass
class Judgement:
    """The oracle's verdict. ``predicates``: name -> {"passed", "score", "value"}."""

    passed: bool
    score: float
    validity: float
    predicates: dict[str, dict[str, Any]]

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
    fg = (dist <= HUE_TOL) & (chroma >= MIN_CHROMA * 255)
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
                blobs.append(_blob(name, labels, j, sl, bright, fg))
    return blobs


def _blob(colour: str, labels: np.ndarray, j: int, sl: tuple[slice, slice], bright: np.ndarray,
          fg: np.ndarray) -> Blob:
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
    shape, fit, margin = classify_shape(soft, near)
    rows, cols = np.nonzero(region)
    ys, xs = np.nonzero(soft > 0)
    wts = soft[ys, xs]
    cy = (wts * (ys + 0.5)).sum() / wts.sum() + r0
    cx = (wts * (xs + 0.5)).sum() / wts.sum() + c0
    return Blob(colour, shape, fit, margin, float(wts.sum() / (h * w)), float(cx / w), float(cy / h),
                np.stack([rows + r0, cols + c0], 1))


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
    fits = shape_fits(soft, support)
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
    """Blobs of the entity's colour not recognised as another shape; tiny debris (less than
    30 % of the largest such blob) is not an object."""
    mine = [b for b in blobs if b.colour == e.colour and not _surely_other(b, e.shape)]
    big = max((b.area for b in mine), default=0.0)
    return [b for b in mine if b.area >= 0.3 * big]


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
def validity(frames: list[list[Blob]], comp: Composition) -> float:
    """Fraction of (entity, frame) pairs where the entity is found with its shape and colour
    (numeracy: fraction of the expected objects found, capped at 1)."""
    vals = []
    for e in entity_views(comp):
        for blobs in frames:
            if comp.category == "generative_numeracy":
                right = sum(b.colour == e.colour and b.shape == e.shape for b in blobs)
                vals.append(min(1.0, right / e.count))
            else:
                b = _pick(blobs, e.colour, e.shape)
                vals.append(float(b is not None and b.shape == e.shape))
    return float(np.mean(vals)) if vals else 0.0


def analyse(video: np.ndarray) -> list[list[Blob]]:
    """The blobs of every frame."""
    return [analyse_frame(f) for f in check_video(video)]


def judge(video: np.ndarray, spec: PromptSpec | Composition,
          min_validity: float = MIN_VALIDITY) -> Judgement:
    """Does ``video`` (uint8 frames x H x W x 3) show ``spec``'s composition?

    ``passed`` when every predicate passes and ``validity`` >= ``min_validity``; ``score`` is
    the mean predicate score (each in [0, 1], >= 0.5 when it passes).
    """
    comp = spec if isinstance(spec, Composition) else composition_of(spec)
    if check_video(video).shape[0] < 2:
        raise ValueError(f"the oracle judges videos of 2 frames or more, got {video.shape}")
    frames = analyse(video)
    preds = _JUDGES[comp.category](frames, comp, video.shape)
    valid = validity(frames, comp)
    passed = all(p["passed"] for p in preds.values()) and valid >= min_validity
    score = float(np.mean([p["score"] for p in preds.values()]))
    return Judgement(bool(passed), round(score, 4), round(valid, 4), preds)
