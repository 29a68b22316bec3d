"""A protocol fixed before the runs, end to end: ``python -m cvg_bench reproduce +experiment=NAME``.

The protocol (``configs/experiment/<name>.yaml``, key ``protocol``) names the generator, the
methods with the categories each can guide and its search grid, the tuning split (prompts per
category, seeds), the report split, the selection rule and the headline score. This module

1. tunes: the baseline (vanilla) on every category any method runs on, and each method's grid
   (one hydra sweep), on the tuning split;
2. selects: one setting per method by the rule (:func:`cvg_bench.select.choose_within_validity`),
   written with every setting's score and validity and why it won (``chosen_settings.json``);
3. reports: the baseline and each chosen setting on the report split;
4. writes, per split, the per-video records (gzip JSON lines, :func:`export_records`), the
   table recomputed from that file alone (:func:`table_from_records`) as CSV, Markdown, LaTeX
   and JSON, each stamped with the protocol's hash; a contact sheet and the HTML report.

Every run is a plain ``python -m cvg_bench run`` process (printed as it starts); the run store
skips finished samples, so a second invocation resumes where the first stopped. Runs live
under ``<work_dir>/<name>-<protocol hash>/``: another protocol never mixes its samples in.
``launcher=slurm`` adds ``-m hydra/launcher=slurm`` to every run, so each sweep is one job array.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvg_bench.records import atomic_write_text, config_hash, confined, safe_name

log = logging.getLogger(__name__)

RULES = ("validity_constrained",)
LAUNCHERS = ("local", "slurm", "slurm_gpu")
SPLITS = ("seen", "heldout", "all")
#: Seconds per tiny video on one CPU thread (measured; the experiment file's cost uses them).
SECONDS_PER_VIDEO = {"vanilla": 6.0, "guided": 7.5}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_VALUE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_FIXED_VALUE = re.compile(r"^[A-Za-z0-9_.+/-]+$")


# ---------------------------------------------------------------------------------------------
# The protocol


def check_protocol(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol as a plain dict, checked; ``ValueError`` naming the bad value otherwise."""
    if not isinstance(protocol, dict):
        raise ValueError("protocol is missing: give +experiment=<name> (configs/experiment/)")
    need = ["name", "benchmark", "generator", "headline", "validity", "baseline", "methods",
            "tune", "report", "selection"]
    lacking = [k for k in need if protocol.get(k) in (None, "")]
    if lacking:
        raise ValueError(f"protocol lacks {', '.join(lacking)}; a protocol needs {', '.join(need)}")
    safe_name(protocol["name"])
    methods = protocol["methods"]
    if not isinstance(methods, dict) or not methods:
        raise ValueError("protocol.methods must map each method to {categories: [...], grid: {...}}")
    if protocol["baseline"] in methods:
        raise ValueError(f"protocol.methods must not list the baseline {protocol['baseline']!r}")
    for name, spec in methods.items():
        cats = (spec or {}).get("categories")
        if not cats or not isinstance(cats, list):
            raise ValueError(f"protocol.methods.{name}.categories must be a non-empty list")
        for key, values in ((spec or {}).get("grid") or {}).items():
            if not _KEY.match(str(key)):
                raise ValueError(f"protocol.methods.{name}.grid key {key!r} is not a config key")
            if not isinstance(values, list) or not values:
                raise ValueError(f"protocol.methods.{name}.grid.{key} must be a non-empty list, "
                                 f"got {values!r}")
            bad = [v for v in values if not _VALUE.match(str(v))]
            if bad:
                raise ValueError(f"protocol.methods.{name}.grid.{key} has values {bad} that are "
                                 "not plain numbers or names")
        for key, value in ((spec or {}).get("fixed") or {}).items():
            if not _KEY.match(str(key)):
                raise ValueError(f"protocol.methods.{name}.fixed key {key!r} is not a config key")
            text = str(value)
            if (not _FIXED_VALUE.match(text) or text.startswith("/")
                    or ".." in text.split("/")):
                raise ValueError(f"protocol.methods.{name}.fixed.{key} is {value!r}; accepted: a "
                                 "plain number, name or relative path (no '..', not absolute)")
            if key in ((spec or {}).get("grid") or {}):
                raise ValueError(f"protocol.methods.{name}: {key!r} is both fixed and in the grid")
    for split in ("tune", "report"):
        s = protocol[split]
        if s.get("split") not in SPLITS:
            raise ValueError(f"protocol.{split}.split is {s.get('split')!r}; accepted: {', '.join(SPLITS)}")
        if not s.get("seeds") or not all(isinstance(x, int) for x in s["seeds"]):
            raise ValueError(f"protocol.{split}.seeds must be a non-empty list of integers, got {s.get('seeds')!r}")
        if s.get("limit") is not None and (not isinstance(s["limit"], int) or s["limit"] < 1):
            raise ValueError(f"protocol.{split}.limit must be a positive integer or null, got {s['limit']!r}")
    rule = protocol["selection"].get("rule")
    if rule not in RULES:
        raise ValueError(f"protocol.selection.rule is {rule!r}; accepted: {', '.join(RULES)}")
    drop = protocol["selection"].get("max_validity_drop")
    if not isinstance(drop, (int, float)) or drop < 0:
        raise ValueError(f"protocol.selection.max_validity_drop must be a number >= 0, got {drop!r}")
    return protocol


