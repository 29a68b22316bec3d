"""`run`: generate videos with a method on a benchmark over seeds, score them, store records."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cvg_bench import registry
from cvg_bench.records import (
    SCHEMA_VERSION,
    RunStore,
    SampleRecord,
    config_hash,
    file_digest,
    git_commit,
    library_versions,
)
from cvg_bench.scorers.base import Scorer
from cvg_bench.types import PromptSpec, Video
from cvg_bench.video_io import write_mp4

log = logging.getLogger(__name__)

# Benchmark keys that choose which prompts run, not what a sample is: left out of the hash
# so that shards and partial runs of one configuration share one run directory.
# Where the suite is read from is not part of it either (benchmark_version pins its content).
_SELECTION_KEYS = ("categories", "limit", "shard", "num_shards", "split", "data_root")


@dataclass
class RunSummary:
    run_dir: Path
    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    busy: int = 0  # samples another live process was making (its lock held): left to it


def seeds_of(cfg: DictConfig) -> list[int]:
    """``seed=N`` (one seed, for hydra sweeps) overrides the ``seeds`` list."""
    if cfg.get("seed") is not None:
        return [int(cfg.seed)]
    seeds = [int(s) for s in cfg.seeds]
    if not seeds:
        raise ValueError("seeds is empty: give seeds=[0,1,2] or seed=0")
    return seeds


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The config parts that define what a sample is (hashed into the run id)."""
    bench = OmegaConf.to_container(cfg.benchmark, resolve=True)
    for key in _SELECTION_KEYS:
        bench.pop(key, None)
    return {
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "generator": OmegaConf.to_container(cfg.generator, resolve=True),
        "benchmark": bench,
        "scorers": OmegaConf.to_container(cfg.scorer, resolve=True),
    }


def run_store(cfg: DictConfig) -> RunStore:
    """The run folder of a composed ``run`` config: ``<results_dir>/<benchmark>/
    <method>__<generator>__<hash of run_identity>``."""
    return RunStore(cfg.results_dir, cfg.benchmark.name, cfg.method.name, cfg.generator.name,
                    config_hash(run_identity(cfg)))


def build_scorers(cfg: DictConfig) -> dict[str, Scorer]:
    scorers = {name: registry.build("scorer", scfg) for name, scfg in cfg.scorer.items()}
    for scorer in scorers.values():
        scorer.check_ready()  # before any generation: a missing model fails now, not later
    return scorers


def score_video(scorers: dict[str, Scorer], video: Video, spec: PromptSpec) -> dict[str, Any]:
    """Every scorer on one video; returns the record's score fields."""
    out: dict[str, Any] = {"scores": {}, "scores_norm": {}, "details": {}, "faithfulness": None,
                           "quality": None, "evaluators": {}}
    for name, scorer in scorers.items():
        result = scorer.score(video, spec)
        out["scores"].update({f"{name}/{k}": float(v) for k, v in result.raw.items()})
        out["scores_norm"].update({f"{name}/{k}": float(v) for k, v in result.normalised.items()})
        out["details"][name] = result.details
        out["evaluators"][name] = scorer.version()
        if scorer.role in ("faithfulness", "quality") and out[scorer.role] is None:
            out[scorer.role] = float(result.normalised[scorer.primary])
    return out


def make_record(store: RunStore, spec: PromptSpec, seed: int, names: dict[str, str],
                versions: dict[str, str], commit: str) -> SampleRecord:
    """A record with the identity fields filled and no scores yet."""
    return SampleRecord(
        schema_version=SCHEMA_VERSION, run_hash=store.run_hash, method=names["method"],
        generator=names["generator"], benchmark=names["benchmark"],
        benchmark_version=names["benchmark_version"], prompt_id=spec.prompt_id,
        prompt=spec.prompt, category=spec.category, split=spec.split, seed=seed,
        video_path=None, video_size=None, video_sha256=None, scores={}, scores_norm={}, faithfulness=None, quality=None,
        details={}, timings={"generation_s": 0.0, "guidance_s": 0.0, "scoring_s": 0.0},
        evaluators={}, versions=versions, git_commit=commit,
        created_at=datetime.now(timezone.utc).isoformat(), error=None,
    )


