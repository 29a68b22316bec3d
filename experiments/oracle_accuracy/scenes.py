"""Scenes for measuring the oracle: a second drawing routine and broken variants of a scene.

A *scene* is a list of frames, each a list of :class:`Obj` (shape, colour, centre and width
as fractions of the frame). :func:`plan_pil` lays out a correct scene of a prompt with its own
random layouts (not the project's planners), :func:`draw_pil` rasterises it with
``PIL.ImageDraw`` in its own way (its own palette, jittered per video; rotated squares and
triangles; with or without anti-aliasing; see-through blends where objects overlap). Neither
shares code with ``cvg_bench/shapes/render.py``; :func:`to_plan` hands a scene to the
project's renderer instead.

:data:`KINDS` break a correct scene the ways a careful viewer would reject: two entities
merged, a colour drifting mid-video, an object shrinking to a dot, vanishing, flickering, a
shape morphing, an extra object of a named colour and shape, a wrong count.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from cvg_bench.shapes.grammar import COLOURS, SHAPES, entity_views, composition_of
from cvg_bench.types import PromptSpec

# This drawer's own idea of the four colours (hue in degrees, HSV), jittered per video.
HUE = {"red": 0.0, "yellow": 58.0, "green": 122.0, "blue": 228.0}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    x: float
    y: float
    size: float  # width of the shape's bounding box, fraction of the frame
    angle: float = 0.0  # degrees (squares and triangles)
    entity: int = 0  # which entity of the prompt it draws (for the defects)


Scene = list[list[Obj]]


# ---------------------------------------------------------------------------------------
# Geometry
def _vertices(o: Obj, px: float) -> list[tuple[float, float]]:
    cx, cy, r = o.x * px, o.y * px, o.size * px / 2
    if o.shape == "square":
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
    else:  # isosceles, base = height = the box, apex up before rotation
        pts = [(0, -r), (r, r), (-r, r)]
    th = math.radians(o.angle)
    c, s = math.cos(th), math.sin(th)
    return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in pts]


def _mask(o: Obj, px: int) -> np.ndarray:
    img = Image.new("L", (px, px), 0)
    d = ImageDraw.Draw(img)
    if o.shape == "circle":
        cx, cy, r = o.x * px, o.y * px, o.size * px / 2
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        d.polygon(_vertices(o, px), fill=255)
    return np.asarray(img, np.float32) / 255


def overlap(a: Obj, b: Obj, px: int = 160) -> float:
    """Shared area of two objects over the smaller one's area (fine raster)."""
    ma, mb = _mask(a, px), _mask(b, px)
    return float((ma * mb).sum() / max(min(ma.sum(), mb.sum()), 1e-6))


def gap(a: Obj, b: Obj, px: int = 160) -> float:
    """Distance between two objects' masks, fraction of the frame (0 when they touch)."""
    from scipy import ndimage

    ma, mb = _mask(a, px) > 0.5, _mask(b, px) > 0.5
    if (ma & mb).any():
        return 0.0
    return float(ndimage.distance_transform_edt(~ma)[mb].min() / px)


# ---------------------------------------------------------------------------------------
# The second drawer: rasterising
def palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, hue in HUE.items():
        h = (hue + rng.uniform(-8, 8)) % 360
        rgb = colorsys.hsv_to_rgb(h / 360, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0))
        out[name] = tuple(int(round(255 * v)) for v in rgb)
    return out


