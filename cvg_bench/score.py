"""`score`: score a folder of existing videos (prompts.jsonl + <id>.mp4) against a benchmark."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cvg_bench import registry
from cvg_bench.records import RunStore, config_hash, git_commit, library_versions
from cvg_bench.run import RunSummary, build_scorers, make_record, score_video
from cvg_bench.video_io import read_video

PROMPTS_FILE = "prompts.jsonl"


def read_prompts_file(folder: Path) -> list[tuple[str, str]]:
    """(id, prompt) pairs of ``folder/prompts.jsonl``; errors name the file, line and format."""
    path = folder / PROMPTS_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"videos folder not found: {folder}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the videos folder must hold {PROMPTS_FILE} "
                                'with one {"id": ..., "prompt": ...} per line')
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["id"]), str(row["prompt"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: malformed line {line[:80]!r} ({exc}); expected "
                             '{"id": "...", "prompt": "..."}') from None
    if not pairs:
        raise ValueError(f"{path} holds no prompts")
    return pairs


def score_folder(cfg: DictConfig) -> RunSummary:
    folder = Path(cfg.videos)
    pairs = read_prompts_file(folder)
    missing = [pid for pid, _ in pairs if not (folder / f"{pid}.mp4").is_file()]
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
                          "git_commit": commit})
    summary = RunSummary(store.root)
    for spec in tqdm(specs, desc=f"scoring {folder.name}", unit="video"):
        if not cfg.force and store.is_done(spec.prompt_id, 0):
            summary.skipped += 1
            continue
        record = make_record(store, spec, 0, names, versions, commit)
        path = folder / f"{spec.prompt_id}.mp4"
        record["video_path"] = str(path.resolve())
        t0 = time.perf_counter()
        try:
            record.update(score_video(scorers, read_video(path), spec))
        except Exception as exc:  # noqa: BLE001 - recorded; the exit code reports it
            record["error"] = f"{type(exc).__name__}: {exc}"
            summary.errors.append(f"{spec.prompt_id}: {record['error']}")
        record["timings"]["scoring_s"] = time.perf_counter() - t0
        store.write(record)
        summary.done += 1
    return summary
