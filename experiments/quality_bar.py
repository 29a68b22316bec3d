"""The tiny generator's quality bar (issue 4): the oracle on many vanilla samples, per split
and category, against the targets.

    python -m experiments.quality_bar --path cvg_bench/assets/tiny_generator \\
        --out results/reference/tiny_generator_quality/NAME --work results/tiny_generator_quality/NAME \\
        --limit 12 --seeds 0,1

1. ``python -m cvg_bench run method=vanilla generator=tiny generator.path=PATH benchmark=shapes
   benchmark.split=SPLIT ...`` for the seen and the held-out split: one resumable record per
   (prompt, seed) under ``OUT/runs`` (a killed evaluation resumes where it stopped);
2. per (split, category): videos, mean oracle validity, the share of *valid videos*
   (validity >= ``VALID_VIDEO``: the entity found with its colour and shape in 3 of 4 frames,
   the oracle's own fraction for per-frame predicates), ``oracle/relation`` (the category's
   predicates), composition = ``oracle/pass`` (predicates and validity) and, for motion
   prompts, *moving* (the share of objects that move ``MOVE`` of the frame whichever way),
   each with its s.e. over videos;
3. the bar: on seen prompts >= 90 % valid videos and >= 75 % right in composition; on held-out
   ones validity stays high (within ``HELDOUT_VALIDITY_DROP`` of seen) while composition falls
   well below seen's (by at least ``HELDOUT_COMPOSITION_GAP``).

Writes ``OUT/quality.{md,csv,json}`` and ``OUT/words.csv`` (per relation word: asked, passed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvg_bench.leaderboard import load_records, sample_score
from cvg_bench.shapes.oracle import FRAME_FRACTION, MOVE
from experiments.reference import run_cli

VALID_VIDEO = FRAME_FRACTION
SEEN_VALID_TARGET = 0.90
SEEN_COMPOSITION_TARGET = 0.75
HELDOUT_VALIDITY_DROP = 0.10
HELDOUT_COMPOSITION_GAP = 0.25
SPLITS = ("seen", "heldout")
METRICS = {  # column -> what it is computed from
    "validity": "validity",
    "valid_videos": "valid_video",
    "relation": "oracle/relation",
    "composition": "oracle/pass",
    "moving": "moving",  # motion_binding only: objects move at all, whichever way
}


def sample_frame(records: pd.DataFrame) -> pd.DataFrame:
    """One row per scored video: split, category and the metrics' per-video values."""
    ok = records[records["error"].isna()].copy()
    if ok.empty:
        raise ValueError("no scored (error-free) records to tabulate")
    missing = sorted({"split", "category"} - set(ok.columns))
    if missing:
        raise ValueError(f"records lack field(s) {missing}")
    out = pd.DataFrame({"split": ok["split"], "category": ok["category"],
                        "validity": ok["validity"].astype(float)})
    out["valid_video"] = (out["validity"] >= VALID_VIDEO).astype(float)
    for name in ("oracle/relation", "oracle/pass"):
        out[name] = sample_score(ok, name)
    if out[["validity", "oracle/relation", "oracle/pass"]].isna().any().any():
        raise ValueError("some records have no oracle scores: run the evaluation with scorer=[oracle]")
    out["moving"] = [_moving_share(c, d) for c, d in zip(ok["category"], ok.get("details", [None] * len(ok)))]
    return out.reset_index(drop=True)


def _moving_share(category: str, details: Any) -> float:
    """Motion videos: the share of entities whose displacement covers ``MOVE`` of the frame in
    any direction (a generator that ignores direction words must still move its objects)."""
    if category != "motion_binding" or not isinstance(details, dict):
        return math.nan
    moved = []
    for pred in (details.get("oracle") or {}).values():
        value = pred.get("value")
        moved.append(isinstance(value, dict) and math.hypot(value["along"], value["across"]) >= MOVE)
    return float(np.mean(moved)) if moved else math.nan


def _summary(rows: pd.DataFrame) -> dict[str, float]:
    cell: dict[str, float] = {"videos": len(rows)}
    for column, source in METRICS.items():
        values = rows[source].dropna()  # "moving" exists for motion videos only
        n = len(values)
        cell[column] = float(values.mean()) if n else math.nan
        cell[f"{column}_se"] = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return cell


