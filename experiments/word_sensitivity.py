"""Does the tiny generator's denoiser read the prompt's composition words?

    python -m experiments.word_sensitivity --path PATH --n 32 --out results/reference/word_sensitivity/NAME

Rendered seen-split videos are noised to timesteps t and denoised under their true prompt p+
and under p-: the same entities with another label y' of the category's set Y (the
dual-inversion negative: "left" for "right", "up" for "down", "two" for "three"), with the
same noise and t. A model that uses the label words has a lower loss under p+:
gap = L(p-) - L(p+) > 0, and p+ wins on most videos. A model that ignores them has a gap of
~0 and wins half the time, however long it trains. The control (``colour_swap``: the two
entities' colours exchanged in spatial prompts) shows the size of the gap for words the model
does read. The text encoder's separation of p+ and p- (:func:`text_separation`) tells
whether a word is lost already before the denoiser. It costs seconds (no sampling), so it can be run on every checkpoint.

Writes ``OUT/word_sensitivity.{md,csv}`` (the table) and ``OUT/rows.csv`` (per video and t).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from cvg_bench.generators.tiny_training import prediction_and_target, videos_to_latents
from cvg_bench.records import atomic_write_text
from cvg_bench.shapes import grammar
from cvg_bench.shapes.render import RenderConfig, render
from cvg_bench.types import PromptSpec

T_BINS: tuple[tuple[int, int], ...] = ((900, 1000), (600, 900), (300, 600), (0, 300))


def label_swap(spec: PromptSpec, rng: np.random.Generator) -> PromptSpec:
    """p-: the same entities with another label of the category (``grammar.negative``)."""
    return grammar.negative(spec, rng)


def colour_swap(spec: PromptSpec, rng: np.random.Generator) -> PromptSpec:
    """The two entities' colours exchanged (same label): a word the model is known to read."""
    comp = grammar.composition_of(spec)
    (c1, s1), (c2, s2) = comp.objects
    return grammar.spec_of(grammar.Composition(comp.category, ((c2, s1), (c1, s2)), comp.label))


# probe name -> (categories it applies to, counterfactual prompt maker)
PROBES: dict[str, tuple[tuple[str, ...], Callable[[PromptSpec, np.random.Generator], PromptSpec]]] = {
    "label_swap": (grammar.CATEGORIES, label_swap),
    "colour_swap": (("spatial_relationships",), colour_swap),
}


