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


def test_done_means_complete_and_error_free(tmp_path):
    store = RunStore(tmp_path, "bench", "m", "g", "abc")
    assert not store.is_done("p1", 0)
    store.record_path("p1", 0).parent.mkdir(parents=True)
    store.record_path("p1", 0).write_text("{ half a rec")
    assert not store.is_done("p1", 0)  # a corrupt record is redone
    store.write({"prompt_id": "p1", "seed": 0, "error": "boom"})
    assert not store.is_done("p1", 0)  # a failed sample is retried
    store.write({"prompt_id": "p1", "seed": 0, "error": None})
    assert store.is_done("p1", 0)
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
