"""The results store: atomic per-sample records, resume semantics, ids."""

from __future__ import annotations

import json
import os
import time

import pytest

from cvg_bench.records import RunStore, atomic_write_json, config_hash, iter_records, safe_name


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_safe_name():
    assert safe_name("spatial_relationships-001") == "spatial_relationships-001"
    changed = safe_name("spatial/relations 001")
    assert changed.startswith("spatial_relations_001-") and changed != safe_name("spatial_relations 001")
    assert safe_name("a b") != safe_name("a_b") and len(safe_name("x" * 300)) <= 120
    with pytest.raises(ValueError, match="no file-name-safe"):
        safe_name("///")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"v": 1})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # temp file removed


def full_record(prompt_id: str = "p1", seed: int = 0, run_hash: str = "abc", **fields) -> dict:
    """A valid schema-2 record without a video (as with save_videos=false)."""
    rec = {
        "schema_version": 2, "run_hash": run_hash, "method": "m", "generator": "g",
        "benchmark": "bench", "benchmark_version": "1", "prompt_id": prompt_id,
        "prompt": f"prompt {prompt_id}", "category": "spatial", "split": "all", "seed": seed,
        "video_path": None, "video_size": None, "video_sha256": None,
        "scores": {"oracle/pass": 1.0}, "scores_norm": {"oracle/pass": 1.0},
        "faithfulness": 1.0, "quality": None, "details": {},
        "timings": {"generation_s": 1.0, "guidance_s": 0.0, "scoring_s": 0.1},
        "evaluators": {}, "versions": {}, "git_commit": "abc",
        "created_at": "2026-01-01T00:00:00+00:00", "error": None,
    }
    return {**rec, **fields}


def test_done_means_complete_and_error_free(tmp_path):
    store = RunStore(tmp_path, "bench", "m", "g", "abc")
    assert not store.is_done("p1", 0)
    store.record_path("p1", 0).parent.mkdir(parents=True)
    store.record_path("p1", 0).write_text("{ half a rec")
    assert not store.is_done("p1", 0)  # a corrupt record is redone
    store.write(full_record(error="boom"))
    assert not store.is_done("p1", 0)  # a failed sample is retried
    store.write(full_record())
    assert store.is_done("p1", 0)
    assert not store.is_done("p1", 0, prompt="another prompt")  # the prompt changed
    assert [r["prompt_id"] for r in iter_records(tmp_path)] == ["p1"]


def test_stale_temps_are_removed_only_when_old(tmp_path):
    store = RunStore(tmp_path, "bench", "m", "g", "abc")
    store.check_writable()
    old = store.samples_dir / ".x.json.tmp"
    fresh = store.samples_dir / ".y.json.tmp"
    old.write_text("{")
    fresh.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert store.remove_stale_temps() == 1
    assert fresh.exists() and not old.exists()


def test_unwritable_results_dir_fails_clearly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = RunStore(blocker / "sub", "bench", "m", "g", "abc")
    with pytest.raises(PermissionError, match="cannot write results to .*results_dir="):
        store.check_writable()


def test_concurrent_writers_can_all_check_the_same_run_folder(tmp_path):
    # Shards of one run (quality_bar --jobs, SLURM array tasks) check the same folder at once;
    # a shared probe file name let one writer delete another's probe mid-check.
    from concurrent.futures import ThreadPoolExecutor

    def check(_: int) -> None:
        for _ in range(200):
            RunStore(tmp_path, "bench", "m", "g", "abc").check_writable()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(8)))
    assert not [p for p in RunStore(tmp_path, "bench", "m", "g", "abc").root.iterdir() if p.is_file()]


def test_records_are_read_from_a_relative_results_folder(tmp_path, monkeypatch):
    """`leaderboard results_dirs=[results/demo]` from the repository root: a relative folder."""
    from cvg_bench.leaderboard import load_records

    store = RunStore(tmp_path / "runs", "bench", "m", "g", "abc")
    store.write(full_record())
    monkeypatch.chdir(tmp_path)
    for root in ("runs", "runs/bench", "./runs/bench/"):
        assert len(load_records([root])) == 1, root


def test_a_run_in_a_relative_results_folder_resumes(tmp_path, monkeypatch):
    """`run results_dir=results/demo` twice: the second finds every sample done (a relative
    record path was once joined to the relative root again, and every sample was remade)."""
    from cvg_bench.records import iter_records

    monkeypatch.chdir(tmp_path)
    store = RunStore("runs", "bench", "m", "g", "abc")
    rec = full_record()
    store.write(rec)
    assert store.check_done(rec["prompt_id"], rec["seed"], prompt=rec["prompt"],
                            category=rec["category"]) is None
    assert len(list(iter_records("runs"))) == 1