@torch.no_grad()
def denoising_loss(pipe: Any, prompts: Sequence[str], x0: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """Per-video loss of the pipeline's prediction target (v, epsilon or sample) at ``t``."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    pred, target = prediction_and_target(pipe, sched, list(prompts), x0, noise, t)
    return ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, pred.ndim)))


def ideal_gap(plus: PromptSpec, minus: PromptSpec, renders: int = 200, seed: int = 0,
              frames: int = 8, size: int = 32) -> float:
    """The gap of a denoiser that reads the words perfectly, at t = 999 exactly: from pure
    noise a v-prediction model outputs the prompt's mean video, so on videos of p+ the loss
    under p- exceeds the loss under p+ by the mean squared difference of the two mean videos
    (pixel scale [-1, 1], as the tiny model's latents). A scale for the measured gaps, not a
    bound at other t (where x_t already shows part of the answer)."""
    rng = np.random.default_rng(seed)

    def mean_video(spec: PromptSpec) -> np.ndarray:
        videos = [render(spec, int(rng.integers(2**31)), RenderConfig(frames=frames, size=size))
                  for _ in range(renders)]
        return np.mean(videos, axis=0) / 127.5 - 1.0

    m_plus, m_minus = mean_video(plus), mean_video(minus)
    return float(np.mean((m_plus - m_minus) ** 2))


def prompt_pairs(n: int = 32, seed: int = 0, probes: Sequence[str] = tuple(PROBES),
                 categories: Sequence[str] | None = None
                 ) -> Iterator[tuple[str, str, list[PromptSpec], list[PromptSpec], np.random.Generator]]:
    """Per (probe, category) it applies to: ``n`` seen-split specs p+, their counterfactuals p-
    and the generator that drew them (it goes on to draw the render seeds)."""
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown}; accepted: {sorted(PROBES)}")
    bad = sorted(set(categories or ()) - set(grammar.CATEGORIES))
    if bad:
        raise ValueError(f"unknown categories {bad}; accepted: {', '.join(grammar.CATEGORIES)}")
    for probe in probes:
        applies_to, counterfactual = PROBES[probe]
        for category in [c for c in applies_to if categories is None or c in categories]:
            rng = np.random.default_rng([seed, grammar.CATEGORIES.index(category)])
            specs = [grammar.sample_spec(rng, category, "seen") for _ in range(n)]
            yield probe, category, specs, [counterfactual(s, rng) for s in specs], rng


def sensitivity_rows(pipe: Any, n: int = 32, seed: int = 0, frames: int = 8, size: int = 32,
                     t_bins: Sequence[tuple[int, int]] = T_BINS, probes: Sequence[str] = tuple(PROBES),
                     batch: int = 8, categories: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (probe, category, video, t bin): the losses under p+ and p- and their gap
    (``categories``: only these, where a probe applies to them)."""
    device = next(pipe.unet.parameters()).device
    rows: list[dict[str, Any]] = []
    for probe, category, specs, negatives, rng in prompt_pairs(n, seed, probes, categories):
        videos = np.stack([render(s, int(rng.integers(2**31)), RenderConfig(frames=frames, size=size))
                           for s in specs])
        for b, (lo, hi) in enumerate(t_bins):
            gen = torch.Generator().manual_seed(seed * 1000 + b)
            for i in range(0, n, batch):
                x0 = videos_to_latents(pipe, videos[i : i + batch], device)
                noise = torch.randn(x0.shape, generator=gen).to(device)
                t = torch.randint(lo, hi, (x0.shape[0],), generator=gen).to(device)
                plus = denoising_loss(pipe, [s.prompt for s in specs[i : i + batch]], x0, noise, t)
                minus = denoising_loss(pipe, [s.prompt for s in negatives[i : i + batch]], x0, noise, t)
                for j in range(x0.shape[0]):
                    rows.append({"probe": probe, "category": category, "t_bin": f"{lo}-{hi}",
                                 "prompt": specs[i + j].prompt, "counterfactual": negatives[i + j].prompt,
                                 "t": int(t[j]), "loss_plus": float(plus[j]), "loss_minus": float(minus[j])})
    out = pd.DataFrame(rows, columns=["probe", "category", "t_bin", "prompt", "counterfactual", "t",
                                      "loss_plus", "loss_minus"])
    out["gap"] = out["loss_minus"] - out["loss_plus"]
    return out


def ideal_gaps(rows: pd.DataFrame, compositions: int = 4, renders: int = 200, frames: int = 8,
               size: int = 32) -> pd.DataFrame:
    """Per (probe, category): the mean :func:`ideal_gap` of its first ``compositions`` pairs."""
    out = []
    for (probe, category), part in rows.groupby(["probe", "category"], sort=False):
        pairs = part.drop_duplicates("prompt").head(compositions)
        gaps = [ideal_gap(grammar.parse(a), grammar.parse(b), renders, i, frames, size)
                for i, (a, b) in enumerate(zip(pairs["prompt"], pairs["counterfactual"]))]
        out.append({"probe": probe, "category": category, "ideal_gap_t999": float(np.mean(gaps))})
    return pd.DataFrame(out)


@torch.no_grad()
def text_separation(pipe: Any, plus: Sequence[str], minus: Sequence[str]) -> pd.DataFrame:
    """How far the text encoder's output (what cross-attention reads) moves from p+ to p-.
    The prompts' tokens split into a common prefix, the swapped words ("left" / "right", or
    "on the left of" / "above") and a common suffix (the rest, up to [EOS]). Per pair:
    ``word`` = ||h+ - h-|| / ||h+|| of the swapped words' mean output, ``after`` = the same
    over the suffix tokens, aligned (where the causal encoder can carry the word on to the
    second entity). ~0: the word is lost before the denoiser sees it."""
    device = next(pipe.text_encoder.parameters()).device
    tok = pipe.tokenizer
    rows = []
    for a, b in zip(plus, minus):
        ids_a, ids_b = (tok([x], truncation=True, max_length=tok.model_max_length,
                            return_tensors="pt").input_ids.to(device) for x in (a, b))
        ta, tb = ids_a[0].tolist(), ids_b[0].tolist()
        if ta == tb:
            raise ValueError(f"p+ and p- tokenise the same: {a!r}")
        k = next(i for i, (x, y) in enumerate(zip(ta + [None], tb + [None])) if x != y)
        m = 0  # common suffix length, never overlapping the prefix
        while m < min(len(ta), len(tb)) - k and ta[-1 - m] == tb[-1 - m]:
            m += 1
        ha, hb = pipe.text_encoder(ids_a)[0][0].float(), pipe.text_encoder(ids_b)[0][0].float()
        rel = lambda x, y: float((x - y).norm() / x.norm().clamp_min(1e-12))
        word_a = ha[k : len(ta) - m].mean(0) if len(ta) - m > k else ha[k - 1]
        word_b = hb[k : len(tb) - m].mean(0) if len(tb) - m > k else hb[k - 1]
        rows.append({"prompt": a, "counterfactual": b, "word": rel(word_a, word_b),
                     "after": rel(ha[len(ta) - m :], hb[len(tb) - m :]) if m else float("nan")})
    return pd.DataFrame(rows)


def text_separations(pipe: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """Per (probe, category): mean :func:`text_separation` over its prompt pairs."""
    out = []
    for (probe, category), part in rows.groupby(["probe", "category"], sort=False):
        pairs = part.drop_duplicates("prompt")
        sep = text_separation(pipe, pairs["prompt"].tolist(), pairs["counterfactual"].tolist())
        out.append({"probe": probe, "category": category, "text_sep_word": float(sep["word"].mean()),
                    "text_sep_after": float(sep["after"].mean())})
    return pd.DataFrame(out)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (probe, category, t bin): mean gap and its s.e., the share of videos p+ wins, mean L(p+)."""
    g = rows.groupby(["probe", "category", "t_bin"], sort=False)
    table = g.agg(videos=("gap", "size"), gap=("gap", "mean"), gap_se=("gap", "sem"),
                  p_plus_wins=("gap", lambda x: float((x > 0).mean())), loss_plus=("loss_plus", "mean"))
    table["relative_gap"] = table["gap"] / table["loss_plus"]
    return table.reset_index()


def to_markdown(table: pd.DataFrame, ideal: pd.DataFrame | None = None,
                text: pd.DataFrame | None = None) -> str:
    """Rows (probe, category), columns: t bins with gap x 1e4 (s.e.) and p+'s win share, (if
    given) the ideal gap at t = 999 x 1e4 and the text encoder's separation of p+ and p-."""
    bins = list(table["t_bin"].unique())
    best = {} if ideal is None else {(r.probe, r.category): r.ideal_gap_t999 for r in ideal.itertuples()}
    sep = {} if text is None else {(r.probe, r.category): r for r in text.itertuples()}
    head = ([f"t {b}: gap x1e4 (s.e.), p+ wins" for b in bins] + (["ideal gap at t=999 x1e4"] if best else [])
            + (["text sep.: word / after it"] if sep else []))
    lines = ["| probe | category | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for (probe, category), part in table.groupby(["probe", "category"], sort=False):
        cells = [f"{r.gap * 1e4:+.1f} ({r.gap_se * 1e4:.1f}), {r.p_plus_wins:.2f}" for r in part.itertuples()]
        if best:
            cells.append(f"{best[(probe, category)] * 1e4:.1f}")
        if sep:
            r = sep[(probe, category)]
            cells.append(f"{r.text_sep_word:.2f} / {r.text_sep_after:.2f}")
        lines.append(f"| {probe} | {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_text_only(pipe: Any, path: Path, args: argparse.Namespace, categories: list[str] | None,
                    command: str) -> int:
    """``--text-only``: the text encoder's separation per (probe, category), no denoising."""
    pairs = pd.DataFrame([{"probe": probe, "category": category, "prompt": a.prompt, "counterfactual": b.prompt}
                          for probe, category, specs, negatives, _ in
                          prompt_pairs(args.n, args.seed, args.probes.split(","), categories)
                          for a, b in zip(specs, negatives)])
    if pairs.empty:
        raise SystemExit(f"no probe of {args.probes} applies to the categories {args.categories}")
    text = text_separations(pipe, pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text.to_csv(out / "text_separation.csv", index=False)
    lines = ["| probe | category | at the swapped words | after them |", "|---|---|---|---|"]
    lines += [f"| {r.probe} | {r.category} | {r.text_sep_word:.3f} | {r.text_sep_after:.3f} |"
              for r in text.itertuples()]
    md = (f"# Text-encoder separation of p+ and p- in {path}\n\nMade by `{command}`.\n"
          "||h+ - h-|| / ||h+|| of the text encoder's output at the swapped words and over the aligned "
          "tokens after them, mean over the prompt pairs (`text_separation`).\n\n"
          + "\n".join(lines) + "\n")
    atomic_write_text(out / "text_separation.md", md)
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    from cvg_bench.generators.tiny import load_tiny_pipeline, resolve_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", default=None, help="saved tiny pipeline folder (default: the shipped assets)")
    p.add_argument("--n", type=int, default=32, help="rendered videos per category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated: {', '.join(PROBES)}")
    p.add_argument("--categories", default=None, help="comma-separated (default: every category a probe applies to)")
    p.add_argument("--frames", type=int, default=8, help="rendered frames (the model's training clips)")
    p.add_argument("--size", type=int, default=32, help="rendered frame size in pixels")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/word_sensitivity")
    p.add_argument("--text-only", action="store_true",
                   help="only the text encoder's separation of p+ and p- (a second; writes text_separation.{md,csv})")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_path(args.path)
    pipe = load_tiny_pipeline(path)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    categories = args.categories.split(",") if args.categories else None
    command = "python -m experiments.word_sensitivity " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.text_only:
        return write_text_only(pipe, path, args, categories, command)
    rows = sensitivity_rows(pipe, n=args.n, seed=args.seed, frames=args.frames, size=args.size,
                            probes=args.probes.split(","), categories=categories)
    if rows.empty:
        raise SystemExit(f"no probe of {args.probes} applies to the categories {args.categories}")
    table = summarise(rows)
    ideal = ideal_gaps(rows, frames=args.frames, size=args.size)
    text = text_separations(pipe, rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "rows.csv", index=False)
    table.merge(ideal, on=["probe", "category"]).merge(text, on=["probe", "category"]).to_csv(out / "word_sensitivity.csv", index=False)
    md = (f"# Word sensitivity of {path}\n\nMade by `{command}`.\n"
          "gap = L(p-) - L(p+) over the same rendered seen-split videos, noise and t; "
          "> 0 when the denoiser reads the swapped words. Ideal gap: that of a denoiser that reads them "
          "perfectly, at t = 999 (mean videos of p+ and p-, 200 renders each, 4 compositions). "
          "Text sep.: ||h+ - h-|| / ||h+|| of the text encoder's output at the swapped words, and over "
          "the aligned tokens after them (what cross-attention reads; ~0: the word is lost before the UNet).\n\n"
          + to_markdown(table, ideal, text))
    atomic_write_text(out / "word_sensitivity.md", md)
    atomic_write_text(out / "run.json", json.dumps({"command": command, "path": str(path), "n": args.n,
                                                    "seed": args.seed}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
