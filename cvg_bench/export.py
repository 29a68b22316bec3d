"""Export a run's videos into a benchmark's own layout, so its official scripts run unchanged.

The harness stores videos as ``<run dir>/videos/<prompt_id>__s<seed>.mp4`` (a run dir is the
folder holding ``samples/`` and ``videos/``). The official evaluations want other layouts:

- T2V-CompBench: one folder per category (``consistent_attr``, ``dynamic_attr``,
  ``spatial_relationships``, ``motion_binding``, ``action_binding``, ``interaction``,
  ``generative_numeracy``) holding ``0001.mp4``, ``0002.mp4``... where the number is the
  1-based position of the prompt in the ``--read-prompt-file`` metadata JSON (the v1 scripts
  read the sorted files by position, later ones by ``int(name[:4])``; both agree when the
  numbers are contiguous). One video per prompt: one tree per seed. Metadata files written
  beside the folders hold the prompt under ``"prompt"``, the key every official script reads
  (a v2 mirror's ``"caption"`` makes the v2 scripts fail with ``KeyError('prompt')``).
  Frames: every exported video has at least ``MIN_FRAMES`` (16) frames, the count the official
  scripts extract (``np.linspace`` over the video, 16 frames; dynamic attribute binding indexes
  frames 1-14 of them, spatial and numeracy average over 16, motion standardises to 16 at
  8 fps). Longer videos are linked unchanged (the scripts subsample them); shorter ones are an
  error naming them, or with ``frames="resample"`` are written as 16-frame copies (each output
  frame the nearest source frame in time). Any frame size works (every script resizes).
- VBench: ``<dimension>/<prompt>-<index>.mp4`` (VBench-2.0: ``<prompt[:180]>-<index>.mp4``),
  index 0..4 (VBench 1.0) or 0..2 (VBench-2.0) = the rank of the seed among the prompt's seeds.

Files are hard links (no extra disk; a copy where the file systems differ) or copies. Each
export writes ``export_manifest.json`` (what went where, what is missing) beside the folders.

CLI: ``python -m cvg_bench export suite=t2vcompbench run_dir=RUN out_dir=OUT version=v1`` or
``python -m cvg_bench export suite=vbench run_dir=RUN out_dir=OUT`` (``--help`` for the keys).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvg_bench.records import atomic_write_json

MODES = ("hardlink", "copy")
FRAME_POLICIES = ("check", "resample")
MIN_FRAMES = 16  # frames the official T2V-CompBench scripts extract from every video
MANIFEST = "export_manifest.json"
MAX_NAME_BYTES = 255  # the file-name limit of ext4, xfs, btrfs, APFS, NTFS


@dataclass
class ExportReport:
    """What an export wrote (``files``: target -> source, prompt id, seed) and what it lacks."""

    benchmark: str
    out_dir: str
    benchmark_version: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # folder -> prompt ids/videos
    skipped: list[dict[str, Any]] = field(default_factory=list)  # records without a video
    folders: dict[str, dict[str, str]] = field(default_factory=dict)  # folder -> how to evaluate
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- reading records ----------------------------------------------------------------------------
def load_records(records_or_run_dir: Any, run_dir: str | Path | None = None
                 ) -> list[tuple[dict[str, Any], Path]]:
    """(record, its run dir) pairs from a run dir (or a folder of run dirs) or from records.

    Records passed directly need ``run_dir`` to resolve their relative ``video_path``.
    """
    if isinstance(records_or_run_dir, (str, os.PathLike)):
        root = Path(records_or_run_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"run directory {root} does not exist")
        paths = sorted(root.rglob("samples/*.json"))
        if not paths:
            raise FileNotFoundError(f"no sample records under {root}: expected "
                                    f"<run dir>/samples/<prompt_id>__s<seed>.json")
        out = []
        for path in paths:
            try:
                out.append((json.loads(path.read_text()), path.parent.parent))
            except json.JSONDecodeError as exc:
                raise ValueError(f"record {path} is not valid JSON ({exc})") from exc
        return out
    records = list(records_or_run_dir)
    for rec in records:
        vp = rec.get("video_path")
        if run_dir is None and vp and not Path(vp).is_absolute():
            raise ValueError(f"record {rec.get('prompt_id')!r} has a relative video_path {vp!r}: "
                             "pass run_dir=<the folder holding samples/ and videos/>")
    return [(rec, Path(run_dir) if run_dir is not None else Path("/")) for rec in records]


def _check_benchmark(pairs: list[tuple[dict[str, Any], Path]], name: str) -> None:
    other = sorted({str(r.get("benchmark")) for r, _ in pairs if r.get("benchmark") != name})
    if other:
        raise ValueError(f"records of benchmark(s) {other} cannot be exported as {name!r}; "
                         f"export one benchmark's run directory at a time")


def _usable(pairs: list[tuple[dict[str, Any], Path]], report: ExportReport
            ) -> list[tuple[dict[str, Any], Path]]:
    """Records with a video (others go to ``report.skipped``); duplicates are an error."""
    seen: dict[tuple[str, int], Path] = {}
    out = []
    for rec, run_dir in pairs:
        key = (str(rec["prompt_id"]), int(rec["seed"]))
        if key in seen:
            raise ValueError(f"sample {key[0]} seed {key[1]} appears in two runs: {seen[key]} and "
                             f"{run_dir}; export one run directory")
        seen[key] = run_dir
        if rec.get("error") is not None or not rec.get("video_path"):
            report.skipped.append({"prompt_id": key[0], "seed": key[1],
                                   "reason": rec.get("error") or "no video_path"})
            continue
        source = run_dir / rec["video_path"]
        if not source.is_file():
            raise FileNotFoundError(f"video of {key[0]} seed {key[1]} not found: {source}")
        out.append((rec, source))
    return out


# ---- placing files ------------------------------------------------------------------------------
@dataclass
class _FolderPlan:
    """One output folder: its files (source, name, record info) and the names it may replace."""

    folder: Path
    owned: re.Pattern[str]
    files: list[tuple[Path, str, dict[str, Any]]] = field(default_factory=list)


def _check_folder(folder: Path, owned: re.Pattern[str], overwrite: bool) -> None:
    """The folder is empty, or (``overwrite``) holds only files an export writes."""
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{folder} is not empty; the official scripts read every file in "
                              f"it. Choose an empty out_dir or pass overwrite=True")
    foreign = [p.name for p in folder.iterdir() if not (p.is_file() and owned.fullmatch(p.name))]
    if foreign:
        raise FileExistsError(f"{folder} holds files an export does not write: {foreign[:5]}")


def _execute(plans: list[_FolderPlan], json_files: list[tuple[Path, Any]], out_dir: Path,
             mode: str, overwrite: bool, report: ExportReport) -> None:
    """Write everything planned; every folder is checked before anything is written."""
    if not any(plan.files for plan in plans):
        raise ValueError("no record with a video to export")
    for plan in plans:
        _check_folder(plan.folder, plan.owned, overwrite)
    for path, obj in json_files:
        atomic_write_json(path, obj)
    for plan in plans:
        if plan.folder.exists():
            for path in plan.folder.iterdir():  # earlier exported videos (checked above)
                path.unlink()
        plan.folder.mkdir(parents=True, exist_ok=True)
        for source, name, info in plan.files:
            target = plan.folder / name
            if info.get("resampled_from") is not None:
                _write_resampled(source, target)
            else:
                _place(source, target, mode, report)
            report.files.append({"target": str(target.relative_to(out_dir)), "source": str(source),
                                 **info})
    atomic_write_json(out_dir / MANIFEST, report.to_dict())


def _place(source: Path, target: Path, mode: str, report: ExportReport) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        if mode == "hardlink":
            try:
                os.link(source, tmp)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copy2(source, tmp)
                note = f"hard links impossible ({exc.strerror}); copied instead"
                if note not in report.notes:
                    report.notes.append(note)
        else:
            shutil.copy2(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_resampled(source: Path, target: Path) -> None:
    """``source`` stretched to MIN_FRAMES frames (nearest in time) at its own fps, as mp4."""
    import imageio.v2 as iio

    from cvg_bench.video_io import read_video, write_mp4

    video = read_video(source)
    reader = iio.get_reader(source, format="FFMPEG")
    try:
        fps = reader.get_meta_data().get("fps") or 8
    finally:
        reader.close()
    write_mp4(target, video[resample_indices(len(video))], fps=max(1, int(round(fps))))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(MODES)}")


# ---- T2V-CompBench ------------------------------------------------------------------------------
_T2V_ID = re.compile(r"^(?P<category>[a-z_]+)-(?P<n>\d{4})$")


def _suite(version: str, data_root: str | Path | None) -> Any | None:
    """The T2V-CompBench suite when its files can be found (data_root or the env var)."""
    from cvg_bench.benchmarks.t2vcompbench import ENV_VAR, T2VCompBench

    if data_root is None and not os.environ.get(ENV_VAR):
        return None
    return T2VCompBench(data_root=str(data_root) if data_root is not None else None,
                        version=version)


def video_frame_count(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) of a video file, counted by decoding (container headers lie)."""
    import imageio.v2 as iio

    try:
        reader = iio.get_reader(path, format="FFMPEG")
    except Exception as exc:  # noqa: BLE001 - not a readable video
        raise ValueError(f"{path} is not a readable video ({type(exc).__name__}: {exc})") from exc
    try:
        first = reader.get_data(0)
        n = reader.count_frames()
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable video ({type(exc).__name__}: {exc})") from exc
    finally:
        reader.close()
    return int(n), int(first.shape[0]), int(first.shape[1])