def quality_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Rows (split, category) plus an ``overall`` row per split (mean over its videos)."""
    rows = []
    for split in [s for s in SPLITS if s in set(samples["split"])]:
        part = samples[samples["split"] == split]
        for category in sorted(part["category"].unique()):
            rows.append({"split": split, "category": category,
                         **_summary(part[part["category"] == category])})
        rows.append({"split": split, "category": "overall", **_summary(part)})
    if not rows:
        raise ValueError(f"no records of the splits {SPLITS}")
    return pd.DataFrame(rows)


WORD_CATEGORIES = ("spatial_relationships", "motion_binding", "action_binding", "object_interactions")


def _word_passes(prompt: str, details: Any) -> list[tuple[str, bool]]:
    """(relation word, passed) of one video: per entity for motion and action (each entity's
    own direction or action predicate), per prompt for spatial relations and interactions."""
    from cvg_bench.shapes.grammar import composition_of, entity_views, parse
    from cvg_bench.shapes.oracle import entity_predicate_key

    preds = (details.get("oracle") or {}) if isinstance(details, dict) else {}
    comp = composition_of(parse(prompt))
    if comp.category not in ("motion_binding", "action_binding"):
        return [(comp.label, bool(preds) and all(p.get("passed") for p in preds.values()))]
    return [(e.part, bool(preds.get(entity_predicate_key(comp.category, e), {}).get("passed")))
            for e in entity_views(comp)]


def word_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per (split, category, relation word): how many times it was asked for and how many of
    those the oracle passed. A model that ignores a word passes it at its base rate, whatever
    the word (e.g. every object moving right: "right" passes, "left" never)."""
    ok = records[records["error"].isna() & records["category"].isin(WORD_CATEGORIES)]
    rows = [{"split": split, "category": cat, "word": word, "passed": passed}
            for split, cat, prompt, details in zip(ok["split"], ok["category"], ok["prompt"],
                                                   ok.get("details", [None] * len(ok)))
            for word, passed in _word_passes(prompt, details)]
    if not rows:
        return pd.DataFrame(columns=["split", "category", "word", "asked", "passed", "share"])
    g = pd.DataFrame(rows).groupby(["split", "category", "word"], sort=True)["passed"]
    table = g.agg(asked="size", passed="sum").reset_index()
    table["share"] = table["passed"] / table["asked"]
    return table


def word_markdown(words: pd.DataFrame) -> str:
    """One row per (category, word), a ``passed/asked`` column per split."""
    if words.empty:
        return ""
    splits = [s for s in SPLITS if s in set(words["split"])]
    lines = ["| category | word | " + " | ".join(splits) + " |", "|---|---|" + "---|" * len(splits)]
    for (cat, word), part in words.groupby(["category", "word"], sort=True):
        by = part.set_index("split")
        cells = [f"{int(by.loc[s, 'passed'])}/{int(by.loc[s, 'asked'])}" if s in by.index else "-" for s in splits]
        lines.append(f"| {cat} | {word} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_checks(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The quality bar, one check per target, each with its value and whether it is met."""
    overall = table[table["category"] == "overall"].set_index("split")
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, target: str, met: bool) -> None:
        checks.append({"check": name, "value": round(value, 4), "target": target, "met": bool(met)})

    if "seen" in overall.index:
        seen = overall.loc["seen"]
        check("seen: valid videos", seen["valid_videos"], f">= {SEEN_VALID_TARGET}",
              seen["valid_videos"] >= SEEN_VALID_TARGET)
        check("seen: composition", seen["composition"], f">= {SEEN_COMPOSITION_TARGET}",
              seen["composition"] >= SEEN_COMPOSITION_TARGET)
    if {"seen", "heldout"} <= set(overall.index):
        seen, held = overall.loc["seen"], overall.loc["heldout"]
        drop = seen["valid_videos"] - held["valid_videos"]
        check("held-out: valid-video drop from seen", drop, f"<= {HELDOUT_VALIDITY_DROP}",
              drop <= HELDOUT_VALIDITY_DROP)
        gap = seen["composition"] - held["composition"]
        check("held-out: composition below seen by", gap, f">= {HELDOUT_COMPOSITION_GAP}",
              gap >= HELDOUT_COMPOSITION_GAP)
    return checks