def draw_pil(scene: Scene, size: int, rng: np.random.Generator, antialias: bool = True,
             blend: bool = False) -> np.ndarray:
    """uint8 (frames, size, size, 3). Objects cover one another in list order (the first on
    top), or with ``blend`` overlap areas take the mean of the colours (a seam)."""
    colours = palette(rng)
    bg = np.array([rng.uniform(0, 40)] * 3, np.float32) + rng.uniform(-4, 4, 3)
    ss = 3 if antialias else 1
    frames = []
    for objs in scene:
        acc = np.zeros((size, size, 3), np.float32)
        cover = np.zeros((size, size), np.float32)
        weight = np.zeros((size, size), np.float32)
        for o in objs:
            m = _mask(o, size * ss)
            if ss > 1:
                m = m.reshape(size, ss, size, ss).mean((1, 3))
            rgb = np.asarray(colours[o.colour], np.float32)
            if blend:
                acc += m[..., None] * rgb
                weight += m
            else:
                a = m * (1 - cover)
                acc += a[..., None] * rgb
                cover += a
        if blend:
            cover = np.minimum(weight, 1.0)
            acc = acc / np.maximum(weight, 1.0)[..., None]
        frames.append(bg * (1 - cover[..., None]) + acc)
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def to_plan(scene: Scene):
    """The scene as the project renderer's plan (its ``draw_plan`` draws it). The renderer's
    nominal size is its square's side; its triangles are wider, so they are scaled to keep
    their width."""
    from cvg_bench.shapes.render import TRIANGLE_BASE, Sprite

    return [[Sprite(o.shape, o.colour, o.x, o.y, o.size / TRIANGLE_BASE if o.shape == "triangle"
                    else o.size) for o in objs] for objs in scene]


def from_plan(plan) -> Scene:
    """The project renderer's plan as a scene (entities numbered by colour, in frame 0's order)."""
    from cvg_bench.shapes.render import TRIANGLE_BASE

    ids = {c: i for i, c in enumerate(dict.fromkeys(s.colour for s in plan[0]))}  # one colour per entity
    return [[Obj(s.shape, s.colour, s.x, s.y, s.size * TRIANGLE_BASE if s.shape == "triangle"
                 else s.size, 0.0, ids.get(s.colour, 0)) for s in sprites] for sprites in plan]


# ---------------------------------------------------------------------------------------
# The second drawer: layouts of a correct scene
M = 0.04  # objects stay this far inside the frame


def _inside(o: Obj) -> bool:
    r = o.size * 0.72  # a rotated square's reach
    return M + r <= o.x <= 1 - M - r and M + r <= o.y <= 1 - M - r


def _apart(objs: list[Obj], min_gap: float) -> bool:
    return all(gap(a, b, 96) >= min_gap for i, a in enumerate(objs) for b in objs[i + 1:])


def _obj(rng, shape, colour, size, entity, x=None, y=None) -> Obj:
    reach = size * 0.72 + M
    x = rng.uniform(reach, 1 - reach) if x is None else x
    y = rng.uniform(reach, 1 - reach) if y is None else y
    angle = 0.0
    if shape == "square":
        angle = float(rng.choice([0.0, rng.uniform(-20, 20), 45.0]))
    elif shape == "triangle":
        angle = float(rng.choice([0.0, 0.0, 90.0, 180.0, 270.0, rng.uniform(-15, 15)]))
    return Obj(shape, colour, float(x), float(y), float(size), angle, entity)


def _retry(make: Callable[[], Scene | None]) -> Scene:
    for _ in range(500):
        s = make()
        if s is not None:
            return s
    raise RuntimeError("no layout found")


