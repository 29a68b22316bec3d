"""Paired per-prompt comparison of a guided run against a baseline run (e.g. vanilla).

A leaderboard averages over prompts; "does the method win the relation word on every prompt"
needs the pairing: the same prompt and seeds under both runs. Per prompt, each run's score is
the mean over the seeds both runs have; the prompt is a win, tie or loss by the sign of the
difference. Per category: counts, the mean difference with its standard error over prompts,
and an exact two-sided sign test over the non-tied prompts.

    python -m cvg_bench.paired --baseline RUN_DIR --candidate RUN_DIR [--candidate ...] \\
        [--label NAME ...] --score oracle/relation --out DIR

Candidates are named by ``--label`` (one per candidate, in order) or else by their method, with
the run hash added when two candidates share a method (ablations of one method).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cvg_bench.leaderboard import load_records, sample_score
from cvg_bench.records import atomic_write_text

COLUMNS = ["candidate", "category", "prompts", "wins", "ties", "losses", "baseline", "method",
           "mean_diff", "mean_diff_se", "sign_test_p"]


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided binomial sign test (p = 0.5) over the non-tied pairs; 1.0 without any."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def per_prompt(folder: Path | str, score: str) -> pd.DataFrame:
    """Scores of one run's samples: columns prompt_id, category, seed, value (errors dropped).

    ``folder`` must hold exactly one run (one method and run hash): pairing two pooled runs
    would compare the wrong samples."""
    df = load_records(folder)
    runs = df.groupby(["method", "run_hash"]).size()
    if len(runs) != 1:
        raise ValueError(f"{folder} holds {len(runs)} runs ({', '.join(f'{m}/{h}' for m, h in runs.index)}); "
                         "pass one run folder (<results>/<benchmark>/<method>__<generator>__<hash>)")
    df = df[df["error"].isna()].copy()
    df["value"] = sample_score(df, score)
    if df["value"].isna().all():
        found = sorted({k for d in df["scores_norm"] if isinstance(d, dict) for k in d})
        raise ValueError(f"score {score!r} is in no record of {folder}; scores found: {found}")
    out = df[["prompt_id", "category", "seed", "value"]].dropna(subset=["value"])
    out.attrs["method"] = str(runs.index[0][0])
    out.attrs["run_hash"] = str(runs.index[0][1])
    return out


def compare(baseline: pd.DataFrame, candidate: pd.DataFrame, eps: float = 1e-9) -> pd.DataFrame:
    """Per-prompt table: category, baseline and candidate means over their shared seeds, diff,
    outcome (win / tie / loss). Prompts without a shared seed are left out."""
    merged = baseline.merge(candidate, on=["prompt_id", "category", "seed"], suffixes=("_b", "_c"))
    if merged.empty:
        raise ValueError("the two runs share no (prompt, seed) sample: nothing to pair")
    table = merged.groupby(["category", "prompt_id"], sort=True)[["value_b", "value_c"]].mean()
    table = table.rename(columns={"value_b": "baseline", "value_c": "method"}).reset_index()
    table["diff"] = table["method"] - table["baseline"]
    table["outcome"] = np.select([table["diff"] > eps, table["diff"] < -eps], ["win", "loss"], "tie")
    return table


def summarise(table: pd.DataFrame, candidate: str) -> pd.DataFrame:
    """Per category (and ``all``): win/tie/loss counts, means, mean diff +- s.e., sign test."""
    rows = []
    groups = [(str(c), g) for c, g in table.groupby("category", sort=True)] + [("all", table)]
    for category, g in groups:
        wins, losses = int((g["outcome"] == "win").sum()), int((g["outcome"] == "loss").sum())
        se = float(g["diff"].std(ddof=1) / math.sqrt(len(g))) if len(g) > 1 else float("nan")
        rows.append({"candidate": candidate, "category": category, "prompts": len(g), "wins": wins,
                     "ties": len(g) - wins - losses, "losses": losses,
                     "baseline": float(g["baseline"].mean()), "method": float(g["method"].mean()),
                     "mean_diff": float(g["diff"].mean()), "mean_diff_se": se,
                     "sign_test_p": sign_test_p(wins, losses)})
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(summary: pd.DataFrame, score: str, baseline: str) -> str:
    head = (f"Paired per prompt against `{baseline}` on `{score}` (each prompt: mean over the "
            "seeds both runs have; p: exact two-sided sign test over non-tied prompts)\n\n"
            "| method | category | prompts | wins / ties / losses | baseline | method | diff (s.e.) | p |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r.candidate} | {r.category} | {r.prompts} | {r.wins} / {r.ties} / {r.losses} | "
             f"{r.baseline:.3f} | {r.method:.3f} | {r.mean_diff:+.3f} ({r.mean_diff_se:.3f}) | "
             f"{r.sign_test_p:.3g} |" for r in summary.itertuples()]
    return head + "\n".join(lines) + "\n"


def candidate_names(cands: list[pd.DataFrame]) -> list[str]:
    """Each candidate's method, with ``@run_hash`` where two candidates share the method."""
    methods = [c.attrs["method"] for c in cands]
    return [m if methods.count(m) == 1 else f"{m}@{c.attrs['run_hash']}" for m, c in zip(methods, cands)]


def main(cfg) -> int:
    """``python -m cvg_bench paired baseline=RUN candidates=[RUN,...] [labels=[...]] score=... out=DIR``."""
    candidates = [Path(str(c)) for c in cfg.candidates]
    labels = [str(x) for x in cfg.labels] if cfg.get("labels") is not None else None
    if not candidates:
        raise ValueError("candidates=[] is empty: give the run folders to compare with the baseline")
    if labels is not None and len(labels) != len(candidates):
        raise ValueError(f"labels has {len(labels)} names for {len(candidates)} candidates; "
                         "give one label per candidate or none")
    score = str(cfg.score)
    base = per_prompt(Path(str(cfg.baseline)), score)
    cands = [per_prompt(folder, score) for folder in candidates]
    names = labels or candidate_names(cands)
    summaries, prompts = [], []
    for cand, name in zip(cands, names):
        table = compare(base, cand)
        summaries.append(summarise(table, name))
        prompts.append(table.assign(candidate=name))
    summary = pd.concat(summaries, ignore_index=True)
    text = to_markdown(summary, score, base.attrs["method"])
    print(text)
    if cfg.get("out"):
        out = Path(str(cfg.out))
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "paired.md", text)
        atomic_write_text(out / "paired.csv", summary.to_csv(index=False))
        atomic_write_text(out / "per_prompt.csv", pd.concat(prompts).to_csv(index=False))
    return 0
