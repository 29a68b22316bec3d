"""`score`: score a folder of existing videos (prompts.jsonl + <id>.mp4) against a benchmark."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cvg_bench import registry
from cvg_bench.records import (
    SAFE_NAME_RULE,
    RunStore,
    UnsafeName,
    check_name,
    config_hash,
    confined,
    file_digest,
    git_commit,
    library_versions,
)
from cvg_bench.run import RunSummary, build_scorers, make_record, score_video
from cvg_bench.video_io import read_video

log = logging.getLogger(__name__)

PROMPTS_FILE = "prompts.jsonl"


def read_prompts_file(folder: Path) -> list[tuple[str, str]]:
    """(id, prompt) pairs of ``folder/prompts.jsonl``; errors name the file, line and format.

    An id is the video's file name ``<id>.mp4``, so it must be a safe name (``SAFE_NAME_RULE``);
    an id given twice is an error naming both lines."""
    if not folder.is_dir():
        raise FileNotFoundError(f"videos folder not found: {folder}")
    path = folder / PROMPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the videos folder must hold {PROMPTS_FILE} "
                                'with one {"id": ..., "prompt": ...} per line')
    real = confined(path, folder, PROMPTS_FILE)
    try:
        text = real.read_text()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         'expected one {"id": "...", "prompt": "..."} per line') from None
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: malformed line {line[:80]!r} ({exc}); expected "
                             '{"id": "...", "prompt": "..."}') from None
        if not isinstance(row, dict) or "id" not in row or "prompt" not in row:
            raise ValueError(f"{where}: malformed line {line[:80]!r} (not an object with id and "
                             'prompt); expected {"id": "...", "prompt": "..."}')
        pid, prompt = row["id"], row["prompt"]
        if not isinstance(pid, str):
            raise ValueError(f"{where}: id {pid!r} is a {type(pid).__name__}; accepted: a string "
                             f"of {SAFE_NAME_RULE}")
        try:
            check_name(pid, "id")
        except UnsafeName as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: prompt {prompt!r} for id {pid!r}; accepted: a non-empty "
                             "string")
        if pid in seen:
            raise ValueError(f"{path}: id {pid!r} is on line {seen[pid]} and on line {lineno}; "
                             "accepted: each id once")
        seen[pid] = lineno
        pairs.append((pid, prompt))
    if not pairs:
        raise ValueError(f"{path} holds no prompts")
    return pairs


def _video_of(folder: Path, pid: str) -> Path:
    """``folder/<pid>.mp4`` resolved; ``PathEscape`` when it (a symlink) leads outside."""
    return confined((folder / f"{pid}.mp4").absolute(), folder, f"video of id {pid!r}")


def score_folder(cfg: DictConfig) -> RunSummary:
    folder = Path(cfg.videos)
    pairs = read_prompts_file(folder)
    for pid, _ in pairs:
        _video_of(folder, pid)  # every video stays in the folder, or nothing is scored
    missing = [pid for pid, _ in pairs if not _video_of(folder, pid).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} videos missing in {folder}: "
                                f"{', '.join(m + '.mp4' for m in missing[:5])}...")
    benchmark = registry.build("benchmark", cfg.benchmark)
    specs = [benchmark.parse_prompt(prompt, pid) for pid, prompt in pairs]  # all parse, or fail now
    scorers = build_scorers(cfg)
    label = cfg.label or folder.resolve().name
    identity = {"benchmark": OmegaConf.to_container(cfg.benchmark, resolve=True),
                "scorers": OmegaConf.to_container(cfg.scorer, resolve=True),
                "videos": str(folder.resolve())}
    names = {"method": "external", "generator": label, "benchmark": cfg.benchmark.name,
             "benchmark_version": benchmark.version}
    store = RunStore(cfg.results_dir, names["benchmark"], "external", label, config_hash(identity))
    store.check_writable()
    versions, commit = library_versions(), git_commit()
    store.write_manifest({"run_hash": store.run_hash, "identity": identity, "versions": versions,
                          "categories": list(benchmark.all_categories), "git_commit": commit})
    summary = RunSummary(store.root)
    for spec in tqdm(specs, desc=f"scoring {folder.name}", unit="video"):
        # A result is kept while its prompt text and its video's bytes (sha256) are the same.
        expect = {"prompt": spec.prompt, "video_root": folder}
        if not cfg.force and store.check_done(spec.prompt_id, 0, **expect) is None:
            summary.skipped += 1
            continue
        lock = store.lock(spec.prompt_id, 0)
        if lock is None:
            summary.busy += 1
            continue
        with lock:
            reason = store.check_done(spec.prompt_id, 0, move_invalid=True, **expect)
            if reason is None and not cfg.force:
                summary.skipped += 1
                continue
            if reason not in (None, "no record"):
                log.warning("%s is scored again: %s", spec.prompt_id, reason)
            record = make_record(store, spec, 0, names, versions, commit)
            path = _video_of(folder, spec.prompt_id)
            record["video_path"] = str(path)
            t0 = time.perf_counter()
            try:
                record["video_size"], record["video_sha256"] = file_digest(path)
                record.update(score_video(scorers, read_video(path), spec))
            except Exception as exc:  # noqa: BLE001 - recorded; the exit code reports it
                record["error"] = f"{type(exc).__name__}: {exc}"
                if record["video_sha256"] is None:  # unreadable: no video to vouch for
                    record["video_path"] = record["video_size"] = None
                summary.errors.append(f"{spec.prompt_id}: {record['error']}")
            record["timings"]["scoring_s"] = time.perf_counter() - t0
            store.write(record)
            summary.done += 1
    return summary