def to_markdown(table: pd.DataFrame) -> str:
    """Mean +- s.e. per cell; one row per (split, category)."""
    def cell(row: pd.Series, column: str) -> str:
        mean, se = row[column], row[f"{column}_se"]
        if math.isnan(mean):
            return "-"
        return f"{mean:.3f}" + ("" if math.isnan(se) else f" +- {se:.3f}")

    head = ["split", "category", "videos", *METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join([row["split"], row["category"], str(int(row["videos"])),
                                         *(cell(row, c) for c in METRICS)]) + " |")
    return "\n".join(lines) + "\n"


def write_report(records_dir: Path, out: Path, command: str) -> dict[str, Any]:
    """Tabulate the records under ``records_dir``; write quality.{md,csv,json} to ``out``."""
    records = load_records(records_dir)
    table = quality_table(sample_frame(records))
    words = word_table(records)
    checks = bar_checks(table)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "quality.csv", index=False)
    words.to_csv(out / "words.csv", index=False)
    verdict = "\n".join(f"- {c['check']}: {c['value']:.3f} (target {c['target']}): "
                        f"{'met' if c['met'] else 'NOT met'}" for c in checks)
    md = (f"# Tiny generator quality bar\n\nMade by `{command}`.\nValid video: oracle validity >= "
          f"{VALID_VIDEO}. Composition: `oracle/pass`. Mean +- s.e. over videos.\n\n"
          f"{to_markdown(table)}\n{verdict}\n"
          + (f"\nRelation words (videos or objects passed / asked):\n\n{word_markdown(words)}" if not words.empty else ""))
    (out / "quality.md").write_text(md)
    result = {"command": command, "valid_video_threshold": VALID_VIDEO, "checks": checks,
              "table": json.loads(table.to_json(orient="records"))}
    (out / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_shards(args: list[str], jobs: int) -> None:
    """``python -m cvg_bench ARGS`` as ``jobs`` processes at once, shard i of ``jobs`` each, one
    torch thread each (small models use threads poorly). They share one run folder: its
    records and manifest are written atomically. A failed shard fails the whole."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for shard in range(jobs):
        shard_args = [*args, f"benchmark.num_shards={jobs}", f"benchmark.shard={shard}"]
        print("+ python -m cvg_bench " + " ".join(shlex.quote(x) for x in shard_args), flush=True)
        procs.append(subprocess.Popen([sys.executable, "-m", "cvg_bench", *shard_args], env=env))
    failed = [i for i, proc in enumerate(procs) if proc.wait() != 0]
    if failed:
        raise RuntimeError(f"shards {failed} of {jobs} failed (their output is above); re-running "
                           "the same command resumes every shard")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", default=None, help="saved tiny pipeline folder (default: the shipped weights)")
    p.add_argument("--out", type=Path, default=Path("results/tiny_generator_quality"),
                   help="where quality.{md,csv,json} go")
    p.add_argument("--work", type=Path, default=None,
                   help="where the run records and videos go (default: OUT/runs)")
    p.add_argument("--limit", type=int, default=12, help="prompts per category and split (the suite has 12)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra run overrides, e.g. generator.guidance_scale=3 (repeatable)")
    p.add_argument("--splits", default=",".join(SPLITS), help="which splits to run (a quick look: seen)")
    p.add_argument("--report-only", action="store_true", help="tabulate existing records only")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes per split, each on its shard of the prompts with one torch thread "
                        "(e.g. one per core)")
    a = p.parse_args(argv)
    path = [f"generator.path={a.path}"] if a.path else []
    work = a.work or a.out / "runs"
    splits = [s for s in a.splits.split(",") if s]
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        p.error(f"--splits has {bad}; accepted: {', '.join(SPLITS)}")
    if a.jobs < 1:
        p.error(f"--jobs={a.jobs}; give 1 or more")
    for split in splits if not a.report_only else ():  # --limit counts per split
        args = ["run", "method=vanilla", "generator=tiny", *path, "benchmark=shapes",
                f"benchmark.split={split}", f"benchmark.limit={a.limit}", f"seeds=[{a.seeds}]",
                f"results_dir={work}", "scorer=[oracle]", "leaderboard=false", *a.set]
        if a.jobs == 1:
            run_cli(args)
        else:
            run_shards(args, a.jobs)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m experiments.quality_bar", *map(shlex.quote, given)])
    write_report(work, a.out, command)
    print((a.out / "quality.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
