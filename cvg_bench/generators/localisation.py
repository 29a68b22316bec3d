"""Do the entity tokens' cross-attention maps localise their objects? Per layer and step.

CVG reads the maps of the entity tokens at steps T and layers L; this score is how T and L
are chosen. Rendered shapes videos come with exact object masks known by construction: the
renderer's plan (the sprites of every frame) rasterised per colour by
:func:`cvg_bench.shapes.render.coverage`, as drawn, with no segmentation of pixels. Nothing
from the evaluation oracle (:mod:`cvg_bench.shapes.oracle`) is used here, so the choice of
L and T never sees what the scorer computes. Each video is DDIM-inverted under its own
prompt, and at every sampler step the generator is run on the inverted latent with every
cross-attention layer captured. Per (layer, step), for each entity: its map (mean over heads
and the entity's tokens) is resized to the video, and compared with the entity's mask
(coverage of its colour > 0.5) frame by frame:

- ``iou``: IoU of the map's top-k pixels (k = the mask's area) with the mask;
- ``mass``: share of the map's attention mass inside the mask;
- ``chance``: the mask's share of the frame (what ``mass`` and roughly ``iou`` are for a
  uniform map). ``lift`` = mass / chance.

    python -m cvg_bench.generators.localisation --n 32 --out results/localisation
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cvg_bench.generators.base import AttentionSelection
from cvg_bench.records import atomic_write_text
from cvg_bench.types import PromptSpec, Video

if TYPE_CHECKING:
    from cvg_bench.shapes.render import Plan, RenderConfig

#: Categories whose entities each have one fixed colour: exact masks from per-colour coverage.
MASKED_CATEGORIES = ("spatial_relationships", "motion_binding", "action_binding",
                     "object_interactions", "consistent_attribute_binding", "generative_numeracy")


def scene(spec: PromptSpec, seed: int, cfg: RenderConfig | None = None) -> tuple[Video, Plan]:
    """``render(spec, seed, cfg)`` and the plan it draws: the same random streams as
    :func:`cvg_bench.shapes.render.render` (layout ``[seed, 0]``, pixels ``[seed, 1]``)."""
    from cvg_bench.shapes.render import RenderConfig, draw_plan, plan_scene

    cfg = cfg or RenderConfig()
    plan = plan_scene(spec, np.random.default_rng([int(seed), 0]), cfg.frames)
    return draw_plan(plan, cfg, np.random.default_rng([int(seed), 1])), plan


def entity_masks(plan: Plan, spec: PromptSpec, size: int,
                 supersample: int = 4) -> list[np.ndarray | None]:
    """Boolean ``(frames, size, size)`` mask per entity of ``spec``: the renderer's coverage of
    the entity's colour in ``plan`` (> 0.5), known by construction; ``None`` where the entity
    has no single fixed colour (e.g. a colour change)."""
    from cvg_bench.shapes.grammar import composition_of, entity_views
    from cvg_bench.shapes.render import PALETTE, coverage

    out: list[np.ndarray | None] = []
    for ent in entity_views(composition_of(spec)):
        if ent.colour not in PALETTE:
            out.append(None)
            continue
        only = [[s for s in sprites if s.colour == ent.colour] for sprites in plan]
        out.append(coverage(only, size, 1, supersample)[:, 0] > 0.5)
    return out


def map_scores(att: torch.Tensor, mask: np.ndarray) -> dict[str, float]:
    """``att`` (frames, h, w) attention of one entity; ``mask`` (frames, H, W) its object.
    Frames where the object is absent are skipped."""
    frames, H, W = mask.shape
    up = F.interpolate(att.float()[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    up = up.clamp_min(0).numpy()
    ious, masses, chances = [], [], []
    for f in range(frames):
        m = mask[f]
        k = int(m.sum())
        if k == 0:
            continue
        a = up[f].ravel()
        top = np.zeros(a.size, bool)
        top[np.argpartition(-a, k - 1)[:k]] = True
        inter = np.logical_and(top, m.ravel()).sum()
        ious.append(inter / (2 * k - inter))
        masses.append(a[m.ravel()].sum() / max(a.sum(), 1e-12))
        chances.append(k / m.size)
    if not ious:
        return {}
    return {"iou": float(np.mean(ious)), "mass": float(np.mean(masses)), "chance": float(np.mean(chances))}


@torch.no_grad()
def localisation_rows(generator, examples: Iterable[tuple[Video, PromptSpec, Plan]],
                      steps: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One row per (video, entity, layer, step) with ``iou``, ``mass`` and ``chance``.
    ``examples``: (video, spec, plan) as :func:`scene` / :func:`shapes_videos` give them."""
    layers = generator.attention_layers()
    rows: list[dict[str, Any]] = []
    for vid, (video, spec, plan) in enumerate(tqdm(examples, desc="localisation", unit="video")):
        masks = entity_masks(plan, spec, size=video.shape[1])
        tokens = generator.prompt_tokens(spec)
        inversion = generator.invert(video, spec)
        sel = AttentionSelection(layers=None, heads=None, tokens=tokens.key_tokens)
        chosen = range(len(inversion.timesteps)) if steps is None else steps
        for step in chosen:
            t = inversion.timesteps[step]
            attn = generator.capture(inversion.latent_at(t), t, spec, sel)
            slot = {tok: i for i, tok in enumerate(attn.tokens)}
            for li, layer in enumerate(layers):
                maps = attn.maps[layer]  # (heads, tokens, frames, h, w)
                for e, (ent_tokens, mask) in enumerate(zip(tokens.entity_tokens, masks)):
                    if mask is None:
                        continue
                    att = maps[:, [slot[x] for x in ent_tokens]].mean(dim=(0, 1))
                    scores = map_scores(att, mask)
                    if scores:
                        rows.append({"video": vid, "category": spec.category, "entity": e,
                                     "layer": layer, "layer_index": li, "step": step,
                                     "timestep": t, **scores})
    return rows


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean scores per (layer, step), with ``lift`` = mass / chance."""
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("no entity masks were scored (no video had a fixed-colour entity)")
    table = (df.groupby(["layer_index", "layer", "step", "timestep"])[["iou", "mass", "chance"]]
             .mean().reset_index())
    table["lift"] = table["mass"] / table["chance"]
    return table


def choose(table: pd.DataFrame, num_layers: int = 3, steps: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """L: the ``num_layers`` layers with the best mean IoU over ``steps`` (the guided steps)."""
    at = table[table["step"].isin(list(steps))]
    if at.empty:
        raise ValueError(f"steps {list(steps)} were not measured; measured: {sorted(table['step'].unique())}")
    per_layer = at.groupby(["layer_index", "layer"])["iou"].mean().sort_values(ascending=False)
    best = per_layer.head(num_layers).reset_index()
    return {"layers": best["layer"].tolist(), "layer_indices": best["layer_index"].tolist(),
            "iou_at_steps": [round(float(v), 4) for v in best["iou"]], "steps": list(steps)}


@dataclass
class LocalisationResult:
    rows: pd.DataFrame
    table: pd.DataFrame
    chosen: dict[str, Any]


def shapes_videos(n: int, seed: int, split: str = "seen",
                  categories: Sequence[str] = MASKED_CATEGORIES) -> list[tuple[Video, PromptSpec, Plan]]:
    """``n`` rendered videos (what the tiny generator trains on), categories in turn, each as
    (video, spec, plan)."""
    from cvg_bench.shapes.grammar import sample_spec
    from cvg_bench.shapes.render import RenderConfig

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        spec = sample_spec(rng, categories[i % len(categories)], split)
        video, plan = scene(spec, seed=seed * 1_000_003 + i, cfg=RenderConfig())
        out.append((video, spec, plan))
    return out


def measure(generator, n: int = 32, seed: int = 0, steps: Sequence[int] | None = None,
            guided_steps: Sequence[int] = (0, 1), num_layers: int = 3) -> LocalisationResult:
    rows = localisation_rows(generator, shapes_videos(n, seed), steps)
    table = summarise(rows)
    return LocalisationResult(pd.DataFrame(rows), table, choose(table, num_layers, guided_steps))


def to_markdown(table: pd.DataFrame, steps: Sequence[int]) -> str:
    """Layer x step grid of IoU (chance in the header)."""
    sub = table[table["step"].isin(list(steps))]
    grid = sub.pivot_table(index=["layer_index", "layer"], columns="step", values="iou")
    chance = float(table["chance"].mean())
    lines = [f"IoU of the entity map's top-k pixels with the object mask (chance ~{chance:.3f})", "",
             "| layer | " + " | ".join(f"step {s}" for s in grid.columns) + " |",
             "|---|" + "---|" * len(grid.columns)]
    for (li, name), row in grid.iterrows():
        lines.append(f"| {li}: {name} | " + " | ".join(f"{v:.3f}" for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from cvg_bench import registry

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="rendered videos (seen split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generator-path", default=None, help="tiny generator folder (default: assets)")
    p.add_argument("--steps", default="all", help="comma-separated step indices, or 'all'")
    p.add_argument("--guided-steps", default="0,1", help="steps T at which L is chosen")
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/localisation")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = registry.build("generator", {"name": "tiny", "path": args.generator_path})
    steps = None if args.steps == "all" else [int(s) for s in args.steps.split(",")]
    guided = [int(s) for s in args.guided_steps.split(",")]
    result = measure(generator, args.n, args.seed, steps, guided, args.num_layers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.rows.to_csv(out / "rows.csv", index=False)
    result.table.to_csv(out / "by_layer_step.csv", index=False)
    shown = sorted(set(guided) | {s for s in (0, 5, 12, 24) if s in set(result.table["step"])})
    md = to_markdown(result.table, shown)
    atomic_write_text(out / "by_layer_step.md", md)
    atomic_write_text(out / "chosen.json", json.dumps(
        {**result.chosen, "generator": generator.version(), "n_videos": args.n, "seed": args.seed,
         "command": "python -m cvg_bench.generators.localisation " + " ".join(sys.argv[1:] if argv is None else argv)}, indent=1))
    print(md)
    print("chosen:", json.dumps(result.chosen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
