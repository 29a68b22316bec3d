"""Deterministic videos of shapes-world compositions.

A composition is first planned as sprites per frame (shape, colour, centre, size in units of
the frame width, all in [0, 1]) by one planner per category, then drawn with PIL at
``supersample`` times the resolution and box-downsampled (anti-aliased edges), on a dark
background with optional texture, noise and blur. Layouts, sizes and timings are jittered by
the seed; the same (spec, seed, cfg) always gives the same video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from cvg_bench.shapes.grammar import Composition, EntityView, composition_of, entity_views
from cvg_bench.types import PromptSpec

# Saturated hues far apart (0, ~54, ~130, ~227 degrees): the oracle segments by hue.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (45, 195, 70),
    "blue": (50, 90, 235),
    "yellow": (230, 210, 45),
}
TRIANGLE_BASE = 1.2  # triangle base / nominal size: gives it an area close to the other shapes'
TRIANGLE_HEIGHT = TRIANGLE_BASE * math.sqrt(3) / 2
MARGIN = 0.03  # objects stay this far (fraction of the frame) inside the frame


@dataclass
class RenderConfig:
    """How a composition is drawn. Defaults = what the tiny generator trains on.

    ``noise``, ``texture`` and ``colour_jitter`` are in units of the full 0-255 range; ``blur``
    is a Gaussian sigma in output pixels.
    """

    frames: int = 8
    size: int = 32
    noise: float = 0.0
    blur: float = 0.0
    texture: float = 0.0
    colour_jitter: float = 0.0
    background: tuple[int, int, int] = (18, 18, 26)
    supersample: int = 4

    def __post_init__(self) -> None:
        if self.frames < 2 or self.size < 16:
            raise ValueError(f"frames={self.frames} must be >= 2 and size={self.size} >= 16")


@dataclass(frozen=True)
class Sprite:
    """One object in one frame: centre (x, y) and nominal size as fractions of the frame."""

    shape: str
    colour: str
    x: float
    y: float
    size: float


Plan = list[list[Sprite]]  # sprites per frame


# ---------------------------------------------------------------------------------------
# Geometry helpers
def _half(size: float) -> float:
    """Half of the largest extent of any shape of nominal ``size`` (the triangle's base)."""
    return 0.5 * TRIANGLE_BASE * size


def _fits(x: float, y: float, size: float) -> bool:
    h = _half(size)
    return MARGIN + h <= x <= 1 - MARGIN - h and MARGIN + h <= y <= 1 - MARGIN - h


def _gap(a: Sprite, b: Sprite) -> float:
    """Chebyshev gap between the (conservative, square) extents of two sprites."""
    reach = _half(a.size) + _half(b.size)
    return max(abs(a.x - b.x) - reach, abs(a.y - b.y) - reach)


def _extent(shape: str, size: float, u: tuple[int, int], p: float) -> float:
    """How far ``shape`` reaches from its centre along axis direction ``u`` on the line at
    perpendicular offset ``p`` (-inf where the line misses it). Used to make shapes touch."""
    if shape == "circle":
        r = size / 2
        return math.sqrt(r * r - p * p) if abs(p) <= r else -math.inf
    if shape == "square":
        return size / 2 if abs(p) <= size / 2 else -math.inf
    b, h = TRIANGLE_BASE * size, TRIANGLE_HEIGHT * size  # apex up, centred on its bbox
    if u[0] != 0:  # horizontal: half-width of the row at height p
        return (b / 2) * (p + h / 2) / h if -h / 2 <= p <= h / 2 else -math.inf
    if abs(p) > b / 2:
        return -math.inf
    return h / 2 if u[1] > 0 else h / 2 - h * abs(p) / (b / 2)


def _contact_distance(s: EntityView, s_size: float, o: EntityView, o_size: float,
                      u: tuple[int, int], offset: float) -> float:
    """Centre distance along ``u`` at which the object (shifted ``offset`` across) touches the
    subject: the largest sum of their extents over the lines they share."""
    ps = np.linspace(-o_size - s_size, o_size + s_size, 401)
    best = max(_extent(s.shape, s_size, u, p) + _extent(o.shape, o_size, (-u[0], -u[1]), p - offset)
               for p in ps)
    return best if math.isfinite(best) else 0.5 * (s_size + o_size)


def _uniform_centre(rng: np.random.Generator, size: float) -> tuple[float, float]:
    lo, hi = MARGIN + _half(size), 1 - MARGIN - _half(size)
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _retry(make: Callable[[], Plan | None], what: str, tries: int = 2000) -> Plan:
    """Rejection sampling of a layout (a few tries at most in practice)."""
    for _ in range(tries):
        plan = make()
        if plan is not None:
            return plan
    raise RuntimeError(f"could not lay out {what} in {tries} tries")


def _static(sprites: list[Sprite], frames: int) -> Plan:
    return [list(sprites) for _ in range(frames)]


def _separated(plan: Plan, min_gap: float) -> bool:
    return all(_gap(a, b) >= min_gap for fr in plan for i, a in enumerate(fr) for b in fr[i + 1:])


# ---------------------------------------------------------------------------------------
# Planners, one per category
def _plan_static_pair(rng: np.random.Generator, ents: tuple[EntityView, ...], frames: int) -> Plan:
    def make() -> Plan | None:
        sprites = []
        for e in ents:
            size = float(rng.uniform(0.22, 0.3))
            sprites.append(Sprite(e.shape, e.colour, *_uniform_centre(rng, size), size))
        plan = _static(sprites, frames)
        return plan if _separated(plan, 0.06) else None

    return _retry(make, "two objects")


def _plan_dynamic(rng: np.random.Generator, ents: tuple[EntityView, ...], frames: int) -> Plan:
    start, end = ents[0].part.split("->")
    size = float(rng.uniform(0.26, 0.36))
    x, y = _uniform_centre(rng, size)
    # One abrupt change in the middle quarter-ish: the first and last quarters are pure.
    lo, hi = max(1, round(0.375 * frames)), min(frames - 1, round(0.625 * frames))
    k = int(rng.integers(lo, hi + 1))
    return [[Sprite(ents[0].shape, start if t < k else end, x, y, size)] for t in range(frames)]


_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_RELATION_AXIS = {"on the left of": (1, 0), "on the right of": (-1, 0), "above": (0, 1),
                  "below": (0, -1)}  # direction from the first entity to the second


def _plan_spatial(rng: np.random.Generator, comp: Composition, frames: int) -> Plan:
    a, b = entity_views(comp)
    ux, uy = _RELATION_AXIS[comp.label]

    def make() -> Plan | None:
        sa, sb = (float(rng.uniform(0.2, 0.28)) for _ in range(2))
        main, side = float(rng.uniform(0.3, 0.55)), float(rng.uniform(-0.1, 0.1))
        xa, ya = _uniform_centre(rng, sa)
        xb, yb = xa + ux * main + uy * side, ya + uy * main + ux * side
        if not _fits(xb, yb, sb):
            return None
        plan = _static([Sprite(a.shape, a.colour, xa, ya, sa), Sprite(b.shape, b.colour, xb, yb, sb)],
                       frames)
        return plan if _separated(plan, 0.04) else None

    return _retry(make, comp.label)


def _linear(t: int, frames: int) -> float:
    return t / (frames - 1)


def _plan_motion(rng: np.random.Generator, ents: tuple[EntityView, ...], frames: int) -> Plan:
    def make() -> Plan | None:
        tracks = []
        for e in ents:
            size, dist = float(rng.uniform(0.18, 0.26)), float(rng.uniform(0.3, 0.45))
            ux, uy = _UNIT[e.part]
            x0, y0 = _uniform_centre(rng, size)
            if not _fits(x0 + ux * dist, y0 + uy * dist, size):
                return None
            tracks.append((e, size, x0, y0, ux * dist, uy * dist))
        plan = [[Sprite(e.shape, e.colour, x0 + dx * _linear(t, frames), y0 + dy * _linear(t, frames), s)
                 for e, s, x0, y0, dx, dy in tracks] for t in range(frames)]
        return plan if _separated(plan, 0.05) else None

    return _retry(make, "moving objects")


def _plan_action(rng: np.random.Generator, ents: tuple[EntityView, ...], frames: int) -> Plan:
    def make() -> Plan | None:
        tracks = []
        for e in ents:
            small = float(rng.uniform(0.16, 0.2))
            big = min(0.42, small * float(rng.uniform(1.9, 2.2)))
            s0, s1 = (small, big) if e.part == "growing" else (big, small)
            tracks.append((e, s0, s1, *_uniform_centre(rng, big)))
        plan = [[Sprite(e.shape, e.colour, x, y, s0 + (s1 - s0) * _linear(t, frames))
                 for e, s0, s1, x, y in tracks] for t in range(frames)]
        return plan if _separated(plan, 0.04) else None

    return _retry(make, "growing/shrinking objects")


def _plan_interaction(rng: np.random.Generator, comp: Composition, frames: int) -> Plan:
    """Subject S and object O on one axis. hitting: S moves to touch O at a middle frame, then
    stops while O moves on (pushed); approaching: S moves toward O and stops short, O still;
    moving away from: S starts next to O and moves away, O still."""
    s_ent, o_ent = entity_views(comp)
    verb = comp.label

    def make() -> Plan | None:
        u = list(_UNIT.values())[int(rng.integers(4))]
        ss, so = float(rng.uniform(0.18, 0.24)), float(rng.uniform(0.18, 0.24))
        offset = float(rng.uniform(-0.04, 0.04))
        touch = _contact_distance(s_ent, ss, o_ent, so, u, offset) + 0.01
        gaps, o_shift = _interaction_timeline(rng, verb, frames)
        xo, yo = _uniform_centre(rng, so)
        perp = (-u[1], u[0])
        plan = []
        for t in range(frames):
            d = touch + gaps[t]  # centre distance S -> O along u, before O is pushed
            xs = xo - u[0] * d + perp[0] * offset
            ys = yo - u[1] * d + perp[1] * offset
            xt, yt = xo + u[0] * o_shift[t], yo + u[1] * o_shift[t]
            if not (_fits(xs, ys, ss) and _fits(xt, yt, so)):
                return None
            plan.append([Sprite(s_ent.shape, s_ent.colour, xs, ys, ss),
                         Sprite(o_ent.shape, o_ent.colour, xt, yt, so)])
        return plan

    return _retry(make, verb)


def _interaction_timeline(rng: np.random.Generator, verb: str,
                          frames: int) -> tuple[list[float], list[float]]:
    """Per frame: the S-O gap along the axis (with O unmoved) and O's shift along the axis."""
    ts = [_linear(t, frames) for t in range(frames)]
    if verb == "hitting":
        lo, hi = round(0.4 * (frames - 1)), round(0.6 * (frames - 1))
        fc = int(rng.integers(max(1, lo), max(1, hi) + 1))  # the contact frame
        g0 = float(rng.uniform(0.22, 0.34))
        speed = g0 / fc
        push = speed * float(rng.uniform(0.9, 1.2))  # the object's speed once hit
        gaps = [max(0.0, g0 - speed * t) for t in range(frames)]
        return gaps, [push * max(0, t - fc) for t in range(frames)]
    if verb == "approaching":
        g0, g1 = float(rng.uniform(0.36, 0.5)), float(rng.uniform(0.13, 0.18))
    else:  # moving away from
        g0 = float(rng.uniform(0.0, 0.03))
        g1 = g0 + float(rng.uniform(0.28, 0.4))
    return [g0 + (g1 - g0) * t for t in ts], [0.0] * frames


def _plan_numeracy(rng: np.random.Generator, ents: tuple[EntityView, ...], frames: int) -> Plan:
    """Static objects placed one by one at random free spots (same size within a video)."""
    size = float(rng.uniform(0.16, 0.2))
    wanted = [e for e in ents for _ in range(e.count)]

    def make() -> Plan | None:
        placed: list[Sprite] = []
        for e in wanted:
            for _ in range(200):
                s = Sprite(e.shape, e.colour, *_uniform_centre(rng, size), size)
                if all(_gap(s, p) >= 0.05 for p in placed):
                    placed.append(s)
                    break
            else:
                return None
        return _static(placed, frames)

    return _retry(make, f"{len(wanted)} objects", tries=200)


def plan_scene(spec: PromptSpec | Composition, rng: np.random.Generator, frames: int) -> Plan:
    """The sprites of every frame of a composition."""
    comp = spec if isinstance(spec, Composition) else composition_of(spec)
    ents, cat = entity_views(comp), comp.category
    if cat == "consistent_attribute_binding":
        return _plan_static_pair(rng, ents, frames)
    if cat == "dynamic_attribute_binding":
        return _plan_dynamic(rng, ents, frames)
    if cat == "spatial_relationships":
        return _plan_spatial(rng, comp, frames)
    if cat == "motion_binding":
        return _plan_motion(rng, ents, frames)
    if cat == "action_binding":
        return _plan_action(rng, ents, frames)
    if cat == "object_interactions":
        return _plan_interaction(rng, comp, frames)
    return _plan_numeracy(rng, ents, frames)


# ---------------------------------------------------------------------------------------
# Drawing
def _draw_sprite(draw: ImageDraw.ImageDraw, s: Sprite, px: int, rgb: tuple[int, int, int]) -> None:
    cx, cy, half = s.x * px, s.y * px, s.size * px / 2
    if s.shape == "circle":
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=rgb)
    elif s.shape == "square":
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=rgb)
    else:
        b, h = TRIANGLE_BASE * s.size * px, TRIANGLE_HEIGHT * s.size * px
        draw.polygon([(cx, cy - h / 2), (cx - b / 2, cy + h / 2), (cx + b / 2, cy + h / 2)], fill=rgb)


