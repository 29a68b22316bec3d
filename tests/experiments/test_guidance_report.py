"""CVG's guidance report: satisfied classifier vs. failed video."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.guidance_report import guided_rows, main, summarise
from cvg_bench.records import RunStore


def _write(root: Path, samples: list[tuple[str, float, list[float]]], method: str = "cvg") -> Path:
    store = RunStore(root, "shapes", method, "tiny", "h1")
    store.write_manifest({"run_hash": "h1", "identity": {"method": {"name": method}}})
    for i, (category, relation, energies) in enumerate(samples):
        details = {"guidance": {"energies": energies, "steps": list(range(len(energies)))}} if energies else {}
        store.write({
            "schema_version": 1, "run_hash": "h1", "method": method, "generator": "tiny",
            "benchmark": "shapes", "benchmark_version": "1", "prompt_id": f"p{i}", "prompt": "x",
            "category": category, "split": "heldout", "seed": 0, "video_path": None, "scores": {},
            "scores_norm": {"oracle/relation": relation, "oracle/validity": 1.0 - 0.1 * i},
            "faithfulness": relation, "quality": None, "details": details,
            "timings": {"generation_s": 1.0, "guidance_s": 0.1}, "evaluators": {}, "versions": {},
            "git_commit": "x", "created_at": "2026-01-01T00:00:00+00:00", "error": None})
    return store.root


def test_failed_videos_split_into_satisfied_and_unsatisfied_classifier(tmp_path: Path):
    run = _write(tmp_path, [
        ("motion", 0.0, [2.0, 0.01, 0.001]),  # failed, classifier satisfied from step 1
        ("motion", 0.0, [2.0, 1.5, 1.2]),     # failed, never satisfied
        ("motion", 1.0, [2.0, 0.5, 0.02]),    # passed, satisfied at the last step
        ("spatial", 1.0, [0.01, 0.001, 0.0]),  # passed, satisfied before the first update
    ])
    rows = guided_rows(run, threshold=0.05)
    assert rows["satisfied"].tolist() == [True, False, True, True]
    assert rows["steps_after_satisfied"].tolist() == [1, 0, 0, 2]
    table = summarise(rows).set_index("category")
    assert table.loc["motion", "failed"] == 2 and table.loc["motion", "failed_satisfied"] == 0.5
    assert table.loc["motion", "passed_satisfied"] == 1.0
    assert table.loc["motion", "satisfied_at_step"] == pytest.approx(1.5)  # steps 1 and 2
    assert table.loc["all", "videos"] == 4 and table.loc["all", "relation"] == 0.5
    assert table.loc["spatial", "validity"] == pytest.approx(0.7)


def test_an_unguided_run_and_a_bad_threshold_are_refused(tmp_path: Path, capsys):
    run = _write(tmp_path, [("motion", 0.0, [])], method="vanilla")
    with pytest.raises(ValueError, match="no record under .* has guidance energies"):
        guided_rows(run, threshold=0.05)
    with pytest.raises(SystemExit, match="--threshold=0.0: must be > 0"):
        main([str(run), "--threshold", "0"])


def test_cli_writes_the_tables(tmp_path: Path):
    run = _write(tmp_path / "r", [("motion", 0.0, [2.0, 0.01])])
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert "failed_satisfied" in (tmp_path / "out" / "guidance_report.md").read_text()
    assert (tmp_path / "out" / "guidance_report.csv").read_text().startswith("run,category")
