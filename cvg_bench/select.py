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

import pandas as pd

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


def choose_within_validity(df, settings: dict[str, dict[str, Any]], score: str,
                           validity: str = "oracle/validity", max_drop: float = 0.02,
                           baseline: str = "vanilla") -> dict[str, Any]:
    """The protocol's selection rule, the same for every method (``baseline`` included).

    ``df``: sample records (``load_records``); ``settings``: run_hash -> method config
    (``run_settings``). Per method, each setting (run) gets its mean ``score`` and mean
    ``validity`` over its samples, and the baseline's mean validity over the SAME samples
    (same prompt ids and seeds, hence categories). Among settings whose validity is at most
    ``max_drop`` below the baseline's (2 points: 0.02), the highest ``score`` wins (ties: the
    cheaper setting, fewer guided steps then smaller step size, then the first found); if none
    qualifies, the setting with the smallest validity loss (ties: higher score, then cheaper).
    """
    df = df[df["error"].isna()]
    if df.empty:
        raise ValueError("no scored record (every sample failed or none found)")
    df = df.assign(_score=sample_score(df, score), _validity=sample_score(df, validity))
    for name, col in ((score, "_score"), (validity, "_validity")):
        if df[col].isna().all():
            found = sorted({k for d in df["scores_norm"] if isinstance(d, dict) for k in d})
            raise ValueError(f"no record has score {name!r}; scores found: {found}")
    base = df[df["method"] == baseline]
    if base["run_hash"].nunique() != 1:
        raise ValueError(f"expected exactly one {baseline!r} run to compare validity with, found "
                         f"{base['run_hash'].nunique()} (methods: {sorted(df['method'].unique())})")
    base_validity = base.set_index(["prompt_id", "seed"])["_validity"]
    out: dict[str, Any] = {"rule": f"max {score} among settings with {validity} within "
                                   f"{max_drop:g} of {baseline} on the same videos; else the "
                                   "smallest validity loss",
                           "score": score, "validity": validity, "max_drop": max_drop,
                           "baseline": baseline, "methods": {}}
    for method, sub in df.groupby("method", sort=True):
        runs = []
        for run_hash, rows in sub.groupby("run_hash", sort=False):
            if run_hash not in settings:
                raise ValueError(f"run {run_hash} of {method!r} has no manifest.json")
            keys = pd.MultiIndex.from_frame(rows[["prompt_id", "seed"]])
            shared = base_validity.reindex(keys)
            if shared.isna().any():
                lacking = [f"{p} seed {s}" for (p, s), v in zip(keys, shared) if pd.isna(v)][:3]
                raise ValueError(f"{baseline!r} lacks validity on samples of {method!r} run "
                                 f"{run_hash} (e.g. {', '.join(lacking)}): run {baseline} on the "
                                 "same prompts, seeds and categories")
            mean, val = float(rows["_score"].mean()), float(rows["_validity"].mean())
            base_val = float(shared.mean())
            drop = base_val - val
            runs.append({"run_hash": str(run_hash), "setting": settings[run_hash],
                         "score": mean, "validity": val, "baseline_validity": base_val,
                         "validity_drop": drop, "qualifies": bool(drop <= max_drop + 1e-9),
                         "n": int(len(rows)),
                         "per_category": rows.groupby("category")["_score"].mean().round(4).to_dict()})
        cheap = lambda r: tuple(-c for c in _cost(r["setting"]))  # noqa: E731
        ok = [r for r in runs if r["qualifies"]]
        if ok:
            best = max(ok, key=lambda r: (round(r["score"], 9), cheap(r)))
            why = (f"highest {score} ({best['score']:.4f}) among {len(ok)} of {len(runs)} "
                   f"setting(s) whose {validity} is within {max_drop:g} of {baseline}'s "
                   f"(drop {best['validity_drop']:+.4f})")
        else:
            best = max(runs, key=lambda r: (-round(r["validity_drop"], 9), round(r["score"], 9), cheap(r)))
            why = (f"no setting keeps {validity} within {max_drop:g} of {baseline}'s; smallest "
                   f"validity loss ({best['validity_drop']:+.4f}), {score} {best['score']:.4f}")
        for r in runs:
            r["chosen"] = r is best
        varying = sorted(k for k in {k for r in runs for k in r["setting"]}
                         if len({json.dumps(r["setting"].get(k, _ABSENT)) for r in runs}) > 1)
        out["methods"][str(method)] = {
            "best": best["run_hash"], "best_score": best["score"], "reason": why,
            "qualified": bool(ok), "validity_drop": best["validity_drop"],
            "overrides": [_override(k, v, all(k in r["setting"] for r in runs))
                          for k, v in sorted(best["setting"].items()) if k != "name"],
            "setting": best["setting"], "swept": varying,
            "runs": sorted(runs, key=lambda r: (not r["qualifies"], -r["score"])),
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