def protocol_hash(protocol: dict[str, Any]) -> str:
    return config_hash(protocol)


def shipped_protocol(name: str) -> dict[str, Any] | None:
    """The protocol as ``configs/experiment/<name>.yaml`` ships it, or None without that file."""
    from omegaconf import OmegaConf

    import cvg_bench.configs as configs

    for folder in configs.__path__:
        path = Path(folder) / "experiment" / f"{safe_name(name)}.yaml"
        if path.is_file():
            node = OmegaConf.load(path).get("protocol")
            return OmegaConf.to_container(node, resolve=True) if node is not None else None
    return None


def provenance(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol's hash, and whether it is the one its experiment file ships."""
    digest = protocol_hash(protocol)
    shipped = shipped_protocol(protocol["name"])
    ref = protocol_hash(shipped) if shipped is not None else None
    if ref == digest:
        note = f"protocol {protocol['name']} {digest}"
    elif ref is None:
        note = (f"protocol {protocol['name']} {digest} (NOT a shipped protocol: no "
                f"configs/experiment/{protocol['name']}.yaml)")
    else:
        note = (f"protocol {protocol['name']} {digest} (NOT configs/experiment/"
                f"{protocol['name']}.yaml, whose protocol is {ref})")
    return {"name": protocol["name"], "hash": digest, "shipped_hash": ref,
            "is_shipped": ref == digest, "note": note}


def baseline_categories(protocol: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(c for m in protocol["methods"].values() for c in m["categories"]))


def grid_size(spec: dict[str, Any]) -> int:
    return int(np.prod([len(v) for v in (spec.get("grid") or {}).values()] or [1]))


def cost(protocol: dict[str, Any], per_category: dict[str, int] | None = None) -> dict[str, Any]:
    """Videos per stage and CPU hours (``SECONDS_PER_VIDEO``). ``per_category``: prompts per
    category and split when a split has no limit (the shapes world: 12 each)."""
    def prompts(split: dict[str, Any]) -> int:
        return split["limit"] or (per_category or {}).get(split["split"], 12)

    t, r = protocol["tune"], protocol["report"]
    cats = baseline_categories(protocol)
    out = {"tune": {protocol["baseline"]: len(cats) * prompts(t) * len(t["seeds"])},
           "report": {protocol["baseline"]: len(cats) * prompts(r) * len(r["seeds"])}}
    for name, spec in protocol["methods"].items():
        n = len(spec["categories"])
        out["tune"][name] = grid_size(spec) * n * prompts(t) * len(t["seeds"])
        out["report"][name] = n * prompts(r) * len(r["seeds"])
    vanilla = out["tune"][protocol["baseline"]] + out["report"][protocol["baseline"]]
    total = sum(sum(s.values()) for s in out.values())
    seconds = vanilla * SECONDS_PER_VIDEO["vanilla"] + (total - vanilla) * SECONDS_PER_VIDEO["guided"]
    out.update(videos=total, vanilla_videos=vanilla, guided_videos=total - vanilla,
               cpu_seconds=seconds, cpu_hours=round(seconds / 3600, 2))
    return out


# ---------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class Step:
    stage: str  # tune | report
    method: str
    args: list[str]
    weight: int = 1  # settings x categories: orders the steps when several run at once

    def line(self) -> str:
        return "python -m cvg_bench " + " ".join(shlex.quote(a) for a in self.args)


def _common(protocol: dict[str, Any], split: dict[str, Any], cats: list[str], results: Path,
            launcher: str | None, sweep: bool) -> tuple[list[str], list[str]]:
    head = ["run"] + (["-m"] if sweep or launcher else []) + (
        [f"hydra/launcher={launcher}"] if launcher else [])
    scorers = protocol.get("scorers")
    tail = [f"generator={protocol['generator']}", *map(str, protocol.get("generator_overrides") or []),
            f"benchmark={protocol['benchmark']}",
            *([f"scorer=[{','.join(scorers)}]"] if scorers else []),
            f"benchmark.split={split['split']}", f"benchmark.categories=[{','.join(cats)}]",
            *([f"benchmark.limit={split['limit']}"] if split.get("limit") else []),
            f"seeds=[{','.join(map(str, split['seeds']))}]", f"results_dir={results}",
            "leaderboard=false"]
    return head, tail


def fixed_overrides(spec: dict[str, Any]) -> list[str]:
    """A method's ``fixed`` settings (the same in every run of it, e.g. its classifier)."""
    return [f"method.{k}={v}" for k, v in (spec.get("fixed") or {}).items()]


def tune_steps(protocol: dict[str, Any], folder: Path, launcher: str | None = None) -> list[Step]:
    base = protocol["baseline"]
    head, tail = _common(protocol, protocol["tune"], baseline_categories(protocol), folder, launcher, False)
    steps = [Step("tune", base, [*head, f"method={base}", *tail], len(baseline_categories(protocol)))]
    for name, spec in protocol["methods"].items():
        head, tail = _common(protocol, protocol["tune"], spec["categories"], folder, launcher, True)
        grid = [f"method.{k}={','.join(map(str, v))}" for k, v in (spec.get("grid") or {}).items()]
        steps.append(Step("tune", name, [*head, f"method={name}", *fixed_overrides(spec), *grid, *tail],
                          grid_size(spec) * len(spec["categories"])))
    return steps


def report_steps(protocol: dict[str, Any], folder: Path, chosen: dict[str, list[str]] | None,
                 launcher: str | None = None) -> list[Step]:
    """``chosen``: method -> its overrides (None in a dry run: a placeholder is printed)."""
    base = protocol["baseline"]
    head, tail = _common(protocol, protocol["report"], baseline_categories(protocol), folder, launcher, False)
    steps = [Step("report", base, [*head, f"method={base}", *tail], len(baseline_categories(protocol)))]
    for name, spec in protocol["methods"].items():
        head, tail = _common(protocol, protocol["report"], spec["categories"], folder, launcher, False)
        over = chosen[name] if chosen is not None else [f"<chosen-setting-of-{name}>"]
        steps.append(Step("report", name, [*head, f"method={name}", *fixed_overrides(spec), *over, *tail],
                          len(spec["categories"])))
    return steps


def step_runs(step: Step) -> list[list[str]]:
    """The overrides of each run a step launches: its ``method.*`` sweep expanded, without the
    command, ``-m`` and the launcher."""
    base: list[str] = []
    sweeps: list[list[str]] = []
    for arg in step.args[1:]:
        if arg == "-m" or arg.startswith("hydra/launcher="):
            continue
        key, _, value = arg.partition("=")
        if key.startswith("method.") and "," in value and not value.startswith("["):
            sweeps.append([f"{key}={v}" for v in value.split(",")])
        else:
            base.append(arg)
    return [base + list(combo) for combo in itertools.product(*sweeps)]


def run_folder_of(overrides: list[str]) -> Path:
    """The run folder ``python -m cvg_bench run <overrides>`` writes to (the same composition
    and hash as the run itself)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from cvg_bench.config import CONFIG_MODULE, register_schemas
    from cvg_bench.run import run_store

    register_schemas()
    if GlobalHydra.instance().is_initialized():  # inside the reproduce app: its search path
        cfg = compose(config_name="run", overrides=overrides)
    else:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name="run", overrides=overrides)
    return run_store(cfg).root


def reuse_runs(steps: list[Step], stage_dir: Path, sources: list[Path], root: Path | str) -> list[str]:
    """Copy into this protocol's folder each run a step will launch whose identical run (same
    method, settings, generator, benchmark and scorers: the same run hash) another protocol's
    work folder already holds, so that its finished samples are skipped, not remade. The run
    still checks each copied record's video (size, sha256) and its method's weights version.
    Runs of the report split live in a source's ``report/`` or ``ablations/`` folder (the
    latter made by ``experiments.cvg_ablations``): either serves the other. Returns the copied
    folders."""
    import shutil

    stages = [stage_dir.name] + {"report": ["ablations"], "ablations": ["report"]}.get(stage_dir.name, [])
    copied = []
    for step in steps:
        for overrides in step_runs(step):
            dest = run_folder_of(overrides)
            if dest.exists():
                continue
            rel = dest.relative_to(stage_dir)
            for src, stage in ((s, st) for s in sources for st in stages):
                cand = confined(src / stage / rel, root, "reuse")
                if (cand / "manifest.json").is_file():
                    shutil.copytree(cand, dest, ignore=shutil.ignore_patterns("locks", "*.tmp*"))
                    copied.append(f"{cand} -> {dest}")
                    print(f"reused {cand} -> {dest}", flush=True)
                    break
    return copied


def record_reused(work: Path, copied: list[str]) -> None:
    """Append ``copied`` to ``<work>/reused.json`` (every run copied into this folder, over every
    invocation), at once: a stage that fails after its copies still leaves them on record."""
    if not copied:
        return
    log_path = work / "reused.json"
    before = json.loads(log_path.read_text()) if log_path.is_file() else []
    atomic_write_text(log_path, json.dumps(before + copied, indent=1) + "\n")


def run_step(step: Step) -> None:
    print("+ " + step.line(), flush=True)
    subprocess.run([sys.executable, "-m", "cvg_bench", *step.args], check=True)


def run_steps(steps: list[Step], jobs: int = 1, log_dir: Path | None = None) -> None:
    """Run one stage's steps: one after another (``jobs=1``), or ``jobs`` at once, the largest
    first, each process with ``cpu_count // jobs`` threads (OMP_NUM_THREADS) and its output in
    ``<log_dir>/<stage>-<method>.log`` (printed when it ends). The steps of a stage write to
    different run folders, so they never share a sample; a failed step fails the stage after
    the others end, naming each failure and its log."""
    if jobs < 1:
        raise ValueError(f"jobs={jobs!r}; accepted: an integer >= 1 (processes at once)")
    if jobs == 1 or len(steps) == 1:
        for step in steps:
            run_step(step)
        return
    if log_dir is None:
        raise ValueError("run_steps with jobs > 1 needs a log_dir for each process's output")
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def one(step: Step) -> tuple[Step, int, Path]:
        log_path = log_dir / f"{step.stage}-{safe_name(step.method)}.log"
        print(f"+ [{threads} thread(s), log {log_path}] {step.line()}", flush=True)
        with open(log_path, "w") as fh:
            rc = subprocess.run([sys.executable, "-m", "cvg_bench", *step.args], stdout=fh,
                                stderr=subprocess.STDOUT, env=env).returncode
        print(f"--- {step.stage} {step.method} ended (exit {rc}):\n{log_path.read_text()}", flush=True)
        return step, rc, log_path

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ended = list(pool.map(one, sorted(steps, key=lambda s: -s.weight)))
    failed = [f"{s.stage} {s.method} (exit {rc}, log {p})" for s, rc, p in ended if rc != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} step(s) failed: {'; '.join(failed)}")


# ---------------------------------------------------------------------------------------------
# Records


def split_records(folders: list[Path], protocol: dict[str, Any], stage: str,
                  runs: dict[str, str] | None = None) -> pd.DataFrame:
    """The records of one stage's runs, restricted to the protocol's split, seeds and each
    method's categories; ``runs``: method -> the one run hash to keep (the chosen settings)."""
    from cvg_bench.leaderboard import load_records

    df = load_records(folders)
    s = protocol[stage]
    cats = {protocol["baseline"]: baseline_categories(protocol),
            **{m: spec["categories"] for m, spec in protocol["methods"].items()}}
    keep = df["seed"].isin(s["seeds"]) & df.apply(
        lambda r: r["category"] in cats.get(r["method"], []), axis=1)
    if s["split"] != "all" and "split" in df:
        keep &= df["split"] == s["split"]
    if runs is not None:
        keep &= df.apply(lambda r: runs.get(r["method"]) == r["run_hash"], axis=1)
    order = {m: i for i, m in enumerate(cats)}
    out = df[keep].copy()
    out["_order"] = out["method"].map(order)
    return out.sort_values(["_order", "category", "prompt_id", "seed"], kind="stable").drop(
        columns="_order").reset_index(drop=True)