def resample_indices(num_frames: int, target: int = MIN_FRAMES) -> "list[int]":
    """``target`` source frame indices evenly spread over ``num_frames`` (nearest in time),
    first and last included: how a short video is stretched to ``target`` frames."""
    import numpy as np

    if num_frames < 1:
        raise ValueError("a video has no frames")
    return [int(i) for i in np.rint(np.linspace(0, num_frames - 1, target))]


def _check_frames(plans: list[_FolderPlan], policy: str, report: ExportReport) -> None:
    """Apply the frame rule to every planned video: ``check`` raises on any video shorter than
    MIN_FRAMES (naming them); ``resample`` marks them to be written as MIN_FRAMES-frame copies."""
    short: list[str] = []
    for plan in plans:
        for k, (source, name, info) in enumerate(plan.files):
            n, h, w = video_frame_count(source)
            info.update(frames=n, height=h, width=w)
            if n < MIN_FRAMES:
                short.append(f"{info['prompt_id']} seed {info['seed']} ({n} frames, {source})")
                info["resampled_from"] = n
    if short and policy == "check":
        raise ValueError(
            f"{len(short)} video(s) have fewer than the {MIN_FRAMES} frames the official "
            f"T2V-CompBench scripts extract (dynamic attribute binding would fail on frame "
            f"index 1-14): {'; '.join(short[:3])}{'...' if len(short) > 3 else ''}. Generate "
            f">= {MIN_FRAMES} frames, or export with resample=true (frames='resample') to write "
            f"{MIN_FRAMES}-frame copies; accepted frames policies: {', '.join(FRAME_POLICIES)}")
    if short:
        report.notes.append(f"{len(short)} video(s) shorter than {MIN_FRAMES} frames were written "
                            f"as {MIN_FRAMES}-frame copies (nearest source frame in time)")