_AXIS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_REL = {"on the left of": (1, 0), "on the right of": (-1, 0), "above": (0, 1), "below": (0, -1)}


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def plan_pil(spec: PromptSpec, frames: int, rng: np.random.Generator) -> Scene:
    """A correct scene of ``spec`` (this drawer's own layouts)."""
    comp = composition_of(spec)
    ents, cat, F = entity_views(comp), comp.category, frames
    ts = [t / (F - 1) for t in range(F)]

    if cat in ("consistent_attribute_binding", "spatial_relationships"):
        def make():
            objs = [_obj(rng, e.shape, e.colour, rng.uniform(0.2, 0.3), i) for i, e in enumerate(ents)]
            if cat == "spatial_relationships":
                ux, uy = _REL[comp.label]
                main, side = rng.uniform(0.3, 0.5), rng.uniform(-0.08, 0.08)
                a = objs[0]
                objs[1] = replace(objs[1], x=a.x + ux * main + uy * side, y=a.y + uy * main + ux * side)
            ok = all(_inside(o) for o in objs) and _apart(objs, 0.06)
            return [list(objs) for _ in range(F)] if ok else None
        return _retry(make)

    if cat == "dynamic_attribute_binding":
        start, end = ents[0].part.split("->")
        o = _obj(rng, ents[0].shape, start, rng.uniform(0.25, 0.38), 0)
        k = int(rng.integers(max(1, math.ceil(F / 4) + 1), max(2, F - math.ceil(F / 4)) ))
        return [[replace(o, colour=start if t < k else end)] for t in range(F)]

    if cat == "motion_binding":
        def make():
            tracks = []
            for i, e in enumerate(ents):
                o = _obj(rng, e.shape, e.colour, rng.uniform(0.16, 0.24), i)
                ux, uy = _AXIS[e.part]
                d = rng.uniform(0.28, 0.45)
                tracks.append((o, o.x + ux * d, o.y + uy * d))
            scene = [[replace(o, x=_lerp(o.x, x1, t), y=_lerp(o.y, y1, t)) for o, x1, y1 in tracks]
                     for t in ts]
            ok = all(_inside(o) for fr in scene for o in fr) and all(_apart(fr, 0.05) for fr in scene[::max(1, F // 4)] + [scene[-1]])
            return scene if ok else None
        return _retry(make)

    if cat == "action_binding":
        def make():
            tracks = []
            for i, e in enumerate(ents):
                small = rng.uniform(0.14, 0.2)
                big = min(0.44, small * rng.uniform(1.8, 2.3))
                s0, s1 = (small, big) if e.part == "growing" else (big, small)
                tracks.append((_obj(rng, e.shape, e.colour, big, i), s0, s1))
            scene = [[replace(o, size=_lerp(s0, s1, t)) for o, s0, s1 in tracks] for t in ts]
            big_frame = [replace(o, size=max(s0, s1)) for o, s0, s1 in tracks]
            ok = all(_inside(o) for o in big_frame) and _apart(big_frame, 0.05)
            return scene if ok else None
        return _retry(make)

    if cat == "object_interactions":
        return _retry(lambda: _plan_interaction(rng, comp, ents, F))

    # generative_numeracy: same size within a video, never touching
    size = rng.uniform(0.14, 0.2)
    def make():
        objs: list[Obj] = []
        for i, e in enumerate(ents):
            for _ in range(e.count):
                for _ in range(100):
                    o = _obj(rng, e.shape, e.colour, size, i)
                    if all(gap(o, p, 96) >= 0.06 for p in objs):
                        objs.append(o)
                        break
                else:
                    return None
        return [list(objs) for _ in range(F)]
    return _retry(make)


def _touch(s: Obj, o: Obj, u: tuple[int, int]) -> float:
    """Centre distance along ``u`` (subject behind the object) at which the two touch."""
    lo, hi = 0.0, 1.0
    for _ in range(18):
        mid = (lo + hi) / 2
        moved = replace(s, x=o.x - u[0] * mid, y=o.y - u[1] * mid)
        if overlap(moved, o, 128) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def _plan_interaction(rng, comp, ents, F: int) -> Scene | None:
    """Along a random axis u: hitting = the subject reaches the object mid-video, stops, and
    the object moves on; approaching = the subject stops well short of a still object;
    moving away from = the subject starts touching a still object and leaves."""
    u = list(_AXIS.values())[int(rng.integers(4))]
    se, oe = ents
    so = _obj(rng, oe.shape, oe.colour, rng.uniform(0.17, 0.24), 1, 0.5, 0.5)
    ss = _obj(rng, se.shape, se.colour, rng.uniform(0.17, 0.24), 0, 0.5, 0.5)
    side = rng.uniform(-0.03, 0.03)
    ss = replace(ss, x=0.5 - u[1] * side, y=0.5 + u[0] * side)  # offset across the axis
    touch = _touch(ss, so, u) + 0.005
    # d[t]: centre distance subject -> object along u; shift[t]: the object's own move along u
    if comp.label == "hitting":
        fc = int(rng.integers(max(1, round(0.4 * (F - 1))), max(2, round(0.6 * (F - 1))) + 1))
        g0 = rng.uniform(0.22, 0.34)
        speed = g0 / fc
        push = speed * rng.uniform(0.9, 1.2)
        d = [touch + max(0.0, g0 - speed * t) for t in range(F)]
        shift = [push * max(0, t - fc) for t in range(F)]
    elif comp.label == "approaching":
        g0, g1 = rng.uniform(0.36, 0.5), rng.uniform(0.14, 0.2)
        d, shift = [touch + _lerp(g0, g1, t / (F - 1)) for t in range(F)], [0.0] * F
    else:
        g0 = rng.uniform(0.0, 0.02)
        g1 = g0 + rng.uniform(0.28, 0.4)
        d, shift = [touch + _lerp(g0, g1, t / (F - 1)) for t in range(F)], [0.0] * F
    # the object's place along u: the subject's farthest point and the object's last one fit
    lo = M + 0.72 * ss.size + max(d) - min(shift)
    hi = 1 - M - 0.72 * so.size - max(shift)
    if lo > hi:
        return None
    p = rng.uniform(lo, hi)
    q = rng.uniform(M + 0.72 * max(ss.size, so.size) + 0.03, 1 - M - 0.72 * max(ss.size, so.size) - 0.03)
    # coordinates: p along u (from the side u points away from), q across
    def at(o: Obj, along: float, across: float) -> Obj:
        x = along if u[0] > 0 else 1 - along if u[0] < 0 else across
        y = along if u[1] > 0 else 1 - along if u[1] < 0 else across
        return replace(o, x=x, y=y)
    return [[at(ss, p + shift[0] * 0 - d[t], q + side), at(so, p + shift[t], q)] for t in range(F)]


# ---------------------------------------------------------------------------------------
# Broken variants. Each takes (scene, spec, rng) and returns a broken scene, or None when the
# kind does not apply to the prompt (e.g. a merge needs two objects).
def _onset_run(rng, F: int, min_len: int = 2) -> tuple[int, int]:
    """A run of frames [t0, t1) of at least ``min_len`` frames and at most the whole video."""
    length = int(rng.integers(min_len, F + 1))
    t0 = int(rng.integers(0, F - length + 1))
    return t0, t0 + length


def _pick_object(scene: Scene, rng) -> int:
    return int(rng.integers(len(scene[0])))


def _objects_of(scene: Scene) -> int:
    return len(scene[0])


def merge(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """Two objects (of different entities, when the prompt has two) overlap by 30-65 % of the
    smaller one's area, in a run of frames or all of them: a merged blob."""
    n = _objects_of(scene)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    if len({o.entity for o in scene[0]}) > 1:  # two entities when there are two
        pairs = [(i, j) for i, j in pairs if scene[0][i].entity != scene[0][j].entity]
    if not pairs:
        return None
    i, j = pairs[int(rng.integers(len(pairs)))]
    want = rng.uniform(0.3, 0.65)
    t0, t1 = _onset_run(rng, len(scene))
    ang = rng.uniform(0, 2 * math.pi)
    out = [list(fr) for fr in scene]
    for t in range(t0, t1):
        a, b = out[t][i], out[t][j]
        lo, hi = 0.0, (a.size + b.size)  # centre distance: bisect the overlap
        for _ in range(14):
            mid = (lo + hi) / 2
            f = overlap(a, replace(b, x=a.x + mid * math.cos(ang), y=a.y + mid * math.sin(ang)), 96)
            lo, hi = (mid, hi) if f > want else (lo, mid)
        bx, by = a.x + lo * math.cos(ang), a.y + lo * math.sin(ang)
        r = b.size * 0.6
        if not (r <= bx <= 1 - r and r <= by <= 1 - r):
            return None
        out[t][j] = replace(b, x=bx, y=by)
    return out


def colour_drift(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """One object takes another palette colour from a frame on (or for a run of frames)."""
    comp = composition_of(spec)
    k = _pick_object(scene, rng)
    c = scene[0][k].colour
    if comp.category == "dynamic_attribute_binding":
        avoid = set(entity_views(comp)[0].part.split("->"))
    else:
        avoid = {c}
    new = str(rng.choice([x for x in COLOURS if x not in avoid]))
    t0, t1 = _onset_run(rng, len(scene))
    return [[replace(o, colour=new) if (t0 <= t < t1 and i == k) else o for i, o in enumerate(fr)]
            for t, fr in enumerate(scene)]


def shrink_to_dot(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """One object shrinks steadily from a frame on, to 10-30 % of its width at the end.
    (Not for action prompts, where size changes are the point.)"""
    if composition_of(spec).category == "action_binding":
        return None
    k = _pick_object(scene, rng)
    F = len(scene)
    t0 = int(rng.integers(0, max(1, F - 2)))
    end = rng.uniform(0.1, 0.3)
    out = []
    for t, fr in enumerate(scene):
        f = 1.0 if t <= t0 else _lerp(1.0, end, (t - t0) / (F - 1 - t0))
        out.append([replace(o, size=o.size * f) if i == k else o for i, o in enumerate(fr)])
    return out


def vanish(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """One object is gone for a run of at least two frames (possibly to the end)."""
    k = _pick_object(scene, rng)
    t0, t1 = _onset_run(rng, len(scene))
    if t1 - t0 == len(scene) and len(scene[0]) == 1:
        t0 = 1  # keep one frame: an empty video is not the point
    return [[o for i, o in enumerate(fr) if not (t0 <= t < t1 and i == k)] for t, fr in enumerate(scene)]


def flicker(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """One object is missing in every 2nd or 3rd frame."""
    k = _pick_object(scene, rng)
    step, phase = int(rng.integers(2, 4)), int(rng.integers(0, 2))
    return [[o for i, o in enumerate(fr) if not (t % step == phase and i == k)]
            for t, fr in enumerate(scene)]


def morph(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """One object becomes another shape (e.g. a triangle a circle) from a frame on."""
    k = _pick_object(scene, rng)
    new = str(rng.choice([s for s in SHAPES if s != scene[0][k].shape]))
    t0, t1 = _onset_run(rng, len(scene))
    return [[replace(o, shape=new, angle=0.0) if (t0 <= t < t1 and i == k) else o
             for i, o in enumerate(fr)] for t, fr in enumerate(scene)]


def _free_spot(fr: list[Obj], o: Obj, rng) -> Obj | None:
    for _ in range(300):
        c = _obj(rng, o.shape, o.colour, o.size, o.entity)
        c = replace(c, angle=o.angle)
        if all(gap(c, p, 96) >= 0.03 for p in fr):
            return c
    return None


def extra(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """A copy of a named object (same colour, shape and size) elsewhere, from a frame on (or
    for a run of frames), standing still."""
    k = _pick_object(scene, rng)
    t0, t1 = _onset_run(rng, len(scene))
    copy = None
    for _ in range(20):
        copy = _free_spot(scene[t0], scene[t0][k], rng)
        if copy is not None and all(gap(copy, p, 96) >= 0.03 for fr in scene[t0:t1] for p in fr):
            break
        copy = None
    if copy is None:
        return None
    return [fr + [copy] if t0 <= t < t1 else list(fr) for t, fr in enumerate(scene)]


def wrong_count(scene: Scene, spec: PromptSpec, rng) -> Scene | None:
    """Numeracy: a group has one object fewer or one more for a run of at least two frames."""
    comp = composition_of(spec)
    if comp.category != "generative_numeracy":
        return None
    if rng.random() < 0.5:
        return extra(scene, spec, rng)
    k = _pick_object(scene, rng)
    t0, t1 = _onset_run(rng, len(scene))
    return [[o for i, o in enumerate(fr) if not (t0 <= t < t1 and i == k)] for t, fr in enumerate(scene)]


KINDS: dict[str, Callable[[Scene, PromptSpec, np.random.Generator], Scene | None]] = {
    "merged": merge,
    "colour drift": colour_drift,
    "shrink to a dot": shrink_to_dot,
    "vanish": vanish,
    "flicker": flicker,
    "shape morph": morph,
    "extra object": extra,
    "wrong count": wrong_count,
}