_DERIVED = ("validity", "generation_s", "guidance_s")


def export_records(df: pd.DataFrame, path: Path) -> Path:
    """The records as stored (no videos, no derived columns), one JSON per line, gzip."""
    from cvg_bench.leaderboard import _plain

    fields = [c for c in df.columns if c not in _DERIVED]
    lines = "".join(json.dumps({k: _plain(v) for k, v in rec.items()}, sort_keys=True,
                               default=_plain) + "\n"
                    for rec in df[fields].to_dict(orient="records"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as fh:  # mtime 0: the same records, the same bytes
        fh.write(lines.encode())
    tmp.replace(path)
    return path


def read_exported(path: Path | str) -> pd.DataFrame:
    """A records file of :func:`export_records`, with pandas alone."""
    return pd.read_json(path, lines=True, compression="gzip", dtype=False)


# ---------------------------------------------------------------------------------------------
# Tables


def _score(df: pd.DataFrame, key: str) -> pd.Series:
    return pd.to_numeric(pd.Series([d.get(key) if isinstance(d, dict) else None
                                     for d in df["scores_norm"]], index=df.index, dtype=object),
                         errors="coerce").astype(float)


def _mean_se(per_seed: pd.Series) -> tuple[float, float]:
    per_seed = per_seed.dropna()
    if per_seed.empty:
        return float("nan"), float("nan")
    se = per_seed.std(ddof=1) / np.sqrt(len(per_seed)) if len(per_seed) > 1 else float("nan")
    return float(per_seed.mean()), float(se)


def method_table(records: pd.DataFrame, headline: str = "oracle/pass",
                 validity: str = "oracle/validity", baseline: str = "vanilla") -> pd.DataFrame:
    """One row per method, from per-video records alone (the stored JSON fields).

    Per category and ``overall`` (macro over the method's categories): the headline score,
    mean over seeds of the per-seed mean, and its s.e. over seeds; ``baseline_overall``: the
    baseline's macro score on the same categories; ``validity`` and ``validity_vs_baseline``
    (difference on the same videos); ``quality`` (each record's temporal quality); seconds per
    video and ``time_x_baseline`` (over the baseline's, same videos, same protocol run); per
    prompt wins / ties / losses and the exact sign test against the baseline and against the
    best other method (highest headline on the prompts both ran)."""
    from cvg_bench.paired import compare, summarise

    df = records[records["error"].isna()].copy()
    if df.empty:
        raise ValueError("no scored record to tabulate")
    df["value"] = _score(df, headline)
    df["valid"] = _score(df, validity)
    df["quality"] = pd.to_numeric(df.get("quality"), errors="coerce").astype(float)
    df["seconds"] = pd.to_numeric(pd.Series([t.get("generation_s") if isinstance(t, dict) else None
                                             for t in df["timings"]], index=df.index), errors="coerce")
    methods = list(dict.fromkeys(df["method"]))
    if baseline not in methods:
        raise ValueError(f"no {baseline!r} records: the table compares every method with it")
    cats = list(dict.fromkeys(df["category"]))
    key = ["prompt_id", "category", "seed"]
    base = df[df["method"] == baseline]

    def overall(sub: pd.DataFrame, own: list[str]) -> pd.Series:  # per seed, macro over own cats
        per = sub.groupby(["seed", "category"])["value"].mean().unstack("category")
        return per.reindex(columns=own).mean(axis=1, skipna=False)

    def paired(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:  # b vs a, all categories
        s = summarise(compare(a[key + ["value"]], b[key + ["value"]]), "x").iloc[-1]
        return s

    rows = []
    for m in methods:
        sub = df[df["method"] == m]
        own = [c for c in cats if c in set(sub["category"])]
        row: dict[str, Any] = {"method": m, "run_hash": str(sub["run_hash"].iloc[0]),
                               "categories": len(own), "videos": len(sub),
                               "seeds": int(sub["seed"].nunique())}
        for c in cats:
            row[c], row[f"{c}_se"] = _mean_se(sub[sub["category"] == c].groupby("seed")["value"].mean())
        row["overall"], row["overall_se"] = _mean_se(overall(sub, own))
        same = base.merge(sub[key], on=key)
        row["baseline_overall"], _ = _mean_se(overall(same, own))
        row["validity"], row["validity_se"] = _mean_se(sub.groupby("seed")["valid"].mean())
        mine = sub.merge(same[key + ["valid", "seconds"]], on=key, suffixes=("", "_b"))
        row["validity_vs_baseline"] = float(mine["valid"].mean() - mine["valid_b"].mean())
        row["quality"], row["quality_se"] = _mean_se(sub.groupby("seed")["quality"].mean())
        row["sec_per_video"] = float(sub["seconds"].mean())
        row["time_x_baseline"] = float(mine["seconds"].mean() / mine["seconds_b"].mean())
        for prefix in ("vs_baseline", "vs_best"):
            row.update({f"{prefix}_{k}": np.nan for k in ("wins", "ties", "losses", "p")})
        row["best_other"] = np.nan
        if m != baseline:
            s = paired(base, sub)
            row.update(vs_baseline_wins=s["wins"], vs_baseline_ties=s["ties"],
                       vs_baseline_losses=s["losses"], vs_baseline_p=s["sign_test_p"])
            others = []
            for o in methods:
                if o in (m, baseline):
                    continue
                shared = df[df["method"] == o].merge(sub[key], on=key)
                if len(shared):
                    others.append((float(shared["value"].mean()), o))
            if others:
                best = max(others, key=lambda t: (round(t[0], 9), -methods.index(t[1])))[1]
                s = paired(df[df["method"] == best], sub)
                row.update(best_other=best, vs_best_wins=s["wins"], vs_best_ties=s["ties"],
                           vs_best_losses=s["losses"], vs_best_p=s["sign_test_p"])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    for c in ("vs_baseline_wins", "vs_baseline_ties", "vs_baseline_losses",
              "vs_best_wins", "vs_best_ties", "vs_best_losses"):
        table[c] = table[c].astype(float)
    table.attrs.update(categories=cats, headline=headline, baseline=baseline)
    return table


def table_from_records(path: Path | str, headline: str = "oracle/pass",
                       validity: str = "oracle/validity", baseline: str = "vanilla") -> pd.DataFrame:
    """The table recomputed from an exported records file alone (pandas)."""
    return method_table(read_exported(path), headline, validity, baseline)


def _fmt(mean: float, se: float | None = None, d: int = 3) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.{d}f}" if se is None or pd.isna(se) else f"{mean:.{d}f} ± {se:.{d}f}"


def _wtl(row: pd.Series, prefix: str) -> str:
    if pd.isna(row[f"{prefix}_wins"]):
        return "-"
    return (f"{int(row[f'{prefix}_wins'])}/{int(row[f'{prefix}_ties'])}/"
            f"{int(row[f'{prefix}_losses'])} (p={row[f'{prefix}_p']:.3g})")


def display(table: pd.DataFrame) -> pd.DataFrame:
    cats, base = table.attrs["categories"], table.attrs["baseline"]
    out = pd.DataFrame(index=table.index)
    for c in cats:
        out[c] = [_fmt(m, s) for m, s in zip(table[c], table[f"{c}_se"])]
    out["overall"] = [_fmt(m, s) for m, s in zip(table["overall"], table["overall_se"])]
    out[f"{base} (same)"] = [_fmt(v) for v in table["baseline_overall"]]
    out["validity"] = [_fmt(m, s) for m, s in zip(table["validity"], table["validity_se"])]
    out[f"Δvalidity vs {base}"] = [f"{v:+.3f}" for v in table["validity_vs_baseline"]]
    out["quality"] = [_fmt(m, s) for m, s in zip(table["quality"], table["quality_se"])]
    out[f"time × {base}"] = [_fmt(v, d=2) for v in table["time_x_baseline"]]
    out[f"W/T/L vs {base}"] = [_wtl(r, "vs_baseline") for _, r in table.iterrows()]
    out["best other"] = [b if isinstance(b, str) else "-" for b in table["best_other"]]
    out["W/T/L vs best other"] = [_wtl(r, "vs_best") for _, r in table.iterrows()]
    return out.reset_index()


def title(split: str, prov: dict[str, Any], headline: str) -> str:
    return f"shapes `{split}` split, {headline} (mean ± s.e. over seeds) — {prov['note']}"


def training_data(run_dirs: dict[str, Path]) -> dict[str, Any]:
    """method -> what its learned parts were trained on (the run manifest's
    ``method_training_data``), for each method that learned something."""
    out = {}
    for method, folder in run_dirs.items():
        path = Path(folder) / "manifest.json"
        info = json.loads(path.read_text()).get("method_training_data") if path.is_file() else None
        if info:
            out[method] = info
    return out


def describe_training_data(method: str, info: dict[str, Any]) -> str:
    """One line naming a learned method's weights and who labelled their data."""
    head = f"{method}: {info.get('classifier') or 'weights'}"
    bits = [b for b in (info.get("variant"), f"backbone {info['backbone']}" if info.get("backbone") else None) if b]
    if bits:
        head += f" ({', '.join(bits)})"
    data = info.get("data")
    if not isinstance(data, dict):
        return f"{head}; training data unrecorded (trained before its provenance was saved)"
    sources = ", ".join(f"{k} {v:g}" for k, v in (data.get("sources") or {}).items())
    labeller = data.get("labeller")
    who = (f"generated videos labelled by the `{labeller.get('name', labeller)}` labeller"
           if isinstance(labeller, dict) else
           f"generated videos labelled by {labeller}" if labeller else "no generated videos")
    frac = data.get("synthetic_fraction")
    share = f" ({frac:g} of the render stream)" if "render" in (data.get("sources") or {}) and frac else ""
    return (f"{head}; data: {sources}, compositions `{data.get('split')}`, rendered videos "
            f"labelled by construction, {who}{share}")


def write_table(table: pd.DataFrame, out: Path, stem: str, heading: str,
                prov: dict[str, Any], extra: dict[str, Any],
                notes: list[str] | None = None) -> dict[str, Path]:
    from cvg_bench.leaderboard import latex_escape

    cells = display(table)
    legend = ("Per category and overall (macro over the method's categories): the headline "
              "score; `(same)`: the baseline on the same categories, prompts and seeds; W/T/L: "
              "per-prompt wins/ties/losses (mean over seeds), p: exact two-sided sign test.")
    paths = {k: out / f"{safe_name(stem)}.{k}" for k in ("csv", "md", "tex", "json")}
    atomic_write_text(paths["csv"], table.reset_index().to_csv(index=False))
    tail = "".join(f"\n- {n}" for n in notes or [])
    atomic_write_text(paths["md"], f"## {heading}\n\n{legend}\n\n"
                      + cells.to_markdown(index=False, disable_numparse=True) + "\n"
                      + (f"\nTrained parts:{tail}\n" if tail else ""))
    tex = [f"% {heading}", rf"\begin{{tabular}}{{{'l' * cells.shape[1]}}}", r"\toprule",
           " & ".join(latex_escape(str(c)) for c in cells.columns) + r" \\", r"\midrule",
           *(" & ".join(latex_escape(str(v)).replace("±", r"$\pm$").replace("×", r"$\times$")
                        .replace("Δ", r"$\Delta$") for v in row) + r" \\"
             for row in cells.itertuples(index=False)),
           r"\bottomrule", r"\end{tabular}", rf"% caption: {latex_escape(heading)}",
           *(f"% trained: {latex_escape(n)}" for n in notes or [])]
    atomic_write_text(paths["tex"], "\n".join(tex).replace("Δ", r"$\Delta$")
                      .replace("×", r"$\times$").replace("±", r"$\pm$") + "\n")
    rows = table.reset_index().astype(object)
    atomic_write_text(paths["json"], json.dumps({
        "title": heading, "protocol": prov, **extra,
        "rows": rows.where(rows.notna(), None).to_dict(orient="records")}, indent=1) + "\n")
    return paths


# ---------------------------------------------------------------------------------------------
# Contact sheet and report


def write_contact_sheet(df: pd.DataFrame, run_dirs: dict[str, Path], spec: dict[str, Any],
                        path: Path) -> Path | None:
    """A few prompts per category x ``spec.seeds``, one column per method (blank where a
    method does not run that category)."""
    from cvg_bench.contact_sheet import contact_sheet
    from cvg_bench.video_io import read_video

    methods = list(dict.fromkeys(df["method"]))
    n = int(spec.get("prompts_per_category", 1))
    seeds = [s for s in spec.get("seeds", [0]) if s in set(df["seed"])] or [int(df["seed"].min())]
    rows = []
    for cat in dict.fromkeys(df["category"]):
        prompts = list(dict.fromkeys(df[df["category"] == cat]["prompt_id"]))[:n]
        for pid in prompts:
            for seed in seeds:
                vids = []
                for m in methods:
                    hit = df[(df["method"] == m) & (df["prompt_id"] == pid) & (df["seed"] == seed)]
                    video = None
                    if len(hit) and isinstance(hit["video_path"].iloc[0], str):
                        try:
                            video = read_video(confined(hit["video_path"].iloc[0], run_dirs[m], "video_path"))
                        except (OSError, ValueError, RuntimeError) as exc:
                            log.warning("contact sheet: no video for %s %s seed %s: %s", m, pid, seed, exc)
                    vids.append(video)
                prompt = str(df[df["prompt_id"] == pid]["prompt"].iloc[0])
                rows.append((f"{pid} s{seed}: {prompt}", vids))
    if not rows:
        return None
    return contact_sheet(methods, rows, path, frames=int(spec.get("frames", 3)))


def write_index(out: Path, prov: dict[str, Any], tables: dict[str, dict[str, Path]],
                sheets: dict[str, Path | None], report: Path | None) -> Path:
    from html import escape

    body = [f"<h1>{escape(prov['note'])}</h1>"]
    for split, paths in tables.items():
        rel = {k: p.relative_to(out).as_posix() for k, p in paths.items()}
        body.append(f"<h2>{escape(split)}</h2><p>table: " + ", ".join(
            f'<a href="{escape(v)}">{k}</a>' for k, v in rel.items()) + "</p>")
        if sheets.get(split):
            s = sheets[split].relative_to(out).as_posix()
            body.append(f'<p><a href="{escape(s)}"><img src="{escape(s)}" style="max-width:100%" '
                        f'alt="contact sheet, {escape(split)}"></a></p>')
    if report is not None:
        body.append(f'<p><a href="{escape(report.relative_to(out).as_posix())}">every video '
                    "of the report split, side by side (HTML report)</a></p>")
    path = out / "index.html"
    atomic_write_text(path, "<!doctype html><html><head><meta charset=\"utf-8\"><title>"
                      f"{escape(prov['note'])}</title></head><body>\n" + "\n".join(body)
                      + "\n</body></html>\n")
    return path


def _link_sheet_in_report(report_index: Path, sheet: Path) -> None:
    """Add a link to the contact sheet at the top of the report's index page."""
    text = report_index.read_text()
    rel = Path("..") / sheet.name if sheet.parent == report_index.parent.parent else sheet
    link = f'<p><a href="{rel.as_posix()}">contact sheet (PNG)</a></p>'
    if link not in text and "<body>" in text:
        atomic_write_text(report_index, text.replace("<body>", "<body>\n" + link, 1))


# ---------------------------------------------------------------------------------------------
# End to end


def reproduce(protocol: dict[str, Any], root: Path | str = ".", work_dir: str = "results/reference_runs",
              out_dir: str | None = None, launcher: str | None = None,
              dry_run: bool = False, jobs: int = 1, reuse: list[str] | None = None) -> dict[str, Any]:
    """Tune -> select -> report -> tables, records, contact sheet, HTML report. Returns paths.
    ``reuse``: earlier protocols' work folders whose identical runs are copied, not remade."""
    from cvg_bench.leaderboard import load_records
    from cvg_bench.records import RunStore
    from cvg_bench.select import choose_within_validity, run_settings

    protocol = check_protocol(protocol)
    if launcher is not None and launcher not in LAUNCHERS:
        raise ValueError(f"launcher={launcher!r}; accepted: null (local processes), {', '.join(LAUNCHERS)}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}; accepted: an integer >= 1 (processes at once)")
    prov = provenance(protocol)
    work = confined(Path(work_dir) / f"{safe_name(protocol['name'])}-{prov['hash']}", root, "work_dir")
    out = confined(out_dir or f"results/reference/{safe_name(protocol['name'])}", root, "out_dir")
    tune_dir, report_dir = work / "tune", work / "report"
    c = cost(protocol)
    print(f"{prov['note']}: {c['videos']} videos ({c['vanilla_videos']} {protocol['baseline']}, "
          f"{c['guided_videos']} guided), about {c['cpu_hours']} CPU hours", flush=True)
    steps = tune_steps(protocol, tune_dir, launcher)
    if dry_run:
        for step in steps + report_steps(protocol, report_dir, None, launcher):
            print(step.line())
        return {"protocol": prov, "cost": c}
    sources = [confined(r, root, "reuse") for r in (reuse or [])]
    lacking = [str(r) for r in sources if not r.is_dir()]
    if lacking:
        raise FileNotFoundError(f"reuse folder(s) not found: {', '.join(lacking)} (give earlier "
                                f"protocols' work folders, <work_dir>/<name>-<hash>)")
    record_reused(work, reuse_runs(steps, tune_dir, sources, root) if sources else [])
    run_steps(steps, jobs, work / "logs")

    sel = protocol["selection"]
    tune_df = split_records([tune_dir], protocol, "tune")
    chosen = choose_within_validity(tune_df, run_settings([tune_dir]), protocol["headline"],
                                    protocol["validity"], float(sel["max_validity_drop"]),
                                    protocol["baseline"])
    chosen.update(protocol=prov, categories={m: s["categories"] for m, s in protocol["methods"].items()})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "chosen_settings.json", json.dumps(chosen, indent=1) + "\n")
    for m, ch in chosen["methods"].items():
        print(f"chose {m}: {' '.join(ch['overrides']) or '(one setting)'} -- {ch['reason']}", flush=True)

    missing = [m for m in protocol["methods"] if m not in chosen["methods"]]
    if missing:
        raise ValueError(f"no scored tuning record for {', '.join(missing)}: see the tuning runs under {tune_dir}")
    overrides = {m: chosen["methods"][m]["overrides"] for m in protocol["methods"]}
    steps = report_steps(protocol, report_dir, overrides, launcher)
    record_reused(work, reuse_runs(steps, report_dir, sources, root) if sources else [])
    run_steps(steps, jobs, work / "logs")

    report_runs = {protocol["baseline"]: chosen["methods"][protocol["baseline"]]["best"],
                   **{m: chosen["methods"][m]["best"] for m in protocol["methods"]}}
    bench, gen = protocol["benchmark"], protocol["generator"]
    dirs = {"tune": {m: RunStore(tune_dir, bench, m, gen, h).root for m, h in report_runs.items()},
            "report": {m: RunStore(report_dir, bench, m, gen, h).root for m, h in report_runs.items()}}
    result: dict[str, Any] = {"protocol": prov, "cost": c, "out": out, "tables": {}, "records": {}}
    sheets: dict[str, Path | None] = {}
    for stage in ("tune", "report"):
        split = protocol[stage]["split"]
        lacking = [str(p) for p in dirs[stage].values() if not p.is_dir()]
        if lacking:
            raise FileNotFoundError(f"run folder(s) of the {stage} split not found: {', '.join(lacking)}")
        df = split_records(list(dirs[stage].values()), protocol, stage, report_runs)
        rec_path = export_records(df, out / f"records_{safe_name(split)}.jsonl.gz")
        table = table_from_records(rec_path, protocol["headline"], protocol["validity"], protocol["baseline"])
        heading = title(split, prov, protocol["headline"])
        trained = training_data(dirs[stage])
        extra = {"split": split, "records": rec_path.name, "chosen": report_runs,
                 "recompute": f"cvg_bench.reproduce.table_from_records('{rec_path.name}')",
                 "training_data": trained}
        result["tables"][split] = write_table(
            table, out, f"table_{split}", heading, prov, extra,
            [describe_training_data(m, info) for m, info in trained.items()])
        result["records"][split] = rec_path
        if stage == "report":
            sheets[split] = write_contact_sheet(df, dirs[stage], protocol.get("contact_sheet") or {},
                                                out / f"contact_sheet_{safe_name(split)}.png")
        print(f"\n{(out / f'table_{split}.md').read_text()}", flush=True)
    report_index = None
    if not load_records(list(dirs["report"].values())).empty:
        from cvg_bench.report import write_report

        methods = list(report_runs)
        report_index = write_report(list(dirs["report"].values()), out / "report",
                                    seeds=list(protocol["report"]["seeds"]), methods=methods)
        sheet = sheets.get(protocol["report"]["split"])
        if sheet is not None:
            _link_sheet_in_report(report_index, sheet)
    result["index"] = write_index(out, prov, result["tables"], sheets, report_index)
    result["contact_sheets"] = sheets
    print(f"written under {out}: {result['index'].name}, chosen_settings.json, tables, records")
    return result


def main(cfg) -> int:
    """``python -m cvg_bench reproduce +experiment=NAME [dry_run=true] [launcher=slurm]``."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, "protocol"):
        raise ValueError("no protocol: give +experiment=<name>, e.g. +experiment=shapes_heldout "
                         "(configs/experiment/)")
    protocol = OmegaConf.to_container(cfg.protocol, resolve=True)
    reproduce(protocol, root=str(cfg.root), work_dir=str(cfg.work_dir),
              out_dir=None if cfg.out_dir is None else str(cfg.out_dir),
              launcher=None if cfg.launcher is None else str(cfg.launcher),
              dry_run=bool(cfg.dry_run), jobs=int(cfg.jobs),
              reuse=[str(r) for r in (cfg.get("reuse") or [])])
    return 0
