"""An HTML report of the samples themselves: per prompt and seed, each run's video side by side.

``write_report(results_dirs, out_dir)`` reads the sample records the leaderboards read
(``leaderboard.load_records``: any depth, duplicates merged) and writes, under ``out_dir``::

    index.html                 # links to one page per benchmark
    <benchmark>.html           # rows (prompt, seed), columns method x generator [x run hash]
    media/<benchmark>/<method>__<generator>__<run_hash>/<prompt_id>__s<seed>.mp4  # hard link or copy
    media/<benchmark>/<method>__<generator>__<run_hash>/<prompt_id>__s<seed>.png  # poster (middle frame)

Every link in a page is relative and points inside ``out_dir``, so the folder can be zipped
and moved. Videos are hard-linked into ``media/`` (copied when ``out_dir`` is on another file
system): a record's ``video_path`` is relative to its run folder, or absolute for
``score``-command records, and neither would survive a move. Plain HTML and CSS, no script.

Only valid records are shown (``records.read_records``). A video is linked only when it stays
under its root (the run folder; for ``score`` records the videos folder of the run's
manifest), matches the size and sha256 its record stores (schema 2) and decodes as a video;
otherwise the cell says why. Every file written stays under ``out_dir``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import imageio.v2 as iio
import numpy as np
import pandas as pd

from cvg_bench.contact_sheet import contact_sheet
from cvg_bench.leaderboard import _row_keys, load_records
from cvg_bench.records import (
    PathEscape,
    RunStore,
    atomic_write_text,
    confined,
    file_digest,
    make_temp,
    safe_name,
)
from cvg_bench.video_io import read_video

log = logging.getLogger(__name__)

MEDIA = "media"
_NOT_SCORERS = ("guidance",)  # ``details`` keys that hold guidance statistics, not scores


@dataclass
class Cell:
    """One (prompt, seed) x run cell: the video (paths relative to out_dir) or why there is none."""

    record: dict[str, Any] | None
    video: str | None = None
    poster: str | None = None
    problem: str | None = None  # shown instead of the video


def write_report(results_dirs: Iterable[Path | str] | Path | str, out_dir: Path | str,
                 limit: int | None = None, seeds: list[int] | None = None,
                 categories: list[str] | None = None,
                 methods: list[str] | None = None) -> Path:
    """Write ``out_dir/index.html`` and one ``<benchmark>.html`` per benchmark; returns the index.

    ``limit``: at most this many prompts per category (first in record order); ``seeds``,
    ``categories``: keep only these; ``methods``: keep only these methods, columns in this
    order (otherwise order of first appearance).
    """
    sources = [results_dirs] if isinstance(results_dirs, (str, Path)) else list(results_dirs)
    df = _select(load_records(sources), limit, seeds, categories, methods)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot write the report to {out} ({exc.strerror or exc}); "
                              "set out_dir=<a writable folder>") from exc
    run_dirs = _index_run_dirs(sources)
    pages = {}
    for bench in pd.unique(df["benchmark"]):
        sub = df[df["benchmark"] == bench]
        page = out / f"{safe_name(str(bench))}.html"
        atomic_write_text(page, _benchmark_page(str(bench), sub, out, run_dirs, sources))
        pages[str(bench)] = page
        log.info("report for %s: %s", bench, page)
    index = out / "index.html"
    atomic_write_text(index, _index_page(pages, sources))
    return index


# ---------------------------------------------------------------------------------------------
# Selection and grouping


def _select(df: pd.DataFrame, limit: int | None, seeds: list[int] | None,
            categories: list[str] | None, methods: list[str] | None) -> pd.DataFrame:
    filters = {"seed": seeds, "category": categories, "method": methods}
    for column, wanted in filters.items():
        if wanted is not None:
            df = df[df[column].isin(list(wanted))]
    if methods is not None:  # the requested column order
        order = {m: i for i, m in enumerate(methods)}
        df = df.iloc[np.argsort([order[m] for m in df["method"]], kind="stable")]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1 (prompts per category), got {limit}")
        first = df.drop_duplicates(["benchmark", "category", "prompt_id"])
        kept = first.groupby(["benchmark", "category"], sort=False).head(limit)
        df = df.merge(kept[["benchmark", "prompt_id"]], on=["benchmark", "prompt_id"])
    if df.empty:
        raise ValueError(f"no records left after selecting seeds={seeds}, "
                         f"categories={categories}, methods={methods}")
    return df


def _index_run_dirs(sources: list[Path | str]) -> dict[tuple[str, str], list[Path]]:
    """(benchmark folder, run folder) name -> run folders, found as the leaderboard finds
    records (``samples/`` at any depth). load_records keeps no source path, and a relative
    ``video_path`` is relative to its run folder."""
    found: dict[tuple[str, str], list[Path]] = {}
    for source in sources:
        for samples in sorted(Path(source).resolve().rglob("samples")):
            run = samples.parent
            found.setdefault((run.parent.name, run.name), []).append(run)
    return found


def _store(rec: dict[str, Any]) -> RunStore:
    """The record's run store relative to its results_dir: ``.root`` is <benchmark>/<run>."""
    return RunStore("", rec["benchmark"], rec["method"], rec["generator"], rec["run_hash"])


