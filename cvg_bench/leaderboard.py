"""Leaderboards over sample records: pandas tables and CSV, Markdown, LaTeX, JSON, PNG for papers.

``load_records`` -> ``leaderboard`` (one table per benchmark) -> ``export``; ``write_leaderboards``
does all three. Every metric is computed per seed first (over that seed's prompts) and reported
as the mean over seeds with its standard error, so the ``±`` is seed-to-seed variation of the
benchmark score, not the spread of single prompts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvg_bench.records import atomic_write_text, read_records, safe_name

log = logging.getLogger(__name__)

#: A sample is identified by these fields; a merged sweep holds each key once.
KEY = ["run_hash", "method", "generator", "benchmark", "prompt_id", "seed"]
VALIDITY_SCORE = "oracle/validity"  # key in ``scores_norm``

#: Which way is best, per column (torchmetrics-style). Per-category columns are faithfulness.
HIGHER_IS_BETTER: dict[str, bool] = {
    "faithfulness": True,
    "overall": True,
    "overall_micro": True,
    "quality": True,
    "validity": True,
    "sec_per_video": False,
    "guidance_sec": False,
    "time_x_vanilla": False,
}
COUNT_COLUMNS = ["n_samples", "n_seeds", "errors"]
_SECONDS = ("sec_per_video", "guidance_sec")
# Columns load_records derives from nested fields (not part of a SampleRecord).
_DERIVED = ["validity", "generation_s", "guidance_s"]
# Per-seed metric -> the per-sample column it averages (besides the per-category ones).
_SAMPLE_MEANS = {
    "overall_micro": "faithfulness",
    "quality": "quality",
    "validity": "validity",
    "sec_per_video": "generation_s",
    "guidance_sec": "guidance_s",
}


# ---------------------------------------------------------------------------------------------
# Loading


def load_records(paths: Iterable[Path | str] | Path | str) -> pd.DataFrame:
    """One row per sample from one or more results folders, duplicates merged.

    Records sharing a ``KEY`` appear once: the newest ``created_at`` wins (a warning says how
    many were dropped). Error records are kept (``error`` not null) so that leaderboards can
    count them; they are excluded from every score. Row order is load order, which fixes the
    "first appearance" order of categories. Nested fields stay as dict columns; ``validity``
    (``scores_norm["oracle/validity"]``), ``generation_s`` and ``guidance_s`` are added flat.

    Only valid records are read (``records.read_records``: schema, ranges, paths): each invalid
    one is left out with a warning naming its file and why, and listed in
    ``df.attrs["invalid_records"]`` as ``"<path>: <reason>"``.
    """
    folders = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    missing = [str(p) for p in folders if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"results folder(s) not found: {', '.join(missing)}")
    invalid: list[tuple[Path, str]] = []
    records = [rec for folder in folders for rec in read_records(folder, invalid)]
    for path, reason in invalid:
        log.warning("left out the invalid sample record %s: %s", path, reason)
    if not records:
        bad = f"; {len(invalid)} invalid, e.g. {invalid[0][0]}: {invalid[0][1]}" if invalid else ""
        raise ValueError(
            f"no records found under {', '.join(map(str, folders))} "
            f"(expected <benchmark>/<run>/samples/*.json){bad}"
        )
    df = _add_flat_columns(_dedup(_with_defaults(pd.DataFrame.from_records(records))))
    df.attrs["invalid_records"] = [f"{path}: {reason}" for path, reason in invalid]
    return df


def _with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    lacking = [c for c in [*KEY, "category"] if c not in df.columns]
    if lacking:
        raise ValueError(f"sample records lack required field(s): {', '.join(lacking)}")
    if df[KEY + ["category"]].isna().any().any():
        raise ValueError("some sample records have a null key or category field")
    # Older or partial records: optional fields default to "absent" rather than KeyError later.
    defaults: dict[str, Any] = {"faithfulness": None, "quality": None, "error": None,
                                "created_at": None, "scores_norm": {}, "timings": {}}
    for name, value in defaults.items():
        if name not in df.columns:
            df[name] = [value] * len(df)
    return df


def _dedup(df: pd.DataFrame) -> pd.DataFrame:
    created = pd.to_datetime(df["created_at"], utc=True, errors="coerce", format="ISO8601")
    # Stable sort: on equal timestamps the record loaded last wins; unparseable ones lose.
    newest_last = df.loc[created.sort_values(kind="stable", na_position="first").index]
    dropped = newest_last.duplicated(KEY, keep="last")
    if dropped.any():
        example = {k: _plain(v) for k, v in newest_last.loc[dropped, KEY].iloc[0].items()}
        log.warning("dropped %d duplicate sample record(s), keeping the newest created_at "
                    "(e.g. %s)", int(dropped.sum()), example)
    kept = newest_last.index[~dropped.to_numpy()]
    return df.loc[sorted(kept)].reset_index(drop=True)  # back to load order


def _add_flat_columns(df: pd.DataFrame) -> pd.DataFrame:
    def nested(column: str, key: str) -> list[Any]:
        return [d.get(key) if isinstance(d, dict) else None for d in df[column]]

    df["validity"] = nested("scores_norm", VALIDITY_SCORE)
    df["generation_s"] = nested("timings", "generation_s")
    df["guidance_s"] = nested("timings", "guidance_s")
    for column in ["faithfulness", "quality", *_DERIVED]:
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    return df


# ---------------------------------------------------------------------------------------------
# Tables


def higher_is_better(column: str) -> bool:
    """Direction of a leaderboard column; unknown names are per-category faithfulness."""
    return HIGHER_IS_BETTER.get(column, HIGHER_IS_BETTER["faithfulness"])


def leaderboard(df: pd.DataFrame, benchmark: str | None = None,
                categories: list[str] | None = None) -> pd.DataFrame:
    """One benchmark's leaderboard: rows method x generator, mean and s.e. over seeds.

    Rows are indexed by (method, generator), plus ``run_hash`` when two runs share a method
    and generator (then every row shows its run hash, so runs are never silently pooled).

    Columns, each metric followed by its ``<metric>_se``:

    * one per category: mean ``faithfulness`` over that category's prompts;
    * ``overall``: the MACRO mean, i.e. the unweighted mean over categories of the category
      means (each category counts once, however many prompts it has). A seed lacking a whole
      category gets no ``overall`` (it would not be comparable), so it drops out of that mean;
    * ``overall_micro``: mean ``faithfulness`` over all samples;
    * ``quality`` and ``validity`` (``scores_norm["oracle/validity"]``) when any record has them;
    * ``sec_per_video`` (``timings.generation_s``) and ``guidance_sec`` (``timings.guidance_s``);
    * ``time_x_vanilla``: ``sec_per_video / (sec_per_video - guidance_sec)``, the cost of guidance
      measured inside the same videos (the unguided sampler's work is vanilla's);

    then ``n_samples`` (scored samples), ``n_seeds`` and ``errors`` (error records, excluded
    from every score). Each metric is computed per seed over the prompts, then averaged over
    seeds; ``_se`` = std(ddof=1) / sqrt(n_seeds). With one seed ``_se`` is NaN, not 0: the
    spread is unknown, not zero (exports then print the mean alone).

    ``categories`` sets the display order (unlisted ones follow in order of first appearance);
    without it, categories appear in order of first appearance in ``df``.
    """
    sub = _one_benchmark(df, benchmark)
    cats = _category_order(sub["category"], categories)
    keys = _row_keys(sub)
    scored = sub[sub["error"].isna()]
    metrics = cats + ["overall", "overall_micro"] + [
        m for m in ("quality", "validity") if scored[m].notna().any()
    ] + list(_SECONDS)
    table = _counts(sub, scored, keys).join(_over_seeds(_per_seed(scored, keys, cats), keys))
    table["time_x_vanilla"] = _time_ratio(table)
    table["time_x_vanilla_se"] = np.nan  # a ratio of seed means: no per-seed spread
    metrics.append("time_x_vanilla")
    columns = [c for m in metrics for c in (m, f"{m}_se")] + COUNT_COLUMNS
    table = table.reindex(columns=columns)
    table.attrs.update(benchmark=str(sub["benchmark"].iloc[0]), categories=cats)
    return table


def _time_ratio(table: pd.DataFrame) -> pd.Series:
    """Seconds per video over the same videos' seconds without their guidance:
    ``sec_per_video / (sec_per_video - guidance_sec)``. The sampler's own work is vanilla's (same
    generator, steps and prompts), so this is the cost ratio to vanilla measured inside the same
    videos: runs made at other times on a shared machine do not enter it (their load does)."""
    total = table["sec_per_video"].to_numpy(dtype=float)
    unguided = total - table["guidance_sec"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(unguided > 0, total / unguided, np.nan)
    return pd.Series(ratio, index=table.index)


def leaderboards(df: pd.DataFrame, categories: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """One leaderboard per benchmark, in order of first appearance."""
    return {str(b): leaderboard(df, str(b), categories) for b in pd.unique(df["benchmark"])}


def _one_benchmark(df: pd.DataFrame, benchmark: str | None) -> pd.DataFrame:
    found = [str(b) for b in pd.unique(df["benchmark"])]
    if benchmark is None:
        if len(found) != 1:
            raise ValueError(f"records hold several benchmarks ({', '.join(found)}); "
                             "pass benchmark=<one of them> or use leaderboards()")
        return df
    sub = df[df["benchmark"] == benchmark]
    if sub.empty:
        raise ValueError(f"no records for benchmark {benchmark!r}; found: {', '.join(found)}")
    return sub


def _category_order(present: pd.Series, categories: list[str] | None) -> list[str]:
    seen = [str(c) for c in pd.unique(present)]
    wanted = [c for c in (categories or []) if c in seen]
    cats = wanted + [c for c in seen if c not in wanted]
    reserved = set(HIGHER_IS_BETTER) | set(COUNT_COLUMNS) | set(KEY)
    clash = [c for c in cats if c in reserved or c.endswith("_se")]
    if clash:  # a category column would overwrite or mimic a metric column
        raise ValueError(f"category name(s) {clash} clash with leaderboard column names")
    return cats


def _row_keys(sub: pd.DataFrame) -> list[str]:
    runs = sub.groupby(["method", "generator"])["run_hash"].nunique()
    return ["method", "generator"] + (["run_hash"] if (runs > 1).any() else [])


def _per_seed(scored: pd.DataFrame, keys: list[str], cats: list[str]) -> pd.DataFrame:
    """Each metric per (row, seed), averaged over that seed's prompts."""
    by = keys + ["seed"]
    if scored.empty:  # every sample failed: no scores, but the row still shows its errors
        index = pd.MultiIndex.from_tuples([], names=by)
        return pd.DataFrame(columns=cats + ["overall", *_SAMPLE_MEANS], index=index, dtype=float)
    per_cat = (scored.groupby(by + ["category"])["faithfulness"].mean()
               .unstack("category").reindex(columns=cats).rename_axis(columns=None))
    per_cat["overall"] = per_cat[cats].mean(axis=1, skipna=False)
    sample_means = scored.groupby(by)[list(dict.fromkeys(_SAMPLE_MEANS.values()))].mean()
    return per_cat.join(pd.DataFrame({m: sample_means[c] for m, c in _SAMPLE_MEANS.items()}))


