"""Measure the oracle: correct compositions must pass, wrong ones (p- rendered) must fail.

    python -m cvg_bench.shapes.oracle_accuracy --n 200

For each category and each viewing condition, ``n`` random compositions (all splits) are
rendered and judged against their prompt (should pass), and a p- of each (same entities,
another label) is rendered and judged against the original prompt (should fail).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cvg_bench.shapes.grammar import CATEGORIES, negative, sample_spec
from cvg_bench.shapes.oracle import judge
from cvg_bench.shapes.render import RenderConfig, render


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


@dataclass(frozen=True)
class Condition:
    name: str
    cfg: RenderConfig
    post: Callable[[np.ndarray], np.ndarray] | None = None


CONDITIONS: dict[str, Condition] = {
    "default": Condition("default 8x32", RenderConfig()),
    "large": Condition("16x64 noise+texture", RenderConfig(frames=16, size=64, noise=0.04,
                                                            texture=0.05)),
    "blurry": Condition("8x32 blur1 noise jitter", RenderConfig(blur=1.0, noise=0.03,
                                                                colour_jitter=0.04)),
    "mp4": Condition("8x32 mp4", RenderConfig(), mp4_round_trip),
    "generator": Condition("8x32 generator-like", RenderConfig(blur=0.8, noise=0.03, texture=0.04,
                                                            colour_jitter=0.05), generator_like),
}


def measure(n: int, condition: Condition, categories: tuple[str, ...] = CATEGORIES,
            seed: int = 0) -> dict[str, tuple[float, float]]:
    """category -> (fraction of correct videos passed, fraction of wrong videos failed)."""
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


def table(results: dict[str, dict[str, tuple[float, float]]], n: int) -> str:
    """Markdown: one row per category, (correct passed / wrong failed) per condition."""
    conds = list(results)
    head = "| category | " + " | ".join(f"{c}: correct pass / wrong fail" for c in conds) + " |"
    sep = "|---|" + "---|" * len(conds)
    rows = [head, sep]
    cats = list(next(iter(results.values())))
    for cat in cats + ["overall"]:
        cells = []
        for c in conds:
            vals = list(results[c].values()) if cat == "overall" else [results[c][cat]]
            tp, tn = np.mean([v[0] for v in vals]), np.mean([v[1] for v in vals])
            cells.append(f"{100 * tp:.1f}% / {100 * tn:.1f}%")
        rows.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + f"\n\n(n = {n} compositions and {n} negatives per category and condition)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="compositions per category and condition")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    results = {CONDITIONS[c].name: measure(args.n, CONDITIONS[c], tuple(args.categories), args.seed)
               for c in args.conditions}
    print(table(results, args.n))


if __name__ == "__main__":
    main()
