"""Choose each method's setting on one split, to run it on another (never tuned where reported).

A sweep (`python -m cvg_bench run -m method=a,b method.eta=0.05,0.1 ... benchmark.split=seen`)
writes one run folder per setting. This ranks every run of a method by the mean of one score
over its samples (e.g. ``oracle/relation``) and writes, per method, the best setting as
hydra overrides that re-create it (every key of its method config, so that a key the sweep
fixed on its command line is set again), with every setting's score beside it:

    python -m cvg_bench.select results/sweep_seen --score oracle/relation \
        --out results/reference/chosen_settings.json

Ties go to the cheaper setting (fewer guided steps, then smaller step size), then to the
first one found, so the choice is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cvg_bench.config import flatten
from cvg_bench.leaderboard import load_records, sample_score
from cvg_bench.records import atomic_write_text


def run_settings(results_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """run_hash -> the run's method config (flattened), from each run's manifest."""
    out = {}
    for root in results_dirs:
        for manifest in Path(root).rglob("manifest.json"):
            m = json.loads(manifest.read_text())
            out[m["run_hash"]] = flatten(m["identity"]["method"])
    return out


def _cost(setting: dict[str, Any]) -> tuple[float, float]:
    return float(setting.get("guided_steps", 0) or 0), float(setting.get("eta", 0) or 0)


_ABSENT = "<absent>"


def _override(key: str, value: Any, in_every_run: bool) -> str:
    """A hydra override re-creating ``key=value``; ``++`` for a key that only some runs of the
    sweep had (added with ``+``/``++``): it sets the key whether or not the config has it."""
    return f"{'' if in_every_run else '++'}method.{key}={json.dumps(value, separators=(',', ':'))}"


def choose_settings(results_dirs: list[Path], score: str) -> dict[str, Any]:
    """Per method: every setting with its mean ``score`` and sample count, and the best."""
    df = load_records(results_dirs)
    df = df[df["error"].isna()]
    settings = run_settings(results_dirs)
    df = df.assign(_score=sample_score(df, score)).dropna(subset=["_score"])
    if df.empty:
        raise ValueError(f"no record has score {score!r}")
    out: dict[str, Any] = {"score": score, "sources": [str(p) for p in results_dirs], "methods": {}}
    for method, sub in df.groupby("method", sort=True):
        runs = []
        for run_hash, rows in sub.groupby("run_hash", sort=False):
            if run_hash not in settings:
                raise ValueError(f"run {run_hash} of {method!r} has no manifest.json")
            runs.append({"run_hash": run_hash, "setting": settings[run_hash],
                         "mean": float(rows["_score"].mean()), "n": int(len(rows)),
                         "per_category": rows.groupby("category")["_score"].mean().round(4).to_dict()})
        varying = sorted(k for k in {k for r in runs for k in r["setting"]}
                         if len({json.dumps(r["setting"].get(k, _ABSENT)) for r in runs}) > 1)
        best = max(runs, key=lambda r: (round(r["mean"], 9), tuple(-c for c in _cost(r["setting"]))))
        out["methods"][method] = {
            "best": best["run_hash"], "best_mean": best["mean"],
            # every key, not only the swept ones: a key the sweep's command fixed to a
            # non-default value (method.guided_steps=5 for all runs) must be set again
            "overrides": [_override(k, v, all(k in r["setting"] for r in runs))
                          for k, v in sorted(best["setting"].items()) if k != "name"],
            "setting": best["setting"], "swept": varying,
            "runs": sorted(runs, key=lambda r: -r["mean"]),
        }
    return out


def main(cfg) -> int:
    """``python -m cvg_bench select results_dirs=[DIR,...] score=oracle/pass out=FILE``."""
    dirs = [Path(str(d)) for d in cfg.results_dirs]
    chosen = choose_settings(dirs, str(cfg.score))
    for method, c in chosen["methods"].items():
        print(f"{method}: {c['best_mean']:.3f} with {' '.join(c['overrides']) or '(one setting)'}"
              f"  [{len(c['runs'])} settings]")
    if cfg.get("out"):
        out = Path(str(cfg.out))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(chosen, indent=1) + "\n")
    return 0