# ---------------------------------------------------------------------------------------------
# Media


def _cell(rec: dict[str, Any], out: Path, run_dirs: dict[tuple[str, str], list[Path]]) -> Cell:
    if isinstance(rec.get("error"), str):
        first_line = rec["error"].strip().splitlines()[0] if rec["error"].strip() else "error"
        return Cell(rec, problem=f"failed: {first_line}")
    video_path = rec.get("video_path")
    if not isinstance(video_path, str) or not video_path:
        return Cell(rec, problem="no video saved")
    store = _store(rec)
    root = store.root
    try:
        source = _find_video(rec, run_dirs.get((root.parent.name, root.name), []))
    except (PathEscape, ValueError) as exc:
        log.warning("report: refusing the video of %s seed %s: %s", rec["prompt_id"],
                    rec["seed"], exc)
        return Cell(rec, problem=f"video refused: {exc}")
    if source is None:
        return Cell(rec, problem=f"video not found: {video_path}")
    stem = store.stem(rec["prompt_id"], int(rec["seed"]))
    rel = Path(MEDIA) / root / f"{stem}.mp4"
    poster_rel = rel.with_suffix(".png")
    try:
        dest = confined(rel, out, "report media")
        poster = confined(poster_rel, out, "report poster")
        fresh = (dest.exists() and poster.exists() and os.path.samefile(source, dest)
                 and poster.stat().st_mtime >= source.stat().st_mtime)
        if not (fresh and _has_hash(rec)):
            # decoded BEFORE it is linked: a file that is not a video never enters media/
            frames = read_video(source)
            _place(source, dest)
            _write_poster(poster, frames)
    except (OSError, ValueError, RuntimeError) as exc:  # a corrupt or unreadable file
        log.warning("report: skipping video %s: %s", source, exc)
        return Cell(rec, problem=f"video unreadable: {source.name}")
    return Cell(rec, video=rel.as_posix(), poster=poster_rel.as_posix())


SHEET_ROWS = 12  # (prompt, seed) rows of a benchmark's contact sheet


def _frames_of(cell: Cell, out: Path) -> np.ndarray | None:
    """The cell's video (already checked and placed under ``out``), or None."""
    if cell.video is None:
        return None
    try:
        return read_video(out / cell.video)
    except (OSError, ValueError, RuntimeError):
        return None


def _find_video(rec: dict[str, Any], runs: list[Path]) -> Path | None:
    """The record's video, resolved and checked: it stays under its root, and (schema 2) has
    the size and sha256 the record stores (``ValueError`` otherwise); None when absent."""
    video_path = Path(rec["video_path"])
    if video_path.is_absolute():  # records of the `score` command: confined to its folder
        roots = [Path(v) for v in map(_videos_folder, runs) if v is not None]
        if not roots:
            raise ValueError(f"absolute video_path {str(video_path)!r} but no run manifest names "
                             "the videos folder it must stay in")
        candidates = [confined(video_path, roots[0], "video_path")]
    else:  # the same run folder may sit under two results folders (a copied sweep)
        candidates = [confined(video_path, run, "video_path") for run in runs]
    for path in candidates:
        if not path.is_file():
            continue
        if _has_hash(rec):
            size, digest = file_digest(path)
            if (size, digest) != (rec["video_size"], rec["video_sha256"]):
                raise ValueError(f"{path.name} is not the video its record was made from "
                                 f"({size} bytes, sha256 {digest[:12]}...)")
        return path
    return None


def _has_hash(rec: dict[str, Any]) -> bool:
    """Schema 2 (in a merged table a schema-1 record's hash column is NaN)."""
    return isinstance(rec.get("video_sha256"), str)