def export_t2vcompbench(records_or_run_dir: Any, out_dir: str | Path, version: str = "v1", *,
                        seed: int | None = None, mode: str = "hardlink",
                        data_root: str | Path | None = None, overwrite: bool = False,
                        run_dir: str | Path | None = None, frames: str = "check",
                        csv_root: str = "<csv>", t2v_model: str = "mymodel") -> ExportReport:
    """Write a run's videos as ``<out_dir>[/seed<k>]/<category folder>/<NNNN>.mp4``.

    ``seed``: export that seed into ``out_dir/<folder>/``; ``None``: every seed, each in
    ``out_dir/seed<k>/<folder>/`` (evaluate each tree, average the scores). A category with
    every prompt of the suite keeps the suite numbering (use the official metadata JSON). A
    partial category (``benchmark.limit``, shards) is numbered 1..k in suite order and gets a
    matching ``meta_data/<category>.json`` beside the folders; that needs the suite's files
    (``data_root`` or ``$CVG_T2VCOMPBENCH_ROOT``). With the suite, every category gets that
    file (the prompt under the official key ``"prompt"``, whatever key the local copy uses).

    ``frames``: ``"check"`` (a video shorter than ``MIN_FRAMES`` is an error) or ``"resample"``
    (written as a ``MIN_FRAMES``-frame copy). The report's folders give each tree its own
    ``--output-path`` (``<csv_root>/<tree>/<folder>``) and ``--t2v-model``: the official v2
    scripts resume by appending to ``<output>/<model>_*.csv`` and skip as many videos as it
    has rows, so a second seed evaluated into the first one's output would be skipped.
    """
    if frames not in FRAME_POLICIES:
        raise ValueError(f"frames={frames!r}; accepted: {', '.join(FRAME_POLICIES)}")
    from cvg_bench.benchmarks.t2vcompbench import EXPORT_FOLDERS, VERSIONS, official_record

    _check_mode(mode)
    if version not in VERSIONS:
        raise ValueError(f"version={version!r}; accepted: {', '.join(VERSIONS)}")
    out_dir = Path(out_dir)
    report = ExportReport(benchmark="t2vcompbench", out_dir=str(out_dir))
    pairs = load_records(records_or_run_dir, run_dir)
    _check_benchmark(pairs, "t2vcompbench")
    versions = sorted({str(r.get("benchmark_version")) for r, _ in pairs})
    bad = [v for v in versions if not v.startswith(f"t2vcompbench-{version}@")]
    if bad:
        raise ValueError(f"records were made with {bad}, not T2V-CompBench {version}: their "
                         f"prompt numbers would not match the {version} metadata")
    report.benchmark_version = ", ".join(versions)
    if seed is not None:
        pairs = [(r, d) for r, d in pairs if int(r["seed"]) == int(seed)]
        if not pairs:
            raise ValueError(f"no records with seed {seed}")
    usable = _usable(pairs, report)
    suite = _suite(version, data_root)
    key = VERSIONS[version]["key"]
    sizes: dict[str, int] = {}
    suite_records: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    by_tree: dict[Path, dict[str, dict[int, tuple[dict[str, Any], Path]]]] = {}
    for rec, source in usable:
        m = _T2V_ID.match(str(rec["prompt_id"]))
        if not m or m.group("category") != rec.get("category") or m.group("category") not in EXPORT_FOLDERS:
            raise ValueError(f"prompt id {rec['prompt_id']!r} (category {rec.get('category')!r}) is "
                             "not a T2V-CompBench id '<category>-<NNNN>'")
        cat, n = m.group("category"), int(m.group("n"))
        if cat not in sizes:
            if suite is not None:
                suite_records[cat] = suite.category_records(cat)
                sizes[cat] = len(suite_records[cat])
            else:
                sizes[cat] = VERSIONS[version]["size"]
        if not 1 <= n <= sizes[cat]:
            raise ValueError(f"prompt id {rec['prompt_id']!r} is outside the suite (1..{sizes[cat]})")
        if cat in suite_records and suite_records[cat][n - 1][0] != rec.get("prompt"):
            raise ValueError(f"record {rec['prompt_id']!r} has prompt {rec.get('prompt')!r} but the "
                             f"suite's prompt {n} is {suite_records[cat][n - 1][0]!r}")
        tree = out_dir if seed is not None else out_dir / f"seed{int(rec['seed'])}"
        by_tree.setdefault(tree, {}).setdefault(cat, {})[n] = (rec, source)

    owned = re.compile(r"\d{4}\.mp4")
    plans: list[_FolderPlan] = []
    json_files: list[tuple[Path, Any]] = []
    for tree, cats in sorted(by_tree.items()):
        for cat, items in sorted(cats.items()):
            folder = tree / EXPORT_FOLDERS[cat]
            rel = str(folder.relative_to(out_dir))
            numbers = sorted(items)
            complete = numbers == list(range(1, sizes[cat] + 1))
            if complete and cat in suite_records:
                names = {n: n for n in numbers}
                meta_path = tree / "meta_data" / f"{cat}.json"
                json_files.append((meta_path, [official_record(r) for _, r in suite_records[cat]]))
                meta_file = str(meta_path)
            elif complete:
                names = {n: n for n in numbers}
                meta_file = (f"the official meta_data/{cat}.json (key 'prompt'; a mirror copy with "
                             "'caption' fails the official scripts: pass data_root= to write one)")
            else:
                if cat not in suite_records:
                    raise ValueError(
                        f"{rel}: {len(numbers)} of {sizes[cat]} prompts, a partial export. The "
                        "official scripts pair videos with metadata entries by position, so a "
                        "matching metadata file must be written: set data_root or "
                        "$CVG_T2VCOMPBENCH_ROOT to the suite's folder, or export all prompts")
                names = {n: i for i, n in enumerate(numbers, start=1)}
                subset = [official_record(suite_records[cat][n - 1][1]) for n in numbers]
                meta_path = tree / "meta_data" / f"{cat}.json"
                json_files.append((meta_path, subset))
                meta_file = str(meta_path)
                report.missing[rel] = [f"{cat}-{n:04d}" for n in range(1, sizes[cat] + 1)
                                       if n not in items]
                report.notes.append(f"{rel}: partial ({len(numbers)}/{sizes[cat]}), renumbered "
                                    f"1..{len(numbers)} in suite order; use {meta_path}")
            plan = _FolderPlan(folder, owned)
            for n in numbers:
                rec, source = items[n]
                plan.files.append((source, f"{names[n]:04d}.mp4",
                                   {"prompt_id": rec["prompt_id"], "seed": int(rec["seed"])}))
            plans.append(plan)
            tree_name = tree.name if tree != out_dir else "all"
            report.folders[rel] = {
                "video_path": str(folder), "read_prompt_file": meta_file, "metadata_key": key,
                "output_path": f"{csv_root}/{tree_name}/{EXPORT_FOLDERS[cat]}",
                "t2v_model": f"{t2v_model}_{tree_name}" if tree != out_dir else t2v_model}
    if len(by_tree) > 1:
        report.notes.append(
            "one tree per seed: give each tree its own --output-path and --t2v-model (listed "
            "per folder). The official v2 scripts resume by appending to "
            "<output-path>/<t2v-model>_*.csv and skip as many videos as it already has rows, "
            "so a second seed evaluated into the same output would silently score nothing")
    _check_frames(plans, frames, report)
    _execute(plans, json_files, out_dir, mode, overwrite, report)
    return report