def _background(cfg: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    bg = np.broadcast_to(np.asarray(cfg.background, np.float32), (cfg.size, cfg.size, 3)).copy()
    if cfg.texture > 0:  # smooth grey blotches: texture without hue, so it never looks like an object
        coarse = rng.standard_normal((4, 4)).astype(np.float32)
        field = ndimage.zoom(coarse, cfg.size / 4, order=3)[: cfg.size, : cfg.size]
        bg += (cfg.texture * 255 * field / (np.abs(field).max() + 1e-6))[..., None]
    return bg


def _colours(cfg: RenderConfig, rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    if cfg.colour_jitter <= 0:
        return dict(PALETTE)
    out = {}
    for name, rgb in PALETTE.items():
        shifted = np.asarray(rgb) + rng.normal(0, cfg.colour_jitter * 255, 3)
        out[name] = tuple(int(v) for v in np.clip(shifted, 0, 255))
    return out


def draw_plan(plan: Plan, cfg: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    """Rasterise a plan: uint8 (frames, size, size, 3)."""
    px = cfg.size * cfg.supersample
    colours, bg = _colours(cfg, rng), _background(cfg, rng)
    frames = []
    for sprites in plan:
        img = Image.new("L", (px, px), 0)
        layers = np.zeros((cfg.size, cfg.size, 3), np.float32)
        cover = np.zeros((cfg.size, cfg.size), np.float32)
        for s in sprites:  # one coverage mask per sprite keeps anti-aliased edges exact
            img.paste(0, (0, 0, px, px))
            _draw_sprite(ImageDraw.Draw(img), s, px, 255)
            a = np.asarray(img.resize((cfg.size, cfg.size), Image.BOX), np.float32) / 255
            a = a * (1 - cover)
            layers += a[..., None] * np.asarray(colours[s.colour], np.float32)
            cover += a
        frame = bg * (1 - cover[..., None]) + layers
        if cfg.blur > 0:
            frame = ndimage.gaussian_filter(frame, sigma=(cfg.blur, cfg.blur, 0))
        if cfg.noise > 0:
            frame = frame + rng.normal(0, cfg.noise * 255, frame.shape)
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    return np.stack(frames)


def coverage(plan: Plan, size: int, channels: int, supersample: int = 4) -> np.ndarray:
    """Per-colour coverage of a plan, float32 (frames, channels, size, size) in [0, 1]: channel
    c is the c-th colour to appear (later colours beyond ``channels`` are dropped). What the
    renderer drew, by construction: no segmentation of pixels."""
    px = size * supersample
    order: list[str] = []
    for sprites in plan:
        order += [s.colour for s in sprites if s.colour not in order]
    out = np.zeros((len(plan), channels, size, size), np.float32)
    img = Image.new("L", (px, px), 0)
    for f, sprites in enumerate(plan):
        for s in sprites:
            c = order.index(s.colour)
            if c >= channels:
                continue
            img.paste(0, (0, 0, px, px))
            _draw_sprite(ImageDraw.Draw(img), s, px, 255)
            a = np.asarray(img.resize((size, size), Image.BOX), np.float32) / 255
            out[f, c] = np.maximum(out[f, c], a)
    return out


def render(spec: PromptSpec | Composition, seed: int, cfg: RenderConfig | None = None) -> np.ndarray:
    """A uint8 video (frames, size, size, 3) of ``spec``; deterministic in (spec, seed, cfg).

    Layout and pixel noise use separate random streams, so the same seed gives the same
    layout with or without noise.
    """
    cfg = cfg or RenderConfig()
    plan = plan_scene(spec, np.random.default_rng([int(seed), 0]), cfg.frames)
    return draw_plan(plan, cfg, np.random.default_rng([int(seed), 1]))
