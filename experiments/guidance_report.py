"""What CVG's classifier said during guidance, against what the oracle found in the video.

Each guided sample's record keeps -log s_t[y] at every guided step. A video the oracle fails
is either one where the classifier ended *satisfied* (its last guided energy below
``--threshold``: the guidance moved the maps the classifier reads, not the video) or one where
guidance never got there (*unsatisfied*: a larger step or more steps might help). Steps
taken after the energy first fell below the threshold are counted too: with
``grad_norm=normalize`` each still moves z_t by eta * ||z_t|| (what ``energy_threshold``
skips).

    python -m experiments.guidance_report RUN_DIR [RUN_DIR ...] [--threshold 0.05] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cvg_bench.leaderboard import load_records, sample_score
from cvg_bench.records import atomic_write_text

COLUMNS = ["run", "category", "videos", "relation", "validity", "failed", "failed_satisfied",
           "passed_satisfied", "satisfied_at_step", "steps_after_satisfied"]


def guided_rows(folder: Path | str, threshold: float) -> pd.DataFrame:
    """One row per guided sample: relation, validity, the energies and what they say."""
    df = load_records(folder)
    df = df[df["error"].isna()].copy()
    energies = [(d or {}).get("guidance", {}).get("energies") or [] for d in df["details"]]
    if not any(energies):
        raise ValueError(f"no record under {folder} has guidance energies "
                         "(details.guidance.energies): is it a guided run?")
    df["relation"] = sample_score(df, "oracle/relation")
    df["last_energy"] = [e[-1] if e else np.nan for e in energies]
    below = [next((i for i, v in enumerate(e) if v < threshold), None) for e in energies]
    df["satisfied_at_step"] = [np.nan if i is None else float(i) for i in below]
    df["steps_after_satisfied"] = [0 if i is None else len(e) - i - 1 for i, e in zip(below, energies)]
    df["satisfied"] = df["last_energy"] < threshold
    df["run"] = [f"{m}/{h}" for m, h in zip(df["method"], df["run_hash"])]
    return df


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run and category (and ``all``): how often a failed video had a satisfied classifier."""
    groups = [*rows.groupby(["run", "category"], sort=True),
              *(((run, "all"), g) for run, g in rows.groupby("run", sort=True))]
    out = []
    for (run, category), g in groups:
        failed = g[g["relation"] < 1.0]
        passed = g[g["relation"] >= 1.0]
        out.append({
            "run": run, "category": category, "videos": len(g),
            "relation": g["relation"].mean(), "validity": g["validity"].mean(),
            "failed": len(failed),
            "failed_satisfied": failed["satisfied"].mean() if len(failed) else np.nan,
            "passed_satisfied": passed["satisfied"].mean() if len(passed) else np.nan,
            "satisfied_at_step": g["satisfied_at_step"].mean(),
            "steps_after_satisfied": g["steps_after_satisfied"].mean(),
        })
    return pd.DataFrame(out, columns=COLUMNS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="guided run folders (or results dirs)")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="-log s_t[y] below which the classifier counts as satisfied (0.05: s_t[y] > 0.95)")
    p.add_argument("--out", type=Path, default=None, help="folder for guidance_report.{md,csv}")
    a = p.parse_args(argv)
    if not a.threshold > 0:
        raise SystemExit(f"--threshold={a.threshold}: must be > 0 (-log s[y] is never negative)")
    table = summarise(pd.concat([guided_rows(r, a.threshold) for r in a.runs], ignore_index=True))
    md = (f"Guidance energies against the oracle (satisfied: -log s_t[y] < {a.threshold}; "
          "failed: oracle/relation < 1; satisfied_at_step: mean first guided step below the "
          "threshold, over the videos that got there)\n\n"
          + table.to_markdown(index=False, floatfmt=".3f") + "\n")
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out / "guidance_report.md", md)
        atomic_write_text(a.out / "guidance_report.csv", table.to_csv(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
