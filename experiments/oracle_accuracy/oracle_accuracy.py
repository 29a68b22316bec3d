"""Measure the shapes oracle both ways: correct videos must pass, broken ones must fail.

    python experiments/oracle_accuracy/oracle_accuracy.py --n 25 --out experiments/oracle_accuracy

For each viewing condition and each category, ``n`` random compositions (all splits) are
drawn correctly and judged against their prompt (should pass); a p- of each (same entities,
another label) is drawn and judged against the original prompt (should fail); and the correct
scene is broken in every way of ``scenes.KINDS`` (merged entities, colour drift, shrinking to
a dot, vanishing, flickering, shape morph, an extra object, a wrong count) and judged against
its prompt (should fail). Two drawing routines: the project's renderer (five conditions:
plain 8x32, 16x64 with noise and texture, blur, mp4, generator-like) and this study's own
PIL drawer (``scenes.py``: own layouts, palette, rotations; 8-16 frames at 32-64 px; sharp,
soft, or through mp4). Writes ``table.md`` (the doc's table) and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import KINDS, draw_pil, from_plan, plan_pil, to_plan  # noqa: E402

from cvg_bench.shapes.grammar import CATEGORIES, negative, sample_spec  # noqa: E402
from cvg_bench.shapes.oracle import judge  # noqa: E402
from cvg_bench.shapes.render import RenderConfig, draw_plan, plan_scene, render  # noqa: E402

# The oracle before issue 27 (v1: predicates + validity >= 0.5), for the comparison column.
V1_COMMIT = "9423185f167e262c386d7d4aa5d6606ab0693548"


def load_v1_judge() -> Callable | None:
    """``judge`` of the v1 oracle, from git history (None when git or the commit is missing)."""
    root = Path(__file__).resolve().parents[2]
    try:
        src = subprocess.run(["git", "show", f"{V1_COMMIT}:cvg_bench/shapes/oracle.py"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("shapes_oracle_v1")
    sys.modules[mod.__name__] = mod  # (dataclasses look their module up)
    exec(compile(src, "shapes_oracle_v1.py", "exec"), mod.__dict__)
    return mod.judge


# ---------------------------------------------------------------------------------------
# Degradations
def mp4_round_trip(video: np.ndarray, fps: int = 8) -> np.ndarray:
    """Encode as H.264 mp4 and decode again (what a real generator's files go through)."""
    import imageio.v3 as iio

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.mp4")
        iio.imwrite(path, video, fps=fps, codec="libx264", macro_block_size=1)
        return np.asarray(iio.imread(path))[..., :3]


def generator_like(video: np.ndarray) -> np.ndarray:
    """Defects of a tiny diffusion model's samples on top of a blurred render: washed-out
    colours and stray specks of palette colour (2x2 px)."""
    rng = np.random.default_rng(int(video.sum()) % (2 ** 32))
    v = video.astype(np.float32)
    grey = v.mean(-1, keepdims=True)
    v = grey + 0.75 * (v - grey)  # desaturate
    f, h, w, _ = v.shape
    palette = np.array([[225, 45, 45], [45, 195, 70], [50, 90, 235], [230, 210, 45]], np.float32)
    for t in range(f):
        for _ in range(int(rng.integers(0, 4))):
            y, x = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
            v[t, y: y + 2, x: x + 2] = palette[int(rng.integers(4))]
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def blur_noise(video: np.ndarray, sigma: float = 0.8, noise: float = 6.0, seed: int = 0) -> np.ndarray:
    v = ndimage.gaussian_filter(video.astype(np.float32), (0, sigma, sigma, 0))
    v += np.random.default_rng(seed).normal(0, noise, v.shape)
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Viewing conditions: a drawer (scene -> video) and how scenes are made
@dataclass(frozen=True)
class Condition:
    name: str
    cfg: RenderConfig | None = None  # the project's renderer; None: the PIL drawer
    post: Callable[[np.ndarray], np.ndarray] | None = None
    antialias: bool = True
    sizes: tuple[tuple[int, int], ...] = ((8, 32), (12, 48), (16, 64), (10, 40))  # PIL: (frames, px)


CONDITIONS: dict[str, Condition] = {
    "default": Condition("renderer 8x32", RenderConfig()),
    "large": Condition("renderer 16x64 noise+texture", RenderConfig(frames=16, size=64, noise=0.04,
                                                                   texture=0.05)),
    "blurry": Condition("renderer 8x32 blur1 noise jitter", RenderConfig(blur=1.0, noise=0.03,
                                                                        colour_jitter=0.04)),
    "mp4": Condition("renderer 8x32 mp4", RenderConfig(), mp4_round_trip),
    "generator": Condition("renderer 8x32 generator-like", RenderConfig(blur=0.8, noise=0.03,
                                                                       texture=0.04,
                                                                       colour_jitter=0.05),
                           generator_like),
    # Without anti-aliasing, 32 px is too coarse: a 5 px aliased circle and a 5 px square
    # differ by a few corner pixels (nobody can tell them apart), so sharp starts at 40 px.
    "pil_sharp": Condition("PIL 10-16f 40-64px sharp", antialias=False,
                           sizes=((12, 48), (16, 64), (10, 40))),
    "pil_soft": Condition("PIL 8-16f 32-64px blur+noise", post=blur_noise),
    "pil_mp4": Condition("PIL 8-16f 32-64px mp4", post=mp4_round_trip),
}
PIL_SIZES = Condition("sizes").sizes  # (frames, px), cycled over videos


def measure(n: int, condition: Condition, categories: tuple[str, ...] = CATEGORIES,
            seed: int = 0) -> dict[str, tuple[float, float]]:
    """Renderer only: category -> (fraction of correct videos passed, fraction of p- failed)."""
    out = {}
    for ci, cat in enumerate(categories):
        rng = np.random.default_rng([seed, ci])
        tp = tn = 0
        for i in range(n):
            spec = sample_spec(rng, cat, "all")
            neg = negative(spec, rng)
            vid_pos = render(spec, seed=1000 * ci + i, cfg=condition.cfg)
            vid_neg = render(neg, seed=1000 * ci + i, cfg=condition.cfg)
            if condition.post is not None:
                vid_pos, vid_neg = condition.post(vid_pos), condition.post(vid_neg)
            tp += judge(vid_pos, spec).passed
            tn += not judge(vid_neg, spec).passed
        out[cat] = (tp / n, tn / n)
    return out


ROWS = ("correct", "wrong relation (p-)") + tuple(KINDS)


def _scene_and_draw(cond: Condition, spec, seed: int, i: int):
    """(scene, drawer): a correct scene of ``spec`` and a function drawing any scene."""
    if cond.cfg is not None:
        cfg = cond.cfg
        scene = from_plan(plan_scene(spec, np.random.default_rng([seed, 0]), cfg.frames))

        def draw(sc):
            return draw_plan(to_plan(sc), cfg, np.random.default_rng([seed, 1]))
        return scene, draw
    frames, px = cond.sizes[i % len(cond.sizes)]
    rng = np.random.default_rng([seed, 2])
    blend = bool(rng.random() < 0.5)
    scene = plan_pil(spec, frames, rng)

    def draw(sc):
        return draw_pil(sc, px, np.random.default_rng([seed, 3]), cond.antialias, blend)
    return scene, draw


def two_way(n: int, cond: Condition, categories: tuple[str, ...] = CATEGORIES, seed: int = 0,
            judges: dict[str, Callable] | None = None, kinds: tuple[str, ...] = tuple(KINDS),
            examples: list | None = None) -> dict[str, dict[str, dict[str, list[int]]]]:
    """judge name -> row -> category -> [right verdicts, videos]. Rows: ``correct`` (right =
    passed), ``wrong relation (p-)`` and each broken kind (right = failed). ``examples``
    collects (judge, row, prompt, seed) of wrong verdicts."""
    judges = judges or {"v2": judge}
    out = {j: {r: defaultdict(lambda: [0, 0]) for r in ROWS} for j in judges}
    for ci, cat in enumerate(categories):
        rng = np.random.default_rng([seed, ci])
        for i in range(n):
            spec = sample_spec(rng, cat, "all")
            neg = negative(spec, rng)
            vseed = 100_000 * seed + 1000 * ci + i
            scene, draw = _scene_and_draw(cond, spec, vseed, i)
            neg_scene, _ = _scene_and_draw(cond, neg, vseed, i)
            videos = [("correct", draw(scene)), ("wrong relation (p-)", draw(neg_scene))]
            krng = np.random.default_rng([seed, ci, i, 7])
            for kind in kinds:
                broken = KINDS[kind](scene, spec, krng)
                if broken is not None:
                    videos.append((kind, draw(broken)))
            for row, video in videos:
                if cond.post is not None:
                    video = cond.post(video)
                for jn, jf in judges.items():
                    passed = jf(video, spec).passed
                    right = passed if row == "correct" else not passed
                    cell = out[jn][row][cat]
                    cell[0] += int(right)
                    cell[1] += 1
                    if not right and examples is not None:
                        examples.append((jn, cond.name, row, spec.prompt, vseed))
    return {j: {r: dict(c) for r, c in rows.items()} for j, rows in out.items()}


def _pct(cells: list[list[int]]) -> str:
    right, total = sum(c[0] for c in cells), sum(c[1] for c in cells)
    return f"{100 * right / total:.1f}% ({total})" if total else "-"


def table(results: dict[str, dict], judge_name: str = "v2", compare: str | None = "v1") -> str:
    """Markdown: rows = correct / p- / broken kinds, columns = conditions, then all conditions
    pooled (and the old oracle pooled). Cells: share of right verdicts (videos)."""
    conds = list(results)
    head = "| video (right verdict) | " + " | ".join(conds) + " | all (new oracle) |"
    if compare and all(compare in results[c] for c in conds):
        head += f" all (old oracle {compare}) |"
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for row in ROWS:
        label = "correct (pass)" if row == "correct" else f"{row} (fail)"
        cells = [_pct(list(results[c][judge_name][row].values())) for c in conds]
        pooled = _pct([v for c in conds for v in results[c][judge_name][row].values()])
        line = f"| {label} | " + " | ".join(cells) + f" | **{pooled}** |"
        if compare and all(compare in results[c] for c in conds):
            line += " " + _pct([v for c in conds for v in results[c][compare][row].values()]) + " |"
        rows.append(line)
    return "\n".join(rows)


def category_table(results: dict[str, dict], judge_name: str = "v2") -> str:
    """Correct videos passed per category, all conditions pooled; broken failed per category."""
    cats = sorted({cat for c in results for row in results[c][judge_name].values() for cat in row},
                  key=CATEGORIES.index)
    rows = ["| category | correct pass | p- fail | broken fail (all kinds) |", "|---|---|---|---|"]
    for cat in cats:
        get = lambda rs: [results[c][judge_name][r][cat] for c in results for r in rs  # noqa: E731
                          if cat in results[c][judge_name][r]]
        rows.append(f"| {cat} | {_pct(get(['correct']))} | {_pct(get(['wrong relation (p-)']))} | "
                    f"{_pct(get(list(KINDS)))} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=25, help="compositions per category and condition")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-v1", action="store_true", help="skip the old oracle's column")
    ap.add_argument("--out", type=Path, default=None, help="write table.md and results.json here")
    args = ap.parse_args(argv)
    judges = {"v2": judge}
    v1 = None if args.no_v1 else load_v1_judge()
    if v1 is not None:
        judges["v1"] = v1
    t0 = time.time()
    results, examples = {}, []
    for c in args.conditions:
        cond = CONDITIONS[c]
        results[cond.name] = two_way(args.n, cond, tuple(args.categories), args.seed, judges,
                                     examples=examples)
        print(f"{cond.name}: done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    md = (table(results) + "\n\nCorrect / broken per category (new oracle, all conditions):\n\n"
          + category_table(results)
          + f"\n\n(n = {args.n} compositions per category and condition, seed {args.seed}; "
            f"{time.time() - t0:.0f} s)")
    misses = [e for e in examples if e[0] == "v2"]
    if misses:
        md += "\n\nNew oracle's wrong verdicts (condition, row, prompt, video seed):\n" + "\n".join(
            f"- {c} | {r} | {p} | {s}" for _, c, r, p, s in misses)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(md + "\n")
        (args.out / "results.json").write_text(json.dumps(  # cells: [right verdicts, videos]
            {"n": args.n, "seed": args.seed, "results": results,
             "wrong_verdicts": [list(e) for e in examples if e[0] == "v2"]},
            separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