# ---- VBench -------------------------------------------------------------------------------------
def vbench_file_name(prompt: str, index: int, dimension: str) -> str:
    """VBench's name for a video: ``<prompt>-<index>.mp4`` (VBench-2.0: the prompt's first 180
    characters). Raises where the name cannot exist on disk (a '/', or over 255 bytes)."""
    from cvg_bench.benchmarks.vbench import NAME_PREFIX_CHARS

    if dimension not in NAME_PREFIX_CHARS:
        raise ValueError(f"unknown VBench dimension {dimension!r}; accepted: "
                         f"{', '.join(NAME_PREFIX_CHARS)}")
    limit = NAME_PREFIX_CHARS[dimension]
    stem = prompt if limit is None else prompt[:limit]
    name = f"{stem}-{index}.mp4"
    if "/" in stem or "\0" in stem:
        raise ValueError(f"prompt {prompt!r} contains '/', which no file name can hold; VBench "
                         "cannot read a video for it either")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"VBench's file name for prompt {prompt[:60]!r}... is "
                         f"{len(name.encode())} bytes, over the {MAX_NAME_BYTES}-byte limit of "
                         "common file systems (VBench 1.0 names videos by the full prompt)")
    return name


def export_vbench(records_or_run_dir: Any, out_dir: str | Path, *, mode: str = "hardlink",
                  overwrite: bool = False, run_dir: str | Path | None = None) -> ExportReport:
    """Write a run's videos as ``<out_dir>/<dimension>/<prompt>-<index>.mp4``.

    ``index`` is the rank of the seed among the prompt's seeds (seeds=[0,1,2,3,4] gives
    index = seed). VBench reads indices 0..4 (1.0) or 0..2 (2.0); more seeds are written and
    ignored by it, fewer are listed under ``missing``. Evaluate a dimension with
    ``--videos_path <out_dir>/<dimension> --dimension <dimension>``.
    """
    from cvg_bench.benchmarks.vbench import CATEGORIES, SAMPLES_PER_PROMPT, VBENCH1_DIMENSIONS

    _check_mode(mode)
    out_dir = Path(out_dir)
    report = ExportReport(benchmark="vbench", out_dir=str(out_dir))
    pairs = load_records(records_or_run_dir, run_dir)
    _check_benchmark(pairs, "vbench")
    report.benchmark_version = ", ".join(sorted({str(r.get("benchmark_version")) for r, _ in pairs}))
    usable = _usable(pairs, report)
    groups: dict[str, dict[str, list[tuple[int, dict[str, Any], Path]]]] = {}
    for rec, source in usable:
        dim = rec.get("category")
        if dim not in CATEGORIES:
            raise ValueError(f"record {rec['prompt_id']!r} has dimension {dim!r}; accepted: "
                             f"{', '.join(CATEGORIES)}")
        groups.setdefault(dim, {}).setdefault(str(rec["prompt"]), []).append(
            (int(rec["seed"]), rec, source))
    owned = re.compile(r".*-\d+\.mp4", re.DOTALL)
    plans: list[_FolderPlan] = []
    for dim, prompts in sorted(groups.items()):
        folder = out_dir / dim
        wanted = SAMPLES_PER_PROMPT[dim]
        plan = _FolderPlan(folder, owned)
        for prompt, items in sorted(prompts.items()):
            items.sort(key=lambda t: t[0])
            for index, (s, rec, source) in enumerate(items):
                plan.files.append((source, vbench_file_name(prompt, index, dim),
                                   {"prompt_id": rec["prompt_id"], "seed": s, "index": index}))
            if len(items) < wanted:
                report.missing.setdefault(dim, []).extend(
                    f"{items[0][1]['prompt_id']} index {i}" for i in range(len(items), wanted))
            elif len(items) > wanted:
                report.notes.append(f"{dim}: {items[0][1]['prompt_id']} has {len(items)} seeds; "
                                    f"VBench reads indices 0..{wanted - 1} only")
        version = "VBench 1.0" if dim in VBENCH1_DIMENSIONS else "VBench-2.0"
        report.folders[dim] = {"videos_path": str(folder), "dimension": dim,
                               "evaluator": version, "samples_per_prompt": str(wanted)}
        plans.append(plan)
    _execute(plans, [], out_dir, mode, overwrite, report)
    return report