def _videos_folder(run: Path) -> str | None:
    """The videos folder a ``score`` run's manifest names (``identity.videos``)."""
    try:
        manifest = json.loads((run / "manifest.json").read_text())
        folder = manifest["identity"]["videos"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if isinstance(folder, str) and Path(folder).is_absolute() else None


def _place(source: Path, dest: Path) -> None:
    """Hard-link (same file system) or copy ``source`` to ``dest``, atomically."""
    if dest.exists() and os.path.samefile(source, dest):
        return
    tmp = make_temp(dest.parent, dest.stem, suffix=dest.suffix)
    try:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)  # the umask's mode, not the source's
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _write_poster(poster: Path, frames: np.ndarray) -> None:
    """The middle frame as PNG (the first frame of a generated video is often the least
    telling); ``_cell`` reuses it while it is newer than the video."""
    tmp = make_temp(poster.parent, poster.stem, suffix=".png")
    try:
        iio.imwrite(tmp, frames[len(frames) // 2], format="PNG")
        os.replace(tmp, poster)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table.report { border-collapse: collapse; }
table.report th, table.report td { border: 1px solid #ccc; padding: 6px; vertical-align: top; }
table.report thead th { background: #f3f3f3; position: sticky; top: 0; }
td.prompt { max-width: 16em; }
td.target { max-width: 12em; font-size: 0.85em; word-break: break-word; }
td.cell { text-align: center; min-width: 200px; }
video { width: 192px; height: auto; background: #000; image-rendering: pixelated; }
img.sheet { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
.placeholder { width: 192px; height: 108px; margin: auto; display: flex; align-items: center;
  justify-content: center; background: repeating-linear-gradient(45deg, #eee, #eee 8px,
  #f8f8f8 8px, #f8f8f8 16px); color: #a00; font-size: 0.85em; overflow: hidden;
  word-break: break-word; }
.placeholder.empty { color: #777; }
.scores { font-size: 0.8em; text-align: left; margin-top: 4px; }
.scores .main { font-weight: bold; }
.pass { color: #080; } .fail { color: #b00; }
.muted { color: #777; font-size: 0.85em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _url(rel: str) -> str:
    return _e(quote(rel))  # percent-encode for the URL, then escape for the attribute


def _num(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _e(value)
    return "-" if np.isnan(number) else f"{number:.3f}"


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        *body, "</body>", "</html>", ""])


def _shown(path: Path | str) -> str:
    """A path as the page shows it: relative to the working directory when under it (a page
    committed with its results names no machine's folders)."""
    rel = os.path.relpath(Path(path).resolve(), Path.cwd().resolve())
    return str(path) if rel.startswith("..") else rel


def _stamp(sources: list[Path | str]) -> str:
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f'<p class="muted">records from {_e(", ".join(map(_shown, sources)))}; '
            f"written {_e(date)} by <code>python -m cvg_bench report</code></p>")


def _index_page(pages: dict[str, Path], sources: list[Path | str]) -> str:
    items = [f'<li><a href="{_url(p.name)}">{_e(b)}</a></li>' for b, p in pages.items()]
    return _page("cvg_bench report", ["<h1>cvg_bench report</h1>", _stamp(sources),
                                      "<ul>", *items, "</ul>"])


def _benchmark_page(bench: str, sub: pd.DataFrame, out: Path,
                    run_dirs: dict[tuple[str, str], list[Path]],
                    sources: list[Path | str]) -> str:
    keys = _row_keys(sub)  # method, generator (+ run_hash when two runs share both)
    columns = list(dict.fromkeys(tuple(str(v) for v in row) for row in sub[keys].to_numpy()))
    records = {(tuple(str(rec[k]) for k in keys), str(rec["prompt_id"]), int(rec["seed"])): rec
               for rec in sub.to_dict(orient="records")}
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for (_, pid, _), rec in records.items():
        by_prompt.setdefault(pid, []).append(rec)
    cat_order = {c: i for i, c in enumerate(pd.unique(sub["category"]))}
    prompts = sub.drop_duplicates("prompt_id")
    prompts = prompts.iloc[np.argsort([cat_order[c] for c in prompts["category"]], kind="stable")]

    header = "".join(f"<th>{'<br>'.join(_e(v) for v in col)}</th>" for col in columns)
    rows = []
    sheet_rows: list[tuple[str, list[np.ndarray | None]]] = []
    n_videos = 0
    for prompt in prompts.to_dict(orient="records"):
        pid = str(prompt["prompt_id"])
        seeds = sorted(int(s) for s in sub.loc[sub["prompt_id"] == pid, "seed"].unique())
        for i, seed in enumerate(seeds):
            tds = []
            if i == 0:  # prompt, category and target span the prompt's seed rows
                span = f' rowspan="{len(seeds)}"' if len(seeds) > 1 else ""
                tds += [f'<td class="prompt"{span}>{_e(prompt["prompt"])}'
                        f'<div class="muted">{_e(pid)}</div></td>',
                        f'<td{span}>{_e(prompt["category"])}</td>',
                        f'<td class="target"{span}>{_target(by_prompt[pid])}</td>']
            tds.append(f"<td>{seed}</td>")
            sheet_videos: list[np.ndarray | None] = []
            for col in columns:
                rec = records.get((col, pid, seed))
                cell = _cell(rec, out, run_dirs) if rec is not None else Cell(None)
                n_videos += cell.video is not None
                tds.append(_cell_html(cell))
                if len(sheet_rows) < SHEET_ROWS:
                    sheet_videos.append(_frames_of(cell, out))
            if len(sheet_rows) < SHEET_ROWS:
                sheet_rows.append((f"{prompt['prompt']} (seed {seed})", sheet_videos))
            rows.append(f'<tr data-prompt-id="{_e(pid)}" data-seed="{seed}">{"".join(tds)}</tr>')
    summary = (f"<p>{len(prompts)} prompt(s), {sub['seed'].nunique()} seed(s), "
               f"{len(columns)} run(s), {n_videos} video(s), "
               f"{int(sub['error'].notna().sum())} failed sample(s). Scores are normalised to "
               "[0, 1], higher is better; the poster is the middle frame.</p>")
    sheet_html = ""
    if sheet_rows and any(v is not None for _, vids in sheet_rows for v in vids):
        name = f"{safe_name(bench)}_contact_sheet.png"
        contact_sheet([" / ".join(col) for col in columns], sheet_rows, confined(name, out, "contact sheet"))
        sheet_html = (f'<p>Contact sheet (first, middle and last frames; the first {len(sheet_rows)} '
                      f'rows): <a href="{_url(name)}">{_e(name)}</a></p>'
                      f'<img class="sheet" src="{_url(name)}" alt="contact sheet">')
    return _page(f"cvg_bench report: {bench}", [
        f"<h1>{_e(bench)}</h1>", summary, _stamp(sources), sheet_html,
        '<table class="report">',
        f"<thead><tr><th>prompt</th><th>category</th><th>target</th><th>seed</th>{header}"
        "</tr></thead>",
        "<tbody>", *rows, "</tbody>", "</table>"])


def _target(recs: list[dict[str, Any]]) -> str:
    """What the prompt asks for: the record's ``target``/``label`` when it has one, else the
    predicates its scorers checked (records store no label; the predicates are the target
    spelled out, e.g. ``on_the_right_of``)."""
    for rec in recs:
        for field in ("target", "label"):
            if isinstance(rec.get(field), str):
                return _e(rec[field])
    checks = dict.fromkeys(name for rec in recs for name in _predicates(rec))
    return _e(", ".join(checks)) if checks else '<span class="muted">-</span>'


def _predicates(rec: dict[str, Any]) -> dict[str, bool]:
    """``details[scorer][predicate]["passed"]`` of every scorer, flattened."""
    out = {}
    details = rec.get("details")
    for scorer, preds in (details.items() if isinstance(details, dict) else ()):
        if scorer in _NOT_SCORERS or not isinstance(preds, dict):
            continue
        for name, value in preds.items():
            if isinstance(value, dict) and "passed" in value:
                out[str(name)] = bool(value["passed"])
    return out


def _cell_html(cell: Cell) -> str:
    if cell.record is None:
        return '<td class="cell missing"><div class="placeholder empty">no sample</div></td>'
    if cell.video is not None:
        media = (f'<video controls muted loop playsinline preload="metadata" '
                 f'poster="{_url(cell.poster or "")}" src="{_url(cell.video)}"></video>')
        css = "cell"
    else:
        media = f'<div class="placeholder">{_e(cell.problem)}</div>'
        css = "cell error" if isinstance(cell.record.get("error"), str) else "cell novideo"
    return f'<td class="{css}">{media}{_scores_html(cell.record)}</td>'


def _scores_html(rec: dict[str, Any]) -> str:
    if isinstance(rec.get("error"), str):
        return ""
    lines = [f'<div class="main">faithfulness {_num(rec.get("faithfulness"))} · '
             f'validity {_num(rec.get("validity"))}</div>']
    if rec.get("quality") is not None and not pd.isna(rec.get("quality")):
        lines.append(f"<div>quality {_num(rec['quality'])}</div>")
    by_scorer: dict[str, list[str]] = {}
    scores = rec.get("scores")
    for key, value in (scores.items() if isinstance(scores, dict) else ()):
        scorer, _, metric = str(key).partition("/")
        by_scorer.setdefault(scorer, []).append(f"{_e(metric or scorer)} {_num(value)}")
    lines += [f"<div>{_e(s)}: {' · '.join(v)}</div>" for s, v in by_scorer.items()]
    preds = _predicates(rec)
    if preds:
        marks = [f'<span class="{"pass" if ok else "fail"}">{"✓" if ok else "✗"} {_e(n)}</span>'
                 for n, ok in preds.items()]
        lines.append(f"<div>{' '.join(marks)}</div>")
    gen_s = rec.get("generation_s")
    if gen_s is not None and not pd.isna(gen_s):
        lines.append(f'<div class="muted">{float(gen_s):.2f} s/video</div>')
    return f'<div class="scores">{"".join(lines)}</div>'