def _over_seeds(per_seed: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = per_seed.groupby(level=keys)
    se = grouped.std(ddof=1) / np.sqrt(grouped.count())  # NaN with one seed
    return grouped.mean().join(se.add_suffix("_se"))


def _counts(sub: pd.DataFrame, scored: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = sub.groupby(keys).size().index  # every row, even one whose samples all failed
    counts = pd.DataFrame({
        "n_samples": scored.groupby(keys).size(),
        "n_seeds": scored.groupby(keys)["seed"].nunique(),
        "errors": sub[sub["error"].notna()].groupby(keys).size(),
    }).reindex(rows)
    return counts.fillna(0).astype(int)


# ---------------------------------------------------------------------------------------------
# Rendering


def metric_columns(table: pd.DataFrame) -> list[str]:
    """Columns that have a ``<name>_se`` partner, in table order."""
    return [c for c in table.columns if f"{c}_se" in table.columns]


def _categories(table: pd.DataFrame) -> list[str]:
    return list(table.attrs.get("categories")
                or [c for c in metric_columns(table) if c not in HIGHER_IS_BETTER])


def _decimals(column: str) -> int:
    return 2 if column in _SECONDS or column == "time_x_vanilla" else 3


def best_mask(table: pd.DataFrame, column: str) -> pd.Series:
    """Rows holding the best value of ``column`` (max, or min for seconds); ties all win."""
    # Compared at display precision, so two entries that print the same are both bold.
    shown = table[column].round(_decimals(column))
    best = shown.max() if higher_is_better(column) else shown.min()
    return shown == best


def _cells(table: pd.DataFrame, pm: str, bold: Callable[[str], str], missing: str,
           label: Callable[[str], str] = str) -> pd.DataFrame:
    """The table as strings: ``mean<pm>se`` per metric, best bolded; labels as columns."""
    out = pd.DataFrame(index=range(len(table)))
    for name in table.index.names:
        out[name] = [label(str(v)) for v in table.index.get_level_values(name)]
    for col in metric_columns(table):
        d, best = _decimals(col), best_mask(table, col).to_numpy()
        texts = [_mean_se(m, s, d, pm, missing) for m, s in zip(table[col], table[f"{col}_se"])]
        out[col] = [bold(t) if b else t for t, b in zip(texts, best)]
    for col in COUNT_COLUMNS:
        if col in table.columns:
            out[col] = [str(int(v)) for v in table[col]]
    return out


def _mean_se(mean: float, se: float, decimals: int, pm: str, missing: str) -> str:
    if pd.isna(mean):
        return missing
    return f"{mean:.{decimals}f}" if pd.isna(se) else f"{mean:.{decimals}f}{pm}{se:.{decimals}f}"


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown: ``mean ± se`` (s.e. over seeds), best per column in ``**bold**``."""
    cells = _cells(table, " ± ", lambda t: f"**{t}**", "-")
    # disable_numparse: tabulate must not re-format our already formatted numbers.
    return cells.to_markdown(index=False, disable_numparse=True)


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular``: ``mean $\\pm$ se``, best per column in ``\\textbf{}``."""
    cells = _cells(table, r" $\pm$ ", lambda t: rf"\textbf{{{t}}}", "--", label=latex_escape)
    n_labels = len(table.index.names)
    spec = "l" * n_labels + "c" * (cells.shape[1] - n_labels - len(COUNT_COLUMNS)) + "r" * 3
    lines = [
        r"% mean $\pm$ standard error over seeds; bold: best per column (seconds: lowest)",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(str(c)) for c in cells.columns) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in cells.itertuples(index=False)),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def _row_labels(table: pd.DataFrame) -> list[str]:
    return [" / ".join(map(str, idx if isinstance(idx, tuple) else (idx,))) for idx in table.index]


def table_json(table: pd.DataFrame) -> dict[str, Any]:
    """The table as plain JSON: rows keyed by label, NaN as null, plus directions."""
    rows = table.reset_index()
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    return {
        "benchmark": table.attrs.get("benchmark"),
        "categories": _categories(table),
        "higher_is_better": {c: higher_is_better(c) for c in metric_columns(table)},
        "results": dict(zip(_row_labels(table), records)),
    }


# ---------------------------------------------------------------------------------------------
# Plots


def _has(table: pd.DataFrame, column: str) -> bool:
    return column in table and bool(table[column].notna().any())


def plot_scatter(table: pd.DataFrame, path: Path, x: str | None = None) -> Path:
    """Overall faithfulness vs ``x`` ± s.e.; by default quality, else validity (the shapes
    world's visual quality), else seconds per video."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    if x is None:
        x = next(c for c in ("quality", "validity", "sec_per_video") if c == "sec_per_video" or _has(table, c))
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    shown = table[x].notna() & table["overall"].notna()
    for label, (_, row) in zip(_row_labels(table[shown]), table[shown].iterrows()):
        ax.errorbar(row[x], row["overall"], xerr=row[f"{x}_se"], yerr=row["overall_se"],
                    fmt="o", capsize=3, label=label)  # NaN s.e. (one seed): no bar
    if not shown.all():  # say who is missing rather than drop them silently
        missing = ", ".join(_row_labels(table[~shown]))
        fig.text(0.01, 0.01, f"not plotted (no {x} or overall): {missing}", fontsize="x-small")
    ax.set_xlabel(f"{x} (mean ± s.e. over seeds)")
    ax.set_ylabel("overall faithfulness (macro over categories)")
    ax.set_title(str(table.attrs.get("benchmark", "")))
    ax.grid(alpha=0.3)
    if shown.any():
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=150)
    return path


def plot_categories(table: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: per-category faithfulness, one bar per row, ± s.e. over seeds."""
    from matplotlib.figure import Figure

    cats = _categories(table)
    x, width = np.arange(len(cats)), 0.8 / max(len(table), 1)
    fig = Figure(figsize=(max(6.0, 1.2 * len(cats) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (label, (_, row)) in enumerate(zip(_row_labels(table), table.iterrows())):
        means = row[cats].to_numpy(dtype=float)
        errs = row[[f"{c}_se" for c in cats]].to_numpy(dtype=float)  # NaN: no bar
        ax.bar(x + (i - (len(table) - 1) / 2) * width, means, width, yerr=errs, capsize=2,
               label=label)
    ax.set_xticks(x, cats, rotation=20, ha="right")
    ax.set_ylabel("faithfulness (mean ± s.e. over seeds)")
    ax.set_title(str(table.attrs.get("benchmark", "")))
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=150)
    return path


# ---------------------------------------------------------------------------------------------
# Files


def export(table: pd.DataFrame, out_dir: Path | str, stem: str) -> dict[str, Path]:
    """Write ``<stem>.csv`` (numeric, mean and se columns), ``.md``, ``.tex``, ``.json`` and
    plots ``<stem>_scatter.png`` (faithfulness vs quality), ``<stem>_categories.png`` and
    ``<stem>_cost.png`` (faithfulness vs seconds per video) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(stem)
    paths = {kind: out / f"{stem}.{kind}" for kind in ("csv", "md", "tex", "json")}
    atomic_write_text(paths["csv"], table.reset_index().to_csv(index=False))
    atomic_write_text(paths["md"], to_markdown(table) + "\n")
    atomic_write_text(paths["tex"], to_latex(table))
    atomic_write_text(paths["json"], _dumps(table_json(table)))
    paths["scatter"] = plot_scatter(table, out / f"{stem}_scatter.png")
    paths["categories"] = plot_categories(table, out / f"{stem}_categories.png")
    paths["cost"] = plot_scatter(table, out / f"{stem}_cost.png", x="sec_per_video")
    return paths


def write_samples(df: pd.DataFrame, path: Path | str) -> Path:
    """The merged per-sample records (errors included) as JSON lines, as stored."""
    fields = [c for c in df.columns if c not in _DERIVED]
    lines = (json.dumps({k: _plain(v) for k, v in rec.items()}, sort_keys=True, default=_plain)
             for rec in df[fields].to_dict(orient="records"))
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return Path(path)


def with_faithfulness(df: pd.DataFrame, score: str | None) -> pd.DataFrame:
    """Count ``scores_norm[score]`` (e.g. ``oracle/relation``) as faithfulness instead of
    each record's primary faithfulness score; None keeps the records' own."""
    if score is None:
        return df
    values = sample_score(df, score)
    if values[df["error"].isna()].isna().all():
        found = sorted({k for d in df["scores_norm"] if isinstance(d, dict) for k in d})
        raise ValueError(f"faithfulness score {score!r} is in no record; scores found: {found}")
    out = df.copy()
    out["faithfulness"] = values
    return out


def sample_score(df: pd.DataFrame, score: str) -> pd.Series:
    """Each record's ``scores_norm[score]`` as a float (NaN where the record lacks it)."""
    values = [d.get(score) if isinstance(d, dict) else None for d in df["scores_norm"]]
    return pd.to_numeric(pd.Series(values, index=df.index, dtype=object), errors="coerce")


def write_leaderboards(results_dirs: Iterable[Path | str] | Path | str, out_dir: Path | str,
                       categories: list[str] | None = None,
                       faithfulness: str | None = None) -> dict[str, Path]:
    """Load -> one leaderboard per benchmark -> export, plus ``samples.jsonl`` and
    ``leaderboard.json`` (all benchmarks, lm-eval style). Returns ``{"samples": ...,
    "leaderboard": ..., "<benchmark>/<kind>": ...}`` with kind csv, md, tex, json, scatter,
    categories."""
    sources = [results_dirs] if isinstance(results_dirs, (str, Path)) else list(results_dirs)
    loaded = load_records(sources)
    invalid = list(loaded.attrs.get("invalid_records", []))
    df = with_faithfulness(loaded, faithfulness)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"samples": write_samples(df, out / "samples.jsonl")}
    results = {}
    for bench, table in leaderboards(df, categories).items():
        paths.update({f"{bench}/{k}": p for k, p in export(table, out, bench).items()})
        results[bench] = table_json(table)
    summary = {
        "results": results,
        "sources": [str(p) for p in sources],
        "faithfulness": faithfulness or "primary faithfulness score of each record",
        "n_records": len(df),
        "n_errors": int(df["error"].notna().sum()),
        "invalid_records": invalid,  # "<path>: <reason>", left out of every number
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    paths["leaderboard"] = out / "leaderboard.json"
    atomic_write_text(paths["leaderboard"], _dumps(summary))
    return paths


def _plain(value: Any) -> Any:
    """JSON-safe scalar: numpy -> Python, NaN -> null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=_plain, allow_nan=False) + "\n"