# ---- CLI ----------------------------------------------------------------------------------------
EXPORT_BENCHMARKS = ("t2vcompbench", "vbench")


def main(cfg) -> int:
    """``python -m cvg_bench export suite=t2vcompbench|vbench run_dir=RUN out_dir=DIR ...``
    (configs/export.yaml lists every key)."""
    benchmark = str(cfg.suite)
    if benchmark not in EXPORT_BENCHMARKS:
        raise ValueError(f"suite={benchmark!r}; accepted: {', '.join(EXPORT_BENCHMARKS)}")
    mode = "copy" if cfg.copy else "hardlink"
    if benchmark == "t2vcompbench":
        report = export_t2vcompbench(str(cfg.run_dir), str(cfg.out_dir), str(cfg.version),
                                     seed=None if cfg.seed is None else int(cfg.seed), mode=mode,
                                     data_root=None if cfg.data_root is None else str(cfg.data_root),
                                     overwrite=bool(cfg.overwrite),
                                     frames="resample" if cfg.resample else "check",
                                     csv_root=str(cfg.csv_root), t2v_model=str(cfg.t2v_model))
    else:
        report = export_vbench(str(cfg.run_dir), str(cfg.out_dir), mode=mode, overwrite=bool(cfg.overwrite))
    print(f"exported {len(report.files)} videos to {report.out_dir} ({MANIFEST} lists them)")
    for folder, how in report.folders.items():
        print(f"  {folder}: {how}")
    for note in report.notes:
        print(f"  note: {note}")
    for folder, missing in report.missing.items():
        print(f"  missing in {folder}: {len(missing)}")
    return 0