def run(cfg: DictConfig) -> RunSummary:
    """Generate + score every (prompt, seed) of the selection; finished samples are skipped."""
    seeds = seeds_of(cfg)
    benchmark = registry.build("benchmark", cfg.benchmark)
    method = registry.build("method", cfg.method)
    specs = benchmark.prompts()
    if not specs:
        raise ValueError(f"benchmark {cfg.benchmark.name!r} selected no prompts: {cfg.benchmark}")
    for spec in specs:
        method.check_spec(spec)  # fail before any generation on a prompt it cannot guide
    from cvg_bench.preflight import checked_scorers  # every scorer can score every prompt

    scorers = checked_scorers(cfg, benchmark, specs)  # and has its weights: before generating
    generator = registry.build("generator", cfg.generator)

    names = {"method": cfg.method.name, "generator": cfg.generator.name,
             "benchmark": cfg.benchmark.name, "benchmark_version": benchmark.version}
    store = run_store(cfg)
    store.check_writable()
    store.remove_stale_temps()
    # a retrained model at the same path has the same config, so the run hash cannot tell
    # the two apart: a run folder holds one generator's and one method-weights' samples
    _check_same_version(store, "generator_version", "generator", generator.version(), bool(cfg.force))
    _check_same_version(store, "method_version", "method weights", method.version(), bool(cfg.force))
    versions, commit = library_versions(), git_commit()
    store.write_manifest({
        "run_hash": store.run_hash, "identity": run_identity(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True), "seeds": seeds,
        "generator_version": generator.version(), "method_version": method.version(),
        "method_training_data": method.training_data(),
        "categories": list(benchmark.all_categories),  # what a record's category may be
        "versions": versions, "git_commit": commit,
        "updated_at": datetime.now(timezone.utc).isoformat(),
    })
    summary = RunSummary(store.root)
    jobs = [(spec, seed) for spec in specs for seed in seeds]
    for spec, seed in tqdm(jobs, desc=f"{names['method']} on {names['benchmark']}", unit="video"):
        lock = _claim(store, spec, seed, bool(cfg.force), summary)
        if lock is None:
            continue
        with lock:
            record = make_record(store, spec, seed, names, versions, commit)
            try:
                _generate_and_score(record, store, generator, method, scorers, spec, seed, cfg)
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on, exit code says so
                if cfg.get("fail_fast", False):
                    raise
                record["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
                summary.errors.append(f"{spec.prompt_id} seed {seed}: {type(exc).__name__}: {exc}")
                log.error("sample %s seed %s failed: %s", spec.prompt_id, seed, exc)
            store.write(record)
            summary.done += 1
    if summary.busy:
        log.warning("%d sample(s) were being made by another process (see %s): re-run to "
                    "collect them once it is done", summary.busy, store.locks_dir)
    return summary


def _claim(store: RunStore, spec: PromptSpec, seed: int, force: bool, summary: RunSummary):
    """The sample's lock when this process should make it, else None (done, or another live
    process holds it). Done means: valid record, no error, same prompt and category, video
    present with the size and sha256 the record stores; otherwise the reason is logged."""
    expect = {"prompt": spec.prompt, "category": spec.category}
    if not force and store.check_done(spec.prompt_id, seed, **expect) is None:
        summary.skipped += 1
        return None
    lock = store.lock(spec.prompt_id, seed)
    if lock is None:
        owner = store.lock_owner(spec.prompt_id, seed) or {}
        log.info("sample %s seed %s: being made by pid %s on %s, left to it", spec.prompt_id,
                 seed, owner.get("pid"), owner.get("host"))
        summary.busy += 1
        return None
    # Checked again under the lock: another process may have just finished it.
    reason = store.check_done(spec.prompt_id, seed, move_invalid=True, **expect)
    if reason is None and not force:
        lock.release()
        summary.skipped += 1
        return None
    if reason not in (None, "no record"):
        log.warning("sample %s seed %s is redone: %s", spec.prompt_id, seed, reason)
    return lock


def _check_same_version(store: RunStore, key: str, what: str, version: str | None,
                        force: bool) -> None:
    """Refuse to resume samples made with another ``what`` (the manifest's ``key``)."""
    previous = (store.read_manifest() or {}).get(key)
    if previous and previous != version and not force and any(store.samples_dir.glob("*.json")):
        raise ValueError(
            f"{store.root} holds samples of {what} {previous!r}, but this run has {what} "
            f"{version!r}; use another results_dir, or force=true to recompute them")


def _generate_and_score(record: SampleRecord, store: RunStore, generator, method,
                        scorers: dict[str, Scorer], spec: PromptSpec, seed: int,
                        cfg: DictConfig) -> None:
    t0 = time.perf_counter()
    hook = method.make_hook(generator, spec)
    output = generator.sample(spec, seed, hook=hook)
    record["timings"]["generation_s"] = time.perf_counter() - t0
    record["timings"]["guidance_s"] = output.guidance_seconds
    if hasattr(hook, "stats"):  # e.g. CVG's losses, gradient norms, skipped non-finite steps
        record["details"]["guidance"] = hook.stats.as_dict()
    if cfg.get("save_videos", True):
        path = write_mp4(store.video_path(spec.prompt_id, seed), output.video, fps=cfg.fps)
        record["video_path"] = str(path.relative_to(store.root))
        record["video_size"], record["video_sha256"] = file_digest(path)
    t1 = time.perf_counter()
    scores = score_video(scorers, output.video, spec)
    scores["details"] = {**record["details"], **scores["details"]}
    record.update(scores)
    record["timings"]["scoring_s"] = time.perf_counter() - t1
